//! bandwidth in whole chains run by `cni-multi net add/del` (our runtime, empty PATH): Calico's
//! shape ptp -> bandwidth -> portmap and k3s's bridge -> portmap -> bandwidth, limits and port
//! mappings from capability args. TCP into the pod through the host port and out of the pod
//! runs at the configured rates; after DEL the node has no IFB, no qdisc, no rule for the pod
//! and no reservation left.

use crate::common::bw_rig::{tcp_rate, tcp_rate_via};
use crate::common::rig::{first_ip, require_root, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

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

    /// `cni-multi net VERB` of `list` in the node, with the port mapping and the limits as
    /// capability args; an empty PATH: the chain needs no tool.
    fn net(&self, verb: &str, list: &Value) -> Outcome {
        let conf = self.cache.join("net.conflist");
        std::fs::write(&conf, list.to_string()).unwrap();
        let caps = json!({
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16_000_000, "egressBurst": 160_000}
        });
        let (conf, caps) = (conf.to_str().unwrap(), caps.to_string());
        let (pod, cache, dir) = (self.pod.path_str(), self.cache.as_str(), self.dir.as_str());
        let argv = [
            "net",
            verb,
            "x",
            pod,
            "--conf",
            conf,
            "--cache-dir",
            cache,
            "--path",
            dir,
        ];
        Invocation::cli(&argv)
            .argv(&["--container-id", CID, "--cap-args", &caps])
            .in_node(&self.node)
            .path_env("")
            .run_cli()
    }

    fn ok(&self, verb: &str, list: &Value) -> Value {
        self.net(verb, list).expect_ok().json.clone().unwrap_or(Value::Null)
    }

    /// Node state bandwidth and portmap could leave behind: links, qdiscs, the ruleset.
    fn leftovers(&self, pod_ip: &str) -> (Vec<String>, Vec<String>, bool) {
        let links = self.node.link_names();
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

/// ADD of `list`: a result with the interfaces `ifaces` (the IFB last), the rates through the
/// chain (to `node_ip`, or the result's gateway), CHECK, one reservation. The pod's address.
fn add_shaped(c: &Chain, list: &Value, ifaces: &[&str], node_ip: Option<&str>) -> String {
    let r = c.ok("add", list);
    let names: Vec<&str> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), ifaces.len(), "{}: {r}", ifaces.join(", "));
    assert!(names[ifaces.len() - 1].starts_with("bwp"), "{r}");
    let pod_ip = first_ip(&r);
    let node_ip = node_ip.unwrap_or_else(|| r["ips"][0]["gateway"].as_str().unwrap());
    shaped(c, node_ip, &pod_ip);
    c.ok("check", list);
    assert_eq!(reservations(c), 1);
    pod_ip
}

/// DEL leaves the node only `links` and the qdiscs `kept` allows, no rule naming the pod and no
/// reservation; a second DEL passes.
fn del_clean(c: &Chain, list: &Value, pod_ip: &str, links: &[&str], kept: impl Fn(&str) -> bool) {
    c.ok("del", list);
    let (left, qdiscs, rules) = c.leftovers(pod_ip);
    assert_eq!(left, links, "links left");
    assert!(qdiscs.iter().all(|q| kept(q)), "qdiscs left: {qdiscs:?}");
    assert!(!rules, "a rule still names {pod_ip}");
    assert_eq!(reservations(c), 0);
    c.ok("del", list);
}

#[test]
fn ptp_bandwidth_portmap() {
    if !require_root("bandwidth_chains ptp_bandwidth_portmap") {
        return;
    }
    let c = Chain::new("bwcp");
    let list = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [
        {"type": "ptp", "ipam": ipam(&c, "10.73.0.0/24")}, bandwidth(), portmap()]});
    let pod_ip = add_shaped(&c, &list, &["host veth", "eth0", "IFB"], None);
    del_clean(&c, &list, &pod_ip, &["lo"], |_| false);
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
    let pod_ip = add_shaped(&c, &list, &["bridge", "host veth", "eth0", "IFB"], Some("10.74.0.1"));
    // The bridge stays, as the reference's does, with its own qdisc.
    del_clean(&c, &list, &pod_ip, &["lo", "cni-bw0"], |q| {
        q.contains("dev cni-bw0") && q.contains("noqueue")
    });
}

/// A chain edit that drops bandwidth: its DEL alone, with the cached result as prevResult (the
/// bridge is a host interface of it too), leaves the pod's veth with nothing bandwidth made and
/// the bridge untouched; the rest of the chain's DEL then leaves the node clean.
#[test]
fn bandwidth_del_alone_unshapes_and_spares_the_bridge() {
    if !require_root("bandwidth_chains bandwidth_del_alone_unshapes_and_spares_the_bridge") {
        return;
    }
    let c = Chain::new("bwce");
    let list = json!({"cniVersion": "1.0.0", "name": "chain", "plugins": [
        {"type": "bridge", "bridge": "cni-bwe0", "isGateway": true, "ipam": ipam(&c, "10.75.0.0/24")},
        portmap(), bandwidth()]});
    let r = c.ok("add", &list);
    let veth = r["interfaces"][1]["name"].as_str().unwrap().to_string();
    let tc = |args: &[&str]| c.node.exec_ok(&[&["tc"], args].concat());
    assert!(tc(&["qdisc", "show", "dev", &veth]).contains("tbf 1: root"));
    let bridge_before = tc(&["qdisc", "show", "dev", "cni-bwe0"]);

    let mut bw = bandwidth();
    bw["name"] = json!("chain");
    bw["cniVersion"] = json!("1.0.0");
    bw["runtimeConfig"] = json!({"bandwidth": {"ingressRate": 8_000_000, "ingressBurst": 80_000,
        "egressRate": 16_000_000, "egressBurst": 160_000}});
    bw["prevResult"] = r.clone();
    Invocation::cli(&["bandwidth", "DEL", "--netns", c.pod.path_str(), "--container-id", CID])
        .in_node(&c.node)
        .path_env("")
        .env("CNI_PATH", c.dir.as_str())
        .config(&bw)
        .run_cli()
        .expect_ok();
    let qdiscs = tc(&["qdisc", "show", "dev", &veth]);
    assert!(
        qdiscs.starts_with("qdisc noqueue 0: root") && qdiscs.lines().count() == 1,
        "{qdiscs}"
    );
    for dir in ["ingress", "egress"] {
        let f = tc(&["filter", "show", "dev", &veth, dir]);
        assert!(f.trim().is_empty(), "{dir}: {f}");
    }
    assert_eq!(tc(&["qdisc", "show", "dev", "cni-bwe0"]), bridge_before);
    assert!(!c.node.link_names().iter().any(|l| l.starts_with("bwp")));
    let pod_ip = first_ip(&r);
    del_clean(&c, &list, &pod_ip, &["lo", "cni-bwe0"], |q| {
        q.contains("dev cni-bwe0") && q.contains("noqueue")
    });
}
