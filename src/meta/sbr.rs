//! sbr: source based routing (`plugins/meta/sbr`, upstream's current keys). Chained after
//! the plugin that made CNI_IFNAME; it prints the prevResult back unchanged.
//!
//! For every container address of the interface (an IP whose `interface` index names
//! CNI_IFNAME, or that has no index), in the container's netns:
//!
//! ```text
//! ip rule add from 10.9.0.2/32 lookup 100                 (priority chosen by the kernel)
//! ip route add default via <gateways[v4] | ip.gateway> dev eth0 table 100
//! ip route replace <each main-table route of eth0 whose src or gw is in 10.9.0.2/24,
//!                   or that has neither> table 100
//! ```
//!
//! Each address gets its own table, the first ID >= 100 that no rule and no route uses; the
//! netns file is flock'ed while tables are picked, so concurrent ADDs never share one. The
//! interface's main-table routes are then deleted; with `addSourceHints` the subnet route is
//! replaced with `src <ip> scope link` instead and only routes that are not link-scope go.
//! With `table` given, only the rules are added (pointing at that table) and no route moves.
//!
//! DEL removes the rules whose source is an address of the interface (or of the prevResult
//! for it), and the routes of the tables those rules pointed at. A vanished netns or
//! interface is success.
//!
//! Differences from the reference, on purpose: a table that holds routes but has no rule is
//! not free (the reference only looks at main-table routes, so it can reuse one); DEL also
//! flushes the tables it emptied (the reference leaves their routes behind); with no
//! address for CNI_IFNAME, ADD changes nothing (the reference still deletes the
//! interface's main-table routes); more than one gateway per family is a config error (the
//! reference silently takes the last); CHECK verifies the rules (the reference's is a no-op).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;

use crate::cni::gokeys::GoKeys;
use anyhow::{anyhow, bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::cni::config::{self, NetConf};
use crate::cni::error::{CniError, Failures};
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, IpConfig};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::route::{SCOPE_LINK, TABLE_MAIN};
use crate::linux::netlink::{IpFamily, Route, Rule};
use crate::linux::Netlink;
use crate::pkg::caps::{self, Capability};
use crate::pkg::netns::{open_netns, open_netns_for_del};
use crate::pkg::undo::Undo;

pub static PLUGIN: Plugin = entry::<Sbr>();

/// The first table ID the reference hands out.
const FIRST_TABLE: u32 = 100;
/// `default` and `local`, never emptied by DEL (main is never a candidate either).
const RESERVED_TABLES: [u32; 4] = [0, 253, TABLE_MAIN, 255];

// ---- config ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
struct SbrConf {
    #[serde(flatten)]
    net: NetConf,
    /// Only add rules pointing at this table; move no routes.
    #[serde(default)]
    table: Option<u32>,
    /// Static default gateways, at most one per family; they win over the IP's gateway.
    #[serde(default)]
    gateways: Vec<String>,
    #[serde(rename = "addSourceHints", default)]
    add_source_hints: bool,
}

struct Conf {
    net: NetConf,
    table: Option<u32>,
    gw4: Option<IpAddr>,
    gw6: Option<IpAddr>,
    add_source_hints: bool,
}

impl Conf {
    fn static_gateway(&self, ip: IpAddr) -> Option<IpAddr> {
        if ip.is_ipv4() {
            self.gw4
        } else {
            self.gw6
        }
    }
}

fn parse_conf(stdin: &[u8]) -> Result<Conf> {
    let c: SbrConf = config::parse(stdin)?;
    if c.table == Some(0) {
        bail!(CniError::invalid_config("table 0 is not a routing table"));
    }
    let (mut gw4, mut gw6) = (None, None);
    for g in &c.gateways {
        let ip =
            parse_ip(g).ok_or_else(|| CniError::invalid_config(format!("invalid static gateway IP address: {g}")))?;
        let (slot, fam) = if ip.is_ipv4() {
            (&mut gw4, "IPv4")
        } else {
            (&mut gw6, "IPv6")
        };
        if let Some(prev) = slot.replace(ip) {
            bail!(CniError::invalid_config(format!(
                "gateways: at most one {fam} gateway may be given, got {prev} and {ip}"
            )));
        }
    }
    Ok(Conf {
        net: c.net,
        table: c.table,
        gw4,
        gw6,
        add_source_hints: c.add_source_hints,
    })
}

