//! Integration tests of `linux::nft` against the real kernel, each in its own throw-away network
//! namespaces. The `nft` binary is used only to read back what we programmed.

use std::net::IpAddr;

use crate::common::nftns::NetNs;
use cni_multi::linux::nft::*;
use ipnet::IpNet;
use serde_json::{json, Value};

// Skips without root, except in CI, where it fails (rig::require_root).
macro_rules! require_root {
    () => {
        if !crate::common::rig::require_root(module_path!()) {
            return;
        }
    };
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The `rule` objects of one chain in `nft -j list ruleset` output.
fn json_rules(rs: &Value, family: &str, table: &str, chain: &str) -> Vec<Value> {
    rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["family"] == family && r["table"] == table && r["chain"] == chain)
        .cloned()
        .collect()
}

fn json_objects(rs: &Value, kind: &str) -> Vec<Value> {
    rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get(kind))
        .cloned()
        .collect()
}

fn masq_setup(family: Family, tname: &str) -> (Table, Chain) {
    let t = Table::new(family, tname).with_comment("test table");
    let c = Chain::base(
        &t,
        "postrouting",
        ChainType::Nat,
        Hook::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    );
    (t, c)
}

#[test]
fn inet_masquerade_v4_prints_like_nft() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let (t, c) = masq_setup(Family::Inet, "cni_test_masq");
    let rule = RuleBuilder::new(&t, "postrouting")
        .saddr(CmpOp::Eq, ip("10.1.0.5"))
        .daddr(CmpOp::Neq, net("10.1.0.0/24"))
        .masquerade()
        .comment("abc-123, net: n1")
        .build();
    let mut b = Batch::new();
    b.add_table(&t).add_chain(&c).add_rule(&rule, Position::Append);
    b.commit(&sock).unwrap();

    let rs = ns.ruleset();
    let tables = json_objects(&rs, "table");
    assert_eq!(tables.len(), 1);
    // nft 1.0.6 leaves table comments out of its JSON; the text form shows them.
    let text = ns.run(&["nft", "list", "table", "inet", "cni_test_masq"]);
    assert!(text.contains("comment \"test table\""), "{text}");
    let chains = json_objects(&rs, "chain");
    assert_eq!(chains[0]["type"], "nat");
    assert_eq!(chains[0]["hook"], "postrouting");
    assert_eq!(chains[0]["prio"], 100);
    assert_eq!(chains[0]["policy"], "accept");
    let rules = json_rules(&rs, "inet", "cni_test_masq", "postrouting");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["comment"], "abc-123, net: n1");
    assert_eq!(
        rules[0]["expr"],
        json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.1.0.5"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                       "right": {"prefix": {"addr": "10.1.0.0", "len": 24}}}},
            {"masquerade": null}
        ])
    );

    // Our own listing decodes the same expressions back, with handle and comment.
    let listed = sock.list_rules(Family::Inet, "cni_test_masq", "postrouting").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].exprs, rule.exprs);
    assert_eq!(listed[0].comment, rule.comment);
    assert_eq!(Some(listed[0].handle.unwrap()), rules[0]["handle"].as_u64());
    assert!(sock.table_exists(Family::Inet, "cni_test_masq").unwrap());
    assert!(!sock.table_exists(Family::Inet, "nope").unwrap());
    assert!(!sock.table_exists(Family::Ip, "cni_test_masq").unwrap());
}

