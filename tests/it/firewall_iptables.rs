//! firewall on a node that uses iptables and drops forwarding (`iptables -P FORWARD DROP` plus
//! Docker's DOCKER-USER/DOCKER-ISOLATION chains, as Docker leaves a node): our binary (empty
//! PATH) behind our bridge with ipMasq keeps pods reachable and isolated by writing the
//! reference's iptables rules; those rules print in `iptables -S` exactly as the reference's
//! (the reference run on an identical node); DEL leaves nothing of the pod; each
//! implementation's DEL removes the other's rules, and CHECK accepts the reference's.

use crate::common::fw_rig::*;
use crate::common::rig::{self, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

/// What Docker leaves in a node's filter table (docker 20–24, one bridge `docker0`).
const DOCKER_FILTER: &str = "*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
";

/// Root, the reference firewall and the iptables tools (to set the node up and to read it).
fn require(test: &str) -> bool {
    if !rig::require_reference(test, "firewall") {
        return false;
    }
    for t in [
        "iptables-restore",
        "iptables-save",
        "ip6tables-save",
        "ip6tables",
        "nft",
    ] {
        if !rig::tool(t).is_file() {
            return rig::skip_or_fail(test, &format!("needs {t}"));
        }
    }
    true
}

/// Makes `node` look like a Docker host: FORWARD policy DROP in both families, Docker's chains.
fn dockerize(node: &TestNs, tmp: &TempDir) {
    let f = tmp.join("docker-filter.rules");
    std::fs::write(&f, DOCKER_FILTER).unwrap();
    node.exec_ok(&["iptables-restore", f.to_str().unwrap()]);
    node.exec_ok(&["ip6tables", "-P", "FORWARD", "DROP"]);
}

fn text(ns: &TestNs, argv: &[&str]) -> String {
    ns.exec_ok(argv)
}

/// Everything the node's firewall holds, as iptables-save, ip6tables-save and nft print it
/// (iptables-save's timestamps removed).
fn all_rules(node: &TestNs) -> String {
    let mut s = String::new();
    for argv in [&["iptables-save"][..], &["ip6tables-save"]] {
        for l in text(node, argv).lines().filter(|l| !l.starts_with('#')) {
            s += l;
            s += "\n";
        }
    }
    s + &node.nft_tables_sorted()
}

/// A pod made by our bridge with ipMasq (empty PATH).
fn masq_pod(site: &Site, dir: &PluginDir, tag: &str, bridge: &str, subnet: &str, cid: &str) -> (Pod, Value) {
    let ns = TestNs::new_node(tag);
    let conf = json!({
        "cniVersion": "1.0.0", "name": format!("net-{bridge}"), "type": "bridge",
        "bridge": bridge, "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": site.data.as_str(),
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    let out = Invocation::new("bridge", "ADD")
        .container_id(cid)
        .pod(&ns)
        .config(&conf)
        .in_node(&site.node)
        .env("PATH", "")
        .run_ours_in(dir);
    out.expect_ok();
    let result = out.result().clone();
    let ip = result["ips"][0]["address"].as_str().unwrap().to_string();
    let host_veth = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_null() && i["name"] != bridge)
        .map(|i| i["name"].as_str().unwrap().to_string())
        .unwrap();
    let pod = Pod {
        ns,
        cid: cid.to_string(),
        ip: ip.split('/').next().unwrap().to_string(),
        cidr: ip,
        ip6: None,
        result,
        host_veth,
    };
    (pod, conf)
}

fn fw_conf(prev: &Value, backend: &str, policy: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "fwnet", "type": "firewall", "backend": backend,
           "ingressPolicy": policy, "prevResult": prev})
}

fn fw(node: &TestNs, dir: &PluginDir, cmd: &str, cid: &str, pod: &TestNs, conf: &Value) -> Outcome {
    Invocation::new("firewall", cmd)
        .container_id(cid)
        .pod(pod)
        .config(conf)
        .in_node(node)
        .env("PATH", "")
        .run_ours_in(dir)
}

fn fw_reference(node: &TestNs, cmd: &str, cid: &str, pod: &TestNs, conf: &Value) -> Outcome {
    Invocation::new("firewall", cmd)
        .container_id(cid)
        .pod(pod)
        .config(conf)
        .in_node(node)
        .run_reference()
}

fn pings(from: &TestNs, to: &str) -> bool {
    from.exec(&["ping", "-c1", "-W1", to]).status.success()
}

