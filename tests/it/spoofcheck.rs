//! bridge macspoofchk helper (`pkg::spoofcheck`) against the kernel: frames with the pod's
//! own source MAC pass, a spoofed MAC is dropped, and teardown removes exactly that
//! attachment's rule and chains.

use crate::common::fw_rig::*;
use crate::common::rig;
use cni_multi::linux::nft::NftSocket;
use cni_multi::pkg::spoofcheck;

fn mac_of(ns: &rig::TestNs, dev: &str) -> [u8; 6] {
    let l = ns.link(dev).unwrap();
    let s = l["address"].as_str().unwrap();
    let v: Vec<u8> = s.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    v.try_into().unwrap()
}

fn pings(from: &rig::TestNs, to: &str) -> bool {
    from.exec(&["ping", "-c1", "-W1", to]).status.success()
}

#[test]
fn spoofed_mac_is_dropped() {
    if !rig::require_reference("spoofed_mac_is_dropped", "bridge") {
        return;
    }
    let site = Site::new("spoof");
    let a = site.pod("spoof-a", "cni-s0", "10.92.0.0/24", "ctr-sa");
    let b = site.pod("spoof-b", "cni-s0", "10.92.0.0/24", "ctr-sb");
    let sock = NftSocket::open_in_netns_path(site.node.path()).unwrap();
    let real = mac_of(&a.ns, "eth0");
    spoofcheck::setup(&sock, &a.host_veth, real, &a.cid, "eth0").unwrap();
    spoofcheck::setup(&sock, &b.host_veth, mac_of(&b.ns, "eth0"), &b.cid, "eth0").unwrap();
    // A repeated setup does not pile up rules.
    spoofcheck::setup(&sock, &a.host_veth, real, &a.cid, "eth0").unwrap();

    assert!(pings(&a.ns, &b.ip), "real MAC passes");
    assert!(pings(&a.ns, "10.92.0.1"), "real MAC reaches the gateway");

    // The rules print with nft as the reference's do.
    let text = table_text(&site.node, "bridge", "nat");
    let comment = spoofcheck::rule_comment(&a.cid, "eth0");
    let iface = spoofcheck::iface_chain(&a.cid, "eth0");
    let mac = a.ns.link("eth0").unwrap()["address"].as_str().unwrap().to_string();
    for want in [
        // -300 is what nft calls dstnat in the bridge family.
        "type filter hook prerouting priority dstnat; policy accept;".to_string(),
        format!("iifname \"{}\" jump {iface} comment \"{comment}\"", a.host_veth),
        format!("jump {iface}-mac comment \"{comment}\""),
        format!("ether saddr {mac} return comment \"{comment}\""),
        format!("drop comment \"{comment}\""),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    let rs = site.ruleset();
    assert_eq!(rules(&rs, "bridge", "nat", spoofcheck::PREROUTING).len(), 2);
    let m = rules(&rs, "bridge", "nat", &format!("{iface}-mac"));
    assert_eq!(matches(&m[0].0)[0], format!("ether saddr == {mac}"));

    // Spoof: the pod changes its MAC; its frames are now dropped at the bridge port.
    a.ns.ip(&["link", "set", "eth0", "address", "02:00:00:00:be:ef"]);
    a.ns.ip(&["neigh", "flush", "all"]);
    b.ns.ip(&["neigh", "flush", "all"]);
    assert!(!pings(&a.ns, &b.ip), "spoofed MAC must be dropped");

    // Teardown of a: its rule and chains go, b's stay; a's traffic passes again.
    spoofcheck::teardown(&sock, &a.cid, "eth0").unwrap();
    let rs = site.ruleset();
    assert!(!has_chain(&rs, "bridge", "nat", &iface));
    assert!(!has_chain(&rs, "bridge", "nat", &format!("{iface}-mac")));
    assert!(has_chain(
        &rs,
        "bridge",
        "nat",
        &spoofcheck::iface_chain(&b.cid, "eth0")
    ));
    let pre = rules(&rs, "bridge", "nat", spoofcheck::PREROUTING);
    assert_eq!(pre.len(), 1);
    assert_eq!(
        pre[0].1.as_deref(),
        Some(spoofcheck::rule_comment(&b.cid, "eth0").as_str())
    );
    assert!(pings(&a.ns, &b.ip));
    spoofcheck::teardown(&sock, &a.cid, "eth0").unwrap();
}