/// Like Go's `net.ParseIP`: an IPv4-mapped IPv6 address counts as IPv4.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip: IpAddr = s.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    })
}

/// The prevResult's addresses that belong to `ifname`: those whose interface index names it,
/// and those without an index (or with one out of range), as the reference picks them.
fn addresses_of<'a>(prev: &'a CniResult, ifname: &str) -> Vec<&'a IpConfig> {
    prev.ips
        .iter()
        .filter(|ip| match ip.interface {
            Some(i) => prev.interfaces.get(i).is_none_or(|itf| itf.name == ifname),
            None => true,
        })
        .collect()
}

/// The `from <ip>/32|128` part of a rule.
fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn source_rule(ip: IpAddr, table: u32) -> Rule {
    let mut r = Rule::new(IpFamily::of(ip), table);
    r.src = Some(host(ip));
    r
}

struct Sbr;

impl CniPlugin for Sbr {
    const NAME: &'static str = "sbr";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "source based routing: a routing table and an ip rule per container address";
    const CAPS: &'static [Capability] = caps::IN_POD;
    const HAS_STATUS: bool = false;
    const HAS_GC: bool = false;
    type Conf = Conf;
    type Lenient = SbrConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        // Only the keys' types are checked: a `gateways` list that ADD would refuse must not
        // keep an attachment made by a plugin that ignored it (1.1.1 does) from being deleted.
        Ok(config::parse(&args.stdin)?)
    }

    fn add(c: Conf, args: &CmdArgs) -> Result<CniResult> {
        let Some(prev) = c.net.prev_result()? else {
            bail!("This plugin must be called as chained plugin");
        };
        if prev.ips.is_empty() {
            bail!("No IP addresses supplied on interface: {}", args.ifname);
        }
        let ips: Vec<IpConfig> = addresses_of(&prev, &args.ifname).into_iter().cloned().collect();
        if ips.is_empty() {
            return Ok(prev);
        }
        let ns = open_netns(&args.netns)?;
        // Held until the rules and routes are in place (and through a rollback): another ADD in
        // this netns must see our tables as used before it picks its own.
        let _lock = ns.lock_exclusive()?;
        let nl = Rc::new(RefCell::new(Netlink::in_netns(&ns)?));
        let mut undo = Undo::new();
        match c.table {
            Some(table) => add_rules(&nl, &ips, table, &mut undo)?,
            None => add_tables(&nl, &ips, &args.ifname, &c, &mut undo)?,
        }
        undo.commit();
        Ok(prev)
    }

    fn del(c: SbrConf, args: &CmdArgs) -> Result<()> {
        let prev = c.net.prev_result().ok().flatten();
        let Some(ns) = open_netns_for_del(&args.netns)? else {
            return Ok(());
        };
        let _lock = ns.lock_exclusive()?;
        let mut nl = Netlink::in_netns(&ns)?;
        let link = nl.link_by_name(&args.ifname)?;
        let mut sources: BTreeSet<IpAddr> = BTreeSet::new();
        if let Some(l) = &link {
            sources.extend(nl.addrs(Some(l.index), IpFamily::All)?.iter().map(|a| a.ip.addr()));
        }
        // The addresses may already be gone from the interface (or the interface itself); the
        // prevResult still names the rules' sources.
        if let Some(p) = &prev {
            sources.extend(addresses_of(p, &args.ifname).iter().map(|ip| ip.address.addr()));
        }
        if sources.is_empty() {
            return Ok(());
        }

        let mut errs = Failures::new();
        let mut emptied = BTreeSet::new();
        for r in nl.all_rules().context("Failed to list all rules to tidy")? {
            if c.table.is_some_and(|t| r.table != t) {
                continue;
            }
            let Some(src) = r.src else { continue };
            if !sources.contains(&src.addr()) {
                continue;
            }
            match nl.del_rule(&r) {
                Ok(()) => {
                    emptied.insert(r.table);
                }
                Err(e) if e.is_not_found() => {}
                // The reference's words, without a colon.
                Err(e) => errs.push(anyhow!("Failed to delete rule {e}")),
            }
        }

        // The tables were ours only when sbr picked them; a configured table belongs to whoever
        // filled it. Routes leave with the interface anyway, so only a live one needs this.
        if let (None, Some(l)) = (c.table, &link) {
            let still_used: BTreeSet<u32> = nl.all_rules()?.iter().map(|r| r.table).collect();
            for t in emptied
                .iter()
                .filter(|t| !RESERVED_TABLES.contains(t) && !still_used.contains(t))
            {
                for r in nl.link_routes(l.index, Some(*t))? {
                    errs.keep(
                        ignore_gone(nl.del_route(&r))
                            .with_context(|| format!("Failed to delete route {} from table {t}", r.dst)),
                    );
                }
            }
        }
        Ok(errs.finish()?)
    }

    /// Every address of the interface has its source rule (into `table` when configured).
    fn check(c: Conf, args: &CmdArgs) -> Result<()> {
        let Some(prev) = c.net.prev_result()? else {
            bail!("This plugin must be called as chained plugin");
        };
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::in_netns(&ns)?;
        if nl.link_by_name(&args.ifname)?.is_none() {
            bail!("Cannot find network interface {}: Link not found", args.ifname);
        }
        let rules = nl.all_rules()?;
        for ip in addresses_of(&prev, &args.ifname) {
            let want = host(ip.address.addr());
            let found = rules
                .iter()
                .any(|r| r.src == Some(want) && c.table.is_none_or(|t| r.table == t));
            if !found {
                match c.table {
                    Some(t) => bail!("no rule \"from {} lookup {t}\" for {}", want.addr(), args.ifname),
                    None => bail!("no source rule \"from {}\" for {}", want.addr(), args.ifname),
                }
            }
        }
        Ok(())
    }
}

