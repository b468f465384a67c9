//! firewall plugin against the kernel (our binary, empty PATH): the isolation matrix for each
//! ingressPolicy (same bridge / other bridge / outside) in both layouts (`backend: "nftables"`
//! and the default, which is iptables on this node), the nftables layout's rules as nft prints
//! them, CHECK, DEL without prevResult, and `backend: "firewalld"` without firewalld (code 11).

use crate::common::fw_rig::*;
use crate::common::rig::{self, Invocation, Outcome, PluginDir};
use cni_multi::meta::firewall;
use cni_multi::pkg::comment::rule_comment;
use serde_json::{json, Value};

fn fw_conf(pod: &Pod, policy: &str, backend: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "fwnet", "type": "firewall", "ingressPolicy": policy,
           "backend": backend, "prevResult": pod.result})
}

fn run(site: &Site, dir: &PluginDir, cmd: &str, pod: &Pod, conf: &Value) -> Outcome {
    Invocation::new("firewall", cmd)
        .container_id(&pod.cid)
        .pod(&pod.ns)
        .config(conf)
        .in_node(&site.node)
        .env("PATH", "")
        .run_ours_in(dir)
}

fn pings(from: &rig::TestNs, to: &str) -> bool {
    from.exec(&["ping", "-c1", "-W1", to]).status.success()
}

/// [a1→a2 same bridge, a1→b1 other bridge, b1→a1, outside→a1, a1→outside]
fn matrix(policy: &str, backend: &str) -> Vec<bool> {
    let site = Site::new(&format!("fw-{policy}{}", backend.len()));
    let dir = PluginDir::new();
    let a1 = site.pod("fw-a1", "cni-fa", "10.93.0.0/24", "ctr-a1");
    let a2 = site.pod("fw-a2", "cni-fa", "10.93.0.0/24", "ctr-a2");
    let b1 = site.pod("fw-b1", "cni-fb", "10.94.0.0/24", "ctr-b1");
    // The outside host needs routes to the pods for outside→pod.
    site.outside
        .ip(&["route", "add", "10.93.0.0/16", "via", OUTSIDE_NODE_IP]);
    for p in [&a1, &a2, &b1] {
        run(&site, &dir, "ADD", p, &fw_conf(p, policy, backend)).expect_ok();
    }
    if policy == "isolated" && backend == "nftables" {
        check_rules(&site, &dir, &a1, &a2);
    }
    vec![
        pings(&a1.ns, &a2.ip),
        pings(&a1.ns, &b1.ip),
        pings(&b1.ns, &a1.ip),
        pings(&site.outside, &a1.ip),
        pings(&a1.ns, OUTSIDE_IP),
    ]
}

#[test]
fn isolation_matrix() {
    if !rig::require_reference("isolation_matrix", "bridge") {
        return;
    }
    for backend in ["nftables", ""] {
        assert_eq!(
            matrix("open", backend),
            vec![true, true, true, true, true],
            "open {backend:?}"
        );
        assert_eq!(
            matrix("same-bridge", backend),
            vec![true, false, false, true, true],
            "same-bridge {backend:?}"
        );
        assert_eq!(
            matrix("isolated", backend),
            vec![false, false, false, true, true],
            "isolated {backend:?}"
        );
    }
}

