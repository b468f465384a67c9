//! bandwidth in whole chains run by `cni-multi net add/del` (our runtime, empty PATH): Calico's
//! shape ptp -> bandwidth -> portmap and k3s's bridge -> portmap -> bandwidth, limits and port
//! mappings from capability args. TCP into the pod through the host port and out of the pod
//! runs at the configured rates; after DEL the node has no IFB, no qdisc, no rule for the pod
//! and no reservation left.

#[path = "common/bw_rig.rs"]
mod bw_rig;
mod common;

use bw_rig::{tcp_rate, tcp_rate_via};
use common::rig::{ours_bin, require_root, tool, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};

const CID: &str = "ctr-bw-chain";

struct Chain {
    node: TestNs,
    pod: TestNs,
    dir: PluginDir,
    cache: TempDir,
    ipam: TempDir,
}

impl Chain {
    fn new(tag: &str) -> Chain {
        Chain {
            node: TestNs::new_node(&format!("{tag}n")),
            pod: TestNs::new(&format!("{tag}p")),
            dir: PluginDir::new(),
            cache: TempDir::new(&format!("{tag}-cache")),
            ipam: TempDir::new(&format!("{tag}-ipam")),
        }
    }

    fn net(&self, verb: &str, list: &Value) -> Output {
        let conf = self.cache.join("net.conflist");
        std::fs::write(&conf, list.to_string()).unwrap();
        let caps = json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16_000_000, "egressBurst": 160_000}
        });
        Command::new(tool("nsenter"))
            .arg(format!("--net={}", self.node.path_str()))
            .arg("--")
            .arg(ours_bin())
            .args(["net", verb, "x", self.pod.path_str(), "--conf"])
            .arg(&conf)
            .args([
                "--cache-dir",
                self.cache.as_str(),
                "--path",
                self.dir.as_str(),
                "--container-id",
                CID,
            ])
            .args(["--cap-args", &caps.to_string()])
            .env_clear()
            .env("PATH", "")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, verb: &str, list: &Value) -> Value {
        let o = self.net(verb, list);
        assert!(
            o.status.success(),
            "net {verb} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    }

    /// Node state bandwidth and portmap could leave behind: links, qdiscs, the ruleset.
    fn leftovers(&self, pod_ip: &str) -> (Vec<String>, Vec<String>, bool) {
        let links: Vec<String> = self
            .node
            .ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect();
        let qdiscs: Vec<String> = self
            .node
            .exec_ok(&["tc", "qdisc", "show"])
            .lines()
            .filter(|l| !l.contains(" dev lo "))
            .map(str::to_string)
            .collect();
        let ruleset = self.node.exec_ok(&["nft", "list", "ruleset"]);
        (links, qdiscs, ruleset.contains(pod_ip))
    }
}

fn ipam(c: &Chain, subnet: &str) -> Value {
    json!({"type": "host-local", "dataDir": c.ipam.as_str(), "ranges": [[{"subnet": subnet}]]})
}

fn bandwidth() -> Value {
    json!({"type": "bandwidth", "capabilities": {"bandwidth": true}})
}

fn portmap() -> Value {
    json!({"type": "portmap", "capabilities": {"portMappings": true}})
}

/// Rates through the chain: into the pod via the node's host port (portmap's DNAT of
/// locally made connections), out of the pod straight to the node.
fn shaped(c: &Chain, node_ip: &str, pod_ip: &str) {
    let (pod, node) = (c.pod.path_str(), c.node.path_str());
    let into = tcp_rate_via(
        node,
        pod,
        &format!("{pod_ip}:80"),
        Some(&format!("{node_ip}:8080")),
        2_000_000,
    );
    let out = tcp_rate(pod, node, node_ip, 4_000_000);
    eprintln!(
        "through the chain: into pod {:.2} Mbit/s (8), out {:.2} Mbit/s (16)",
        into / 1e6,
        out / 1e6
    );
    assert!((into - 8e6).abs() <= 8e6 * 0.3, "into pod via host port: {into} bit/s");
    assert!((out - 16e6).abs() <= 16e6 * 0.3, "out of pod: {out} bit/s");
}

fn reservations(c: &Chain) -> usize {
    std::fs::read_dir(c.ipam.join("chain"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn ptp_bandwidth_portmap() {
    if !require_root("bandwidth_chains ptp_bandwidth_portmap") {
        return;
    }
    let c = Chain::new("bwcp");
    let list = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [
        {"type": "ptp", "ipam": ipam(&c, "10.73.0.0/24")}, bandwidth(), portmap()]});
    let r = c.ok("add", &list);
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "host veth, eth0, IFB: {r}");
    assert!(names[2].starts_with("bwp"), "{r}");
    let pod_ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let node_ip = r["ips"][0]["gateway"].as_str().unwrap().to_string();
    shaped(&c, &node_ip, &pod_ip);
    c.ok("check", &list);
    assert_eq!(reservations(&c), 1);

    c.ok("del", &list);
    let (links, qdiscs, rules) = c.leftovers(&pod_ip);
    assert_eq!(links, vec!["lo"], "links left");
    assert!(qdiscs.is_empty(), "qdiscs left: {qdiscs:?}");
    assert!(!rules, "a rule still names {pod_ip}");
    assert_eq!(reservations(&c), 0);
    c.ok("del", &list);
}

#[test]
fn bridge_portmap_bandwidth() {
    if !require_root("bandwidth_chains bridge_portmap_bandwidth") {
        return;
    }
    let c = Chain::new("bwcb");
    let list = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [
        {"type": "bridge", "bridge": "cni-bw0", "isGateway": true, "ipam": ipam(&c, "10.74.0.0/24")},
        portmap(), bandwidth()]});
    let r = c.ok("add", &list);
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "bridge, host veth, eth0, IFB: {r}");
    assert!(names[3].starts_with("bwp"), "{r}");
    let pod_ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    shaped(&c, "10.74.0.1", &pod_ip);
    c.ok("check", &list);

    c.ok("del", &list);
    let (links, qdiscs, rules) = c.leftovers(&pod_ip);
    // The bridge stays, as the reference's does.
    assert_eq!(links, vec!["lo", "cni-bw0"], "links left");
    assert!(
        qdiscs
            .iter()
            .all(|q| q.contains("dev cni-bw0") && q.contains("noqueue")),
        "qdiscs left: {qdiscs:?}"
    );
    assert!(!rules, "a rule still names {pod_ip}");
    assert_eq!(reservations(&c), 0);
    c.ok("del", &list);
}
