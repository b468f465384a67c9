//! ptp: a veth pair per container, routed rather than bridged (the reference's `plugins/main/ptp`).
//!
//! The container gets its IPAM addresses but no on-link subnet: everything, the subnet
//! included, goes via the gateway, which is reachable as a /32 (/128) on the veth. The host
//! end carries the gateway address and a host route to the container's IP, so the node
//! routes between pods and to the outside.

use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Interface};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::route::{SCOPE_HOST, SCOPE_LINK};
use crate::linux::netlink::{Link, LinkType, Route};
use crate::linux::{NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::ipam::release_then_del_link;
use crate::pkg::ipam::{self, ipam_add};
use crate::pkg::ipconfig::{self, Dad};
use crate::pkg::link::mtu_of;
use crate::pkg::mac::{check_container_mac, fmt_mac};
use crate::pkg::masquerade::{self, MasqKeys};
use crate::pkg::netns::open_netns;
use crate::pkg::undo::Undo;
use crate::pkg::veth::{self, VethOpts};
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

pub static PLUGIN: Plugin = entry::<Ptp>();

#[derive(Debug, Deserialize, GoKeys)]
struct PtpConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(flatten)]
    masq: MasqKeys,
    #[serde(default)]
    mtu: i64,
}

impl PtpConf {
    fn load(stdin: &[u8]) -> anyhow::Result<PtpConf> {
        let mut c: PtpConf = config::parse(stdin)?;
        c.masq.check()?;
        Ok(c)
    }

    /// The IPAM type; ptp cannot work without addresses.
    fn ipam(&self) -> Result<&str, CniError> {
        ipam::required_ipam(&self.net, "ptp")
    }
}

struct Ptp;

impl CniPlugin for Ptp {
    const NAME: &'static str = "ptp";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "a routed veth pair per container (no bridge)";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = PtpConf;
    type Lenient = PtpConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        PtpConf::load(&args.stdin)
    }
    /// For DEL: `ipMasqBackend` is not read (DEL removes both layouts' rules), so a value ADD
    /// would refuse does not block it.
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }

    /// ADD, in the order of the reference's cmdAdd: IPAM (every address needs a gateway),
    /// forwarding, the veth pair, the container's addresses and routes, the host's gateway
    /// addresses and routes, then masquerade.
    fn add(conf: PtpConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let ipam_type = conf.ipam()?;
        let mtu = mtu_of(conf.mtu)?;
        let host_ns = NetNs::current()?;
        let cont_ns = open_netns(&args.netns)?;
        let mut host = Netlink::new()?;
        let mut cont = Netlink::in_netns(&cont_ns)?;
        let mut undo = Undo::new();

        let mut result = ipam_add(ipam_type, args, &mut undo)?;
        for ipc in &result.ips {
            if ipc.gateway.is_none() {
                bail!("ptp needs a gateway for {}: the IPAM result has none", ipc.address);
            }
        }
        let has = |v4: bool| result.ips.iter().any(|i| i.address.addr().is_ipv4() == v4);
        ipconfig::enable_forwarding(has(true), has(false))?;

        let (host_index, cont_link) = add_veth(&mut host, &mut cont, &host_ns, args, mtu, &mut result, &mut undo)?;
        add_container_routes(&mut cont, &cont_ns, &cont_link, args, &result)?;
        add_host_routes(&mut host, host_index, &result)?;

        // Closed when ADD returns (a close waits for the kernel to retire the transaction).
        let _nft = if conf.masq.ip_masq {
            Some(masquerade::setup(
                &conf.net.name,
                conf.masq.backend,
                args,
                &result,
                &mut undo,
            )?)
        } else {
            None
        };
        if conf.net.dns_set() {
            result.dns = conf.net.dns();
        }
        undo.commit();
        Ok(result)
    }

    /// IPAM first (the reference's order), then the masquerade rules (by comment, so also when
    /// the netns is gone) and the link; every step is tried and every failure is reported.
    fn del(conf: PtpConf, args: &CmdArgs) -> anyhow::Result<()> {
        let mut errs = Failures::new();
        // Kept open until the link is gone, so that the kernel's retiring of the deleted rules
        // (which a close waits for) overlaps the link deletion.
        let mut _nft = None;
        if conf.masq.ip_masq {
            let sock = crate::linux::nft::NftSocket::open()?;
            errs.keep(masquerade::teardown(
                &sock,
                &conf.net.name,
                &args.ifname,
                &args.container_id,
            ));
            _nft = Some(sock);
        }
        release_then_del_link(&conf.net, args, errs)
    }

    fn check(conf: PtpConf, args: &CmdArgs) -> anyhow::Result<()> {
        let ns = open_netns(&args.netns)?;
        delegate::check(conf.ipam()?, &args.stdin, args)?;
        let (prev, cont) = crate::pkg::ipconfig::prev_sandbox_interface(&conf.net, args, "ptp: ")?;
        let mut nl = Netlink::in_netns(&ns)?;
        let link = nl
            .link_by_name(&cont.name)?
            .ok_or_else(|| anyhow!("ptp: Container Interface name in prevResult: {} not found", cont.name))?;
        if link.kind != Some(LinkType::Veth) {
            bail!("Error: Container interface {} not of type veth/p2p", link.name);
        }
        check_container_mac("ptp: ", &cont, &link)?;
        ipconfig::validate_expected(&mut nl, &args.ifname, &prev)?;
        if conf.masq.ip_masq {
            masquerade::check(&conf.net.name, conf.masq.backend, args, &prev)?;
        }
        Ok(())
    }

    /// STATUS is the IPAM's (always, as in the reference).
    fn status(args: &CmdArgs) -> anyhow::Result<()> {
        let conf = PtpConf::load(&args.stdin)?;
        Ok(delegate::status(conf.ipam()?, &args.stdin, args)?)
    }

    /// GC: masquerade rules (by comment) and the IPAM's reservations; links die with their netns.
    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        let conf = PtpConf::load(&args.stdin)?;
        let mut errs = Failures::new();
        if conf.masq.ip_masq {
            errs.keep(masquerade::gc(&conf.net));
        }
        errs.keep(delegate::gc(conf.ipam()?, &args.stdin, args));
        Ok(errs.finish()?)
    }
}