#[test]
fn inet_masquerade_v6_and_multicast_returns() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let (t, c) = masq_setup(Family::Inet, "m6");
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&c)
        .add_chain(&Chain::regular(&t, "masq_checks"));
    b.add_rule(
        &RuleBuilder::new(&t, "postrouting")
            .daddr(CmpOp::Eq, net("224.0.0.0/4"))
            .ret()
            .build(),
        Position::Append,
    );
    b.add_rule(
        &RuleBuilder::new(&t, "postrouting")
            .daddr(CmpOp::Eq, net("ff00::/8"))
            .ret()
            .build(),
        Position::Append,
    );
    b.add_rule(
        &RuleBuilder::new(&t, "postrouting").goto("masq_checks").build(),
        Position::Append,
    );
    b.add_rule(
        &RuleBuilder::new(&t, "masq_checks")
            .saddr(CmpOp::Eq, ip("fd00:1::5"))
            .daddr(CmpOp::Neq, net("fd00:1::/64"))
            .masquerade()
            .comment("v6 rule")
            .build(),
        Position::Append,
    );
    b.commit(&sock).unwrap();

    let rs = ns.ruleset();
    let post = json_rules(&rs, "inet", "m6", "postrouting");
    assert_eq!(
        post.iter().map(|r| r["expr"].clone()).collect::<Vec<_>>(),
        vec![
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                              "right": {"prefix": {"addr": "224.0.0.0", "len": 4}}}}, {"return": null}]),
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                              "right": {"prefix": {"addr": "ff00::", "len": 8}}}}, {"return": null}]),
            json!([{"goto": {"target": "masq_checks"}}]),
        ]
    );
    let checks = json_rules(&rs, "inet", "m6", "masq_checks");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["comment"], "v6 rule");
    assert_eq!(
        checks[0]["expr"],
        json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "fd00:1::5"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                       "right": {"prefix": {"addr": "fd00:1::", "len": 64}}}},
            {"masquerade": null}
        ])
    );
    let chains = sock.list_chains(Family::Inet, "m6").unwrap();
    let mut names: Vec<_> = chains.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["masq_checks", "postrouting"]);
    let post_chain = chains.iter().find(|c| c.name == "postrouting").unwrap();
    assert_eq!(post_chain.base.as_ref().unwrap().hook, Hook::Postrouting);
    assert_eq!(post_chain.base.as_ref().unwrap().priority, 100);
}

#[test]
fn bridge_mac_spoof_check_chains() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Bridge, "nat");
    let pre = Chain::base(
        &t,
        "PREROUTING",
        ChainType::Filter,
        Hook::Prerouting,
        -300,
        Policy::Accept,
    );
    let mac = [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01];
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&pre)
        .add_chain(&Chain::regular(&t, "cni-br-iface-x"));
    b.add_rule(
        &RuleBuilder::new(&t, "PREROUTING")
            .iifname(CmpOp::Eq, "vethX")
            .jump("cni-br-iface-x")
            .comment("macspoofchk-x")
            .build(),
        Position::Append,
    );
    b.add_rule(
        &RuleBuilder::new(&t, "cni-br-iface-x")
            .ether_saddr(CmpOp::Eq, mac)
            .ret()
            .build(),
        Position::Append,
    );
    b.add_rule(&RuleBuilder::new(&t, "cni-br-iface-x").drop().build(), Position::Append);
    b.commit(&sock).unwrap();

    let rs = ns.ruleset();
    let pre_rules = json_rules(&rs, "bridge", "nat", "PREROUTING");
    assert_eq!(
        pre_rules[0]["expr"],
        json!([
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "vethX"}},
            {"jump": {"target": "cni-br-iface-x"}}
        ])
    );
    assert_eq!(pre_rules[0]["comment"], "macspoofchk-x");
    let c = json_rules(&rs, "bridge", "nat", "cni-br-iface-x");
    assert_eq!(
        c.iter().map(|r| r["expr"].clone()).collect::<Vec<_>>(),
        vec![
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "saddr"}},
                              "right": "aa:bb:cc:dd:ee:01"}}, {"return": null}]),
            json!([{"drop": null}]),
        ]
    );
    let chain = json_objects(&rs, "chain")
        .into_iter()
        .find(|c| c["name"] == "PREROUTING")
        .unwrap();
    assert_eq!(chain["prio"], -300);
}

