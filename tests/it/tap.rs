//! tap against the real kernel, in throw-away pod namespaces (needs root). There is no
//! reference binary here: the expectations are the reference's documented behaviour (golden).

use crate::common::links_rig::{details, link_names, rig};
use crate::common::rig::{run_ok, TestNs};
use crate::common::veth_rig::{conf, kernel_state, Impl, Rig};
use serde_json::{json, Value};

fn sys(p: &TestNs, ifname: &str, attr: &str) -> String {
    // `ip netns exec` mounts a sysfs of the pod's netns.
    run_ok(&[
        "ip",
        "netns",
        "exec",
        p.name(),
        "cat",
        &format!("/sys/class/net/{ifname}/{attr}"),
    ])
    .trim()
    .to_string()
}

fn tap(rig: &Rig, extra: Value, ipam: bool) -> Value {
    let mut c = conf("1.0.0", "tapnet", "tap", extra);
    if ipam {
        c["ipam"] = rig.host_local(&[json!("10.88.0.0/24")]);
    }
    c
}

#[test]
fn keys_owner_group_multiqueue_mtu_mac() {
    let rig = rig("tk", Impl::Ours);
    let p = rig.pod("tk");
    // (extra, tun_flags the reference's creation path gives)
    for (extra, flags) in [
        (json!({}), "0x1802"),                            // ip tuntap: tap, no_pi, persist
        (json!({"owner": 1000}), "0x1802"),               // owner alone: still ip tuntap
        (json!({"owner": 1000, "group": 100}), "0x4802"), // netlink: tap, vnet_hdr
        (json!({"multiQueue": true}), "0x1902"),          // multi_queue, no_pi
        (json!({"owner": 7, "group": 8, "multiQueue": true}), "0x1902"),
    ] {
        let mut c = tap(&rig, extra.clone(), true);
        c["mtu"] = json!(1400);
        c["mac"] = json!("02:aa:bb:cc:dd:ee");
        let r = rig.add(&c, "c1", &p, "tap0").expect_ok().json();
        assert_eq!(
            r["interfaces"],
            json!([{"name": "tap0", "mac": "02:aa:bb:cc:dd:ee", "sandbox": p.path_str()}])
        );
        assert_eq!(r["ips"][0]["interface"], 0);
        let l = details(&p, "tap0");
        assert_eq!(l["linkinfo"]["info_kind"], "tun", "{l}");
        assert_eq!(l["linkinfo"]["info_data"]["type"], "tap", "{l}");
        assert_eq!(l["mtu"], 1400);
        assert_eq!(l["address"], "02:aa:bb:cc:dd:ee");
        assert!(l["flags"].as_array().unwrap().contains(&json!("UP")));
        assert_eq!(sys(&p, "tap0", "tun_flags"), flags, "{extra}");
        let id = |k: &str| extra.get(k).map(|v| v.to_string()).unwrap_or_else(|| "-1".into());
        assert_eq!(sys(&p, "tap0", "owner"), id("owner"), "{extra}");
        assert_eq!(sys(&p, "tap0", "group"), id("group"), "{extra}");
        let addr = r["ips"][0]["address"].as_str().unwrap();
        assert!(p.ip(&["addr", "show", "tap0"]).contains(addr));
        rig.check(&c, &r, "c1", &p, "tap0").expect_ok();
        rig.del(&c, "c1", p.path_str(), "tap0").expect_ok();
        rig.del(&c, "c1", p.path_str(), "tap0").expect_ok();
        assert!(p.link("tap0").is_none());
    }
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn mac_from_cni_args_and_runtime_config() {
    let rig = rig("tm", Impl::Ours);
    let p = rig.pod("tm");
    let mut c = tap(&rig, json!({"mac": "02:00:00:00:00:01"}), false);
    let mac = |c: &Value, args: &str| {
        let r = rig
            .run("tap", "ADD", c, "c1", p.path_str(), "tap0", args)
            .expect_ok()
            .json();
        rig.del(c, "c1", p.path_str(), "tap0").expect_ok();
        r["interfaces"][0]["mac"].clone()
    };
    assert_eq!(mac(&c, ""), "02:00:00:00:00:01");
    assert_eq!(mac(&c, "MAC=02:00:00:00:00:02"), "02:00:00:00:00:02");
    c["runtimeConfig"] = json!({"mac": "02:00:00:00:00:03"});
    assert_eq!(mac(&c, "MAC=02:00:00:00:00:02"), "02:00:00:00:00:03");
}

#[test]
fn bridge_in_the_container() {
    let rig = rig("tb", Impl::Ours);
    let p = rig.pod("tb");
    p.ip(&["link", "add", "br0", "type", "bridge"]);
    let c = tap(&rig, json!({"bridge": "br0"}), false);
    let r = rig.add(&c, "c1", &p, "tap0").expect_ok().json();
    assert_eq!(details(&p, "tap0")["master"], "br0");
    assert!(r.get("ips").is_none());
    rig.check(&c, &r, "c1", &p, "tap0").expect_ok();
    rig.del(&c, "c1", p.path_str(), "tap0").expect_ok();
    // A missing bridge fails and leaves nothing.
    let names = link_names(&p);
    let e = rig.add(&tap(&rig, json!({"bridge": "nobr"}), true), "c1", &p, "tap0");
    assert!(e.msg().contains("failed to lookup bridge \"nobr\""), "{}", e.msg());
    assert_eq!(link_names(&p), names);
    assert!(rig.ipam_state().is_empty());
}

#[test]
fn refusals_and_rollback() {
    let rig = rig("tr", Impl::Ours);
    let p = rig.pod("tr");
    let before = (kernel_state(&rig.node), kernel_state(&p));
    let e = rig.add(
        &tap(
            &rig,
            json!({"selinuxContext": "system_u:object_r:tun_tap_device_t:s0"}),
            true,
        ),
        "c1",
        &p,
        "tap0",
    );
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        // An SELinux host labels the device instead (not testable here: this machine has no
        // SELinux); the ADD may fail only for a context its policy refuses.
        let _ = e;
    } else {
        // Refused with the key, its value and why (code 2, "unsupported field").
        assert_eq!(e.code(), 2);
        assert!(
            e.msg()
                .contains("selinuxContext \"system_u:object_r:tun_tap_device_t:s0\": this host has no SELinux"),
            "{}",
            e.msg()
        );
    }
    let e = rig.add(&tap(&rig, json!({"mac": "nope"}), true), "c1", &p, "tap0");
    assert!(e.msg().contains("invalid args nope for MAC addr"), "{}", e.msg());
    // IPAM configuration fails after the tap exists: tap and reservation gone.
    let mut c = tap(&rig, json!({}), true);
    c["ipam"]["routes"] = json!([{"dst": "10.99.0.0/16", "gw": "10.1.1.1"}]);
    let e = rig.add(&c, "c1", &p, "tap0");
    assert!(e.msg().contains("failed to add route"), "{}", e.msg());
    // The name is taken in the container.
    p.ip(&["link", "add", "tap0", "type", "bridge"]);
    let taken = link_names(&p);
    let e = rig.add(&tap(&rig, json!({}), true), "c1", &p, "tap0");
    assert!(e.msg().contains("failed to rename tap to \"tap0\""), "{}", e.msg());
    assert_eq!(link_names(&p), taken);
    p.ip(&["link", "del", "tap0"]);
    assert_eq!(before, (kernel_state(&rig.node), kernel_state(&p)));
    assert!(rig.ipam_state().is_empty());
}

