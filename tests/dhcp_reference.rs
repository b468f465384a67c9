//! dhcp side by side with Debian's reference (plugin and daemon, /usr/lib/cni/dhcp) against
//! the same dnsmasq setup; and each plugin against the other's daemon (needs root, dnsmasq
//! and the reference).

mod common;

use common::dhcp_rig::{client_id_hex, wait_for, DhcpRig, Server};
use common::rig::{first_ip, require_reference};
use common::veth_rig::{normalise_result, Impl};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn ready(test: &str) -> bool {
    common::dhcp_rig::ready(test, require_reference(test, "dhcp"))
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

/// Our plugin against a still-running reference daemon: says which protocol it met.
#[test]
fn our_plugin_names_the_reference_daemon() {
    if !ready("our_plugin_names_the_reference_daemon") {
        return;
    }
    let mut r = DhcpRig::bare("drp", Impl::Ours, Server::Bridge);
    r.start_dnsmasq(&[]);
    r.start_daemon_bin(&common::rig::reference_bin("dhcp"), &[]);
    let p = r.rig.pod("drp");
    let c = r.conf("1.0.0", json!({}));
    let o = r.rig.add(&c, "c1", &p, "eth0");
    assert!(!o.success());
    assert!(o.msg().contains("Go net/rpc"), "{}", o.stdout);
    assert!(p.link("eth0").is_none(), "interface left behind");
}

/// The reference plugin against our daemon: it prints our HTTP answer.
#[test]
fn reference_plugin_against_our_daemon() {
    if !ready("reference_plugin_against_our_daemon") {
        return;
    }
    let mut r = DhcpRig::bare("drd", Impl::Reference, Server::Bridge);
    r.start_dnsmasq(&[]);
    let ours = r.dir.join("dhcp");
    std::os::unix::fs::symlink(common::veth_rig::ours(), &ours).unwrap();
    r.start_daemon_bin(&ours, &[]);
    let p = r.rig.pod("drd");
    let c = r.conf("1.0.0", json!({}));
    let o = r.rig.add(&c, "c1", &p, "eth0");
    assert!(!o.success());
    assert!(o.stdout.contains("Go net/rpc is not spoken here"), "{}", o.stdout);
    wait_for(|| r.leases().is_empty(), "no lease", Duration::from_secs(1));
}
