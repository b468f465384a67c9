//! ipMasq (bridge, ptp) and macspoofchk (bridge) at the plugin level: shown by traffic,
//! by the ruleset `nft`/`iptables-save` print, and by DEL/GC removing exactly the attachment's
//! rules, also when the netns is gone, in both ipMasq layouts (the default, iptables on this
//! node, and `ipMasqBackend: "nftables"`). Our plugins run with an empty PATH (veth_rig).

use crate::common::rig::{first_ip, require_root, TestNs};
use crate::common::veth_rig::*;
use serde_json::{json, Value};

/// The rules of the node's `inet cni_plugins_masquerade masq_checks` chain, as nft prints them.
fn masq_rules(node: &TestNs) -> Vec<Value> {
    let rs: Value = serde_json::from_str(&node.exec_ok(&["nft", "-j", "list", "ruleset"])).unwrap();
    rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == "cni_plugins_masquerade" && r["chain"] == "masq_checks")
        .cloned()
        .collect()
}

/// The container IDs with masquerade rules, as the layout names them: `nftables`, the
/// comments of `masq_checks`; otherwise (the iptables layout), the POSTROUTING jumps'
/// comments in `iptables-save -t nat`. Each with its rule text.
fn masq_attachments(node: &TestNs, backend: Option<&str>) -> Vec<(String, String)> {
    if backend == Some("nftables") {
        return masq_rules(node)
            .iter()
            .map(|r| {
                let c = r["comment"].as_str().unwrap();
                let cid = c.rsplit_once("id: ").unwrap().1.to_string();
                (cid, serde_json::to_string(&r["expr"]).unwrap())
            })
            .collect();
    }
    node.exec_ok(&["iptables-save", "-t", "nat"])
        .lines()
        .filter(|l| l.starts_with("-A POSTROUTING") && l.contains("-j CNI-"))
        .map(|l| {
            let cid = l
                .split("id: \\\"")
                .nth(1)
                .unwrap()
                .split('\\')
                .next()
                .unwrap()
                .to_string();
            (cid, l.to_string())
        })
        .collect()
}

