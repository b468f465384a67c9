//! The records of where an attachment's nftables rules are (`pkg::nft_records`), used by
//! masquerade and portmap so that ADD and DEL need no dump of the shared chains: ADD writes
//! them (the handles the kernel echoed), and every way a record can be wrong — lost,
//! corrupt, stale, pointing at another attachment's rule, the reference having run since —
//! still ends with exactly the attachment's rules removed and nothing else.

use std::path::PathBuf;

use crate::common::rig::{self, Invocation, PluginDir, TestNs};
use cni_multi::linux::nft::{Family, NftSocket};
use cni_multi::pkg::masquerade::nftables as masquerade;
use ipnet::IpNet;
use serde_json::{json, Value};

const NET: &str = "recnet";

fn sock(node: &TestNs) -> NftSocket {
    NftSocket::open_in_netns_path(node.path()).unwrap()
}

/// The records dir of one table in `node`, as `nft_records` names it.
fn rec_dir(node: &TestNs, table: &str) -> PathBuf {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let cookie = sock(node).netns_cookie().expect("SO_NETNS_COOKIE (Linux 5.14)");
    PathBuf::from(rig::state_dir())
        .join("nft")
        .join(format!("{}-{cookie}", boot.trim()))
        .join(table)
}

fn masq_dir(node: &TestNs) -> PathBuf {
    rec_dir(node, &format!("inet-{}", masquerade::TABLE))
}

fn key(cid: &str) -> String {
    masquerade::hash_for_instance(NET, "eth0", cid)
}

/// Handles of the masquerade rules of `cid`.
fn masq_handles(node: &TestNs, cid: &str) -> Vec<u64> {
    sock(node)
        .list_rule_comments(Family::Inet, masquerade::TABLE, masquerade::CHAIN)
        .unwrap()
        .into_iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&key(cid))))
        .filter_map(|r| r.handle)
        .collect()
}

fn record_text(chain: &str, handles: &[u64]) -> String {
    let mut t = "cni-multi nft record 1\n".to_string();
    for h in handles {
        t += &format!("{chain} {h}\n");
    }
    t
}

/// `nft <cmd>` in `node` (words split on spaces), with a quoted rule comment when given: the
/// reference's own rules, made the way its nftables backend makes them.
fn nft(node: &TestNs, cmd: &str, comment: Option<&str>) {
    let quoted = comment.map(|c| format!("\"{c}\""));
    let mut argv: Vec<&str> = std::iter::once("nft").chain(cmd.split_whitespace()).collect();
    if let Some(q) = &quoted {
        argv.extend(["comment", q.as_str()]);
    }
    node.exec_ok(&argv);
}

fn setup(node: &TestNs, cid: &str, ip: &str) {
    let ip: IpNet = ip.parse().unwrap();
    masquerade::setup(&sock(node), NET, "eth0", cid, &[ip]).unwrap();
}

fn teardown(node: &TestNs, cid: &str) {
    masquerade::teardown(&sock(node), NET, "eth0", cid).unwrap();
}

