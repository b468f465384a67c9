//! dummy: IPAM is required; where the kernel has the dummy driver (probed in a throw-away
//! netns) ADD makes the link with its address, CHECK and DEL pass; where it has none, ADD
//! fails cleanly with the kernel's "Unknown device type" and releases its IP. Traffic and the
//! golden result are checked under the second kernel (vm/tests/dummy.sh); `make vm-test` also
//! runs this file there, so the driver branch runs.

use crate::common::links_rig::{kernel_supports, kind_of, rig, with_ipam};
use crate::common::rig::vanished_netns_path;
use crate::common::veth_rig::{conf, kernel_state, Impl};
use serde_json::json;

#[test]
fn ipam_required() {
    let rig = rig("dq", Impl::Ours);
    let p = rig.pod("dq");
    let e = rig.add(&conf("1.0.0", "dnet", "dummy", json!({})), "c1", &p, "eth0");
    assert_eq!(e.code(), 7);
    assert_eq!(e.msg(), "dummy interface requires an IPAM configuration");
}

#[test]
fn add_makes_the_link_or_fails_cleanly_without_the_driver() {
    let rig = rig("dk", Impl::Ours);
    let p = rig.pod("dk");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let c = with_ipam(&rig, conf("1.0.0", "dnet", "dummy", json!({})), "10.84.0.0/24");
    let e = rig.add(&c, "c1", &p, "eth0");
    if kernel_supports("dummy") {
        let r = e.expect_ok().json();
        assert_eq!(r["ips"][0]["address"], "10.84.0.2/24", "{r}");
        assert_eq!(kind_of(&p, "eth0"), "dummy");
        assert!(p.ip(&["addr", "show", "dev", "eth0"]).contains("10.84.0.2/24"));
        rig.check(&c, &r, "c1", &p, "eth0").expect_ok();
        rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
        rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
        assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
        assert!(rig.ipam_state().is_empty());
        return;
    }
    assert!(e.msg().contains("Unknown device type"), "{}", e.msg());
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    rig.del(&c, "c1", "", "eth0").expect_ok();
    rig.del(&c, "c1", &vanished_netns_path(), "eth0").expect_ok();
    // CHECK asks the IPAM first, which has no reservation.
    let e = rig.run("dummy", "CHECK", &c, "c1", p.path_str(), "eth0", "");
    assert!(!e.success());
    assert_eq!(e.msg(), "host-local: Failed to find address added by container c1");
}
