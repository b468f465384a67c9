//! Shared by the tests of macvlan, ipvlan, vlan, host-device, dummy and tap: the veth rig
//! with these plugins on its CNI_PATH, and node-side fixtures (parent links) in the rig's
//! throw-away node netns.
#![allow(dead_code)]

use crate::common::rig::TestNs;
use crate::common::veth_rig::{ours, Impl, Rig, REFERENCE_DIR};
use serde_json::{json, Value};
use std::path::Path;

const LINK_PLUGINS: &[&str] = &["macvlan", "ipvlan", "vlan", "host-device", "dummy", "tap", "loopback"];

/// A veth rig whose CNI_PATH also holds the link plugins (ours, or the reference's where
/// Debian ships them).
pub fn rig(prefix: &str, imp: Impl) -> Rig {
    let r = Rig::new(prefix, imp);
    for p in LINK_PLUGINS {
        let target = match imp {
            Impl::Ours => ours(),
            Impl::Reference => Path::new(REFERENCE_DIR).join(p),
        };
        if target.exists() {
            std::os::unix::fs::symlink(target, r.bin.join(p)).unwrap();
        }
    }
    r
}

/// A veth pair `name` <-> `name`p in `ns`, both up: `name` serves as a parent with carrier.
/// IPv6 is off on both: the kernel adds their link-local addresses and routes asynchronously
/// (seconds later under qemu), which made before/after `kernel_state` snapshots differ by
/// themselves in the second kernel.
pub fn parent_veth(ns: &TestNs, name: &str) {
    let peer = format!("{name}p");
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
    for l in [name, peer.as_str()] {
        ns.exec_ok(&["sysctl", "-q", "-w", &format!("net.ipv6.conf.{l}.disable_ipv6=1")]);
    }
    ns.ip(&["link", "set", name, "up"]);
    ns.ip(&["link", "set", &peer, "up"]);
}

/// `ip -d -j link show dev IFNAME` in `ns`, or Null when absent.
pub fn details(ns: &TestNs, ifname: &str) -> Value {
    let out = crate::common::rig::run_cmd(&["ip", "-n", ns.name(), "-d", "-j", "link", "show", "dev", ifname]);
    if !out.status.success() {
        return Value::Null;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

/// Link names of a namespace, sorted.
pub fn link_names(ns: &TestNs) -> Vec<String> {
    let mut v = ns.link_names();
    v.sort();
    v
}

/// A config with a host-local IPAM over `subnet` in the rig's data dir.
pub fn with_ipam(rig: &Rig, mut c: Value, subnet: &str) -> Value {
    c["ipam"] = rig.host_local(&[json!(subnet)]);
    c
}

/// Whether this kernel can create links of `kind` ("dummy", "vlan", "ipvlan", "macvlan",
/// "vrf"): tried in a throw-away netns (on a veth parent for the kinds that need one), so a
/// test checks the real behaviour where the driver exists and the clean failure where it does
/// not. `EXPECT_KERNEL_DRIVERS` (set by vm-test, whose kernel has them all) lists kinds that
/// must be found: there a failed probe is a broken rig, and must not quietly send the test
/// down the no-driver branch.
pub fn kernel_supports(kind: &str) -> bool {
    let ns = TestNs::new("probe");
    parent_veth(&ns, "pp0");
    let argv: Vec<&str> = match kind {
        "dummy" => vec!["link", "add", "pd0", "type", "dummy"],
        "vlan" => vec!["link", "add", "link", "pp0", "name", "pp0.7", "type", "vlan", "id", "7"],
        "ipvlan" => vec![
            "link", "add", "link", "pp0", "name", "pi0", "type", "ipvlan", "mode", "l2",
        ],
        "macvlan" => vec![
            "link", "add", "link", "pp0", "name", "pm0", "type", "macvlan", "mode", "bridge",
        ],
        "vrf" => vec!["link", "add", "pv0", "type", "vrf", "table", "10"],
        // CONFIG_BRIDGE_VLAN_FILTERING (bridge's vlan/vlanTrunk keys).
        "bridge_vlan" => vec!["link", "add", "pb0", "type", "bridge", "vlan_filtering", "1"],
        other => panic!("no probe for link type {other:?}"),
    };
    let mut full = vec!["ip", "-n", ns.name()];
    full.extend(argv);
    let out = crate::common::rig::run_cmd(&full);
    let expected = std::env::var("EXPECT_KERNEL_DRIVERS").unwrap_or_default();
    if expected.split_whitespace().any(|k| k == kind) {
        assert!(
            out.status.success(),
            "EXPECT_KERNEL_DRIVERS has {kind:?}, but `{}` failed: {}",
            full.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status.success()
}

/// The `linkinfo.info_kind` of IFNAME in `ns` (`ip -d`), or "" when absent.
pub fn kind_of(ns: &TestNs, ifname: &str) -> String {
    details(ns, ifname)["linkinfo"]["info_kind"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
