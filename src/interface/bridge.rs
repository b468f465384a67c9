//! bridge: a veth pair per container with the host end on a Linux bridge (the reference's `plugins/main/bridge`).
//!
//! The bridge is created on first use and never deleted by DEL (other pods share it). With
//! `isGateway` it carries the gateway address of each family and the node forwards for the
//! pods. Without an IPAM type the attachment is L2 only.

use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Interface, Route as CniRoute};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::{BridgeVlan, IpFamily, Link, LinkKind, LinkSpec, LinkType, OperState};
use crate::linux::nft::NftSocket;
use crate::linux::{sysctl, NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::ip::next_ip;
use crate::pkg::ipam::ipam_add;
use crate::pkg::ipam::release_then_del_link;
use crate::pkg::ipconfig::{self, Dad};
use crate::pkg::mac::{check_container_mac, fmt_mac, parse_mac};
use crate::pkg::masquerade::{self, MasqKeys};
use crate::pkg::netns::open_netns;
use crate::pkg::spoofcheck;
use crate::pkg::undo::Undo;
use crate::pkg::veth::{self, VethOpts};
use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use serde::Deserialize;
use std::time::Duration;

pub static PLUGIN: Plugin = entry::<Bridge>();

struct Bridge;

const DEFAULT_BRIDGE: &str = "cni0";

/// How long the host veth may take to become oper-up: the reference's total (2.55 s), but
/// polled with a short backoff instead of its 0/50/500/1000/1000 ms sleeps.
const PORT_UP_TIMEOUT: Duration = Duration::from_millis(2550);

#[derive(Debug, Deserialize, GoKeys)]
struct BridgeConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default = "default_bridge")]
    bridge: String,
    #[serde(rename = "isGateway", default)]
    is_gw: bool,
    #[serde(rename = "isDefaultGateway", default)]
    is_default_gw: bool,
    #[serde(rename = "forceAddress", default)]
    force_address: bool,
    #[serde(flatten)]
    masq: MasqKeys,
    #[serde(default)]
    mtu: i64,
    #[serde(rename = "hairpinMode", default)]
    hairpin_mode: bool,
    #[serde(rename = "promiscMode", default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: i64,
    #[serde(rename = "vlanTrunk", default)]
    vlan_trunk: Option<Vec<VlanTrunk>>,
    // false since upstream v1.8.0 (plugins#1113); Debian's 1.1.1 has no key and keeps VLAN 1.
    #[serde(rename = "preserveDefaultVlan", default)]
    preserve_default_vlan: bool,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    enabledad: bool,
    #[serde(rename = "disableContainerInterface", default)]
    disable_container_interface: bool,
    #[serde(rename = "portIsolation", default)]
    port_isolation: bool,
    /// The container MAC: CNI_ARGS `MAC` < `args.cni.mac` < `runtimeConfig.mac`.
    #[serde(skip)]
    mac: Option<[u8; 6]>,
    /// The trunk VLANs, sorted and deduplicated.
    #[serde(skip)]
    vlans: Vec<u16>,
}

#[derive(Debug, Deserialize, GoKeys)]
struct VlanTrunk {
    #[serde(rename = "minID", default)]
    min_id: Option<i64>,
    #[serde(rename = "maxID", default)]
    max_id: Option<i64>,
    #[serde(default)]
    id: Option<i64>,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.into()
}

impl BridgeConf {
    fn load(args: &CmdArgs) -> anyhow::Result<BridgeConf> {
        let mut n: BridgeConf = config::parse(&args.stdin)?;
        n.masq.check()?;
        // IFNAMSIZ: the kernel would refuse a longer name only after IPAM ran (999).
        if n.bridge.len() > 15 {
            bail!(CniError::invalid_config(format!(
                "bridge name {:?} is longer than 15 bytes",
                n.bridge
            )));
        }
        if n.vlan < 0 || n.vlan > 4094 {
            bail!(CniError::invalid_config(format!(
                "invalid VLAN ID {} (must be between 0 and 4094)",
                n.vlan
            )));
        }
        // With vlanTrunk, `vlan` is the trunk's native VLAN (upstream v1.8.0).
        n.vlans = collect_vlan_trunk(n.vlan_trunk.as_deref())?;
        let mac = crate::pkg::mac::container_mac(args, &n.net, None, true)?;
        n.mac = mac.map(|m| parse_mac(&m)).transpose()?;
        if n.is_default_gw {
            n.is_gw = true;
        }
        Ok(n)
    }

    /// For DEL: the keys' types only. DEL uses the network, ipMasq and macspoofchk (the
    /// masquerade rules of both layouts go, whatever `ipMasqBackend` says); a bridge name,
    /// VLAN or MAC that ADD would refuse must not block it.
    fn lenient(args: &CmdArgs) -> anyhow::Result<BridgeConf> {
        Ok(config::parse(&args.stdin)?)
    }

