//! Faults: SIGKILL at random points of ADD and DEL, the pod netns deleted while ADD runs, a
//! dataDir on a full or read-only tmpfs, an nftables object that makes the kernel refuse a
//! batch. After each, what a runtime does (DEL, maybe twice, with or without the cached
//! prevResult, then GC) must leave nothing: no link, address, nft rule naming the container,
//! reservation, tuning backup, flannel saved config or cache entry; and a new ADD of the
//! same container must work.
//!
//! Bounded for CI: `FAULTS_ITERS` kills per scenario (default 20, about 35 s in all). The seed is printed;
//! `FAULTS_SEED` replays a run. `make soak` runs `soak` (20 workers, 10 000 operations).

use crate::common::rig::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

// ---- randomness without a crate ------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64;
                t ^ (std::process::id() as u64) << 32
            });
        eprintln!("{test}: FAULTS_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn iterations() -> usize {
    std::env::var("FAULTS_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

// ---- a node with its state dirs --------------------------------------------------------------

/// A throw-away node netns, every state dir under one temp dir, and cni-multi's symlinks.
struct Site {
    node: TestNs,
    state: TempDir,
    plugins: PluginDir,
    /// Links on the node that belong to the network, not to one attachment (the bridge).
    shared_links: Vec<String>,
}

impl Site {
    fn new(tag: &str) -> Site {
        let state = TempDir::new(&format!("{tag}-state"));
        for d in ["ipam", "tuning", "flannel", "cache", "run"] {
            std::fs::create_dir(state.join(d)).unwrap();
        }
        Site {
            node: TestNs::new_node(&format!("{tag}-node")),
            state,
            plugins: PluginDir::new(),
            shared_links: Vec::new(),
        }
    }

    fn dir(&self, d: &str) -> String {
        self.state.join(d).to_str().unwrap().to_string()
    }

    fn save_list(&self, list: &Value) {
        std::fs::write(self.state.join("net.conflist"), list.to_string()).unwrap();
    }

    /// `cni-multi net VERB` in the node, as a child we may kill. Plugins of the list run
    /// in-process (CNI_PATH holds this binary), so a kill lands anywhere in the chain.
    fn net_cmd(&self, verb: &str, pod: &str, cid: &str, extra: &[&str]) -> Command {
        let conf = self.state.join("net.conflist");
        let mut c = Command::new(tool("nsenter"));
        c.arg(format!("--net={}", self.node.path_str()))
            .arg("--")
            .arg(ours_bin())
            .args(["net", verb, "x"]);
        if !pod.is_empty() {
            c.arg(pod);
        }
        c.args(["--conf", conf.to_str().unwrap()])
            .args(["--cache-dir", &self.dir("cache")])
            .args(["--path", self.plugins.as_str()])
            .args(["--container-id", cid])
            .args(extra)
            .env_clear()
            .env("PATH", PLUGIN_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn net(&self, verb: &str, pod: &str, cid: &str, extra: &[&str]) -> std::process::Output {
        self.net_cmd(verb, pod, cid, extra).output().expect("run cni-multi net")
    }

    fn net_ok(&self, verb: &str, pod: &str, cid: &str, extra: &[&str]) -> String {
        let o = self.net(verb, pod, cid, extra);
        assert!(
            o.status.success(),
            "net {verb} {cid} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Start `net VERB`, SIGKILL it after `ms` milliseconds (if it is still running).
    fn net_killed(&self, verb: &str, pod: &str, cid: &str, extra: &[&str], ms: u64) -> bool {
        let mut child = self.net_cmd(verb, pod, cid, extra).spawn().expect("spawn");
        std::thread::sleep(Duration::from_millis(ms));
        let killed = matches!(child.try_wait(), Ok(None));
        let _ = child.kill();
        let _ = child.wait();
        killed
    }

    /// What the runtime does after a failed or killed call: DEL (maybe without the cached
    /// prevResult, maybe twice), then GC with no valid attachment left.
    fn runtime_cleanup(&self, rng: &mut Rng, pod: &str, cid: &str, extra: &[&str]) {
        if rng.coin() {
            // The runtime lost its cache (or never wrote it): DEL without prevResult.
            for e in std::fs::read_dir(self.state.join("cache/results"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        self.net_ok("del", pod, cid, extra);
        if rng.coin() {
            self.net_ok("del", pod, cid, extra);
        }
        self.net_ok("gc", "", cid, &["--valid", "[]"]);
    }

    /// Everything that still names the attachment (cid, eth0).
    fn residue(&self, pod: Option<&TestNs>, net: &str, cid: &str) -> Vec<String> {
        let mut out = Vec::new();
        for l in self.node.ip_json(&["link", "show"]).as_array().unwrap() {
            let name = l["ifname"].as_str().unwrap_or("");
            if name != "lo" && !self.shared_links.iter().any(|s| s == name) {
                out.push(format!("node link {name}"));
            }
        }
        if let Some(pod) = pod {
            for l in pod.ip_json(&["link", "show"]).as_array().unwrap() {
                let name = l["ifname"].as_str().unwrap_or("");
                if name != "lo" {
                    out.push(format!("pod link {name}"));
                }
            }
            // sbr's policy rules outlive the link: only the three default ones may stay.
            for fam in ["-4", "-6"] {
                for r in pod.ip_json(&[fam, "rule", "show"]).as_array().unwrap() {
                    let prio = r["priority"].as_u64().unwrap_or(0);
                    if ![0, 32766, 32767].contains(&prio) {
                        out.push(format!("pod rule {r}"));
                    }
                }
            }
            for a in pod.ip_json(&["addr", "show", "lo"]).as_array().unwrap() {
                for i in a["addr_info"].as_array().into_iter().flatten() {
                    let ip = i["local"].as_str().unwrap_or("");
                    if ip != "127.0.0.1" && ip != "::1" {
                        out.push(format!("pod address {ip}"));
                    }
                }
            }
        }
        let chains = [
            cni_multi::pkg::spoofcheck::iface_chain(cid, "eth0"),
            cni_multi::pkg::spoofcheck::mac_chain(cid, "eth0"),
            // The reference's per-attachment iptables chains (ipMasqBackend iptables).
            cni_multi::pkg::reference_iptables::masq_chain(net, cid),
            cni_multi::pkg::reference_iptables::dnat_chain(net, cid),
        ];
        let comments = [
            cni_multi::pkg::comment::rule_comment(net, cid, "eth0"),
            cni_multi::pkg::masquerade::nftables::comment_for_instance(net, "eth0", cid),
            cni_multi::pkg::spoofcheck::rule_comment(cid, "eth0"),
        ];
        let rs: Value = serde_json::from_str(&self.node.exec_ok(&["nft", "-j", "list", "ruleset"])).unwrap();
        for o in rs["nftables"].as_array().unwrap() {
            if let Some(c) = o.get("chain") {
                let name = c["name"].as_str().unwrap_or("");
                if chains.iter().any(|x| x == name) {
                    out.push(format!("nft chain {name}"));
                }
            }
            if let Some(r) = o.get("rule") {
                let c = r["comment"].as_str().unwrap_or("");
                if c.contains(cid) || comments.iter().any(|x| x == c) {
                    out.push(format!("nft rule in {} {}: {c}", r["table"], r["chain"]));
                }
            }
        }
        // iptables-nft's rules carry their comments in xt matches, which `nft -j` does not
        // show as comments: read them as iptables prints them.
        for save in ["iptables-save", "ip6tables-save"] {
            for l in self.node.exec_ok(&[save]).lines() {
                if l.contains(cid) || chains.iter().any(|c| l.contains(c.as_str())) {
                    out.push(format!("{save}: {l}"));
                }
            }
        }
        for (d, keep) in [
            ("ipam", &["lock", "last_reserved_ip.0"][..]),
            ("tuning", &[][..]),
            ("flannel", &[][..]),
            ("cache", &[][..]),
        ] {
            walk(&self.state.join(d), &mut |p: &Path| {
                let n = p.file_name().unwrap().to_string_lossy();
                // host-local's index is a cache of the directory, rebuilt when it is stale.
                let index = d == "ipam" && n.starts_with('.') && n.ends_with(".index");
                if !keep.iter().any(|k| *k == n) && !index {
                    out.push(format!("file {}", p.display()));
                }
            });
        }
        out
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

// ---- the chains under test -----------------------------------------------------------------

const PORTS: &str = r#"{"portMappings":[{"hostPort":18080,"containerPort":80,"protocol":"tcp"},{"hostPort":18081,"containerPort":81,"protocol":"udp"}],"bandwidth":{"ingressRate":8000000,"ingressBurst":80000,"egressRate":8000000,"egressBurst":80000}}"#;

/// bridge (ipMasq, macspoofchk) -> portmap -> firewall -> tuning -> bandwidth.
fn bridge_chain(site: &Site, net: &str, br: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": net,
        "plugins": [
            {"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": true, "macspoofchk": true,
             "ipam": {"type": "host-local", "subnet": subnet, "dataDir": site.dir("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
            {"type": "tuning", "mtu": 1400, "promisc": true, "dataDir": site.dir("tuning"),
             "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1"}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    })
}

/// ptp (ipMasq) -> portmap -> firewall -> tuning -> sbr.
fn ptp_chain(site: &Site, net: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": net,
        "plugins": [
            {"type": "ptp", "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": subnet, "dataDir": site.dir("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
            {"type": "tuning", "mtu": 1300, "dataDir": site.dir("tuning")},
            {"type": "sbr"}
        ]
    })
}

/// bridge with the reference's iptables rules (ipMasqBackend iptables) -> portmap ->
/// firewall (backend iptables) -> tuning.
fn iptables_chain(site: &Site, net: &str, br: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": "1.1.0", "name": net,
        "plugins": [
            {"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": true, "ipMasqBackend": "iptables",
             "ipam": {"type": "host-local", "subnet": subnet, "dataDir": site.dir("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall", "backend": "iptables"},
            {"type": "tuning", "mtu": 1400, "dataDir": site.dir("tuning")}
        ]
    })
}

/// flannel (delegating to bridge + host-local) -> portmap -> tuning.
fn flannel_chain(site: &Site, net: &str, br: &str) -> Value {
    std::fs::write(
        site.state.join("run/subnet.env"),
        "FLANNEL_NETWORK=10.246.0.0/16\nFLANNEL_SUBNET=10.246.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    )
    .unwrap();
    json!({
        "cniVersion": "1.1.0", "name": net,
        "plugins": [
            {"type": "flannel", "subnetFile": site.state.join("run/subnet.env"), "dataDir": site.dir("flannel"),
             "ipam": {"dataDir": site.dir("ipam")}, "delegate": {"bridge": br}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "tuning", "promisc": true, "dataDir": site.dir("tuning")}
        ]
    })
}

/// Kill delays are drawn from 0..=span ms: at least 40, and past the end of one whole ADD as
/// measured here (a debug build's chain takes longer than 40 ms), so every step can be hit.
fn kill_span(site: &Site, pod: &TestNs, cid: &str, extra: &[&str]) -> u64 {
    // The first round makes the network's shared objects (bridge, tables): not measured.
    let mut ms = 0;
    for _ in 0..2 {
        let t = std::time::Instant::now();
        site.net_ok("add", pod.path_str(), cid, extra);
        let add = t.elapsed().as_millis() as u64;
        let t = std::time::Instant::now();
        site.net_ok("del", pod.path_str(), cid, extra);
        ms = add.max(t.elapsed().as_millis() as u64);
    }
    (ms + ms / 4).max(40)
}

/// A kill-ADD test: root, its own site (`site_name`), the chain for `net`, then the kill loop
/// (`tag` seeds it and names its pod).
fn kill_add_test(
    test: &str,
    site_name: &str,
    tag: &str,
    net: &str,
    shared: &[&str],
    chain: impl FnOnce(&Site, &str) -> Value,
) {
    if !require_root(test) {
        return;
    }
    let mut site = Site::new(site_name);
    let list = chain(&site, net);
    kill_add_loop(tag, &mut site, &list, net, shared);
}

/// The kill loop: ADD killed after 0-40 ms, runtime cleanup, no residue, ADD+DEL works.
fn kill_add_loop(test: &str, site: &mut Site, list: &Value, net: &str, shared: &[&str]) {
    let mut rng = Rng::new(test);
    site.save_list(list);
    let pod = TestNs::new(&format!("{test}-pod"));
    let cid = format!("{}-c", unique_name("fk"));
    let extra = ["--cap-args", PORTS];
    let (mut killed, mut leftovers_before_cleanup) = (0, 0);
    let span = kill_span(site, &pod, &cid, &extra);
    for i in 0..iterations() {
        let ms = rng.below(span + 1);
        if site.net_killed("add", pod.path_str(), &cid, &extra, ms) {
            killed += 1;
        }
        // A bridge made by an earlier iteration is the network's, not the attachment's.
        site.shared_links = shared.iter().map(|s| s.to_string()).collect();
        if !site.residue(Some(&pod), net, &cid).is_empty() {
            leftovers_before_cleanup += 1;
        }
        site.runtime_cleanup(&mut rng, pod.path_str(), &cid, &extra);
        let left = site.residue(Some(&pod), net, &cid);
        assert!(
            left.is_empty(),
            "{test} iteration {i} (killed after {ms} ms): residue {left:#?}"
        );
        let r: Value = serde_json::from_str(&site.net_ok("add", pod.path_str(), &cid, &extra)).unwrap();
        assert!(r["ips"][0]["address"].is_string(), "{test}: new ADD gave {r}");
        site.net_ok("del", pod.path_str(), &cid, &extra);
        let left = site.residue(Some(&pod), net, &cid);
        assert!(left.is_empty(), "{test} iteration {i}: residue after ADD+DEL {left:#?}");
    }
    eprintln!(
        "{test}: {} iterations, kill delay 0-{span} ms, {killed} killed mid-ADD, {leftovers_before_cleanup} had state for the runtime to clean up, 0 residue after",
        iterations()
    );
}

#[test]
fn sigkill_during_add_bridge_portmap_firewall_tuning_bandwidth() {
    kill_add_test(
        "sigkill_during_add_bridge_portmap_firewall_tuning_bandwidth",
        "fk-br",
        "sigkill-add-bridge",
        "fkbr",
        &["cmfk0"],
        |s, net| bridge_chain(s, net, "cmfk0", "10.71.0.0/24"),
    );
}

#[test]
fn sigkill_during_add_iptables_backends() {
    kill_add_test(
        "sigkill_during_add_iptables_backends",
        "fk-ipt",
        "sigkill-add-iptables",
        "fkipt",
        &["cmfi0"],
        |s, net| iptables_chain(s, net, "cmfi0", "10.89.0.0/24"),
    );
}

#[test]
fn sigkill_during_add_ptp_portmap_firewall_tuning_sbr() {
    kill_add_test(
        "sigkill_during_add_ptp_portmap_firewall_tuning_sbr",
        "fk-ptp",
        "sigkill-add-ptp",
        "fkptp",
        &[],
        |s, net| ptp_chain(s, net, "10.72.0.0/24"),
    );
}

#[test]
fn sigkill_during_add_flannel_portmap_tuning() {
    kill_add_test(
        "sigkill_during_add_flannel_portmap_tuning",
        "fk-fl",
        "sigkill-add-flannel",
        "fkfl",
        &["cmfl0"],
        |s, net| flannel_chain(s, net, "cmfl0"),
    );
}

/// The bridge network of the DEL and netns loops, saved; the bridge is the network's, not
/// an attachment's.
fn bridge_site(site_name: &str, net: &str, br: &str, subnet: &str) -> Site {
    let mut site = Site::new(site_name);
    let list = bridge_chain(&site, net, br, subnet);
    site.save_list(&list);
    site.shared_links = vec![br.into()];
    site
}

#[test]
fn sigkill_during_del_then_del_again() {
    if !require_root("sigkill_during_del_then_del_again") {
        return;
    }
    let test = "sigkill-del";
    let mut rng = Rng::new(test);
    let site = bridge_site("fk-del", "fkdel", "cmfd0", "10.73.0.0/24");
    let pod = TestNs::new("fk-del-pod");
    let cid = format!("{}-c", unique_name("fd"));
    let extra = ["--cap-args", PORTS];
    let mut killed = 0;
    let span = kill_span(&site, &pod, &cid, &extra);
    for i in 0..iterations() {
        site.net_ok("add", pod.path_str(), &cid, &extra);
        let ms = rng.below(span + 1);
        if site.net_killed("del", pod.path_str(), &cid, &extra, ms) {
            killed += 1;
        }
        site.runtime_cleanup(&mut rng, pod.path_str(), &cid, &extra);
        let left = site.residue(Some(&pod), "fkdel", &cid);
        assert!(
            left.is_empty(),
            "{test} iteration {i} (killed after {ms} ms): residue {left:#?}"
        );
    }
    eprintln!(
        "{test}: {} iterations, kill delay 0-{span} ms, {killed} killed mid-DEL, 0 residue",
        iterations()
    );
}

#[test]
fn pod_netns_deleted_while_add_runs() {
    if !require_root("pod_netns_deleted_while_add_runs") {
        return;
    }
    let test = "netns-deleted";
    let mut rng = Rng::new(test);
    let site = bridge_site("fk-ns", "fkns", "cmfn0", "10.74.0.0/24");
    let cid = format!("{}-c", unique_name("fn"));
    let extra = ["--cap-args", PORTS];
    let mut failed = 0;
    let span = kill_span(&site, &TestNs::new("fk-ns-cal"), &cid, &extra);
    for i in 0..iterations() {
        let pod = TestNs::new("fk-ns-pod");
        let path = pod.path_str().to_string();
        let child = site.net_cmd("add", &path, &cid, &extra).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(span + 1)));
        // What a runtime does when the sandbox dies: the netns goes, the pod's veth with it
        // (the plugin inside it keeps running; dropping a TestNs would kill it).
        pod.delete_leaving_processes();
        let out = child.wait_with_output().unwrap();
        if !out.status.success() {
            failed += 1;
            // `cni-multi net` reports like cnitool: the failing plugin and its message on stderr.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("failed (add)"),
                "{test}: a failed ADD names the plugin: {err} (status {:?}, stdout {})",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        site.runtime_cleanup(&mut rng, &path, &cid, &extra);
        let left = site.residue(None, "fkns", &cid);
        assert!(left.is_empty(), "{test} iteration {i}: residue {left:#?}");
    }
    eprintln!(
        "{test}: {} iterations, netns deleted after 0-{span} ms, {failed} ADDs failed on the vanished netns, 0 residue",
        iterations()
    );
}

// ---- faults the kernel or the filesystem makes ------------------------------------------------

/// portmap commits one batch per family: a v6 table the kernel refuses to extend fails the
/// second batch, and the first one's rules go. In both layouts: nftables (a regular chain
/// named like our base chain), iptables (a base chain named like the reference's
/// CNI-HOSTPORT-DNAT, which no rule may jump to).
#[test]
fn portmap_v6_batch_refused_rolls_back_v4_rules() {
    if !require_root("portmap_v6_batch_refused_rolls_back_v4_rules") {
        return;
    }
    for (backend, trap) in [
        (
            "nftables",
            "add table ip6 cni_hostport; add chain ip6 cni_hostport prerouting",
        ),
        (
            "iptables",
            "add table ip6 nat; add chain ip6 nat CNI-HOSTPORT-DNAT { type nat hook prerouting priority 10; }",
        ),
    ] {
        let node = TestNs::new_node("fk-pm-node");
        let pod = TestNs::new("fk-pm-pod");
        node.exec_ok(&["nft", trap]);
        let conf = json!({
            "cniVersion": "1.0.0", "name": "fkpm", "type": "portmap", "backend": backend,
            "runtimeConfig": {"portMappings": [{"hostPort": 18090, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": {"cniVersion": "1.0.0",
                "interfaces": [{"name": "eth0", "sandbox": pod.path_str()}],
                "ips": [{"address": "10.75.0.5/24", "interface": 0}, {"address": "fd75::5/64", "interface": 0}]}
        });
        let o = Invocation::new("portmap", "ADD")
            .pod(&pod)
            .in_node(&node)
            .container_id("fkpm-c")
            .config(&conf)
            .run_ours();
        assert!(!o.success(), "{backend}: the v6 batch must be refused: {o}");
        assert!(o.code().is_some(), "a CNI error: {o}");
        let text = node.exec_ok(&["nft", "list", "ruleset"]);
        assert!(
            !text.contains("fkpm-c"),
            "{backend}: v4 rules of the failed ADD remain:\n{text}"
        );
        let nat = node.exec_ok(&["iptables-save", "-t", "nat"]);
        assert!(
            !nat.contains("CNI-DN-") && !nat.contains("10.75.0.5"),
            "{backend}: {nat}"
        );
    }
}

/// Run `cni-multi <argv>` as `plugin` in `node` inside a private mount namespace where `dir`
/// is a tmpfs of 64 KiB, first filled (`full`) or remounted read-only. Nothing is mounted on
/// the machine's own view: the mount dies with the process's namespace.
fn run_on_tmpfs(inv: &Invocation, node: &TestNs, dir: &Path, full: bool, plugins: &PluginDir) -> Outcome {
    let d = dir.to_str().unwrap();
    let prep = if full {
        format!("mount -t tmpfs -o size=64k tmpfs {d} && (dd if=/dev/zero of={d}/fill bs=4k 2>/dev/null; true)")
    } else {
        format!("mount -t tmpfs -o size=64k tmpfs {d} && mount -o remount,ro {d}")
    };
    let dir = TempDir::new("fk-tmpfs");
    let real = plugins.plugin(inv.plugin_name());
    let body = format!(
        "exec unshare -m --propagation private sh -c '{prep} && exec nsenter --net={} -- {} ' ",
        node.path_str(),
        real.display()
    );
    let wrapper = script(&dir, "wrap.sh", &body);
    // argv[0] must be the plugin's name: exec through the symlink from inside the wrapper.
    inv.clone()
        .cni_path(plugins.as_str())
        .in_root_ns()
        .run_binary(&wrapper, plugins.as_str())
}

/// A node and a dataDir for one ADD on a full (`full`) or a read-only tmpfs.
struct Unwritable {
    full: bool,
    node: TestNs,
    data: TempDir,
}

impl Unwritable {
    /// The full case, then the read-only one, each with its own node and dataDir.
    fn each(tag: &'static str) -> impl Iterator<Item = Unwritable> {
        [true, false].into_iter().map(move |full| Unwritable {
            full,
            node: TestNs::new_node(&format!("{tag}-node")),
            data: TempDir::new(&format!("{tag}-data")),
        })
    }

    fn add(&self, plugin: &str, cid: &str, pod: &TestNs, conf: &Value, plugins: &PluginDir) -> Outcome {
        let inv = Invocation::new(plugin, "ADD").pod(pod).container_id(cid).config(conf);
        run_on_tmpfs(&inv, &self.node, self.data.path(), self.full, plugins)
    }
}

/// The node's links but lo.
fn node_links(node: &TestNs) -> Vec<String> {
    node.link_names().into_iter().filter(|n| n != "lo").collect()
}

fn tuning_pod() -> TestNs {
    let pod = TestNs::new("fk-tun-pod");
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    pod
}

fn pod_sysctl(pod: &TestNs, k: &str) -> String {
    pod.exec_ok(&["cat", &format!("/proc/sys/{k}")]).trim().to_string()
}

/// tuning writes sysctls, then its backup: a dataDir that cannot take the backup (full or
/// read-only) fails the ADD, and the sysctls and the link are as before, no file is left.
#[test]
fn tuning_unwritable_data_dir_restores_sysctls_and_link() {
    if !require_root("tuning_unwritable_data_dir_restores_sysctls_and_link") {
        return;
    }
    let plugins = PluginDir::new();
    for u in Unwritable::each("fk-tun") {
        let (full, data) = (u.full, &u.data);
        let pod = tuning_pod();
        let before = (
            pod_sysctl(&pod, "net/ipv4/conf/eth0/arp_filter"),
            pod.link("eth0").unwrap()["mtu"].clone(),
        );
        let conf = json!({
            "cniVersion": "1.0.0", "name": "fktun", "type": "tuning", "dataDir": data.as_str(),
            "mtu": 1280, "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": pod.path_str()}],
                           "ips": [{"address": "10.76.0.5/24", "interface": 0}]}
        });
        let o = u.add("tuning", "fktun-c", &pod, &conf, &plugins);
        assert!(!o.success(), "full={full}: ADD must fail: {o}");
        assert!(
            o.msg().unwrap_or("").contains("failed to save file"),
            "full={full}: {o}"
        );
        let after = (
            pod_sysctl(&pod, "net/ipv4/conf/eth0/arp_filter"),
            pod.link("eth0").unwrap()["mtu"].clone(),
        );
        assert_eq!(after, before, "full={full}: sysctl and MTU restored");
        let mut files = Vec::new();
        walk(data.path(), &mut |p| files.push(p.display().to_string()));
        assert!(files.is_empty(), "full={full}: nothing on the real dir: {files:?}");
    }
}

/// A later sysctl that cannot be written (no such key) puts back the ones written before it.
#[test]
fn tuning_bad_second_sysctl_puts_back_the_first() {
    if !require_root("tuning_bad_second_sysctl_puts_back_the_first") {
        return;
    }
    let node = TestNs::new_node("fk-tun2-node");
    let pod = tuning_pod();
    let data = TempDir::new("fk-tun2-data");
    let before = pod_sysctl(&pod, "net/ipv4/conf/eth0/arp_filter");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "fktun", "type": "tuning", "dataDir": data.as_str(),
        "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.conf.eth0.no_such_key": "1"},
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": pod.path_str()}],
                       "ips": [{"address": "10.76.0.5/24", "interface": 0}]}
    });
    let o = Invocation::new("tuning", "ADD")
        .pod(&pod)
        .in_node(&node)
        .container_id("fktun2")
        .config(&conf)
        .run_ours();
    assert!(!o.success(), "{o}");
    assert_eq!(pod_sysctl(&pod, "net/ipv4/conf/eth0/arp_filter"), before);
}

/// host-local on a full or read-only dataDir: bridge's ADD fails with a CNI error and leaves
/// no veth, no bridge it made, no rules.
#[test]
fn host_local_unwritable_data_dir_leaves_nothing() {
    if !require_root("host_local_unwritable_data_dir_leaves_nothing") {
        return;
    }
    let plugins = PluginDir::new();
    for u in Unwritable::each("fk-hl") {
        let (full, node, data) = (u.full, &u.node, &u.data);
        let pod = TestNs::new("fk-hl-pod");
        let conf = json!({
            "cniVersion": "1.0.0", "name": "fkhl", "type": "bridge", "bridge": "cmhl0", "isGateway": true,
            "ipMasq": true, "ipam": {"type": "host-local", "subnet": "10.78.0.0/24", "dataDir": data.as_str()}
        });
        let o = u.add("bridge", "fkhl-c", &pod, &conf, &plugins);
        assert!(!o.success(), "full={full}: ADD must fail: {o}");
        assert!(o.code().is_some(), "full={full}: a CNI error: {o}");
        let links = node_links(node);
        assert!(links.is_empty(), "full={full}: node links left {links:?}");
        assert!(pod.link("eth0").is_none(), "full={full}: pod eth0 left");
        let text = node.exec_ok(&["nft", "list", "ruleset"]);
        assert!(!text.contains("fkhl-c"), "full={full}: rules left:\n{text}");
    }
}

/// flannel saves its delegate config, then delegates: a delegate that fails (the bridge name
/// is taken by a non-bridge link) leaves no saved config and no reservation.
#[test]
fn flannel_failed_delegate_leaves_no_saved_config() {
    if !require_root("flannel_failed_delegate_leaves_no_saved_config") {
        return;
    }
    let mut site = Site::new("fk-fld");
    site.node
        .ip(&["link", "add", "cmfx0", "type", "veth", "peer", "name", "cmfx0p"]);
    site.shared_links = vec!["cmfx0".into(), "cmfx0p".into()];
    let list = flannel_chain(&site, "fkfld", "cmfx0");
    site.save_list(&list);
    let pod = TestNs::new("fk-fld-pod");
    let o = site.net("add", pod.path_str(), "fkfld-c", &[]);
    assert!(!o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let left = site.residue(Some(&pod), "fkfld", "fkfld-c");
    assert!(
        left.is_empty(),
        "residue after the failed ADD, before any DEL: {left:#?}"
    );
}

// ---- soak ----------------------------------------------------------------------------------

/// `make soak`: SOAK_WORKERS (20) workers, SOAK_OPS (10 000) ADD/DEL operations in all through
/// bridge ipMasq -> portmap -> firewall -> tuning on one node; failures and residue counted.
#[test]
#[ignore]
fn soak() {
    if !require_root("soak") {
        return;
    }
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|s| s.parse().ok()).unwrap_or(d);
    let (workers, ops) = (env("SOAK_WORKERS", 20), env("SOAK_OPS", 10_000));
    let mut site = Site::new("soak");
    let list = json!({
        "cniVersion": "1.1.0", "name": "soak",
        "plugins": [
            {"type": "bridge", "bridge": "cmsoak0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.79.0.0/22", "dataDir": site.dir("ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "firewall"},
            {"type": "tuning", "mtu": 1400, "dataDir": site.dir("tuning")}
        ]
    });
    site.save_list(&list);
    site.shared_links = vec!["cmsoak0".into()];
    let site = std::sync::Arc::new(site);
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let start = std::time::Instant::now();
    let per = ops / workers;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let (site, failures) = (site.clone(), failures.clone());
            std::thread::spawn(move || {
                let pod = TestNs::new("soak-pod");
                let cid = format!("{}-w{w}", unique_name("soak"));
                let caps = format!(
                    r#"{{"portMappings":[{{"hostPort":{},"containerPort":80,"protocol":"tcp"}}]}}"#,
                    20000 + w
                );
                let extra = ["--cap-args", caps.as_str()];
                for op in 0..per {
                    let verb = if op % 2 == 0 { "add" } else { "del" };
                    let o = site.net(verb, pod.path_str(), &cid, &extra);
                    if !o.status.success() {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("w{w} op {op} {verb}: {}", String::from_utf8_lossy(&o.stdout)));
                        if verb == "add" {
                            let _ = site.net("del", pod.path_str(), &cid, &extra);
                        }
                    }
                }
                if per % 2 == 1 {
                    let _ = site.net("del", pod.path_str(), &cid, &extra);
                }
                (cid, pod)
            })
        })
        .collect();
    let done: Vec<(String, TestNs)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Counted once every worker is done: a live neighbour's veth is not residue.
    let mut residue = Vec::new();
    for (cid, pod) in &done {
        residue.extend(site.residue(Some(pod), "soak", cid));
    }
    residue.sort();
    residue.dedup();
    let secs = start.elapsed().as_secs_f64();
    let failures = failures.lock().unwrap();
    eprintln!(
        "soak: {workers} workers, {} operations in {secs:.1} s ({:.0} ops/s), {} failures, {} residue",
        per * workers,
        (per * workers) as f64 / secs,
        failures.len(),
        residue.len()
    );
    for f in failures.iter().take(10) {
        eprintln!("  failure: {f}");
    }
    assert!(failures.is_empty(), "{} failures", failures.len());
    assert!(residue.is_empty(), "residue: {residue:#?}");
}

/// host-local run directly, as a third-party main plugin would exec it: ADD or DEL killed at a
/// random point, then DEL (maybe twice): no reservation or temp file is left, and the next
/// ADD of the same container gets an address.
#[test]
fn sigkill_during_host_local_add_and_del() {
    if !require_root("sigkill_during_host_local_add_and_del") {
        return;
    }
    let test = "sigkill-host-local";
    let mut rng = Rng::new(test);
    let node = TestNs::new_node("fk-hl-node");
    let data = TempDir::new("fk-hl");
    let plugins = PluginDir::new();
    let conf = json!({"cniVersion": "1.1.0", "name": "fkhl", "type": "host-local",
        "ipam": {"type": "host-local", "dataDir": data.as_str(),
                 "ranges": [[{"subnet": "10.87.0.0/24"}], [{"subnet": "fd87::/64"}]]}});
    let inv = |cmd: &str| {
        Invocation::new("host-local", cmd)
            .in_node(&node)
            .netns("/var/run/netns/none")
            .container_id("fkhl-c")
            .config(&conf)
    };
    // host-local takes a few ms: delays up to just past one measured ADD, or most runs
    // would end before the kill.
    let mut span = 0;
    for _ in 0..2 {
        let t = std::time::Instant::now();
        inv("ADD").run_ours_in(&plugins).expect_ok();
        span = (t.elapsed().as_millis() as u64 * 5 / 4).max(2);
        inv("DEL").run_ours_in(&plugins).expect_ok();
    }
    let files = || {
        let mut out = Vec::new();
        walk(data.path(), &mut |p: &Path| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            // The index (`.<net>.index`) is a cache of the directory; its temp file is not.
            if n != "lock" && !n.starts_with("last_reserved_ip") && !n.ends_with(".index") {
                out.push(n);
            }
        });
        out
    };
    let mut killed = 0;
    for i in 0..iterations() * 2 {
        let cmd = if i % 2 == 0 { "ADD" } else { "DEL" };
        if i % 2 == 1 {
            inv("ADD").run_ours_in(&plugins).expect_ok();
        }
        let ms = rng.below(span + 1);
        let o = inv(cmd).timeout(Duration::from_millis(ms)).run_ours_in(&plugins);
        if o.timed_out {
            killed += 1;
        }
        inv("DEL").run_ours_in(&plugins).expect_ok();
        if rng.coin() {
            inv("DEL").run_ours_in(&plugins).expect_ok();
        }
        assert_eq!(files(), Vec::<String>::new(), "{test} {cmd} killed after {ms} ms: left");
        let a = inv("ADD").run_ours_in(&plugins);
        a.expect_ok();
        assert_eq!(a.result()["ips"].as_array().unwrap().len(), 2, "{test}: {a}");
        inv("DEL").run_ours_in(&plugins).expect_ok();
    }
    eprintln!(
        "{test}: {} iterations (ADD and DEL), kill delay 0-{span} ms, {killed} killed, 0 residue",
        iterations() * 2
    );
}

/// The kernel refuses a batch halfway (a regular chain where a base chain goes, a base chain
/// of the wrong kind): bridge's ipMasq batch in either layout or its macspoofchk batch, or
/// firewall's in either layout. The failed ADD leaves nothing: bridge's links, bridge,
/// reservation and earlier rules go; firewall's ruleset is as before.
#[test]
fn nft_batch_refused_halfway_leaves_nothing() {
    if !require_root("nft_batch_refused_halfway_leaves_nothing") {
        return;
    }
    let blockers = [
        (
            "ipMasq nftables",
            "nftables",
            "add table inet cni_plugins_masquerade; add chain inet cni_plugins_masquerade postrouting",
        ),
        (
            "ipMasq iptables",
            "",
            "add table ip nat; add chain ip nat POSTROUTING { type filter hook forward priority 0; }",
        ),
        (
            "macspoofchk",
            "",
            "add table bridge nat; add chain bridge nat PREROUTING",
        ),
    ];
    for (what, backend, nft) in blockers {
        let mut site = Site::new("fk-nft");
        site.node.exec_ok(&["nft", nft]);
        let pod = TestNs::new("fk-nft-pod");
        let conf = json!({"cniVersion": "1.0.0", "name": "fknft", "type": "bridge", "bridge": "cmnf0",
            "isGateway": true, "ipMasq": true, "macspoofchk": true, "ipMasqBackend": backend,
            "ipam": {"type": "host-local", "subnet": "10.88.7.0/24", "dataDir": site.dir("ipam")}});
        let before = site.node.exec_ok(&["nft", "list", "ruleset"]);
        let o = Invocation::new("bridge", "ADD")
            .pod(&pod)
            .in_node(&site.node)
            .container_id("fknft-c")
            .config(&conf)
            .run_ours_in(&site.plugins);
        assert!(
            !o.success() && o.code().is_some(),
            "{what}: ADD must fail with a CNI error: {o}"
        );
        site.shared_links.clear();
        let left = site.residue(Some(&pod), "fknft", "fknft-c");
        assert!(left.is_empty(), "{what}: the failed ADD left {left:#?}\n{o}");
        // Only shared, empty skeletons may stay (the spoof check's `bridge nat` base chain,
        // as after any DEL): no rule at all was added.
        let rules = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("\t\t") && !l.contains("type "))
                .count()
        };
        let after = site.node.exec_ok(&["nft", "list", "ruleset"]);
        assert_eq!(rules(&after), rules(&before), "{what}: rules left:\n{after}");
    }
    // firewall: one batch; refused, the ruleset is exactly as before. In the nftables layout
    // a regular chain where its base chain goes; in the iptables layout (the default here)
    // `CNI-FORWARD` as a base chain, which FORWARD's jump cannot target.
    for (backend, nft) in [
        (
            "nftables",
            "add table inet cni_firewall; add chain inet cni_firewall forward",
        ),
        (
            "",
            "add table ip filter; add chain ip filter CNI-FORWARD { type filter hook output priority 0; }",
        ),
    ] {
        let site = Site::new("fk-nftfw");
        let pod = TestNs::new("fk-nftfw-pod");
        let bridge = json!({"cniVersion": "1.0.0", "name": "fkfw", "type": "bridge", "bridge": "cmnw0",
            "ipam": {"type": "host-local", "subnet": "10.88.8.0/24", "dataDir": site.dir("ipam")}});
        let inv = |c: &Value| {
            Invocation::new(c["type"].as_str().unwrap(), "ADD")
                .pod(&pod)
                .in_node(&site.node)
                .container_id("fkfw-c")
                .config(c)
                .run_ours_in(&site.plugins)
        };
        let prev = inv(&bridge);
        prev.expect_ok();
        site.node.exec_ok(&["nft", nft]);
        let before = site.node.exec_ok(&["nft", "list", "ruleset"]);
        let fw = json!({"cniVersion": "1.0.0", "name": "fkfw", "type": "firewall", "backend": backend,
            "prevResult": prev.result()});
        let o = inv(&fw);
        assert!(
            !o.success() && o.code().is_some(),
            "firewall {backend:?}: ADD must fail: {o}"
        );
        assert_eq!(
            site.node.exec_ok(&["nft", "list", "ruleset"]),
            before,
            "firewall {backend:?}: ruleset changed"
        );
    }
}

/// flannel cannot save its delegate config on a full or read-only dataDir: the ADD fails
/// before delegating, so no bridge, veth or reservation is made.
#[test]
fn flannel_unwritable_data_dir_delegates_nothing() {
    if !require_root("flannel_unwritable_data_dir_delegates_nothing") {
        return;
    }
    let plugins = PluginDir::new();
    for u in Unwritable::each("fk-fltmp") {
        let (full, node, data) = (u.full, &u.node, &u.data);
        let pod = TestNs::new("fk-fltmp-pod");
        let state = TempDir::new("fk-fltmp-state");
        std::fs::write(
            state.join("subnet.env"),
            "FLANNEL_NETWORK=10.247.0.0/16\nFLANNEL_SUBNET=10.247.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let conf = json!({"cniVersion": "1.0.0", "name": "fkfltmp", "type": "flannel",
            "subnetFile": state.join("subnet.env"), "dataDir": data.as_str(),
            "ipam": {"dataDir": state.join("ipam")}, "delegate": {"bridge": "cmft0"}});
        let o = u.add("flannel", "fkfltmp-c", &pod, &conf, &plugins);
        assert!(!o.success() && o.code().is_some(), "full={full}: ADD must fail: {o}");
        let msg = o.msg().unwrap_or("");
        assert!(
            msg.contains("system") || msg.contains("space"),
            "full={full}: not a filesystem error: {o}"
        );
        eprintln!("flannel full={full}: {msg}");
        let links = node_links(node);
        assert!(links.is_empty(), "full={full}: delegated anyway, links {links:?}");
        assert!(!state.join("ipam").exists(), "full={full}: IPAM ran");
        assert_eq!(
            std::fs::read_dir(data.path()).unwrap().count(),
            0,
            "full={full}: files on the real dir"
        );
    }
}
