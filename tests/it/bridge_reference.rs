//! bridge compared with the reference plugin (Debian containernetworking-plugins 1.1.1) on
//! the same scenarios, each run in fresh namespaces: result JSON, pod and node kernel state,
//! CHECK, DEL twice, DEL with an empty and with a vanished netns.

use crate::common::rig::require_reference;

use crate::common::veth_rig::{conf, normalise_result, normalised_l3, normalised_links, Impl, Rig};
use serde_json::{json, Value};

struct Outcome {
    result: Value,
    pod: Value,
    node: Value,
    check_ok: bool,
    dels: Vec<bool>,
}

fn run(imp: Impl, version: &str, extra: &Value, ranges: &[Value], args: &str) -> Outcome {
    let rig = Rig::new(if imp == Impl::Ours { "cbo" } else { "cbr" }, imp);
    let pod = rig.pod("cbp");
    let mut c = conf(version, "cmpnet", "bridge", json!({"bridge": "cmp0"}));
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    if !ranges.is_empty() {
        c["ipam"] = rig.host_local(ranges);
    }
    let out = rig
        .run("bridge", "ADD", &c, "c1", pod.path_str(), "eth0", args)
        .expect_ok();
    let result = out.json();
    let check_ok = version == "0.3.1" || ranges.is_empty() || rig.check(&c, &result, "c1", &pod, "eth0").success();
    let pod_state = json!([normalised_l3(&pod), normalised_links(&pod)]);
    let node = json!([normalised_l3(&rig.node), normalised_links(&rig.node)]);
    let dels = vec![
        rig.del(&c, "c1", pod.path_str(), "eth0").success(),
        rig.del(&c, "c1", pod.path_str(), "eth0").success(),
        rig.del(&c, "c1", "", "eth0").success(),
        rig.del(&c, "c1", "/run/netns/gone-for-good", "eth0").success(),
        rig.ipam_state().is_empty(),
    ];
    Outcome {
        result: normalise_result(&result),
        pod: pod_state,
        node,
        check_ok,
        dels,
    }
}

fn compare(version: &str, extra: Value, ranges: &[Value], args: &str) {
    let ours = run(Impl::Ours, version, &extra, ranges, args);
    let reference = run(Impl::Reference, version, &extra, ranges, args);
    let what = format!("{version} {extra} {ranges:?}");
    assert_eq!(ours.result, reference.result, "result: {what}");
    assert_eq!(ours.pod, reference.pod, "pod state: {what}");
    assert_eq!(ours.node, reference.node, "node state: {what}");
    assert!(ours.check_ok && reference.check_ok, "CHECK: {what}");
    assert_eq!(ours.dels, vec![true; 5], "DELs: {what}");
    assert_eq!(ours.dels, reference.dels, "DELs: {what}");
}

#[test]
fn ipv4_ipv6_dual_every_result_version() {
    if !require_reference("bridge_reference", "bridge") {
        return;
    }
    let v4 = [json!("10.61.0.0/24")];
    let v6 = [json!("fd61::/64")];
    let dual = [json!("10.61.0.0/24"), json!("fd61::/64")];
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        compare(version, json!({"isDefaultGateway": true}), &v4, "");
        compare(version, json!({"isGateway": true}), &v6, "");
        compare(version, json!({"isDefaultGateway": true, "mtu": 1400}), &dual, "");
    }
}

#[test]
fn keys() {
    if !require_reference("bridge_reference", "bridge") {
        return;
    }
    let v4 = [json!("10.62.0.0/24")];
    for extra in [
        json!({}),
        json!({"isGateway": true, "hairpinMode": true}),
        json!({"isGateway": true, "promiscMode": true}),
        json!({"isGateway": true, "forceAddress": true}),
        json!({"runtimeConfig": {"mac": "0a:58:00:00:00:09"}}),
        json!({"args": {"cni": {"mac": "0a:58:00:00:00:0a"}}}),
        json!({"dns": {"nameservers": ["10.62.0.53"], "search": ["example.org"]}}),
        json!({"enabledad": true, "isGateway": true}),
    ] {
        compare("1.0.0", extra, &v4, "");
    }
    compare("1.0.0", json!({}), &v4, "IgnoreUnknown=1;MAC=0a:58:00:00:00:0b");
    // L2 only (no IPAM); the reference's CHECK fails there, so CHECK is not compared.
    compare("1.0.0", json!({}), &[], "");
}

