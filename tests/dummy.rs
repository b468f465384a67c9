//! dummy on this kernel, which has no dummy driver: IPAM is required, ADD fails cleanly with
//! the kernel's "Unknown device type" and releases its IP. Traffic and the golden result are
//! checked under the second kernel (vm/tests/dummy.sh).

mod common;
mod links_rig;

use common::rig::vanished_netns_path;
use common::veth_rig::{conf, kernel_state, Impl};
use links_rig::{rig, with_ipam};
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
fn add_fails_cleanly_without_kernel_support() {
    let rig = rig("dk", Impl::Ours);
    let p = rig.pod("dk");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let c = with_ipam(&rig, conf("1.0.0", "dnet", "dummy", json!({})), "10.84.0.0/24");
    let e = rig.add(&c, "c1", &p, "eth0");
    assert!(e.msg().contains("Unknown device type"), "{}", e.msg());
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    rig.del(&c, "c1", "", "eth0").expect_ok();
    rig.del(&c, "c1", &vanished_netns_path(), "eth0").expect_ok();
    // CHECK asks the IPAM first, which has no reservation.
    let e = rig.run("dummy", "CHECK", &c, "c1", p.path_str(), "eth0", "");
    assert!(!e.ok);
}
