//! bandwidth against the real kernel (needs root): our ptp makes the pod's veth in throw-away
//! node and pod namespaces, our bandwidth shapes it. The objects, CHECK's failure reasons,
//! DEL, GC, the key rules, and real TCP rates both ways. Plugins run with an empty PATH.

use crate::common::bw_rig::{tcp_rate, Pod, NET};
use crate::common::rig::require_root;
use crate::common::veth_rig::{conf, Impl};
use serde_json::{json, Value};

/// 8 Mbit/s into the pod, 16 Mbit/s out of it; 80 kbit / 160 kbit buckets (10 / 20 kB).
fn limits() -> Value {
    json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 16_000_000, "egressBurst": 160_000})
}

/// `bwp` + 12 hex digits of sha512(network name + container ID), as the reference names it.
fn ifb_of(cid: &str) -> String {
    // sha512("bwnet" + "c1"), computed once with `printf bwnetc1 | sha512sum`.
    match cid {
        "c1" => "bwp459546d14214".to_string(),
        other => panic!("no precomputed IFB name for {other}"),
    }
}

fn tbf_of(p: &Pod, dev: &str) -> Value {
    p.qdiscs(dev)
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["kind"] == "tbf")
        .cloned()
        .unwrap_or(Value::Null)
}

/// The host veth is there with nothing bandwidth made: its default root qdisc (noqueue) and
/// no filter, as `tc qdisc show` / `tc filter show` print them.
fn assert_unshaped(p: &Pod, veth: &str) {
    assert!(
        p.rig.node.link(veth).is_some(),
        "the veth stays for its own plugin's DEL"
    );
    let kinds: Vec<Value> = p
        .qdiscs(veth)
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![json!("noqueue")],
        "{}",
        p.node_cmd(&["tc", "qdisc", "show", "dev", veth])
    );
    for dir in ["ingress", "egress"] {
        let f = p.node_cmd(&["tc", "filter", "show", "dev", veth, dir]);
        assert!(f.trim().is_empty(), "{dir} filters left on {veth}: {f}");
    }
}

