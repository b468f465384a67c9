//! portmap: forward host ports to the container (`runtimeConfig.portMappings`), in one of three
//! layouts, all programmed without running a program (doc/firewall.md, "portmap"):
//!
//! - **iptables** ([`iptables`]): the reference's own chains and rules (`CNI-HOSTPORT-*`,
//!   `CNI-DN-<hash>`) in iptables-nft's `nat` tables, as iptables-nft 1.8 encodes them;
//! - **iptables-legacy**: the same chains and rules in x_tables, on a node whose iptables is
//!   iptables-legacy (`pkg::legacy_iptables`);
//! - **nftables** ([`nftables`]): upstream v1.9's nftables backend (`ip`/`ip6 cni_hostport`).
//!
//! The layout is chosen once per verb ([`Layout`]): `backend` when set; unset, an option only
//! one layout has decides (`externalSetMarkChain` or iptables-syntax conditions: iptables;
//! nft-syntax conditions: nftables), else the node (`pkg::backend::choose`: iptables when the
//! node uses iptables, as upstream decides since v1.6). ADD writes there and CHECK looks
//! there first; DEL and GC remove the attachment's rules in both layouts, whichever binary
//! made them.

pub mod iptables;
pub mod nftables;

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::cni::config::{self, NetConf, PortMapping};
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::conntrack;
use crate::linux::netlink::IpFamily;
use crate::linux::nft::{Batch, Family, L4Proto, NftSocket};
use crate::linux::xtables::Rule as XtRule;
use crate::linux::{sysctl, Netlink, NfProto};
use crate::pkg::backend::{self, Requested};
use crate::pkg::caps::{self, Capability};
use crate::pkg::legacy_iptables as legacy;
use crate::pkg::nft_records as records;
use crate::pkg::reference_iptables as reference;
use crate::pkg::sha512::hex_prefix;
use crate::pkg::undo::Undo;

pub use nftables::{HOSTIP_HOSTPORTS, HOSTPORTS, HOSTPORTS_ALL, MASQUERADING, TABLE};

pub static PLUGIN: Plugin = entry::<Portmap>();

struct Portmap;

/// upstream's `DefaultMarkBit` (Kubernetes uses 14 and 15, Calico 20-31).
const DEFAULT_MARK_BIT: u32 = 13;

// ---- config ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
struct PortMapConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "masqAll", default)]
    masq_all: bool,
    #[serde(rename = "markMasqBit", default)]
    mark_masq_bit: Option<serde_json::Value>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6", default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
}

/// One validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub proto: L4Proto,
    pub host_ip: Option<IpAddr>,
}

/// Where one verb writes (or first looks for) an attachment's rules: the same enum masquerade
/// and the firewall use.
pub use crate::pkg::backend::Layout;

/// `conditionsV4`/`conditionsV6`, in the syntax of the layout they were written for
/// (upstream's `detectBackendOfConditions`: iptables options start with `-` or `!`).
#[derive(Debug, Default)]
enum Conditions {
    #[default]
    None,
    Iptables(Box<(iptables::Conds, iptables::Conds)>),
    Nftables(Vec<nftables::Cond>, Vec<nftables::Cond>),
}

/// Everything ADD/CHECK need, validated.
pub struct Conf {
    net: NetConf,
    snat: bool,
    masq_all: bool,
    mappings: Vec<Mapping>,
    requested: Requested,
    /// The layout an option only one layout has asks for (unset `backend` then follows it).
    implied: Option<Layout>,
    mark_bit: u32,
    external_setmark: Option<String>,
    conditions: Conditions,
}

/// Which layout a condition list was written for; `None` when it is empty (upstream looks
/// at the first element only).
fn syntax_of(conds: Option<&[String]>) -> Option<Layout> {
    let first = conds?.first()?.as_bytes().first()?;
    Some(if matches!(first, b'-' | b'!') {
        Layout::Iptables
    } else {
        Layout::Nftables
    })
}

