//! sbr side by side with Debian's reference /usr/lib/cni/sbr (1.1.1): two identical pods,
//! the same config through each, then the results, the errors and the `ip rule` / `ip route
//! show table all` layouts compared.
//!
//! 1.1.1 predates upstream's `table`, `gateways` and `addSourceHints` (it ignores the keys),
//! so the comparison covers what both do: per-address tables for v4, v6 and dual-stack.
//! Where cni-multi follows upstream's newer code or does better on purpose, the reference's
//! behaviour is pinned here too:
//! - DEL: both remove the rules; 1.1.1 leaves the routes in the emptied tables, we flush them.
//! - DEL with the interface gone: 1.1.1 fails "Failed to get link eth0: Link not found"
//!   (upstream fixed that later); we succeed.
//! - `table`: 1.1.1 ignores it and still moves the routes into table 100.

use crate::common::rig::*;
use crate::common::sbr_rig::*;
use serde_json::{json, Value};

struct Twins {
    node: TestNs,
    reference: Pod,
    ours: Pod,
}

impl Twins {
    fn new(ifaces: &[Iface]) -> Twins {
        Twins {
            node: TestNs::new_node("sbr-node"),
            reference: Pod::new(ifaces),
            ours: Pod::new(ifaces),
        }
    }

    /// Run `cmd` on interface `i` through both; `edit` adjusts each side's config.
    fn run(&self, cmd: &str, i: usize, extra: &Value, edit: &Edit) -> (Outcome, Outcome) {
        let go = |pod: &Pod, reference: bool| {
            let mut c = pod.conf(i, extra.clone());
            edit(&mut c);
            pod.run(&self.node, reference, cmd, i, &c)
        };
        (go(&self.reference, true), go(&self.ours, false))
    }

    fn assert_same_layout(&self, what: &str) {
        let (r, o) = (self.reference.layout(), self.ours.layout());
        assert_eq!(r, o, "{what}: layouts differ\nreference:\n{r}\nours:\n{o}");
    }
}

fn normalized(o: &Outcome, pod: &Pod) -> Value {
    serde_json::from_str(&o.stdout.replace(pod.ns.path_str(), "<pod>")).unwrap_or_else(|_| json!({"raw": o.stdout}))
}

fn same_outcome(t: &Twins, what: &str, r: &Outcome, o: &Outcome) {
    assert_eq!(r.status, o.status, "{what}: exit\nreference:\n{r}\nours:\n{o}");
    assert_eq!(
        normalized(r, &t.reference),
        normalized(o, &t.ours),
        "{what}: output\nreference:\n{r}\nours:\n{o}"
    );
    // Byte for byte too (indentation, key order).
    assert_eq!(
        r.stdout.replace(t.reference.ns.path_str(), "P"),
        o.stdout.replace(t.ours.ns.path_str(), "P"),
        "{what}: raw output"
    );
}

/// A change to one side's config before a run.
type Edit = dyn Fn(&mut Value);

fn no_edit(_: &mut Value) {}

/// ADD, compare; DEL, compare the rules (routes differ by design, see the module doc).
fn add_del_like_reference(test: &str, ifaces: &[Iface]) {
    if !require_reference(test, "sbr") {
        return;
    }
    let t = Twins::new(ifaces);
    t.assert_same_layout("before ADD");
    let (r, o) = t.run("ADD", 0, &json!({}), &no_edit);
    same_outcome(&t, "ADD", &r, &o);
    r.expect_ok();
    t.assert_same_layout("after ADD");
    let (r, o) = t.run("DEL", 0, &json!({}), &no_edit);
    same_outcome(&t, "DEL", &r, &o);
    let (rl, ol) = (t.reference.layout(), t.ours.layout());
    assert_eq!(rl.rules, ol.rules, "after DEL: rules\nreference:\n{rl}\nours:\n{ol}");
    assert!(ol.rule_tables().is_empty(), "{ol}");
    assert!(ol.routes_in("100").is_empty() && ol.routes_in("101").is_empty(), "{ol}");
    // What 1.1.1 leaves behind: the tables' routes.
    assert!(
        !rl.routes_in("100").is_empty(),
        "reference 1.1.1 was expected to leave table 100:\n{rl}"
    );
}

