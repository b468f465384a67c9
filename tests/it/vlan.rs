//! vlan: config validation; where the kernel has 802.1Q (probed in a throw-away netns) ADD
//! makes the tagged link on the master, CHECK and DEL pass; where it has none, a clean failure
//! of ADD (the kernel's "Unknown device type", nothing left behind). The DELs. Traffic is
//! tested under the second kernel (vm/tests/vlan.sh); `make vm-test` also runs this file there,
//! so the driver branch runs.

use crate::common::links_rig::{details, kernel_supports, kind_of, parent_veth, rig, with_ipam};
use crate::common::rig::vanished_netns_path;
use crate::common::veth_rig::{conf, kernel_state, Impl};
use serde_json::json;

#[test]
fn add_makes_the_link_or_fails_cleanly_without_the_driver() {
    let rig = rig("vl", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("vl");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let c = with_ipam(
        &rig,
        conf("1.0.0", "vlnet", "vlan", json!({"master": "up0", "vlanId": 42})),
        "10.81.0.0/24",
    );
    let e = rig.add(&c, "c1", &p, "eth0");
    if kernel_supports("vlan") {
        let r = e.expect_ok().json();
        assert_eq!(r["ips"][0]["address"], "10.81.0.2/24", "{r}");
        assert_eq!(kind_of(&p, "eth0"), "vlan");
        assert_eq!(details(&p, "eth0")["linkinfo"]["info_data"]["id"], 42);
        assert!(p.ip(&["addr", "show", "dev", "eth0"]).contains("10.81.0.2/24"));
        rig.check(&c, &r, "c1", &p, "eth0").expect_ok();
        rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
        assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
        assert!(rig.ipam_state().is_empty());
        return;
    }
    assert!(e.msg().contains("Unknown device type"), "{}", e.msg());
    assert!(e.msg().starts_with("failed to create vlan"), "{}", e.msg());
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn rejects_bad_configs_before_touching_anything() {
    let rig = rig("vx", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("vx");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    for (extra, code, msg) in [
        (json!({"vlanId": 1}), 7, "\"master\" field is required."),
        (
            json!({"master": "up0", "vlanId": -1}),
            7,
            "invalid VLAN ID -1 (must be between 0 and 4095 inclusive)",
        ),
        (json!({"master": "up0", "vlanId": 4095}), 7, "invalid VLAN ID 4095"),
        (
            json!({"master": "up0", "mtu": 1501}),
            7,
            "invalid MTU 1501, must be [0, master MTU(1500)]",
        ),
        (
            json!({"master": "up0", "mtu": -1}),
            7,
            "invalid MTU -1, must be [0, master MTU(1500)]",
        ),
        (json!({"master": "nope0"}), 999, "failed to lookup master \"nope0\""),
    ] {
        let c = with_ipam(&rig, conf("1.0.0", "vlnet", "vlan", extra.clone()), "10.82.0.0/24");
        let e = rig.add(&c, "c1", &p, "eth0");
        assert_eq!(e.code(), code, "{extra}: {}", e.msg());
        assert!(e.msg().contains(msg), "{extra}: {}", e.msg());
    }
    let no_ipam = conf("1.0.0", "vlnet", "vlan", json!({"master": "up0"}));
    assert_eq!(rig.add(&no_ipam, "c1", &p, "eth0").code(), 7);
    // linkInContainer looks the master up in the pod, where up0 does not exist.
    let inside = with_ipam(
        &rig,
        conf(
            "1.0.0",
            "vlnet",
            "vlan",
            json!({"master": "up0", "linkInContainer": true}),
        ),
        "10.82.0.0/24",
    );
    assert!(rig
        .add(&inside, "c1", &p, "eth0")
        .msg()
        .contains("failed to lookup master \"up0\""));
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn del_without_master_or_netns_releases_ipam() {
    let rig = rig("vd", Impl::Ours);
    let p = rig.pod("vd");
    let c = with_ipam(
        &rig,
        conf("1.0.0", "vlnet", "vlan", json!({"master": "gone0", "vlanId": 7})),
        "10.83.0.0/24",
    );
    // A reservation as an ADD would have made it (the kernel here cannot make the link).
    let mut hl = c.clone();
    hl["type"] = json!("host-local");
    rig.run("host-local", "ADD", &hl, "c1", p.path_str(), "eth0", "")
        .expect_ok();
    assert_eq!(rig.ipam_state().len(), 1);
    // The reference fails here: its DEL looks the master up first (plugins#953).
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty());
    rig.del(&c, "c1", "", "eth0").expect_ok();
    rig.del(&c, "c1", &vanished_netns_path(), "eth0").expect_ok();
    let e = rig.run("vlan", "CHECK", &c, "c1", p.path_str(), "eth0", "");
    assert!(!e.success());
    assert_eq!(e.msg(), "host-local: Failed to find address added by container c1");
}
