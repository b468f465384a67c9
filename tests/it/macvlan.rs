//! macvlan against the real kernel: parents (a veth end or a bridge) live in a throw-away node
//! netns, pods in their own netns (needs root).

use crate::common::links_rig::{details, link_names, parent_veth, rig, with_ipam};
use crate::common::rig::vanished_netns_path;
use crate::common::veth_rig::{addr_of, conf, kernel_state, ping, Impl, Rig};
use serde_json::{json, Value};

fn mv(rig: &Rig, extra: Value, subnet: &str) -> Value {
    with_ipam(rig, conf("1.0.0", "mvnet", "macvlan", extra), subnet)
}

fn two_pods_ping(rig: &Rig, c: &Value) {
    let (p1, p2) = (rig.pod("m1"), rig.pod("m2"));
    let r1 = rig.add(c, "c1", &p1, "eth0").expect_ok().json();
    let r2 = rig.add(c, "c2", &p2, "eth0").expect_ok().json();
    assert_eq!(r1["interfaces"].as_array().unwrap().len(), 1, "{r1}");
    assert_eq!(r1["interfaces"][0]["name"], "eth0");
    assert_eq!(r1["interfaces"][0]["sandbox"], p1.path_str());
    assert_eq!(r1["ips"][0]["interface"], 0);
    let l = details(&p1, "eth0");
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan");
    assert_eq!(l["address"], r1["interfaces"][0]["mac"]);
    assert!(ping(&p1, &addr_of(&r2, 0)), "pod1 -> pod2");
    assert!(ping(&p2, &addr_of(&r1, 0)), "pod2 -> pod1");
    rig.check(c, &r1, "c1", &p1, "eth0").expect_ok();
    rig.del(c, "c1", p1.path_str(), "eth0").expect_ok();
    rig.del(c, "c1", p1.path_str(), "eth0").expect_ok();
    assert!(p1.link("eth0").is_none());
    rig.del(c, "c2", "", "eth0").expect_ok();
    rig.del(c, "c2", &vanished_netns_path(), "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty(), "{:?}", rig.ipam_state());
    assert!(
        p2.link("eth0").is_some(),
        "DEL with no netns leaves the link to die with it"
    );
}

#[test]
fn bridge_mode_on_veth_parent_traffic_check_del() {
    let rig = rig("mv", Impl::Ours);
    parent_veth(&rig.node, "up0");
    two_pods_ping(&rig, &mv(&rig, json!({"master": "up0"}), "10.61.0.0/24"));
}

#[test]
fn bridge_mode_on_bridge_parent() {
    let rig = rig("mb", Impl::Ours);
    rig.node.ip(&["link", "add", "br0", "type", "bridge"]);
    rig.node.ip(&["link", "set", "br0", "up"]);
    two_pods_ping(
        &rig,
        &mv(&rig, json!({"master": "br0", "mode": "bridge"}), "10.62.0.0/24"),
    );
}

#[test]
fn default_master_is_the_default_route_interface() {
    let rig = rig("md", Impl::Ours);
    parent_veth(&rig.node, "up0");
    parent_veth(&rig.node, "up1");
    rig.node.ip(&["addr", "add", "192.168.77.1/24", "dev", "up1"]);
    rig.node
        .ip(&["route", "add", "default", "via", "192.168.77.254", "dev", "up1"]);
    let c = mv(&rig, json!({}), "10.63.0.0/24");
    let p = rig.pod("md");
    rig.add(&c, "c1", &p, "eth0").expect_ok();
    let l = details(&p, "eth0");
    let parent = l["link_index"].as_u64().unwrap();
    let up1 = rig.node.link("up1").unwrap()["ifindex"].as_u64().unwrap();
    assert_eq!(parent, up1, "{l}");
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();

    // Without a default route there is no master.
    rig.node.ip(&["route", "del", "default"]);
    let e = rig.add(&c, "c2", &p, "eth0");
    assert!(e.msg().contains("no default route interface found"), "{}", e.msg());
}

#[test]
fn keys_mode_mtu_mac_bcqueuelen() {
    let rig = rig("mk", Impl::Ours);
    parent_veth(&rig.node, "up0");
    rig.node.ip(&["link", "set", "up0", "mtu", "1400"]);
    let p = rig.pod("mk");
    for (mode, extra) in [
        ("private", json!({})),
        ("vepa", json!({"mtu": 1300})),
        ("bridge", json!({"bcqueuelen": 123, "mac": "02:11:22:33:44:55"})),
        ("passthru", json!({})),
    ] {
        let mut c = mv(&rig, json!({"master": "up0", "mode": mode}), "10.64.0.0/24");
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let r = rig.add(&c, "c1", &p, "eth0").expect_ok().json();
        let l = details(&p, "eth0");
        assert_eq!(l["linkinfo"]["info_data"]["mode"], mode, "{l}");
        assert_eq!(l["mtu"], c.get("mtu").cloned().unwrap_or(json!(1400)));
        if let Some(m) = c.get("mac") {
            assert_eq!(&l["address"], m);
            assert_eq!(&r["interfaces"][0]["mac"], m);
        }
        if c.get("bcqueuelen").is_some() {
            assert_eq!(l["linkinfo"]["info_data"]["bcqueuelen"], 123, "{l}");
        }
        rig.check(&c, &r, "c1", &p, "eth0").expect_ok();
        // CHECK notices another mode.
        let mut other = c.clone();
        other["mode"] = json!(if mode == "vepa" { "private" } else { "vepa" });
        let e = rig.check(&other, &r, "c1", &p, "eth0");
        assert!(e.msg().contains("does not match expected value"), "{}", e.msg());
        rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    }

    // MAC: CNI_ARGS beats the key, runtimeConfig beats both.
    let mut c = mv(
        &rig,
        json!({"master": "up0", "mac": "02:00:00:00:00:01"}),
        "10.64.0.0/24",
    );
    let run = |c: &Value, args: &str| {
        let o = rig
            .run("macvlan", "ADD", c, "c9", p.path_str(), "eth0", args)
            .expect_ok();
        let mac = o.json()["interfaces"][0]["mac"].clone();
        rig.del(c, "c9", p.path_str(), "eth0").expect_ok();
        mac
    };
    assert_eq!(run(&c, ""), "02:00:00:00:00:01");
    assert_eq!(run(&c, "IgnoreUnknown=1;MAC=02:00:00:00:00:02"), "02:00:00:00:00:02");
    c["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
    // (host-local rejects the MAC key unless IgnoreUnknown says otherwise, as the reference's.)
    assert_eq!(run(&c, "IgnoreUnknown=1;MAC=02:00:00:00:00:02"), "02:00:00:00:00:03");
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn l2_only_without_ipam() {
    let rig = rig("ml", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let c = conf("0.4.0", "mvnet", "macvlan", json!({"master": "up0"}));
    let p = rig.pod("ml");
    let r = rig.add(&c, "c1", &p, "net1").expect_ok().json();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert!(r.get("ips").is_none(), "{r}");
    let l = details(&p, "net1");
    assert!(l["flags"].as_array().unwrap().contains(&json!("UP")), "{l}");
    let addrs = p.ip_json(&["addr", "show", "net1"]);
    let v4 = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .count();
    assert_eq!(v4, 0, "{addrs}");
    rig.check(&c, &r, "c1", &p, "net1").expect_ok();
    rig.del(&c, "c1", p.path_str(), "net1").expect_ok();
    assert!(p.link("net1").is_none());
}

#[test]
fn link_in_container() {
    let rig = rig("mc", Impl::Ours);
    let p = rig.pod("mc");
    parent_veth(&p, "cp0");
    let c = mv(&rig, json!({"master": "cp0", "linkInContainer": true}), "10.65.0.0/24");
    let r = rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    let l = details(&p, "eth0");
    let cp0 = p.link("cp0").unwrap()["ifindex"].clone();
    assert_eq!(l["link"], "cp0", "{l} (parent {cp0})");
    rig.check(&c, &r, "c1", &p, "eth0").expect_ok();
    // Without linkInContainer, cp0 is not found in the node.
    let mut node_side = c.clone();
    node_side["linkInContainer"] = json!(false);
    let e = rig.add(&node_side, "c2", &p, "eth1");
    assert!(e.msg().contains("failed to lookup master \"cp0\""), "{}", e.msg());
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn bad_configs_leave_nothing_behind() {
    let rig = rig("mx", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("mx");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let bad = [
        (
            json!({"master": "up0", "mode": "source"}),
            "unknown macvlan mode: \"source\"",
        ),
        (
            json!({"master": "up0", "mtu": 9000}),
            "invalid MTU 9000, must be [0, master MTU(1500)]",
        ),
        (
            json!({"master": "up0", "mtu": -1}),
            "invalid MTU -1, must be [0, master MTU(1500)]",
        ),
        (json!({"master": "nope0"}), "failed to lookup master \"nope0\""),
        (json!({"master": "up0", "mac": "zz"}), "invalid args zz for MAC addr"),
    ];
    for (extra, msg) in bad {
        let c = mv(&rig, extra, "10.66.0.0/24");
        let e = rig.add(&c, "c1", &p, "eth0");
        assert!(!e.success());
        assert!(e.msg().contains(msg), "{} !~ {msg}", e.msg());
    }
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn rollback_on_each_failure() {
    let rig = rig("mr", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("mr");
    let names = link_names(&p);

    // The name is taken in the container: the rename fails, the temp link goes.
    p.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    let taken = link_names(&p);
    let c = mv(&rig, json!({"master": "up0"}), "10.67.0.0/24");
    let e = rig.add(&c, "c1", &p, "eth0");
    assert!(e.msg().contains("failed to rename macvlan to \"eth0\""), "{}", e.msg());
    assert_eq!(link_names(&p), taken);
    p.ip(&["link", "del", "eth0"]);
    assert_eq!(link_names(&p), names);

    // IPAM fails (exhausted /30 range is made by a reservation of its only address): link gone.
    let mut tiny = mv(&rig, json!({"master": "up0"}), "10.68.0.0/30");
    tiny["ipam"]["ranges"] = json!([[{"subnet": "10.68.0.0/30", "rangeStart": "10.68.0.2", "rangeEnd": "10.68.0.2"}]]);
    let p2 = rig.pod("mr2");
    rig.add(&tiny, "other", &p2, "eth0").expect_ok();
    let e = rig.add(&tiny, "c1", &p, "eth0");
    assert!(e.msg().contains("no IP addresses available"), "{}", e.msg());
    assert_eq!(link_names(&p), names);
    rig.del(&tiny, "other", p2.path_str(), "eth0").expect_ok();

    // Configuring fails after IPAM (a route via an unreachable gateway): link and IP released.
    let mut unreachable = mv(&rig, json!({"master": "up0"}), "10.69.0.0/24");
    unreachable["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "10.1.1.1"}]);
    let e = rig.add(&unreachable, "c1", &p, "eth0");
    assert!(e.msg().contains("failed to add route"), "{}", e.msg());
    assert_eq!(link_names(&p), names);
    assert!(rig.ipam_state().is_empty(), "{:?}", rig.ipam_state());
}

#[test]
fn del_survives_missing_master_and_check_notices_it() {
    let rig = rig("mm", Impl::Ours);
    parent_veth(&rig.node, "up0");
    let p = rig.pod("mm");
    let c = mv(&rig, json!({"master": "up0"}), "10.70.0.0/24");
    let r = rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    // CHECK without prevResult, with a wrong sandbox, with the link gone.
    let e = rig.run("macvlan", "CHECK", &c, "c1", p.path_str(), "eth0", "");
    assert!(e.msg().contains("Required prevResult missing"), "{}", e.msg());
    rig.node.ip(&["link", "del", "up0"]); // takes the macvlan with it
    let e = rig.check(&c, &r, "c1", &p, "eth0");
    assert!(e.msg().contains("failed to lookup master \"up0\""), "{}", e.msg());
    rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn status_delegates_to_ipam() {
    let rig = rig("ms", Impl::Ours);
    let mut c = mv(&rig, json!({"master": "up0"}), "10.71.0.0/24");
    c["cniVersion"] = json!("1.1.0");
    let p = rig.pod("ms");
    rig.run("macvlan", "STATUS", &c, "", "", "", "").expect_ok();
    rig.add_script("failipam", "echo '{\"code\":50,\"msg\":\"pool down\"}'; exit 1");
    c["ipam"] = json!({"type": "failipam"});
    let e = rig.run("macvlan", "STATUS", &c, "", "", "", "");
    assert_eq!(e.code(), 50);
    let l2 = conf("1.1.0", "mvnet", "macvlan", json!({}));
    rig.run("macvlan", "STATUS", &l2, "", p.path_str(), "", "").expect_ok();
}