#[test]
fn ip_hostport_dnat_with_fib_local() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Ip, "cni_hostport");
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&Chain::regular(&t, "hostports"))
        .add_chain(&Chain::base(
            &t,
            "prerouting",
            ChainType::Nat,
            Hook::Prerouting,
            priority::DSTNAT,
            Policy::Accept,
        ))
        .add_chain(&Chain::base(
            &t,
            "output",
            ChainType::Nat,
            Hook::Output,
            priority::DSTNAT,
            Policy::Accept,
        ));
    for chain in ["prerouting", "output"] {
        b.add_rule(
            &RuleBuilder::new(&t, chain)
                .fib_daddr_type(rtn::LOCAL)
                .jump("hostports")
                .build(),
            Position::Append,
        );
    }
    b.add_rule(
        &RuleBuilder::new(&t, "hostports")
            .dport(L4Proto::Tcp, CmpOp::Eq, 8080)
            .dnat(ip("10.0.0.2"), Some(80))
            .comment("container-1")
            .build(),
        Position::Append,
    );
    b.add_rule(
        &RuleBuilder::new(&t, "hostports")
            .daddr(CmpOp::Eq, ip("192.0.2.1"))
            .dport(L4Proto::Udp, CmpOp::Eq, 53)
            .dnat(ip("10.0.0.3"), Some(5353))
            .build(),
        Position::Append,
    );
    b.add_rule(
        &RuleBuilder::new(&t, "hostports")
            .dport(L4Proto::Sctp, CmpOp::Eq, 99)
            .dnat(ip("10.0.0.4"), None)
            .build(),
        Position::Append,
    );
    b.commit(&sock).unwrap();

    let rs = ns.ruleset();
    assert_eq!(
        json_rules(&rs, "ip", "cni_hostport", "prerouting")[0]["expr"],
        json!([
            {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
            {"jump": {"target": "hostports"}}
        ])
    );
    let hp = json_rules(&rs, "ip", "cni_hostport", "hostports");
    assert_eq!(hp[0]["comment"], "container-1");
    assert_eq!(
        hp.iter().map(|r| r["expr"].clone()).collect::<Vec<_>>(),
        vec![
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 8080}},
                {"dnat": {"addr": "10.0.0.2", "port": 80}}
            ]),
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "192.0.2.1"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 53}},
                {"dnat": {"addr": "10.0.0.3", "port": 5353}}
            ]),
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "sctp", "field": "dport"}}, "right": 99}},
                {"dnat": {"addr": "10.0.0.4"}}
            ]),
        ]
    );
}

#[test]
fn ct_state_mark_and_counter_print_like_nft() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Inet, "f");
    let mut b = Batch::new();
    b.add_table(&t).add_chain(&Chain::base(
        &t,
        "forward",
        ChainType::Filter,
        Hook::Forward,
        0,
        Policy::Drop,
    ));
    let rules = [
        RuleBuilder::new(&t, "forward")
            .ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
            .accept(),
        RuleBuilder::new(&t, "forward")
            .iifname(CmpOp::Eq, "br0")
            .oifname(CmpOp::Neq, "br0")
            .counter()
            .drop(),
        RuleBuilder::new(&t, "forward").mark_set_bits(0x2000),
        RuleBuilder::new(&t, "forward")
            .mark_match(0x2000, 0x2000)
            .l4proto(6)
            .accept(),
        RuleBuilder::new(&t, "forward").iifname(CmpOp::Eq, "veth*").accept(),
    ];
    for r in &rules {
        b.add_rule(&r.clone().build(), Position::Append);
    }
    b.commit(&sock).unwrap();

    let rs = ns.ruleset();
    let got: Vec<Value> = json_rules(&rs, "inet", "f", "forward")
        .iter()
        .map(|r| r["expr"].clone())
        .collect();
    assert_eq!(
        got,
        vec![
            json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
                   {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br0"}},
                   {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "br0"}},
                   {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]),
            json!([{"mangle": {"key": {"meta": {"key": "mark"}},
                               "value": {"|": [{"meta": {"key": "mark"}}, 8192]}}}]),
            json!([{"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 8192]}, "right": 8192}},
                   {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                   {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "veth*"}},
                   {"accept": null}]),
        ]
    );
}

