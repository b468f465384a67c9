//! The kernel layer against the real kernel, in throw-away namespaces (needs root).
//! Every check is cross-checked with `ip -j` run inside the namespace.

use std::net::IpAddr;
use std::time::Duration;

use crate::common::rig::TestNs;
use cni_multi::linux::netlink::{
    addr::IpFamily, route::SCOPE_LINK, BridgeVlan, IpvlanMode, LinkKind, LinkSpec, LinkType, MacvlanMode, Neigh,
    NextHop, Route, Rule, VethPeer,
};
use cni_multi::linux::{sysctl, tuntap, NetNs, Netlink, NsError};
use ipnet::IpNet;
use serde_json::Value;
use std::os::fd::AsFd;

fn open(ns: &TestNs) -> (NetNs, Netlink) {
    let h = NetNs::open(ns.path()).unwrap();
    let nl = Netlink::in_netns(&h).unwrap();
    (h, nl)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The one object in `ip -j ... show dev X` output.
fn first(v: &Value) -> &Value {
    &v.as_array().expect("array")[0]
}

/// Two namespaces joined by a veth created from one side with the peer placed directly in
/// the other, addressed through two sockets; then ping across.
#[test]
fn veth_across_namespaces_addresses_routes_ping() {
    let a = TestNs::new_node("va");
    let b = TestNs::new_node("vb");
    let (_ha, mut nla) = open(&a);
    let (hb, mut nlb) = open(&b);

    let spec = LinkSpec::veth("va0", VethPeer::new("vb0").netns(hb.as_fd()).mtu(1400))
        .mtu(1400)
        .up();
    nla.create_link(&spec).unwrap();

    let la = nla.link_by_name("va0").unwrap().expect("va0 in a");
    assert_eq!(la.kind, Some(LinkType::Veth));
    assert_eq!(la.mtu, 1400);
    assert!(la.up);
    assert!(la.link_netnsid.is_some(), "peer lives in another netns");
    assert!(nla.link_by_name("vb0").unwrap().is_none(), "peer not in a");
    let lb = nlb.link_by_name("vb0").unwrap().expect("vb0 in b");
    assert_eq!(lb.kind, Some(LinkType::Veth));
    assert_eq!(la.link, Some(lb.index));
    let j = b.ip_json(&["link", "show", "dev", "vb0"]);
    assert_eq!(first(&j)["mtu"], 1400);
    assert_eq!(first(&j)["ifindex"], lb.index);

    nlb.set_up(lb.index).unwrap();
    nla.add_addr(la.index, net("10.99.0.1/24"), false).unwrap();
    nlb.add_addr(lb.index, net("10.99.0.2/24"), false).unwrap();
    nla.add_addr(la.index, net("fd99::1/64"), true).unwrap();
    nlb.add_addr(lb.index, net("fd99::2/64"), true).unwrap();
    nla.wait_oper_up(la.index, Duration::from_secs(5)).unwrap();
    nlb.wait_oper_up(lb.index, Duration::from_secs(5)).unwrap();

    let addrs = nla.addrs(Some(la.index), IpFamily::V4).unwrap();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].ip, net("10.99.0.1/24"));
    let v6 = nla.addrs(Some(la.index), IpFamily::V6).unwrap();
    assert!(v6.iter().any(|x| x.ip == net("fd99::1/64") && x.flags.nodad()));
    let j = a.ip_json(&["addr", "show", "dev", "va0"]);
    let ai = first(&j)["addr_info"].as_array().unwrap();
    assert!(ai
        .iter()
        .any(|x| x["local"] == "10.99.0.1" && x["prefixlen"] == 24 && x["broadcast"] == "10.99.0.255"));

    // A route in b to a's "other" network through a.
    let r = Route::new(net("10.100.0.0/24")).gw(ip("10.99.0.1")).oif(lb.index);
    nlb.add_route(&r).unwrap();
    let routes = nlb.routes(IpFamily::V4, Some(254)).unwrap();
    assert!(routes
        .iter()
        .any(|x| x.dst == net("10.100.0.0/24") && x.gw == Some(ip("10.99.0.1"))));
    let j = b.ip_json(&["route", "show", "10.100.0.0/24"]);
    assert_eq!(first(&j)["gateway"], "10.99.0.1");
    nla.add_addr(1, net("10.100.0.1/32"), false).unwrap(); // on a's lo

    let (ok, out) = sh(&b, &["ping", "-c1", "-W1", "10.99.0.1"]);
    assert!(ok, "ping: {out}");
    let (ok, out) = sh(&b, &["ping", "-c1", "-W1", "10.100.0.1"]);
    assert!(ok, "ping via route: {out}");
    let (ok, out) = sh(&a, &["ping", "-c1", "-W1", "fd99::2"]);
    assert!(ok, "ping6: {out}");

    // Deleting one end removes the pair.
    nla.delete_link(la.index).unwrap();
    assert!(nlb.link_by_index(lb.index).unwrap().is_none());
}

