//! sbr against the real kernel: a pod whose interfaces are veths to uplink namespaces (the
//! main plugin's work done with `ip`), sbr chained after it. Rules, tables and routes as
//! `ip` shows them, traffic that really leaves through table N, rollback, DEL edge cases.

use crate::common::rig::*;
use crate::common::sbr_rig::*;
use serde_json::{json, Value};

fn v4_pod() -> Pod {
    Pod::new(&[Iface::new("eth0").v4("10.9.0.2/24", "10.9.0.1").default_route()])
}

/// eth0 with 10.9.0.2/24 (gateway .1) and fd09::2/64 (gateway ::1), with the default route the
/// main plugin made (`default_route`) or without.
fn dual_pod(default_route: bool) -> Pod {
    let eth0 = Iface::new("eth0")
        .v4("10.9.0.2/24", "10.9.0.1")
        .v6("fd09::2/64", "fd09::1");
    Pod::new(&[if default_route { eth0.default_route() } else { eth0 }])
}

/// A node and the pod `pod` makes, when the test can run (as root).
fn setup(test: &str, pod: impl FnOnce() -> Pod) -> Option<(TestNs, Pod)> {
    require_root(test).then(|| (TestNs::new_node("sbr-node"), pod()))
}

fn ok(o: &Outcome) -> &Outcome {
    o.expect_ok()
}

/// ADD printed the prevResult back unchanged.
fn assert_passthrough(o: &Outcome, prev: &Value) {
    let mut got = o.result().clone();
    let mut want = prev.clone();
    for v in [&mut got, &mut want] {
        v.as_object_mut().unwrap().remove("dns");
    }
    assert_eq!(got, want, "ADD must print prevResult unchanged:\n{o}");
}

/// One address on eth0: ADD (prevResult printed back) puts a rule `rule` for it, table 100
/// holds `table_100`, and no main-table route that is `moved` is left; CHECK passes; DEL takes
/// rule and table away. The config, for more DELs.
fn add_check_del(node: &TestNs, pod: &Pod, rule: &str, table_100: &[&str], moved: impl Fn(&str) -> bool) -> Value {
    let c = pod.conf(0, json!({}));
    let a = pod.run(node, false, "ADD", 0, &c);
    assert_passthrough(ok(&a), &pod.prev_result(0));
    let l = pod.layout();
    assert!(l.has_rule(rule), "{l}");
    for r in table_100 {
        assert!(l.has_route(r), "{r}:\n{l}");
    }
    assert!(
        !l.main_routes().iter().any(|r| moved(r)),
        "eth0's routes left main:\n{l}"
    );
    pod.run(node, false, "CHECK", 0, &c).expect_ok();
    ok(&pod.run(node, false, "DEL", 0, &c));
    let l = pod.layout();
    assert!(l.rule_tables().is_empty(), "rules left:\n{l}");
    assert!(l.routes_in("100").is_empty(), "table 100 left:\n{l}");
    c
}

#[test]
fn v4_add_del() {
    let Some((node, pod)) = setup("v4_add_del", v4_pod) else {
        return;
    };
    let table_100 = [
        "-4 default via 10.9.0.1 dev eth0 table 100",
        "-4 10.9.0.0/24 dev eth0 table 100 proto kernel scope link src 10.9.0.2",
        // Every main-table route of eth0 went, the v6 link-local one too.
        "-6 fe80::/64 dev eth0 table 100 proto kernel metric 256 pref medium",
    ];
    let c = add_check_del(&node, &pod, "-4 32765: from 10.9.0.2 lookup 100", &table_100, |r| {
        r.starts_with("-4 ") && r.contains("dev eth0")
    });
    // Once more, and without prevResult: nothing left to do.
    ok(&pod.run(&node, false, "DEL", 0, &c));
    ok(&pod.run(
        &node,
        false,
        "DEL",
        0,
        &json!({"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr"}),
    ));
}