fn masq_conf(rig: &Rig, plugin: &str, subnet: &str) -> Value {
    let mut c = conf(
        "1.0.0",
        "masqnet",
        plugin,
        json!({"ipMasq": true, "isGateway": true, "bridge": "cnimasq0"}),
    );
    c["ipam"] = rig.host_local(&[json!(subnet)]);
    c["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    c
}

fn masquerade_end_to_end(plugin: &str, subnet: &str, backend: Option<&str>) {
    if !require_root("masquerade_end_to_end") {
        return;
    }
    let rig = Rig::new(&format!("mq{plugin}{}", backend.map_or(0, str::len)), Impl::Ours);
    let _outside = rig.outside("fwout", "10.251.0.1", "10.251.0.2", false);
    let (p1, p2) = (rig.pod("mqa"), rig.pod("mqb"));
    // Control: the same network without ipMasq cannot reach the outside host.
    let p0 = rig.pod("mq0");
    let mut plain = masq_conf(&rig, plugin, "10.86.0.0/24");
    plain["ipMasq"] = json!(false);
    plain["name"] = json!("plainnet");
    plain["bridge"] = json!("cniplain0");
    rig.add(&plain, "c0", &p0, "eth0").expect_ok();
    assert!(
        !ping(&p0, "10.251.0.2"),
        "without ipMasq the outside host cannot answer"
    );
    rig.del(&plain, "c0", p0.path_str(), "eth0").expect_ok();
    let mut c = masq_conf(&rig, plugin, subnet);
    if let Some(b) = backend {
        c["ipMasqBackend"] = json!(b);
    }
    let r1 = rig.add(&c, "c1", &p1, "eth0").expect_ok().json();
    let r2 = rig.add(&c, "c2", &p2, "eth0").expect_ok().json();
    // The outside host has no route to the pods: only masqueraded traffic gets an answer.
    assert!(ping(&p1, "10.251.0.2"), "pod → outside is masqueraded");
    // Inside the subnet nothing is rewritten: pod2 sees pod1's own address.
    let ip1 = first_ip(&r1);
    let ip2 = first_ip(&r2);
    assert!(ping(&p1, &ip2));
    let rules = masq_attachments(&rig.node, backend);
    assert_eq!(rules.len(), 2, "one rule per attachment: {rules:#?}");
    let (_, text) = rules
        .iter()
        .find(|(cid, _)| cid == "c1")
        .expect("c1's rule, named by its comment");
    if backend == Some("nftables") {
        assert!(
            text.contains(&ip1) && text.contains("masquerade") && text.contains("!="),
            "{text}"
        );
        let nat = rig.node.exec_ok(&["iptables-save", "-t", "nat"]);
        assert!(!nat.contains("CNI-"), "one layout only:\n{nat}");
    } else {
        assert!(text.contains(&format!("-s {ip1}/32")), "{text}");
        let nat = rig.node.exec_ok(&["iptables-save", "-t", "nat"]);
        assert!(nat.contains("! -d 224.0.0.0/4 -m comment"), "{nat}");
        let tables = rig.node.exec_ok(&["nft", "list", "tables"]);
        assert!(!tables.contains("cni_plugins_masquerade"), "one layout only: {tables}");
    }
    rig.check(&c, &r1, "c1", &p1, "eth0").expect_ok();

    // GC keeps only the valid attachment's rule (CNI 1.1).
    let mut gc = c.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c1", "ifname": "eth0"}]);
    rig.run(plugin, "GC", &gc, "", "", "", "").expect_ok();
    let left = masq_attachments(&rig.node, backend);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, "c1");
    // CHECK notices the missing rule of c2.
    assert!(
        !rig.check(&c, &r2, "c2", &p2, "eth0").success(),
        "CHECK must fail without the masquerade rule"
    );

    // DEL without a netns still removes the attachment's rules (the reference leaks them).
    rig.del(&c, "c1", "", "eth0").expect_ok();
    assert!(masq_attachments(&rig.node, backend).is_empty());
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(&c, "c2", p2.path_str(), "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn bridge_ipmasq_masquerades_and_del_gc_remove_rules() {
    masquerade_end_to_end("bridge", "10.82.0.0/24", None);
    masquerade_end_to_end("bridge", "10.82.0.0/24", Some("nftables"));
}

#[test]
fn ptp_ipmasq_masquerades_and_del_gc_remove_rules() {
    masquerade_end_to_end("ptp", "10.83.0.0/24", None);
    masquerade_end_to_end("ptp", "10.83.0.0/24", Some("nftables"));
}

#[test]
fn ipmasq_failure_rolls_back_everything() {
    if !require_root("ipmasq_failure_rolls_back_everything") {
        return;
    }
    // Make the masquerade batch fail after veth, IPAM and addresses are done: a chain of the
    // layout's base-chain name already exists as a base chain of another type, so the kernel
    // refuses the batch (the MASQUERADE target, or the nat rules, on a filter hook).
    for (tag, backend, table, chain) in [
        ("nft", Some("nftables"), "inet cni_plugins_masquerade", "postrouting"),
        ("ipt", None, "ip nat", "POSTROUTING"),
    ] {
        let rig = Rig::new(&format!("mqrb{tag}"), Impl::Ours);
        let p = rig.pod("mqrba");
        let mut c = masq_conf(&rig, "bridge", "10.84.0.0/24");
        if let Some(b) = backend {
            c["ipMasqBackend"] = json!(b);
        }
        rig.node.exec_ok(&["nft", &format!("add table {table}")]);
        rig.node.exec_ok(&[
            "nft",
            &format!("add chain {table} {chain} {{ type filter hook forward priority 0; }}"),
        ]);
        let before = (kernel_state(&p), rig.ipam_state());
        let e = rig.add(&c, "c1", &p, "eth0");
        assert!(!e.success(), "{tag}: ADD must fail: {}", e.stdout);
        assert!(e.msg().contains("masquerad"), "{tag}: {}", e.msg());
        assert_eq!(
            before,
            (kernel_state(&p), rig.ipam_state()),
            "{tag}: pod and IPAM are as before"
        );
        assert!(
            rig.node
                .ip_json(&["link", "show", "type", "veth"])
                .as_array()
                .unwrap()
                .is_empty(),
            "{tag}: no host veth left"
        );
        let nat = rig.node.exec_ok(&["nft", "list", "ruleset"]);
        assert!(!nat.contains("10.84.0."), "{tag}: no rule left\n{nat}");
    }
}

#[test]
fn bridge_macspoofchk_drops_spoofed_frames() {
    if !require_root("bridge_macspoofchk_drops_spoofed_frames") {
        return;
    }
    let rig = Rig::new("spf", Impl::Ours);
    let (p1, p2) = (rig.pod("spfa"), rig.pod("spfb"));
    let mut c = conf(
        "1.0.0",
        "spfnet",
        "bridge",
        json!({"macspoofchk": true, "bridge": "cnispf0"}),
    );
    c["ipam"] = rig.host_local(&[json!("10.85.0.0/24")]);
    rig.add(&c, "c1", &p1, "eth0").expect_ok();
    let r2 = rig.add(&c, "c2", &p2, "eth0").expect_ok().json();
    let ip2 = first_ip(&r2);
    assert!(ping(&p1, &ip2), "the pod's own MAC passes");
    let chains = |ns: &TestNs| -> Vec<String> {
        let rs: Value = serde_json::from_str(&ns.exec_ok(&["nft", "-j", "list", "table", "bridge", "nat"])).unwrap();
        rs["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["chain"]["name"].as_str().map(String::from))
            .collect()
    };
    assert!(
        chains(&rig.node).iter().any(|n| n.starts_with("cni-br-iface-c1-eth0")),
        "{:?}",
        chains(&rig.node)
    );
    // Spoof: pod1 changes its MAC; its frames no longer pass the bridge port.
    p1.ip(&["link", "set", "eth0", "address", "02:00:00:00:00:99"]);
    p1.ip(&["neigh", "flush", "all"]);
    p2.ip(&["neigh", "flush", "all"]);
    assert!(!ping(&p1, &ip2), "a spoofed source MAC is dropped");
    rig.del(&c, "c1", "", "eth0").expect_ok();
    assert!(
        !chains(&rig.node).iter().any(|n| n.contains("-c1-")),
        "DEL without netns removes c1's chains"
    );
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(&c, "c2", p2.path_str(), "eth0").expect_ok();
    assert!(!chains(&rig.node).iter().any(|n| n.starts_with("cni-br-iface")));
}