/// The creation path used for selinuxContext, without the label (this machine has no SELinux
/// to label with): cni-multi re-executed as its tuntap helper makes the device in the netns of
/// the thread that spawned it, with the flags asked for.
#[test]
fn the_labelled_creation_path_makes_the_device_in_the_callers_netns() {
    use cni_multi::linux::tuntap::{create_in_child, TunTap};
    use cni_multi::linux::NetNs;
    let p = TestNs::new("tlh");
    let ns = NetNs::open(p.path()).unwrap();
    let opts = TunTap {
        name: "tlh0".into(),
        multi_queue: true,
        owner: Some(1000),
        group: Some(100),
        ..Default::default()
    };
    let made = {
        let _in = ns.enter().unwrap();
        create_in_child(&crate::common::veth_rig::ours(), &opts, None)
    };
    assert_eq!(made.unwrap(), "tlh0");
    assert_eq!(link_names(&p), vec!["lo".to_string(), "tlh0".to_string()]);
    // IFF_TAP | IFF_MULTI_QUEUE | IFF_PERSIST | IFF_NO_PI
    assert_eq!(sys(&p, "tlh0", "tun_flags"), "0x1902");
    assert_eq!(sys(&p, "tlh0", "owner"), "1000");
    assert_eq!(sys(&p, "tlh0", "group"), "100");
    // A failure in the child comes back with its message.
    let long = TunTap {
        name: "a-name-longer-than-ifnamsiz".into(),
        ..Default::default()
    };
    let e = {
        let _in = ns.enter().unwrap();
        create_in_child(&crate::common::veth_rig::ours(), &long, None)
    };
    let e = e.unwrap_err().to_string();
    assert!(
        e.contains("a-name-longer-than-ifnamsiz") && e.contains("name too long"),
        "{e}"
    );
    // A label the kernel refuses (no SELinux here; a context no policy knows on an SELinux
    // host): the child's write to attr/exec fails before it runs, the error names the device,
    // and nothing is made.
    let labelled = TunTap {
        name: "tlh1".into(),
        ..Default::default()
    };
    let e = {
        let _in = ns.enter().unwrap();
        create_in_child(
            &crate::common::veth_rig::ours(),
            &labelled,
            Some("nobody_u:nobody_r:no_such_t:s0"),
        )
    };
    let e = e.unwrap_err().to_string();
    assert!(e.contains("create tap \"tlh1\" in a labelled process"), "{e}");
    assert_eq!(link_names(&p), vec!["lo".to_string(), "tlh0".to_string()]);
}