#[test]
fn v6_add_del() {
    let Some((node, pod)) = setup("v6_add_del", || {
        Pod::new(&[Iface::new("eth0").v6("fd09::2/64", "fd09::1").default_route()])
    }) else {
        return;
    };
    let table_100 = [
        "-6 default via fd09::1 dev eth0 table 100 metric 1024 pref medium",
        "-6 fd09::/64 dev eth0 table 100 proto kernel metric 256 pref medium",
    ];
    add_check_del(&node, &pod, "-6 32765: from fd09::2 lookup 100", &table_100, |r| {
        r.contains("dev eth0")
    });
}

#[test]
fn dual_stack_gets_a_table_per_address() {
    let Some((node, pod)) = setup("dual_stack_gets_a_table_per_address", || dual_pod(true)) else {
        return;
    };
    let c = pod.conf(0, json!({}));
    ok(&pod.run(&node, false, "ADD", 0, &c));
    let l = pod.layout();
    assert!(l.has_rule("-4 32765: from 10.9.0.2 lookup 100"), "{l}");
    assert!(l.has_rule("-6 32765: from fd09::2 lookup 101"), "{l}");
    assert!(l.has_route("-4 default via 10.9.0.1 dev eth0 table 100"), "{l}");
    assert!(
        l.has_route("-6 default via fd09::1 dev eth0 table 101 metric 1024 pref medium"),
        "{l}"
    );
    ok(&pod.run(&node, false, "DEL", 0, &c));
    let l = pod.layout();
    assert!(l.rule_tables().is_empty(), "{l}");
    assert!(l.routes_in("100").is_empty() && l.routes_in("101").is_empty(), "{l}");
}

#[test]
fn table_given_adds_only_rules() {
    let Some((node, pod)) = setup("table_given_adds_only_rules", || dual_pod(true)) else {
        return;
    };
    let before = pod.layout();
    let c = pod.conf(0, json!({"table": 5001}));
    ok(&pod.run(&node, false, "ADD", 0, &c));
    let l = pod.layout();
    assert!(l.has_rule("-4 32765: from 10.9.0.2 lookup 5001"), "{l}");
    assert!(l.has_rule("-6 32765: from fd09::2 lookup 5001"), "{l}");
    assert_eq!(l.routes, before.routes, "no route may move with `table`");
    pod.run(&node, false, "CHECK", 0, &c).expect_ok();
    // CHECK with another table does not find its rules.
    let e = pod.run(&node, false, "CHECK", 0, &pod.conf(0, json!({"table": 5002})));
    e.expect_err(999);
    assert_eq!(e.msg(), Some("no rule \"from 10.9.0.2 lookup 5002\" for eth0"), "{e}");
    // DEL with another table leaves these rules alone.
    ok(&pod.run(&node, false, "DEL", 0, &pod.conf(0, json!({"table": 5002}))));
    assert_eq!(pod.layout().rule_tables(), ["5001", "5001"]);
    ok(&pod.run(&node, false, "DEL", 0, &c));
    assert_eq!(pod.layout(), before);
}

#[test]
fn static_gateways_win() {
    let Some((node, pod)) = setup("static_gateways_win", || dual_pod(false)) else {
        return;
    };
    let c = pod.conf(0, json!({"gateways": ["10.9.0.254", "fd09::fe"]}));
    ok(&pod.run(&node, false, "ADD", 0, &c));
    let l = pod.layout();
    assert!(l.has_route("-4 default via 10.9.0.254 dev eth0 table 100"), "{l}");
    assert!(
        l.has_route("-6 default via fd09::fe dev eth0 table 101 metric 1024 pref medium"),
        "{l}"
    );
    assert!(
        !l.routes
            .iter()
            .any(|r| r.contains("via 10.9.0.1 ") || r.contains("via fd09::1 ")),
        "{l}"
    );
    ok(&pod.run(&node, false, "DEL", 0, &c));

    // Only a v6 gateway configured: the v4 address keeps its own. (A fresh pod: ADD moved
    // the subnet routes out of main, and DEL, like the reference's, does not put them back.)
    let pod = dual_pod(false);
    let c = pod.conf(0, json!({"gateways": ["fd09::fe"]}));
    ok(&pod.run(&node, false, "ADD", 0, &c));
    let l = pod.layout();
    assert!(l.has_route("-4 default via 10.9.0.1 dev eth0 table 100"), "{l}");
    assert!(
        l.has_route("-6 default via fd09::fe dev eth0 table 101 metric 1024 pref medium"),
        "{l}"
    );
    ok(&pod.run(&node, false, "DEL", 0, &c));
}

