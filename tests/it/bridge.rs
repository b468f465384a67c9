//! bridge against the real kernel, in throw-away node and pod namespaces (needs root):
//! every key, traffic, rollback of failed ADDs, DEL's edge cases.

use crate::common::rig::TestNs;
use crate::common::veth_rig::{addr_of, conf, kernel_state, ping, Impl, Rig};
use serde_json::{json, Value};
use std::time::Instant;

fn br_conf(rig: &Rig, version: &str, extra: Value, ranges: &[Value]) -> Value {
    let mut c = conf(version, "brnet", "bridge", extra);
    if !ranges.is_empty() {
        c["ipam"] = rig.host_local(ranges);
    }
    if c.get("bridge").is_none() {
        c["bridge"] = json!("cnitest0");
    }
    c
}

#[test]
fn v4_two_pods_traffic_check_del() {
    let rig = Rig::new("b4", Impl::Ours);
    let (p1, p2) = (rig.pod("b4a"), rig.pod("b4b"));
    let c = br_conf(
        &rig,
        "1.0.0",
        json!({"isDefaultGateway": true}),
        &[json!("10.71.0.0/24")],
    );
    let t = Instant::now();
    let r1 = rig.add(&c, "c1", &p1, "eth0").expect_ok().json();
    let add_ms = t.elapsed().as_millis();
    let r2 = rig.add(&c, "c2", &p2, "eth0").expect_ok().json();
    assert_eq!(r1["ips"][0]["address"], "10.71.0.2/24");
    assert_eq!(r1["ips"][0]["gateway"], "10.71.0.1");
    assert_eq!(r1["ips"][0]["interface"], 2);
    assert_eq!(r1["interfaces"][0]["name"], "cnitest0");
    assert_eq!(r1["interfaces"][2]["sandbox"], p1.path_str());
    assert_eq!(r1["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.71.0.1"}]));
    // The bridge MAC is pinned: the second pod did not change it.
    assert_eq!(r1["interfaces"][0]["mac"], r2["interfaces"][0]["mac"]);
    let br = &rig.node.ip_json(&["link", "show", "cnitest0"])[0];
    assert_eq!(br["address"], r1["interfaces"][0]["mac"]);
    let hv = &rig
        .node
        .ip_json(&["link", "show", r1["interfaces"][1]["name"].as_str().unwrap()])[0];
    assert_eq!(hv["master"], "cnitest0");
    assert_eq!(hv["address"], r1["interfaces"][1]["mac"]);

    assert!(ping(&p1, "10.71.0.1"), "pod -> gateway");
    assert!(ping(&p1, &addr_of(&r2, 0)), "pod -> pod");
    assert!(ping(&rig.node, &addr_of(&r1, 0)), "node -> pod");
    rig.check(&c, &r1, "c1", &p1, "eth0").expect_ok();
    rig.check(&c, &r2, "c2", &p2, "eth0").expect_ok();

    let t = Instant::now();
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    eprintln!("bridge ADD {add_ms} ms, DEL {} ms", t.elapsed().as_millis());
    assert_eq!(
        p1.ip_json(&["-br", "link"]).as_array().unwrap().len(),
        1,
        "only lo left"
    );
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok(); // second DEL
    rig.del(&c, "c2", "", "eth0").expect_ok(); // empty netns: IPAM only
    rig.del(&c, "c9", "/run/netns/does-not-exist", "eth0").expect_ok(); // vanished netns
    assert!(rig.ipam_state().is_empty(), "all released: {:?}", rig.ipam_state());
    assert_eq!(
        rig.node
            .ip_json(&["link", "show", "cnitest0"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "bridge stays"
    );
    // CHECK after DEL fails: the interface is gone.
    let e = rig.check(&c, &r1, "c1", &p1, "eth0");
    assert!(!e.success());
    assert_eq!(e.msg(), "host-local: Failed to find address added by container c1");
}

#[test]
fn v6_and_dual_stack_are_usable_at_once() {
    let rig = Rig::new("b6", Impl::Ours);
    let (p1, p2) = (rig.pod("b6a"), rig.pod("b6b"));
    // 1.0.0: the reference host-local stops there.
    let c = br_conf(
        &rig,
        "1.0.0",
        json!({"isDefaultGateway": true}),
        &[json!("10.72.0.0/24"), json!("fd72::/64")],
    );
    let r1 = rig.add(&c, "c1", &p1, "eth0").expect_ok().json();
    let r2 = rig.add(&c, "c2", &p2, "eth0").expect_ok().json();
    assert_eq!(r1["ips"][1]["address"], "fd72::2/64");
    assert_eq!(r1["routes"][1], json!({"dst": "::/0", "gw": "fd72::1"}));
    // No sleep: the addresses are not tentative, the gateway answers now.
    assert!(ping(&p1, "fd72::1"), "pod -> v6 gateway");
    assert!(ping(&p1, &addr_of(&r2, 1)), "pod -> pod v6");
    assert!(ping(&p1, &addr_of(&r2, 0)), "pod -> pod v4");
    assert!(ping(&rig.node, &addr_of(&r1, 1)), "node -> pod v6");
    rig.check(&c, &r1, "c1", &p1, "eth0").expect_ok();
    for p in [&p1, &p2] {
        let tentative = p.ip(&["-6", "addr", "show", "tentative"]);
        assert!(
            tentative.trim().is_empty() || !tentative.contains("fd72"),
            "{tentative}"
        );
    }
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(&c, "c2", p2.path_str(), "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn enabledad_waits_for_dad() {
    let rig = Rig::new("bd", Impl::Ours);
    let p1 = rig.pod("bda");
    let c = br_conf(
        &rig,
        "1.0.0",
        json!({"isGateway": true, "enabledad": true}),
        &[json!("fd73::/64")],
    );
    rig.add(&c, "c1", &p1, "eth0").expect_ok();
    let addrs = p1.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains("fd73::2/64") && !addrs.contains("tentative"), "{addrs}");
    assert_eq!(
        p1.exec_ok(&["cat", "/proc/sys/net/ipv6/conf/eth0/accept_dad"]).trim(),
        "1"
    );
}

/// Hairpin: a frame that enters the bridge from a port must be able to leave by the same
/// port. A macvlan on the pod's eth0, in a third netns, is reached only that way.
#[test]
fn hairpin_lets_a_pod_reach_itself_through_the_bridge() {
    for hairpin in [true, false] {
        let rig = Rig::new("bh", Impl::Ours);
        let p1 = rig.pod("bha");
        let inner = TestNs::new("bhi");
        let c = br_conf(&rig, "1.0.0", json!({"hairpinMode": hairpin}), &[json!("10.74.0.0/24")]);
        let r = rig.add(&c, "c1", &p1, "eth0").expect_ok().json();
        let hv = r["interfaces"][1]["name"].as_str().unwrap().to_string();
        let d = &rig.node.ip_json(&["-d", "link", "show", &hv])[0];
        assert_eq!(d["linkinfo"]["info_slave_data"]["hairpin"], hairpin);
        p1.ip(&[
            "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode", "bridge",
        ]);
        p1.ip(&["link", "set", "mv0", "netns", inner.name()]);
        inner.ip(&["addr", "add", "10.74.0.200/24", "dev", "mv0"]);
        inner.ip(&["link", "set", "mv0", "up"]);
        assert_eq!(ping(&p1, "10.74.0.200"), hairpin, "hairpin {hairpin}");
    }
}

#[test]
fn port_isolation_promisc_mtu_mac_precedence() {
    let rig = Rig::new("bk", Impl::Ours);
    let (p1, p2, p3) = (rig.pod("bka"), rig.pod("bkb"), rig.pod("bkc"));
    let c = br_conf(
        &rig,
        "1.0.0",
        json!({"isGateway": true, "portIsolation": true, "promiscMode": true, "mtu": 1400,
               "args": {"cni": {"mac": "0a:00:00:00:00:02"}}}),
        &[json!("10.75.0.0/24")],
    );
    let r1 = rig.run(
        "bridge",
        "ADD",
        &c,
        "c1",
        p1.path_str(),
        "eth0",
        "IgnoreUnknown=1;MAC=0a:00:00:00:00:01",
    );
    let r1 = r1.expect_ok().json();
    assert_eq!(
        r1["interfaces"][2]["mac"], "0a:00:00:00:00:02",
        "args.cni.mac beats CNI_ARGS"
    );
    let mut c2 = c.clone();
    c2["runtimeConfig"] = json!({"mac": "0a:00:00:00:00:03"});
    let r2 = rig.add(&c2, "c2", &p2, "eth0").expect_ok().json();
    assert_eq!(
        r2["interfaces"][2]["mac"], "0a:00:00:00:00:03",
        "runtimeConfig.mac wins"
    );
    let mut c3 = c.clone();
    c3.as_object_mut().unwrap().remove("args");
    let r3 = rig.run(
        "bridge",
        "ADD",
        &c3,
        "c3",
        p3.path_str(),
        "eth0",
        "IgnoreUnknown=1;MAC=0a:00:00:00:00:04",
    );
    assert_eq!(r3.expect_ok().json()["interfaces"][2]["mac"], "0a:00:00:00:00:04");
    let br = &rig.node.ip_json(&["-d", "link", "show", "cnitest0"])[0];
    assert_eq!(br["mtu"], 1400);
    assert!(br["flags"].as_array().unwrap().contains(&json!("PROMISC")));
    assert_eq!(p1.ip_json(&["link", "show", "eth0"])[0]["mtu"], 1400);
    let hv = &rig
        .node
        .ip_json(&["-d", "link", "show", r1["interfaces"][1]["name"].as_str().unwrap()])[0];
    assert_eq!(hv["linkinfo"]["info_slave_data"]["isolated"], true);
    assert!(ping(&p1, "10.75.0.1"), "isolated pod -> gateway");
    assert!(!ping(&p1, &addr_of(&r2, 0)), "isolated pods cannot talk");
    rig.check(&c, &r1, "c1", &p1, "eth0").expect_ok();
    // CHECK compares promisc with the config.
    let mut nc = c.clone();
    nc["promiscMode"] = json!(false);
    assert!(rig.check(&nc, &r1, "c1", &p1, "eth0").msg().contains("Promisc Mode"));
    // Unknown CNI_ARGS without IgnoreUnknown are refused, as in the reference.
    assert!(!rig
        .run("bridge", "ADD", &c3, "c4", p3.path_str(), "eth1", "FOO=1")
        .success());
}

#[test]
fn l2_only_and_disable_container_interface() {
    let rig = Rig::new("bl", Impl::Ours);
    let (p1, p2) = (rig.pod("bla"), rig.pod("blb"));
    let c = br_conf(&rig, "1.0.0", json!({}), &[]);
    let r = rig.add(&c, "c1", &p1, "eth0").expect_ok().json();
    assert!(r.get("ips").is_none());
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert!(p1.ip_json(&["link", "show", "eth0"])[0]["flags"]
        .as_array()
        .unwrap()
        .contains(&json!("UP")));
    rig.check(&c, &r, "c1", &p1, "eth0").expect_ok();

    let d = br_conf(&rig, "1.0.0", json!({"disableContainerInterface": true}), &[]);
    let r = rig.add(&d, "c2", &p2, "eth0").expect_ok().json();
    assert!(!p2.ip_json(&["link", "show", "eth0"])[0]["flags"]
        .as_array()
        .unwrap()
        .contains(&json!("UP")));
    assert_eq!(r["interfaces"][2]["name"], "eth0");
    let with_ipam = br_conf(
        &rig,
        "1.0.0",
        json!({"disableContainerInterface": true}),
        &[json!("10.76.0.0/24")],
    );
    let e = rig.add(&with_ipam, "c3", &p2, "eth1");
    assert!(
        e.msg().contains("cannot use IPAM when DisableContainerInterface"),
        "{}",
        e.stdout
    );
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(&d, "c2", p2.path_str(), "eth0").expect_ok();
}

#[test]
fn gateway_address_conflicts_and_force() {
    let rig = Rig::new("bf", Impl::Ours);
    let (p1, p2) = (rig.pod("bfa"), rig.pod("bfb"));
    rig.node.ip(&["link", "add", "cnitest0", "type", "bridge"]);
    rig.node.ip(&["addr", "add", "10.79.9.1/24", "dev", "cnitest0"]);
    let c = br_conf(&rig, "1.0.0", json!({"isGateway": true}), &[json!("10.79.0.0/24")]);
    let before = (kernel_state(&rig.node), kernel_state(&p1), rig.ipam_state());
    let e = rig.add(&c, "c1", &p1, "eth0");
    assert!(
        e.msg()
            .contains("already has an IP address different from 10.79.0.1/24"),
        "{}",
        e.stdout
    );
    assert_eq!(
        before,
        (kernel_state(&rig.node), kernel_state(&p1), rig.ipam_state()),
        "rolled back"
    );
    let mut f = c.clone();
    f["forceAddress"] = json!(true);
    rig.add(&f, "c2", &p2, "eth0").expect_ok();
    let a = rig.node.ip(&["-4", "addr", "show", "cnitest0"]);
    assert!(a.contains("10.79.0.1/24") && !a.contains("10.79.9.1"), "{a}");
}

#[test]
fn invalid_keys_fail_and_change_nothing() {
    let rig = Rig::new("bu", Impl::Ours);
    let p = rig.pod("bua");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let c = br_conf(&rig, "1.0.0", json!({"hairpinMode": true, "promiscMode": true}), &[]);
    assert!(rig
        .add(&c, "c1", &p, "eth0")
        .msg()
        .contains("hairpin mode and promiscuous mode"));
    for (extra, msg) in [
        (json!({"vlan": 5000}), "invalid VLAN ID 5000"),
        (
            json!({"vlanTrunk": [{"minID": 9, "maxID": 2}]}),
            "minID is greater than maxID",
        ),
    ] {
        let c = br_conf(&rig, "1.0.0", extra, &[]);
        assert!(rig.add(&c, "c1", &p, "eth0").msg().contains(msg), "{msg}");
    }
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

/// DEL reads the keys' types only: an attachment whose config ADD would now refuse (an
/// edited file, an upgrade) is still removed whole, masquerade rules included.
#[test]
fn del_works_with_a_config_add_would_refuse() {
    let rig = Rig::new("bl", Impl::Ours);
    let p = rig.pod("bla");
    let nft_before = rig.node.exec_ok(&["nft", "list", "ruleset"]);
    let c = br_conf(&rig, "1.0.0", json!({"ipMasq": true}), &[json!("10.71.9.0/24")]);
    rig.add(&c, "c1", &p, "eth0").expect_ok();
    // Whichever layout the node's default picks (iptables here), nft lists its rules.
    let masq = rig.node.exec_ok(&["nft", "list", "ruleset"]);
    assert!(masq.contains("10.71.9.2"), "ADD made its masquerade rule: {masq}");
    let mut refused = c.clone();
    for (k, v) in [
        ("ipMasqBackend", json!("bogus")),
        ("vlan", json!(5000)),
        ("vlanTrunk", json!([{"minID": 9, "maxID": 2}])),
    ] {
        refused[k] = v;
    }
    assert!(rig.add(&refused, "c2", &p, "eth1").msg().contains("ipMasqBackend"));
    rig.del(&refused, "c1", p.path_str(), "eth0").expect_ok();
    assert_eq!(p.ip_json(&["-br", "link"]).as_array().unwrap().len(), 1, "only lo left");
    assert!(rig.ipam_state().is_empty(), "released: {:?}", rig.ipam_state());
    let masq = rig.node.exec_ok(&["nft", "list", "ruleset"]);
    assert!(!masq.contains("10.71.9.2"), "DEL removed the masquerade rule: {masq}");
    assert!(!nft_before.contains("10.71.9.2"));
    // A key of the wrong type is still a config error for DEL.
    let mut wrong = c.clone();
    wrong["ipMasq"] = json!("yes");
    assert_eq!(rig.del(&wrong, "c1", p.path_str(), "eth0").code(), 7);
}

/// Waits (a bounded poll, no assertion) until no IPv6 address of `ns` is tentative.
fn dad_done(ns: &TestNs) {
    for _ in 0..200 {
        if ns.ip(&["-6", "addr", "show", "tentative"]).trim().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every failure after the first change rolls everything back: node and pod netns and the
/// IPAM reservations are exactly as before.
#[test]
fn failed_adds_roll_back() {
    let rig = Rig::new("br", Impl::Ours);
    let (p1, p2) = (rig.pod("bra"), rig.pod("brb"));
    let one = json!({"subnet": "10.81.0.0/24", "rangeStart": "10.81.0.2", "rangeEnd": "10.81.0.2"});
    let c = br_conf(&rig, "1.0.0", json!({"isGateway": true}), std::slice::from_ref(&one));
    let snap = || {
        (
            kernel_state(&rig.node),
            kernel_state(&p1),
            kernel_state(&p2),
            rig.ipam_state(),
        )
    };

    // Fresh node: failures while the bridge is being created remove it again. The pod
    // already has an `eth0` for the name-clash case.
    let empty = snap();
    p2.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    let before = snap();
    let cases: Vec<(Value, &str)> = vec![
        (
            br_conf(&rig, "1.0.0", json!({"mtu": 70000}), std::slice::from_ref(&one)),
            "bad MTU",
        ),
        (
            br_conf(&rig, "1.0.0", json!({"vlan": 10}), std::slice::from_ref(&one)),
            "vlan (no VLAN filtering here)",
        ),
        (c.clone(), "name clash in the pod"),
    ];
    for (cc, what) in &cases {
        let o = rig.add(cc, "cx", &p2, "eth0");
        assert!(!o.success(), "{what} should fail");
        eprintln!("{what}: {}", o.msg());
        assert_eq!(before, snap(), "{what}");
    }
    p2.ip(&["link", "del", "eth0"]);
    assert_eq!(empty, snap());

    // A negative MTU is a config error (7) found before anything is made.
    let neg = br_conf(&rig, "1.0.0", json!({"mtu": -1}), std::slice::from_ref(&one));
    let o = rig.add(&neg, "cx", &p2, "eth0");
    assert!(!o.success(), "mtu -1 should fail");
    assert_eq!(o.json()["code"], 7, "{}", o.msg());
    assert!(o.msg().contains("invalid MTU -1"), "{}", o.msg());
    assert_eq!(empty, snap(), "mtu -1");

    // A not-a-bridge under the bridge name.
    rig.node
        .ip(&["link", "add", "notbr0", "type", "veth", "peer", "name", "notbr0p"]);
    let s = snap();
    let nb = br_conf(&rig, "1.0.0", json!({"bridge": "notbr0"}), std::slice::from_ref(&one));
    assert!(rig
        .add(&nb, "cx", &p2, "eth0")
        .msg()
        .contains("already exists but is not a bridge"));
    assert_eq!(s, snap());

    // With the bridge in place (one pod attached), failures after the veth and after IPAM.
    rig.add(&c, "c1", &p1, "eth0").expect_ok();
    // The kernel adds a link-local address's local route only when its DAD ends (~1 s after
    // the bridge gets carrier): a snapshot taken during DAD differs from a later one.
    dad_done(&rig.node);
    let s = snap();
    let e = rig.add(&c, "c2", &p2, "eth0");
    assert!(!e.success(), "range exhausted");
    assert_eq!(s, snap(), "IPAM failure");
    let vl = br_conf(
        &rig,
        "1.0.0",
        json!({"vlan": 10, "preserveDefaultVlan": false}),
        std::slice::from_ref(&one),
    );
    eprintln!("vlan on existing bridge: {}", rig.add(&vl, "c2", &p2, "eth0").msg());
    assert_eq!(s, snap(), "kernel refusal of the VLAN");
    let mtu = br_conf(&rig, "1.0.0", json!({"mtu": 70000}), &[json!("10.81.1.0/24")]);
    assert!(!rig.add(&mtu, "c2", &p2, "eth0").success());
    assert_eq!(s, snap(), "bad veth MTU");
}

#[test]
fn status_and_gc_go_to_ipam() {
    let rig = Rig::new("bs", Impl::Ours);
    let log = rig.data.join("calls");
    rig.add_script("fake-ipam", &format!("echo \"$CNI_COMMAND\" >> {}\n[ \"$CNI_COMMAND\" = STATUS ] && {{ echo '{{\"code\":50,\"msg\":\"pool exhausted\"}}'; exit 1; }}\nexit 0", log.display()));
    let c = conf("1.1.0", "brnet", "bridge", json!({"ipam": {"type": "fake-ipam"}}));
    let st = rig.run("bridge", "STATUS", &c, "", "", "", "");
    assert_eq!(st.code(), 50);
    rig.run("bridge", "GC", &c, "", "", "", "").expect_ok();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "STATUS\nGC\n");
    let l2 = conf("1.1.0", "brnet", "bridge", json!({}));
    rig.run("bridge", "STATUS", &l2, "", "", "", "").expect_ok();
}