#[test]
fn masquerade_add_records_the_echoed_handles() {
    if !rig::require_root("masquerade_add_records_the_echoed_handles") {
        return;
    }
    let node = TestNs::new_node("rec-m");
    setup(&node, "ctr-a", "10.88.0.5/24");
    setup(&node, "ctr-b", "10.88.0.6/24");
    let dir = masq_dir(&node);
    for cid in ["ctr-a", "ctr-b"] {
        let hs = masq_handles(&node, cid);
        assert_eq!(hs.len(), 1, "{cid}");
        let text = std::fs::read_to_string(dir.join(key(cid))).unwrap();
        assert_eq!(text, record_text(masquerade::CHAIN, &hs), "{cid}");
    }
    assert!(dir.join("stamp").exists(), "the records are complete: stamped");
    // A repeated ADD replaces the attachment's rule through its record.
    setup(&node, "ctr-a", "10.88.0.7/24");
    let hs = masq_handles(&node, "ctr-a");
    assert_eq!(hs.len(), 1);
    assert_eq!(
        std::fs::read_to_string(dir.join(key("ctr-a"))).unwrap(),
        record_text(masquerade::CHAIN, &hs)
    );
    teardown(&node, "ctr-a");
    assert!(masq_handles(&node, "ctr-a").is_empty());
    assert!(!dir.join(key("ctr-a")).exists(), "DEL forgets the record");
    assert_eq!(masq_handles(&node, "ctr-b").len(), 1);
    // GC: the rules and records of attachments that are not valid go, the valid stay.
    setup(&node, "ctr-c", "10.88.0.8/24");
    masquerade::gc(&sock(&node), NET, &[("ctr-c", "eth0")]).unwrap();
    assert!(masq_handles(&node, "ctr-b").is_empty());
    assert!(!dir.join(key("ctr-b")).exists(), "GC forgets the record");
    assert_eq!(masq_handles(&node, "ctr-c").len(), 1);
    assert!(dir.join(key("ctr-c")).exists());
}

#[test]
fn masquerade_del_with_a_bad_record_removes_exactly_the_attachments_rules() {
    if !rig::require_root("masquerade_del_with_a_bad_record_removes_exactly_the_attachments_rules") {
        return;
    }
    let node = TestNs::new_node("rec-md");
    let dir = masq_dir(&node);
    setup(&node, "ctr-b", "10.88.0.6/24");
    let b = masq_handles(&node, "ctr-b");
    // What the record says instead of the truth (None: it is gone).
    let bad: Vec<(&str, Option<String>)> = vec![
        ("lost", None),
        ("corrupt", Some("\0\u{1}garbage".to_string())),
        ("pending", Some("cni-multi nft record 1\npending\n".to_string())),
        ("stale", Some(record_text(masquerade::CHAIN, &[999_999]))),
        ("another's rule", Some(record_text(masquerade::CHAIN, &b))),
        ("wrong chain", Some(record_text("postrouting", &b))),
    ];
    for (what, record) in bad {
        setup(&node, "ctr-a", "10.88.0.5/24");
        assert_eq!(masq_handles(&node, "ctr-a").len(), 1, "{what}");
        match record {
            None => std::fs::remove_file(dir.join(key("ctr-a"))).unwrap(),
            Some(t) => std::fs::write(dir.join(key("ctr-a")), t).unwrap(),
        }
        teardown(&node, "ctr-a");
        assert!(masq_handles(&node, "ctr-a").is_empty(), "{what}: DEL left the rule");
        assert_eq!(
            masq_handles(&node, "ctr-b"),
            b,
            "{what}: DEL touched another attachment"
        );
    }
}