/// One Docker-like node, two pods (bridges cni-ia and cni-ib, ipMasq) behind the firewall
/// with `backend` and ingressPolicy same-bridge. Returns [a→outside ping, a→outside tcp
/// answered from the node's address, a→b, b→a] and checks CHECK and DEL on the way.
fn docker_node(backend: &str) -> [bool; 4] {
    let site = Site::new(&format!("fwipt{}", backend.len()));
    let tmp = TempDir::new("fwipt");
    let dir = PluginDir::new();
    dockerize(&site.node, &tmp);
    let (a, a_bridge) = masq_pod(&site, &dir, "fwipt-a", "cni-ia", "10.95.0.0/24", "ctr-ipt-a");
    let (b, b_bridge) = masq_pod(&site, &dir, "fwipt-b", "cni-ib", "10.96.0.0/24", "ctr-ipt-b");
    // The DROP policy is in force: without the firewall plugin the pod has no egress.
    assert!(
        !pings(&a.ns, OUTSIDE_IP),
        "FORWARD DROP should stop the pod before the firewall"
    );
    for p in [&a, &b] {
        fw(
            &site.node,
            &dir,
            "ADD",
            &p.cid,
            &p.ns,
            &fw_conf(&p.result, backend, "same-bridge"),
        )
        .expect_ok();
    }
    let _srv = tcp_whoami(&site.outside, 7070, "out");
    let got = [
        pings(&a.ns, OUTSIDE_IP),
        tcp_ask(&a.ns, OUTSIDE_IP, 7070) == format!("out {OUTSIDE_NODE_IP}"),
        pings(&a.ns, &b.ip),
        pings(&b.ns, &a.ip),
    ];
    let conf = fw_conf(&a.result, backend, "same-bridge");
    fw(&site.node, &dir, "CHECK", &a.cid, &a.ns, &conf).expect_ok();
    let ipt = text(&site.node, &["iptables", "-S"]);
    if backend == "nftables" {
        assert!(!ipt.contains("CNI-"), "{ipt}");
    } else {
        assert!(
            ipt.contains(&format!("-A CNI-FORWARD -s {}/32 -j ACCEPT", a.ip)),
            "{ipt}"
        );
        // The node uses iptables: the default is the iptables layout alone, as upstream's.
        let nft = text(&site.node, &["nft", "list", "tables"]);
        assert!(!nft.contains("inet cni_firewall"), "no nftables layout:\n{nft}");
    }

    // DEL of the whole chain (firewall, then bridge): nothing of pod a remains anywhere.
    fw(&site.node, &dir, "DEL", &a.cid, &a.ns, &conf).expect_ok();
    let after_fw = all_rules(&site.node);
    assert!(
        !text(&site.node, &["iptables-save", "-t", "filter"]).contains(&a.ip),
        "firewall DEL left iptables rules of {}:\n{after_fw}",
        a.ip
    );
    Invocation::new("bridge", "DEL")
        .container_id(&a.cid)
        .pod(&a.ns)
        .config(&a_bridge)
        .in_node(&site.node)
        .env("PATH", "")
        .run_ours_in(&dir)
        .expect_ok();
    let rules = all_rules(&site.node);
    for needle in [a.ip.as_str(), a.cid.as_str(), a.host_veth.as_str()] {
        assert!(!rules.contains(needle), "{needle:?} left after DEL:\n{rules}");
    }
    // Pod b is untouched: still isolated from cni-ia and reaching the outside.
    assert!(rules.contains(&b.ip), "{rules}");
    if backend != "nftables" {
        assert!(pings(&b.ns, OUTSIDE_IP), "b lost egress after a's DEL");
    }
    let _ = b_bridge;
    got
}

#[test]
fn docker_node_keeps_egress_and_isolation() {
    if !require("docker_node_keeps_egress_and_isolation") {
        return;
    }
    // Default backend: the node uses iptables, so the reference's rules are written.
    assert_eq!(docker_node(""), [true, true, false, false], "default backend");
    assert_eq!(docker_node("iptables"), [true, true, false, false], "backend iptables");
    // Our table alone cannot override iptables' DROP: this is the case the rules are for.
    let nft_only = docker_node("nftables");
    assert!(!nft_only[0] && !nft_only[1], "nftables only: {nft_only:?}");
}

/// The rules `iptables -S` shows, with one node's addresses and names: identical texts.
fn ipt_text(node: &TestNs) -> String {
    let mut s = text(node, &["iptables", "-t", "filter", "-S"]);
    s += &text(node, &["ip6tables", "-t", "filter", "-S"]);
    s
}

fn prev(bridge: &str, veth: &str, v4: &str, v6: &str) -> Value {
    json!({"cniVersion": "1.0.0",
           "interfaces": [{"name": bridge}, {"name": veth}, {"name": "eth0", "sandbox": "/x"}],
           "ips": [{"address": v4, "interface": 2}, {"address": v6, "interface": 2}]})
}