#[test]
fn add_objects_check_del() {
    if !require_root("bandwidth add_objects_check_del") {
        return;
    }
    let p = Pod::new("bwa", Impl::Ours, "c1", 1400);
    let veth = p.host_veth();
    let c = p.bw_conf(limits());
    let r = p.bw("ADD", &c).expect_ok().json();

    // prevResult comes back with the IFB appended.
    let ifb = ifb_of("c1");
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(
        &ifs[..ifs.len() - 1],
        p.ptp["interfaces"].as_array().unwrap().as_slice()
    );
    assert_eq!(ifs.last().unwrap()["name"], ifb.as_str());
    let link = p.rig.node.link(&ifb).expect("IFB exists");
    assert_eq!(ifs.last().unwrap()["mac"], link["address"]);
    assert_eq!(r["ips"], p.ptp["ips"]);

    // Ingress: TBF 1: at the host veth's root; 1 MB/s, 10 kB bucket, 25 ms.
    let t = tbf_of(&p, &veth);
    assert_eq!(t["handle"], "1:", "{t}");
    assert_eq!(t["root"], true);
    assert_eq!(t["options"]["rate"], 1_000_000);
    assert_eq!(t["options"]["burst"], 10_000);
    assert_eq!(t["options"]["lat"], 25_000);
    // Egress: the IFB (up, the veth's MTU, qlen 0, alias naming the attachment) with TBF 1:.
    assert_eq!(link["mtu"], 1400);
    assert!(link["flags"].as_array().unwrap().contains(&json!("UP")), "{link}");
    assert_eq!(link.get("txqlen").cloned().unwrap_or(json!(0)), 0, "{link}");
    assert_eq!(
        p.ifb_aliases(),
        vec![(ifb.clone(), Some(format!("cni-bandwidth {NET} c1 eth0")))]
    );
    let t = tbf_of(&p, &ifb);
    assert_eq!(
        (t["options"]["rate"].clone(), t["options"]["burst"].clone()),
        (json!(2_000_000), json!(20_000))
    );
    // The host veth's ingress qdisc redirects everything to the IFB.
    let q = p.qdiscs(&veth);
    assert!(
        q.as_array()
            .unwrap()
            .iter()
            .any(|q| q["kind"] == "ingress" && q["handle"] == "ffff:"),
        "{q}"
    );
    let f = p.node_cmd(&["tc", "-d", "filter", "show", "dev", &veth, "ingress"]);
    assert!(f.contains("protocol all pref 1 u32"), "{f}");
    assert!(f.contains("match 00000000/00000000 at 0"), "{f}");
    assert!(
        f.contains(&format!("mirred (Egress Redirect to device {ifb}) stolen")),
        "{f}"
    );

    let mut chk = c.clone();
    chk["prevResult"] = r.clone();
    p.bw("CHECK", &chk).expect_ok();

    // DEL of bandwidth alone (a chain edit) removes everything it made and keeps the veth:
    // the IFB, the veth's root TBF, its ingress qdisc and the redirect filter under it.
    p.bw("DEL", &c).expect_ok();
    assert!(p.rig.node.link(&ifb).is_none(), "IFB gone");
    assert_unshaped(&p, &veth);
    // Again, with the netns gone or empty, it is still success.
    p.bw("DEL", &c).expect_ok();
    p.bw_in("DEL", &c, "/run/netns/cm-bw-gone-for-good", "eth0").expect_ok();
    p.bw_in("DEL", &c, "", "eth0").expect_ok();
    // The veth's qdiscs go with the veth (ptp's DEL): nothing is left in the node.
    p.rig.del(&p.ptp_conf(1400), "c1", p.pod.path_str(), "eth0").expect_ok();
    let left = p.node_cmd(&["tc", "qdisc", "show"]);
    assert_eq!(left.lines().count(), 1, "only lo's qdisc: {left}");
    assert!(p.ifb_aliases().is_empty());
}

#[test]
fn one_direction_each() {
    if !require_root("bandwidth one_direction_each") {
        return;
    }
    // Ingress only: no IFB, no ingress qdisc.
    let p = Pod::new("bwi", Impl::Ours, "c1", 0);
    let c = p.bw_conf(json!({"ingressRate": 1_000_000, "ingressBurst": 1_000_000}));
    let r = p.bw("ADD", &c).expect_ok().json();
    assert_eq!(r["interfaces"], p.ptp["interfaces"]);
    assert!(p.ifb_aliases().is_empty());
    let q = p.qdiscs(&p.host_veth());
    assert_eq!(q.as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q[0]["options"]["rate"], 125_000);
    let mut chk = c.clone();
    chk["prevResult"] = r;
    p.bw("CHECK", &chk).expect_ok();
    p.bw("DEL", &c).expect_ok();

    // Egress only: the veth keeps noqueue at its root.
    let p = Pod::new("bwe", Impl::Ours, "c1", 0);
    let c = p.bw_conf(json!({"egressRate": 1_000_000, "egressBurst": 1_000_000}));
    let r = p.bw("ADD", &c).expect_ok().json();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    let q = p.qdiscs(&p.host_veth());
    let kinds: Vec<_> = q.as_array().unwrap().iter().map(|q| q["kind"].clone()).collect();
    assert_eq!(kinds, vec![json!("noqueue"), json!("ingress")]);
    let mut chk = c.clone();
    chk["prevResult"] = r;
    p.bw("CHECK", &chk).expect_ok();
    p.bw("DEL", &c).expect_ok();
    assert!(p.ifb_aliases().is_empty());
}