/// With `table`: one rule per address, nothing else.
fn add_rules(nl: &Rc<RefCell<Netlink>>, ips: &[IpConfig], table: u32, undo: &mut Undo) -> Result<()> {
    for ip in ips {
        let rule = source_rule(ip.address.addr(), table);
        nl.borrow_mut()
            .add_rule(&rule)
            .map_err(|e| anyhow!("failed to add rule: {e}"))?;
        push_del_rule(nl, rule, undo);
    }
    Ok(())
}

/// Without `table`: a table per address with the interface's routes, then main is cleared.
fn add_tables(nl: &Rc<RefCell<Netlink>>, ips: &[IpConfig], ifname: &str, c: &Conf, undo: &mut Undo) -> Result<()> {
    let (index, used, main) = {
        let mut n = nl.borrow_mut();
        let used = used_tables(&mut n)?;
        let link = n
            .link_by_name(ifname)?
            .ok_or_else(|| anyhow!("Cannot find network interface {ifname}: Link not found"))?;
        let main = n.link_routes(link.index, Some(TABLE_MAIN))?;
        (link.index, used, main)
    };

    let mut table = next_free(&used, FIRST_TABLE);
    for ip in ips {
        let addr = ip.address.addr();
        let rule = source_rule(addr, table);
        nl.borrow_mut()
            .add_rule(&rule)
            .map_err(|e| anyhow!("Failed to add rule: {e}"))?;
        push_del_rule(nl, rule, undo);

        // The previous plugin may have put no default route on the interface.
        if let Some(gw) = c.static_gateway(addr).or(ip.gateway) {
            let any = IpNet::new(unspecified(addr), 0).expect("prefix 0 is valid");
            let r = Route::new(any).gw(gw).oif(index).table(table);
            nl.borrow_mut()
                .add_route(&r)
                .map_err(|e| anyhow!("Failed to add default route to {gw}: {e}"))?;
            push_del_route(nl, r, undo);
        }

        // Copies, not moves: two addresses of one subnet both need the subnet route, and it
        // must stay in main until every gateway route above has been added.
        for r in main.iter().filter(|r| belongs_to(r, &ip.address)) {
            let mut copy = r.clone();
            copy.table = table;
            // Replace: the default route added above may be one of them.
            nl.borrow_mut()
                .replace_route(&copy)
                .map_err(|e| anyhow!("Failed to readd route: {e}"))?;
            push_del_route(nl, copy, undo);
        }
        table = next_free(&used, table + 1);
    }

    if c.add_source_hints {
        // The subnet route stays in main, with a source hint, so traffic that binds no
        // source address still reaches the subnet from the right address.
        for ip in ips {
            let addr = ip.address.addr();
            let mut hinted = Route::new(ip.address.trunc()).oif(index).scope(SCOPE_LINK);
            hinted.src = Some(addr);
            let replaced = main
                .iter()
                .find(|r| r.dst == hinted.dst && r.priority.unwrap_or(0) == 0)
                .cloned();
            match nl.borrow_mut().replace_route(&hinted) {
                Ok(()) => {}
                // As the reference: a hint that cannot be set does not fail the ADD.
                Err(e) => {
                    eprintln!("sbr: failed to add subnet route with source hint to main table: {e}");
                    continue;
                }
            }
            let (n, mut added) = (nl.clone(), hinted);
            // IPv6 files an unset metric as 1024; name it so the delete hits this route.
            if addr.is_ipv6() {
                added.priority = Some(1024);
            }
            undo.push(format!("remove source hint route {}", added.dst), move || {
                let mut n = n.borrow_mut();
                ignore_gone(n.del_route(&added))?;
                if let Some(orig) = replaced {
                    n.replace_route(&orig)?;
                }
                Ok(())
            });
        }
        for r in main.iter().filter(|r| r.scope != SCOPE_LINK) {
            match nl.borrow_mut().del_route(r) {
                Ok(()) => push_readd_route(nl, r.clone(), undo),
                Err(e) => eprintln!("sbr: failed to delete route {}: {e}", r.dst),
            }
        }
    } else {
        for r in &main {
            nl.borrow_mut()
                .del_route(r)
                .map_err(|e| anyhow!("Failed to delete route: {e}"))?;
            push_readd_route(nl, r.clone(), undo);
        }
    }
    Ok(())
}