/// Rules as nft prints them, CHECK, DEL without prevResult.
fn check_rules(site: &Site, dir: &PluginDir, a1: &Pod, a2: &Pod) {
    let text = table_text(&site.node, "inet", firewall::TABLE);
    let c1 = rule_comment("fwnet", &a1.cid, "eth0");
    for want in [
        "type filter hook forward priority filter; policy accept;".to_string(),
        "jump CNI-ISOLATION-STAGE-1".to_string(),
        "jump CNI-FORWARD comment \"CNI firewall plugin rules\"".to_string(),
        "jump CNI-ADMIN comment \"CNI firewall plugin admin overrides\"".to_string(),
        format!(
            "ip daddr {} ct state established,related accept comment \"{c1}\"",
            a1.ip
        ),
        format!("ip saddr {} accept comment \"{c1}\"", a1.ip),
        "iifname \"cni-fa\" oifname != \"cni-fa\" jump CNI-ISOLATION-STAGE-2".to_string(),
        "iifname \"cni-fa\" oifname \"cni-fa\" drop".to_string(),
        "oifname \"cni-fb\" drop".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    let btext = table_text(&site.node, "bridge", firewall::TABLE);
    assert!(
        btext.contains(&format!("iifname \"{}\" drop comment \"{c1}\"", a1.host_veth)),
        "{btext}"
    );
    let rs = site.ruleset();
    let fwd = rules(&rs, "inet", firewall::TABLE, firewall::CNI_FORWARD);
    assert_eq!(fwd.len(), 1 + 3 * 2, "admin jump + 2 per pod");
    assert!(fwd[0].0.to_string().contains("CNI-ADMIN"), "admin chain first");
    // Isolation rules are per bridge, not per pod.
    assert_eq!(rules(&rs, "inet", firewall::TABLE, firewall::STAGE2).len(), 2);

    run(site, dir, "CHECK", a1, &fw_conf(a1, "isolated", "nftables")).expect_ok();
    // DEL without prevResult removes exactly a1's rules.
    let mut c = fw_conf(a1, "isolated", "nftables");
    c.as_object_mut().unwrap().remove("prevResult");
    run(site, dir, "DEL", a1, &c).expect_ok();
    let fwd = rules(&site.ruleset(), "inet", firewall::TABLE, firewall::CNI_FORWARD);
    assert_eq!(fwd.len(), 1 + 2 * 2);
    assert!(fwd.iter().all(|(_, cm)| cm.as_deref() != Some(c1.as_str())));
    assert!(!table_text(&site.node, "bridge", firewall::TABLE).contains(&a1.host_veth));
    let e = run(site, dir, "CHECK", a1, &fw_conf(a1, "isolated", "nftables"));
    assert!(!e.success());
    assert_eq!(
        e.msg(),
        Some(format!("missing firewall rule in inet cni_firewall CNI-FORWARD for {}", a1.cid).as_str()),
        "{e}"
    );
    run(site, dir, "ADD", a1, &fw_conf(a1, "isolated", "nftables")).expect_ok();
    run(site, dir, "CHECK", a2, &fw_conf(a2, "isolated", "nftables")).expect_ok();
}

#[test]
fn firewalld_and_bad_configs() {
    if !rig::require_root("firewalld_and_bad_configs") {
        return;
    }
    let node = rig::TestNs::new_node("fw-err");
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}]});
    let run = |c: Value| {
        Invocation::new("firewall", "ADD")
            .netns("/proc/1/ns/net")
            .env("CNI_NETNS_OVERRIDE", "1")
            .config(&c)
            .in_node(&node)
            .env("PATH", "")
            .run_ours()
    };
    let out = run(
        json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall", "backend": "firewalld",
                         "prevResult": prev}),
    );
    // No firewalld on the (absent) system bus: try again later, naming the bus it tried.
    out.expect_err(11);
    let msg = out.msg().unwrap();
    assert!(msg.contains("firewalld") && msg.contains(rig::NO_SYSTEM_BUS), "{out}");
    let out = run(
        json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall", "ingressPolicy": "bogus",
                         "prevResult": prev}),
    );
    out.expect_err(7);
    let out = run(json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"}));
    assert!(out.msg().unwrap().contains("chained"), "{out}");
    // Below 0.4.0 the plugin is not available.
    assert!(!run(json!({"cniVersion": "0.3.1", "name": "n", "type": "firewall", "prevResult": prev})).success());
    assert!(table_text(&node, "inet", firewall::TABLE).is_empty());
}