#[test]
fn bad_configs_change_nothing() {
    let Some((node, pod)) = setup("bad_configs_change_nothing", v4_pod) else {
        return;
    };
    let before = pod.layout();
    for (extra, code, needle) in [
        (
            json!({"gateways": ["10.9.0.1", "10.9.0.254"]}),
            7,
            "at most one IPv4 gateway",
        ),
        (
            json!({"gateways": ["fd09::1", "fd09::2"]}),
            7,
            "at most one IPv6 gateway",
        ),
        (
            json!({"gateways": ["not-an-ip"]}),
            7,
            "invalid static gateway IP address: not-an-ip",
        ),
        (json!({"table": -1}), 7, "table"),
        (json!({"table": 0}), 7, "table 0"),
    ] {
        let o = pod.run(&node, false, "ADD", 0, &pod.conf(0, extra.clone()));
        o.expect_err(code);
        assert!(o.msg().unwrap().contains(needle), "{extra}: {o}");
        assert_eq!(pod.layout(), before, "{extra}");
    }
    // Not chained, or chained after a plugin that gave no address.
    let bare = json!({"cniVersion": "1.0.0", "name": "sbrnet", "type": "sbr"});
    let o = pod.run(&node, false, "ADD", 0, &bare);
    o.expect_err(999);
    assert_eq!(o.msg(), Some("This plugin must be called as chained plugin"));
    let mut c = pod.conf(0, json!({}));
    c["prevResult"]["ips"] = json!([]);
    let o = pod.run(&node, false, "ADD", 0, &c);
    o.expect_err(999);
    assert_eq!(o.msg(), Some("No IP addresses supplied on interface: eth0"));
    // Netns missing: unknown container.
    let o = pod
        .invocation(&node, "ADD", 0, &pod.conf(0, json!({})))
        .netns(vanished_netns_path())
        .run_ours();
    o.expect_err(3);
    // The interface is not there (an address without an interface index is everybody's).
    let mut c = pod.conf(0, json!({}));
    c["prevResult"]["ips"][0].as_object_mut().unwrap().remove("interface");
    let o = pod.invocation(&node, "ADD", 0, &c).ifname("eth9").run_ours();
    o.expect_err(999);
    assert!(o.msg().unwrap().contains("Cannot find network interface eth9"), "{o}");
    assert_eq!(pod.layout(), before);
}

/// A failure half-way (the second address's gateway is not on-link) takes back everything
/// the first address got: its rule, its table, the routes deleted from main.
#[test]
fn failed_add_rolls_back() {
    let Some((node, pod)) = setup("failed_add_rolls_back", || dual_pod(true)) else {
        return;
    };
    let before = pod.layout();
    let mut c = pod.conf(0, json!({}));
    c["prevResult"]["ips"][1]["gateway"] = json!("fd77::1");
    let o = pod.run(&node, false, "ADD", 0, &c);
    o.expect_err(999);
    assert!(
        o.msg().unwrap().contains("Failed to add default route to fd77::1"),
        "{o}"
    );
    assert_eq!(pod.layout(), before, "a failed ADD must leave nothing behind");
    // And the same through the main-table delete path with addSourceHints.
    let mut c = pod.conf(0, json!({"addSourceHints": true}));
    c["prevResult"]["ips"][1]["gateway"] = json!("fd77::1");
    pod.run(&node, false, "ADD", 0, &c).expect_err(999);
    assert_eq!(pod.layout(), before);
}

