//! Named namespaces made without `ip`, and ICMP echo without `ping`: what the demo
//! needs so that it runs with nothing but the binary installed.

use std::os::fd::AsFd;

use crate::common::rig::{require_root, TempDir};
use cni_multi::linux::netlink::{LinkSpec, VethPeer};
use cni_multi::linux::{netns, ping, NetNs, Netlink};
use std::time::Duration;

#[test]
fn create_named_ping_and_delete() {
    if !require_root("create_named_ping_and_delete") {
        return;
    }
    let dir = TempDir::new("named-netns");
    let a = netns::create_named(dir.path(), "a").unwrap();
    let b = netns::create_named(dir.path(), "b").unwrap();
    let here = NetNs::current().unwrap();
    assert!(!a.same_as(&here).unwrap(), "a new namespace, not ours");
    assert!(!a.same_as(&b).unwrap());
    assert!(netns::create_named(dir.path(), "a").is_err(), "names are exclusive");
    // veth a:v0 <-> b:v1 with 10.123.0.1/2, made through netlink only.
    let mut na = Netlink::in_netns(&a).unwrap();
    let mut nb = Netlink::in_netns(&b).unwrap();
    na.create_link(&LinkSpec::veth("v0", VethPeer::new("v1").netns(b.as_fd())))
        .unwrap();
    let v0 = na.link_required("v0").unwrap();
    let v1 = nb.link_required("v1").unwrap();
    na.add_addr(v0.index, "10.123.0.1/24".parse().unwrap(), true).unwrap();
    nb.add_addr(v1.index, "10.123.0.2/24".parse().unwrap(), true).unwrap();
    na.add_addr(v0.index, "fd12::1/64".parse().unwrap(), true).unwrap();
    nb.add_addr(v1.index, "fd12::2/64".parse().unwrap(), true).unwrap();
    na.set_up(v0.index).unwrap();
    nb.set_up(v1.index).unwrap();
    ping::ping(&a, "10.123.0.2".parse().unwrap(), Duration::from_secs(2)).unwrap();
    ping::ping(&b, "10.123.0.1".parse().unwrap(), Duration::from_secs(2)).unwrap();
    ping::ping(&a, "fd12::2".parse().unwrap(), Duration::from_secs(2)).unwrap();
    // No route, no reply: the error says so instead of hanging.
    let e = ping::ping(&a, "10.124.0.9".parse().unwrap(), Duration::from_millis(300)).unwrap_err();
    assert!(e.to_string().contains("10.124.0.9"), "{e}");
    let e = ping::ping(&b, "10.123.0.77".parse().unwrap(), Duration::from_millis(300)).unwrap_err();
    assert!(e.to_string().contains("no reply"), "{e}");
    drop((na, nb, a, b));
    netns::delete_named(&dir.join("a")).unwrap();
    netns::delete_named(&dir.join("b")).unwrap();
    assert!(!dir.join("a").exists());
    netns::delete_named(&dir.join("a")).unwrap();
}