    fn vlan_filtering(&self) -> bool {
        self.vlan != 0 || self.vlan_trunk.is_some()
    }
}

/// vlanTrunk entries to a sorted list of VLAN ids, with the reference's messages.
fn collect_vlan_trunk(trunk: Option<&[VlanTrunk]>) -> anyhow::Result<Vec<u16>> {
    let mut ids = std::collections::BTreeSet::new();
    let ok = |v: i64| (1..=4094).contains(&v);
    for t in trunk.unwrap_or_default() {
        match (t.min_id, t.max_id) {
            (Some(lo), Some(hi)) => {
                if !ok(lo) {
                    bail!(CniError::invalid_config("incorrect trunk minID parameter"));
                }
                if !ok(hi) {
                    bail!(CniError::invalid_config("incorrect trunk maxID parameter"));
                }
                if hi < lo {
                    bail!(CniError::invalid_config(
                        "minID is greater than maxID in trunk parameter"
                    ));
                }
                ids.extend(lo..=hi);
            }
            (None, Some(_)) => bail!(CniError::invalid_config(
                "minID and maxID should be configured simultaneously, minID is missing"
            )),
            (Some(_), None) => bail!(CniError::invalid_config(
                "minID and maxID should be configured simultaneously, maxID is missing"
            )),
            (None, None) => {}
        }
        if let Some(id) = t.id {
            if !ok(id) {
                bail!(CniError::invalid_config("incorrect trunk id parameter"));
            }
            ids.insert(id);
        }
    }
    Ok(ids.into_iter().map(|v| v as u16).collect())
}