fn parse_conf(stdin: &[u8]) -> Result<Conf> {
    let c: PortMapConf = config::parse(stdin)?;
    let requested = Requested::parse("backend", c.backend.as_deref())?;
    // upstream: a generic key, range-checked whatever the backend; only the iptables layout
    // uses it.
    let mark_bit = match c.mark_masq_bit.as_ref().filter(|v| !v.is_null()) {
        None => None,
        Some(v) => match v.as_u64().filter(|b| *b <= 31) {
            Some(b) => Some(b as u32),
            None => bail!(CniError::invalid_config(format!(
                "markMasqBit must be between 0 and 31, got {v}"
            ))),
        },
    };
    let external = c.external_set_mark_chain.clone();
    if mark_bit.is_some() && external.is_some() {
        bail!(CniError::invalid_config(
            "cannot specify externalSetMarkChain and markMasqBit"
        ));
    }
    if external.as_deref() == Some("") {
        bail!(CniError::invalid_config("externalSetMarkChain: empty chain name"));
    }
    // What each option asks for, with the key that asks (upstream's ensureBackend).
    let mut asks: Vec<(Layout, &str)> = Vec::new();
    if external.is_some() {
        asks.push((Layout::Iptables, "externalSetMarkChain"));
    }
    let (s4, s6) = (
        syntax_of(c.conditions_v4.as_deref()),
        syntax_of(c.conditions_v6.as_deref()),
    );
    asks.extend(s4.map(|l| (l, "conditionsV4")));
    asks.extend(s6.map(|l| (l, "conditionsV6")));
    let explicit = match requested {
        Requested::Iptables => Some(Layout::Iptables),
        Requested::Nftables => Some(Layout::Nftables),
        Requested::Auto => None,
    };
    let implied = explicit.or(asks.first().map(|(l, _)| *l));
    if let Some(want) = implied {
        if let Some((l, key)) = asks.iter().find(|(l, _)| *l != want) {
            let why = match explicit {
                Some(_) => format!("backend {:?} was requested", want.as_str()),
                None => format!("{} asks for the {} layout", asks[0].1, want.as_str()),
            };
            bail!(CniError::invalid_config(format!(
                "{key}: {why}, but {key} is {}-specific",
                l.as_str()
            )));
        }
    }
    let mut mappings = Vec::new();
    for m in c.net.runtime_config.port_mappings.iter().flatten() {
        mappings.push(parse_mapping(m)?);
    }
    let (v4, v6) = (
        c.conditions_v4.as_deref().unwrap_or_default(),
        c.conditions_v6.as_deref().unwrap_or_default(),
    );
    // An empty first element says nothing; the rest is then read in the layout's syntax.
    let syntax = s4.or(s6).or(implied.filter(|_| !v4.is_empty() || !v6.is_empty()));
    let conditions = match syntax {
        None => Conditions::None,
        // (Syntax only: never the legacy layout, which is chosen per verb.)
        Some(Layout::Iptables | Layout::IptablesLegacy) => {
            let c4 = iptables::parse_conditions("conditionsV4", v4, false)?;
            let c6 = iptables::parse_conditions("conditionsV6", v6, true)?;
            let mut protos: Vec<L4Proto> = mappings.iter().map(|m| m.proto).collect();
            protos.dedup();
            c4.check_protocols("conditionsV4", &protos)?;
            c6.check_protocols("conditionsV6", &protos)?;
            Conditions::Iptables(Box::new((c4, c6)))
        }
        Some(Layout::Nftables) => Conditions::Nftables(
            nftables::parse_conditions("conditionsV4", v4, false)?,
            nftables::parse_conditions("conditionsV6", v6, true)?,
        ),
    };
    Ok(Conf {
        net: c.net,
        snat: c.snat.unwrap_or(true),
        masq_all: c.masq_all,
        mappings,
        requested,
        implied,
        mark_bit: mark_bit.unwrap_or(DEFAULT_MARK_BIT),
        external_setmark: external,
        conditions,
    })
}

