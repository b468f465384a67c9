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

/// Run our host-device as a runtime would, but in a private mount namespace whose
/// /sys/bus/pci/devices is `fake`: a PCI device bound to vfio-pci (DPDK) exists only there.
fn run_with_fake_pci(rig: &Rig, fake: &std::path::Path, verb: &str, conf: &Value, pod: &TestNs) -> (bool, Value) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let plugin = rig.bin.join("host-device");
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$0" /sys/bus/pci/devices && exec nsenter --net="$1" -- "$2""#)
        .arg(fake)
        .arg(rig.node.path())
        .arg(&plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", verb)
        .env("CNI_CONTAINERID", "dpdk1")
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "net1")
        .env("CNI_PATH", rig.bin.as_str())
        .env("CNI_MULTI_STATE_DIR", crate::common::rig::state_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success() || json.get("code").is_some(),
        "{verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), json)
}

/// A PCI device bound to vfio-pci, named by pciBusID or runtimeConfig.deviceID: nothing is
/// moved (there is no netdev); the result names the requested interface in the container,
/// without a MAC, and the IPAM's addresses point at it (upstream since v1.7.0, bd8da200; Debian's
/// 1.1.1 listed no interface). CHECK needs only prevResult; DEL releases the address. The
/// device exists in a fake /sys/bus/pci/devices bound over the real one in a private mount
/// namespace (this machine has no device bound to vfio-pci).
#[test]
fn dpdk_device_result_check_del() {
    let rig = rig("hdk", Impl::Ours);
    let fake = crate::common::rig::TempDir::new("hdk-pci");
    let dev = fake.join("0000:af:00.1");
    let driver = fake.join("drivers/vfio-pci");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::create_dir_all(&driver).unwrap();
    std::os::unix::fs::symlink(&driver, dev.join("driver")).unwrap();
    for selector in [
        json!({"pciBusID": "0000:af:00.1"}),
        json!({"runtimeConfig": {"deviceID": "0000:af:00.1"}}),
        json!({"PCIBusID": "0000:af:00.1"}),
    ] {
        let p = rig.pod("hdk");
        let c = hd(&rig, selector.clone(), Some("10.89.0.0/24"));
        let (ok, r) = run_with_fake_pci(&rig, fake.path(), "ADD", &c, &p);
        assert!(ok, "{selector}: {r}");
        assert_eq!(
            r["interfaces"],
            json!([{"name": "net1", "sandbox": p.path_str()}]),
            "{selector}"
        );
        assert_eq!(r["ips"][0]["interface"], 0, "{selector}");
        assert!(
            r["ips"][0]["address"].as_str().unwrap().starts_with("10.89.0."),
            "{selector}: {r}"
        );
        assert_eq!(link_names(&p), vec!["lo".to_string()], "nothing moved in: {selector}");
        let mut k = c.clone();
        k["prevResult"] = r.clone();
        assert!(run_with_fake_pci(&rig, fake.path(), "CHECK", &k, &p).0, "{selector}");
        assert!(run_with_fake_pci(&rig, fake.path(), "DEL", &k, &p).0, "{selector}");
        assert!(rig.ipam_state().is_empty(), "{selector}");
        // Without an IPAM: the interface alone.
        let bare = hd(&rig, selector.clone(), None);
        let (ok, r) = run_with_fake_pci(&rig, fake.path(), "ADD", &bare, &p);
        assert!(ok, "{selector}: {r}");
        assert_eq!(
            r["interfaces"],
            json!([{"name": "net1", "sandbox": p.path_str()}]),
            "{selector}"
        );
        assert!(r.get("ips").is_none(), "{selector}: {r}");
    }
}
