//! bandwidth side by side with the reference plugin (Debian containernetworking-plugins
//! 1.1.1): on identical layouts (node netns, pod netns, ptp veth with host-local, the same
//! config) both must print the same result and leave the same qdiscs, filters and IFB
//! (`tc -j -d qdisc/filter show`, `ip -j -d link show type ifb`); CHECK, DEL and the errors
//! must agree. Either side's DEL and CHECK work on the other's objects (a node can swap).
//!
//! Documented differences, asserted in tests/it/bandwidth.rs instead: our IFB carries an alias
//! (`cni-bandwidth <network> <containerID> <ifname>`, for GC), which is dropped here; a failed
//! ADD rolls back (the reference leaves what it made); CHECK also fails when the TBF, the
//! ingress qdisc or the redirect is gone (the reference passes); DEL also removes the host
//! veth's root TBF and ingress qdisc (with its redirect filter); malformed values and a
//! missing netns get codes 7 and 3 (the reference says 999); no prevResult with nothing to
//! shape prints an empty result (the reference panics).

use crate::common::bw_rig::{Pod, NET};
use crate::common::rig::require_reference;
use crate::common::veth_rig::{conf, normalise_result, Impl, Out};
use serde_json::{json, Value};
use std::path::Path;

/// Our DEL also removes what ADD made on the host veth (the root TBF, the ingress qdisc and
/// its redirect filter); the reference deletes only the IFB. The rest of the node is compared;
/// `del_alone_leaves_the_veth_unshaped_the_reference_does_not` asserts each side's veth.
fn without_host_veth(mut state: Value) -> Value {
    state["qdiscs"]
        .as_array_mut()
        .unwrap()
        .retain(|q| q["dev"] != "<host-veth>");
    state["ingress_filters"] = json!([]);
    state
}

fn outcome(o: &Out) -> Value {
    if o.success() {
        json!({"ok": true})
    } else {
        json!({"ok": false, "code": o.json()["code"], "msg": o.json()["msg"]})
    }
}

/// One side's run of a case: everything the two implementations must agree on.
fn run(imp: Impl, mtu: u32, limits: &Value) -> Vec<(&'static str, Value)> {
    let p = Pod::new(if imp == Impl::Ours { "bro" } else { "brr" }, imp, "c1", mtu);
    let c = p.bw_conf(limits.clone());
    let add = p.bw("ADD", &c);
    let result = if add.success() {
        normalise_result(&add.json())
    } else {
        outcome(&add)
    };
    let state = p.tc_state();
    let mut chk = c.clone();
    if add.success() {
        chk["prevResult"] = add.json();
    }
    let check = outcome(&p.bw("CHECK", &chk));
    // CHECK with other numbers: the first mismatch each side reports.
    let mut mismatches = Vec::new();
    for (k, v) in [
        ("ingressRate", 8_000_008u64),
        ("ingressBurst", 80_008),
        ("egressRate", 16_000_008),
        ("egressBurst", 160_008),
    ] {
        let mut other = chk.clone();
        if other.get(k).is_some() {
            other[k] = json!(v);
            mismatches.push(outcome(&p.bw("CHECK", &other)));
        }
    }
    let second_add = outcome(&p.bw("ADD", &c));
    let del = [
        outcome(&p.bw("DEL", &c)),
        outcome(&p.bw("DEL", &c)),
        outcome(&p.bw_in("DEL", &c, "/run/netns/cm-bw-gone-for-good", "eth0")),
        outcome(&p.bw_in("DEL", &c, "", "eth0")),
    ];
    vec![
        ("result", result),
        ("tc state after ADD", state),
        ("CHECK", check),
        ("CHECK mismatches", json!(mismatches)),
        ("second ADD", second_add),
        ("DELs", json!(del)),
        ("tc state after DEL", without_host_veth(p.tc_state())),
    ]
}

