//! ipvlan: config validation, the chained master; where the kernel has the ipvlan driver
//! (probed in a throw-away netns) ADD makes the link in each mode and DEL removes it; where it
//! has none, a clean failure of ADD (the kernel's "Unknown device type", nothing left behind).
//! Traffic is tested under the second kernel (vm/tests/ipvlan.sh); `make vm-test` also runs this
//! file there, so the driver branch runs.

use crate::common::links_rig::{details, kernel_supports, kind_of, parent_veth, rig, with_ipam};
use crate::common::rig::vanished_netns_path;
use crate::common::veth_rig::{conf, kernel_state, Impl};
use serde_json::json;

#[test]
fn add_makes_the_link_or_fails_cleanly_without_the_driver() {
    let rig = rig("il", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("il");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let driver = kernel_supports("ipvlan");
    for (i, mode) in ["l2", "l3", "l3s"].into_iter().enumerate() {
        let c = with_ipam(
            &rig,
            conf("1.0.0", "ipv", "ipvlan", json!({"master": "up0", "mode": mode})),
            "10.85.0.0/24",
        );
        let e = rig.add(&c, "c1", &p, "eth0");
        if driver {
            let r = e.expect_ok().json();
            // host-local goes on after the address it gave last, even once that is released.
            let want = format!("10.85.0.{}/24", 2 + i);
            assert_eq!(r["ips"][0]["address"], want.as_str(), "{mode}: {r}");
            assert_eq!(kind_of(&p, "eth0"), "ipvlan", "{mode}");
            assert_eq!(details(&p, "eth0")["linkinfo"]["info_data"]["mode"], mode);
            rig.check(&c, &r, "c1", &p, "eth0").expect_ok();
        } else {
            assert!(e.msg().contains("Unknown device type"), "{}", e.msg());
            assert!(e.msg().starts_with("failed to create ipvlan"), "{}", e.msg());
        }
        rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
        assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)), "{mode}");
    }
    // Chained: the master is prevResult's single interface, its IPs are reused (no IPAM).
    let mut chained = conf("1.0.0", "ipv", "ipvlan", json!({}));
    chained["prevResult"] = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "up0"}],
        "ips": [{"address": "10.85.1.5/24", "interface": 0}]});
    let e = rig.add(&chained, "c1", &p, "eth0");
    if driver {
        e.expect_ok();
        assert_eq!(kind_of(&p, "eth0"), "ipvlan");
        assert!(p.ip(&["addr", "show", "dev", "eth0"]).contains("10.85.1.5/24"));
        rig.del(&chained, "c1", p.path_str(), "eth0").expect_ok();
    } else {
        assert!(e.msg().contains("Unknown device type"), "{}", e.msg());
    }
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn rejects_bad_configs() {
    let rig = rig("ix", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("ix");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let bad = |extra: serde_json::Value, ipam: bool, msg: &str| {
        let mut c = conf("1.0.0", "ipv", "ipvlan", extra.clone());
        if ipam {
            c = with_ipam(&rig, c, "10.86.0.0/24");
        }
        let e = rig.add(&c, "c1", &p, "eth0");
        assert!(e.msg().contains(msg), "{extra}: {}", e.msg());
    };
    bad(
        json!({"master": "up0", "mode": "l4"}),
        true,
        "unknown ipvlan mode: \"l4\"",
    );
    bad(
        json!({"master": "up0", "mtu": 1501}),
        true,
        "invalid MTU 1501, must be [0, master MTU(1500)]",
    );
    bad(json!({"master": "up0"}), false, "ipam must be specified");
    bad(
        json!({"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "a"}, {"name": "b"}]}}),
        true,
        "chained master failure. PrevResult lacks a single named interface",
    );
    bad(
        json!({"prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "up0"}]}}),
        false,
        "ipam must be specified: prevResult has no IPs to reuse",
    );
    bad(json!({}), true, "no default route interface found");
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    // DEL needs no master, nor a default route.
    let c = with_ipam(&rig, conf("1.0.0", "ipv", "ipvlan", json!({})), "10.86.0.0/24");
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    rig.del(&c, "c1", &vanished_netns_path(), "eth0").expect_ok();
}