#[test]
fn add_source_hints_keeps_the_subnet_route_in_main() {
    let Some((node, pod)) = setup("add_source_hints_keeps_the_subnet_route_in_main", || dual_pod(true)) else {
        return;
    };
    let c = pod.conf(0, json!({"addSourceHints": true}));
    ok(&pod.run(&node, false, "ADD", 0, &c));
    let l = pod.layout();
    let main: Vec<&String> = l.main_routes().into_iter().filter(|r| r.contains("dev eth0")).collect();
    assert_eq!(
        main,
        [
            "-4 10.9.0.0/24 dev eth0 scope link src 10.9.0.2",
            "-6 fd09::/64 dev eth0 src fd09::2 metric 1024 pref medium",
        ],
        "{l}"
    );
    assert!(l.has_route("-4 default via 10.9.0.1 dev eth0 table 100"), "{l}");
    assert!(l.has_rule("-4 32765: from 10.9.0.2 lookup 100"), "{l}");
    assert!(l.has_rule("-6 32765: from fd09::2 lookup 101"), "{l}");
    // Traffic that picks no source still reaches the subnet, from the right address.
    let route = pod.ns.ip(&["route", "get", "10.9.0.1"]);
    assert!(route.contains("src 10.9.0.2"), "{route}");
    assert!(pod.ping(None, "10.9.0.1"), "subnet reachable without a source address");
    ok(&pod.run(&node, false, "DEL", 0, &c));
}

