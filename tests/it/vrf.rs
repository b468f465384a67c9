//! vrf on this machine's kernel. The protocol checks need no kernel feature; the kernel test
//! probes for VRF support in a throw-away netns: without it (this host has no
//! CONFIG_NET_VRF) ADD must fail with code 50 naming the missing support and leave the pod
//! exactly as it was; with it, the real behaviour (enslave, routes and IPv6 kept, DEL), which
//! `make vm-test` runs this file under the second kernel to check.
//! The VRF behaviour in depth, and against the reference, is vm/tests/vrf.sh and ref-vrf.sh.

use crate::common::links_rig::{details, kernel_supports};
use crate::common::rig::*;
use serde_json::{json, Value};

fn prev_result(pod: &TestNs) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": pod.path_str()}],
        "ips": [{"address": "10.254.0.2/24", "gateway": "10.254.0.1", "interface": 0},
                {"address": "fd54::2/64", "interface": 0}],
        "routes": [{"dst": "10.10.10.0/24", "gw": "10.254.0.1"}],
        "dns": {}
    })
}

fn conf(version: &str, extra: Value, prev: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": version, "name": "vnet", "type": "vrf"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c
}

/// A pod whose eth0 looks like a main plugin left it: up, IPv4 + IPv6 (no DAD), a route.
fn pod() -> TestNs {
    let ns = TestNs::new("vrf-pod");
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    ns.ip(&["link", "set", "peer0", "up"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["addr", "add", "10.254.0.2/24", "dev", "eth0"]);
    ns.ip(&["addr", "add", "fd54::2/64", "dev", "eth0", "nodad"]);
    ns.ip(&["route", "add", "10.10.10.0/24", "via", "10.254.0.1", "dev", "eth0"]);
    ns
}

/// Everything the plugin could change in the pod: links, addresses and routes of every
/// table. What the kernel changes by itself after the setup is left out: the operational
/// state (linkwatch settles it late) and the IPv6 link-local address, its DAD and routes.
fn pod_state(ns: &TestNs) -> String {
    let mut out = String::new();
    for argv in [
        &["ip", "-o", "link", "show"][..],
        &["ip", "-o", "addr", "show"],
        &["ip", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
    ] {
        for line in ns.exec_ok(argv).lines().filter(|l| !l.contains("fe80")) {
            let mut words = line.split_whitespace();
            while let Some(w) = words.next() {
                if w == "state" {
                    words.next();
                    continue;
                }
                out.push_str(w);
                out.push(' ');
            }
            out.push('\n');
        }
    }
    out
}

/// A vrf invocation with an empty PATH: the plugin executes nothing.
fn vrf(command: &str, pod: &TestNs, c: &Value) -> Invocation {
    Invocation::new("vrf", command).env("PATH", "").pod(pod).config(c)
}

#[test]
fn version_and_config_errors() {
    if !require_root("vrf::version_and_config_errors") {
        return;
    }
    let pod = pod();
    let v = Invocation::new("vrf", "VERSION")
        .stdin_raw(r#"{"cniVersion":"1.0.0"}"#)
        .run_ours();
    v.expect_ok();
    let versions = v.result()["supportedVersions"].clone();
    assert_eq!(versions, json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]), "{v}");

    let run = |c: Value| vrf("ADD", &pod, &c).run_ours();
    let before = pod_state(&pod);

    // Older than the reference's first version.
    run(conf("0.3.0", json!({"vrfname": "red"}), Some(prev_result(&pod)))).expect_err(1);
    let o = run(conf("1.0.0", json!({}), Some(prev_result(&pod))));
    o.expect_err(7);
    assert_eq!(o.msg(), Some("configuration is expected to have a valid vrf name"));
    let o = run(conf("1.0.0", json!({"vrfname": "red"}), None));
    o.expect_err(7);
    assert_eq!(o.msg(), Some("missing prevResult from earlier plugin"));
    let o = run(conf(
        "1.0.0",
        json!({"vrfname": "red", "table": -3}),
        Some(prev_result(&pod)),
    ));
    o.expect_err(7);
    assert!(o.msg().unwrap().contains("key \"table\""), "{o}");
    run(conf("1.0.0", json!({"vrfname": "a/b"}), Some(prev_result(&pod)))).expect_err(7);
    run(conf(
        "1.0.0",
        json!({"vrfname": "red", "table": 254}),
        Some(prev_result(&pod)),
    ))
    .expect_err(7);
    // A name taken by a link of another kind is not a VRF to join, and not ours to delete.
    let o = run(conf("1.0.0", json!({"vrfname": "peer0"}), Some(prev_result(&pod))));
    o.expect_err(7);
    assert!(o.msg().unwrap().contains("Netlink peer0 is not a VRF"), "{o}");
    assert_eq!(pod_state(&pod), before, "a rejected ADD changed the pod");

    // CHECK needs the VRF; DEL of what was never added succeeds and changes nothing.
    let c = conf("1.0.0", json!({"vrfname": "red"}), Some(prev_result(&pod)));
    let o = vrf("CHECK", &pod, &c).run_ours();
    assert!(!o.success(), "{o}");
    assert_eq!(o.msg(), Some("VRF red not found"), "{o}");
    vrf("DEL", &pod, &c).run_ours().expect_ok();
    let peer = conf("1.0.0", json!({"vrfname": "peer0"}), None);
    vrf("DEL", &pod, &peer).run_ours().expect_ok();
    Invocation::new("vrf", "DEL")
        .netns(vanished_netns_path())
        .config(&c)
        .run_ours()
        .expect_ok();
    Invocation::new("vrf", "DEL").config(&c).run_ours().expect_ok();
    assert_eq!(pod_state(&pod), before, "DEL changed the pod");
}

#[test]
fn add_on_this_kernel() {
    if !require_root("vrf::add_on_this_kernel") {
        return;
    }
    let pod = pod();
    let before = pod_state(&pod);
    let c = conf("1.0.0", json!({"vrfname": "red"}), Some(prev_result(&pod)));
    let add = vrf("ADD", &pod, &c).run_ours();

    if !kernel_supports("vrf") {
        add.expect_err(50);
        let msg = add.msg().unwrap();
        assert!(
            msg.contains("no VRF support") && msg.contains("CONFIG_NET_VRF"),
            "the error must name the missing kernel support: {add}"
        );
        assert!(pod.link("red").is_none(), "no VRF may be left behind");
        assert_eq!(pod_state(&pod), before, "a failed ADD changed the pod");
        // DEL after the failed ADD, as a runtime sends it, succeeds.
        vrf("DEL", &pod, &c).run_ours().expect_ok();
        assert_eq!(pod_state(&pod), before);
        eprintln!("vrf::add_on_this_kernel: no VRF support here: checked the clean error (code 50)");
        return;
    }

    add.expect_ok();
    assert_eq!(add.result(), &prev_result(&pod), "ADD must print the prevResult");
    // `ip -d`: linkinfo (kind, table) is only in the detailed output.
    let link = details(&pod, "red");
    assert!(!link.is_null(), "VRF red does not exist");
    assert_eq!(link["linkinfo"]["info_kind"], "vrf", "{link}");
    assert_eq!(link["linkinfo"]["info_data"]["table"], 1, "{link}");
    assert_eq!(pod.link("eth0").unwrap()["master"], "red");
    let vrf_routes = pod.ip(&["route", "show", "vrf", "red"]);
    assert!(
        vrf_routes.contains("10.10.10.0/24 via 10.254.0.1 dev eth0"),
        "{vrf_routes}"
    );
    let v6 = pod.ip(&["-6", "addr", "show", "dev", "eth0"]);
    assert!(v6.contains("fd54::2/64"), "IPv6 address not restored: {v6}");
    vrf("CHECK", &pod, &c).run_ours().expect_ok();

    let conflict = conf("1.0.0", json!({"vrfname": "red", "table": 7}), Some(prev_result(&pod)));
    let o = vrf("ADD", &pod, &conflict).ifname("peer0").run_ours();
    o.expect_err(7);
    assert_eq!(
        o.msg(),
        Some("cmdAdd failed: VRF red already exist with different routing table 1")
    );

    vrf("DEL", &pod, &c).run_ours().expect_ok();
    assert!(pod.link("red").is_none(), "VRF left after DEL of its last slave");
    assert!(pod.link("eth0").unwrap().get("master").is_none());
    vrf("DEL", &pod, &c).run_ours().expect_ok();
}
