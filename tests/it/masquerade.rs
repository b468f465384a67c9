//! ipMasq helper (`pkg::masquerade`) against the kernel, in throw-away namespaces: the rules
//! print with `nft` as the reference's nftables backend prints them, the outside sees the node's
//! address for pod traffic leaving the subnet and the pod's own address inside it, and DEL / GC
//! remove exactly the right attachments' rules.

use crate::common::fw_rig::*;
use crate::common::rig;
use cni_multi::linux::nft::NftSocket;
use cni_multi::pkg::masquerade::nftables as masquerade;
use ipnet::IpNet;

fn sock(site: &Site) -> NftSocket {
    NftSocket::open_in_netns_path(site.node.path()).unwrap()
}

fn masq_rules(site: &Site) -> Vec<(Vec<String>, Option<String>)> {
    rules(&site.ruleset(), "inet", masquerade::TABLE, masquerade::CHAIN)
        .into_iter()
        .map(|(e, c)| (matches(&e), c))
        .collect()
}

#[test]
fn masquerade_traffic_and_rules() {
    if !rig::require_reference("masquerade_traffic_and_rules", "bridge") {
        return;
    }
    let site = Site::new("masq");
    let a = site.pod("masq-a", "cni-m0", "10.88.0.0/24", "ctr-a");
    let b = site.pod("masq-b", "cni-m0", "10.88.0.0/24", "ctr-b");
    let _srv = tcp_whoami(&site.outside, 8000, "out");
    let _srv_b = tcp_whoami(&b.ns, 8001, "b");

    // Without the rule the outside host sees the pod's address (it routes back via the node).
    assert_eq!(tcp_ask(&a.ns, OUTSIDE_IP, 8000), format!("out {}", a.ip));

    let ip: IpNet = a.cidr.parse().unwrap();
    masquerade::setup(&sock(&site), "net-cni-m0", "eth0", &a.cid, &[ip]).unwrap();
    assert_eq!(tcp_ask(&a.ns, OUTSIDE_IP, 8000), format!("out {OUTSIDE_NODE_IP}"));
    // Inside the subnet the pod keeps its address.
    assert_eq!(tcp_ask(&a.ns, &b.ip, 8001), format!("b {}", a.ip));
    // Not masqueraded pod b still shows its own address outside.
    assert_eq!(tcp_ask(&b.ns, OUTSIDE_IP, 8000), format!("out {}", b.ip));

    // The rules print like the reference's.
    let text = table_text(&site.node, "inet", masquerade::TABLE);
    let comment = masquerade::comment_for_instance("net-cni-m0", "eth0", &a.cid);
    assert!(
        text.contains(&format!("comment \"{}\"", masquerade::TABLE_COMMENT)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "ip saddr {} ip daddr != 10.88.0.0/24 masquerade comment \"{comment}\"",
            a.ip
        )),
        "{text}"
    );
    assert!(
        text.contains("type nat hook postrouting priority srcnat; policy accept;"),
        "{text}"
    );
    let post: Vec<Vec<String>> = rules(&site.ruleset(), "inet", masquerade::TABLE, masquerade::POSTROUTING)
        .into_iter()
        .map(|(e, _)| matches(&e))
        .collect();
    assert_eq!(post.len(), 3, "{post:?}");
    assert_eq!(post[0][0], "ip daddr == 224.0.0.0/4");
    assert_eq!(post[1][0], "ip6 daddr == ff00::/8");
    assert!(post[2][0].contains("goto"), "{post:?}");
    let masq = masq_rules(&site);
    assert_eq!(masq.len(), 1);
    assert_eq!(masq[0].0[0], format!("ip saddr == {}", a.ip));
    assert_eq!(masq[0].0[1], "ip daddr != 10.88.0.0/24");
    assert_eq!(masq[0].1.as_deref(), Some(comment.as_str()));

    // A second ADD of the same attachment replaces its rule (postrouting is rebuilt, not grown).
    masquerade::setup(&sock(&site), "net-cni-m0", "eth0", &a.cid, &[ip]).unwrap();
    assert_eq!(masq_rules(&site).len(), 1);
    assert_eq!(
        rules(&site.ruleset(), "inet", masquerade::TABLE, masquerade::POSTROUTING).len(),
        3
    );

    // DEL: no netns, no IPs needed; the traffic is no longer masqueraded.
    masquerade::teardown(&sock(&site), "net-cni-m0", "eth0", &a.cid).unwrap();
    assert!(masq_rules(&site).is_empty());
    assert_eq!(tcp_ask(&a.ns, OUTSIDE_IP, 8000), format!("out {}", a.ip));
    // Idempotent.
    masquerade::teardown(&sock(&site), "net-cni-m0", "eth0", &a.cid).unwrap();
}

#[test]
fn teardown_and_gc_pick_exact_attachments() {
    if !rig::require_root("teardown_and_gc_pick_exact_attachments") {
        return;
    }
    // Rules only: no pods needed (and a DEL after the netns vanished is the same call).
    let node = rig::TestNs::new_node("masq-gc");
    let s = NftSocket::open_in_netns_path(node.path()).unwrap();
    let ip = |s: &str| -> Vec<IpNet> { vec![s.parse().unwrap()] };
    masquerade::setup(&s, "n1", "eth0", "c1", &ip("10.1.0.2/24")).unwrap();
    masquerade::setup(&s, "n1", "eth1", "c1", &ip("10.1.1.2/24")).unwrap();
    masquerade::setup(&s, "n1", "eth0", "c2", &ip("10.1.0.3/24")).unwrap();
    masquerade::setup(
        &s,
        "n1",
        "eth0",
        "c3",
        &[ip("10.1.0.4/24")[0], "fd00::4/64".parse().unwrap()],
    )
    .unwrap();
    masquerade::setup(&s, "n2", "eth0", "c1", &ip("10.2.0.2/24")).unwrap();
    let comments = || -> Vec<String> {
        rules(&ruleset(&node), "inet", masquerade::TABLE, masquerade::CHAIN)
            .into_iter()
            .map(|(_, c)| c.unwrap())
            .collect()
    };
    assert_eq!(comments().len(), 6);
    let text = table_text(&node, "inet", masquerade::TABLE);
    assert!(
        text.contains("ip6 saddr fd00::4 ip6 daddr != fd00::/64 masquerade"),
        "{text}"
    );

    // DEL of (n1, eth0, c1) leaves its eth1 sibling and n2's c1 alone.
    masquerade::teardown(&s, "n1", "eth0", "c1").unwrap();
    let c = comments();
    assert_eq!(c.len(), 5);
    assert!(!c.contains(&masquerade::comment_for_instance("n1", "eth0", "c1")));
    assert!(c.contains(&masquerade::comment_for_instance("n1", "eth1", "c1")));

    // GC of n1 keeping only (c2, eth0): c1/eth1 and both c3 rules go, n2 stays.
    masquerade::gc(&s, "n1", &[("c2", "eth0")]).unwrap();
    let c = comments();
    assert_eq!(
        c,
        vec![
            masquerade::comment_for_instance("n1", "eth0", "c2"),
            masquerade::comment_for_instance("n2", "eth0", "c1")
        ]
    );
    // GC with nothing to do, and on a node without the table, succeeds.
    masquerade::gc(&s, "n2", &[("c1", "eth0")]).unwrap();
    assert_eq!(comments().len(), 2);
    let empty = rig::TestNs::new_node("masq-empty");
    let s2 = NftSocket::open_in_netns_path(empty.path()).unwrap();
    masquerade::gc(&s2, "n1", &[]).unwrap();
    masquerade::teardown(&s2, "n1", "eth0", "c1").unwrap();
}