#[test]
fn masquerade_add_after_the_records_are_lost_or_the_reference_ran() {
    if !rig::require_root("masquerade_add_after_the_records_are_lost_or_the_reference_ran") {
        return;
    }
    let node = TestNs::new_node("rec-ma");
    let dir = masq_dir(&node);
    setup(&node, "ctr-a", "10.88.0.5/24");
    setup(&node, "ctr-b", "10.88.0.6/24");
    // The state dir wiped (records and stamp): ADD finds the stale rule by a dump.
    std::fs::remove_dir_all(&dir).unwrap();
    setup(&node, "ctr-a", "10.88.0.7/24");
    assert_eq!(
        masq_handles(&node, "ctr-a").len(),
        1,
        "ADD after lost records kept a stale rule"
    );
    assert!(
        dir.join(key("ctr-b")).exists(),
        "the dump recorded every attachment again"
    );
    assert!(dir.join("stamp").exists());

    // The reference's ADD (after a node swap): it rebuilds the base chain and adds a rule
    // with the same comment, unrecorded. Our next ADD must not trust the records.
    let comment = masquerade::comment_for_instance(NET, "eth0", "ctr-a");
    let t = masquerade::TABLE;
    nft(&node, &format!("flush chain inet {t} postrouting"), None);
    nft(
        &node,
        &format!("add rule inet {t} postrouting ip daddr 224.0.0.0/4 return"),
        None,
    );
    nft(
        &node,
        &format!("add rule inet {t} postrouting ip6 daddr ff00::/8 return"),
        None,
    );
    nft(&node, &format!("add rule inet {t} postrouting goto masq_checks"), None);
    nft(
        &node,
        &format!("add rule inet {t} masq_checks ip saddr 10.88.0.9 ip daddr != 10.88.0.0/24 masquerade"),
        Some(&comment),
    );
    assert_eq!(masq_handles(&node, "ctr-a").len(), 2);
    setup(&node, "ctr-a", "10.88.0.5/24");
    assert_eq!(
        masq_handles(&node, "ctr-a").len(),
        1,
        "ADD kept the reference's stale rule"
    );
    // And a DEL after the reference ran again finds its rule too.
    nft(&node, &format!("flush chain inet {t} postrouting"), None);
    nft(&node, &format!("add rule inet {t} postrouting goto masq_checks"), None);
    nft(
        &node,
        &format!("add rule inet {t} masq_checks ip saddr 10.88.0.9 masquerade"),
        Some(&comment),
    );
    teardown(&node, "ctr-a");
    assert!(masq_handles(&node, "ctr-a").is_empty(), "DEL left the reference's rule");
    assert_eq!(masq_handles(&node, "ctr-b").len(), 1);
}

// ---- portmap -------------------------------------------------------------------------------

fn prev(ip: &str) -> Value {
    json!({"cniVersion": "1.0.0",
           "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
           "ips": [{"address": ip, "interface": 0}]})
}