fn parse_mapping(m: &PortMapping) -> Result<Mapping> {
    let port = |what: &str, p: i64| -> Result<u16> {
        if p <= 0 || p > 65535 {
            bail!(CniError::invalid_config(format!("Invalid {what} number: {p}")));
        }
        Ok(p as u16)
    };
    let proto = match m.protocol.to_ascii_lowercase().as_str() {
        // Kubernetes always sends a protocol; an empty one means TCP as in the CRI API.
        "" | "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        "sctp" => L4Proto::Sctp,
        other => bail!(CniError::invalid_config(format!(
            "unknown port mapping protocol {other:?}"
        ))),
    };
    let host_ip = match m.host_ip.as_str() {
        "" => None,
        s => Some(
            s.parse::<IpAddr>()
                .map_err(|_| CniError::invalid_config(format!("invalid hostIP {s:?}")))?,
        ),
    };
    Ok(Mapping {
        host_port: port("host port", m.host_port)?,
        container_port: port("container port", m.container_port)?,
        proto,
        host_ip,
    })
}

impl Conf {
    /// The layout this verb uses: asked for, implied by an option, or the node's. "iptables"
    /// (asked for or implied) is the node's iptables: x_tables on a legacy node.
    fn layout(&self, sock: &NftSocket) -> Result<Layout> {
        let requested = match self.implied {
            Some(Layout::Nftables) => return Ok(Layout::Nftables),
            Some(_) => Requested::Iptables,
            None => self.requested,
        };
        backend::choose(requested, sock)
    }

    /// The legacy layout's plan for container address `net` (`conds` applies this family's
    /// iptables-syntax conditions).
    fn legacy_plan(&self, args: &CmdArgs, net: IpNet, conds: &dyn Fn(XtRule) -> XtRule) -> legacy::Plan {
        let p: legacy::Portmap = self.reference_keys(args, Some(conds));
        let maps: Vec<legacy::HostPort> = self
            .mappings
            .iter()
            .map(|m| legacy::HostPort {
                host_port: m.host_port,
                container_port: m.container_port,
                proto: m.proto as u8,
                host_ip: m.host_ip,
            })
            .collect();
        legacy::portmap_add(&p, &maps, net)
    }

    fn nft_params(&self, v6: bool) -> nftables::Params<'_> {
        let conds: &[nftables::Cond] = match &self.conditions {
            Conditions::Nftables(c4, c6) => {
                if v6 {
                    c6
                } else {
                    c4
                }
            }
            _ => &[],
        };
        nftables::Params {
            snat: self.snat,
            masq_all: self.masq_all,
            mappings: &self.mappings,
            conds,
        }
    }

    fn ipt_params<'a>(&'a self, args: &'a CmdArgs, v6: bool) -> iptables::Params<'a> {
        static NONE: std::sync::OnceLock<iptables::Conds> = std::sync::OnceLock::new();
        let conds = match &self.conditions {
            Conditions::Iptables(c) => {
                if v6 {
                    &c.1
                } else {
                    &c.0
                }
            }
            _ => NONE.get_or_init(iptables::Conds::default),
        };
        self.reference_keys(args, conds)
    }

    /// The keys both iptables layouts' rules depend on, with `conditions` in the layout's form.
    fn reference_keys<'a, C>(&'a self, args: &'a CmdArgs, conditions: C) -> reference::PortmapKeys<'a, C> {
        reference::PortmapKeys {
            network: &self.net.name,
            container_id: &args.container_id,
            snat: self.snat,
            masq_all: self.masq_all,
            mark_bit: self.mark_bit,
            external_setmark: self.external_setmark.as_deref(),
            conditions,
        }
    }
}