#[test]
fn v4_like_reference() {
    add_del_like_reference(
        "v4_like_reference",
        &[Iface::new("eth0").v4("10.9.0.2/24", "10.9.0.1").default_route()],
    );
}

#[test]
fn v6_like_reference() {
    add_del_like_reference(
        "v6_like_reference",
        &[Iface::new("eth0").v6("fd09::2/64", "fd09::1").default_route()],
    );
}

#[test]
fn dual_stack_like_reference() {
    add_del_like_reference(
        "dual_stack_like_reference",
        &[Iface::new("eth0")
            .v4("10.9.0.2/24", "10.9.0.1")
            .v6("fd09::2/64", "fd09::1")
            .default_route()],
    );
}

#[test]
fn no_gateway_like_reference() {
    add_del_like_reference(
        "no_gateway_like_reference",
        &[Iface::new("eth0").v4("10.9.0.2/24", "10.9.0.1")],
    );
}

/// Two addresses of one subnet on one interface: each gets its own table with the subnet
/// route (copied, not moved, so the second still finds it).
#[test]
fn two_addresses_one_subnet_like_reference() {
    add_del_like_reference(
        "two_addresses_one_subnet_like_reference",
        &[Iface::new("eth0")
            .v4("10.9.0.2/24", "10.9.0.1")
            .also("10.9.0.3/24", "10.9.0.1")
            .default_route()],
    );
}

/// Two interfaces one after the other: the second gets the next free tables and a rule
/// priority below the first's, exactly as with the reference.
#[test]
fn second_interface_like_reference() {
    if !require_reference("second_interface_like_reference", "sbr") {
        return;
    }
    let t = Twins::new(&two_dual_stack_ifaces());
    for i in [0, 1] {
        let (r, o) = t.run("ADD", i, &json!({}), &no_edit);
        same_outcome(&t, &format!("ADD eth{i}"), &r, &o);
        r.expect_ok();
        t.assert_same_layout(&format!("after ADD eth{i}"));
    }
    let l = t.ours.layout();
    assert!(l.has_rule("-4 32764: from 10.2.0.2 lookup 102"), "{l}");
    assert!(l.has_rule("-6 32764: from fd02::2 lookup 103"), "{l}");
    // Removing the first leaves the second's rules alone, in both.
    let (r, o) = t.run("DEL", 0, &json!({}), &no_edit);
    same_outcome(&t, "DEL eth0", &r, &o);
    let (rl, ol) = (t.reference.layout(), t.ours.layout());
    assert_eq!(rl.rules, ol.rules, "reference:\n{rl}\nours:\n{ol}");
    assert_eq!(ol.rule_tables(), ["102", "103"], "{ol}");
}

/// Errors both give the same way: not chained, no address.
#[test]
fn errors_like_reference() {
    if !require_reference("errors_like_reference", "sbr") {
        return;
    }
    let t = Twins::new(&[Iface::new("eth0").v4("10.9.0.2/24", "10.9.0.1").default_route()]);
    let cases: [(&str, &Edit); 2] = [
        ("no prevResult", &|c| {
            c.as_object_mut().unwrap().remove("prevResult");
        }),
        ("no addresses", &|c| c["prevResult"]["ips"] = json!([])),
    ];
    for (what, edit) in cases {
        let (r, o) = t.run("ADD", 0, &json!({}), edit);
        same_outcome(&t, what, &r, &o);
        assert_eq!(r.code(), Some(999), "{what}: {r}");
    }
    t.assert_same_layout("after the errors");
}

/// DEL once the interface is gone: the reference 1.1.1 fails, we succeed (as upstream does
/// since). The rule is removed by us thanks to the prevResult.
#[test]
fn del_without_interface_differs_from_reference() {
    if !require_reference("del_without_interface_differs_from_reference", "sbr") {
        return;
    }
    let t = Twins::new(&[Iface::new("eth0").v4("10.9.0.2/24", "10.9.0.1").default_route()]);
    let (r, o) = t.run("ADD", 0, &json!({}), &no_edit);
    r.expect_ok();
    o.expect_ok();
    for p in [&t.reference, &t.ours] {
        p.ns.ip(&["link", "del", "eth0"]);
    }
    let (r, o) = t.run("DEL", 0, &json!({}), &no_edit);
    r.expect_err(999);
    assert_eq!(r.msg(), Some("Failed to get link eth0: Link not found"), "{r}");
    o.expect_ok();
    assert!(t.ours.layout().rule_tables().is_empty(), "{}", t.ours.layout());
}