// Private helpers of ADD.

/// The veth pair (host end without DAD), entered in the result as host end and container
/// end, which the IPs point at. Returns the host end's index and the container end.
fn add_veth(
    host: &mut Netlink,
    cont: &mut Netlink,
    host_ns: &NetNs,
    args: &CmdArgs,
    mtu: Option<u32>,
    result: &mut CniResult,
    undo: &mut Undo,
) -> anyhow::Result<(u32, Link)> {
    let pair = veth::create_pair(
        cont,
        host,
        host_ns,
        &args.ifname,
        &VethOpts {
            mtu,
            container_mac: None,
            host_no_dad: true,
        },
    )?;
    let host_index = pair.host.index;
    undo.push(format!("delete veth {}", pair.host.name), move || {
        Ok(Netlink::new()?.delete_link(host_index)?)
    });
    result.interfaces = vec![
        Interface {
            name: pair.host.name.clone(),
            mac: fmt_mac(&pair.host.mac),
            ..Default::default()
        },
        Interface {
            name: pair.container.name.clone(),
            mac: fmt_mac(&pair.container.mac),
            sandbox: args.netns.clone(),
            ..Default::default()
        },
    ];
    for ipc in &mut result.ips {
        ipc.interface = Some(1);
    }
    Ok((host_index, pair.container))
}

/// Container side: the addresses, then the route dance for each: drop the kernel's on-link
/// subnet route, make the gateway reachable on the link, and send the subnet (other pods)
/// through it, so that all traffic is routed by the host.
fn add_container_routes(
    cont: &mut Netlink,
    cont_ns: &NetNs,
    link: &Link,
    args: &CmdArgs,
    result: &CniResult,
) -> anyhow::Result<()> {
    // DAD is pointless on a point-to-point veth: addresses go on without it.
    ipconfig::configure_link(cont, cont_ns, link, result, Dad::Off)?;
    for ipc in &result.ips {
        let gw = ipc.gateway.expect("checked by add");
        let subnet = ipc.address.trunc();
        let connected = Route::new(subnet).oif(link.index);
        cont.del_route(&connected)
            .with_context(|| format!("failed to delete route {subnet} dev {}", args.ifname))?;
        let mut to_gw = Route::new(ipconfig::host_prefix(gw)).oif(link.index).scope(SCOPE_LINK);
        to_gw.src = Some(ipc.address.addr());
        let mut via_gw = Route::new(subnet).oif(link.index).gw(gw);
        via_gw.src = Some(ipc.address.addr());
        for r in [to_gw, via_gw] {
            cont.add_route(&r)
                .with_context(|| format!("failed to add route {} in the container", r.dst))?;
        }
    }
    Ok(())
}

/// Host side: each gateway address on the host veth and a host route to the container.
fn add_host_routes(host: &mut Netlink, host_index: u32, result: &CniResult) -> anyhow::Result<()> {
    for ipc in &result.ips {
        let gw = ipconfig::host_prefix(ipc.gateway.expect("checked by add"));
        match host.add_addr(host_index, gw, true) {
            Err(e) if !e.is_exists() => return Err(anyhow!(e).context(format!("failed to add IP addr {gw} to veth"))),
            _ => {}
        }
        let r = Route::new(ipconfig::host_prefix(ipc.address.addr()))
            .oif(host_index)
            .scope(SCOPE_HOST);
        match host.add_route(&r) {
            Err(e) if !e.is_exists() => return Err(anyhow!(e).context("failed to add route on host")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(PtpConf::shape()).unwrap();
        let c: PtpConf = config::parse(
            br#"{"cniVersion":"1.0.0","name":"n","IPMasq":true,"IPMasqBackend":"nftables","Mtu":1300,"DNS":{"Search":[]}}"#,
        )
        .unwrap();
        assert!(c.masq.ip_masq);
        assert_eq!((c.masq.ip_masq_backend.as_deref(), c.mtu), (Some("nftables"), 1300));
        assert!(c.net.dns_set(), "an empty list given in any case is a field given");
    }
}
