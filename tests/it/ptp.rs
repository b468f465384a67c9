//! ptp against the real kernel, in throw-away node and pod namespaces (needs root).

use crate::common::veth_rig::{addr_of, conf, kernel_state, ping, Impl, Rig};
use serde_json::{json, Value};

fn ptp_conf(rig: &Rig, extra: Value, ranges: &[Value]) -> Value {
    let mut c = conf("1.0.0", "ptpnet", "ptp", extra);
    c["ipam"] = rig.host_local(ranges);
    c
}

#[test]
fn dual_stack_routes_traffic_check_del() {
    let rig = Rig::new("p4", Impl::Ours);
    let (p1, p2) = (rig.pod("p4a"), rig.pod("p4b"));
    let mut c = ptp_conf(&rig, json!({"mtu": 1400}), &[json!("10.91.0.0/24"), json!("fd91::/64")]);
    c["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    let r1 = rig.add(&c, "c1", &p1, "eth0").expect_ok().json();
    let r2 = rig.add(&c, "c2", &p2, "eth0").expect_ok().json();
    assert_eq!(r1["interfaces"].as_array().unwrap().len(), 2);
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(r1["ips"][0]["interface"], 1);
    assert_eq!(p1.ip_json(&["link", "show", "eth0"])[0]["mtu"], 1400);
    // The route dance in the container.
    let routes = p1.ip(&["route"]);
    assert!(
        routes.contains("10.91.0.0/24 via 10.91.0.1 dev eth0 src 10.91.0.2"),
        "{routes}"
    );
    assert!(
        routes.contains("10.91.0.1 dev eth0 scope link src 10.91.0.2"),
        "{routes}"
    );
    assert!(!routes.contains("proto kernel"), "connected route removed: {routes}");
    // Host side.
    let hv = r1["interfaces"][0]["name"].as_str().unwrap();
    let host_routes = rig.node.ip(&["route"]);
    assert!(
        host_routes.contains(&format!("10.91.0.2 dev {hv} scope host")),
        "{host_routes}"
    );
    assert!(rig.node.ip(&["addr", "show", hv]).contains("inet 10.91.0.1/32"));

    for dst in [addr_of(&r2, 0), addr_of(&r2, 1), "10.91.0.1".into(), "fd91::1".into()] {
        assert!(ping(&p1, &dst), "pod1 -> {dst}");
    }
    assert!(ping(&rig.node, &addr_of(&r1, 0)), "node -> pod v4");
    assert!(ping(&rig.node, &addr_of(&r1, 1)), "node -> pod v6");
    rig.check(&c, &r1, "c1", &p1, "eth0").expect_ok();

    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(&c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(&c, "c2", "", "eth0").expect_ok();
    rig.del(&c, "c2", "/run/netns/does-not-exist", "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty(), "{:?}", rig.ipam_state());
    assert!(
        !rig.node.ip(&["route"]).contains("10.91.0.2"),
        "host route gone with the veth"
    );
}

#[test]
fn requires_ipam() {
    let rig = Rig::new("pu", Impl::Ours);
    let p = rig.pod("pua");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let no_ipam = conf("1.0.0", "ptpnet", "ptp", json!({}));
    assert_eq!(rig.add(&no_ipam, "c1", &p, "eth0").code(), 7);
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn failed_adds_roll_back() {
    let rig = Rig::new("pr", Impl::Ours);
    let (p1, p2) = (rig.pod("pra"), rig.pod("prb"));
    let one = json!({"subnet": "10.93.0.0/24", "rangeStart": "10.93.0.2", "rangeEnd": "10.93.0.2"});
    let c = ptp_conf(&rig, json!({}), std::slice::from_ref(&one));
    let snap = || {
        (
            kernel_state(&rig.node),
            kernel_state(&p1),
            kernel_state(&p2),
            rig.ipam_state(),
        )
    };
    let before = snap();
    let mtu = ptp_conf(&rig, json!({"mtu": 70000}), std::slice::from_ref(&one));
    eprintln!("bad MTU: {}", rig.add(&mtu, "cx", &p2, "eth0").msg());
    assert_eq!(before, snap(), "bad MTU after IPAM");
    let neg = ptp_conf(&rig, json!({"mtu": -1}), std::slice::from_ref(&one));
    let o = rig.add(&neg, "cx", &p2, "eth0");
    assert!(!o.success(), "mtu -1 should fail");
    assert_eq!(o.json()["code"], 7, "{}", o.msg());
    assert!(o.msg().contains("invalid MTU -1"), "{}", o.msg());
    assert_eq!(before, snap(), "mtu -1");
    p2.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    let before = snap();
    eprintln!("clash: {}", rig.add(&c, "cx", &p2, "eth0").msg());
    assert_eq!(before, snap(), "name clash after IPAM");
    p2.ip(&["link", "del", "eth0"]);
    rig.add(&c, "c1", &p1, "eth0").expect_ok();
    let before = snap();
    eprintln!("exhausted: {}", rig.add(&c, "c2", &p2, "eth0").msg());
    assert_eq!(before, snap(), "IPAM exhausted");
}

#[test]
fn status_and_gc_always_go_to_ipam() {
    let rig = Rig::new("ps", Impl::Ours);
    let log = rig.data.join("calls");
    rig.add_script(
        "fake-ipam",
        &format!("echo \"$CNI_COMMAND\" >> {}\nexit 0", log.display()),
    );
    let c = conf("1.1.0", "ptpnet", "ptp", json!({"ipam": {"type": "fake-ipam"}}));
    rig.run("ptp", "STATUS", &c, "", "", "", "").expect_ok();
    rig.run("ptp", "GC", &c, "", "", "", "").expect_ok();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "STATUS\nGC\n");
}