#[test]
fn rules_equal_the_references_and_dels_swap() {
    if !require("rules_equal_the_references_and_dels_swap") {
        return;
    }
    let tmp = TempDir::new("fwipt-eq");
    let dir = PluginDir::new();
    let ours = TestNs::new_node("fwipt-ours");
    let refn = TestNs::new_node("fwipt-ref");
    let pod = TestNs::new("fwipt-eqpod");
    for n in [&ours, &refn] {
        dockerize(n, &tmp);
    }
    let p1 = prev("cni0", "veth1", "10.88.0.5/24", "fd00:88::5/64");
    let p2 = prev("cni1", "veth2", "10.89.0.7/24", "fd00:89::7/64");
    let p3 = prev("cni0", "veth3", "10.88.0.9/24", "fd00:88::9/64");
    // Ours with the default backend (it finds iptables in use), the reference's iptables.
    for (cid, p, policy) in [("c1", &p1, "same-bridge"), ("c2", &p2, "same-bridge"), ("c3", &p3, "")] {
        fw(&ours, &dir, "ADD", cid, &pod, &fw_conf(p, "", policy)).expect_ok();
        fw_reference(&refn, "ADD", cid, &pod, &fw_conf(p, "iptables", policy)).expect_ok();
    }
    let (a, b) = (ipt_text(&ours), ipt_text(&refn));
    assert_eq!(a, b, "iptables -S differs from the reference's");
    for want in [
        "-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD\n-A FORWARD -j DOCKER-USER",
        "-A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "-A CNI-FORWARD -s fd00:88::5/128 -j ACCEPT",
        "-A CNI-ISOLATION-STAGE-1 -i cni1 ! -o cni1",
    ] {
        assert!(a.contains(want), "missing {want:?} in\n{a}");
    }
    // The same bytes, too (what iptables -S cannot show: expression order, lengths).
    for fam in ["ip", "ip6"] {
        let dump = |n: &TestNs| -> String {
            text(n, &["nft", "--debug=netlink", "list", "table", fam, "filter"])
                .lines()
                .filter(|l| l.starts_with("  ["))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(dump(&ours), dump(&refn), "{fam} filter expressions differ");
    }

    // Our ADD over the reference's rules (a repeated ADD after a swap) adds nothing to them.
    fw(&refn, &dir, "ADD", "c2", &pod, &fw_conf(&p2, "iptables", "same-bridge")).expect_ok();
    assert_eq!(ipt_text(&refn), b, "our ADD duplicated the reference's rules");

    // CHECK: ours accepts the reference's rules; the reference accepts ours.
    for (cid, p) in [("c1", &p1), ("c2", &p2)] {
        fw(&refn, &dir, "CHECK", cid, &pod, &fw_conf(p, "", "same-bridge")).expect_ok();
        fw_reference(&ours, "CHECK", cid, &pod, &fw_conf(p, "iptables", "same-bridge")).expect_ok();
    }

    // DEL swapped: the reference's DEL removes ours, ours removes the reference's.
    fw_reference(&ours, "DEL", "c1", &pod, &fw_conf(&p1, "iptables", "same-bridge")).expect_ok();
    fw(&refn, &dir, "DEL", "c1", &pod, &fw_conf(&p1, "", "same-bridge")).expect_ok();
    for n in [&ours, &refn] {
        let t = ipt_text(n);
        assert!(!t.contains("10.88.0.5") && !t.contains("fd00:88::5"), "{t}");
        assert!(t.contains("10.88.0.9") && t.contains("10.89.0.7"), "others stay: {t}");
    }
    assert_eq!(ipt_text(&ours), ipt_text(&refn));
    // Ours without prevResult: the addresses come from our own commented rules.
    let mut c = fw_conf(&p3, "", "");
    c.as_object_mut().unwrap().remove("prevResult");
    fw(&ours, &dir, "DEL", "c3", &pod, &c).expect_ok();
    let rules = all_rules(&ours);
    assert!(!rules.contains("10.88.0.9") && !rules.contains("fd00:88::9"), "{rules}");
    // And the same DEL by ours again is a no-op.
    fw(&ours, &dir, "DEL", "c3", &pod, &c).expect_ok();
    // Shared chains stay while others use them.
    let t = ipt_text(&ours);
    assert!(
        t.contains("-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"),
        "{t}"
    );
    assert!(t.contains("-s 10.89.0.7/32 -j ACCEPT"), "{t}");
}

/// A node whose iptables has no filter table yet: our default-backend ADD makes the table, the
/// chains and the FORWARD jump exactly as the reference's ADD does (`iptables-save`,
/// `ip6tables-save` and `nft list ruleset` print the same, expressions byte for byte), so that
/// a DROP policy arriving later still sees the accepts.
#[test]
fn fresh_node_rules_equal_the_references() {
    if !require("fresh_node_rules_equal_the_references") {
        return;
    }
    let dir = PluginDir::new();
    let ours = TestNs::new_node("fwfr-ours");
    let refn = TestNs::new_node("fwfr-ref");
    let pod = TestNs::new("fwfr-pod");
    let p1 = prev("cni0", "veth1", "10.88.0.5/24", "fd00:88::5/64");
    let p2 = prev("cni1", "veth2", "10.89.0.7/24", "fd00:89::7/64");
    for (cid, p, policy) in [("c1", &p1, "same-bridge"), ("c2", &p2, "")] {
        fw(&ours, &dir, "ADD", cid, &pod, &fw_conf(p, "", policy)).expect_ok();
        // The reference's own default asks D-Bus whether firewalld runs: name iptables.
        fw_reference(&refn, "ADD", cid, &pod, &fw_conf(p, "iptables", policy)).expect_ok();
    }
    let (a, b) = (all_rules(&ours), all_rules(&refn));
    assert_eq!(a, b, "the node's rules after our ADD differ from the reference's");
    for want in [
        ":FORWARD ACCEPT [0:0]",
        "-A FORWARD -m comment --comment \"CNI firewall plugin rules (ingressPolicy: same-bridge)\" -j CNI-ISOLATION-STAGE-1\n-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD",
        "-A CNI-FORWARD -m comment --comment \"CNI firewall plugin admin overrides\" -j CNI-ADMIN",
        "-A CNI-FORWARD -s fd00:89::7/128 -j ACCEPT",
        "type filter hook forward priority filter; policy accept;",
    ] {
        assert!(a.contains(want), "missing {want:?} in\n{a}");
    }
    assert!(
        !a.contains("cni_firewall"),
        "no nftables layout on an iptables node:\n{a}"
    );
    for fam in ["ip", "ip6"] {
        let dump = |n: &TestNs| -> String {
            text(n, &["nft", "--debug=netlink", "list", "table", fam, "filter"])
                .lines()
                .filter(|l| l.starts_with("  ["))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(dump(&ours), dump(&refn), "{fam} filter expressions differ");
    }
    // The reference's CHECK accepts ours; each DEL removes the other's.
    fw_reference(&ours, "CHECK", "c1", &pod, &fw_conf(&p1, "iptables", "same-bridge")).expect_ok();
    fw(&refn, &dir, "CHECK", "c1", &pod, &fw_conf(&p1, "", "same-bridge")).expect_ok();
    fw_reference(&ours, "DEL", "c1", &pod, &fw_conf(&p1, "iptables", "same-bridge")).expect_ok();
    fw(&refn, &dir, "DEL", "c1", &pod, &fw_conf(&p1, "", "same-bridge")).expect_ok();
    assert_eq!(all_rules(&ours), all_rules(&refn));
    assert!(!all_rules(&ours).contains("10.88.0.5"));
}

/// The order that cut pods off before #23: ADD (our bridge with ipMasq, our firewall, default
/// backends) on a node whose iptables has no filter table, **then** `iptables -P FORWARD DROP`
/// (Docker, a hardening script or a restored ruleset arriving later), then traffic: pod →
/// outside and its replies, outside → pod replies over TCP, node → pod. The same order with
/// `backend: "nftables"` loses egress (an accept in one table cannot undo another's drop).
#[test]
fn forward_drop_after_add_keeps_pod_traffic() {
    if !require("forward_drop_after_add_keeps_pod_traffic") {
        return;
    }
    for backend in ["", "nftables"] {
        let site = Site::new(&format!("fwdrop{}", backend.len()));
        let dir = PluginDir::new();
        let (a, a_bridge) = masq_pod(&site, &dir, "fwdrop-a", "cni-fd", "10.93.0.0/24", "ctr-drop");
        let conf = fw_conf(&a.result, backend, "");
        fw(&site.node, &dir, "ADD", &a.cid, &a.ns, &conf).expect_ok();
        site.node.exec_ok(&["iptables", "-P", "FORWARD", "DROP"]);
        site.node.exec_ok(&["ip6tables", "-P", "FORWARD", "DROP"]);
        let _srv = tcp_whoami(&site.outside, 7072, "out");
        let _pod_srv = tcp_whoami(&a.ns, 7073, "pod");
        let egress = [
            pings(&a.ns, OUTSIDE_IP),
            tcp_ask(&a.ns, OUTSIDE_IP, 7072) == format!("out {OUTSIDE_NODE_IP}"),
        ];
        // The node reaches the pod (its own output, not forwarded) in every layout.
        assert!(pings(&site.node, &a.ip), "{backend:?}: node → pod");
        assert_eq!(
            tcp_ask(&site.node, &a.ip, 7073),
            "pod 10.93.0.1",
            "{backend:?}: node → pod"
        );
        if backend.is_empty() {
            assert_eq!(egress, [true, true], "default backend: egress after the DROP policy");
            fw(&site.node, &dir, "CHECK", &a.cid, &a.ns, &conf).expect_ok();
        } else {
            assert_eq!(egress, [false, false], "nftables layout: the DROP policy wins");
        }
        fw(&site.node, &dir, "DEL", &a.cid, &a.ns, &conf).expect_ok();
        Invocation::new("bridge", "DEL")
            .container_id(&a.cid)
            .pod(&a.ns)
            .config(&a_bridge)
            .in_node(&site.node)
            .env("PATH", "")
            .run_ours_in(&dir)
            .expect_ok();
        let rules = all_rules(&site.node);
        assert!(
            !rules.contains(&a.ip) && !rules.contains(&a.cid),
            "{backend:?}: left\n{rules}"
        );
    }
}

fn bridge_conf(data: &TempDir, backend: Option<&str>) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0", "name": "masqnet", "type": "bridge",
        "bridge": "cni-mq", "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data.as_str(),
                 "ranges": [[{"subnet": "10.97.0.0/24"}], [{"subnet": "fd97::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}]}
    });
    if let Some(b) = backend {
        c["ipMasqBackend"] = json!(b);
    }
    c
}

fn bridge(node: &TestNs, pod: &TestNs, cmd: &str, conf: &Value, ours: Option<&PluginDir>) -> Outcome {
    let inv = Invocation::new("bridge", cmd)
        .container_id("ctr-masq")
        .pod(pod)
        .config(conf)
        .in_node(node);
    match ours {
        Some(dir) => inv.env("PATH", "").run_ours_in(dir),
        None => inv.run_reference(),
    }
}

fn nat_text(node: &TestNs) -> String {
    let mut s = text(node, &["iptables", "-t", "nat", "-S"]);
    s += &text(node, &["ip6tables", "-t", "nat", "-S"]);
    s
}

/// bridge `ipMasqBackend: "iptables"`: the reference's nat rules, as `iptables -t nat -S`
/// prints the reference's own on an identical node; masquerading works; CHECK accepts either
/// side's rules; each side's DEL removes the other's.
#[test]
fn bridge_ipmasq_backend_iptables_equals_the_references() {
    if !require("bridge_ipmasq_backend_iptables_equals_the_references") || !rig::reference_available("bridge") {
        assert!(!rig::in_ci(), "needs the reference bridge");
        return;
    }
    let dir = PluginDir::new();
    let site = Site::new("fwipt-mq");
    let refn = TestNs::new_node("fwipt-mqref");
    let ref_data = TempDir::new("fwipt-mqref");
    let (pod, ref_pod) = (TestNs::new("fwipt-mqpod"), TestNs::new("fwipt-mqrefpod"));
    let ours_conf = bridge_conf(&site.data, Some("iptables"));
    let ref_conf = bridge_conf(&ref_data, None);
    let out = bridge(&site.node, &pod, "ADD", &ours_conf, Some(&dir));
    out.expect_ok();
    let ours_result = out.result().clone();
    let out = bridge(&refn, &ref_pod, "ADD", &ref_conf, None);
    out.expect_ok();
    let ref_result = out.result().clone();
    let (a, b) = (nat_text(&site.node), nat_text(&refn));
    assert_eq!(a, b, "iptables -t nat -S differs from the reference's");
    assert!(a.contains("-A POSTROUTING -s 10.97.0.2/32 -m comment --comment \"name: \\\"masqnet\\\" id: \\\"ctr-masq\\\"\" -j CNI-"), "{a}");
    assert!(a.contains("! -d ff00::/8"), "{a}");
    assert!(
        !text(&site.node, &["nft", "list", "tables"]).contains("cni_plugins_masquerade"),
        "ipMasqBackend iptables writes no nftables table of ours"
    );
    // Masquerading works: the outside sees the node's address.
    let _srv = tcp_whoami(&site.outside, 7071, "out");
    assert_eq!(tcp_ask(&pod, OUTSIDE_IP, 7071), format!("out {OUTSIDE_NODE_IP}"));

    // CHECK: ours on both sides' rules.
    let with_prev = |c: &Value, r: &Value| {
        let mut c = c.clone();
        c["prevResult"] = r.clone();
        c
    };
    bridge(
        &site.node,
        &pod,
        "CHECK",
        &with_prev(&ours_conf, &ours_result),
        Some(&dir),
    )
    .expect_ok();
    let mut ours_on_ref = bridge_conf(&ref_data, Some("iptables"));
    ours_on_ref["prevResult"] = ref_result.clone();
    bridge(&refn, &ref_pod, "CHECK", &ours_on_ref, Some(&dir)).expect_ok();

    // DEL swapped.
    bridge(&site.node, &pod, "DEL", &bridge_conf(&site.data, None), None).expect_ok();
    bridge(
        &refn,
        &ref_pod,
        "DEL",
        &bridge_conf(&ref_data, Some("iptables")),
        Some(&dir),
    )
    .expect_ok();
    for n in [&site.node, &refn] {
        let t = nat_text(n);
        assert!(
            !t.contains("CNI-") && !t.contains("10.97.0.2") && !t.contains("fd97::"),
            "{t}"
        );
    }
    // An unknown backend is a config error, as in the reference.
    let out = bridge(
        &site.node,
        &pod,
        "ADD",
        &bridge_conf(&site.data, Some("ipfw")),
        Some(&dir),
    );
    out.expect_err(7);
    assert!(out.msg().unwrap().contains("ipMasqBackend"), "{out}");
}

/// Parallel ADDs (a node starting many pods) add the shared rules once: each batch is
/// committed only at the ruleset generation its listings saw.
#[test]
fn parallel_adds_share_the_chains() {
    if !require("parallel_adds_share_the_chains") {
        return;
    }
    let tmp = TempDir::new("fwipt-par");
    let dir = PluginDir::new();
    let node = TestNs::new_node("fwipt-par");
    let pod = TestNs::new("fwipt-parpod");
    dockerize(&node, &tmp);
    let n = 12;
    std::thread::scope(|s| {
        for i in 0..n {
            let (node, pod, dir) = (&node, &pod, &dir);
            s.spawn(move || {
                let p = prev(
                    "cni0",
                    "veth1",
                    &format!("10.88.1.{}/24", i + 2),
                    &format!("fd00:1::{}/64", i + 2),
                );
                fw(
                    node,
                    dir,
                    "ADD",
                    &format!("par{i}"),
                    pod,
                    &fw_conf(&p, "", "same-bridge"),
                )
                .expect_ok();
            });
        }
    });
    for t in [&["iptables", "-S"][..], &["ip6tables", "-S"]] {
        let s = text(&node, t);
        let count = |needle: &str| s.lines().filter(|l| l.contains(needle)).count();
        assert_eq!(
            count("-A FORWARD -m comment --comment \"CNI firewall plugin rules\" -j CNI-FORWARD"),
            1,
            "{s}"
        );
        assert_eq!(count("-j CNI-ISOLATION-STAGE-1"), 1, "{s}");
        assert_eq!(count("-j CNI-ADMIN"), 1, "{s}");
        assert_eq!(count("same-bridge)\" -j RETURN"), 2, "{s}");
        assert_eq!(count("-A CNI-FORWARD -s "), n, "{s}");
    }
    let nft = text(&node, &["nft", "list", "tables"]);
    assert!(
        !nft.contains("cni_firewall"),
        "the default on an iptables node is iptables alone: {nft}"
    );
}

/// ptp `ipMasqBackend: "iptables"`: the same nat rules as the reference ptp's; our DEL
/// removes them with the netns already gone.
#[test]
fn ptp_ipmasq_backend_iptables_equals_the_references() {
    if !require("ptp_ipmasq_backend_iptables_equals_the_references") || !rig::reference_available("ptp") {
        assert!(!rig::in_ci(), "needs the reference ptp");
        return;
    }
    let dir = PluginDir::new();
    let (ours, refn) = (TestNs::new_node("fwipt-ptp"), TestNs::new_node("fwipt-ptpref"));
    let (d1, d2) = (TempDir::new("fwipt-ptp"), TempDir::new("fwipt-ptpref"));
    let conf = |data: &TempDir, backend: Option<&str>| {
        let mut c = json!({"cniVersion": "1.0.0", "name": "ptpnet", "type": "ptp", "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": data.as_str(), "subnet": "10.98.0.0/24"}});
        if let Some(b) = backend {
            c["ipMasqBackend"] = json!(b);
        }
        c
    };
    let run = |node: &TestNs, pod: &TestNs, cmd: &str, c: &Value, ours: bool| {
        let inv = Invocation::new("ptp", cmd)
            .container_id("ctr-ptp")
            .pod(pod)
            .config(c)
            .in_node(node);
        if ours {
            inv.env("PATH", "").run_ours_in(&dir)
        } else {
            inv.run_reference()
        }
    };
    let pod = TestNs::new("fwipt-ptppod");
    let ref_pod = TestNs::new("fwipt-ptprefpod");
    run(&ours, &pod, "ADD", &conf(&d1, Some("iptables")), true).expect_ok();
    run(&refn, &ref_pod, "ADD", &conf(&d2, None), false).expect_ok();
    assert_eq!(nat_text(&ours), nat_text(&refn));
    assert!(nat_text(&ours).contains("-A POSTROUTING -s 10.98.0.2/32"));
    // DEL with the netns gone: the chain is found by its name.
    drop(pod);
    let gone = rig::vanished_netns_path();
    Invocation::new("ptp", "DEL")
        .container_id("ctr-ptp")
        .netns(&gone)
        .config(&conf(&d1, Some("iptables")))
        .in_node(&ours)
        .env("PATH", "")
        .run_ours_in(&dir)
        .expect_ok();
    let t = nat_text(&ours);
    assert!(!t.contains("CNI-") && !t.contains("10.98.0.2"), "{t}");
}

/// The records dir of the iptables layout in `node` (`pkg::nft_records`, `<family>-filter`).
fn fw_records(node: &TestNs, family: &str) -> std::path::PathBuf {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let sock = cni_multi::linux::nft::NftSocket::open_in_netns_path(node.path()).unwrap();
    let cookie = sock.netns_cookie().expect("SO_NETNS_COOKIE (Linux 5.14)");
    std::path::PathBuf::from(rig::state_dir())
        .join("nft")
        .join(format!("{}-{cookie}", boot.trim()))
        .join(format!("{family}-filter"))
}

fn fw_key(cid: &str) -> String {
    cni_multi::pkg::nft_records::key(&cni_multi::pkg::sha512::hex_prefix("fwnet", 16), "eth0", cid)
}

/// The iptables layout keeps ADD and DEL off `FORWARD` and `CNI-FORWARD` through its records
/// (the stamp: both jumps' handles and `CNI-FORWARD`'s use count, its rules plus the jump
/// into it), and every way the records can be wrong — the reference writing in between,
/// a stale or lost record, DEL without prevResult — still ends with exactly the reference's
/// rules for the attachments that are left.
#[test]
fn iptables_records_and_their_failures() {
    if !require("iptables_records_and_their_failures") {
        return;
    }
    let dir = PluginDir::new();
    let node = TestNs::new_node("fwrec");
    let pod = TestNs::new("fwrec-pod");
    let p = |n: u8| {
        prev(
            "cni0",
            &format!("veth{n}"),
            &format!("10.88.2.{n}/24"),
            &format!("fd00:2::{n}/64"),
        )
    };
    let rules_of = |n: u8| {
        let s = ipt_text(&node);
        s.lines()
            .filter(|l| l.contains(&format!("10.88.2.{n}/32")) || l.contains(&format!("fd00:2::{n}/128")))
            .count()
    };
    let stamp = || -> Vec<u64> {
        let t = std::fs::read_to_string(fw_records(&node, "ip").join("stamp")).unwrap_or_default();
        t.lines()
            .nth(1)
            .unwrap_or("")
            .split(' ')
            .filter_map(|h| h.parse().ok())
            .collect()
    };
    let cni_forward_rules = || {
        text(&node, &["iptables", "-S", "CNI-FORWARD"])
            .lines()
            .filter(|l| l.starts_with("-A"))
            .count() as u64
    };
    for n in [1, 2] {
        fw(&node, &dir, "ADD", &format!("c{n}"), &pod, &fw_conf(&p(n), "", "")).expect_ok();
        assert_eq!(rules_of(n), 4, "c{n}");
        // The stamp's use count: CNI-FORWARD's rules and the FORWARD jump into it.
        let s = stamp();
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[2], cni_forward_rules() + 1, "c{n}: use count {s:?}");
        let rec = std::fs::read_to_string(fw_records(&node, "ip").join(fw_key(&format!("c{n}")))).unwrap();
        assert_eq!(rec.lines().count(), 3, "{rec}");
        assert!(fw_records(&node, "ip6").join(format!("ip-fd00:2::{n}")).exists());
    }
    // The second ADD took the fast path: no listing, so c1's per-address record was not
    // written again (a record is written by rename: a new inode).
    {
        use std::os::unix::fs::MetadataExt;
        let ino = || {
            std::fs::metadata(fw_records(&node, "ip").join("ip-10.88.2.1"))
                .unwrap()
                .ino()
        };
        let before = ino();
        fw(&node, &dir, "ADD", "c9", &pod, &fw_conf(&p(9), "", "")).expect_ok();
        assert_eq!(ino(), before, "a new attachment's ADD rewrote another's record");
        fw(&node, &dir, "DEL", "c9", &pod, &fw_conf(&p(9), "", "")).expect_ok();
    }
    // A repeated ADD (fast path) adds nothing.
    let before = ipt_text(&node);
    fw(&node, &dir, "ADD", "c2", &pod, &fw_conf(&p(2), "", "")).expect_ok();
    assert_eq!(ipt_text(&node), before, "a repeated ADD duplicated rules");
    // The reference writes in between (its ADD of c3, then its repeat of c1's rules, which it
    // does not duplicate): the use count moved, so our next ADD lists, and does not duplicate
    // the reference's rules of an address it is asked for again.
    fw_reference(&node, "ADD", "c3", &pod, &fw_conf(&p(3), "iptables", "")).expect_ok();
    assert_ne!(stamp()[2], cni_forward_rules() + 1);
    fw(&node, &dir, "ADD", "c3", &pod, &fw_conf(&p(3), "", "")).expect_ok();
    assert_eq!(rules_of(3), 4, "our ADD over the reference's");
    assert_eq!(stamp()[2], cni_forward_rules() + 1, "the listing wrote the stamp again");
    fw(&node, &dir, "ADD", "c4", &pod, &fw_conf(&p(4), "", "")).expect_ok();
    // DEL without prevResult: the record names the rules.
    let mut c = fw_conf(&p(2), "", "");
    c.as_object_mut().unwrap().remove("prevResult");
    fw(&node, &dir, "DEL", "c2", &pod, &c).expect_ok();
    assert_eq!(rules_of(2), 0, "DEL without prevResult");
    assert_eq!(stamp()[2], cni_forward_rules() + 1, "DEL moved the stamp along");
    // A stale per-address record and a lost attachment record: DEL still removes exactly c4's.
    std::fs::write(
        fw_records(&node, "ip").join("ip-10.88.2.4"),
        "cni-multi nft record 1\nCNI-FORWARD 999998\nCNI-FORWARD 999999\n",
    )
    .unwrap();
    std::fs::remove_file(fw_records(&node, "ip").join(fw_key("c4"))).unwrap();
    fw(&node, &dir, "DEL", "c4", &pod, &fw_conf(&p(4), "", "")).expect_ok();
    assert_eq!(rules_of(4), 0, "DEL with bad records");
    // The reference's DEL of ours, then ours of the reference's.
    fw_reference(&node, "DEL", "c1", &pod, &fw_conf(&p(1), "iptables", "")).expect_ok();
    fw(&node, &dir, "DEL", "c3", &pod, &fw_conf(&p(3), "", "")).expect_ok();
    for n in 1..=4 {
        assert_eq!(rules_of(n), 0, "c{n} left:\n{}", ipt_text(&node));
    }
    // And a fresh ADD after all that is right again.
    fw(&node, &dir, "ADD", "c5", &pod, &fw_conf(&p(5), "", "")).expect_ok();
    assert_eq!(rules_of(5), 4);
    fw(&node, &dir, "CHECK", "c5", &pod, &fw_conf(&p(5), "", "")).expect_ok();
    fw_reference(&node, "CHECK", "c5", &pod, &fw_conf(&p(5), "iptables", "")).expect_ok();
}

