//! A node swapped with pods running (#17 part 1): pods made by the reference plugins (Debian
//! 1.1.1, whose ipMasq, portmap and firewall write through iptables-nft) are checked, deleted
//! and garbage-collected by cni-multi, which reads and removes those iptables rules over
//! netlink (run with an empty PATH: no iptables binary). And the other way: pods made by
//! cni-multi are deleted by the reference as far as it understands them.
//!
//! Each test has its own node netns; `iptables-save`, `ip6tables-save` and `nft list ruleset`
//! inside it show what is left.

use crate::common::rig::{require_reference, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

const CNI_VERSION: &str = "1.0.0";

/// A node netns, a plugin dir of cni-multi symlinks and a host-local data dir.
struct Node {
    ns: TestNs,
    dir: PluginDir,
    data: TempDir,
    net: String,
    subnet4: String,
    subnet6: String,
}

/// One pod: its netns, container ID, results of the chain's ADD (bridge, portmap, firewall).
struct Pod {
    ns: TestNs,
    cid: String,
    results: Vec<Value>,
}

impl Pod {
    fn ips(&self) -> Vec<String> {
        self.results[0]["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().split('/').next().unwrap().to_string())
            .collect()
    }
}

impl Node {
    fn new(tag: &str, net: &str, third: u8) -> Node {
        let ns = TestNs::new_node(tag);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Node {
            ns,
            dir: PluginDir::new(),
            data: TempDir::new(tag),
            net: net.to_string(),
            subnet4: format!("10.{third}.0.0/24"),
            subnet6: format!("fd{third:02x}::/64"),
        }
    }

    /// The chain bridge (ipMasq, hairpin, dual stack) → portmap (tcp + udp, one with a hostIP)
    /// → firewall, one config per plugin.
    fn confs(&self, version: &str) -> Vec<Value> {
        let base = |ty: &str| json!({"cniVersion": version, "name": self.net, "type": ty});
        let mut bridge = base("bridge");
        bridge["bridge"] = json!(format!("br-{}", &self.net[..6.min(self.net.len())]));
        bridge["isGateway"] = json!(true);
        bridge["ipMasq"] = json!(true);
        bridge["hairpinMode"] = json!(true);
        bridge["ipam"] = json!({"type": "host-local", "dataDir": self.data.as_str(),
            "ranges": [[{"subnet": self.subnet4}], [{"subnet": self.subnet6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]});
        let mut portmap = base("portmap");
        portmap["capabilities"] = json!({"portMappings": true});
        let firewall = base("firewall");
        vec![bridge, portmap, firewall]
    }

    fn mappings(&self) -> Value {
        json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 8053, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "127.0.0.1"}
        ])
    }

    /// The config a runtime sends plugin `i` of the chain for `verb`.
    fn conf_for(&self, i: usize, version: &str, prev: Option<&Value>, with_mappings: bool) -> Value {
        let mut c = self.confs(version)[i].clone();
        if i == 1 && with_mappings {
            c["runtimeConfig"] = json!({"portMappings": self.mappings()});
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn inv(&self, plugin: &str, verb: &str, cid: &str, conf: &Value) -> Invocation {
        Invocation::new(plugin, verb)
            .container_id(cid)
            .config(conf)
            .in_node(&self.ns)
    }

    fn run(&self, reference: bool, inv: Invocation) -> Outcome {
        if reference {
            inv.run_reference()
        } else {
            // No iptables/nft binary reachable: everything goes over netlink.
            inv.env("PATH", "").run_ours_in(&self.dir)
        }
    }

    /// ADD the whole chain for a new pod, by the reference or by cni-multi.
    fn add_pod(&self, reference: bool, tag: &str, cid: &str) -> Pod {
        let ns = TestNs::new_node(tag);
        let mut results: Vec<Value> = Vec::new();
        for (i, plugin) in ["bridge", "portmap", "firewall"].into_iter().enumerate() {
            let conf = self.conf_for(i, CNI_VERSION, results.last(), true);
            let out = self.run(reference, self.inv(plugin, "ADD", cid, &conf).pod(&ns));
            out.expect_ok();
            results.push(out.result().clone());
        }
        Pod {
            ns,
            cid: cid.to_string(),
            results,
        }
    }

    /// CHECK of every plugin of the chain (cni-multi), with each plugin's prevResult.
    fn check(&self, pod: &Pod) -> Vec<Outcome> {
        let last = pod.results.last().unwrap();
        ["bridge", "portmap", "firewall"]
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let conf = self.conf_for(i, CNI_VERSION, Some(last), true);
                self.run(false, self.inv(p, "CHECK", pod.cid.as_str(), &conf).pod(&pod.ns))
            })
            .collect()
    }

    /// DEL of the chain in reverse; `full` sends netns, prevResult and mappings, otherwise
    /// none of them (a runtime's second DEL, or one after the netns vanished).
    fn del(&self, reference: bool, pod: &Pod, full: bool) {
        for (i, plugin) in ["bridge", "portmap", "firewall"].into_iter().enumerate().rev() {
            // A runtime sends every plugin the chain's cached result on DEL.
            let conf = self.conf_for(i, CNI_VERSION, full.then(|| &pod.results[2]), full);
            let mut inv = self.inv(plugin, "DEL", &pod.cid, &conf);
            if full {
                inv = inv.pod(&pod.ns);
            }
            self.run(reference, inv).expect_ok();
        }
    }

    /// cni-multi GC of bridge and portmap, with `valid` as `cni.dev/valid-attachments` or
    /// without the key.
    fn gc(&self, valid: Option<Value>) {
        for (i, plugin) in ["bridge", "portmap", "firewall"].into_iter().enumerate() {
            let mut conf = self.conf_for(i, "1.1.0", None, false);
            if let Some(v) = &valid {
                conf["cni.dev/valid-attachments"] = v.clone();
            }
            self.run(
                false,
                self.inv(plugin, "GC", "", &conf)
                    .unset("CNI_CONTAINERID")
                    .unset("CNI_IFNAME"),
            )
            .expect_ok();
        }
    }

    /// iptables-save and ip6tables-save (without the timestamp lines) and the nft ruleset,
    /// with packet counters blanked (the node's own IPv6 chatter may pass the nat hooks).
    fn state(&self) -> String {
        let mut s = String::new();
        for tool in ["iptables-save", "ip6tables-save"] {
            for l in self.ns.exec_ok(&[tool]).lines().filter(|l| !l.starts_with('#')) {
                // `:CHAIN POLICY [packets:bytes]`
                s += if l.starts_with(':') {
                    l.split(" [").next().unwrap_or(l)
                } else {
                    l
                };
                s.push('\n');
            }
        }
        for l in self.ns.nft_tables_sorted().lines() {
            match l.find("counter packets") {
                Some(i) => {
                    let rest = l[i..].splitn(6, ' ').nth(5).unwrap_or("");
                    s += &format!("{}counter {rest}", &l[..i]);
                }
                None => s += l,
            }
            s.push('\n');
        }
        s
    }
}

/// The lines of `state` that name `needle` as a whole word (an address is not a prefix of a
/// longer one: `10.1.0.2` does not name `10.1.0.20`).
fn naming<'a>(state: &'a str, needle: &str) -> Vec<&'a str> {
    state
        .lines()
        .filter(|l| {
            l.match_indices(needle).any(|(i, _)| {
                let next = l[i + needle.len()..].chars().next();
                let prev = l[..i].chars().next_back();
                // `10.1.0.2:80` names 10.1.0.2; `fd00::2:1` does not name fd00::2.
                let v6 = needle.contains(':');
                let part = |c: char| c.is_ascii_alphanumeric() || (v6 && c == ':');
                !next.is_some_and(part) && !prev.is_some_and(part)
            })
        })
        .collect()
}