/// An attachment's record key (`nft_records::key`): network hash, ifname, container ID.
pub fn attachment_key(network: &str, ifname: &str, container_id: &str) -> String {
    records::key(&hex_prefix(network, 16), ifname, container_id)
}

fn attachment<'a>(network: &'a str, args: &'a CmdArgs) -> nftables::Attachment<'a> {
    nftables::Attachment {
        network,
        container_id: &args.container_id,
        ifname: &args.ifname,
    }
}

// ---- ADD ---------------------------------------------------------------------------------

impl CniPlugin for Portmap {
    const NAME: &'static str = "portmap";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "forward host ports to the container (iptables or nftables, over netlink)";
    const CAPS: &'static [Capability] = caps::NODE_ONLY;
    const HAS_STATUS: bool = false;
    type Conf = Conf;
    type Lenient = NetConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }
    fn add(conf: Conf, args: &CmdArgs) -> Result<CniResult> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        if conf.mappings.is_empty() {
            // Nothing to forward: touch nothing (the reference used to run iptables regardless).
            return Ok(prev);
        }
        let (v4, v6) = container_ips(&prev, &args.ifname);
        let sock = NftSocket::open()?;
        let layout = conf.layout(&sock)?;
        let key = attachment_key(&conf.net.name, &args.ifname, &args.container_id);
        // Each family is its own batch and route_localnet may fail after the first: a failed ADD
        // takes back every rule it committed.
        let mut undo = Undo::new();
        for cip in [v4, v6].into_iter().flatten() {
            let v6 = cip.is_ipv6();
            let fam = if v6 { Family::Ip6 } else { Family::Ip };
            match layout {
                Layout::Iptables => {
                    let p = conf.ipt_params(args, v6);
                    iptables::setup(&sock, &p, &conf.mappings, container_net(&prev, cip), &key)?;
                    let (net, cid, k) = (conf.net.name.clone(), args.container_id.clone(), key.clone());
                    undo.push(format!("remove iptables port mappings of {cid}"), move || {
                        let sock = NftSocket::open()?;
                        let mut b = Batch::new();
                        iptables::plan_del(&sock, &mut b, &net, &cid, &k, true)?;
                        if !b.is_empty() {
                            b.commit(&sock)?;
                        }
                        iptables::forget(&sock, &k);
                        Ok(())
                    });
                }
                Layout::IptablesLegacy => {
                    let p = conf.ipt_params(args, v6);
                    let conds = |r: XtRule| p.conditions.on_legacy(r);
                    let plan = conf.legacy_plan(args, container_net(&prev, cip), &conds);
                    legacy::apply(&[plan]).context("failed to set up port mappings (iptables-legacy)")?;
                    let (net, cid) = (conf.net.name.clone(), args.container_id.clone());
                    undo.push(format!("remove iptables-legacy port mappings of {cid}"), move || {
                        legacy::apply(&legacy::portmap_del(&net, &cid))
                    });
                }
                Layout::Nftables => {
                    let a = attachment(&conf.net.name, args);
                    nftables::forward_ports(&sock, &conf.nft_params(v6), &a, cip)?;
                    let (net, cid, ifname) = (conf.net.name.clone(), args.container_id.clone(), args.ifname.clone());
                    undo.push(format!("remove {fam} port mappings of {cid}"), move || {
                        let sock = NftSocket::open()?;
                        let a = nftables::Attachment {
                            network: &net,
                            container_id: &cid,
                            ifname: &ifname,
                        };
                        let mut b = Batch::new();
                        nftables::plan_del(&sock, &mut b, fam, &a, true)?;
                        if !b.is_empty() {
                            b.commit(&sock)?;
                        }
                        nftables::forget(&sock, fam, &a);
                        Ok(())
                    });
                }
            }
            if !v6 && conf.snat {
                enable_localnet_routing(cip)?;
            }
            // A UDP "connection" to the host port may still point at a previous container:
            // conntrack would keep sending it there, so forget those entries.
            let ct = if v6 { NfProto::Ipv6 } else { NfProto::Ipv4 };
            for m in conf.mappings.iter().filter(|m| m.proto == L4Proto::Udp) {
                // Failures are only logged by the reference; a stale entry is not fatal.
                if let Err(e) = conntrack::delete_by_dst_port(ct, L4Proto::Udp as u8, m.host_port) {
                    eprintln!(
                        "portmap: could not delete conntrack entries of udp port {}: {e}",
                        m.host_port
                    );
                }
            }
        }
        undo.commit();
        Ok(prev)
    }
    /// Removes the attachment's rules in both layouts and both families, in one batch: found
    /// by record (and, failing that, by comment or chain name), so neither the mappings nor
    /// the netns nor prevResult is needed. Rules another binary made (upstream's nftables
    /// backend, the reference's iptables chains) go too.
    fn del(net: NetConf, args: &CmdArgs) -> Result<()> {
        let sock = NftSocket::open()?;
        let a = attachment(&net.name, args);
        let key = a.key();
        let mapped = net.runtime_config.port_mappings.as_ref().is_some_and(|m| !m.is_empty());
        let mut listings = false;
        loop {
            let mut errors = Failures::under("could not remove port mappings");
            let mut b = Batch::new();
            for fam in [Family::Ip, Family::Ip6] {
                errors.keep(nftables::plan_del(&sock, &mut b, fam, &a, mapped).with_context(|| fam.to_string()));
            }
            let mut by_record = false;
            match iptables::plan_del(&sock, &mut b, &net.name, &args.container_id, &key, listings) {
                Ok(r) => by_record = r.from_records,
                Err(e) => errors.push(e.context("iptables")),
            }
            // x_tables, where a legacy node keeps them (nothing is read where none is registered).
            errors.keep(legacy::apply(&legacy::portmap_del(&net.name, &args.container_id)).context("iptables-legacy"));
            if !b.is_empty() {
                if let Err(e) = b.commit(&sock) {
                    // A jump the records did not know makes the kernel refuse the chain's
                    // deletion: find them as the reference does.
                    if by_record && !listings {
                        listings = true;
                        continue;
                    }
                    errors.push(anyhow::Error::from(e).context("error deleting rules"));
                }
            }
            errors.finish()?;
            break;
        }
        for fam in [Family::Ip, Family::Ip6] {
            nftables::forget(&sock, fam, &a);
        }
        iptables::forget(&sock, &key);
        Ok(())
    }
    /// Every rule ADD would make for these mappings exists in the layout ADD used; a pod whose
    /// rules are in the other layout (made before the node or the config changed, or by the
    /// reference) is healthy too.
    fn check(conf: Conf, args: &CmdArgs) -> Result<()> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let (v4, v6) = container_ips(&prev, &args.ifname);
        let sock = NftSocket::open()?;
        let layout = conf.layout(&sock)?;
        let a = attachment(&conf.net.name, args);
        for cip in [v4, v6].into_iter().flatten() {
            let v6 = cip.is_ipv6();
            let nft = || nftables::check(&sock, &conf.nft_params(v6), &a, cip);
            let ipt = || {
                let net = container_net(&prev, cip);
                iptables::check(&sock, &conf.ipt_params(args, v6), &conf.mappings, net).or_else(|e| {
                    let forwards = reference_forwards(&conf, cip);
                    match reference::dnat_intact(&sock, &conf.net.name, &args.container_id, cip, &forwards)? {
                        true => Ok(()),
                        false => Err(e),
                    }
                })
            };
            let xt = || {
                let p = conf.ipt_params(args, v6);
                let conds = |r: XtRule| p.conditions.on_legacy(r);
                let plan = conf.legacy_plan(args, container_net(&prev, cip), &conds);
                legacy::check(&[legacy::portmap_check_of(plan, &conf.net.name, &args.container_id)])
            };
            let (first, other): (&dyn Fn() -> Result<()>, &dyn Fn() -> Result<()>) = match layout {
                Layout::Iptables => (&ipt, &nft),
                Layout::IptablesLegacy => (&xt, &ipt),
                Layout::Nftables => (&nft, &ipt),
            };
            if let Err(e) = first() {
                other().map_err(|_| e)?;
            }
        }
        Ok(())
    }
    /// Removes this network's rules whose attachment is not in `cni.dev/valid-attachments`:
    /// ours by record in the nftables layout, the iptables layout's chains (they name network
    /// and container) by listing. upstream's nftables rules carry only a container ID (no
    /// network) and are left alone.
    fn gc(args: &CmdArgs) -> Result<()> {
        let net: NetConf = config::parse(&args.stdin)?;
        // Without the list there is nothing to tell live attachments from dead ones: keep all.
        let Some(valid) = net.gc_valid_attachments() else {
            return Ok(());
        };
        let hash = hex_prefix(&net.name, 16);
        let keep: Vec<String> = valid
            .iter()
            .map(|a| attachment_key(&net.name, &a.ifname, &a.container_id))
            .collect();
        let sock = NftSocket::open()?;
        let mut errors = Failures::under("portmap GC");
        let mut b = Batch::new();
        let mut stale = Vec::new();
        for fam in [Family::Ip, Family::Ip6] {
            if let Some(keys) =
                errors.keep(nftables::plan_gc(&sock, &mut b, fam, &hash, &keep).with_context(|| fam.to_string()))
            {
                stale.push((fam, keys));
            }
        }
        // The reference's chains carry network and container ID (not the ifname, which it ignores).
        let dead = |c: &str| {
            ["dnat ", "snat "].into_iter().any(|kind| {
                reference::parse_comment(c, kind)
                    .is_some_and(|(n, cid)| n == net.name && !valid.iter().any(|a| a.container_id == cid))
            })
        };
        errors
            .keep(reference::plan_nat_removal(&sock, &mut b, reference::Scope::Table, &dead, &[]).context("iptables"));
        let live = |cid: &str| valid.iter().any(|a| a.container_id == cid);
        errors.keep(
            legacy::gc(legacy::Owner::Portmap, &net.name, &live)
                .and_then(|p| legacy::apply(&p))
                .context("iptables-legacy"),
        );
        if !b.is_empty() {
            errors.keep(b.commit(&sock).context("error deleting rules"));
        }
        errors.finish()?;
        // The records of attachments that are not valid go too (their rules just went).
        for (fam, keys) in &stale {
            nftables::forget_keys(&sock, *fam, keys);
        }
        iptables::forget_stale(&sock, &format!("{hash}-"), &keep);
        Ok(())
    }
}