#[test]
fn named_sets_and_lookups() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Inet, "s");
    let nets = Set::new(&t, "nets4", SetKeyType::Ipv4Addr).with_flags(set_flags::INTERVAL);
    let ports = Set::new(&t, "ports", SetKeyType::InetService);
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&Chain::regular(&t, "c"))
        .add_set(&nets)
        .add_set_elements(
            &nets,
            &[SetElem::prefix(net("10.2.0.0/16")), SetElem::addr(ip("192.168.1.1"))],
        )
        .add_set(&ports)
        .add_set_elements(&ports, &[SetElem::port(80), SetElem::port(443)])
        .add_rule(
            &RuleBuilder::new(&t, "c")
                .addr_in_set(false, false, "nets4", false)
                .accept()
                .build(),
            Position::Append,
        )
        .add_rule(
            &RuleBuilder::new(&t, "c")
                .dport_in_set(L4Proto::Tcp, "ports")
                .accept()
                .build(),
            Position::Append,
        )
        .add_rule(
            &RuleBuilder::new(&t, "c")
                .addr_in_set(true, false, "nets4", true)
                .drop()
                .build(),
            Position::Append,
        );
    b.commit(&sock).unwrap();

    let rs = ns.ruleset();
    let sets = json_objects(&rs, "set");
    let s4 = sets.iter().find(|s| s["name"] == "nets4").unwrap();
    assert_eq!(s4["type"], "ipv4_addr");
    assert_eq!(s4["flags"], json!(["interval"]));
    assert_eq!(
        s4["elem"],
        json!([{"prefix": {"addr": "10.2.0.0", "len": 16}}, "192.168.1.1"])
    );
    let p = sets.iter().find(|s| s["name"] == "ports").unwrap();
    assert_eq!(p["type"], "inet_service");
    let mut elems: Vec<u64> = p["elem"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    elems.sort();
    assert_eq!(elems, [80, 443]);
    let got: Vec<Value> = json_rules(&rs, "inet", "s", "c")
        .iter()
        .map(|r| r["expr"].clone())
        .collect();
    assert_eq!(
        got,
        vec![
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@nets4"}},
                   {"accept": null}]),
            json!([{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": "@ports"}},
                   {"accept": null}]),
            json!([{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@nets4"}},
                   {"drop": null}]),
        ]
    );
}

#[test]
fn delete_by_comment_prefix_and_positions() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Ip, "d");
    let rule = |c: &str| {
        RuleBuilder::new(&t, "c")
            .saddr(CmpOp::Eq, ip("10.0.0.1"))
            .accept()
            .comment(c)
            .build()
    };
    let mut b = Batch::new();
    b.add_table(&t).add_chain(&Chain::regular(&t, "c"));
    for c in ["a-1", "b-1", "a-2"] {
        b.add_rule(&rule(c), Position::Append);
    }
    b.add_rule(&rule("first"), Position::Prepend);
    b.commit(&sock).unwrap();

    let comments = |sock: &NftSocket| -> Vec<String> {
        sock.list_rules(Family::Ip, "d", "c")
            .unwrap()
            .into_iter()
            .map(|r| r.comment.unwrap_or_default())
            .collect()
    };
    assert_eq!(comments(&sock), ["first", "a-1", "b-1", "a-2"]);

    // Place rules relative to b-1, then delete every "a-" rule by handle.
    let listed = sock.list_rules(Family::Ip, "d", "c").unwrap();
    let b1 = listed
        .iter()
        .find(|r| r.comment.as_deref() == Some("b-1"))
        .unwrap()
        .handle
        .unwrap();
    let mut b = Batch::new();
    b.add_rule(&rule("before-b"), Position::Before(b1))
        .add_rule(&rule("after-b"), Position::After(b1));
    b.commit(&sock).unwrap();
    assert_eq!(comments(&sock), ["first", "a-1", "before-b", "b-1", "after-b", "a-2"]);

    let mut del = Batch::new();
    for r in sock.list_rules(Family::Ip, "d", "c").unwrap() {
        if r.comment.as_deref().is_some_and(|c| c.starts_with("a-")) {
            del.del_rule(&t, "c", r.handle.unwrap());
        }
    }
    assert_eq!(del.len(), 2);
    del.commit(&sock).unwrap();
    assert_eq!(comments(&sock), ["first", "before-b", "b-1", "after-b"]);
    let rs = ns.ruleset();
    assert_eq!(json_rules(&rs, "ip", "d", "c").len(), 4);

    // Deleting a gone rule reports ENOENT naming it; flush + delete chain + delete table work.
    let err = del.commit(&sock).unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains("delete rule ip d c handle"), "{err}");
    let mut b = Batch::new();
    b.flush_chain(&t, "c").del_chain(&t, "c").del_table(&t);
    b.commit(&sock).unwrap();
    assert!(!sock.table_exists(Family::Ip, "d").unwrap());
}