/// What would name a pod in the firewall state: its IPs (as whole words), and its container
/// ID and chain hash (`CNI-DN-<21 hex>` is a prefix of `CNI-<24 hex>`) anywhere.
fn pod_names(net: &str, pod: &Pod) -> (Vec<String>, Vec<String>) {
    let hash = reference_hash(net, &pod.cid);
    (pod.ips(), vec![pod.cid.clone(), hash[..21].to_string()])
}

/// sha512(net+cid) in hex, the reference's chain-name hash (through the `sha512sum` tool).
fn reference_hash(net: &str, cid: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha512sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha512sum");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{net}{cid}").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..128].to_string()
}

#[track_caller]
fn assert_gone(node: &Node, pod: &Pod, when: &str) {
    let state = node.state();
    let (words, anywhere) = pod_names(&node.net, pod);
    for n in words.iter().chain(&anywhere) {
        let lines: Vec<&str> = if words.contains(n) {
            naming(&state, n)
        } else {
            state.lines().filter(|l| l.contains(n.as_str())).collect()
        };
        assert!(
            lines.is_empty(),
            "{when}: {n} still named:\n{}\n\nfull state:\n{state}",
            lines.join("\n")
        );
    }
}

#[track_caller]
fn assert_present(node: &Node, pod: &Pod, when: &str) {
    let state = node.state();
    let hash = reference_hash(&node.net, &pod.cid);
    for chain in [format!("CNI-{}", &hash[..24]), format!("CNI-DN-{}", &hash[..21])] {
        assert!(
            state.contains(&format!(":{chain} ")),
            "{when}: {chain} missing:\n{state}"
        );
    }
    for ip in pod.ips() {
        assert!(!naming(&state, &ip).is_empty(), "{when}: {ip} not named:\n{state}");
    }
}

