//! firewall plugin lifecycle in its nftables layout (`backend: "nftables"`; the iptables
//! layout's is in tests/it/firewall_iptables.rs) against the kernel (our binary, empty PATH),
//! every rule read from `nft -j list ruleset`: a repeated ADD of the same attachment does not duplicate any rule
//! (per-pod accepts, admin jump, isolation rules, the bridge-family drop), CHECK fails after
//! DEL, and GC (CNI 1.1) succeeds without removing anything: the firewall has no GC in the
//! reference, and ours keeps that (its accept rules only ever allow, and DEL removes them).

use crate::common::fw_rig::*;
use crate::common::rig::{self, Invocation, Outcome, PluginDir};
use cni_multi::meta::firewall;
use cni_multi::pkg::comment::rule_comment;
use serde_json::{json, Value};

const NET: &str = "fwlife";

fn fw_conf(pod: &Pod, policy: &str) -> Value {
    json!({"cniVersion": "1.1.0", "name": NET, "type": "firewall", "ingressPolicy": policy,
           "backend": "nftables", "prevResult": pod.result})
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

/// Every rule of both firewall tables as (family, chain, matches/statements, comment), sorted.
fn fw_rules(site: &Site) -> Vec<(String, String, Vec<String>, Option<String>)> {
    let rs = site.ruleset();
    let mut out: Vec<_> = rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == firewall::TABLE)
        .map(|r| {
            (
                r["family"].as_str().unwrap().to_string(),
                r["chain"].as_str().unwrap().to_string(),
                matches(&r["expr"]),
                r["comment"].as_str().map(String::from),
            )
        })
        .collect();
    out.sort();
    out
}

fn with_comment(rules: &[(String, String, Vec<String>, Option<String>)], c: &str) -> usize {
    rules.iter().filter(|r| r.3.as_deref() == Some(c)).count()
}

#[test]
fn readd_check_after_del_and_gc() {
    if !rig::require_reference("readd_check_after_del_and_gc", "bridge") {
        return;
    }
    let site = Site::new("fwl");
    let dir = PluginDir::new();
    let a = site.pod("fwl-a", "cni-fl", "10.99.0.0/24", "ctr-fl-a");
    let b = site.pod("fwl-b", "cni-fl", "10.99.0.0/24", "ctr-fl-b");
    let (ca, cb) = (rule_comment(NET, &a.cid, "eth0"), rule_comment(NET, &b.cid, "eth0"));

    for policy in ["open", "same-bridge", "isolated"] {
        run(&site, &dir, "ADD", &a, &fw_conf(&a, policy)).expect_ok();
        run(&site, &dir, "ADD", &b, &fw_conf(&b, policy)).expect_ok();
        let once = fw_rules(&site);
        // Two accepts per pod in CNI-FORWARD, plus the bridge-family drop when isolated.
        let per_pod = if policy == "isolated" { 3 } else { 2 };
        assert_eq!(with_comment(&once, &ca), per_pod, "{policy}: {once:#?}");
        assert_eq!(with_comment(&once, &cb), per_pod, "{policy}");
        // ADD again (a runtime retrying): nothing is duplicated, anywhere.
        run(&site, &dir, "ADD", &a, &fw_conf(&a, policy)).expect_ok();
        run(&site, &dir, "ADD", &a, &fw_conf(&a, policy)).expect_ok();
        assert_eq!(fw_rules(&site), once, "{policy}: a repeated ADD changed the rules");
        let fwd = rules(&site.ruleset(), "inet", firewall::TABLE, firewall::CNI_FORWARD);
        assert_eq!(fwd.len(), 1 + 2 * 2, "{policy}: one admin jump, two accepts per pod");
        run(&site, &dir, "CHECK", &a, &fw_conf(&a, policy)).expect_ok();

        // GC listing only b: succeeds and removes nothing (a's rules stay too, see above).
        let gc = json!({"cniVersion": "1.1.0", "name": NET, "type": "firewall",
                        "cni.dev/valid-attachments": [{"containerID": b.cid, "ifname": "eth0"}]});
        Invocation::new("firewall", "GC")
            .config(&gc)
            .in_node(&site.node)
            .env("PATH", "")
            .run_ours_in(&dir)
            .expect_ok();
        assert_eq!(fw_rules(&site), once, "{policy}: GC changed the rules");
        run(&site, &dir, "CHECK", &b, &fw_conf(&b, policy)).expect_ok();

        // DEL a: its rules go, CHECK of a fails, b is untouched and still passes CHECK.
        run(&site, &dir, "DEL", &a, &fw_conf(&a, policy)).expect_ok();
        let after = fw_rules(&site);
        assert_eq!(with_comment(&after, &ca), 0, "{policy}: {after:#?}");
        assert_eq!(with_comment(&after, &cb), per_pod, "{policy}");
        let out = run(&site, &dir, "CHECK", &a, &fw_conf(&a, policy));
        assert!(!out.success(), "{policy}: CHECK after DEL must fail:\n{out}");
        assert!(out.msg().unwrap_or_default().contains("missing firewall rule"), "{out}");
        run(&site, &dir, "CHECK", &b, &fw_conf(&b, policy)).expect_ok();
        // DEL twice is fine; then b goes too, leaving only the shared skeleton.
        run(&site, &dir, "DEL", &a, &fw_conf(&a, policy)).expect_ok();
        run(&site, &dir, "DEL", &b, &fw_conf(&b, policy)).expect_ok();
        let left = fw_rules(&site);
        assert!(left.iter().all(|r| r.3.as_deref() != Some(cb.as_str())), "{left:#?}");
    }
    // The per-bridge isolation rules stay after every pod is gone (as in the reference) and
    // were never duplicated by the three policies' ADDs: one stage-2 drop for the bridge.
    let stage2 = rules(&site.ruleset(), "inet", firewall::TABLE, firewall::STAGE2);
    assert_eq!(stage2.len(), 1, "{stage2:?}");
    assert_eq!(matches(&stage2[0].0)[0], "meta oifname == cni-fl");
}
