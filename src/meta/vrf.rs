//! vrf: put the interface a previous plugin made into a VRF (an L3 master device bound to a
//! routing table) inside the container's netns. Chained only: it needs a prevResult and
//! prints it back unchanged.
//!
//! ADD finds or creates the VRF `vrfname` (table `table`, or the first free one), enslaves
//! CNI_IFNAME, and repairs what the kernel's down/up cycle on enslave takes away: IPv6
//! global addresses (dropped unless keep_addr_on_down) and the interface's routes in the main
//! table, which are moved into the VRF's table. DEL releases the interface and deletes the
//! VRF with its last slave.

use crate::cni::config::{self, NetConf};
use crate::cni::error::{code, CniError};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::route::{PROTO_KERNEL, SCOPE_LINK, SCOPE_UNIVERSE, TABLE_MAIN};
use crate::linux::netlink::{Addr, IpFamily, Link, LinkKind, LinkSpec, LinkType, Route, RouteType};
use crate::linux::{NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::netns::{open_netns, open_netns_for_del};
use crate::pkg::undo::Undo;
use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use serde::Deserialize;
use std::time::Duration;

pub static PLUGIN: Plugin = entry::<Vrf>();

/// Tables the kernel reserves (default, main, local): never handed out automatically.
const RESERVED_TABLES: [u32; 3] = [253, 254, 255];
/// Routes the kernel learnt from router advertisements; it re-learns them in the VRF.
const PROTO_RA: u8 = 9;
/// Waiting for a restored IPv6 address's local route: 10 ms doubling, 8 sleeps (~2.5 s),
/// as the reference waits.
const ROUTE_WAIT_BASE: Duration = Duration::from_millis(10);
const ROUTE_WAIT_RETRIES: u32 = 8;

// ---- config -----------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
struct VrfConf {
    #[serde(flatten)]
    net: NetConf,
    /// Also `vrfName`, the spelling people write (cni::gokeys matches any case, as Go does).
    #[serde(default)]
    vrfname: String,
    #[serde(default)]
    table: u32,
}

fn parse_conf(stdin: &[u8]) -> anyhow::Result<VrfConf> {
    let c: VrfConf = config::parse(stdin)?;
    if c.vrfname.is_empty() {
        bail!(CniError::invalid_config(
            "configuration is expected to have a valid vrf name"
        ));
    }
    // The name becomes a link name: reject what the kernel would reject, before touching it.
    if c.vrfname.len() > 15
        || c.vrfname == "."
        || c.vrfname == ".."
        || c.vrfname.chars().any(|ch| ch == '/' || ch == ':' || ch.is_whitespace())
    {
        bail!(CniError::invalid_config(format!(
            "invalid vrfname {:?}: not a valid interface name (at most 15 characters, no '/', ':' or spaces)",
            c.vrfname
        )));
    }
    if RESERVED_TABLES.contains(&c.table) {
        bail!(CniError::invalid_config(format!(
            "invalid table {}: 253, 254 and 255 are the kernel's default, main and local tables",
            c.table
        )));
    }
    Ok(c)
}

/// ADD and CHECK need the previous plugin's result.
fn require_prev(c: &VrfConf) -> anyhow::Result<CniResult> {
    c.net
        .prev_result()?
        .ok_or_else(|| CniError::invalid_config("missing prevResult from earlier plugin").into())
}

/// The first table id >= 1 that no VRF in `links` uses, skipping the kernel's own tables.
fn free_table(links: &[Link]) -> Option<u32> {
    let mut taken: Vec<u32> = links.iter().filter(|l| is_vrf(l)).filter_map(|l| l.vrf_table).collect();
    taken.sort_unstable();
    // At most len + 4 steps: every step passes a taken or reserved id.
    let mut t = 1u32;
    while RESERVED_TABLES.contains(&t) || taken.binary_search(&t).is_ok() {
        t = t.checked_add(1)?;
    }
    Some(t)
}

fn is_vrf(l: &Link) -> bool {
    l.kind == Some(LinkType::Vrf)
}

/// The link called `name` if it is a VRF; an error naming it if it is something else.
fn find_vrf(nl: &mut Netlink, name: &str) -> anyhow::Result<Option<Link>> {
    match nl.link_by_name(name)? {
        None => Ok(None),
        Some(l) if is_vrf(&l) => Ok(Some(l)),
        Some(l) => bail!(CniError::invalid_config(format!(
            "Netlink {name} is not a VRF (it is a {} link)",
            l.kind.as_ref().map_or("physical".to_string(), LinkType::to_string)
        ))),
    }
}

struct Vrf;

impl CniPlugin for Vrf {
    const NAME: &'static str = "vrf";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str =
        "enslave the container interface to a VRF (created on demand, deleted with its last slave)";
    const CAPS: &'static [Capability] = caps::IN_POD;
    const VERSIONS: &'static [&'static str] = &["0.3.1", "0.4.0", "1.0.0", "1.1.0"];
    const HAS_STATUS: bool = false;
    const HAS_GC: bool = false;
    type Conf = VrfConf;
    type Lenient = VrfConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        parse_conf(&args.stdin)
    }

    fn add(c: VrfConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let result = require_prev(&c)?;
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::in_netns(&ns)?;
        let mut undo = Undo::new();
        enslave(&mut nl, &ns, &c, &args.ifname, &mut undo).map_err(|e| e.context("cmdAdd failed"))?;
        undo.commit();
        Ok(result)
    }

    /// Release the interface and delete the VRF with its last slave. A missing netns, VRF or
    /// interface means there is nothing (more) to undo; a link vanishing under us (ENODEV) is
    /// the same thing seen late.
    fn del(c: VrfConf, args: &CmdArgs) -> anyhow::Result<()> {
        let Some(ns) = open_netns_for_del(&args.netns)? else {
            return Ok(());
        };
        let mut nl = Netlink::in_netns(&ns)?;
        let vrf = match nl.link_by_name(&c.vrfname)? {
            Some(l) if is_vrf(&l) => l,
            // Absent, or a link of another kind that is not ours to touch.
            _ => return Ok(()),
        };
        let gone = |e: &crate::linux::Error| e.is_not_found();
        if let Some(iface) = nl.link_by_name(&args.ifname)? {
            if iface.master == Some(vrf.index) {
                match nl.set_nomaster(iface.index) {
                    Ok(()) => {}
                    Err(e) if gone(&e) => {}
                    Err(e) => {
                        return Err(
                            anyhow!(e).context(format!("could not release {} from VRF {}", args.ifname, c.vrfname))
                        )
                    }
                }
            }
        }
        let slaves = nl.links()?.into_iter().filter(|l| l.master == Some(vrf.index)).count();
        if slaves == 0 {
            match nl.delete_link(vrf.index) {
                Ok(()) => {}
                Err(e) if gone(&e) => {}
                Err(e) => return Err(anyhow!(e).context(format!("could not delete VRF {}", c.vrfname))),
            }
        }
        Ok(())
    }

    fn check(c: VrfConf, args: &CmdArgs) -> anyhow::Result<()> {
        require_prev(&c)?;
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::in_netns(&ns)?;
        let vrf = find_vrf(&mut nl, &c.vrfname)?.ok_or_else(|| anyhow!("VRF {} not found", c.vrfname))?;
        if c.table != 0 && vrf.vrf_table != Some(c.table) {
            return Err(anyhow!(
                "VRF {} has routing table {}, the config says {}",
                c.vrfname,
                vrf.vrf_table.unwrap_or(0),
                c.table
            ));
        }
        match nl.link_by_name(&args.ifname)? {
            Some(l) if l.master == Some(vrf.index) => Ok(()),
            _ => Err(anyhow!(
                "Failed to find {} associated to vrf {}",
                args.ifname,
                c.vrfname
            )),
        }
    }
}

