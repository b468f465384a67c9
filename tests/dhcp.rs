//! dhcp IPAM and its daemon against a real DHCP server (dnsmasq) in throw-away namespaces:
//! pods via bridge + dhcp and macvlan + dhcp (needs root and dnsmasq).

mod common;

use common::dhcp_rig::{client_id_hex, wait_for, DhcpRig, Server};
use common::rig::{require_root, tool, TestNs};
use common::veth_rig::Impl;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ready(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if !tool("dnsmasq").is_file() {
        assert!(
            !common::rig::in_ci(),
            "{test}: needs dnsmasq (dnsmasq-base), and CI=true"
        );
        eprintln!("{test}: skipped: needs dnsmasq");
        return false;
    }
    true
}

fn addr(r: &Value) -> String {
    r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn pod_addrs(p: &TestNs, ifname: &str) -> Vec<String> {
    p.ip_json(&["-4", "addr", "show", "dev", ifname])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// ADD gives a lease: address on the interface, gateway, routes, DNS; dnsmasq shows our client
/// id; CHECK passes; DEL releases it (gone from dnsmasq's lease file) and a second DEL passes.
fn lease_cycle(r: &DhcpRig, p: &TestNs, cid: &str) -> Value {
    let c = r.conf("1.0.0", json!({}));
    let t = Instant::now();
    let res = r.rig.add(&c, cid, p, "eth0").expect_ok().json();
    eprintln!("ADD took {:?}", t.elapsed());
    let ip = addr(&res);
    let n: u8 = ip.strip_prefix("10.94.0.").unwrap().parse().unwrap();
    assert!((20..=200).contains(&n), "{res}");
    assert_eq!(res["ips"][0]["address"], format!("{ip}/24"));
    assert_eq!(res["ips"][0]["gateway"], "10.94.0.1", "{res}");
    assert_eq!(res["routes"], json!([{"dst": "0.0.0.0/0", "gw": "10.94.0.1"}]), "{res}");
    // macvlan, like the reference's, reports the config's DNS instead of the IPAM's.
    let dns = match r.server {
        Server::Bridge => {
            json!({"nameservers": ["10.94.0.53"], "domain": "example.test", "search": ["a.example.test"]})
        }
        Server::Uplink => json!({}),
    };
    assert_eq!(res["dns"], dns, "{res}");
    assert_eq!(pod_addrs(p, "eth0"), [format!("{ip}/24")]);
    let routes = p.ip(&["-4", "route", "show", "default"]);
    assert!(routes.contains("via 10.94.0.1 dev eth0"), "{routes}");
    let lease = r
        .lease_of_ip(&ip)
        .unwrap_or_else(|| panic!("no lease for {ip}: {:?}", r.leases()));
    assert_eq!(lease.3, client_id_hex(cid, "eth0"));
    r.rig.check(&c, &res, cid, p, "eth0").expect_ok();
    r.rig.del(&c, cid, p.path_str(), "eth0").expect_ok();
    wait_for(
        || r.lease_of_ip(&ip).is_none(),
        "the lease to be released",
        Duration::from_secs(10),
    );
    r.rig.del(&c, cid, p.path_str(), "eth0").expect_ok();
    res
}

#[test]
fn bridge_pod_gets_lease_and_releases_it() {
    if !ready("bridge_pod_gets_lease_and_releases_it") {
        return;
    }
    let r = DhcpRig::new("dhb", Impl::Ours, Server::Bridge);
    let p = r.rig.pod("dhb");
    lease_cycle(&r, &p, "c1");
    assert!(p.link("eth0").is_none());
    // A DEL of an attachment the daemon never knew succeeds.
    r.rig
        .del(&r.conf("1.0.0", json!({})), "never", p.path_str(), "eth0")
        .expect_ok();
}

#[test]
fn macvlan_pod_gets_lease_and_releases_it() {
    if !ready("macvlan_pod_gets_lease_and_releases_it") {
        return;
    }
    let r = DhcpRig::new("dhm", Impl::Ours, Server::Uplink);
    let p = r.rig.pod("dhm");
    lease_cycle(&r, &p, "m1");
    assert!(p.link("eth0").is_none());
}