#[test]
fn objects_results_check_del_like_reference() {
    if !require_reference("bandwidth_reference objects", "bandwidth") {
        return;
    }
    let both =
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16_000_000, "egressBurst": 160_000});
    let cases = [
        (0, both.clone()),
        (1400, both.clone()),
        (0, json!({"ingressRate": 1_000_000, "ingressBurst": 1_000_000})),
        (0, json!({"egressRate": 1_000_000, "egressBurst": 1_000_000})),
        // Above 2^32 bytes/s (TCA_TBF_RATE64), and a bucket of 1 GB at 1 byte/s (the buffer
        // wraps in 32 bits).
        (0, json!({"egressRate": 123_456_789_000u64, "egressBurst": 8_000_000})),
        (0, json!({"ingressRate": 8, "ingressBurst": 8_000_000_000u64})),
        (
            0,
            json!({"runtimeConfig": {"bandwidth": {"IngressRate": 1_000_000, "IngressBurst": 4_294_967_295u64,
                   "EgressRate": 1_000_000, "EgressBurst": 4_294_967_295u64}}}),
        ),
        (
            0,
            json!({"ingressRate": 0, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0}),
        ),
    ];
    for (mtu, limits) in cases {
        let ours = run(Impl::Ours, mtu, &limits);
        let reference = run(Impl::Reference, mtu, &limits);
        for ((what, o), (_, r)) in ours.iter().zip(&reference) {
            assert_eq!(o, r, "{what}: mtu {mtu} {limits}");
        }
        eprintln!("same as the reference: mtu {mtu} {limits}");
    }
}

#[test]
fn errors_like_reference() {
    if !require_reference("bandwidth_reference errors", "bandwidth") {
        return;
    }
    let sides = [Impl::Ours, Impl::Reference].map(|imp| Pod::new("bre", imp, "c1", 0));
    let full =
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 8_000_000, "egressBurst": 80_000});
    type Mk = Box<dyn Fn(&Pod) -> (Value, String, String)>;
    let chained = |extra: Value| -> Mk {
        Box::new(move |p: &Pod| {
            (
                p.bw_conf(extra.clone()),
                p.pod.path_str().to_string(),
                "eth0".to_string(),
            )
        })
    };
    let cases: Vec<(&str, Mk)> = vec![
        ("rate without burst", chained(json!({"ingressRate": 8}))),
        ("burst without rate", chained(json!({"egressBurst": 8}))),
        (
            "burst too big",
            chained(json!({"egressRate": 8, "egressBurst": 34_359_738_360u64})),
        ),
        (
            "rate under a byte per second",
            chained(json!({"ingressRate": 7, "ingressBurst": 8})),
        ),
        (
            "runtimeConfig rate without burst",
            chained(json!({"runtimeConfig": {"bandwidth": {"EgressRate": 8}}})),
        ),
        (
            "not chained",
            Box::new(move |p: &Pod| {
                (
                    conf("1.0.0", NET, "bandwidth", json!({"egressRate": 8, "egressBurst": 8})),
                    p.pod.path_str().into(),
                    "eth0".into(),
                )
            }),
        ),
        (
            "no such container interface",
            Box::new({
                let f = full.clone();
                move |p: &Pod| (p.bw_conf(f.clone()), p.pod.path_str().into(), "eth9".into())
            }),
        ),
        (
            "container interface not a veth",
            Box::new({
                let f = full.clone();
                move |p: &Pod| (p.bw_conf(f.clone()), p.pod.path_str().into(), "lo".into())
            }),
        ),
        (
            "no interfaces",
            Box::new({
                let f = full.clone();
                move |p: &Pod| {
                    let mut c = p.bw_conf(f.clone());
                    c["prevResult"]["interfaces"] = json!([]);
                    (c, p.pod.path_str().into(), "eth0".into())
                }
            }),
        ),
        (
            "peer not a host interface of prevResult",
            Box::new({
                let f = full.clone();
                move |p: &Pod| {
                    let mut c = p.bw_conf(f.clone());
                    c["prevResult"]["interfaces"][0]["sandbox"] = json!("/run/netns/elsewhere");
                    (c, p.pod.path_str().into(), "eth0".into())
                }
            }),
        ),
    ];
    for (what, mk) in &cases {
        for cmd in ["ADD", "CHECK", "DEL"] {
            // The failed ADD left no TBF: the reference's CHECK passes, ours says so.
            if cmd == "CHECK" && *what == "rate under a byte per second" {
                continue;
            }
            let got: Vec<Value> = sides
                .iter()
                .map(|p| {
                    let (c, netns, ifname) = mk(p);
                    let o = outcome(&p.bw_in(cmd, &c, &netns, &ifname));
                    (o, p.tc_state())
                })
                .map(|(o, s)| json!({"outcome": o, "tc": s}))
                .collect();
            assert_eq!(got[0], got[1], "{cmd} {what}");
            eprintln!("{cmd} {what}: {}", got[0]["outcome"]);
        }
    }
}