impl CniPlugin for Bridge {
    const NAME: &'static str = "bridge";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "a veth pair per container, the host end on a Linux bridge";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = BridgeConf;
    type Lenient = BridgeConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        BridgeConf::load(args)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        BridgeConf::lenient(args)
    }
    /// ADD, in the order of the reference's cmdAdd: the bridge, the veth pair on it, the spoof
    /// check, then (with an IPAM) the addresses, the container's addresses and routes, the
    /// gateways on the bridge; last, the MACs as they are now.
    fn add(n: BridgeConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let ipam_type = n.net.ipam_type().map(str::to_string);
        if ipam_type.is_some() && n.disable_container_interface {
            bail!("cannot use IPAM when DisableContainerInterface flag is set");
        }
        if n.hairpin_mode && n.promisc_mode {
            bail!("cannot set hairpin mode and promiscuous mode at the same time");
        }
        let mtu = crate::pkg::link::mtu_of(n.mtu)?;
        // Everything that can be checked is checked before the first change.
        let host_ns = NetNs::current()?;
        let cont_ns = open_netns(&args.netns)?;
        let mut host = Netlink::new()?;
        let mut cont = Netlink::in_netns(&cont_ns)?;
        let mut undo = Undo::new();

        let br = ensure_bridge(&mut host, &n, mtu, &mut undo)
            .with_context(|| format!("failed to create bridge {:?}", n.bridge))?;
        let pinned = pin_bridge_mac(&mut host, &br)?;
        let mut result = CniResult::new(n.net.version());

        let (host_veth, cont_veth) = setup_veth(&mut host, &mut cont, &host_ns, &br, &args.ifname, &n, mtu, &mut undo)?;
        if !pinned {
            // A bridge without an address (its ports all left) took the port's: keep that one.
            let now = bridge_by_name(&mut host, &n.bridge)?;
            pin_bridge_mac(&mut host, &now)?;
        }
        // nftables sockets are closed only when ADD returns: a close waits for the kernel to
        // retire the committed transaction (an RCU grace period), which so overlaps the rest.
        let mut nft_sockets = Vec::new();
        if n.macspoofchk {
            nft_sockets.push(add_spoofcheck(args, &host_veth, &cont_veth, &mut undo)?);
        }
        result.interfaces = interfaces(args, &br, &host_veth, &cont_veth);

        if let Some(ipam_type) = &ipam_type {
            let ipam = ipam_add(ipam_type, args, &mut undo)?;
            result.ips = ipam.ips;
            result.routes = ipam.routes;
            result.dns = ipam.dns;
            let gws = calc_gateways(&mut result, &n);
            // Masquerade as soon as the addresses are known (the reference does it last): the
            // kernel's retiring of the nftables transaction then overlaps the interface work.
            if n.masq.ip_masq {
                nft_sockets.push(masquerade::setup(
                    &n.net.name,
                    n.masq.backend,
                    args,
                    &result,
                    &mut undo,
                )?);
            }
            configure_container(&mut cont, &cont_ns, &cont_veth, &n, &result)?;
            if n.is_gw {
                add_gateways(&mut host, &host_ns, &br, &n, &gws, &mut result, &mut undo)?;
            }
        } else if !n.disable_container_interface {
            // L2 only: the container end still has to be up.
            cont.set_up(cont_veth.index)
                .with_context(|| format!("failed to set {:?} up", args.ifname))?;
        }

        report_macs(&mut host, &n, host_veth, &mut result)?;
        if n.net.dns_set() {
            result.dns = n.net.dns();
        }
        undo.commit();
        drop(nft_sockets);
        Ok(result)
    }
    /// Remove the attachment's firewall rules (found by their comments, so an empty or vanished
    /// netns does not leak them, unlike the reference), release IPAM, then delete the container
    /// link. A missing link is fine; the bridge stays. Every step is tried and every failure
    /// is reported.
    fn del(n: BridgeConf, args: &CmdArgs) -> anyhow::Result<()> {
        let mut errs = Failures::new();
        // The socket stays open until the link is gone: closing it waits for the kernel to
        // retire the deleted rules (an RCU grace period), which then overlaps the link deletion.
        let mut _nft = None;
        if n.masq.ip_masq || n.macspoofchk {
            match NftSocket::open() {
                Ok(sock) => {
                    if n.masq.ip_masq {
                        errs.keep(masquerade::teardown(
                            &sock,
                            &n.net.name,
                            &args.ifname,
                            &args.container_id,
                        ));
                    }
                    if n.macspoofchk {
                        errs.keep(spoofcheck::teardown(&sock, &args.container_id, &args.ifname));
                    }
                    _nft = Some(sock);
                }
                Err(e) => errs.push(e),
            }
        }
        release_then_del_link(&n.net, args, errs)
    }
    fn check(n: BridgeConf, args: &CmdArgs) -> anyhow::Result<()> {
        let ns = open_netns(&args.netns)?;
        // The reference calls IPAM CHECK even without an IPAM type, which then always fails;
        // an L2-only attachment has nothing to check there.
        if let Some(t) = n.net.ipam_type() {
            delegate::check(t, &args.stdin, args)?;
        }
        let (prev, cont_if) = ipconfig::prev_sandbox_interface(&n.net, args, "")?;
        let br_if = prev
            .interfaces
            .iter()
            .find(|i| i.name == n.bridge)
            .cloned()
            .unwrap_or_default();
        let mut host = Netlink::new()?;
        let br = check_bridge(&mut host, &br_if, &n)?;
        let mut cont = Netlink::in_netns(&ns)?;
        let cont_link = check_container_iface(&mut cont, &cont_if)?;

        // The host veth: the peer of the container interface, enslaved to the bridge.
        let mut found = false;
        for intf in &prev.interfaces {
            if intf.name == br_if.name || intf.name == cont_if.name {
                continue;
            }
            if !intf.sandbox.is_empty() {
                bail!("Interface {} should not be in sandbox", intf.name);
            }
            let l = host
                .link_by_name(&intf.name)?
                .ok_or_else(|| anyhow!("Interface name {} not found", intf.name))?;
            if l.kind != Some(LinkType::Veth) {
                continue; // not one of ours
            }
            let peer_ok = cont_link.link == Some(l.index) && l.link == Some(cont_link.index);
            if !peer_ok || l.master != Some(br.index) {
                continue;
            }
            if !intf.mac.is_empty() && intf.mac != fmt_mac(&l.mac) {
                bail!("Interface {} Mac doesn't match: {} not found", intf.name, intf.mac);
            }
            found = true;
            break;
        }
        if !found {
            bail!("CNI veth created for bridge {} was not found", n.bridge);
        }
        ipconfig::validate_expected(&mut cont, &args.ifname, &prev)?;
        // Firewall rules are resources too (spec: CHECK covers what ADD created).
        if n.masq.ip_masq {
            masquerade::check(&n.net.name, n.masq.backend, args, &prev)?;
        }
        Ok(())
    }
    /// GC: masquerade rules (by comment) and the IPAM's reservations are our state outside the
    /// container netns. Both are attempted; every failure is reported.
    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        let n: BridgeConf = config::parse(&args.stdin)?;
        let mut errs = Failures::new();
        if n.masq.ip_masq {
            errs.keep(masquerade::gc(&n.net));
        }
        if let Some(t) = n.net.ipam_type() {
            errs.keep(delegate::gc(t, &args.stdin, args));
        }
        Ok(errs.finish()?)
    }
}

// Private helpers of ADD.