/// Tables that any rule or any route (of any table, any family) refers to.
fn used_tables(nl: &mut Netlink) -> Result<BTreeSet<u32>> {
    let mut used: BTreeSet<u32> = nl.all_rules()?.iter().map(|r| r.table).collect();
    used.extend(nl.routes(IpFamily::All, None)?.iter().map(|r| r.table));
    Ok(used)
}

fn next_free(used: &BTreeSet<u32>, from: u32) -> u32 {
    (from..).find(|t| !used.contains(t)).expect("some table ID is free")
}

/// The reference's test: a route goes with an address when its source or gateway is in the
/// address's subnet, or when it has neither (a plain device route).
fn belongs_to(r: &Route, net: &IpNet) -> bool {
    r.src.is_some_and(|s| net.contains(&s))
        || r.gw.is_some_and(|g| net.contains(&g))
        || (r.src.is_none() && r.gw.is_none())
}

fn unspecified(of: IpAddr) -> IpAddr {
    match of {
        IpAddr::V4(_) => IpAddr::V4(0.into()),
        IpAddr::V6(_) => IpAddr::V6(0.into()),
    }
}

fn ignore_gone(r: crate::linux::Result<()>) -> Result<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => Ok(other?),
    }
}

fn push_del_rule(nl: &Rc<RefCell<Netlink>>, rule: Rule, undo: &mut Undo) {
    let n = nl.clone();
    let src = rule.src.map(|s| s.to_string()).unwrap_or_default();
    let what = format!("delete rule from {src} lookup {}", rule.table);
    undo.push(what, move || ignore_gone(n.borrow_mut().del_rule(&rule)));
}

fn push_del_route(nl: &Rc<RefCell<Netlink>>, r: Route, undo: &mut Undo) {
    let n = nl.clone();
    let what = format!("delete route {} table {}", r.dst, r.table);
    undo.push(what, move || ignore_gone(n.borrow_mut().del_route(&r)));
}