/// Several ADDs in one netns at once (one per interface) must take distinct tables: the
/// netns file lock serialises the "first free table" choice.
#[test]
fn concurrent_adds_take_distinct_tables() {
    if !require_root("concurrent_adds_take_distinct_tables") {
        return;
    }
    let node = TestNs::new_node("sbr-node");
    let ifaces: Vec<Iface> = (0..4)
        .map(|i| Iface::new(&format!("eth{i}")).v4(&format!("10.{}.0.2/24", 10 + i), &format!("10.{}.0.1", 10 + i)))
        .collect();
    let pod = Pod::new(&ifaces);
    let invs: Vec<Invocation> = (0..4)
        .map(|i| pod.invocation(&node, "ADD", i, &pod.conf(i, json!({}))))
        .collect();
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let hs: Vec<_> = invs.iter().map(|inv| s.spawn(|| inv.run_ours())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        o.expect_ok();
    }
    let l = pod.layout();
    let mut tables = l.rule_tables();
    tables.sort();
    assert_eq!(tables, ["100", "101", "102", "103"], "{l}");
    for i in 0..4 {
        let t = l
            .rules
            .iter()
            .find(|r| r.contains(&format!("from 10.{}.0.2 ", 10 + i)))
            .and_then(|r| r.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no rule for eth{i}:\n{l}"));
        let routes = l.routes_in(t);
        assert!(
            !routes.is_empty() && routes.iter().all(|r| r.contains(&format!("dev eth{i} "))),
            "table {t} must hold eth{i}'s routes only:\n{l}"
        );
    }
}

#[test]
fn del_when_things_are_gone() {
    let Some((node, pod)) = setup("del_when_things_are_gone", v4_pod) else {
        return;
    };
    let c = pod.conf(0, json!({}));
    ok(&pod.run(&node, false, "ADD", 0, &c));
    // The interface went first (its routes with it): the prevResult still names the rule.
    pod.ns.ip(&["link", "del", "eth0"]);
    ok(&pod.run(&node, false, "DEL", 0, &c));
    assert!(pod.layout().rule_tables().is_empty(), "{}", pod.layout());
    ok(&pod.run(&node, false, "DEL", 0, &c));
    // The netns is gone, or was never given.
    let gone = vanished_netns_path();
    ok(&pod.invocation(&node, "DEL", 0, &c).netns(&gone).run_ours());
    assert!(
        !std::path::Path::new(&gone).exists(),
        "DEL must not create the netns path"
    );
    ok(&pod.invocation(&node, "DEL", 0, &c).env("CNI_NETNS", "").run_ours());
}

/// After ADD, a packet from the second interface's address leaves through that interface
/// (table N's default route), while the main table still sends everything else out of the
/// first one. Both uplinks answer on the same far address, so the echo counters tell which
/// way each ping went.
#[test]
fn traffic_from_the_address_uses_its_table() {
    let Some((node, pod)) = setup("traffic_from_the_address_uses_its_table", || {
        Pod::new(&two_dual_stack_ifaces())
    }) else {
        return;
    };
    let (up0, up1) = (&pod.uplinks[0], &pod.uplinks[1]);
    // Before sbr: a ping from eth1's address goes out of eth0 (main's default) and the
    // answer has no way back.
    let c0 = echo_requests(up0);
    assert!(!pod.ping(Some("10.2.0.2"), FAR4));
    assert_eq!(
        echo_requests(up0).0,
        c0.0 + 1,
        "without sbr the request leaves via eth0"
    );

    ok(&pod.run(&node, false, "ADD", 1, &pod.conf(1, json!({}))));
    let (c0, c1) = (echo_requests(up0), echo_requests(up1));
    assert!(pod.ping(Some("10.2.0.2"), FAR4), "from eth1's address, via table 100");
    assert!(pod.ping(Some("fd02::2"), FAR6), "from eth1's v6 address, via table 101");
    assert_eq!(
        echo_requests(up1),
        (c1.0 + 1, c1.1 + 1),
        "both arrived at eth1's uplink"
    );
    assert_eq!(echo_requests(up0), c0, "none at eth0's uplink");
    // Everything else still follows main, out of eth0.
    assert!(pod.ping(None, FAR4));
    assert!(pod.ping(Some("10.1.0.2"), FAR4));
    assert!(pod.ping(None, FAR6));
    assert_eq!(echo_requests(up0), (c0.0 + 2, c0.1 + 1));
    assert_eq!(echo_requests(up1), (c1.0 + 1, c1.1 + 1));

    ok(&pod.run(&node, false, "DEL", 1, &pod.conf(1, json!({}))));
    assert!(!pod.ping(Some("10.2.0.2"), FAR4), "after DEL the rule is gone");
}

/// A static gateway decides where table N's default route points: eth1's uplink has a
/// second router address, and the pod's packets from eth1's address go to it.
#[test]
fn traffic_follows_the_static_gateway() {
    let Some((node, pod)) = setup("traffic_follows_the_static_gateway", || {
        Pod::new(&[
            Iface::new("eth0").v4("10.1.0.2/24", "10.1.0.1").default_route(),
            Iface::new("eth1").v4("10.2.0.2/24", "10.2.0.1"),
        ])
    }) else {
        return;
    };
    let up1 = &pod.uplinks[1];
    up1.ip(&["addr", "add", "10.2.0.254/24", "dev", "up1"]);
    ok(&pod.run(
        &node,
        false,
        "ADD",
        1,
        &pod.conf(1, json!({"gateways": ["10.2.0.254"]})),
    ));
    let l = pod.layout();
    assert!(l.has_route("-4 default via 10.2.0.254 dev eth1 table 100"), "{l}");
    let c1 = echo_requests(up1);
    assert!(pod.ping(Some("10.2.0.2"), FAR4));
    assert_eq!(echo_requests(up1).0, c1.0 + 1);
    let neigh = pod.ns.ip(&["neigh", "show", "dev", "eth1"]);
    assert!(
        neigh.contains("10.2.0.254 "),
        "the pod sent to the static gateway: {neigh}"
    );
    assert!(!neigh.contains("10.2.0.1 "), "not to the prevResult's gateway: {neigh}");
}

/// DEL checks the keys' types only: an attachment made by 1.1.1 (which ignores `gateways`)
/// with a list ADD would refuse can still be deleted.
#[test]
fn del_accepts_gateways_add_would_refuse() {
    let Some((node, pod)) = setup("del_accepts_gateways_add_would_refuse", v4_pod) else {
        return;
    };
    ok(&pod.run(&node, false, "ADD", 0, &pod.conf(0, json!({}))));
    let c = pod.conf(0, json!({"gateways": ["10.9.0.1", "10.9.0.254"]}));
    ok(&pod.run(&node, false, "DEL", 0, &c));
    assert!(pod.layout().rule_tables().is_empty(), "{}", pod.layout());
    // A wrongly typed key is still a config error.
    pod.run(&node, false, "DEL", 0, &pod.conf(0, json!({"table": "x"})))
        .expect_err(7);
}
