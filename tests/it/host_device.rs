//! host-device against the real kernel: the "device" is one end of a veth pair in a
//! throw-away node netns (its peer stays there, so traffic can be tested); needs root.

use crate::common::links_rig::{details, link_names, parent_veth, rig};
use crate::common::rig::{require_reference, vanished_netns_path, TestNs};
use crate::common::veth_rig::{addr_of, conf, kernel_state, normalise_result, normalised_l3, ping, Impl, Rig};
use serde_json::{json, Value};

fn hd(rig: &Rig, extra: Value, subnet: Option<&str>) -> Value {
    let mut c = conf("1.0.0", "hdnet", "host-device", extra);
    if let Some(s) = subnet {
        c["ipam"] = rig.host_local(&[json!(s)]);
    }
    c
}

/// The node side: `hd0` (the device, up) and its peer `hd0p` carrying 10.87.0.1/24.
fn node_device(rig: &Rig) {
    parent_veth(&rig.node, "hd0");
    rig.node.ip(&["addr", "add", "10.87.0.1/24", "dev", "hd0p"]);
}

fn assert_home(node: &TestNs, up: bool) {
    let l = details(node, "hd0");
    assert!(!l.is_null(), "hd0 is back on the node");
    assert!(l.get("ifalias").is_none() || l["ifalias"] == "", "alias cleared: {l}");
    assert_eq!(l["flags"].as_array().unwrap().contains(&json!("UP")), up, "{l}");
}

