//! dhcp side by side with Debian's reference (plugin and daemon, /usr/lib/cni/dhcp 1.1.1)
//! against the same dnsmasq setup; each plugin against the other's daemon, both speaking Go
//! net/rpc; and the three behaviours fixed for parity (`-hostprefix`, `provide`, option 33)
//! compared with the reference's (needs root, dnsmasq and the reference).

use crate::common::dhcp_rig::{client_id_hex, wait_for, DhcpRig, Server};
use crate::common::rig::{first_ip, reference_bin, require_reference, TestNs};
use crate::common::veth_rig::{normalise_result, Impl};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn ready(test: &str) -> bool {
    crate::common::dhcp_rig::ready(test, require_reference(test, "dhcp"))
}

/// The result without what differs by run (MACs, veth names, the leased address) and
/// without `dns`: the reference does not report the lease's DNS options, we do.
fn shape(r: &Value) -> Value {
    let mut r = normalise_result(r);
    r["ips"][0]["address"] = json!("ADDR");
    r.as_object_mut().unwrap().remove("dns");
    r
}

/// One ADD + DEL through `imp` (plugins and daemon): the result, the lease's client id, the
/// ADD's time, and whether DEL released the lease.
fn run(imp: Impl, server: Server) -> (Value, String, Duration, bool) {
    let r = DhcpRig::new(&format!("dr{}", imp as u8), imp, server);
    let p = r.rig.pod("dr");
    let c = r.conf("1.0.0", json!({}));
    let t = Instant::now();
    let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    let took = t.elapsed();
    let ip = first_ip(&res);
    let cid = r.lease_of_ip(&ip).expect("a lease").3;
    let del = r.rig.del(&c, "c1", p.path_str(), "eth0");
    assert!(del.success() || imp == Impl::Reference, "{}", del.stdout);
    // The reference may release asynchronously: give dnsmasq a moment either way.
    let released = {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            if r.lease_of_ip(&ip).is_none() {
                break true;
            }
            if Instant::now() > end {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    (res, cid, took, released)
}

#[test]
fn same_result_shape_and_client_id_as_the_reference() {
    if !ready("same_result_shape_and_client_id_as_the_reference") {
        return;
    }
    for server in [Server::Bridge, Server::Uplink] {
        let (ours, our_cid, our_t, our_rel) = run(Impl::Ours, server);
        let (theirs, their_cid, their_t, their_rel) = run(Impl::Reference, server);
        eprintln!("ADD: ours {our_t:?}, reference {their_t:?}; released: ours {our_rel}, reference {their_rel}");
        assert_eq!(shape(&ours), shape(&theirs), "ours {ours}\nreference {theirs}");
        assert_eq!(our_cid, their_cid);
        assert_eq!(our_cid, client_id_hex("c1", "eth0"));
        assert!(our_rel, "our DEL did not release the lease");
    }
}

/// DEL of the dhcp plugin itself, then of the interface plugin: the reference's bridge
/// deletes the pod's link before it calls its IPAM's DEL, after which no DHCPRELEASE can be
/// sent (its own daemon's fails too), so the release is asked for while the link is there.
fn release(r: &DhcpRig, c: &Value, cid: &str, p: &TestNs, ip: &str) {
    r.ipam("DEL", c, cid, p.path_str(), "eth0").expect_ok();
    wait_for(
        || r.lease_of_ip(ip).is_none(),
        "the lease to be released",
        Duration::from_secs(10),
    );
    r.rig.del(c, cid, p.path_str(), "eth0").expect_ok();
}

/// ADD, CHECK, DEL (twice) of one pod through the rig's plugins against whatever daemon
/// runs: the lease is got (address on the pod, dnsmasq has it under the reference's client
/// id), CHECK passes, DEL releases it.
fn pairing_cycle(r: &DhcpRig, p: &TestNs) -> Value {
    let c = r.conf("1.0.0", json!({}));
    let res = r.rig.add(&c, "c1", p, "eth0").expect_ok().json();
    let ip = first_ip(&res);
    assert_eq!(res["ips"][0]["address"], format!("{ip}/24"), "{res}");
    assert_eq!(res["ips"][0]["gateway"], "10.94.0.1", "{res}");
    assert_eq!(
        res["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.94.0.1"}),
        "{res}"
    );
    let lease = r
        .lease_of_ip(&ip)
        .unwrap_or_else(|| panic!("no lease for {ip}: {:?}", r.leases()));
    assert_eq!(lease.3, client_id_hex("c1", "eth0"));
    let addrs = p.ip(&["-4", "addr", "show", "dev", "eth0"]);
    assert!(addrs.contains(&format!("{ip}/24")), "{addrs}");
    r.rig.check(&c, &res, "c1", p, "eth0").expect_ok();
    release(r, &c, "c1", p, &ip);
    r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    res
}

/// Our plugins (bridge and dhcp) with the reference's daemon, as on a node whose
/// distribution runs its own `dhcp daemon` as a service; STATUS and GC, which that daemon
/// lacks, pass.
#[test]
fn our_plugin_with_the_reference_daemon() {
    if !ready("our_plugin_with_the_reference_daemon") {
        return;
    }
    let mut r = DhcpRig::bare("drp", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&[]);
    r.start_daemon_bin(&reference_bin("dhcp"), &[]);
    let p = r.rig.pod("drp");
    pairing_cycle(&r, &p);
    assert!(p.link("eth0").is_none());
    let c = r.conf("1.1.0", json!({}));
    r.ipam("STATUS", &c, "", "", "").expect_ok();
    r.ipam("GC", &c, "", "", "").expect_ok();
    assert!(r.daemon.as_mut().unwrap().alive(), "the reference daemon died");
}

/// The reference's plugins (bridge and dhcp) with our daemon; and a renewal by our daemon of
/// the lease the reference's plugin asked for.
#[test]
fn reference_plugin_with_our_daemon() {
    if !ready("reference_plugin_with_our_daemon") {
        return;
    }
    let mut r = DhcpRig::bare("drd", Impl::Reference, Server::Bridge);
    r.start_dnsmasq(&["--dhcp-option=option:T1,3", "--dhcp-option=option:T2,100"]);
    let ours = r.dir.join("dhcp");
    std::os::unix::fs::symlink(crate::common::veth_rig::ours(), &ours).unwrap();
    r.start_daemon_bin(&ours, &[]);
    let p = r.rig.pod("drd");
    pairing_cycle(&r, &p);
    // Again, kept this time until our daemon renews it.
    let (c, res, ip) = r.add_and_wait_for_renewal("c2", &p);
    r.rig.check(&c, &res, "c2", &p, "eth0").expect_ok();
    release(&r, &c, "c2", &p, &ip);
}

/// `-hostprefix` prefixes the socket path as well as the netns path (upstream daemon.go:
/// `getListener(hostPrefix + socketPath)`): a daemon in a container with the host's root at
/// PREFIX, told `-socketpath /S`, listens on PREFIX/S, where the plugin on the host finds it.
#[test]
fn hostprefix_prefixes_the_socket_too() {
    if !ready("hostprefix_prefixes_the_socket_too") {
        return;
    }
    for imp in [Impl::Reference, Impl::Ours] {
        let mut r = DhcpRig::bare(&format!("drh{}", imp as u8), imp, Server::Bridge);
        r.start_dnsmasq(&[]);
        // The "host root" seen from the daemon: the netns paths the plugin sends resolve
        // under it.
        let root = r.dir.join("hostroot");
        std::fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink("/run", root.join("run")).unwrap();
        let host_sock: PathBuf = root.join("cni-dhcp.sock");
        // The rig's `dhcp`: ours (called as dhcp) or the reference's.
        let bin = r.rig.bin.join("dhcp");
        let prefix = root.to_str().unwrap().to_string();
        r.start_daemon_at(&bin, "/cni-dhcp.sock", &host_sock, &["-hostprefix", &prefix]);
        let p = r.rig.pod("drh");
        let mut c = r.conf("1.0.0", json!({}));
        c["ipam"]["daemonSocketPath"] = json!(host_sock);
        let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
        let ip = first_ip(&res);
        assert!(r.lease_of_ip(&ip).is_some(), "{imp:?}: no lease");
        release(&r, &c, "c1", &p, &ip);
        if imp == Impl::Ours {
            assert!(r.daemon.as_mut().unwrap().terminate());
            assert!(!host_sock.exists(), "the prefixed socket is removed on exit");
        }
    }
}

/// `provide` with both `value` and `fromArg`: the reference sends one host-name option, the
/// argument's when CNI_ARGS has it, else the value (its prepareOptions fills a map by code);
/// dnsmasq records what came.
#[test]
fn provide_value_and_from_arg_as_the_reference() {
    if !ready("provide_value_and_from_arg_as_the_reference") {
        return;
    }
    let mut seen = Vec::new();
    for imp in [Impl::Reference, Impl::Ours] {
        let r = DhcpRig::new(&format!("drv{}", imp as u8), imp, Server::Bridge);
        let p = r.rig.pod("drv");
        let c = r.conf(
            "1.0.0",
            json!({"provide": [{"option": "host-name", "value": "fallback", "fromArg": "K8S_POD_NAME"}]}),
        );
        let mut names = Vec::new();
        for (cid, args) in [("c1", "IgnoreUnknown=1;K8S_POD_NAME=web-1"), ("c2", "IgnoreUnknown=1")] {
            let res = r
                .rig
                .run("bridge", "ADD", &c, cid, p.path_str(), "eth0", args)
                .expect_ok()
                .json();
            let ip = first_ip(&res);
            names.push(r.lease_of_ip(&ip).unwrap().2);
            release(&r, &c, cid, &p, &ip);
        }
        seen.push(names);
    }
    assert_eq!(seen[0], ["web-1", "fallback"], "the reference");
    assert_eq!(seen[1], seen[0], "ours");
}

/// Option 33 (classful static routes) without 121 becomes routes ahead of the default route,
/// as with the reference; with 121 present it is ignored (RFC 3442).
#[test]
fn option_33_routes_as_the_reference() {
    if !ready("option_33_routes_as_the_reference") {
        return;
    }
    let statics = "--dhcp-option=33,10.0.0.0,10.94.0.2,192.168.7.0,10.94.0.3";
    let want = json!([
        {"dst": "10.0.0.0/8", "gw": "10.94.0.2"},
        {"dst": "192.168.7.0/24", "gw": "10.94.0.3"},
        {"dst": "0.0.0.0/0", "gw": "10.94.0.1"},
    ]);
    for imp in [Impl::Reference, Impl::Ours] {
        let mut r = DhcpRig::bare(&format!("dro{}", imp as u8), imp, Server::Bridge);
        r.start_dnsmasq(&[statics]);
        r.start_daemon(&[]);
        let p = r.rig.pod("dro");
        // The reference asks for option 33 only when the config does; so do we.
        let c = r.conf("1.0.0", json!({"request": [{"option": "33"}]}));
        let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
        assert_eq!(res["routes"], want, "{imp:?}: {res}");
        let routes = p.ip(&["-4", "route", "show"]);
        assert!(
            routes.contains("10.0.0.0/8 via 10.94.0.2 dev eth0"),
            "{imp:?}: {routes}"
        );
        assert!(
            routes.contains("192.168.7.0/24 via 10.94.0.3 dev eth0"),
            "{imp:?}: {routes}"
        );
        r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
    }
    // With 121 as well: only its routes.
    let mut r = DhcpRig::bare("dro9", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&[statics, "--dhcp-option=121,10.9.0.0/16,10.94.0.9"]);
    r.start_daemon(&[]);
    let p = r.rig.pod("dro9");
    let c = r.conf("1.0.0", json!({"request": [{"option": "33"}]}));
    let res = r.rig.add(&c, "c1", &p, "eth0").expect_ok().json();
    assert_eq!(
        res["routes"],
        json!([{"dst": "10.9.0.0/16", "gw": "10.94.0.9"}]),
        "{res}"
    );
    r.rig.del(&c, "c1", p.path_str(), "eth0").expect_ok();
}
