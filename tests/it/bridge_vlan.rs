//! bridge's `vlan`, `vlanTrunk` and `preserveDefaultVlan` as upstream v1.9 sets a port up
//! (plugins/main/bridge/bridge.go at v1.9.1, setupVeth lines 457-485): without
//! preserveDefaultVlan (false since v1.8.0) the port's VLANs are removed (removeDefaultVlan);
//! `vlan` is added as PVID and egress untagged; each trunk VLAN tagged, in ascending order;
//! a trunk without `vlan` then gets VLAN 1 as PVID untagged, its native VLAN. A VLAN both
//! `vlan` and in the trunk ends up tagged only: the kernel updates an existing VLAN's flags
//! (the same netlink calls, in the same order, as upstream's). The bridge has vlan_filtering
//! on as soon as `vlan` is set or `vlanTrunk` is given (`VlanTrunk != nil`, an empty list too).
//!
//! This machine's kernel has no bridge VLAN filtering: here the test checks the clean failure
//! (code 999 naming the bridge, nothing left); under `make vm-test` (a Debian kernel in qemu,
//! vm/README.md) it checks the ports with `bridge vlan show` and untagged and tagged traffic.

use crate::common::links_rig::kernel_supports;
use crate::common::rig::{in_ci, is_root, tool, TestNs};
use crate::common::veth_rig::{conf, Impl, Rig};
use serde_json::{json, Value};