#[test]
fn naming_finds_whole_addresses() {
    let s = "-A X -j DNAT --to-destination 10.1.0.2:80\n-A X -j DNAT --to-destination [fd01::2]:80\n-d 10.1.0.20/32";
    assert_eq!(naming(s, "10.1.0.2").len(), 1);
    assert_eq!(naming(s, "fd01::2").len(), 1);
    assert_eq!(naming(s, "fd01::").len(), 0);
    assert_eq!(naming(s, "10.1.0.20").len(), 1);
}

#[test]
fn reference_pods_checked_deleted_and_collected_by_cni_multi() {
    if !require_reference("reference_pods_checked_deleted_and_collected_by_cni_multi", "portmap") {
        return;
    }
    let node = Node::new("iptsw", "swapnet", 0x5a);
    let a = node.add_pod(true, "iptswa", "ctr-a");
    let b = node.add_pod(true, "iptswb", "ctr-b");
    let c = node.add_pod(true, "iptswc", "ctr-c");
    for p in [&a, &b, &c] {
        assert_present(&node, p, "after the reference's ADD");
    }
    assert!(node
        .ns
        .exec_ok(&["iptables-save", "-t", "nat"])
        .contains("-j DNAT --to-destination"));

    // CHECK: the reference's rules are a healthy pod.
    for out in node.check(&a) {
        out.expect_ok();
    }
    // … and CHECK reads them: with c's DNAT chain emptied, portmap's CHECK of c fails.
    let dn_c = format!("CNI-DN-{}", &reference_hash(&node.net, "ctr-c")[..21]);
    let saved = node.ns.exec_ok(&["iptables-save", "-t", "nat"]);
    node.ns.exec_ok(&["iptables", "-t", "nat", "-F", &dn_c]);
    let checks = node.check(&c);
    assert!(checks[0].success(), "bridge CHECK of c: {}", checks[0]);
    assert!(
        !checks[1].success(),
        "portmap CHECK of c must fail with its chain emptied"
    );
    // (The default layout is iptables on this node, so CHECK reads the reference's chain as
    // it would its own.)
    let why = checks[1].msg().unwrap_or_default();
    assert!(
        why.starts_with(&format!("could not check dnat chain: a rule of {dn_c} is missing")),
        "{}",
        checks[1]
    );
    // Put c's chain back as the reference made it.
    for l in saved.lines().filter(|l| l.starts_with(&format!("-A {dn_c} "))) {
        let mut argv = vec!["iptables", "-t", "nat"];
        argv.extend(l.split_whitespace());
        node.ns.exec_ok(&argv);
    }
    for out in node.check(&c) {
        out.expect_ok();
    }

    // DEL with netns and prevResult: nothing of a is left; b and c keep theirs.
    node.del(false, &a, true);
    assert_gone(&node, &a, "after cni-multi's DEL of a");
    node.del(false, &a, true); // a second DEL finds nothing and succeeds
    assert_present(&node, &b, "b after a's DEL");
    assert_present(&node, &c, "c after a's DEL");

    // DEL without netns, prevResult or mappings (chain names and comments identify b).
    node.del(false, &b, false);
    assert_gone(&node, &b, "after cni-multi's DEL of b without netns and prevResult");
    assert_present(&node, &c, "c after b's DEL");

    // The shared chains stay, as the reference leaves them.
    let state = node.state();
    for shared in [
        ":CNI-HOSTPORT-DNAT ",
        ":CNI-HOSTPORT-MASQ ",
        ":CNI-HOSTPORT-SETMARK ",
        ":CNI-FORWARD ",
        ":CNI-ADMIN ",
    ] {
        assert!(state.contains(shared), "{shared} kept:\n{state}");
    }

    // GC without the key changes nothing.
    let before = node.state();
    node.gc(None);
    assert_eq!(node.state(), before, "GC without cni.dev/valid-attachments");
    // GC with c still valid keeps c.
    node.gc(Some(json!([{"containerID": "ctr-c", "ifname": "eth0"}])));
    assert_present(&node, &c, "GC with c valid");
    // GC with an empty list removes c's ipMasq and portmap chains and their jumps.
    node.gc(Some(json!([])));
    let state = node.state();
    let hash = reference_hash(&node.net, "ctr-c");
    assert!(!state.contains(&hash[..21]), "GC left c's chains:\n{state}");
    assert!(!state.contains("ctr-c"), "GC left c's comments:\n{state}");
    // The firewall's accepts carry no attachment identity: its DEL (with prevResult) removes them.
    let fw = node.conf_for(2, CNI_VERSION, Some(&c.results[2]), false);
    node.run(false, node.inv("firewall", "DEL", "ctr-c", &fw)).expect_ok();
    assert_gone(&node, &c, "after GC and c's firewall DEL");
}

