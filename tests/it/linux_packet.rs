//! Packet sockets (linux::packet) between two throw-away namespaces: an interface with no
//! address yet sends and receives, and the kernel filter passes only UDP to the chosen port.

use std::os::fd::AsFd;

use crate::common::rig::{require_root, TempDir};
use cni_multi::ipam::dhcp::packet::frame_udp;
use cni_multi::linux::netlink::{LinkSpec, VethPeer};
use cni_multi::linux::packet::{PacketSocket, BROADCAST};
use cni_multi::linux::{netns, Netlink};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[test]
fn filter_passes_only_udp_to_the_port() {
    if !require_root("filter_passes_only_udp_to_the_port") {
        return;
    }
    let dir = TempDir::new("packet-netns");
    let a = netns::create_named(dir.path(), "a").unwrap();
    let b = netns::create_named(dir.path(), "b").unwrap();
    let mut na = Netlink::in_netns(&a).unwrap();
    let mut nb = Netlink::in_netns(&b).unwrap();
    na.create_link(&LinkSpec::veth("v0", VethPeer::new("v1").netns(b.as_fd())))
        .unwrap();
    let v0 = na.link_required("v0").unwrap();
    let v1 = nb.link_required("v1").unwrap();
    na.set_up(v0.index).unwrap();
    nb.set_up(v1.index).unwrap();
    na.wait_oper_up(v0.index, Duration::from_secs(5)).unwrap();
    nb.wait_oper_up(v1.index, Duration::from_secs(5)).unwrap();
    let tx = PacketSocket::open(&a, v0.index, 9).unwrap();
    let rx = PacketSocket::open(&b, v1.index, 68).unwrap();
    let any = Ipv4Addr::UNSPECIFIED;
    let mut icmp = frame_udp(any, Ipv4Addr::BROADCAST, 1, 68, b"icmp");
    icmp[9] = 1; // not UDP any more
    let mut frag = frame_udp(any, Ipv4Addr::BROADCAST, 67, 68, b"fragment");
    frag[7] = 8; // fragment offset 8
    for p in [
        frame_udp(any, Ipv4Addr::BROADCAST, 67, 69, b"other port"),
        icmp,
        frag,
        frame_udp(any, Ipv4Addr::BROADCAST, 67, 68, b"wanted"),
    ] {
        tx.send(BROADCAST, &p).unwrap();
    }
    let mut buf = [0u8; 2048];
    let end = Instant::now() + Duration::from_secs(5);
    let got = loop {
        if let Some((n, mac)) = rx.recv(&mut buf).unwrap() {
            break (buf[..n].to_vec(), mac);
        }
        assert!(Instant::now() < end, "nothing received");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(got.0.ends_with(b"wanted"), "{:?}", got.0);
    assert_eq!(Some(got.1), v0.mac);
    assert!(
        rx.recv(&mut buf).unwrap().is_none(),
        "only one datagram passes the filter"
    );
    drop(na);
    drop(nb);
    netns::delete_named(&dir.path().join("a")).unwrap();
    netns::delete_named(&dir.path().join("b")).unwrap();
}