fn enslave(nl: &mut Netlink, ns: &NetNs, c: &VrfConf, ifname: &str, undo: &mut Undo) -> anyhow::Result<()> {
    // Every refusal comes before anything is made, in the reference's order: the table
    // conflict, then the interface.
    let existing = find_vrf(nl, &c.vrfname)?;
    if let Some(v) = &existing {
        let table = v.vrf_table.unwrap_or(0);
        if c.table != 0 && table != c.table {
            bail!(CniError::invalid_config(format!(
                "VRF {} already exist with different routing table {table}",
                c.vrfname
            )));
        }
    }
    let iface = nl
        .link_by_name(ifname)?
        .ok_or_else(|| anyhow!("could not get link by name {ifname}: Link not found"))?;
    if let Some(m) = iface.master {
        let name = nl.link_by_index(m)?.map(|l| l.name).unwrap_or_else(|| format!("#{m}"));
        return Err(anyhow!("interface {ifname} has already a master set: {name}"));
    }
    let vrf = match existing {
        Some(v) => v,
        None => create_vrf(nl, ns, &c.vrfname, c.table, undo)?,
    };
    let table = vrf
        .vrf_table
        .ok_or_else(|| anyhow!("VRF {} reports no routing table", c.vrfname))?;

    // What the enslave's down/up cycle removes, saved first.
    let v6_before = global_v6(nl, iface.index)?;
    let main = nl.routes(IpFamily::All, Some(TABLE_MAIN))?;
    let mut routes: Vec<Route> = main.iter().filter_map(|r| movable(r, iface.index)).collect();
    // Link-scope routes first: the gateways of the others may be reached through them.
    routes.sort_by_key(|r| std::cmp::Reverse(r.scope));

    nl.set_master(iface.index, vrf.index)
        .with_context(|| format!("could not set vrf {} as master of {ifname}", c.vrfname))?;
    {
        let (path, idx) = (ns.path().to_path_buf(), iface.index);
        let (v6, routes) = (v6_before.clone(), routes.clone());
        undo.push(format!("release {ifname} from VRF {}", c.vrfname), move || {
            let mut nl = Netlink::in_netns(&NetNs::open(&path)?)?;
            nl.set_nomaster(idx)?;
            // Leaving the VRF cycles the link again: put back what ADD found, best-effort.
            restore_v6(&mut nl, idx, &v6, None)?;
            // A multipath route still holds its other nexthops in main: left as it is.
            for r in routes.iter().filter(|r| r.multipath.is_empty()) {
                let _ = nl.replace_route(r);
            }
            Ok(())
        });
    }

    restore_v6(nl, iface.index, &v6_before, Some(table))
        .with_context(|| format!("could not restore IPv6 addresses of {ifname} @ {}", c.vrfname))?;
    for r in routes {
        let r = Route { table, ..r };
        nl.replace_route(&r).with_context(|| {
            format!(
                "could not copy a route of {ifname} into VRF {} (table {table})",
                c.vrfname
            )
        })?;
    }
    for r in main.iter().filter(|r| shared_multipath(r, iface.index)) {
        prune_nexthops(nl, r, iface.index).with_context(|| {
            format!(
                "could not take {ifname}'s nexthops out of the main table's route {}",
                r.dst
            )
        })?;
    }
    Ok(())
}

