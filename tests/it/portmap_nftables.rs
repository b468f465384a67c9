//! portmap's nftables layout against upstream v1.9's nftables backend, which Debian does not
//! ship (its 1.1.1 is iptables-only): the goldens are upstream's own, read from its code and
//! tests (containernetworking/plugins `plugins/meta/portmap/portmap_nftables.go` and
//! `portmap_nftables_test.go` at v1.9.1, masqAll as on main since 3d27709f), made here with
//! `nft -f` as knftables would send them: the lines of upstream's expected dumps (its fake
//! sorts them) in the order `forwardPorts` adds them (portmap_nftables.go v1.9.1 lines
//! 104-251: table, hostports, hostip_hostports, hostports_all and its jumps, prerouting,
//! output, masquerading, then the container's rules), which is the order `nft list` shows. Our ADD must leave the same ruleset (the
//! `nft list` text and every rule's expressions and comment); our CHECK accepts, and our DEL
//! removes, rules that upstream's binary made (v4 and v6, with and without host IPs), leaving
//! other containers' rules; upstream's DEL (by comment) removes ours.

use crate::common::rig::{self, Invocation, Outcome, PluginDir, TempDir, TestNs};
use cni_multi::linux::nft::{Expr, Family, NftSocket};
use serde_json::{json, Value};

/// upstream's test container ID (portmap_nftables_test.go v1.9.1 line 33).
const CID: &str = "icee6giejonei6so";
const NET: &str = "test";

