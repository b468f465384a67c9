//! Shared by every interface plugin: put a result's IPs and routes on the container
//! interface (the reference's `ConfigureIface`), and the CHECK validations of IPs and routes
//! (`ValidateExpectedInterfaceIPs`, `ValidateExpectedRoute`), written once.

use crate::cni::config::NetConf;
use crate::cni::result::{CniResult, Interface, IpConfig, Route as CniRoute};
use crate::cni::skel::CmdArgs;
use crate::linux::netlink::route::SCOPE_UNIVERSE;
use crate::linux::netlink::{IpFamily, Link, NextHop, Route};
use crate::linux::{sysctl, NetNs, Netlink};
use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How IPv6 duplicate address detection is handled for the addresses we add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dad {
    /// Add with IFA_F_NODAD: usable at once.
    Off,
    /// The caller set `accept_dad=0` on the interface: the kernel skips DAD, nothing to wait for.
    NoWait,
    /// DAD runs: wait until no address is tentative (DADFAILED is an error).
    Wait,
}

/// How long a DAD wait may take. The kernel's DAD is one probe and one second by default.
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Run `f` with the thread inside `ns`, for container sysctls (the only thing that needs it:
/// netlink goes through a socket bound to the netns). The guard switches back on return.
pub fn in_netns<R>(ns: &NetNs, f: impl FnOnce() -> R) -> anyhow::Result<R> {
    let _guard = ns.enter()?;
    Ok(f())
}

/// Best-effort sysctl writes inside `ns` (each only if different); failures are ignored like
/// the reference does for `accept_dad`, `arp_notify` and friends.
pub fn set_sysctls_best_effort(ns: &NetNs, settings: &[(String, &str)]) -> anyhow::Result<()> {
    in_netns(ns, || {
        for (k, v) in settings {
            let _ = sysctl::write_if_different(k, v);
        }
    })
}

/// The family of an address as the route/addr API wants it.
pub fn family_of(ip: IpAddr) -> IpFamily {
    IpFamily::of(ip)
}

/// Configure `ifname` (in the netns `ns`, driven through `nl`) with the IPs of `res` whose
/// interface index names it, set it up and add the routes. Returns the link.
pub fn configure_iface(nl: &mut Netlink, ns: &NetNs, ifname: &str, res: &CniResult, dad: Dad) -> anyhow::Result<Link> {
    if res.interfaces.is_empty() {
        bail!("no interfaces to configure");
    }
    let link = nl
        .link_by_name(ifname)?
        .ok_or_else(|| anyhow!("failed to lookup {ifname:?}: Link not found"))?;
    configure_link(nl, ns, &link, res, dad)?;
    Ok(nl.link_by_index(link.index)?.unwrap_or(link))
}

/// `configure_iface` on a link the caller has just made or looked up (`link.name` is the
/// interface name): no lookup before, no re-read after (bridge, ptp).
pub fn configure_link(nl: &mut Netlink, ns: &NetNs, link: &Link, res: &CniResult, dad: Dad) -> anyhow::Result<()> {
    if res.interfaces.is_empty() {
        bail!("no interfaces to configure");
    }
    let ifname = link.name.as_str();
    let mine: Vec<&IpConfig> = res.ips.iter().filter(|i| i.interface.is_some()).collect();
    for ipc in &mine {
        let idx = ipc.interface.unwrap_or(usize::MAX);
        if res.interfaces.get(idx).map(|i| i.name.as_str()) != Some(ifname) {
            bail!(
                "failed to add IP addr {} to {ifname:?}: invalid interface index",
                ipc.address
            );
        }
    }
    if mine.iter().any(|i| i.address.addr().is_ipv6()) {
        enable_ipv6(ns, ifname)?;
    }
    let (mut v4gw, mut v6gw) = (None, None);
    for ipc in &mine {
        nl.add_addr(link.index, ipc.address, dad == Dad::Off)
            .with_context(|| format!("failed to add IP addr {} to {ifname:?}", ipc.address))?;
        match ipc.gateway {
            Some(g @ IpAddr::V4(_)) => v4gw = v4gw.or(Some(g)),
            Some(g @ IpAddr::V6(_)) => v6gw = v6gw.or(Some(g)),
            None => {}
        }
    }
    nl.set_up(link.index)
        .with_context(|| format!("failed to set {ifname:?} UP"))?;
    if dad == Dad::Wait && mine.iter().any(|i| i.address.addr().is_ipv6()) {
        wait_dad(nl, link.index, ifname)?;
    }
    for r in &res.routes {
        let gw = r.gw.or(if r.dst.addr().is_ipv4() { v4gw } else { v6gw });
        add_route_ecmp(nl, &kernel_route(r, gw, link.index))
            .with_context(|| format!("failed to add route '{} via {gw:?} dev {ifname}'", r.dst))?;
    }
    Ok(())
}

/// `disable_ipv6=0` on `lo` and the interface (written only when needed, since the write
/// fails on a read-only /proc/sys), and `keep_addr_on_down=1` so a later down/up (tuning's
/// MAC change) does not lose the addresses.
fn enable_ipv6(ns: &NetNs, ifname: &str) -> anyhow::Result<()> {
    in_netns(ns, || -> anyhow::Result<()> {
        for iface in ["lo", ifname] {
            let key = format!("net/ipv6/conf/{iface}/disable_ipv6");
            match sysctl::read(&key) {
                Ok(v) if v == "0" => {}
                Ok(v) => sysctl::write(&key, "0")
                    .with_context(|| format!("failed to enable IPv6 for interface {iface:?} ({key}={v})"))?,
                Err(e) => eprintln!("failed to read sysctl {key:?}: {e}"),
            }
        }
        let _ = sysctl::write_if_different(&format!("net/ipv6/conf/{ifname}/keep_addr_on_down"), "1");
        Ok(())
    })?
}

/// Poll until no IPv6 address of the link is tentative: 1 ms doubling to 50 ms, so a DAD
/// that the kernel finishes at once costs one dump, unlike the reference's fixed 50 ms steps.
fn wait_dad(nl: &mut Netlink, index: u32, ifname: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        let pending = nl.addrs_tentative(index)?;
        if let Some(bad) = pending.iter().find(|a| a.flags.dadfailed()) {
            bail!(
                "failed to settle addresses on {ifname:?}: {} failed duplicate address detection",
                bad.ip
            );
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= DAD_TIMEOUT {
            // Without carrier DAD cannot start; the reference only fails when the link is up.
            let up = nl
                .link_by_index(index)?
                .map(|l| l.oper_state == crate::linux::netlink::OperState::Up)
                .unwrap_or(false);
            if up {
                bail!("failed to settle addresses on {ifname:?}: still tentative after {DAD_TIMEOUT:?}");
            }
            return Ok(());
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// A result route as a kernel route on `oif`.
pub fn kernel_route(r: &CniRoute, gw: Option<IpAddr>, oif: u32) -> Route {
    let mut k = Route::new(r.dst).oif(oif);
    k.gw = gw;
    k.priority = r.priority.filter(|&p| p != 0);
    if let Some(t) = r.table {
        k.table = t;
    }
    k.scope = r.scope.unwrap_or(SCOPE_UNIVERSE);
    k.mtu = r.mtu.filter(|&m| m != 0);
    k.advmss = r.advmss.filter(|&m| m != 0);
    k
}

/// Add a route; when one with the same destination exists (EEXIST) and this one has another
/// gateway, make it a multipath route with both (ECMP), like the reference's `RouteAddEcmp`.
pub fn add_route_ecmp(nl: &mut Netlink, r: &Route) -> anyhow::Result<()> {
    match nl.add_route(r) {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() && r.gw.is_some() => {
            if r.dst.addr().is_ipv6() {
                // IPv6 grows ECMP routes by appending next hops.
                return nl.append_route(r).map_err(Into::into);
            }
            let existing = nl
                .routes(IpFamily::V4, Some(r.table))?
                .into_iter()
                .find(|x| x.dst == r.dst && x.priority == r.priority)
                .ok_or(e)?;
            let mut hops = if existing.multipath.is_empty() {
                vec![NextHop {
                    gw: existing.gw,
                    oif: existing.oif,
                    weight: 1,
                }]
            } else {
                existing.multipath.clone()
            };
            if hops.iter().any(|h| h.gw == r.gw) {
                return Ok(()); // the same next hop is already there
            }
            hops.push(NextHop {
                gw: r.gw,
                oif: r.oif,
                weight: 1,
            });
            let mut m = r.clone();
            m.gw = None;
            m.oif = None;
            m.multipath = hops;
            nl.replace_route(&m).map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}

/// CHECK: every result IP is on `ifname`, and a route to its prefix exists.
/// CHECK's common start in every interface plugin: prevResult is required, and its
/// interface named CNI_IFNAME must sit in this sandbox. `who` prefixes the missing-prevResult
/// message as the reference plugin does ("ptp: ", or nothing).
pub fn prev_sandbox_interface(net: &NetConf, args: &CmdArgs, who: &str) -> anyhow::Result<(CniResult, Interface)> {
    let prev = net
        .prev_result()?
        .ok_or_else(|| anyhow!("{who}Required prevResult missing"))?;
    let intf = prev
        .interfaces
        .iter()
        .find(|i| i.name == args.ifname && i.sandbox == args.netns)
        .cloned()
        .unwrap_or_default();
    if intf.sandbox != args.netns {
        bail!(
            "Sandbox in prevResult {} doesn't match configured netns: {}",
            intf.sandbox,
            args.netns
        );
    }
    Ok((prev, intf))
}

pub fn validate_expected_ips(nl: &mut Netlink, ifname: &str, ips: &[IpConfig]) -> anyhow::Result<()> {
    if ips.is_empty() {
        return Ok(());
    }
    let link = nl
        .link_by_name(ifname)?
        .ok_or_else(|| anyhow!("Cannot find container link {ifname}"))?;
    let addrs = nl
        .addrs(Some(link.index), IpFamily::All)
        .context("Cannot obtain List of IP Addresses")?;
    for ipc in ips {
        if !addrs.iter().any(|a| a.ip == ipc.address) {
            bail!("Failed to match addr {} on interface {ifname}", ipc.address);
        }
        let prefix = ipc.address.trunc();
        let fam = family_of(prefix.addr());
        let found = nl
            .routes(fam, Some(crate::linux::netlink::route::TABLE_MAIN))?
            .iter()
            .any(|r| r.dst == prefix);
        if !found {
            let gw = ipc.gateway.map(|g| g.to_string()).unwrap_or_else(|| "<nil>".into());
            bail!("Failed to find Gateway {gw} for interface {ifname}");
        }
    }
    Ok(())
}

/// CHECK of what ConfigureIface set: `prev`'s addresses on `ifname` and its routes.
pub fn validate_expected(nl: &mut Netlink, ifname: &str, prev: &CniResult) -> anyhow::Result<()> {
    validate_expected_ips(nl, ifname, &prev.ips)?;
    validate_expected_routes(nl, &prev.routes)
}

/// CHECK: every result route (destination and gateway) is in its table (main by default).
/// A default route matches on the destination alone, as in the reference.
pub fn validate_expected_routes(nl: &mut Netlink, routes: &[CniRoute]) -> anyhow::Result<()> {
    for r in routes {
        let fam = family_of(r.dst.addr());
        let table = r.table.unwrap_or(crate::linux::netlink::route::TABLE_MAIN);
        let is_default = r.dst.prefix_len() == 0;
        let have = nl.routes(fam, Some(table))?;
        let found = have.iter().any(|k| {
            // A route without gw got the family's gateway from configure_iface, so it matches
            // any gateway (the reference demands none and fails its own CHECK).
            k.dst == r.dst && (is_default || r.gw.is_none() || k.gw == r.gw || k.multipath.iter().any(|h| h.gw == r.gw))
        });
        if !found {
            bail!("Expected Route {} not found in routing table", describe_route(r));
        }
    }
    Ok(())
}

fn describe_route(r: &CniRoute) -> String {
    match r.gw {
        Some(g) => format!("{{Dst: {} GW: {g}}}", r.dst),
        None => format!("{{Dst: {}}}", r.dst),
    }
}

/// The host address of a prefix as a full-length prefix (`ip/32` or `ip/128`).
pub fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Enable forwarding for the families present (`net/ipv4/ip_forward`,
/// `net/ipv6/conf/all/forwarding`), writing only when not already 1. Runs in the caller's
/// (host) netns.
pub fn enable_forwarding(v4: bool, v6: bool) -> anyhow::Result<()> {
    if v4 {
        sysctl::write_if_different("net/ipv4/ip_forward", "1").context("Could not enable IP forwarding")?;
    }
    if v6 {
        sysctl::write_if_different("net/ipv6/conf/all/forwarding", "1").context("Could not enable IP forwarding")?;
    }
    Ok(())
}