/// Attempts at an automatically chosen table when concurrent ADDs pick the same one.
const TABLE_ATTEMPTS: usize = 8;

fn create_vrf(nl: &mut Netlink, ns: &NetNs, name: &str, want: u32, undo: &mut Undo) -> anyhow::Result<Link> {
    for _ in 0..TABLE_ATTEMPTS {
        let table = match want {
            0 => free_table(&nl.links()?).ok_or_else(|| anyhow!("failed to find an available routing table id"))?,
            t => t,
        };
        let vrf = match try_create_vrf(nl, name, want, table)? {
            Made::Ours(v) => v,
            // A concurrent ADD's VRF is theirs to undo, not ours.
            Made::Theirs(v) => return Ok(v),
            Made::Clash => continue,
        };
        let (path, idx) = (ns.path().to_path_buf(), vrf.index);
        undo.push(format!("delete VRF {name}"), move || {
            Ok(Netlink::in_netns(&NetNs::open(&path)?)?.delete_link(idx)?)
        });
        nl.set_up(vrf.index)
            .with_context(|| format!("could not set link up for VRF {name}"))?;
        return Ok(vrf);
    }
    Err(anyhow!(
        "could not add VRF {name}: other VRFs kept taking the free routing table"
    ))
}

/// What an attempt to create the VRF gave.
enum Made {
    /// Created by this ADD.
    Ours(Link),
    /// A concurrent ADD into the same netns created it first.
    Theirs(Link),
    /// The automatically chosen table was taken by another VRF made at the same time, which
    /// would share its routes: the older VRF (lower index) keeps it, ours was deleted.
    Clash,
}