/// Create a link directly inside another namespace through IFLA_NET_NS_FD.
#[test]
fn create_directly_in_other_netns() {
    let a = TestNs::new_node("da");
    let b = TestNs::new_node("db");
    let (_ha, mut nla) = open(&a);
    let (hb, mut nlb) = open(&b);
    nla.create_link(&LinkSpec::new("br-x", LinkKind::Bridge { vlan_filtering: None }).netns(hb.as_fd()))
        .unwrap();
    assert!(nla.link_by_name("br-x").unwrap().is_none());
    let l = nlb.link_by_name("br-x").unwrap().unwrap();
    assert_eq!(l.kind, Some(LinkType::Bridge));
    assert_eq!(
        first(&b.ip_json(&["-d", "link", "show", "br-x"]))["linkinfo"]["info_kind"],
        "bridge"
    );
}

#[test]
fn link_modifiers() {
    let a = TestNs::new_node("lm");
    let b = TestNs::new_node("lm2");
    let (_ha, mut nl) = open(&a);
    let (hb, mut nlb) = open(&b);
    nl.create_link(&LinkSpec::new("br0", LinkKind::Bridge { vlan_filtering: None }))
        .unwrap();
    nl.create_link(&LinkSpec::veth("p0", "p1").txqlen(500)).unwrap();
    let br = nl.link_by_name("br0").unwrap().unwrap();
    let p0 = nl.link_by_name("p0").unwrap().unwrap();
    assert_eq!(p0.txqlen, 500);

    nl.set_mtu(p0.index, 1300).unwrap();
    nl.set_mac(p0.index, [0x02, 0xaa, 0, 0, 0, 1]).unwrap();
    nl.set_txqlen(p0.index, 42).unwrap();
    nl.set_master(p0.index, br.index).unwrap();
    nl.set_alias(p0.index, Some("hello")).unwrap();
    nl.set_promisc(p0.index, true).unwrap();
    nl.set_allmulti(p0.index, true).unwrap();
    nl.set_up(p0.index).unwrap();
    let l = nl.link_by_index(p0.index).unwrap().unwrap();
    assert_eq!((l.mtu, l.txqlen, l.master), (1300, 42, Some(br.index)));
    assert_eq!(l.mac, Some([0x02, 0xaa, 0, 0, 0, 1]));
    assert_eq!(l.alias.as_deref(), Some("hello"));
    assert!(l.promisc && l.allmulti && l.up);
    let j = a.ip_json(&["link", "show", "p0"]);
    let j = first(&j);
    assert_eq!(j["mtu"], 1300);
    assert_eq!(j["master"], "br0");
    assert_eq!(j["address"], "02:aa:00:00:00:01");
    assert_eq!(j["ifalias"], "hello");
    assert_eq!(j["txqlen"], 42);
    let flags: Vec<&str> = j["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(flags.contains(&"PROMISC") && flags.contains(&"ALLMULTI") && flags.contains(&"UP"));

    nl.set_nomaster(p0.index).unwrap();
    nl.set_alias(p0.index, None).unwrap();
    nl.set_promisc(p0.index, false).unwrap();
    nl.set_allmulti(p0.index, false).unwrap();
    nl.set_down(p0.index).unwrap();
    nl.set_name(p0.index, "renamed").unwrap();
    let l = nl.link_by_name("renamed").unwrap().unwrap();
    assert_eq!(l.index, p0.index);
    assert!(l.master.is_none() && l.alias.is_none() && !l.promisc && !l.allmulti && !l.up);
    assert!(first(&a.ip_json(&["link", "show", "renamed"])).get("master").is_none());

    nl.set_netns(l.index, hb.as_fd()).unwrap();
    assert!(nl.link_by_name("renamed").unwrap().is_none());
    assert!(nlb.link_by_name("renamed").unwrap().is_some());
    b.ip(&["link", "show", "renamed"]);

    let names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
    assert!(
        names.contains(&"br0".to_string()) && names.contains(&"p1".to_string()) && names.contains(&"lo".to_string())
    );
    nl.delete_link(br.index).unwrap();
    assert!(nl.link_by_name("br0").unwrap().is_none());
    let e = nl.delete_link(br.index).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn macvlan_and_vxlan() {
    let a = TestNs::new_node("mv");
    let (_h, mut nl) = open(&a);
    nl.create_link(&LinkSpec::veth("parent0", "parent1")).unwrap();
    let parent = nl.link_by_name("parent0").unwrap().unwrap();
    let spec = LinkSpec::new(
        "mv0",
        LinkKind::Macvlan {
            mode: MacvlanMode::Bridge,
            bc_queue_len: Some(1234),
        },
    )
    .parent(parent.index)
    .mtu(1400);
    nl.create_link(&spec).unwrap();
    let mv = nl.link_by_name("mv0").unwrap().unwrap();
    assert_eq!(mv.kind, Some(LinkType::Macvlan));
    assert_eq!(mv.macvlan_mode, Some(MacvlanMode::Bridge));
    assert_eq!(mv.link, Some(parent.index));
    let j = a.ip_json(&["-d", "link", "show", "mv0"]);
    assert_eq!(first(&j)["linkinfo"]["info_data"]["mode"], "bridge");
    assert_eq!(first(&j)["linkinfo"]["info_data"]["bcqueuelen"], 1234);

    nl.add_addr(parent.index, net("192.168.50.1/24"), false).unwrap();
    let spec = LinkSpec::new(
        "vx0",
        LinkKind::Vxlan {
            vni: 42,
            local: Some(ip("192.168.50.1")),
            dev: Some(parent.index),
            port: Some(8472),
            learning: false,
        },
    );
    nl.create_link(&spec).unwrap();
    let vx = nl.link_by_name("vx0").unwrap().unwrap();
    assert_eq!(vx.vxlan_id, Some(42));
    let j = a.ip_json(&["-d", "link", "show", "vx0"]);
    let d = &first(&j)["linkinfo"]["info_data"];
    assert_eq!(d["id"], 42);
    assert_eq!(d["port"], 8472);
    assert_eq!(d["local"], "192.168.50.1");
    assert_eq!(d["learning"], false);

    // FDB entry on the vxlan device and a permanent neighbour.
    let mac = [0x02, 0, 0, 0, 0, 0x42];
    nl.replace_neigh(&Neigh::fdb(vx.index, mac, ip("192.168.50.9")))
        .unwrap();
    let fdb = nl.neighs(Some(vx.index), IpFamily::All, true).unwrap();
    assert!(
        fdb.iter()
            .any(|n| n.lladdr == Some(mac) && n.ip == Some(ip("192.168.50.9"))),
        "{fdb:?}"
    );
    let out = std::process::Command::new("bridge")
        .args(["-n", a.name(), "fdb", "show", "dev", "vx0"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("02:00:00:00:00:42 dst 192.168.50.9"));
    nl.del_neigh(&Neigh::fdb(vx.index, mac, ip("192.168.50.9"))).unwrap();

    nl.add_neigh(&Neigh::permanent(parent.index, ip("192.168.50.7"), mac))
        .unwrap();
    let e = nl
        .add_neigh(&Neigh::permanent(parent.index, ip("192.168.50.7"), mac))
        .unwrap_err();
    assert!(e.is_exists(), "{e}");
    let j = a.ip_json(&["neigh", "show", "dev", "parent0"]);
    assert_eq!(first(&j)["dst"], "192.168.50.7");
    assert_eq!(first(&j)["lladdr"], "02:00:00:00:00:42");
    let n = nl.neighs(Some(parent.index), IpFamily::V4, false).unwrap();
    assert_eq!(n.len(), 1);
    nl.del_neigh(&n[0]).unwrap();
    assert!(nl.neighs(Some(parent.index), IpFamily::V4, false).unwrap().is_empty());
}

/// Kinds this kernel lacks: the error names the object and carries errno and ext-ack.
#[test]
fn unsupported_kinds_report_kernel_error() {
    let a = TestNs::new_node("uk");
    let (_h, mut nl) = open(&a);
    nl.create_link(&LinkSpec::veth("par0", "par1")).unwrap();
    let p = nl.link_by_name("par0").unwrap().unwrap().index;
    for spec in [
        LinkSpec::new("d0", LinkKind::Dummy),
        LinkSpec::new("v0", LinkKind::Vlan { id: 100 }).parent(p),
        LinkSpec::new("i0", LinkKind::Ipvlan { mode: IpvlanMode::L2 }).parent(p),
    ] {
        match nl.create_link(&spec) {
            Ok(()) => {
                // A kernel with the driver: check it really exists.
                assert!(nl.link_by_name(&spec.name).unwrap().is_some());
            }
            Err(e) => {
                assert!(e.errno().is_some(), "{e}");
                assert!(e.ext_ack().unwrap_or("").contains("Unknown device type"), "{e}");
                assert!(
                    e.to_string()
                        .starts_with(&format!("create {} \"{}\": ", spec.kind.name(), spec.name)),
                    "{e}"
                );
            }
        }
    }
    let e = nl.create_link(&LinkSpec::veth("par0", "x1")).unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert!(nl.link_by_name("nonexistent0").unwrap().is_none());
    assert!(nl.link_by_index(999_999).unwrap().is_none());
}

#[test]
fn addresses_and_dad() {
    let a = TestNs::new_node("ad");
    let (_h, mut nl) = open(&a);
    nl.create_link(&LinkSpec::veth("e0", "e1")).unwrap();
    let e0 = nl.link_by_name("e0").unwrap().unwrap().index;
    let e1 = nl.link_by_name("e1").unwrap().unwrap().index;
    nl.set_up(e0).unwrap();
    nl.set_up(e1).unwrap();
    nl.wait_oper_up(e0, Duration::from_secs(5)).unwrap();
    // Slow DAD so the tentative state is observable.
    sh(&a, &["sysctl", "-qw", "net.ipv6.conf.e0.dad_transmits=3"]);
    nl.add_addr(e0, net("fd01::1/64"), false).unwrap();
    let t = nl.addrs_tentative(e0).unwrap();
    assert!(
        t.iter().any(|x| x.ip == net("fd01::1/64")),
        "tentative right after add: {t:?}"
    );
    let j = a.ip_json(&["addr", "show", "dev", "e0"]);
    assert!(first(&j)["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["local"] == "fd01::1" && x["tentative"] == true));

    nl.add_addr(e0, net("10.1.1.1/31"), false).unwrap();
    let e = nl.add_addr(e0, net("10.1.1.1/31"), false).unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert!(e.to_string().contains("10.1.1.1/31"), "{e}");
    assert_eq!(nl.addrs(Some(e0), IpFamily::V4).unwrap().len(), 1);
    nl.del_addr(e0, net("10.1.1.1/31")).unwrap();
    assert!(nl.addrs(Some(e0), IpFamily::V4).unwrap().is_empty());
    assert!(nl
        .addrs(None, IpFamily::All)
        .unwrap()
        .iter()
        .any(|x| x.ip == net("127.0.0.1/8")));
}

#[test]
fn routes_tables_ecmp() {
    let a = TestNs::new_node("rt");
    let (_h, mut nl) = open(&a);
    nl.create_link(&LinkSpec::veth("r0", "r1").up()).unwrap();
    nl.create_link(&LinkSpec::veth("s0", "s1").up()).unwrap();
    let r0 = nl.link_by_name("r0").unwrap().unwrap().index;
    let s0 = nl.link_by_name("s0").unwrap().unwrap().index;
    nl.add_addr(r0, net("10.2.0.1/24"), false).unwrap();
    nl.add_addr(s0, net("10.3.0.1/24"), false).unwrap();
    nl.add_addr(r0, net("fd02::1/64"), true).unwrap();
    nl.add_addr(s0, net("fd03::1/64"), true).unwrap();

    // Link-scope route with metric, metrics and prefsrc, in a non-main table.
    let mut r = Route::new(net("10.50.0.0/16")).oif(r0).scope(SCOPE_LINK).table(1000);
    r.priority = Some(77);
    r.mtu = Some(1300);
    r.advmss = Some(1200);
    r.src = Some(ip("10.2.0.1"));
    nl.add_route(&r).unwrap();
    let e = nl.add_route(&r).unwrap_err();
    assert!(e.is_exists(), "{e}");
    let got = nl.routes(IpFamily::V4, Some(1000)).unwrap();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].mtu, got[0].advmss, got[0].priority, got[0].src),
        (Some(1300), Some(1200), Some(77), r.src)
    );
    let j = a.ip_json(&["route", "show", "table", "1000"]);
    assert_eq!(first(&j)["dst"], "10.50.0.0/16");
    assert_eq!(first(&j)["metric"], 77);
    assert_eq!(first(&j)["prefsrc"], "10.2.0.1");

    // Replace switches the device.
    let mut r2 = r.clone();
    r2.oif = Some(s0);
    r2.src = None;
    nl.replace_route(&r2).unwrap();
    let got = nl.routes(IpFamily::V4, Some(1000)).unwrap();
    assert_eq!((got.len(), got[0].oif), (1, Some(s0)));
    // Delete without knowing scope/protocol.
    nl.del_route(&Route::new(net("10.50.0.0/16")).table(1000)).unwrap();
    assert!(nl.routes(IpFamily::V4, Some(1000)).unwrap().is_empty());

    // IPv4 ECMP as one multipath route.
    let mut m = Route::new(net("10.60.0.0/16"));
    m.multipath = vec![
        NextHop {
            gw: Some(ip("10.2.0.2")),
            oif: Some(r0),
            weight: 1,
        },
        NextHop {
            gw: Some(ip("10.3.0.2")),
            oif: Some(s0),
            weight: 2,
        },
    ];
    nl.add_route(&m).unwrap();
    let got: Vec<_> = nl
        .routes(IpFamily::V4, Some(254))
        .unwrap()
        .into_iter()
        .filter(|x| x.dst == m.dst)
        .collect();
    assert_eq!(got[0].multipath, m.multipath);
    let j = a.ip_json(&["route", "show", "10.60.0.0/16"]);
    assert_eq!(first(&j)["nexthops"].as_array().unwrap().len(), 2);

    // IPv6 ECMP by appending a second gateway.
    let r6a = Route::new(net("fd60::/64")).gw(ip("fd02::2")).oif(r0);
    let r6b = Route::new(net("fd60::/64")).gw(ip("fd03::2")).oif(s0);
    nl.add_route(&r6a).unwrap();
    nl.append_route(&r6b).unwrap();
    let j = a.ip_json(&["-6", "route", "show", "fd60::/64"]);
    assert_eq!(first(&j)["nexthops"].as_array().unwrap().len(), 2, "{j}");
    let got: Vec<_> = nl
        .routes(IpFamily::V6, None)
        .unwrap()
        .into_iter()
        .filter(|x| x.dst == net("fd60::/64"))
        .collect();
    assert_eq!(got[0].multipath.len(), 2, "{got:?}");
    nl.del_route(&r6b).unwrap();
    let j = a.ip_json(&["-6", "route", "show", "fd60::/64"]);
    assert_eq!(first(&j)["gateway"], "fd02::2");

    let e = nl.del_route(&Route::new(net("10.99.99.0/24"))).unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn fib_rules() {
    let a = TestNs::new_node("ru");
    let (_h, mut nl) = open(&a);
    let mut r = Rule::new(IpFamily::V4, 100);
    r.priority = Some(1000);
    r.src = Some(net("10.7.0.0/16"));
    r.iif = Some("lo".into());
    nl.add_rule(&r).unwrap();
    let rules = nl.rules(IpFamily::V4).unwrap();
    assert!(rules.contains(&r), "{rules:?}");
    let j = a.ip_json(&["rule", "show"]);
    let hit = j
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["priority"] == 1000)
        .expect("rule 1000");
    assert_eq!(hit["src"], "10.7.0.0");
    assert_eq!(hit["srclen"], 16);
    assert_eq!(hit["table"], "100");
    nl.del_rule(&r).unwrap();
    assert!(!nl.rules(IpFamily::V4).unwrap().contains(&r));

    let mut r6 = Rule::new(IpFamily::V6, 200);
    r6.priority = Some(2000);
    r6.dst = Some(net("fd00::/8"));
    nl.add_rule(&r6).unwrap();
    assert!(nl.rules(IpFamily::V6).unwrap().contains(&r6));
}

#[test]
fn bridge_port_options_and_vlans() {
    let a = TestNs::new_node("bp");
    let (_h, mut nl) = open(&a);
    nl.create_link(&LinkSpec::new("br0", LinkKind::Bridge { vlan_filtering: None }))
        .unwrap();
    nl.create_link(&LinkSpec::veth("bp0", "bp1")).unwrap();
    let br = nl.link_by_name("br0").unwrap().unwrap().index;
    let p = nl.link_by_name("bp0").unwrap().unwrap().index;
    nl.set_master(p, br).unwrap();
    nl.set_bridge_port(p, Some(true), Some(true)).unwrap();
    let j = a.ip_json(&["-d", "link", "show", "bp0"]);
    let sd = &first(&j)["linkinfo"]["info_slave_data"];
    assert_eq!(sd["hairpin"], true);
    assert_eq!(sd["isolated"], true);
    nl.set_bridge_port(p, Some(false), None).unwrap();
    let j = a.ip_json(&["-d", "link", "show", "bp0"]);
    let sd = &first(&j)["linkinfo"]["info_slave_data"];
    assert_eq!(
        (sd["hairpin"].clone(), sd["isolated"].clone()),
        (Value::Bool(false), Value::Bool(true))
    );

    // Without CONFIG_BRIDGE_VLAN_FILTERING the kernel refuses; with it, check the round trip.
    let v = BridgeVlan {
        vid: 10,
        pvid: true,
        untagged: true,
    };
    match nl.bridge_vlan_add(p, v) {
        Ok(()) => {
            assert!(nl.bridge_vlans(p).unwrap().contains(&v));
            nl.bridge_vlan_del(p, 10).unwrap();
        }
        Err(e) => assert!(e.errno().is_some(), "{e}"),
    }
    let _ = nl.bridge_vlans(p);
}

/// Many links: the dump spans several receive buffers.
#[test]
fn big_dump() {
    let a = TestNs::new_node("bd");
    let (_h, mut nl) = open(&a);
    for i in 0..60 {
        nl.create_link(&LinkSpec::veth(format!("x{i}"), format!("y{i}")))
            .unwrap();
    }
    let links = nl.links().unwrap();
    assert_eq!(links.len(), 121);
    let j = a.ip_json(&["link", "show"]);
    assert_eq!(j.as_array().unwrap().len(), 121);
}

#[test]
fn netns_open_kinds_and_guard() {
    match NetNs::open("/run/netns/definitely-not-here-xyz") {
        Err(NsError::NotExist(_)) => {}
        other => panic!("{other:?}"),
    }
    match NetNs::open("/tmp") {
        Err(NsError::NotNetns(_)) => {}
        other => panic!("{other:?}"),
    }
    let a = TestNs::new_node("ns");
    let h = NetNs::open(a.path()).unwrap();
    let root = NetNs::current().unwrap();
    assert!(!root.same_as(&h).unwrap());
    assert!(NetNs::open("/proc/self/ns/net")
        .unwrap()
        .same_as(&NetNs::open("/proc/self/ns/net").unwrap())
        .unwrap());
    {
        let _g = h.enter().unwrap();
        assert!(NetNs::current().unwrap().same_as(&h).unwrap());
        // sysctls resolve against the entered namespace.
        sysctl::write("net/ipv4/ip_forward", "1").unwrap();
        assert_eq!(sysctl::read("net/ipv4/ip_forward").unwrap(), "1");
        assert!(!sysctl::write_if_different("net/ipv4/ip_forward", "1").unwrap());
        assert!(sysctl::write_if_different("net/ipv4/ip_forward", "0").unwrap());
        assert!(sysctl::write_if_different("net/ipv4/ip_forward", "1").unwrap());
        // tap in the entered namespace.
        let name = tuntap::create(&tuntap::TunTap {
            name: "tap%d".into(),
            vnet_hdr: true,
            multi_queue: true,
            owner: Some(0),
            group: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(name, "tap0");
    }
    assert!(NetNs::current().unwrap().same_as(&root).unwrap());
    let (ok, out) = sh(&a, &["sysctl", "-n", "net.ipv4.ip_forward"]);
    assert!(ok && out.trim() == "1", "{out}");
    let j = a.ip_json(&["-d", "link", "show", "tap0"]);
    assert_eq!(first(&j)["linkinfo"]["info_data"]["type"], "tap");
    let mut nl = Netlink::in_netns(&h).unwrap();
    let tap = nl.link_by_name("tap0").unwrap().unwrap();
    assert_eq!(tap.kind, Some(LinkType::Tun));
    nl.delete_link(tap.index).unwrap();
}

/// Runs a command inside the namespace; (success, stdout+stderr).
fn sh(ns: &TestNs, argv: &[&str]) -> (bool, String) {
    let o = ns.exec(argv);
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s += &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), s)
}