#[test]
fn failed_batch_applies_nothing_and_names_the_culprit() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Inet, "atomic");
    let mut b = Batch::new();
    b.add_table(&t)
        .add_chain(&Chain::regular(&t, "c"))
        .add_rule(
            &RuleBuilder::new(&t, "c")
                .jump("no-such-chain")
                .comment("bad jump")
                .build(),
            Position::Append,
        )
        .add_rule(&RuleBuilder::new(&t, "c").accept().build(), Position::Append);
    let err = b.commit(&sock).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.errno(), Some(nix::libc::ENOENT), "{text}");
    assert!(text.contains("add rule inet atomic c (comment \"bad jump\")"), "{text}");
    assert!(text.contains("batch message 3 of 4"), "{text}");
    assert!(text.contains("No such file or directory"), "{text}");
    eprintln!("error as reported: {text}");
    assert!(!sock.table_exists(Family::Inet, "atomic").unwrap());
    assert_eq!(json_objects(&ns.ruleset(), "table").len(), 0);

    // The socket stays usable after a failed batch.
    let mut ok = Batch::new();
    ok.add_table(&t);
    ok.commit(&sock).unwrap();
    assert!(sock.table_exists(Family::Inet, "atomic").unwrap());
}

#[test]
fn listing_tolerates_foreign_rules_and_tables() {
    require_root!();
    let ns = NetNs::new();
    let sock = ns.nft_socket();
    let t = Table::new(Family::Inet, "mine");
    let mut b = Batch::new();
    b.add_table(&t).add_chain(&Chain::regular(&t, "c"));
    b.add_rule(
        &RuleBuilder::new(&t, "c").accept().comment("ours").build(),
        Position::Append,
    );
    b.commit(&sock).unwrap();
    // Another tool adds a table of its own and a rule with expressions we do not model.
    let conf = "table inet other { chain c { type filter hook input priority 0; limit rate 5/second log prefix \"x\" accept\n }\n}\n\
                add rule inet mine c limit rate 10/minute counter log comment \"theirs\"\n";
    let path = std::env::temp_dir().join(format!("nft-foreign-{}.nft", std::process::id()));
    std::fs::write(&path, conf).unwrap();
    ns.run(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);

    let rules = sock.list_rules(Family::Inet, "mine", "c").unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].comment.as_deref(), Some("theirs"));
    assert!(rules[1]
        .exprs
        .iter()
        .any(|e| matches!(e, Expr::Other { name, .. } if name == "limit")));
    let chains = sock.list_chains(Family::Inet, "mine").unwrap();
    assert_eq!(chains.len(), 1);
    // A missing chain or table lists as empty (what an idempotent teardown wants).
    assert!(sock.list_rules(Family::Inet, "mine", "nope").unwrap().is_empty());
    assert!(sock.list_rules(Family::Inet, "gone", "c").unwrap().is_empty());
    assert!(sock.chain_exists(Family::Inet, "mine", "c").unwrap());
    assert!(!sock.chain_exists(Family::Inet, "mine", "nope").unwrap());
    assert!(!sock.chain_exists(Family::Inet, "gone", "c").unwrap());
}