/// `table`: 1.1.1 does not know the key and moves the routes anyway; we follow upstream
/// (only the rules, pointing at that table).
#[test]
fn table_key_is_newer_than_reference() {
    if !require_reference("table_key_is_newer_than_reference", "sbr") {
        return;
    }
    let t = Twins::new(&[Iface::new("eth0").v4("10.9.0.2/24", "10.9.0.1").default_route()]);
    let (r, o) = t.run("ADD", 0, &json!({"table": 5001}), &no_edit);
    same_outcome(&t, "ADD", &r, &o);
    let (rl, ol) = (t.reference.layout(), t.ours.layout());
    assert!(rl.has_rule("-4 32765: from 10.9.0.2 lookup 100"), "{rl}");
    assert!(ol.has_rule("-4 32765: from 10.9.0.2 lookup 5001"), "{ol}");
    assert!(ol.has_route("-4 default via 10.9.0.1 dev eth0"), "{ol}");
}

/// A real chain: ptp (host-local, dual-stack) then sbr with ptp's result as prevResult, once
/// with the reference plugins and once with ours. The pod's rule/route layouts must match,
/// and in both the pod reaches its gateway from its own address (through table 100/101)
/// but not without a source address (main has nothing for eth0 any more).
#[test]
fn ptp_chain_like_reference() {
    use crate::common::veth_rig::{conf as vconf, Impl, Rig};
    if !require_reference("ptp_chain_like_reference", "sbr") {
        return;
    }
    let mut layouts = Vec::new();
    for imp in [Impl::Reference, Impl::Ours] {
        let rig = Rig::new(if imp == Impl::Ours { "sbo" } else { "sbr" }, imp);
        let target = match imp {
            Impl::Ours => crate::common::veth_rig::ours(),
            Impl::Reference => reference_bin("sbr"),
        };
        std::os::unix::fs::symlink(target, rig.bin.join("sbr")).unwrap();
        let pod = rig.pod("sbp");
        let mut ptp = vconf("1.0.0", "sbrptp", "ptp", json!({}));
        ptp["ipam"] = rig.host_local(&[json!("10.64.0.0/24"), json!("fd64::/64")]);
        ptp["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
        let result = rig.add(&ptp, "c1", &pod, "eth0").expect_ok().json();
        let mut sbr = vconf("1.0.0", "sbrptp", "sbr", json!({}));
        sbr["prevResult"] = result.clone();
        let out = rig.add(&sbr, "c1", &pod, "eth0").expect_ok().json();
        assert_eq!(out, result, "sbr passes ptp's result through");
        let l = layout(&pod);
        assert!(l.has_rule("-4 32765: from 10.64.0.2 lookup 100"), "{l}");
        assert!(l.has_rule("-6 32765: from fd64::2 lookup 101"), "{l}");
        let ping = |src: Option<&str>, dst: &str| {
            let mut argv = vec!["ping", "-n", "-c", "1", "-W", "5"];
            if let Some(s) = src {
                argv.extend_from_slice(&["-I", s]);
            }
            argv.push(dst);
            pod.exec(&argv).status.success()
        };
        assert!(ping(Some("10.64.0.2"), "10.64.0.1"), "{l}");
        assert!(ping(Some("fd64::2"), "fd64::1"), "{l}");
        assert!(!ping(None, "10.64.0.1"), "main has no route for eth0 any more:\n{l}");
        layouts.push(l);
        rig.del(&sbr, "c1", pod.path_str(), "eth0").expect_ok();
        rig.del(&ptp, "c1", pod.path_str(), "eth0").expect_ok();
        let left = layout(&pod);
        assert!(left.rule_tables().is_empty(), "{left}");
    }
    assert_eq!(
        layouts[0], layouts[1],
        "reference:\n{}\nours:\n{}",
        layouts[0], layouts[1]
    );
}