#[test]
fn cni_multi_pods_deleted_by_the_reference() {
    if !require_reference("cni_multi_pods_deleted_by_the_reference", "portmap") {
        return;
    }
    let node = Node::new("iptrv", "backnet", 0x5b);
    let a = node.add_pod(false, "iptrva", "ctr-ra");
    for out in node.check(&a) {
        out.expect_ok();
    }
    let host_veth = a.results[0]["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(node.ns.link(&host_veth).is_some());
    // The reference's DEL removes what it understands, which is now everything: cni-multi's
    // default layouts on a node with iptables are the reference's own (#23), byte for byte.
    // Firewall succeeds, portmap removes our port mappings, and bridge's ipMasq teardown finds
    // the chain and the POSTROUTING jumps (before, with cni-multi's nftables table, it failed
    // on `iptables -D … -j CNI-<hash>`: "Chain … does not exist").
    let last = &a.results[2];
    assert!(node.ns.exec_ok(&["iptables-save", "-t", "nat"]).contains("-j CNI-DN-"));
    for (i, plugin) in [(2, "firewall"), (1, "portmap")] {
        let conf = node.conf_for(i, CNI_VERSION, Some(last), true);
        node.run(true, node.inv(plugin, "DEL", &a.cid, &conf).pod(&a.ns))
            .expect_ok();
    }
    let nat = node.ns.exec_ok(&["iptables-save", "-t", "nat"]);
    assert!(
        !nat.contains("CNI-DN-"),
        "the reference's DEL left our port mappings:\n{nat}"
    );
    let conf = node.conf_for(0, CNI_VERSION, Some(last), false);
    node.run(true, node.inv("bridge", "DEL", &a.cid, &conf).pod(&a.ns))
        .expect_ok();
    let hash = reference_hash(&node.net, &a.cid);
    let state = node.state();
    assert!(
        !state.contains(&format!("CNI-{}", &hash[..24])),
        "ipMasq left:\n{state}"
    );
    for ip in a.ips() {
        assert!(
            naming(&state, &ip).is_empty(),
            "the reference's DELs left {ip}:\n{state}"
        );
    }
    // cni-multi's GC finds nothing of the gone pod left in either layout.
    node.gc(Some(json!([])));
    let state = node.state();
    let ip4 = &a.ips()[0];
    for table in ["cni_plugins_masquerade", "cni_hostport"] {
        let block: String = state
            .split("table ")
            .filter(|t| t.contains(table))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(naming(&block, ip4).is_empty(), "{table} after GC:\n{block}");
    }
}

#[test]
fn a_del_where_legacy_tables_exist_looks_there_and_succeeds() {
    if !require_reference("a_del_where_legacy_tables_exist_looks_there_and_succeeds", "bridge") {
        return;
    }
    let node = Node::new("iptlg", "legacynet", 0x5c);
    // Listing a legacy table registers it in this netns, as a node on iptables-legacy has it.
    node.ns.exec_ok(&["iptables-legacy", "-t", "nat", "-N", "OTHER"]);
    let before = node.ns.exec_ok(&["iptables-legacy-save", "-t", "nat"]);
    let conf = node.conf_for(1, CNI_VERSION, None, false);
    let out = node.run(false, node.inv("portmap", "DEL", "ctr-gone", &conf));
    out.expect_ok();
    // Nothing of the attachment there: x_tables is left as it was (tests/it/legacy_node.rs
    // removes the reference's legacy chains).
    let strip = |s: &str| s.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let after = node.ns.exec_ok(&["iptables-legacy-save", "-t", "nat"]);
    assert_eq!(strip(&after), strip(&before));
    assert!(!out.stderr.contains("legacy"), "no note any more: {}", out.stderr);
}

#[test]
fn reference_ptp_ipmasq_checked_and_deleted_by_cni_multi() {
    if !require_reference("reference_ptp_ipmasq_checked_and_deleted_by_cni_multi", "ptp") {
        return;
    }
    let node = Node::new("iptpp", "ptpnet", 0x5d);
    let pod_ns = TestNs::new_node("iptppa");
    let conf = json!({"cniVersion": CNI_VERSION, "name": "ptpnet", "type": "ptp", "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": node.data.as_str(),
                 "ranges": [[{"subnet": node.subnet4}], [{"subnet": node.subnet6}]]}});
    let out = node.run(true, node.inv("ptp", "ADD", "ctr-p", &conf).pod(&pod_ns));
    out.expect_ok();
    let pod = Pod {
        ns: pod_ns,
        cid: "ctr-p".into(),
        results: vec![out.result().clone()],
    };
    let hash = reference_hash("ptpnet", "ctr-p");
    let state = node.state();
    assert!(state.contains(&format!(":CNI-{} ", &hash[..24])), "{state}");
    let mut chk = conf.clone();
    chk["prevResult"] = pod.results[0].clone();
    node.run(false, node.inv("ptp", "CHECK", "ctr-p", &chk).pod(&pod.ns))
        .expect_ok();
    // DEL without netns or prevResult.
    node.run(false, node.inv("ptp", "DEL", "ctr-p", &conf)).expect_ok();
    assert_gone(&node, &pod, "after cni-multi's ptp DEL");
}