fn try_create_vrf(nl: &mut Netlink, name: &str, want: u32, table: u32) -> anyhow::Result<Made> {
    // txqlen 0 as the reference's VRFs have it (a VRF has no queue), so `ip -d link` matches.
    let spec = LinkSpec::new(name, LinkKind::Vrf { table }).txqlen(0);
    if let Err(e) = nl.create_link(&spec) {
        if e.errno() == Some(nix::libc::EOPNOTSUPP) {
            // The kernel has no "vrf" link type: nothing was created, and nothing will work.
            return Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "could not add VRF {name}: this kernel has no VRF support (CONFIG_NET_VRF, module \"vrf\"): {e}"
                ),
            )
            .into());
        }
        if !e.is_exists() {
            return Err(anyhow!(e).context(format!("could not add VRF {name}")));
        }
        // Another ADD into this netns created it first: use theirs, if it fits.
        let v = find_vrf(nl, name)?.ok_or_else(|| anyhow!("could not add VRF {name}: {e}"))?;
        if want != 0 && v.vrf_table != Some(want) {
            bail!(CniError::invalid_config(format!(
                "VRF {name} already exist with different routing table {}",
                v.vrf_table.unwrap_or(0)
            )));
        }
        return Ok(Made::Theirs(v));
    }
    let links = nl.links()?;
    let vrf = links
        .iter()
        .find(|l| l.name == name)
        .cloned()
        .ok_or_else(|| anyhow!("could not add VRF {name}: gone right after creation"))?;
    let clash = links
        .iter()
        .any(|l| is_vrf(l) && l.index < vrf.index && l.vrf_table == Some(table));
    if want == 0 && clash {
        nl.delete_link(vrf.index)
            .with_context(|| format!("could not delete VRF {name} after a table clash"))?;
        return Ok(Made::Clash);
    }
    Ok(Made::Ours(vrf))
}

/// IPv6 addresses of scope universe on `index` (link-local ones come back by themselves).
fn global_v6(nl: &mut Netlink, index: u32) -> anyhow::Result<Vec<Addr>> {
    Ok(nl
        .addrs(Some(index), IpFamily::V6)?
        .into_iter()
        .filter(|a| a.scope == SCOPE_UNIVERSE)
        .collect())
}

/// Which of the interface's routes in the main table move into the VRF's: those the kernel
/// will not remake by itself, so unicast, not kernel-made (connected and link-local
/// prefixes, which the kernel recreates in the VRF's table) nor learnt from router
/// advertisements. Universe scope as upstream, and link scope too: a gateway reached
/// through a route of its own (`169.254.1.1 dev eth0 scope link` + `default via
/// 169.254.1.1`) needs that route in the VRF, or the default route cannot follow. Of a
/// multipath route only the interface's own nexthops move (an IPv6 default route of a
/// second network is merged into the first one's as ECMP).
fn movable(r: &Route, index: u32) -> Option<Route> {
    let scope_ok = r.scope == SCOPE_UNIVERSE || r.scope == SCOPE_LINK;
    if !scope_ok || r.kind != RouteType::Unicast || r.protocol == PROTO_KERNEL || r.protocol == PROTO_RA {
        return None;
    }
    if r.multipath.is_empty() {
        return (r.oif == Some(index)).then(|| r.clone());
    }
    let mut own: Vec<_> = r.multipath.iter().filter(|nh| nh.oif == Some(index)).cloned().collect();
    match own.len() {
        0 => None,
        1 => {
            let nh = own.remove(0);
            Some(Route {
                gw: nh.gw,
                oif: nh.oif,
                multipath: Vec::new(),
                ..r.clone()
            })
        }
        _ => Some(Route {
            multipath: own,
            ..r.clone()
        }),
    }
}

/// A multipath route in main with nexthops both on `index` and elsewhere.
fn shared_multipath(r: &Route, index: u32) -> bool {
    movable(r, index).is_some() && r.multipath.iter().any(|nh| nh.oif != Some(index))
}

/// Take `index`'s nexthops out of the main table's multipath route `r`: the enslave only
/// marks them down and the link's up revives them, which would leave the default VRF a
/// path through a VRF's slave. IPv6 keeps the paths as sibling routes, deleted one by one;
/// IPv4 keeps one route, replaced by the one without them.
fn prune_nexthops(nl: &mut Netlink, r: &Route, index: u32) -> anyhow::Result<()> {
    let (own, rest): (Vec<_>, Vec<_>) = r.multipath.iter().cloned().partition(|nh| nh.oif == Some(index));
    if r.dst.addr().is_ipv6() {
        for nh in own {
            let one = Route {
                gw: nh.gw,
                oif: nh.oif,
                multipath: Vec::new(),
                ..r.clone()
            };
            match nl.del_route(&one) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        return Ok(());
    }
    let mut left = Route {
        multipath: rest,
        ..r.clone()
    };
    if left.multipath.len() == 1 {
        let nh = left.multipath.remove(0);
        left.gw = nh.gw;
        left.oif = nh.oif;
    }
    Ok(nl.replace_route(&left)?)
}

/// Re-add the addresses of `before` that `index` lost. With `table`, wait (bounded) until
/// each one's local route is in that table, since routes with it as source need it.
fn restore_v6(nl: &mut Netlink, index: u32, before: &[Addr], table: Option<u32>) -> anyhow::Result<()> {
    let now: Vec<IpNet> = global_v6(nl, index)?.into_iter().map(|a| a.ip).collect();
    for a in before.iter().filter(|a| !now.contains(&a.ip)) {
        // An address that had finished DAD (or never did it) is known to be unique on this
        // link: re-adding it without DAD makes it usable at once instead of ~1-2 s later.
        let nodad = a.flags.nodad() || !(a.flags.tentative() || a.flags.dadfailed());
        match nl.add_addr(index, a.ip, nodad) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(anyhow!(e).context(format!("could not restore address {}", a.ip))),
        }
        if let Some(t) = table {
            wait_local_route(nl, index, a.ip, t)?;
        }
    }
    Ok(())
}