#[test]
fn check_failure_reasons() {
    if !require_root("bandwidth check_failure_reasons") {
        return;
    }
    let p = Pod::new("bwc", Impl::Ours, "c1", 0);
    let veth = p.host_veth();
    let ifb = ifb_of("c1");
    let c = p.bw_conf(limits());
    let r = p.bw("ADD", &c).expect_ok().json();
    let check = |extra: Value| {
        let mut chk = p.bw_conf(extra);
        chk["prevResult"] = r.clone();
        p.bw("CHECK", &chk)
    };
    let fails = |extra: Value, msg: &str| {
        let o = check(extra.clone());
        assert!(!o.success(), "CHECK {extra} should fail");
        assert_eq!((o.code(), o.msg()), (999, msg.to_string()), "CHECK {extra}");
    };
    let with = |k: &str, v: u64| {
        let mut l = limits();
        l[k] = json!(v);
        l
    };
    check(limits()).expect_ok();
    fails(with("ingressRate", 8_000_008), "Rate doesn't match");
    fails(with("egressRate", 16_000_008), "Rate doesn't match");
    // A bigger bucket raises the limit (rate·latency + burst) first.
    fails(with("ingressBurst", 80_008), "Limit doesn't match");
    fails(with("egressBurst", 160_008), "Limit doesn't match");
    // Same rate and limit, another bucket: only the buffer differs.
    p.node_cmd(&[
        "tc", "qdisc", "replace", "dev", &ifb, "root", "handle", "1:", "tbf", "rate", "16mbit", "burst", "30000",
        "limit", "70000",
    ]);
    fails(limits(), "Buffer doesn't match");
    // The TBF removed: noqueue comes back (the reference passes here; we do not).
    p.node_cmd(&["tc", "qdisc", "del", "dev", &ifb, "root"]);
    fails(
        limits(),
        &format!("Failed to find tbf qdisc 1: on link #{}", link_index(&p, &ifb)),
    );
    // The redirect gone: nothing would reach the IFB.
    p.node_cmd(&[
        "tc", "qdisc", "replace", "dev", &ifb, "root", "handle", "1:", "tbf", "rate", "16mbit", "burst", "20000",
        "limit", "70000",
    ]);
    check(limits()).expect_ok();
    p.node_cmd(&["tc", "filter", "del", "dev", &veth, "ingress"]);
    fails(limits(), &format!("Failed to find the redirect from {veth} to {ifb}"));
    p.node_cmd(&["tc", "qdisc", "del", "dev", &veth, "ingress"]);
    fails(limits(), &format!("Failed to find ingress qdisc on {veth}"));
    // IFB gone.
    p.node_cmd(&["ip", "link", "del", &ifb]);
    fails(limits(), "get ifb device: Link not found");
    // Ingress checks still run without the IFB.
    check(json!({"ingressRate": 8_000_000, "ingressBurst": 80_000})).expect_ok();
    fails(
        json!({"ingressRate": 8_000_000, "ingressBurst": 80_000, "egressRate": 1, "egressBurst": 1}),
        "get ifb device: Link not found",
    );
    // Not chained.
    let o = p.bw("CHECK", &conf("1.0.0", NET, "bandwidth", limits()));
    assert_eq!(o.msg(), "must be called as a chained plugin");
}

fn link_index(p: &Pod, dev: &str) -> u64 {
    p.rig.node.link(dev).expect("link")["ifindex"].as_u64().unwrap()
}