/// portmap with the nftables layout (upstream v1.9's, its rules commented with the bare
/// container ID: the records say which attachment a rule is).
fn portmap(node: &TestNs, dir: &PluginDir, cmd: &str, cid: &str, ip: &str, port: u16) {
    let conf = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "prevResult": prev(ip),
        "backend": "nftables",
        "runtimeConfig": {"portMappings": [
            {"hostPort": port, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": port + 1, "containerPort": 81, "protocol": "tcp"}]}});
    Invocation::new("portmap", cmd)
        .container_id(cid)
        .netns("/var/run/netns/x")
        .config(&conf)
        .in_node(node)
        .run_ours_in(dir)
        .expect_ok();
}

/// (chain, handle) of the portmap rules of `cid` in `ip cni_hostport`.
fn pm_rules(node: &TestNs, cid: &str) -> Vec<(String, u64)> {
    let s = sock(node);
    let mut out = Vec::new();
    for chain in ["hostports", "hostip_hostports", "masquerading"] {
        for r in s
            .list_rule_comments(Family::Ip, "cni_hostport", chain)
            .unwrap_or_default()
        {
            if r.comment.as_deref() == Some(cid) {
                out.push((chain.to_string(), r.handle.unwrap()));
            }
        }
    }
    out
}

fn pm_key(cid: &str) -> String {
    cni_multi::meta::portmap::attachment_key(NET, "eth0", cid)
}

/// The record of a container's rules no attachment claims.
fn pm_unclaimed(cid: &str) -> String {
    cni_multi::meta::portmap::nftables::unclaimed_key(cid)
}

#[test]
fn portmap_records_and_their_failures() {
    if !rig::require_root("portmap_records_and_their_failures") {
        return;
    }
    let node = TestNs::new_node("rec-pm");
    let dir = PluginDir::new();
    let recs = rec_dir(&node, "ip-cni_hostport");
    portmap(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24", 8080);
    portmap(&node, &dir, "ADD", "ctr-b", "10.88.0.6/24", 9090);
    let b = pm_rules(&node, "ctr-b");
    assert_eq!(b.len(), 4, "2 DNATs, hairpin and localhost masquerade");
    let a = pm_rules(&node, "ctr-a");
    let text: String = std::fs::read_to_string(recs.join(pm_key("ctr-a"))).unwrap();
    let mut want = "cni-multi nft record 1\nlabel=ctr-a\n".to_string();
    for (c, h) in &a {
        want += &format!("{c} {h}\n");
    }
    let sorted = |t: &str| {
        let mut l: Vec<&str> = t.lines().collect();
        l.sort();
        l.join("\n")
    };
    assert_eq!(sorted(&text), sorted(&want));
    assert!(recs.join("stamp").exists());
    // A repeated ADD replaces the attachment's rules (through its record).
    portmap(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24", 8080);
    assert_eq!(pm_rules(&node, "ctr-a").len(), 4);

    let other = b.iter().map(|(c, h)| format!("{c} {h}\n")).collect::<String>();
    for (what, record) in [
        ("lost", None),
        ("corrupt", Some("nonsense".to_string())),
        ("stale", Some("cni-multi nft record 1\nhostports 999999\n".to_string())),
        ("another's rules", Some(format!("cni-multi nft record 1\n{other}"))),
    ] {
        portmap(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24", 8080);
        assert_eq!(pm_rules(&node, "ctr-a").len(), 4, "{what}");
        match record {
            None => std::fs::remove_file(recs.join(pm_key("ctr-a"))).unwrap(),
            Some(t) => std::fs::write(recs.join(pm_key("ctr-a")), t).unwrap(),
        }
        portmap(&node, &dir, "DEL", "ctr-a", "10.88.0.5/24", 8080);
        assert!(pm_rules(&node, "ctr-a").is_empty(), "{what}: DEL left rules");
        assert_eq!(pm_rules(&node, "ctr-b"), b, "{what}: DEL touched another attachment");
    }
    // ADD after the records are lost.
    portmap(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24", 8080);
    std::fs::remove_dir_all(&recs).unwrap();
    portmap(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24", 8080);
    assert_eq!(
        pm_rules(&node, "ctr-a").len(),
        4,
        "ADD after lost records kept stale rules"
    );
    // The dump recorded every rule again: b's, which no record claims now, under its
    // container's record.
    let text = std::fs::read_to_string(recs.join(pm_unclaimed("ctr-b"))).unwrap();
    assert!(text.starts_with("cni-multi nft record 1\nlabel=ctr-b\n"), "{text}");
    assert_eq!(text.lines().count(), 2 + b.len(), "{text}");
    assert!(recs.join("stamp").exists(), "the records are complete again");
    portmap(&node, &dir, "DEL", "ctr-a", "10.88.0.5/24", 8080);
    portmap(&node, &dir, "DEL", "ctr-b", "10.88.0.6/24", 9090);
    assert!(pm_rules(&node, "ctr-a").is_empty() && pm_rules(&node, "ctr-b").is_empty());
    assert!(
        !recs.join(pm_key("ctr-b")).exists() && !recs.join(pm_unclaimed("ctr-b")).exists(),
        "DEL forgets the records"
    );
}

#[test]
fn portmap_del_of_reference_rules_made_after_our_add() {
    if !rig::require_root("portmap_del_of_reference_rules_made_after_our_add") {
        return;
    }
    // After our ADD, the reference's nftables backend ADDs the same container (a node swapped
    // back and forth): it rebuilds the shared chains and comments with the bare container ID.
    let node = TestNs::new_node("rec-pr");
    let dir = PluginDir::new();
    portmap(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24", 8080);
    nft(&node, "flush chain ip cni_hostport hostports_all", None);
    nft(
        &node,
        "add rule ip cni_hostport hostports_all jump hostip_hostports",
        None,
    );
    nft(&node, "add rule ip cni_hostport hostports_all jump hostports", None);
    nft(
        &node,
        "add rule ip cni_hostport hostports tcp dport 7070 dnat to 10.88.0.5:80",
        Some("ctr-a"),
    );
    portmap(&node, &dir, "DEL", "ctr-a", "10.88.0.5/24", 8080);
    let left = rig::run_ok(&[
        "ip",
        "netns",
        "exec",
        node.name(),
        "nft",
        "list",
        "chain",
        "ip",
        "cni_hostport",
        "hostports",
    ]);
    assert!(!left.contains("ctr-a"), "{left}");
}

// ---- firewall ------------------------------------------------------------------------------

fn firewall(node: &TestNs, dir: &PluginDir, cmd: &str, cid: &str, ip: &str) {
    let conf = json!({"cniVersion": "1.0.0", "name": NET, "type": "firewall", "backend": "nftables",
        "prevResult": prev(ip)});
    Invocation::new("firewall", cmd)
        .container_id(cid)
        .netns("/var/run/netns/x")
        .config(&conf)
        .in_node(node)
        .run_ours_in(dir)
        .expect_ok();
}

/// Handles of the firewall's CNI-FORWARD rules of `cid`.
fn fw_rules(node: &TestNs, cid: &str) -> Vec<u64> {
    sock(node)
        .list_rule_comments(Family::Inet, "cni_firewall", "CNI-FORWARD")
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(&format!("{cid},"))))
        .filter_map(|r| r.handle)
        .collect()
}

#[test]
fn firewall_records_and_their_failures() {
    if !rig::require_root("firewall_records_and_their_failures") {
        return;
    }
    let node = TestNs::new_node("rec-fw");
    let dir = PluginDir::new();
    let recs = rec_dir(&node, "inet-cni_firewall");
    firewall(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24");
    firewall(&node, &dir, "ADD", "ctr-b", "10.88.0.6/24");
    // The stamp held for ctr-c's ADD: no dump, so no other attachment's record written again
    // (a record is written by rename: a new inode).
    use std::os::unix::fs::MetadataExt;
    let ino = || std::fs::metadata(recs.join(pm_key("ctr-a"))).unwrap().ino();
    let before = ino();
    firewall(&node, &dir, "ADD", "ctr-c", "10.88.0.7/24");
    assert_eq!(ino(), before, "a new attachment's ADD rewrote another's record");
    firewall(&node, &dir, "DEL", "ctr-c", "10.88.0.7/24");
    let b = fw_rules(&node, "ctr-b");
    assert_eq!(b.len(), 2);
    let a = fw_rules(&node, "ctr-a");
    assert_eq!(
        std::fs::read_to_string(recs.join(pm_key("ctr-a"))).unwrap(),
        record_text("CNI-FORWARD", &a)
    );
    assert!(recs.join("stamp").exists());
    firewall(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24");
    assert_eq!(fw_rules(&node, "ctr-a").len(), 2, "a repeated ADD replaces the rules");
    for (what, record) in [
        ("lost", None),
        ("corrupt", Some("nonsense".to_string())),
        ("another's rules", Some(record_text("CNI-FORWARD", &b))),
    ] {
        firewall(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24");
        match record {
            None => std::fs::remove_file(recs.join(pm_key("ctr-a"))).unwrap(),
            Some(t) => std::fs::write(recs.join(pm_key("ctr-a")), t).unwrap(),
        }
        firewall(&node, &dir, "DEL", "ctr-a", "10.88.0.5/24");
        assert!(fw_rules(&node, "ctr-a").is_empty(), "{what}: DEL left rules");
        assert_eq!(fw_rules(&node, "ctr-b"), b, "{what}: DEL touched another attachment");
    }
    firewall(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24");
    std::fs::remove_dir_all(&recs).unwrap();
    firewall(&node, &dir, "ADD", "ctr-a", "10.88.0.5/24");
    assert_eq!(
        fw_rules(&node, "ctr-a").len(),
        2,
        "ADD after lost records kept stale rules"
    );
    firewall(&node, &dir, "DEL", "ctr-a", "10.88.0.5/24");
    firewall(&node, &dir, "DEL", "ctr-b", "10.88.0.6/24");
    assert!(fw_rules(&node, "ctr-a").is_empty() && fw_rules(&node, "ctr-b").is_empty());
}