fn wait_local_route(nl: &mut Netlink, index: u32, ip: IpNet, table: u32) -> anyhow::Result<()> {
    let host = IpNet::new(ip.addr(), 128).expect("an IPv6 address with /128");
    for attempt in 0..=ROUTE_WAIT_RETRIES {
        let found = nl
            .routes(IpFamily::V6, Some(table))?
            .iter()
            .any(|r| r.dst == host && r.oif == Some(index));
        if found {
            return Ok(());
        }
        if attempt < ROUTE_WAIT_RETRIES {
            std::thread::sleep(ROUTE_WAIT_BASE * (1 << attempt));
        }
    }
    Err(anyhow!(
        "failed getting local/host addresses for link #{index} in table {table} with dst {ip}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::netlink::NextHop;

    fn vrf(index: u32, table: u32) -> Link {
        let mut l = Link::parse(&LinkSpec::new(format!("v{index}"), LinkKind::Vrf { table }).encode()).unwrap();
        l.index = index;
        l
    }

    fn dummy(index: u32) -> Link {
        let mut l = Link::parse(&LinkSpec::new(format!("d{index}"), LinkKind::Dummy).encode()).unwrap();
        l.index = index;
        l
    }

    #[test]
    fn table_selection() {
        assert_eq!(free_table(&[]), Some(1));
        assert_eq!(free_table(&[vrf(1, 1), vrf(2, 2), vrf(3, 3), vrf(4, 5)]), Some(4));
        assert_eq!(free_table(&[vrf(1, 1), vrf(2, 2), dummy(3), vrf(4, 5)]), Some(3));
        assert_eq!(free_table(&[vrf(1, 2), vrf(2, 2), vrf(3, 7)]), Some(1));
        assert_eq!(free_table(&[vrf(1, 1), vrf(2, 1)]), Some(2));
        let many: Vec<Link> = (1..1000).map(|t| vrf(t, t)).collect();
        assert_eq!(free_table(&many), Some(1000));
        // 253-255 are the kernel's tables: skipped, whether or not a VRF "uses" them.
        let upto: Vec<Link> = (1..253).map(|t| vrf(t, t)).collect();
        assert_eq!(free_table(&upto), Some(256));
        let mut with_main = upto.clone();
        with_main.push(vrf(900, 254));
        assert_eq!(free_table(&with_main), Some(256));
        assert_eq!(free_table(&[vrf(1, u32::MAX)]), Some(1));
    }

    fn conf(extra: &str) -> anyhow::Result<VrfConf> {
        parse_conf(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"vrf"{extra}}}"#).as_bytes())
    }

    fn code_of(e: anyhow::Error) -> (u32, String) {
        let c = CniError::from_anyhow(&e);
        (c.code, c.msg)
    }

    #[test]
    fn config_parsing() {
        let c = conf(r#","vrfname":"blue","table":1001"#).unwrap();
        assert_eq!((c.vrfname.as_str(), c.table), ("blue", 1001));
        let c = conf(r#","vrfName":"red""#).unwrap();
        assert_eq!((c.vrfname.as_str(), c.table), ("red", 0));

        let (code, msg) = code_of(conf("").unwrap_err());
        assert_eq!(
            (code, msg.as_str()),
            (7, "configuration is expected to have a valid vrf name")
        );
        assert_eq!(code_of(conf(r#","vrfname":"""#).unwrap_err()).0, 7);
        for bad in ["a/b", "way-too-long-vrf-name", "..", "a b", "x:y"] {
            let (code, msg) = code_of(conf(&format!(r#","vrfname":"{bad}""#)).unwrap_err());
            assert_eq!(code, 7, "{bad}: {msg}");
            assert!(msg.starts_with("invalid vrfname"), "{bad}: {msg}");
        }
        for bad in [
            r#""table":-1"#,
            r#""table":"10""#,
            r#""table":4294967296"#,
            r#""vrfname":7"#,
        ] {
            let extra = if bad.contains("vrfname") {
                format!(",{bad}")
            } else {
                format!(r#","vrfname":"v",{bad}"#)
            };
            let (code, msg) = code_of(conf(&extra).unwrap_err());
            assert_eq!(code, 7, "{bad}: {msg}");
            let key = if bad.contains("vrfname") { "vrfname" } else { "table" };
            assert!(msg.contains(&format!("key {key:?}")), "{bad}: {msg}");
        }
        for t in RESERVED_TABLES {
            let (code, msg) = code_of(conf(&format!(r#","vrfname":"v","table":{t}"#)).unwrap_err());
            assert_eq!(code, 7, "{t}: {msg}");
        }
    }

    #[test]
    fn prev_result_is_required_and_passed_through() {
        let c = conf(r#","vrfname":"v""#).unwrap();
        let (code, msg) = code_of(require_prev(&c).unwrap_err());
        assert_eq!((code, msg.as_str()), (7, "missing prevResult from earlier plugin"));
        let c = conf(
            r#","vrfname":"v","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
               "ips":[{"address":"10.0.0.2/24","interface":0}],"routes":[{"dst":"10.10.10.0/24","gw":"10.0.0.1"}]}"#,
        )
        .unwrap();
        let r = require_prev(&c).unwrap();
        assert_eq!(r.interfaces[0].name, "eth0");
        assert_eq!(r.ips.len(), 1);
        assert_eq!(r.routes.len(), 1);
    }

    #[test]
    fn which_routes_move() {
        let base = |dst: &str| Route::new(dst.parse().unwrap()).oif(3);
        let moves = |r: &Route| movable(r, 3).is_some();
        assert!(moves(&base("0.0.0.0/0").gw("10.0.0.1".parse().unwrap())));
        assert!(moves(&base("1111:dddd::/80").gw("abcd::1".parse().unwrap())));
        assert!(movable(&base("0.0.0.0/0"), 4).is_none(), "another interface");
        let mut connected = base("10.0.0.0/24");
        connected.protocol = PROTO_KERNEL;
        assert!(!moves(&connected));
        let mut ra = base("::/0");
        ra.protocol = PROTO_RA;
        assert!(!moves(&ra));
        assert!(moves(&base("169.254.1.1/32").scope(253)), "a static link-scope route");
        assert!(!moves(&base("10.0.0.1/32").scope(254)), "host scope");
        let mut bh = base("10.9.0.0/16");
        bh.kind = RouteType::Blackhole;
        assert!(!moves(&bh));
    }

    #[test]
    fn only_own_nexthops_of_a_multipath_route_move() {
        let nh = |gw: &str, oif: u32| NextHop {
            gw: Some(gw.parse().unwrap()),
            oif: Some(oif),
            weight: 1,
        };
        let mut ecmp = Route::new("::/0".parse().unwrap());
        ecmp.priority = Some(1024);
        ecmp.multipath = vec![nh("2001:db8::1", 2), nh("2001:db8:1::1", 3)];
        let m = movable(&ecmp, 3).unwrap();
        assert_eq!((m.gw, m.oif), (Some("2001:db8:1::1".parse().unwrap()), Some(3)));
        assert!(m.multipath.is_empty());
        assert_eq!(m.priority, Some(1024));
        assert!(movable(&ecmp, 4).is_none());
        ecmp.multipath.push(nh("2001:db8:1::2", 3));
        let m = movable(&ecmp, 3).unwrap();
        assert_eq!(m.multipath.len(), 2);
        assert!(m.multipath.iter().all(|n| n.oif == Some(3)));
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(VrfConf::shape()).unwrap();
        for json in [
            &br#"{"cniVersion":"1.0.0","name":"n","vrfname":"blue","table":7}"#[..],
            br#"{"cniVersion":"1.0.0","name":"n","vrfName":"blue","Table":7}"#,
            br#"{"cniVersion":"1.0.0","name":"n","VRFName":"blue","TABLE":7}"#,
        ] {
            let c: VrfConf = config::parse(json).unwrap();
            assert_eq!((c.vrfname.as_str(), c.table), ("blue", 7));
        }
    }
}