/// upstream's test mappings (portmap_nftables_test.go v1.9.1 lines 39-48).
fn mappings() -> Value {
    json!([
        { "hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        { "hostPort": 8081, "containerPort": 80, "protocol": "tcp"},
        { "hostPort": 8080, "containerPort": 81, "protocol": "udp"},
        { "hostPort": 8082, "containerPort": 82, "protocol": "udp"},
        { "hostPort": 8083, "containerPort": 83, "protocol": "tcp", "hostIP": "192.168.0.2"},
        { "hostPort": 8084, "containerPort": 84, "protocol": "tcp", "hostIP": "0.0.0.0"},
        { "hostPort": 8085, "containerPort": 85, "protocol": "tcp", "hostIP": "2001:db8:a::1"},
        { "hostPort": 8086, "containerPort": 86, "protocol": "tcp", "hostIP": "::"}
    ])
}

/// upstream's expected IPv4 ruleset after `forwardPorts` with snat (portmap_nftables_test.go
/// v1.9.1 lines 82-101), its placeholder conditions `a b` (not nft) taken out: the shared
/// chains, then `hostports` with every mapping of the family in config order, the host-IP one
/// (8083) included (v1.9 moved them out of `hostip_hostports`, portmap_nftables.go lines
/// 202-213), the unspecified host IP (8084) matching any address, the v6 ones skipped.
const V4_SNAT: &str = r#"
add table ip cni_hostport { comment "CNI portmap plugin" ; }
add chain ip cni_hostport hostports
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport hostports_all
add rule ip cni_hostport hostports_all jump hostip_hostports
add rule ip cni_hostport hostports_all jump hostports
add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip cni_hostport prerouting fib daddr type local jump hostports_all
add chain ip cni_hostport output { type nat hook output priority -100 ; }
add rule ip cni_hostport output fib daddr type local jump hostports_all
add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "icee6giejonei6so"
add rule ip cni_hostport hostports tcp dport 8081 dnat to 10.0.0.2:80 comment "icee6giejonei6so"
add rule ip cni_hostport hostports udp dport 8080 dnat to 10.0.0.2:81 comment "icee6giejonei6so"
add rule ip cni_hostport hostports udp dport 8082 dnat to 10.0.0.2:82 comment "icee6giejonei6so"
add rule ip cni_hostport hostports ip daddr 192.168.0.2 tcp dport 8083 dnat to 10.0.0.2:83 comment "icee6giejonei6so"
add rule ip cni_hostport hostports tcp dport 8084 dnat to 10.0.0.2:84 comment "icee6giejonei6so"
add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
"#;

/// upstream's expected IPv6 ruleset after `forwardPorts` without snat (portmap_nftables_test.go
/// v1.9.1 lines 111-128), conditions taken out: no masquerading chain, the v6 host IP (8085)
/// in `hostports`, `::` (8086) matching any address.
const V6_NO_SNAT: &str = r#"
add table ip6 cni_hostport { comment "CNI portmap plugin" ; }
add chain ip6 cni_hostport hostports
add chain ip6 cni_hostport hostip_hostports
add chain ip6 cni_hostport hostports_all
add rule ip6 cni_hostport hostports_all jump hostip_hostports
add rule ip6 cni_hostport hostports_all jump hostports
add chain ip6 cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip6 cni_hostport prerouting fib daddr type local jump hostports_all
add chain ip6 cni_hostport output { type nat hook output priority -100 ; }
add rule ip6 cni_hostport output fib daddr type local jump hostports_all
add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [2001:db8::2]:80 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports tcp dport 8081 dnat to [2001:db8::2]:80 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports udp dport 8080 dnat to [2001:db8::2]:81 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports udp dport 8082 dnat to [2001:db8::2]:82 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports ip6 daddr 2001:db8:a::1 tcp dport 8085 dnat to [2001:db8::2]:85 comment "icee6giejonei6so"
add rule ip6 cni_hostport hostports tcp dport 8086 dnat to [2001:db8::2]:86 comment "icee6giejonei6so"
"#;

/// IPv6 with snat: only the hairpin rule (portmap_nftables.go v1.9.1 lines 226-251: the
/// localhost rule is IPv4's).
const V6_SNAT_MASQ: &str = r#"
add chain ip6 cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add rule ip6 cni_hostport masquerading ip6 saddr 2001:db8::2 ip6 daddr 2001:db8::2 masquerade comment "icee6giejonei6so"
"#;

/// masqAll (upstream main since 3d27709f, portmap_nftables_test.go "MasqAll configuration"):
/// one masquerade rule with `saddr 0.0.0.0/0` (`::/0`), no localhost rule.
const V4_MASQ_ALL: &str = r#"
add table ip cni_hostport { comment "CNI portmap plugin" ; }
add chain ip cni_hostport hostports
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport hostports_all
add rule ip cni_hostport hostports_all jump hostip_hostports
add rule ip cni_hostport hostports_all jump hostports
add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip cni_hostport prerouting fib daddr type local jump hostports_all
add chain ip cni_hostport output { type nat hook output priority -100 ; }
add rule ip cni_hostport output fib daddr type local jump hostports_all
add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "icee6giejonei6so"
add rule ip cni_hostport masquerading ip saddr 0.0.0.0/0 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
"#;

const V6_MASQ_ALL: &str = r#"
add table ip6 cni_hostport { comment "CNI portmap plugin" ; }
add chain ip6 cni_hostport hostports
add chain ip6 cni_hostport hostip_hostports
add chain ip6 cni_hostport hostports_all
add rule ip6 cni_hostport hostports_all jump hostip_hostports
add rule ip6 cni_hostport hostports_all jump hostports
add chain ip6 cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip6 cni_hostport prerouting fib daddr type local jump hostports_all
add chain ip6 cni_hostport output { type nat hook output priority -100 ; }
add rule ip6 cni_hostport output fib daddr type local jump hostports_all
add chain ip6 cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add rule ip6 cni_hostport hostports tcp dport 8080 dnat to [2001:db8::2]:80 comment "icee6giejonei6so"
add rule ip6 cni_hostport masquerading ip6 saddr ::/0 ip6 daddr 2001:db8::2 masquerade comment "icee6giejonei6so"
"#;

/// Conditions in nft syntax, as upstream concatenates them before `fib daddr type local`
/// (portmap_nftables.go v1.9.1 lines 151-176).
const V4_CONDITIONS: &str = r#"
add table ip cni_hostport { comment "CNI portmap plugin" ; }
add chain ip cni_hostport hostports
add chain ip cni_hostport hostip_hostports
add chain ip cni_hostport hostports_all
add rule ip cni_hostport hostports_all jump hostip_hostports
add rule ip cni_hostport hostports_all jump hostports
add chain ip cni_hostport prerouting { type nat hook prerouting priority -100 ; }
add rule ip cni_hostport prerouting ip saddr != 10.0.0.0/8 iifname != "eth0" fib daddr type local jump hostports_all
add chain ip cni_hostport output { type nat hook output priority -100 ; }
add rule ip cni_hostport output ip saddr != 10.0.0.0/8 iifname != "eth0" fib daddr type local jump hostports_all
add chain ip cni_hostport masquerading { type nat hook postrouting priority 100 ; }
add rule ip cni_hostport hostports tcp dport 8080 dnat to 10.0.0.2:80 comment "icee6giejonei6so"
add rule ip cni_hostport masquerading ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
add rule ip cni_hostport masquerading ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "icee6giejonei6so"
"#;

/// `script` with the container ID replaced (other containers' rules, made the same way).
fn for_container(script: &str, cid: &str) -> String {
    script.replace(CID, cid)
}

/// Runs an nft script in `node`, as knftables sends a transaction (`nft -f`).
fn nft_f(node: &TestNs, script: &str) {
    let dir = TempDir::new("pmnft");
    let f = dir.join("rules.nft");
    std::fs::write(&f, script).unwrap();
    node.exec_ok(&["nft", "-f", f.to_str().unwrap()]);
}

fn list(node: &TestNs, fam: &str) -> String {
    let o = node.exec(&["nft", "list", "table", fam, "cni_hostport"]);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every chain's rules as the kernel holds them: (chain, expressions, comment), in order.
fn rules(node: &TestNs, fam: Family) -> Vec<(String, Vec<Expr>, Option<String>)> {
    let sock = NftSocket::open_in_netns_path(node.path()).unwrap();
    let mut chains: Vec<String> = sock
        .list_chains(fam, "cni_hostport")
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    chains.sort();
    let mut out = Vec::new();
    for c in chains {
        for r in sock.list_rules(fam, "cni_hostport", &c).unwrap() {
            out.push((c.clone(), r.exprs, r.comment));
        }
    }
    out
}

fn prev(ips: &[&str]) -> Value {
    let ips: Vec<Value> = ips.iter().map(|a| json!({"address": a, "interface": 0})).collect();
    json!({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}], "ips": ips})
}