/// The spoof check of the container veth's MAC on the host end; its socket is returned so
/// that it closes only when ADD returns.
fn add_spoofcheck(args: &CmdArgs, host_veth: &Link, cont_veth: &Link, undo: &mut Undo) -> anyhow::Result<NftSocket> {
    let mac = cont_veth.mac.context("the container veth has no MAC address")?;
    let sock = NftSocket::open()?;
    spoofcheck::setup(&sock, &host_veth.name, mac, &args.container_id, &args.ifname)?;
    let (cid, ifname) = (args.container_id.clone(), args.ifname.clone());
    undo.push(format!("remove spoof check of {cid}/{ifname}"), move || {
        spoofcheck::teardown(&NftSocket::open()?, &cid, &ifname)
    });
    Ok(sock)
}

/// The result's interfaces: the bridge, the host end, the container end (the IPs point at
/// the third).
fn interfaces(args: &CmdArgs, br: &Link, host_veth: &Link, cont_veth: &Link) -> Vec<Interface> {
    vec![
        Interface {
            name: br.name.clone(),
            mac: fmt_mac(&br.mac),
            ..Default::default()
        },
        Interface {
            name: host_veth.name.clone(),
            mac: fmt_mac(&host_veth.mac),
            ..Default::default()
        },
        Interface {
            name: cont_veth.name.clone(),
            mac: fmt_mac(&cont_veth.mac),
            sandbox: args.netns.clone(),
            ..Default::default()
        },
    ]
}