/// client (10.9.1.2) -- router -- server (10.9.2.2). The server has no route back to the
/// client's subnet, so a ping only gets answered if the router masquerades it.
#[test]
fn masquerade_rewrites_source_for_real_traffic() {
    require_root!();
    let (client, router, server) = (NetNs::new(), NetNs::new(), NetNs::new());
    router.ip(&[
        "link",
        "add",
        "r0",
        "type",
        "veth",
        "peer",
        "name",
        "c0",
        "netns",
        client.name(),
    ]);
    router.ip(&[
        "link",
        "add",
        "r1",
        "type",
        "veth",
        "peer",
        "name",
        "s0",
        "netns",
        server.name(),
    ]);
    router.ip(&["addr", "add", "10.9.1.1/24", "dev", "r0"]);
    router.ip(&["addr", "add", "10.9.2.1/24", "dev", "r1"]);
    router.ip(&["link", "set", "r0", "up"]);
    router.ip(&["link", "set", "r1", "up"]);
    client.ip(&["addr", "add", "10.9.1.2/24", "dev", "c0"]);
    client.ip(&["link", "set", "c0", "up"]);
    client.ip(&["route", "add", "default", "via", "10.9.1.1"]);
    server.ip(&["addr", "add", "10.9.2.2/24", "dev", "s0"]);
    server.ip(&["link", "set", "s0", "up"]);
    router.run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);

    let ping = || {
        client
            .exec(&["ping", "-c", "1", "-W", "1", "10.9.2.2"])
            .status
            .success()
    };
    assert!(!ping(), "server must not reach the client subnet without masquerade");

    // On the server, count incoming packets by source address.
    let ssock = server.nft_socket();
    let st = Table::new(Family::Ip, "seen");
    let mut b = Batch::new();
    b.add_table(&st).add_chain(&Chain::base(
        &st,
        "input",
        ChainType::Filter,
        Hook::Input,
        0,
        Policy::Accept,
    ));
    for src in ["10.9.2.1", "10.9.1.2"] {
        b.add_rule(
            &RuleBuilder::new(&st, "input")
                .saddr(CmpOp::Eq, ip(src))
                .counter()
                .comment(src)
                .build(),
            Position::Append,
        );
    }
    b.commit(&ssock).unwrap();
    let seen = |src: &str| -> u64 {
        let rules = ssock.list_rules(Family::Ip, "seen", "input").unwrap();
        let r = rules.iter().find(|r| r.comment.as_deref() == Some(src)).unwrap();
        r.exprs
            .iter()
            .find_map(|e| match e {
                Expr::Counter { packets, .. } => Some(*packets),
                _ => None,
            })
            .unwrap()
    };
    let (router_before, client_before) = (seen("10.9.2.1"), seen("10.9.1.2"));

    let sock = router.nft_socket();
    let (t, c) = masq_setup(Family::Inet, "cni_plugins_masquerade");
    let mut b = Batch::new();
    b.add_table(&t).add_chain(&c).add_rule(
        &RuleBuilder::new(&t, "postrouting")
            .saddr(CmpOp::Eq, ip("10.9.1.2"))
            .daddr(CmpOp::Neq, net("10.9.1.0/24"))
            .counter()
            .masquerade()
            .comment("traffic")
            .build(),
        Position::Append,
    );
    b.commit(&sock).unwrap();
    let ok = client.exec(&["ping", "-c", "2", "-W", "2", "10.9.2.2"]);
    assert!(
        ok.status.success(),
        "ping through masquerade failed: {}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // The counter before `masquerade` saw the connection's first packet (nat chains only see
    // the first packet of each flow).
    let rules = sock
        .list_rules(Family::Inet, "cni_plugins_masquerade", "postrouting")
        .unwrap();
    let packets = rules[0].exprs.iter().find_map(|e| match e {
        Expr::Counter { packets, .. } => Some(*packets),
        _ => None,
    });
    assert!(packets.unwrap_or(0) >= 1, "counter: {packets:?}");
    // The server saw the echo requests from the router's address, none from the client's.
    assert!(
        seen("10.9.2.1") >= router_before + 2,
        "server saw {} from the router",
        seen("10.9.2.1")
    );
    assert_eq!(seen("10.9.1.2"), client_before);
}
