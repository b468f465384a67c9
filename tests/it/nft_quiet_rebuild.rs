//! Shared chains are rebuilt only when they differ: a rebuild frees rules, and every close
//! of an nftables socket then waits for the kernel to retire them (an RCU grace period,
//! about 8-14 ms here), which used to double the cost of an ipMasq ADD.

use crate::common::rig::{require_root, TestNs};
use cni_multi::linux::nft::{Family, NftSocket};
use cni_multi::pkg::masquerade::nftables as masquerade;

fn handles(sock: &NftSocket, chain: &str) -> Vec<u64> {
    sock.list_rules(Family::Inet, masquerade::TABLE, chain)
        .unwrap()
        .iter()
        .filter_map(|r| r.handle)
        .collect()
}

#[test]
fn masquerade_base_chain_is_left_alone_when_right() {
    if !require_root("masquerade_base_chain_is_left_alone_when_right") {
        return;
    }
    let node = TestNs::new_node("quiet");
    let sock = NftSocket::open_in_netns_path(node.path()).unwrap();
    masquerade::setup(&sock, "n", "eth0", "c1", &["10.60.0.2/24".parse().unwrap()]).unwrap();
    let first = handles(&sock, "postrouting");
    assert_eq!(first.len(), 3, "multicast v4/v6 returns and the goto");
    masquerade::setup(&sock, "n", "eth0", "c2", &["10.60.0.3/24".parse().unwrap()]).unwrap();
    assert_eq!(
        handles(&sock, "postrouting"),
        first,
        "the right base chain is not rebuilt"
    );
    assert_eq!(handles(&sock, masquerade::CHAIN).len(), 2);

    // Someone edits the base chain: the next setup restores its shape.
    node.exec_ok(&["nft", "add rule inet cni_plugins_masquerade postrouting counter"]);
    masquerade::setup(&sock, "n", "eth0", "c3", &["10.60.0.4/24".parse().unwrap()]).unwrap();
    let now = handles(&sock, "postrouting");
    assert_eq!(now.len(), 3);
    assert_ne!(now, first, "a wrong base chain is rebuilt");
    // chain_holds is what decides.
    let rules = sock.list_rules(Family::Inet, masquerade::TABLE, "postrouting").unwrap();
    assert!(sock
        .chain_holds(Family::Inet, masquerade::TABLE, "postrouting", &rules)
        .unwrap());
    assert!(!sock
        .chain_holds(Family::Inet, masquerade::TABLE, "postrouting", &rules[..2])
        .unwrap());
}