/// Objects made by one implementation are checked and deleted by the other.
#[test]
fn swap_either_way() {
    if !require_reference("bandwidth_reference swap", "bandwidth") {
        return;
    }
    let limits =
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16_000_000, "egressBurst": 160_000});
    for (maker, other) in [("bandwidth", "bandwidth-ref"), ("bandwidth-ref", "bandwidth")] {
        let p = Pod::new("brs", Impl::Ours, "c1", 0);
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni/bandwidth"), p.rig.bin.join("bandwidth-ref")).unwrap();
        let c = p.bw_conf(limits.clone());
        let run = |plugin: &str, cmd: &str, c: &Value| p.rig.run(plugin, cmd, c, "c1", p.pod.path_str(), "eth0", "");
        let r = run(maker, "ADD", &c).expect_ok().json();
        let mut chk = c.clone();
        chk["prevResult"] = r;
        run(other, "CHECK", &chk).expect_ok();
        let mut wrong = chk.clone();
        wrong["egressRate"] = json!(1_000_000);
        assert_eq!(
            run(other, "CHECK", &wrong).msg(),
            "Rate doesn't match",
            "{other} on {maker}'s"
        );
        run(other, "DEL", &c).expect_ok();
        assert!(p.ifb_aliases().is_empty(), "{other} deleted {maker}'s IFB");
    }
}

/// DEL of bandwidth alone, as a chain edit runs it: ours leaves the veth with nothing it made
/// (`tc qdisc show`: noqueue; `tc filter show ... ingress`: nothing). Debian's 1.1.1 deletes
/// only the IFB and leaves the root TBF (the pod stays shaped into it) and the ingress qdisc
/// with its u32 filter redirecting to the deleted IFB, which drops everything the pod sends.
#[test]
fn del_alone_leaves_the_veth_unshaped_the_reference_does_not() {
    if !require_reference("bandwidth_reference del alone", "bandwidth") {
        return;
    }
    let limits =
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16_000_000, "egressBurst": 160_000});
    for imp in [Impl::Ours, Impl::Reference] {
        let p = Pod::new("brd", imp, "c1", 0);
        let veth = p.host_veth();
        let c = p.bw_conf(limits.clone());
        p.bw("ADD", &c).expect_ok();
        p.bw("DEL", &c).expect_ok();
        assert!(p.ifb_aliases().is_empty(), "{imp:?}: IFB deleted");
        let qdiscs = p.node_cmd(&["tc", "qdisc", "show", "dev", &veth]);
        let filters = p.node_cmd(&["tc", "filter", "show", "dev", &veth, "ingress"]);
        eprintln!("{imp:?} after DEL:\n{qdiscs}{filters}");
        if imp == Impl::Ours {
            assert!(
                qdiscs.starts_with("qdisc noqueue 0: root") && qdiscs.lines().count() == 1,
                "{qdiscs}"
            );
            assert!(filters.trim().is_empty(), "{filters}");
        } else {
            assert!(qdiscs.contains("qdisc tbf 1: root"), "{qdiscs}");
            assert!(qdiscs.contains("qdisc ingress ffff: parent ffff:fff1"), "{qdiscs}");
            assert!(filters.contains("u32"), "{filters}");
        }
    }
}