// ---- helpers -----------------------------------------------------------------------------

/// The container's first IPv4 and IPv6 address, skipping addresses of known host-side
/// interfaces and of other container interfaces (the reference's rule).
fn container_ips(prev: &CniResult, ifname: &str) -> (Option<IpAddr>, Option<IpAddr>) {
    let (mut v4, mut v6) = (None, None);
    for ip in &prev.ips {
        let a = ip.address.addr();
        if (a.is_ipv4() && v4.is_some()) || (a.is_ipv6() && v6.is_some()) {
            continue;
        }
        if let Some(i) = ip.interface.and_then(|i| prev.interfaces.get(i)) {
            if i.name != ifname || i.sandbox.is_empty() {
                continue;
            }
        }
        if a.is_ipv4() {
            v4 = Some(a);
        } else {
            v6 = Some(a);
        }
    }
    (v4, v6)
}

/// The container address with its prefix (the iptables layout's hairpin rule matches the
/// pod's subnet).
fn container_net(prev: &CniResult, cip: IpAddr) -> IpNet {
    prev.ips
        .iter()
        .map(|ip| ip.address)
        .find(|n| n.addr() == cip)
        .unwrap_or_else(|| IpNet::from(cip))
}

/// The mappings of `cip`'s family, as the reference's iptables chain holds them.
fn reference_forwards(conf: &Conf, cip: IpAddr) -> Vec<reference::Forward> {
    conf.mappings
        .iter()
        .filter(|m| m.host_ip.is_none_or(|h| h.is_ipv6() == cip.is_ipv6()))
        .map(|m| reference::Forward {
            proto: m.proto as u8,
            host_port: m.host_port,
            container_port: m.container_port,
            host_ip: m.host_ip,
        })
        .collect()
}