fn conf(ips: &[&str], maps: Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "backend": "nftables",
        "runtimeConfig": {"portMappings": maps}, "prevResult": prev(ips)});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

fn ours(node: &TestNs, dir: &PluginDir, cmd: &str, cid: &str, conf: &Value) -> Outcome {
    Invocation::new("portmap", cmd)
        .container_id(cid)
        .netns("/var/run/netns/x")
        .config(conf)
        .in_node(node)
        .env("PATH", "")
        .run_ours_in(dir)
}

fn tool_present() -> bool {
    if !rig::tool("nft").is_file() {
        assert!(!rig::in_ci(), "needs nft, and CI=true");
        return false;
    }
    true
}

#[test]
fn our_add_equals_upstream_v1_9() {
    if !rig::require_root("our_add_equals_upstream_v1_9") || !tool_present() {
        return;
    }
    let one = json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let v6_snat = format!("{V6_NO_SNAT}{V6_SNAT_MASQ}");
    let cases: Vec<(&str, Value, Value, String, &str)> = vec![
        (
            "v4, snat, host IPs",
            mappings(),
            json!({}),
            V4_SNAT.to_string(),
            "10.0.0.2/24",
        ),
        (
            "v6, no snat, host IPs",
            mappings(),
            json!({"snat": false}),
            V6_NO_SNAT.to_string(),
            "2001:db8::2/64",
        ),
        ("v6, snat, host IPs", mappings(), json!({}), v6_snat, "2001:db8::2/64"),
        (
            "v4, masqAll",
            one.clone(),
            json!({"masqAll": true}),
            V4_MASQ_ALL.to_string(),
            "10.0.0.2/24",
        ),
        (
            "v6, masqAll",
            one.clone(),
            json!({"masqAll": true}),
            V6_MASQ_ALL.to_string(),
            "2001:db8::2/64",
        ),
        (
            "v4, nft conditions",
            one.clone(),
            json!({"conditionsV4": ["ip saddr != 10.0.0.0/8", "iifname != \"eth0\""]}),
            V4_CONDITIONS.to_string(),
            "10.0.0.2/24",
        ),
    ];
    for (what, maps, extra, script, ip) in cases {
        let (fam, fam_s) = if ip.contains(':') {
            (Family::Ip6, "ip6")
        } else {
            (Family::Ip, "ip")
        };
        let upstream = TestNs::new_node("pmnft-up");
        let node = TestNs::new_node("pmnft-ours");
        let dir = PluginDir::new();
        nft_f(&upstream, &script);
        ours(&node, &dir, "ADD", CID, &conf(&[ip], maps.clone(), extra.clone())).expect_ok();
        assert_eq!(list(&node, fam_s), list(&upstream, fam_s), "{what}: nft list differs");
        assert!(!list(&node, fam_s).is_empty(), "{what}");
        assert_eq!(rules(&node, fam), rules(&upstream, fam), "{what}: expressions differ");
        // Nothing in the other family, nothing in iptables' tables.
        let other = if fam == Family::Ip { "ip6" } else { "ip" };
        assert!(list(&node, other).is_empty(), "{what}");
        assert!(!node.exec_ok(&["nft", "list", "tables"]).contains(" nat"), "{what}");
        // Our CHECK accepts upstream's rules; a second ADD of ours leaves the same ruleset.
        ours(&upstream, &dir, "CHECK", CID, &conf(&[ip], maps.clone(), extra.clone())).expect_ok();
        ours(&node, &dir, "ADD", CID, &conf(&[ip], maps.clone(), extra.clone())).expect_ok();
        assert_eq!(list(&node, fam_s), list(&upstream, fam_s), "{what}: second ADD");
    }
}

