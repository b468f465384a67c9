//! ptp compared with the reference plugin (Debian containernetworking-plugins 1.1.1): result
//! JSON, pod state (the route dance), node state (host veth address, host routes), CHECK,
//! DEL twice, DEL with an empty and with a vanished netns.

use crate::common::rig::require_reference;

use crate::common::veth_rig::{conf, normalise_result, normalised_l3, normalised_links, Impl, Rig};
use serde_json::{json, Value};

fn run(imp: Impl, version: &str, extra: &Value, ranges: &[Value]) -> Vec<Value> {
    let rig = Rig::new(if imp == Impl::Ours { "cpo" } else { "cpr" }, imp);
    let pod = rig.pod("cpp");
    let mut c = conf(version, "cmpptp", "ptp", extra.clone());
    c["ipam"] = rig.host_local(ranges);
    c["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    let result = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    let check_ok = version == "0.3.1" || rig.check(&c, &result, "c1", &pod, "eth0").success();
    let out = vec![
        normalise_result(&result),
        normalised_l3(&pod),
        normalised_links(&pod),
        normalised_l3(&rig.node),
        normalised_links(&rig.node),
        json!(check_ok),
        json!([
            rig.del(&c, "c1", pod.path_str(), "eth0").success(),
            rig.del(&c, "c1", pod.path_str(), "eth0").success(),
            rig.del(&c, "c1", "", "eth0").success(),
            rig.del(&c, "c1", "/run/netns/gone-for-good", "eth0").success(),
            rig.ipam_state().is_empty(),
        ]),
    ];
    out
}

#[test]
fn ipv4_ipv6_dual_every_result_version_and_keys() {
    if !require_reference("ptp_reference", "ptp") {
        return;
    }
    let v4 = vec![json!("10.63.0.0/24")];
    let v6 = vec![json!("fd63::/64")];
    let dual = vec![json!("10.63.0.0/24"), json!("fd63::/64")];
    let mut cases = Vec::new();
    for version in ["0.3.1", "0.4.0", "1.0.0"] {
        cases.push((version, json!({}), v4.clone()));
        cases.push((version, json!({}), v6.clone()));
        cases.push((version, json!({"mtu": 1400}), dual.clone()));
    }
    cases.push(("1.0.0", json!({"dns": {"nameservers": ["10.63.0.53"]}}), v4.clone()));
    for (version, extra, ranges) in cases {
        let ours = run(Impl::Ours, version, &extra, &ranges);
        let reference = run(Impl::Reference, version, &extra, &ranges);
        let names = [
            "result",
            "pod l3",
            "pod links",
            "node l3",
            "node links",
            "CHECK",
            "DELs",
        ];
        for (i, n) in names.iter().enumerate() {
            assert_eq!(ours[i], reference[i], "{n}: {version} {extra} {ranges:?}");
        }
        assert_eq!(ours[5], json!(true));
        assert_eq!(ours[6], json!([true, true, true, true, true]));
    }
}

/// The result of one ADD (then DEL) with the config `extra` is merged into, over an IPAM
/// that reports DNS from a resolv.conf.
fn dns_result(imp: Impl, extra: &Value) -> Value {
    let rig = Rig::new(if imp == Impl::Ours { "cdo" } else { "cdr" }, imp);
    let pod = rig.pod("cdp");
    let resolv = rig.data.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.64.0.53\nsearch ipam.example\noptions ndots:3\n").unwrap();
    let mut c = conf("1.0.0", "cmpdns", "ptp", extra.clone());
    c["ipam"] = rig.host_local(&[json!("10.64.0.0/24")]);
    c["ipam"]["resolvConf"] = json!(resolv);
    let r = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    assert!(rig.del(&c, "c1", pod.path_str(), "eth0").success());
    r["dns"].clone()
}

/// The config's `dns` replaces the IPAM's when any of its fields is given, even as an empty
/// list (the reference's dnsConfSet checks for non-nil slices); an empty domain or a null
/// list is no field. The keys in any case, as Go's decoder reads them.
#[test]
fn a_dns_block_replaces_the_ipams_as_in_the_reference() {
    if !require_reference("ptp_reference", "ptp") {
        return;
    }
    let ipam_dns = json!({"nameservers": ["10.64.0.53"], "search": ["ipam.example"], "options": ["ndots:3"]});
    for (extra, want) in [
        (json!({}), ipam_dns.clone()),
        (json!({"dns": {}}), ipam_dns.clone()),
        (json!({"dns": {"nameservers": [], "search": []}}), json!({})),
        (json!({"dns": {"search": []}}), json!({})),
        (json!({"dns": {"domain": ""}}), ipam_dns.clone()),
        (json!({"dns": {"nameservers": null}}), ipam_dns.clone()),
        (
            json!({"dns": {"options": ["ndots:1"]}}),
            json!({"options": ["ndots:1"]}),
        ),
        (
            json!({"DNS": {"Nameservers": ["10.64.0.54"]}}),
            json!({"nameservers": ["10.64.0.54"]}),
        ),
    ] {
        let ours = dns_result(Impl::Ours, &extra);
        let reference = dns_result(Impl::Reference, &extra);
        assert_eq!(ours, reference, "{extra}");
        assert_eq!(ours, want, "{extra}");
    }
}