/// `route_localnet=1` on the interface that routes to the container, so that 127.0.0.1 may
/// be DNATed to it (the kernel drops martian 127/8 sources otherwise). A node with no route
/// to the pod (an L2-only bridge) has no such interface: the rules stay, as in the reference.
fn enable_localnet_routing(cip: IpAddr) -> Result<()> {
    let mut nl = Netlink::new()?;
    let routes = nl.routes(IpFamily::V4, Some(254))?;
    let Some(best) = routes
        .iter()
        .filter(|r| r.dst.contains(&cip) && r.oif.is_some())
        .max_by_key(|r| r.dst.prefix_len())
    else {
        return Ok(());
    };
    let link = nl
        .link_by_index(best.oif.unwrap())?
        .with_context(|| format!("the interface routing to {cip} vanished"))?;
    sysctl::write_if_different(&format!("net/ipv4/conf/{}/route_localnet", link.name), "1")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<Conf> {
        parse_conf(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"portmap"{extra}}}"#).as_bytes())
    }

    fn err(r: Result<Conf>) -> (u32, String) {
        let e = CniError::from_anyhow(&r.err().expect("an error"));
        (e.code, e.msg)
    }

    #[test]
    fn backends_and_their_options() {
        assert_eq!(
            conf(r#","backend":"iptables""#).unwrap().implied,
            Some(Layout::Iptables)
        );
        assert_eq!(
            conf(r#","backend":"nftables""#).unwrap().implied,
            Some(Layout::Nftables)
        );
        // Unset: the node decides, unless an option only one layout has asks.
        assert_eq!(conf("").unwrap().implied, None);
        // markMasqBit alone switches nothing (upstream: a generic key), and is accepted with
        // nftables, range-checked either way.
        let c = conf(r#","markMasqBit":5"#).unwrap();
        assert_eq!((c.implied, c.mark_bit), (None, 5));
        assert_eq!(conf(r#","backend":"nftables","markMasqBit":13"#).unwrap().mark_bit, 13);
        assert_eq!(conf("").unwrap().mark_bit, 13);
        let ext = conf(r#","externalSetMarkChain":"KUBE-MARK-MASQ""#).unwrap();
        assert_eq!(ext.implied, Some(Layout::Iptables));
        assert_eq!(ext.external_setmark.as_deref(), Some("KUBE-MARK-MASQ"));
        assert_eq!(
            conf(r#","conditionsV4":["-s","10.0.0.0/8"]"#).unwrap().implied,
            Some(Layout::Iptables)
        );
        assert_eq!(
            conf(r#","conditionsV6":["ip6 saddr fd00::/8"]"#).unwrap().implied,
            Some(Layout::Nftables)
        );
        assert!(conf(r#","backend":"nftables","markMasqBit":null"#).is_ok());
        for (bad, key) in [
            (r#","markMasqBit":32"#, "markMasqBit"),
            (r#","markMasqBit":-1"#, "markMasqBit"),
            (r#","markMasqBit":"13""#, "markMasqBit"),
            (
                r#","markMasqBit":13,"externalSetMarkChain":"X""#,
                "externalSetMarkChain",
            ),
            (r#","externalSetMarkChain":"""#, "externalSetMarkChain"),
            (
                r#","backend":"nftables","externalSetMarkChain":"X""#,
                "externalSetMarkChain",
            ),
            (
                r#","backend":"iptables","conditionsV4":["ip saddr 1.2.3.4"]"#,
                "conditionsV4",
            ),
            (
                r#","backend":"nftables","conditionsV4":["-s","1.2.3.4"]"#,
                "conditionsV4",
            ),
            (
                r#","conditionsV4":["-s","1.2.3.4"],"conditionsV6":["ip6 saddr ::1"]"#,
                "conditionsV6",
            ),
            (r#","conditionsV4":["-j","ACCEPT"]"#, "conditionsV4"),
            (r#","conditionsV4":["tcp dport 5"]"#, "conditionsV4"),
            (r#","backend":"ebpf""#, "backend"),
        ] {
            let (code, msg) = err(conf(bad));
            assert_eq!(code, 7, "{bad}: {msg}");
            assert!(msg.contains(key), "{bad}: {msg}");
        }
    }

    #[test]
    fn mappings_and_conditions() {
        let c = conf(
            r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
               {"HostPort":53,"ContainerPort":53,"Protocol":"UDP","HostIP":"127.0.0.1"}]},
               "conditionsV4":["ip saddr != 10.0.0.0/8", "iifname \"eth0\""],"conditionsV6":["meta oifname lo"]"#,
        )
        .unwrap();
        assert!(c.snat && !c.masq_all);
        assert_eq!(c.mappings[1].proto, L4Proto::Udp);
        assert_eq!(c.mappings[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        let Conditions::Nftables(c4, c6) = &c.conditions else {
            panic!("nft conditions")
        };
        assert_eq!(
            c4,
            &vec![
                nftables::Cond::Addr {
                    src: true,
                    op: crate::linux::nft::CmpOp::Neq,
                    net: "10.0.0.0/8".parse().unwrap()
                },
                nftables::Cond::Iifname(crate::linux::nft::CmpOp::Eq, "eth0".into())
            ]
        );
        assert_eq!(
            c6,
            &vec![nftables::Cond::Oifname(crate::linux::nft::CmpOp::Eq, "lo".into())]
        );
        for bad in [0, -1, 70000] {
            let e = conf(&format!(
                r#","runtimeConfig":{{"portMappings":[{{"hostPort":{bad},"containerPort":80,"protocol":"tcp"}}]}}"#
            ));
            assert_eq!(err(e).0, 7);
        }
        assert_eq!(err(conf(r#","conditionsV6":["ip saddr 1.2.3.4"]"#)).0, 7);
        // iptables conditions meet the mappings' protocols: -m udp cannot apply to tcp.
        let (code, msg) = err(conf(
            r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},
               "conditionsV4":["-m","udp","--dport","53"]"#,
        ));
        assert_eq!(code, 7);
        assert!(msg.starts_with("conditionsV4: \"-m udp\""), "{msg}");
        // An empty first element says nothing; the rest is read in the layout's syntax.
        let c = conf(r#","backend":"iptables","conditionsV4":["","-s","1.2.3.4"]"#);
        assert_eq!(err(c).0, 7, "\"\" is no iptables option");
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(PortMapConf::shape()).unwrap();
        let c = parse_conf(
            br#"{"cniVersion":"1.0.0","Name":"n","Type":"portmap","SNAT":false,"MasqAll":true,"MARKMASQBIT":5,
                 "RuntimeConfig":{"PortMappings":[{"HostPort":8080,"ContainerPort":80,"Protocol":"udp","HostIP":"127.0.0.1"}]}}"#,
        )
        .unwrap();
        assert!(!c.snat && c.masq_all);
        assert_eq!(c.mark_bit, 5);
        assert_eq!(
            c.mappings,
            vec![Mapping {
                host_port: 8080,
                container_port: 80,
                proto: L4Proto::Udp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
            }]
        );
    }
}