/// A port's VLANs as sorted words `VID[P][U]` (P = PVID, U = egress untagged), ranges expanded:
/// the notation of vm/tests/lib.sh's port_vlans.
fn port_vlans(node: &TestNs, dev: &str) -> String {
    let bridge = tool("bridge");
    let out = node.exec_ok(&[bridge.to_str().unwrap(), "-j", "vlan", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("bridge -j vlan show: {e}: {out}"));
    let mut words = Vec::new();
    for port in v.as_array().into_iter().flatten() {
        for vl in port["vlans"].as_array().into_iter().flatten() {
            let lo = vl["vlan"].as_u64().unwrap();
            let hi = vl["vlanEnd"].as_u64().unwrap_or(lo);
            let flags: Vec<&str> = vl["flags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let p = if flags.contains(&"PVID") { "P" } else { "" };
            let u = if flags.contains(&"Egress Untagged") { "U" } else { "" };
            for vid in lo..=hi {
                words.push((vid, format!("{vid}{p}{u}")));
            }
        }
    }
    words.sort();
    words.into_iter().map(|(_, w)| w).collect::<Vec<_>>().join(" ")
}

fn bridge_conf(rig: &Rig, subnet: &str, keys: Value) -> Value {
    let mut c = conf("1.0.0", "brv", "bridge", json!({"bridge": "brv"}));
    c.as_object_mut().unwrap().extend(keys.as_object().unwrap().clone());
    c["ipam"] = rig.host_local(&[json!(subnet)]);
    c
}

fn supported() -> bool {
    if !is_root() {
        assert!(!in_ci(), "bridge_vlan needs root");
        return false;
    }
    kernel_supports("bridge_vlan")
}

const TRUNK: &str = r#"[{"id": 101}, {"minID": 200, "maxID": 202}]"#;

/// Each combination of the keys on one plugin-made bridge: the port VLANs upstream's
/// setupVeth gives (see the module comment), then DEL of every pod.
#[test]
fn port_vlans_as_upstream_v1_9() {
    if !supported() {
        return no_filtering_fails_cleanly();
    }
    let trunk: Value = serde_json::from_str(TRUNK).unwrap();
    let cases = [
        (json!({"vlan": 100}), "100PU"),
        (json!({"vlan": 100, "preserveDefaultVlan": false}), "100PU"),
        (json!({"vlan": 100, "preserveDefaultVlan": true}), "1U 100PU"),
        (json!({"vlanTrunk": trunk}), "1PU 101 200 201 202"),
        (
            json!({"vlanTrunk": trunk, "preserveDefaultVlan": true}),
            "1PU 101 200 201 202",
        ),
        (json!({"vlan": 5, "vlanTrunk": trunk}), "5PU 101 200 201 202"),
        (json!({"vlan": 101, "vlanTrunk": trunk}), "101 200 201 202"),
        (json!({"vlanTrunk": []}), "1PU"),
        // The keys in any case, as Go's decoder reads them.
        (json!({"VLAN": 7, "PreserveDefaultVLAN": true}), "1U 7PU"),
    ];
    let rig = Rig::new("bvl", Impl::Ours);
    let mut pods = Vec::new();
    for (i, (keys, want)) in cases.iter().enumerate() {
        let pod = rig.pod(&format!("bv{i}"));
        let c = bridge_conf(&rig, "10.250.150.0/24", keys.clone());
        let cid = format!("c{i}");
        let r = rig.add(&c, &cid, &pod, "eth0").expect_ok().json();
        let port = r["interfaces"][1]["name"].as_str().unwrap().to_string();
        assert_eq!(port_vlans(&rig.node, &port), *want, "{keys}");
        let d = rig.node.ip(&["-d", "link", "show", "brv"]);
        assert!(d.contains("vlan_filtering 1"), "{d}");
        pods.push((pod, c, cid, port));
    }
    for (pod, c, cid, port) in &pods {
        assert!(rig.del(c, cid, pod.path_str(), "eth0").success());
        assert!(rig.node.link(port).is_none(), "{port} left behind");
    }
}

/// What the defaults are for: a trunk port without `vlan` carries untagged frames on VLAN 1
/// (before v1.8.0's native VLAN, and with preserveDefaultVlan false, they were dropped), a
/// trunk's native `vlan` talks untagged to an access port of that VLAN, and tagged frames of a
/// trunk VLAN pass between trunks.
#[test]
fn untagged_and_tagged_traffic_over_trunks() {
    if !supported() {
        return no_filtering_fails_cleanly();
    }
    let trunk: Value = serde_json::from_str(TRUNK).unwrap();
    let rig = Rig::new("bvt", Impl::Ours);
    let t1 = rig.pod("bvt1");
    let t2 = rig.pod("bvt2");
    let n1 = rig.pod("bvn1");
    let a5 = rig.pod("bva5");
    let add = |pod: &TestNs, cid: &str, subnet: &str, keys: Value| {
        let r = rig
            .add(&bridge_conf(&rig, subnet, keys), cid, pod, "eth0")
            .expect_ok()
            .json();
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    add(&t1, "t1", "10.250.151.0/24", json!({"vlanTrunk": trunk}));
    let ip2 = add(&t2, "t2", "10.250.151.0/24", json!({"vlanTrunk": trunk}));
    add(&n1, "n1", "10.250.152.0/24", json!({"vlan": 5, "vlanTrunk": trunk}));
    let ipa = add(&a5, "a5", "10.250.152.0/24", json!({"vlan": 5}));
    let ping = |from: &TestNs, to: &str| from.exec(&["ping", "-c", "1", "-W", "2", to]).status.success();
    assert!(ping(&t1, &ip2), "untagged between two trunks (native VLAN 1)");
    assert!(
        ping(&n1, &ipa),
        "untagged from a trunk with native VLAN 5 to an access port of VLAN 5"
    );
    assert!(!ping(&t1, &ipa), "VLAN 1 does not reach VLAN 5");
    // Tagged VLAN 201 between the two trunks.
    for (pod, addr) in [(&t1, "10.250.153.1/24"), (&t2, "10.250.153.2/24")] {
        pod.ip(&[
            "link", "add", "link", "eth0", "name", "eth0.201", "type", "vlan", "id", "201",
        ]);
        pod.ip(&["addr", "add", addr, "dev", "eth0.201"]);
        pod.ip(&["link", "set", "eth0.201", "up"]);
    }
    assert!(ping(&t1, "10.250.153.2"), "tagged VLAN 201 over the trunks");
}

/// Here (no CONFIG_BRIDGE_VLAN_FILTERING): the plugin-made bridge cannot have vlan_filtering;
/// ADD fails naming the bridge and leaves no link and no reservation.
fn no_filtering_fails_cleanly() {
    if !is_root() {
        return;
    }
    let rig = Rig::new("bvn", Impl::Ours);
    let pod = rig.pod("bvnp");
    for keys in [json!({"vlan": 100}), json!({"vlan": 5, "vlanTrunk": [{"id": 7}]})] {
        let c = bridge_conf(&rig, "10.250.154.0/24", keys.clone());
        let out = rig.add(&c, "c1", &pod, "eth0");
        assert!(!out.success(), "{keys}: {out}");
        assert!(out.msg().contains("failed to create bridge \"brv\""), "{keys}: {out}");
        assert_eq!(rig.node.link_names(), vec!["lo".to_string()], "{keys}");
        assert!(rig.ipam_state().is_empty(), "{keys}");
    }
}