#[test]
fn keys_runtime_config_and_errors() {
    if !require_root("bandwidth keys_runtime_config_and_errors") {
        return;
    }
    let p = Pod::new("bwk", Impl::Ours, "c1", 0);
    let veth = p.host_veth();
    // containerd 1.6's capitalised runtimeConfig; 4294967295 bits = 536870911 bytes of bucket.
    let rc = json!({"runtimeConfig": {"bandwidth": {
        "IngressRate": 1_000_000, "IngressBurst": 4_294_967_295u64,
        "EgressRate": 1_000_000, "EgressBurst": 4_294_967_295u64}}});
    let c = p.bw_conf(rc.clone());
    let r = p.bw("ADD", &c).expect_ok().json();
    assert_eq!(tbf_of(&p, &veth)["options"]["rate"], 125_000);
    assert_eq!(tbf_of(&p, &ifb_of("c1"))["options"]["rate"], 125_000);
    let mut chk = c.clone();
    chk["prevResult"] = r;
    p.bw("CHECK", &chk).expect_ok();
    p.bw("DEL", &c).expect_ok();
    assert_unshaped(&p, &veth);

    // The static keys win over runtimeConfig.
    let mut c = p.bw_conf(json!({"ingressRate": 16_000_000, "ingressBurst": 80_000}));
    c["runtimeConfig"] = rc["runtimeConfig"].clone();
    p.bw("ADD", &c).expect_ok();
    assert_eq!(tbf_of(&p, &veth)["options"]["rate"], 2_000_000);
    assert!(p.ifb_aliases().is_empty(), "no egress from the static keys: no IFB");
    p.bw("DEL", &c).expect_ok();

    // All zero (or an empty runtimeConfig entry): prevResult printed back, nothing made.
    for extra in [
        json!({}),
        json!({"ingressRate": 0, "ingressBurst": 0, "egressRate": 0, "egressBurst": 0}),
        json!({"runtimeConfig": {"bandwidth": {}}}),
    ] {
        let r = p.bw("ADD", &p.bw_conf(extra.clone())).expect_ok().json();
        assert_eq!(r, p.ptp, "pass-through with {extra}");
    }
    let left = p.qdiscs(&veth);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["kind"], "noqueue");

    // The reference's texts; every failure leaves the node as it was.
    let before = p.tc_state();
    let err = |extra: Value, code: u64, msg: &str| {
        let o = p.bw("ADD", &p.bw_conf(extra.clone()));
        assert!(!o.success(), "ADD {extra} should fail");
        assert_eq!((o.code(), o.msg()), (code, msg.to_string()), "ADD {extra}");
        assert_eq!(p.tc_state(), before, "nothing half-made by {extra}");
    };
    err(json!({"ingressRate": 8}), 999, "if rate is set, burst must also be set");
    err(json!({"egressBurst": 8}), 999, "if burst is set, rate must also be set");
    err(
        json!({"egressRate": 8, "egressBurst": 34_359_738_360u64}),
        999,
        "burst cannot be more than 4GB",
    );
    err(
        json!({"runtimeConfig": {"bandwidth": {"IngressRate": 8}}}),
        999,
        "if rate is set, burst must also be set",
    );
    err(
        json!({"egressRate": -1, "egressBurst": 8}),
        7,
        "failed to parse network configuration: egressRate: -1 is not an unsigned 64-bit integer",
    );
    // Not chained.
    let o = p.bw("ADD", &conf("1.0.0", NET, "bandwidth", limits()));
    assert_eq!(
        (o.code(), o.msg()),
        (999, "must be called as chained plugin".to_string())
    );
    // Host veth not found the reference's way.
    let o = p.bw_in("ADD", &p.bw_conf(limits()), p.pod.path_str(), "eth9");
    assert_eq!(
        o.msg(),
        "container interface eth9 has no veth peer: could not look up \"eth9\": Link not found"
    );
    let o = p.bw_in("ADD", &p.bw_conf(limits()), p.pod.path_str(), "lo");
    assert_eq!(
        o.msg(),
        "container interface lo has no veth peer: interface \"lo\" was not a veth interface"
    );
    let mut c = p.bw_conf(limits());
    c["prevResult"]["interfaces"] = json!([]);
    assert_eq!(p.bw("ADD", &c).msg(), "no interfaces provided");
    // The peer must be a host interface of prevResult.
    let mut c = p.bw_conf(limits());
    c["prevResult"]["interfaces"][0]["sandbox"] = json!("/run/netns/elsewhere");
    assert_eq!(
        p.bw("ADD", &c).msg(),
        "no veth peer of container interface found in host ns"
    );
    let o = p.bw_in("ADD", &p.bw_conf(limits()), "/run/netns/cm-bw-no-such-netns", "eth0");
    assert_eq!(o.code(), 3, "{}", o.stdout);
    // A second ADD fails where the first object exists and rolls back what it made.
    p.bw("ADD", &p.bw_conf(json!({"egressRate": 8000, "egressBurst": 8000})))
        .expect_ok();
    let before = p.tc_state();
    let o = p.bw("ADD", &p.bw_conf(limits()));
    assert_eq!(o.msg(), "adding link: file exists");
    assert_eq!(p.tc_state(), before, "the ingress TBF of the failed ADD is rolled back");
    assert!(!p.qdiscs(&veth).as_array().unwrap().iter().any(|q| q["kind"] == "tbf"));
    assert_eq!(tbf_of(&p, &ifb_of("c1"))["options"]["rate"], 1000);
    p.bw("DEL", &c).expect_ok();
}