/// 1.1.0 is beyond the Debian reference: asserted directly.
#[test]
fn result_1_1_0() {
    let rig = Rig::new("c11", Impl::Ours);
    let pod = rig.pod("c11p");
    let c = conf("1.1.0", "cmpnet", "bridge", json!({"bridge": "cmp0"}));
    let r = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    let r = normalise_result(&r);
    assert_eq!(
        r,
        json!({"cniVersion": "1.1.0", "interfaces": [
            {"name": "cmp0", "mac": "MAC"}, {"name": "VETH", "mac": "MAC"},
            {"name": "eth0", "mac": "MAC", "sandbox": "NETNS"}]})
    );
}

/// The bridge's MAC at each step of: (optionally) `ip link add` of the bridge, ADD of two pods,
/// DEL of both; and the first pod's host veth MAC.
fn bridge_macs(imp: Impl, pre_existing: bool, is_gateway: bool) -> (Vec<String>, String) {
    let rig = Rig::new(if imp == Impl::Ours { "cmo" } else { "cmr" }, imp);
    let pods = [rig.pod("cma"), rig.pod("cmb")];
    let mac = |rig: &Rig| {
        rig.node
            .link("cmp0")
            .map(|l| l["address"].as_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let mut seen = Vec::new();
    if pre_existing {
        rig.node.ip(&["link", "add", "cmp0", "type", "bridge"]);
        seen.push(mac(&rig));
    }
    let mut c = conf(
        "1.0.0",
        "cmpmac",
        "bridge",
        json!({"bridge": "cmp0", "isGateway": is_gateway}),
    );
    c["ipam"] = rig.host_local(&[json!("10.65.0.0/24")]);
    let mut veth = String::new();
    for (i, pod) in pods.iter().enumerate() {
        let r = rig.add(&c, &format!("c{i}"), pod, "eth0").expect_ok().json();
        if i == 0 {
            veth = r["interfaces"][1]["mac"].as_str().unwrap().to_string();
        }
        assert_eq!(
            r["interfaces"][0]["mac"],
            json!(mac(&rig)),
            "the result names the bridge's MAC"
        );
        seen.push(mac(&rig));
    }
    for (i, pod) in pods.iter().enumerate() {
        assert!(rig.del(&c, &format!("c{i}"), pod.path_str(), "eth0").success());
        seen.push(mac(&rig));
    }
    (seen, veth)
}

/// The bridge's MAC never changes as ports come and go: a bridge that was there keeps its
/// own through ADDs and DELs, a bridge the plugin makes keeps the one it was made with (not
/// the first veth's). The reference does the same with isGateway (its ensureAddr sets the MAC
/// it read before the port joined, bridge.go in v1.1.1 and v1.9.1 alike); without isGateway
/// its bridge follows the lowest port MAC and ends at 00:00:00:00:00:00, where cni-multi's
/// stays put (doc/differences.md).
#[test]
fn the_bridge_mac_stays_as_it_was() {
    if !require_reference("bridge_reference", "bridge") {
        return;
    }
    for pre_existing in [true, false] {
        for is_gateway in [true, false] {
            let what = format!("pre-existing {pre_existing}, isGateway {is_gateway}");
            let (ours, veth) = bridge_macs(Impl::Ours, pre_existing, is_gateway);
            assert!(ours.iter().all(|m| *m == ours[0]), "{what}: ours moved: {ours:?}");
            assert_ne!(ours[0], veth, "{what}: ours took the first veth's MAC");
            let (reference, ref_veth) = bridge_macs(Impl::Reference, pre_existing, is_gateway);
            if is_gateway {
                assert!(reference.iter().all(|m| *m == reference[0]), "{what}: {reference:?}");
                assert_ne!(reference[0], ref_veth, "{what}");
            } else {
                // The documented difference: the reference's L2 bridge follows its ports.
                assert_eq!(reference.last().unwrap(), "00:00:00:00:00:00", "{what}: {reference:?}");
                assert!(reference.contains(&ref_veth), "{what}: {reference:?}");
            }
        }
    }
}

/// Keys in any case, and a key given twice, work as Go's decoder makes them work in the
/// reference: the same result and kernel state.
#[test]
fn keys_in_any_case_as_the_reference() {
    if !require_reference("bridge_reference", "bridge") {
        return;
    }
    let v4 = [json!("10.66.0.0/24")];
    for extra in [
        json!({"isgateway": true}),
        json!({"IsDefaultGateway": true, "HAIRPINMODE": true}),
        json!({"isGateway": true, "PromiscMode": true, "MTU": 1400}),
        // Both spellings: the last one in the document wins (here "mtu", after "MTU").
        json!({"MTU": 1300, "mtu": 1450}),
        json!({"RuntimeConfig": {"MAC": "0a:58:00:00:00:19"}}),
        json!({"Args": {"CNI": {"Mac": "0a:58:00:00:00:1a"}}}),
        json!({"DNS": {"Nameservers": ["10.66.0.53"], "Search": ["example.org"]}}),
        json!({"CNIVersion": "0.4.0", "isGateway": true}),
    ] {
        compare("1.0.0", extra, &v4, "");
    }
}

/// A bridge whose ports all left has MAC 00:00:00:00:00:00 (the kernel's bridge id with no
/// port, when nobody set its address): the reference's ADD with isGateway then fails (its
/// ensureAddr sets the zero MAC it read before the port joined); cni-multi's, with or without
/// isGateway, keeps the first new port's MAC through later ADDs and DELs (doc/differences.md).
#[test]
fn a_bridge_left_without_ports_takes_the_first_new_ports_mac() {
    if !require_reference("bridge_reference", "bridge") {
        return;
    }
    let portless = |imp: Impl, tag: &str| {
        let rig = Rig::new(tag, imp);
        rig.node.ip(&["link", "add", "cmp0", "type", "bridge"]);
        rig.node
            .ip(&["link", "add", "cmz0", "type", "veth", "peer", "name", "cmz1"]);
        rig.node.ip(&["link", "set", "cmz0", "master", "cmp0"]);
        rig.node.ip(&["link", "del", "cmz0"]);
        let mac = rig.node.link("cmp0").unwrap()["address"].as_str().unwrap().to_string();
        assert_eq!(mac, "00:00:00:00:00:00", "the set-up: a bridge whose ports left");
        rig
    };
    let bridge_mac = |rig: &Rig| rig.node.link("cmp0").unwrap()["address"].as_str().unwrap().to_string();
    let bridge_conf = |rig: &Rig, is_gateway: bool| {
        let mut c = conf(
            "1.0.0",
            "cmpmac",
            "bridge",
            json!({"bridge": "cmp0", "isGateway": is_gateway}),
        );
        c["ipam"] = rig.host_local(&[json!("10.65.1.0/24")]);
        c
    };

    let rig = portless(Impl::Reference, "cmzr");
    let pod = rig.pod("cmzr");
    let out = rig.add(&bridge_conf(&rig, true), "c1", &pod, "eth0");
    assert!(!out.success(), "the reference: {out}");
    assert!(out.msg().contains("could not set bridge's mac"), "{out}");

    for is_gateway in [true, false] {
        let rig = portless(Impl::Ours, "cmzo");
        let pods = [rig.pod("cmza"), rig.pod("cmzb")];
        let c = bridge_conf(&rig, is_gateway);
        let r = rig.add(&c, "c0", &pods[0], "eth0").expect_ok().json();
        let first = bridge_mac(&rig);
        assert_ne!(first, "00:00:00:00:00:00", "isGateway {is_gateway}");
        assert_eq!(
            r["interfaces"][1]["mac"],
            json!(first),
            "isGateway {is_gateway}: the port's MAC"
        );
        assert_eq!(
            r["interfaces"][0]["mac"],
            json!(first),
            "isGateway {is_gateway}: reported"
        );
        rig.add(&c, "c1", &pods[1], "eth0").expect_ok();
        assert_eq!(bridge_mac(&rig), first, "isGateway {is_gateway}: second ADD");
        for (i, pod) in pods.iter().enumerate() {
            assert!(rig.del(&c, &format!("c{i}"), pod.path_str(), "eth0").success());
            assert_eq!(bridge_mac(&rig), first, "isGateway {is_gateway}: DEL {i}");
        }
    }
}