/// The container interface's sysctls, addresses and routes.
fn configure_container(
    cont: &mut Netlink,
    cont_ns: &NetNs,
    cont_veth: &Link,
    n: &BridgeConf,
    result: &CniResult,
) -> anyhow::Result<()> {
    // Without enabledad the kernel skips DAD (accept_dad=0): addresses are usable at once.
    let ifname = &cont_veth.name;
    let mut sysctls = vec![(format!("net/ipv4/conf/{ifname}/arp_notify"), "1")];
    if n.enabledad {
        sysctls.push((format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1"));
        sysctls.push((format!("net/ipv6/conf/{ifname}/accept_dad"), "1"));
    } else {
        sysctls.push((format!("net/ipv6/conf/{ifname}/accept_dad"), "0"));
    }
    ipconfig::set_sysctls_best_effort(cont_ns, &sysctls)?;
    let dad = if n.enabledad { Dad::Wait } else { Dad::NoWait };
    ipconfig::configure_link(cont, cont_ns, cont_veth, result, dad)
}

/// isGateway: each gateway address on the bridge (or, with `vlan`, on the VLAN gateway
/// interface, which joins the result), then forwarding on for the families that have one.
fn add_gateways(
    host: &mut Netlink,
    host_ns: &NetNs,
    br: &Link,
    n: &BridgeConf,
    gws: &Gateways,
    result: &mut CniResult,
    undo: &mut Undo,
) -> anyhow::Result<()> {
    let mut vlan_iface: Option<Link> = None;
    for (family, list) in [(IpFamily::V4, &gws.v4), (IpFamily::V6, &gws.v6)] {
        for gw in list {
            if n.vlan != 0 {
                let vi = match &vlan_iface {
                    Some(l) => l.clone(),
                    None => {
                        let l = ensure_vlan_interface(host, host_ns, br, n, undo)
                            .context("failed to create vlan interface")?;
                        result.interfaces.push(Interface {
                            name: l.name.clone(),
                            mac: fmt_mac(&l.mac),
                            ..Default::default()
                        });
                        vlan_iface = Some(l.clone());
                        l
                    }
                };
                ensure_addr(host, &vi, family, *gw, n.force_address, undo)
                    .context("failed to set vlan interface for bridge with addr")?;
            } else {
                ensure_addr(host, br, family, *gw, n.force_address, undo).context("failed to set bridge addr")?;
            }
        }
    }
    ipconfig::enable_forwarding(!gws.v4.is_empty(), !gws.v6.is_empty()).context("failed to enable forwarding")?;
    Ok(())
}

/// The host end's MAC can change after it joins the bridge (plugins#805): report the MACs as
/// they are now, once the port is up (the bridge's is pinned, but another writer may act).
fn report_macs(host: &mut Netlink, n: &BridgeConf, host_veth: Link, result: &mut CniResult) -> anyhow::Result<()> {
    let host_now = if n.disable_container_interface {
        host.link_by_index(host_veth.index)?.unwrap_or(host_veth)
    } else {
        wait_port_up(host, host_veth.index)?
    };
    result.interfaces[1].mac = fmt_mac(&host_now.mac);
    let br_now = bridge_by_name(host, &n.bridge)?;
    result.interfaces[0].mac = fmt_mac(&br_now.mac);
    Ok(())
}

/// Keep the bridge's MAC as it is now, before a port joins: setting it to itself makes the
/// kernel treat it as chosen (NET_ADDR_SET), so it no longer follows the lowest port MAC as
/// pods come and go. A new bridge keeps the address it was created with, one that was there
/// keeps its own. The reference gets the same only with isGateway (its ensureAddr sets the
/// MAC it read before the port joined) and leaves an L2 bridge's MAC moving: see
/// doc/differences.md. False when the bridge has no usable address yet (all zeros).
fn pin_bridge_mac(nl: &mut Netlink, br: &Link) -> anyhow::Result<bool> {
    match br.mac {
        Some(mac) if mac != [0; 6] && mac[0] & 1 == 0 => {
            nl.set_mac(br.index, mac)
                .with_context(|| format!("could not set bridge's mac on {:?}", br.name))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Look the bridge up; it must be a bridge.
fn bridge_by_name(nl: &mut Netlink, name: &str) -> anyhow::Result<Link> {
    let l = nl
        .link_by_name(name)
        .with_context(|| format!("could not lookup {name:?}"))?
        .ok_or_else(|| anyhow!("could not lookup {name:?}: Link not found"))?;
    expect_bridge(l)
}

fn expect_bridge(l: Link) -> anyhow::Result<Link> {
    if l.kind != Some(LinkType::Bridge) {
        bail!("{:?} already exists but is not a bridge", l.name);
    }
    Ok(l)
}

/// Create the bridge if missing (MTU only then), promisc if asked, `accept_ra=0`, up.
fn ensure_bridge(nl: &mut Netlink, n: &BridgeConf, mtu: Option<u32>, undo: &mut Undo) -> anyhow::Result<Link> {
    let name = &n.bridge;
    let mut created = false;
    // One lookup when the bridge is there and needs nothing: its answer is the result.
    let mut found = nl.link_by_name(name)?;
    if found.is_none() {
        let mut spec = LinkSpec::new(
            name.as_str(),
            LinkKind::Bridge {
                vlan_filtering: n.vlan_filtering().then_some(true),
            },
        );
        spec.mtu = mtu;
        match nl.create_link(&spec) {
            Ok(()) => {
                // Only a bridge this ADD made is removed again by a rollback.
                found = nl.link_by_name(name)?;
                if let Some(idx) = found.as_ref().map(|l| l.index) {
                    created = true;
                    undo.push(format!("delete bridge {name}"), move || {
                        Ok(Netlink::new()?.delete_link(idx)?)
                    });
                }
            }
            Err(e) if e.is_exists() => {} // a concurrent ADD made it
            Err(e) => return Err(anyhow!(e).context(format!("could not add {name:?}"))),
        }
    }
    let br = match found {
        Some(l) => expect_bridge(l)?,
        None => bridge_by_name(nl, name)?,
    };
    let mut changed = created;
    if !created {
        // A bridge that was there before: a rollback restores its flags and MAC (which a
        // port coming and going changes).
        let (idx, up, promisc, mac) = (br.index, br.up, br.promisc, br.mac);
        undo.push(format!("restore bridge {name}"), move || {
            let mut nl = Netlink::new()?;
            let Some(now) = nl.link_by_index(idx)? else {
                return Ok(());
            };
            if let (Some(m), true) = (mac, now.mac != mac) {
                nl.set_mac(idx, m)?;
            }
            if now.promisc != promisc {
                nl.set_promisc(idx, promisc)?;
            }
            if now.up != up && !up {
                nl.set_down(idx)?;
            }
            Ok(())
        });
    }
    if n.promisc_mode && !br.promisc {
        nl.set_promisc(br.index, true)
            .with_context(|| format!("could not set promiscuous mode on {name:?}"))?;
        changed = true;
    }
    // We own the routes of the bridge.
    let _ = sysctl::write_if_different(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
    if !br.up {
        nl.set_up(br.index)?;
        changed = true;
    }
    if !changed {
        return Ok(br);
    }
    Ok(nl.link_by_index(br.index)?.unwrap_or(br))
}

/// The veth pair, the host end on the bridge with its port flags and VLANs.
#[allow(clippy::too_many_arguments)]
fn setup_veth(
    host: &mut Netlink,
    cont: &mut Netlink,
    host_ns: &NetNs,
    br: &Link,
    ifname: &str,
    n: &BridgeConf,
    mtu: Option<u32>,
    undo: &mut Undo,
) -> anyhow::Result<(Link, Link)> {
    let pair = veth::create_pair(
        cont,
        host,
        host_ns,
        ifname,
        &VethOpts {
            mtu,
            container_mac: n.mac,
            host_no_dad: false,
        },
    )?;
    let hv = pair.host.clone();
    let idx = hv.index;
    undo.push(format!("delete veth {}", hv.name), move || {
        Ok(Netlink::new()?.delete_link(idx)?)
    });
    attach_port(
        host,
        br,
        &hv,
        n.hairpin_mode,
        n.port_isolation,
        n.vlan as u16,
        &n.vlans,
        n.preserve_default_vlan,
    )?;
    Ok((pair.host, pair.container))
}

/// Enslave `port` to the bridge and set hairpin, isolation and VLANs.
#[allow(clippy::too_many_arguments)]
fn attach_port(
    host: &mut Netlink,
    br: &Link,
    port: &Link,
    hairpin: bool,
    isolated: bool,
    vlan: u16,
    trunk: &[u16],
    preserve_default_vlan: bool,
) -> anyhow::Result<()> {
    let name = &port.name;
    host.set_master(port.index, br.index)
        .with_context(|| format!("failed to connect {name:?} to bridge {}", br.name))?;
    host.set_bridge_port(port.index, Some(hairpin), isolated.then_some(true))
        .with_context(|| format!("failed to setup hairpin mode / isolation for {name}"))?;
    if (vlan != 0 || !trunk.is_empty()) && !preserve_default_vlan {
        for v in host.bridge_vlans(port.index)? {
            host.bridge_vlan_del(port.index, v.vid)
                .with_context(|| format!("failed to remove default vlan on interface {name:?}"))?;
        }
    }
    if vlan != 0 {
        let v = BridgeVlan {
            vid: vlan,
            pvid: true,
            untagged: true,
        };
        host.bridge_vlan_add(port.index, v)
            .with_context(|| format!("failed to setup vlan tag on interface {name:?}"))?;
    }
    for &vid in trunk {
        let v = BridgeVlan {
            vid,
            pvid: false,
            untagged: false,
        };
        host.bridge_vlan_add(port.index, v)
            .with_context(|| format!("failed to setup vlan tag on interface {name:?}"))?;
    }
    // A trunk without `vlan` carries untagged frames on VLAN 1, its native VLAN (upstream
    // v1.8.0), also when preserveDefaultVlan removed VLAN 1 above.
    if vlan == 0 && !trunk.is_empty() {
        let v = BridgeVlan {
            vid: 1,
            pvid: true,
            untagged: true,
        };
        host.bridge_vlan_add(port.index, v)
            .with_context(|| format!("failed to setup default native vlan tag on interface {name:?}"))?;
    }
    Ok(())
}

/// The gateway of each family (for isGateway), after filling in missing gateways and adding
/// the default routes of isDefaultGateway.
struct Gateways {
    v4: Vec<IpNet>,
    v6: Vec<IpNet>,
}

fn calc_gateways(result: &mut CniResult, n: &BridgeConf) -> Gateways {
    let mut g = Gateways {
        v4: Vec::new(),
        v6: Vec::new(),
    };
    let (mut default4, mut default6) = (false, false);
    for i in 0..result.ips.len() {
        let ipc = &mut result.ips[i];
        // Every IP is on the container interface, the third in `interfaces`.
        ipc.interface = Some(2);
        let v4 = ipc.address.addr().is_ipv4();
        if ipc.gateway.is_none() && n.is_gw {
            ipc.gateway = Some(next_ip(ipc.address.network()));
        }
        let (addr, gw) = (ipc.address, ipc.gateway);
        if n.is_default_gw {
            let found = if v4 { &mut default4 } else { &mut default6 };
            if !*found {
                *found = result
                    .routes
                    .iter()
                    .any(|r| r.gw.is_some() && r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4);
            }
            if !*found {
                let dst: IpNet = if v4 { "0.0.0.0/0" } else { "::/0" }.parse().expect("valid");
                result.routes.push(CniRoute::new(dst, gw));
                *found = true;
            }
        }
        if n.is_gw {
            if let Some(gw) = gw {
                let net = IpNet::new(gw, addr.prefix_len()).expect("same family and prefix");
                if v4 { &mut g.v4 } else { &mut g.v6 }.push(net);
            }
        }
    }
    g
}

/// Put gateway address `gw` on `link` (the bridge or the VLAN gateway interface). IPv4 allows
/// one address (a different one is replaced only with forceAddress); IPv6 allows several
/// with non-overlapping prefixes. (The bridge's MAC was pinned before its port joined.)
fn ensure_addr(
    nl: &mut Netlink,
    link: &Link,
    family: IpFamily,
    gw: IpNet,
    force: bool,
    undo: &mut Undo,
) -> anyhow::Result<()> {
    let name = &link.name;
    let idx = link.index;
    let existing = nl
        .addrs(Some(idx), family)
        .context("could not get list of IP addresses")?;
    let global: Vec<IpNet> = existing.iter().filter(|a| a.scope == 0).map(|a| a.ip).collect();
    if global.contains(&gw) {
        return Ok(());
    }
    for a in global {
        if family == IpFamily::V4 || a.contains(&gw.addr()) || gw.contains(&a.addr()) {
            if !force {
                bail!("{name:?} already has an IP address different from {gw}");
            }
            nl.del_addr(idx, a)
                .with_context(|| format!("could not remove IP address from {name:?}"))?;
            undo.push(format!("restore address {a} on {name}"), move || {
                Ok(Netlink::new()?.add_addr(idx, a, false)?)
            });
        }
    }
    // IFA_F_NODAD: the gateway must answer pods at once, not after a second of DAD on a
    // bridge that only our own veths join.
    match nl.add_addr(idx, gw, true) {
        Ok(()) => undo.push(format!("remove address {gw} from {name}"), move || {
            Ok(Netlink::new()?.del_addr(idx, gw)?)
        }),
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(anyhow!(e).context(format!("could not add IP address to {name:?}"))),
    }
    Ok(())
}

/// The reference's VLAN gateway interface for `vlan` + `isGateway`: a veth pair in the host
/// netns, one end `<bridge>.<vlan>` carrying the gateway address, the other a bridge port
/// with PVID = vlan. Reused when it exists.
fn ensure_vlan_interface(
    host: &mut Netlink,
    host_ns: &NetNs,
    br: &Link,
    n: &BridgeConf,
    undo: &mut Undo,
) -> anyhow::Result<Link> {
    let name = format!("{}.{}", br.name, n.vlan);
    if let Some(l) = host.link_by_name(&name)? {
        return Ok(l);
    }
    // Both ends in the host netns: a second socket there stands in for the "container" one.
    let mut same = Netlink::in_netns(host_ns)?;
    let pair = veth::create_pair(
        &mut same,
        host,
        host_ns,
        &name,
        &VethOpts {
            mtu: Some(br.mtu),
            container_mac: None,
            host_no_dad: false,
        },
    )
    .with_context(|| format!("faild to create vlan gateway {name:?}"))?;
    let idx = pair.host.index;
    undo.push(format!("delete vlan gateway {name}"), move || {
        Ok(Netlink::new()?.delete_link(idx)?)
    });
    attach_port(
        host,
        br,
        &pair.host,
        false,
        false,
        n.vlan as u16,
        &[],
        n.preserve_default_vlan,
    )
    .with_context(|| format!("faild to create vlan gateway {name:?}"))?;
    host.set_up(pair.container.index)
        .with_context(|| format!("failed to up {name:?}"))?;
    Ok(host.link_by_index(pair.container.index)?.unwrap_or(pair.container))
}

/// Wait for the host end to be oper-up (its peer is up): poll from 1 ms, doubling to 50 ms.
fn wait_port_up(host: &mut Netlink, index: u32) -> anyhow::Result<Link> {
    match host.wait_oper_up(index, PORT_UP_TIMEOUT) {
        Ok(l) => Ok(l),
        Err(e) if e.errno() == Some(nix::libc::ETIMEDOUT) => {
            let state = host.link_by_index(index)?.map(|l| l.oper_state);
            bail!("bridge port in error state: {}", oper_state_name(state))
        }
        Err(e) => Err(e.into()),
    }
}

/// Go's `netlink.LinkOperState.String()`.
fn oper_state_name(s: Option<OperState>) -> &'static str {
    match s {
        Some(OperState::NotPresent) => "not-present",
        Some(OperState::Down) => "down",
        Some(OperState::LowerLayerDown) => "lower-layer-down",
        Some(OperState::Testing) => "testing",
        Some(OperState::Dormant) => "dormant",
        Some(OperState::Up) => "up",
        _ => "unknown",
    }
}

// Private helpers of CHECK.

fn check_bridge(host: &mut Netlink, intf: &Interface, n: &BridgeConf) -> anyhow::Result<Link> {
    if intf.name.is_empty() {
        bail!("Interface name missing ");
    }
    let l = host
        .link_by_name(&intf.name)?
        .ok_or_else(|| anyhow!("Interface name {} not found", intf.name))?;
    if !intf.sandbox.is_empty() {
        bail!("Interface {} should not be in sandbox", intf.name);
    }
    if l.kind != Some(LinkType::Bridge) {
        bail!("Interface {} does not have link type of bridge", intf.name);
    }
    if !intf.mac.is_empty() && intf.mac != fmt_mac(&l.mac) {
        bail!("Bridge interface {} Mac doesn't match: {}", intf.name, intf.mac);
    }
    if l.promisc != n.promisc_mode {
        bail!(
            "Bridge interface {} configured Promisc Mode {} doesn't match current state: {} ",
            intf.name,
            n.promisc_mode,
            l.promisc
        );
    }
    Ok(l)
}

fn check_container_iface(cont: &mut Netlink, intf: &Interface) -> anyhow::Result<Link> {
    if intf.name.is_empty() {
        bail!("Interface name missing ");
    }
    let l = cont
        .link_by_name(&intf.name)?
        .ok_or_else(|| anyhow!("Interface name {} not found", intf.name))?;
    if intf.sandbox.is_empty() {
        bail!("Interface {} is expected to be in a sandbox", intf.name);
    }
    if l.kind != Some(LinkType::Veth) {
        bail!("Error: Container interface {} not of type veth", l.name);
    }
    check_container_mac("", intf, &l)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(json: &str) -> anyhow::Result<Vec<u16>> {
        let t: Vec<VlanTrunk> = serde_json::from_str(json).unwrap();
        collect_vlan_trunk(Some(&t))
    }

    #[test]
    fn vlan_trunk_rules() {
        assert_eq!(
            trunk(r#"[{"id":5},{"minID":3,"maxID":6},{"id":100}]"#).unwrap(),
            vec![3, 4, 5, 6, 100]
        );
        let err = |j: &str| trunk(j).unwrap_err().to_string();
        assert_eq!(err(r#"[{"minID":0,"maxID":6}]"#), "incorrect trunk minID parameter");
        assert_eq!(err(r#"[{"minID":1,"maxID":4095}]"#), "incorrect trunk maxID parameter");
        assert_eq!(
            err(r#"[{"minID":7,"maxID":6}]"#),
            "minID is greater than maxID in trunk parameter"
        );
        assert!(err(r#"[{"maxID":6}]"#).contains("minID is missing"));
        assert!(err(r#"[{"minID":6}]"#).contains("maxID is missing"));
        assert_eq!(err(r#"[{"id":0}]"#), "incorrect trunk id parameter");
        assert!(trunk("[]").unwrap().is_empty());
        // Values out of range are config errors (7), not 999 (found by tests/it/corpus.rs).
        let code = |j: &str| CniError::from_anyhow(&trunk(j).unwrap_err()).code;
        assert_eq!(code(r#"[{"id":0}]"#), 7);
        assert_eq!(code(r#"[{"minID":7,"maxID":6}]"#), 7);
    }

    #[test]
    fn vlan_out_of_range_is_code_7() {
        for vlan in ["-2", "4095", "5000", r#"1, "bridge": "sixteen-bytes-xx""#] {
            let stdin = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"bridge","vlan":{vlan}}}"#);
            let args = CmdArgs::example(stdin.as_bytes(), "");
            let e = CniError::from_anyhow(&BridgeConf::load(&args).unwrap_err());
            assert_eq!(e.code, 7, "vlan {vlan}: {}", e.msg);
        }
    }

    #[test]
    fn gateways_and_default_routes() {
        let n: BridgeConf =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","name":"n","isDefaultGateway":true,"isGateway":true}"#)
                .unwrap();
        let mut r = CniResult::new("1.0.0");
        r.ips.push(crate::cni::result::IpConfig {
            interface: None,
            address: "10.1.2.7/24".parse().unwrap(),
            gateway: None,
        });
        r.ips.push(crate::cni::result::IpConfig {
            interface: None,
            address: "fd00::7/64".parse().unwrap(),
            gateway: Some("fd00::99".parse().unwrap()),
        });
        let g = calc_gateways(&mut r, &n);
        assert_eq!(g.v4, vec!["10.1.2.1/24".parse::<IpNet>().unwrap()]);
        assert_eq!(g.v6, vec!["fd00::99/64".parse::<IpNet>().unwrap()]);
        assert_eq!(r.ips[0].interface, Some(2));
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[0].gw, Some("10.1.2.1".parse().unwrap()));
        assert_eq!(r.routes[1].dst, "::/0".parse::<IpNet>().unwrap());
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(BridgeConf::shape()).unwrap();
        let n: BridgeConf = config::parse(
            br#"{"cniVersion":"1.0.0","Name":"n","Type":"bridge","isgateway":true,"IPMasq":true,"BRIDGE":"br9",
                 "HairpinMode":true,"MTU":1400,"VlanTrunk":[{"MinID":2,"MAXID":3}],"PreserveDefaultVLAN":true,
                 "RuntimeConfig":{"MAC":"0a:58:00:00:00:01"},"IPAM":{"Type":"host-local"}}"#,
        )
        .unwrap();
        assert!(n.is_gw && n.masq.ip_masq && n.hairpin_mode && n.preserve_default_vlan);
        assert_eq!((n.bridge.as_str(), n.mtu, n.net.name.as_str()), ("br9", 1400, "n"));
        assert_eq!(collect_vlan_trunk(n.vlan_trunk.as_deref()).unwrap(), vec![2, 3]);
        assert_eq!(n.net.runtime_config.mac.as_deref(), Some("0a:58:00:00:00:01"));
        assert_eq!(n.net.ipam_type(), Some("host-local"));
    }
}