/// upstream's `unforwardPorts` (portmap_nftables.go v1.9.1 lines 322-356): every rule of
/// `hostports`, `hostip_hostports` and `masquerading` whose comment is the container ID.
fn upstream_del(node: &TestNs, cid: &str) {
    for fam in ["ip", "ip6"] {
        for chain in ["hostports", "hostip_hostports", "masquerading"] {
            let o = node.exec(&["nft", "-a", "list", "chain", fam, "cni_hostport", chain]);
            for l in String::from_utf8_lossy(&o.stdout).lines() {
                if l.contains(&format!("comment \"{cid}\"")) {
                    let h = l.rsplit("# handle ").next().unwrap().trim();
                    node.exec_ok(&["nft", "delete", "rule", fam, "cni_hostport", chain, "handle", h]);
                }
            }
        }
    }
}

#[test]
fn rules_upstream_made_are_checked_and_deleted_by_ours() {
    if !rig::require_root("rules_upstream_made_are_checked_and_deleted_by_ours") || !tool_present() {
        return;
    }
    let node = TestNs::new_node("pmnft-swap");
    let dir = PluginDir::new();
    // Two pods ADDed by upstream v1.9's binary, dual stack (one transaction per family).
    let v6_snat = format!("{V6_NO_SNAT}{V6_SNAT_MASQ}");
    for cid in [CID, "other-pod"] {
        nft_f(&node, &for_container(V4_SNAT, cid));
        nft_f(&node, &for_container(&v6_snat, cid));
    }
    let before_other: Vec<_> = [Family::Ip, Family::Ip6]
        .into_iter()
        .flat_map(|f| rules(&node, f))
        .filter(|r| r.2.as_deref() == Some("other-pod"))
        .collect();
    assert_eq!(before_other.len(), 8 + 7);
    let c = conf(&["10.0.0.2/24", "2001:db8::2/64"], mappings(), json!({}));
    // The node swapped to cni-multi: CHECK and DEL of upstream's pod.
    ours(&node, &dir, "CHECK", CID, &c).expect_ok();
    ours(&node, &dir, "DEL", CID, &c).expect_ok();
    let left: Vec<_> = [Family::Ip, Family::Ip6]
        .into_iter()
        .flat_map(|f| rules(&node, f))
        .collect();
    assert!(left.iter().all(|r| r.2.as_deref() != Some(CID)), "{left:?}");
    let other: Vec<_> = left
        .iter()
        .filter(|r| r.2.as_deref() == Some("other-pod"))
        .cloned()
        .collect();
    assert_eq!(other, before_other, "DEL touched another container's rules");
    // The shared chains stay, as upstream leaves them.
    for fam in ["ip", "ip6"] {
        assert!(list(&node, fam).contains("fib daddr type local jump hostports_all"));
    }
    let e = ours(&node, &dir, "CHECK", CID, &c);
    assert!(!e.success());
    assert!(
        e.msg()
            .unwrap_or_default()
            .starts_with("missing hostport rule in ip cni_hostport hostports"),
        "{e}"
    );
    ours(&node, &dir, "DEL", CID, &c).expect_ok();

    // The other way: our ADD, then upstream's DEL (a node swapped back) removes our rules.
    ours(&node, &dir, "ADD", CID, &c).expect_ok();
    upstream_del(&node, CID);
    let left: Vec<_> = [Family::Ip, Family::Ip6]
        .into_iter()
        .flat_map(|f| rules(&node, f))
        .collect();
    assert!(left.iter().all(|r| r.2.as_deref() != Some(CID)), "{left:?}");
    // Our records now point at nothing: the next ADD and DEL find out, and stay exact.
    ours(&node, &dir, "ADD", "third", &c).expect_ok();
    ours(&node, &dir, "DEL", CID, &c).expect_ok();
    ours(&node, &dir, "DEL", "other-pod", &c).expect_ok();
    let left: Vec<_> = [Family::Ip, Family::Ip6]
        .into_iter()
        .flat_map(|f| rules(&node, f))
        .collect();
    assert!(
        left.iter().all(|r| r.2.as_deref() == Some("third") || r.2.is_none()),
        "{left:?}"
    );
    assert_eq!(left.iter().filter(|r| r.2.is_some()).count(), 8 + 7);
    ours(&node, &dir, "DEL", "third", &c).expect_ok();
}