#[test]
fn add_moves_with_alias_traffic_check_del_brings_it_back() {
    let rig = rig("hd", Impl::Ours);
    node_device(&rig);
    let mac = rig.node.link("hd0").unwrap()["address"].clone();
    let p = rig.pod("hd");
    let c = hd(&rig, json!({"device": "hd0"}), Some("10.87.0.0/24"));
    let r = rig.add(&c, "c1", &p, "net1").expect_ok().json();
    assert_eq!(
        r["interfaces"],
        json!([{"name": "net1", "mac": mac, "sandbox": p.path_str()}])
    );
    assert_eq!(r["ips"][0]["interface"], 0);
    assert!(rig.node.link("hd0").is_none());
    let l = details(&p, "net1");
    assert_eq!(l["ifalias"], "hd0", "{l}");
    assert!(l["flags"].as_array().unwrap().contains(&json!("UP")));
    assert!(ping(&p, "10.87.0.1"), "pod -> node over the moved device");
    assert!(ping(&rig.node, &addr_of(&r, 0)), "node -> pod");
    rig.check(&c, &r, "c1", &p, "net1").expect_ok();

    rig.del(&c, "c1", p.path_str(), "net1").expect_ok();
    assert!(p.link("net1").is_none());
    assert_home(&rig.node, false);
    rig.del(&c, "c1", p.path_str(), "net1").expect_ok();
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn del_with_empty_or_vanished_netns_releases_ipam() {
    let rig = rig("he", Impl::Ours);
    node_device(&rig);
    let p = rig.pod("he");
    let c = hd(&rig, json!({"device": "hd0"}), Some("10.87.0.0/24"));
    rig.add(&c, "c1", &p, "net1").expect_ok();
    assert_eq!(rig.ipam_state().len(), 1);
    // The reference returns at once here and leaks the IP (plugins#1196).
    rig.del(&c, "c1", "", "net1").expect_ok();
    assert!(rig.ipam_state().is_empty());
    assert!(p.link("net1").is_some(), "no netns given: the device stays");
    rig.del(&c, "c1", &vanished_netns_path(), "net1").expect_ok();
}

#[test]
fn renamed_inside_the_container_is_still_found() {
    let rig = rig("hr", Impl::Ours);
    node_device(&rig);
    let p = rig.pod("hr");
    // By the alias (device selector) ...
    let c = hd(&rig, json!({"device": "hd0"}), None);
    rig.add(&c, "c1", &p, "net1").expect_ok();
    p.ip(&["link", "set", "net1", "down"]);
    p.ip(&["link", "set", "net1", "name", "renamed"]);
    rig.del(&c, "c1", p.path_str(), "net1").expect_ok();
    assert!(p.link("renamed").is_none());
    assert_home(&rig.node, false);
    // ... and by the MAC (hwaddr selector), with an alias that no longer says much.
    let mac = rig.node.link("hd0").unwrap()["address"].as_str().unwrap().to_string();
    let c = hd(&rig, json!({"hwaddr": mac}), None);
    rig.add(&c, "c2", &p, "net1").expect_ok();
    p.ip(&["link", "set", "net1", "down"]);
    p.ip(&["link", "set", "net1", "name", "other"]);
    rig.del(&c, "c2", p.path_str(), "net1").expect_ok();
    assert_home(&rig.node, false);
}

#[test]
fn del_fails_and_keeps_state_when_the_node_name_is_taken() {
    let rig = rig("ht", Impl::Ours);
    node_device(&rig);
    let p = rig.pod("ht");
    let c = hd(&rig, json!({"device": "hd0"}), None);
    let r = rig.add(&c, "c1", &p, "net1").expect_ok().json();
    rig.node
        .ip(&["link", "add", "hd0", "type", "veth", "peer", "name", "imposter"]);
    let before = (kernel_state(&p), details(&p, "net1"));
    let e = rig.del(&c, "c1", p.path_str(), "net1");
    assert!(!e.success());
    assert!(e.msg().contains("failed to move \"hd0\" to host netns"), "{}", e.msg());
    assert_eq!(before.0, kernel_state(&p));
    let after = details(&p, "net1");
    assert_eq!(
        (&after["ifalias"], &after["flags"]),
        (&before.1["ifalias"], &before.1["flags"])
    );
    rig.check(&c, &r, "c1", &p, "net1").expect_ok();
    // Once the name is free again, DEL works.
    rig.node.ip(&["link", "del", "hd0"]);
    rig.del(&c, "c1", p.path_str(), "net1").expect_ok();
    assert_home(&rig.node, false);
}

#[test]
fn rollback_puts_the_device_back_up() {
    let rig = rig("hb", Impl::Ours);
    node_device(&rig);
    let p = rig.pod("hb");
    let node_before = link_names(&rig.node);

    // CNI_IFNAME taken in the container: the last move fails.
    p.ip(&["link", "add", "net1", "type", "veth", "peer", "name", "net1p"]);
    let c = hd(&rig, json!({"device": "hd0"}), Some("10.87.0.0/24"));
    let e = rig.add(&c, "c1", &p, "net1");
    assert!(e.msg().contains("failed to move link"), "{}", e.msg());
    assert_eq!(link_names(&rig.node), node_before);
    assert_home(&rig.node, true);
    p.ip(&["link", "del", "net1"]);

    // IPAM fails after the move: back on the node, up, nothing reserved.
    let mut bad = c.clone();
    bad["ipam"]["ranges"] = json!([[{"subnet": "10.87.0.0/24", "rangeStart": "10.87.1.2"}]]);
    let e = rig.add(&bad, "c1", &p, "net1");
    assert!(!e.success());
    assert_home(&rig.node, true);

    // Configuring fails after IPAM: device back, IP released.
    let mut route = c.clone();
    route["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "10.1.1.1"}]);
    let e = rig.add(&route, "c1", &p, "net1");
    assert!(e.msg().contains("failed to add route"), "{}", e.msg());
    assert_home(&rig.node, true);
    assert!(rig.ipam_state().is_empty());
    assert!(p.link("net1").is_none());

    // Selection errors.
    for (extra, msg) in [
        (json!({"device": "nope0"}), "failed to find host device"),
        (json!({"hwaddr": "02:00:00:00:00:99"}), "failed to find host device"),
        (
            json!({"kernelpath": "devices/x"}),
            "must be absolute and begin with /sys/devices/",
        ),
        (
            json!({}),
            "specify either \"device\", \"hwaddr\", \"kernelpath\" or \"pciBusID\"",
        ),
    ] {
        let e = rig.add(&hd(&rig, extra.clone(), None), "c1", &p, "net1");
        assert!(e.msg().contains(msg), "{extra}: {}", e.msg());
    }
    assert_eq!(link_names(&rig.node), node_before);
}

fn reference_run(imp: Impl, version: &str, extra: &Value, ipam: bool) -> (Value, Value, Value, Value) {
    let r = rig("hdref", imp);
    node_device(&r);
    let p = r.pod("hdref");
    let mut c = conf(version, "hdnet", "host-device", extra.clone());
    if ipam {
        c["ipam"] = r.host_local(&[json!("10.87.0.0/24")]);
        c["ipam"]["routes"] = json!([{"dst": "10.200.0.0/16", "gw": "10.87.0.1"}]);
    }
    let out = r.add(&c, "c1", &p, "net1").expect_ok().json();
    let l = details(&p, "net1");
    let link = json!([l["ifname"], l["ifalias"], l["flags"], l["mtu"]]);
    let l3 = normalised_l3(&p);
    if version != "0.3.1" {
        r.check(&c, &out, "c1", &p, "net1").expect_ok();
    }
    r.del(&c, "c1", p.path_str(), "net1").expect_ok();
    let h = details(&r.node, "hd0");
    // Debian's 1.1.1 leaves the alias on the device; the newer reference and we clear it.
    let home = json!([h["ifname"], h["flags"], h["mtu"]]);
    if imp == Impl::Ours {
        assert_home(&r.node, false);
    }
    assert!(r.ipam_state().is_empty());
    (normalise_result(&out), link, l3, home)
}

#[test]
fn same_as_the_reference() {
    if !require_reference("host-device same_as_the_reference", "host-device") {
        return;
    }
    for (v, extra, ipam) in [
        ("1.0.0", json!({"device": "hd0"}), true),
        (
            "0.4.0",
            json!({"device": "hd0", "dns": {"nameservers": ["10.1.1.1"]}}),
            true,
        ),
        ("0.3.1", json!({"device": "hd0"}), false),
    ] {
        let ours = reference_run(Impl::Ours, v, &extra, ipam);
        let theirs = reference_run(Impl::Reference, v, &extra, ipam);
        assert_eq!(ours, theirs, "{v} {extra}");
    }
}