#[test]
fn gc_removes_stale_ifbs_only() {
    if !require_root("bandwidth gc_removes_stale_ifbs_only") {
        return;
    }
    let p = Pod::new("bwg", Impl::Ours, "c1", 0);
    let c = p.bw_conf(json!({"egressRate": 8000, "egressBurst": 8000}));
    p.bw("ADD", &c).expect_ok();
    let kept = ifb_of("c1");
    // Stale ones: another container of this network, the same container on another network
    // (its alias names that network), and an IFB without our alias (made by the reference,
    // or by someone else), which GC cannot map back and leaves alone.
    let mk = |name: &str, alias: Option<&str>| {
        p.node_cmd(&["ip", "link", "add", name, "type", "ifb"]);
        if let Some(a) = alias {
            p.node_cmd(&["ip", "link", "set", name, "alias", a]);
        }
    };
    mk("bwp000000000001", Some(&format!("cni-bandwidth {NET} c2 eth0")));
    mk("bwp000000000002", Some(&format!("cni-bandwidth {NET} c1 eth1")));
    mk("bwp000000000003", Some("cni-bandwidth othernet c9 eth0"));
    mk("bwp000000000004", None);
    let names = || -> Vec<String> {
        let mut v: Vec<String> = p.ifb_aliases().into_iter().map(|(n, _)| n).collect();
        v.sort();
        v
    };
    let all = names();
    assert_eq!(all.len(), 5);
    let gc = |extra: Value| {
        let mut g = conf("1.1.0", NET, "bandwidth", extra);
        g["cniVersion"] = json!("1.1.0");
        p.rig.run("bandwidth", "GC", &g, "", "", "", "").expect_ok();
    };
    // Without cni.dev/valid-attachments nothing goes.
    gc(json!({}));
    assert_eq!(names(), all);
    gc(json!({"cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}));
    let mut want = vec![
        kept.clone(),
        "bwp000000000003".to_string(),
        "bwp000000000004".to_string(),
    ];
    want.sort();
    assert_eq!(names(), want);
    gc(json!({"cni.dev/valid-attachments": []}));
    assert_eq!(
        names(),
        vec!["bwp000000000003".to_string(), "bwp000000000004".to_string()]
    );
}

/// Real TCP through the shaped veth, both ways, against the configured rates; the same
/// transfer without bandwidth runs far faster. A rate check with a wide tolerance, not a
/// timing assertion on the plugin.
#[test]
fn traffic_is_shaped_both_ways() {
    if !require_root("bandwidth traffic_is_shaped_both_ways") {
        return;
    }
    let p = Pod::new("bwt", Impl::Ours, "c1", 0);
    let (pod, node) = (p.pod.path_str().to_string(), p.rig.node.path_str().to_string());
    let (pod_ip, node_ip) = (p.pod_ip(), p.node_ip());
    // ~2 s at each configured rate.
    let into_pod = |bytes| tcp_rate(&node, &pod, &pod_ip, bytes);
    let out_of_pod = |bytes| tcp_rate(&pod, &node, &node_ip, bytes);

    let free_in = into_pod(2_000_000);
    let free_out = out_of_pod(4_000_000);
    eprintln!(
        "unshaped: into pod {:.1} Mbit/s, out of pod {:.1} Mbit/s",
        free_in / 1e6,
        free_out / 1e6
    );

    let c = p.bw_conf(limits());
    p.bw("ADD", &c).expect_ok();
    let shaped_in = into_pod(2_000_000);
    let shaped_out = out_of_pod(4_000_000);
    eprintln!(
        "shaped: into pod {:.2} Mbit/s (8 configured), out of pod {:.2} Mbit/s (16 configured)",
        shaped_in / 1e6,
        shaped_out / 1e6
    );
    let within = |got: f64, want: f64| (got - want).abs() <= want * 0.3;
    assert!(
        within(shaped_in, 8e6),
        "into pod: {shaped_in} bit/s, want 8 Mbit/s ± 30 %"
    );
    assert!(
        within(shaped_out, 16e6),
        "out of pod: {shaped_out} bit/s, want 16 Mbit/s ± 30 %"
    );
    assert!(free_in > 3.0 * 8e6, "unshaped into pod only {free_in} bit/s");
    assert!(free_out > 3.0 * 16e6, "unshaped out of pod only {free_out} bit/s");
    // After DEL the pod's egress flows again, unshaped (the veth keeps only the ingress TBF).
    p.bw("DEL", &c).expect_ok();
    let after = out_of_pod(4_000_000);
    assert!(after > 3.0 * 16e6, "out of pod after DEL: {after} bit/s");
}

/// An attachment too long for the IFB's alias (IFALIASZ) is still shaped and deleted; only GC
/// cannot map it back.
#[test]
fn long_network_name_without_alias() {
    if !require_root("bandwidth long_network_name_without_alias") {
        return;
    }
    let p = Pod::new("bwl", Impl::Ours, "c1", 0);
    let mut c = p.bw_conf(json!({"egressRate": 8000, "egressBurst": 8000}));
    c["name"] = json!("n".repeat(250));
    let r = p.bw("ADD", &c).expect_ok().json();
    let ifb = r["interfaces"][2]["name"].as_str().unwrap().to_string();
    assert_eq!(p.ifb_aliases(), vec![(ifb, None)]);
    p.bw("DEL", &c).expect_ok();
    assert!(p.ifb_aliases().is_empty());
}

/// DEL finds the veth without prevResult (CNI 0.3.x, or a runtime with no cache) through the
/// container interface's peer, and each direction alone is undone.
#[test]
fn del_unshapes_without_prev_result_and_one_direction_each() {
    if !require_root("bandwidth del_unshapes_without_prev_result") {
        return;
    }
    for (tag, l) in [
        ("bwdb", limits()),
        ("bwdi", json!({"ingressRate": 8_000_000, "ingressBurst": 80_000})),
        ("bwde", json!({"egressRate": 8_000_000, "egressBurst": 80_000})),
    ] {
        let p = Pod::new(tag, Impl::Ours, "c1", 0);
        let veth = p.host_veth();
        let c = p.bw_conf(l.clone());
        p.bw("ADD", &c).expect_ok();
        let mut bare = c.clone();
        bare.as_object_mut().unwrap().remove("prevResult");
        p.bw("DEL", &bare).expect_ok();
        assert!(p.ifb_aliases().is_empty(), "{l}: IFB left");
        assert_unshaped(&p, &veth);
    }
}

/// A DEL that ended half-way before (the IFB deleted, the redirect to it left: every packet
/// the pod sends is dropped) is finished by the next DEL.
#[test]
fn del_removes_a_redirect_to_a_vanished_ifb() {
    if !require_root("bandwidth del_removes_a_redirect_to_a_vanished_ifb") {
        return;
    }
    let p = Pod::new("bwdv", Impl::Ours, "c1", 0);
    let veth = p.host_veth();
    let c = p.bw_conf(limits());
    p.bw("ADD", &c).expect_ok();
    p.node_cmd(&["ip", "link", "del", &ifb_of("c1")]);
    let f = p.node_cmd(&["tc", "filter", "show", "dev", &veth, "ingress"]);
    assert!(f.contains("mirred"), "the redirect is still there: {f}");
    p.bw("DEL", &c).expect_ok();
    assert_unshaped(&p, &veth);
}