#[test]
fn attachments_of_one_container_are_told_apart() {
    if !rig::require_root("attachments_of_one_container_are_told_apart") || !tool_present() {
        return;
    }
    // The comment names only the container (as upstream's); the records name the attachment:
    // two networks' portmap on one container, DEL and GC of one leave the other's rules.
    let node = TestNs::new_node("pmnft-two");
    let dir = PluginDir::new();
    let one = json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let two = json!([{ "hostPort": 9090, "containerPort": 90, "protocol": "tcp"}]);
    let mut a = conf(&["10.0.0.2/24"], one, json!({}));
    let mut b = conf(&["10.1.0.2/24"], two, json!({}));
    b["name"] = json!("second");
    ours(&node, &dir, "ADD", CID, &a).expect_ok();
    ours(&node, &dir, "ADD", CID, &b).expect_ok();
    let text = list(&node, "ip");
    assert!(text.contains("dport 8080") && text.contains("dport 9090"), "{text}");
    ours(&node, &dir, "DEL", CID, &a).expect_ok();
    let text = list(&node, "ip");
    assert!(!text.contains("dport 8080") && text.contains("dport 9090"), "{text}");
    ours(&node, &dir, "CHECK", CID, &b).expect_ok();
    // GC of the first network with no valid attachment leaves the second network's rules.
    ours(&node, &dir, "ADD", CID, &a).expect_ok();
    a["cniVersion"] = json!("1.1.0");
    a["cni.dev/valid-attachments"] = json!([]);
    ours(&node, &dir, "GC", CID, &a).expect_ok();
    let text = list(&node, "ip");
    assert!(!text.contains("dport 8080") && text.contains("dport 9090"), "{text}");
    ours(&node, &dir, "DEL", CID, &b).expect_ok();
    assert!(!list(&node, "ip").contains(CID));
}

#[test]
fn rules_of_older_cni_multi_are_removed() {
    if !rig::require_root("rules_of_older_cni_multi_are_removed") || !tool_present() {
        return;
    }
    // cni-multi before upstream's layout: comment `<cid>, nethash: <h16>, if: <ifname>`,
    // host-IP mappings in hostip_hostports.
    let node = TestNs::new_node("pmnft-old");
    let dir = PluginDir::new();
    let old = cni_multi::pkg::comment::rule_comment(NET, CID, "eth0");
    nft_f(
        &node,
        &V4_SNAT
            .replace(&format!("comment \"{CID}\""), &format!("comment \"{old}\""))
            .replace("hostports ip daddr", "hostip_hostports ip daddr"),
    );
    let c = conf(&["10.0.0.2/24"], mappings(), json!({}));
    ours(&node, &dir, "CHECK", CID, &c).expect_ok();
    ours(&node, &dir, "DEL", CID, &c).expect_ok();
    let text = list(&node, "ip");
    assert!(!text.contains(CID) && !text.contains("dnat to"), "{text}");
}