fn push_readd_route(nl: &Rc<RefCell<Netlink>>, r: Route, undo: &mut Undo) {
    let n = nl.clone();
    let what = format!("restore route {} table {}", r.dst, r.table);
    undo.push(what, move || Ok(n.borrow_mut().replace_route(&r)?));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::error::code;
    use crate::cni::result::Interface;
    use serde_json::json;

    fn conf(extra: serde_json::Value) -> Vec<u8> {
        let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "sbr"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        serde_json::to_vec(&c).unwrap()
    }

    fn code_of(r: Result<Conf>) -> (u32, String) {
        let e = CniError::from_anyhow(&r.err().expect("an error"));
        (e.code, e.msg)
    }

    #[test]
    fn gateways_one_per_family() {
        let c = parse_conf(&conf(json!({"gateways": ["10.0.0.1", "fd00::1"]}))).unwrap();
        assert_eq!(c.gw4, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(c.gw6, Some("fd00::1".parse().unwrap()));
        let (code, msg) = code_of(parse_conf(&conf(json!({"gateways": ["10.0.0.1", "10.0.0.2"]}))));
        assert_eq!(code, code::INVALID_CONFIG);
        assert!(msg.contains("at most one IPv4 gateway"), "{msg}");
        let (code, msg) = code_of(parse_conf(&conf(json!({"gateways": ["fd00::1", "fd00::2"]}))));
        assert_eq!(code, code::INVALID_CONFIG);
        assert!(msg.contains("IPv6"), "{msg}");
        // Go's ParseIP makes an IPv4-mapped address IPv4.
        let (code, _) = code_of(parse_conf(&conf(json!({"gateways": ["10.0.0.1", "::ffff:10.0.0.2"]}))));
        assert_eq!(code, code::INVALID_CONFIG);
        let (code, msg) = code_of(parse_conf(&conf(json!({"gateways": ["nope"]}))));
        assert_eq!(code, code::INVALID_CONFIG);
        assert_eq!(msg, "invalid static gateway IP address: nope");
    }

    #[test]
    fn typed_keys() {
        let (code, msg) = code_of(parse_conf(&conf(json!({"table": "x"}))));
        assert_eq!(code, code::INVALID_CONFIG);
        assert!(msg.contains("table"), "{msg}");
        let (code, _) = code_of(parse_conf(&conf(json!({"table": 0}))));
        assert_eq!(code, code::INVALID_CONFIG);
        let (code, _) = code_of(parse_conf(&conf(json!({"addSourceHints": "yes"}))));
        assert_eq!(code, code::INVALID_CONFIG);
        let c = parse_conf(&conf(json!({"table": 5001, "addSourceHints": true}))).unwrap();
        assert_eq!(c.table, Some(5001));
        assert!(c.add_source_hints);
    }

    #[test]
    fn addresses_are_picked_like_the_reference() {
        let mut r = CniResult::new("1.0.0");
        for n in ["eth0", "eth1"] {
            r.interfaces.push(Interface {
                name: n.into(),
                ..Default::default()
            });
        }
        let ip = |a: &str, i: Option<usize>| IpConfig {
            interface: i,
            address: a.parse().unwrap(),
            gateway: None,
        };
        r.ips = vec![
            ip("10.0.0.2/24", Some(0)),
            ip("10.1.0.2/24", Some(1)),
            ip("10.2.0.2/24", None),
            ip("10.3.0.2/24", Some(7)),
        ];
        let got: Vec<String> = addresses_of(&r, "eth1").iter().map(|i| i.address.to_string()).collect();
        assert_eq!(got, ["10.1.0.2/24", "10.2.0.2/24", "10.3.0.2/24"]);
    }

    #[test]
    fn route_selection() {
        let net: IpNet = "10.9.0.2/24".parse().unwrap();
        let mut r = Route::new("10.9.0.0/24".parse().unwrap());
        assert!(belongs_to(&r, &net), "plain device route");
        r.src = Some("10.9.0.2".parse().unwrap());
        assert!(belongs_to(&r, &net));
        r.src = Some("10.8.0.2".parse().unwrap());
        assert!(!belongs_to(&r, &net));
        let d = Route::new("0.0.0.0/0".parse().unwrap()).gw("10.9.0.1".parse().unwrap());
        assert!(belongs_to(&d, &net));
        let d6 = Route::new("::/0".parse().unwrap()).gw("fd00::1".parse().unwrap());
        assert!(!belongs_to(&d6, &net));
    }

    #[test]
    fn free_tables() {
        let used: BTreeSet<u32> = [100, 101, 103, 254].into();
        assert_eq!(next_free(&used, FIRST_TABLE), 102);
        assert_eq!(next_free(&used, 103), 104);
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(SbrConf::shape()).unwrap();
        let c: SbrConf = config::parse(
            br#"{"cniVersion":"1.0.0","name":"n","Table":101,"Gateways":["10.0.0.1"],"AddSourceHints":true}"#,
        )
        .unwrap();
        assert_eq!(
            (c.table, c.gateways.clone(), c.add_source_hints),
            (Some(101), vec!["10.0.0.1".to_string()], true)
        );
    }
}