/// DEL removes the attachment's rules in every layout, whatever `backend` says now (a config
/// edited since ADD, or the node's default changed); CHECK checks the layout ADD used (an
/// explicit backend that is not it fails; unset accepts either).
#[test]
fn del_removes_every_layout_and_check_follows_add() {
    if !require("del_removes_every_layout_and_check_follows_add") {
        return;
    }
    let dir = PluginDir::new();
    let node = TestNs::new_node("fwx");
    let pod = TestNs::new("fwx-pod");
    let p1 = prev("cni0", "veth1", "10.88.3.5/24", "fd00:3::5/64");
    for (add, check_bad, del) in [
        ("nftables", "iptables", ""),
        ("", "nftables", "nftables"),
        ("iptables", "nftables", "bogus"),
    ] {
        fw(&node, &dir, "ADD", "cx", &pod, &fw_conf(&p1, add, "")).expect_ok();
        fw(&node, &dir, "CHECK", "cx", &pod, &fw_conf(&p1, add, "")).expect_ok();
        fw(&node, &dir, "CHECK", "cx", &pod, &fw_conf(&p1, "", "")).expect_ok();
        assert!(
            !fw(&node, &dir, "CHECK", "cx", &pod, &fw_conf(&p1, check_bad, "")).success(),
            "ADD {add:?}: CHECK with backend {check_bad:?} must look where that layout is"
        );
        assert!(all_rules(&node).contains("10.88.3.5"));
        fw(&node, &dir, "DEL", "cx", &pod, &fw_conf(&p1, del, "")).expect_ok();
        let rules = all_rules(&node);
        assert!(
            !rules.contains("10.88.3.5") && !rules.contains("fd00:3::5"),
            "ADD {add:?}, DEL {del:?} left:\n{rules}"
        );
    }
}
