//! ipMasq of bridge and ptp: masquerade what leaves each pod address's subnet, in one of three
//! layouts (doc/firewall.md, "ipMasq"):
//!
//! - [`iptables`]: the reference's own nat rules (upstream `pkg/ip/ipmasq_iptables_linux.go`),
//!   written over netlink as iptables-nft writes them;
//! - iptables-legacy: the same rules in x_tables, on a node whose iptables is legacy
//!   (`pkg::legacy_iptables`);
//! - [`nftables`]: upstream's nftables backend (`pkg/ip/ipmasq_nftables_linux.go`), the table
//!   `inet cni_plugins_masquerade`.
//!
//! The layout is chosen once per verb ([`backend::choose`]): `ipMasqBackend` when set, else
//! the node's (`pkg::backend`: iptables when the node uses iptables, as upstream's
//! `SetupIPMasqForNetworks` prefers). ADD writes that layout; CHECK checks it; DEL and GC
//! remove the attachment's rules in both, in one batch, as upstream's
//! `TeardownIPMasqForNetworks` / `GCIPMasqForNetwork` do ("the pod may have been created with a
//! different version of this plugin or a different configuration").

pub mod iptables;
pub mod nftables;

use anyhow::{Context, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::cni::config::NetConf;
use crate::cni::gokeys::GoKeys;
use crate::cni::result::CniResult;
use crate::cni::skel::CmdArgs;
use crate::linux::nft::{Batch, NftSocket};
use crate::pkg::backend::{self, Requested};
use crate::pkg::legacy_iptables as legacy;
use crate::pkg::undo::Undo;

/// The config key bridge and ptp read the backend from.
pub const KEY: &str = "ipMasqBackend";

/// bridge's and ptp's masquerading keys (flattened into their configs).
#[derive(Debug, Default, Deserialize, GoKeys)]
pub struct MasqKeys {
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(rename = "ipMasqBackend", default)]
    pub ip_masq_backend: Option<String>,
    /// `ipMasqBackend`, checked by [`MasqKeys::check`] (ADD and CHECK; DEL removes both
    /// layouts' rules).
    #[serde(skip)]
    pub backend: Requested,
}

impl MasqKeys {
    /// Parses `ipMasqBackend` into [`MasqKeys::backend`] (see [`requested`]).
    pub fn check(&mut self) -> Result<()> {
        self.backend = requested(self.ip_masq_backend.as_deref())?;
        Ok(())
    }
}

/// The attachment whose rules DEL removes, as both layouts' `plan_teardown` take it.
#[derive(Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub ifname: &'a str,
    pub container_id: &'a str,
}

impl<'a> Attachment<'a> {
    pub fn new(network: &'a str, ifname: &'a str, container_id: &'a str) -> Self {
        Attachment {
            network,
            ifname,
            container_id,
        }
    }
}

/// `ipMasqBackend`: unset or `""` (the node decides), `"iptables"`, `"nftables"`; anything
/// else is code 7 naming the key (upstream: "unknown ipmasq backend").
pub fn requested(value: Option<&str>) -> Result<Requested> {
    Requested::parse(KEY, value)
}

/// The layout one verb writes (ADD) or checks (CHECK): [`backend::choose`]'s, the same enum
/// the firewall and portmap use.
pub use crate::pkg::backend::Layout as Backend;

impl Backend {
    /// The layout CHECK also accepts when the backend is unset.
    fn other(self) -> Backend {
        match self {
            Backend::Iptables => Backend::Nftables,
            Backend::Nftables | Backend::IptablesLegacy => Backend::Iptables,
        }
    }

    fn setup(self, sock: &NftSocket, network: &str, args: &CmdArgs, ips: &[IpNet]) -> Result<()> {
        let (ifname, cid) = (args.ifname.as_str(), args.container_id.as_str());
        match self {
            Backend::Iptables => iptables::setup(sock, network, ifname, cid, ips),
            Backend::IptablesLegacy => legacy::apply(&legacy::masq_add(network, cid, ips))
                .context("failed to set up IP masquerading (iptables-legacy)"),
            Backend::Nftables => nftables::setup(sock, network, ifname, cid, ips),
        }
    }

    fn check(self, sock: &NftSocket, network: &str, args: &CmdArgs, ips: &[IpNet]) -> Result<()> {
        let (ifname, cid) = (args.ifname.as_str(), args.container_id.as_str());
        match self {
            Backend::Iptables => iptables::check(sock, network, cid, ips),
            Backend::IptablesLegacy => legacy::check(&legacy::masq_add(network, cid, ips)),
            Backend::Nftables => nftables::check(sock, network, ifname, cid, ips),
        }
    }
}

/// ADD: masquerade what leaves each of the result's addresses' subnets, in the layout chosen
/// for `requested`, with its rollback on `undo`. Returns the socket so that the caller decides
/// when it is closed (a close waits for the kernel to retire the transaction).
pub fn setup(
    network: &str,
    requested: Requested,
    args: &CmdArgs,
    result: &CniResult,
    undo: &mut Undo,
) -> Result<NftSocket> {
    let ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
    let sock = NftSocket::open()?;
    backend::choose(requested, &sock)?.setup(&sock, network, args, &ips)?;
    let (net, cid, ifname) = (network.to_string(), args.container_id.clone(), args.ifname.clone());
    undo.push(format!("remove IP masquerading of {cid}/{ifname}"), move || {
        teardown(&NftSocket::open()?, &net, &ifname, &cid)
    });
    Ok(sock)
}

/// DEL: the attachment's rules in every layout: nf_tables' in one batch, then x_tables' (read
/// only where this netns has a legacy nat table). Needs neither the container's netns nor its
/// addresses; nothing to remove is success.
pub fn teardown(sock: &NftSocket, network: &str, ifname: &str, container_id: &str) -> Result<()> {
    let mut b = Batch::new();
    let at = Attachment::new(network, ifname, container_id);
    let nft = nftables::plan_teardown(sock, &mut b, at)?;
    let ipt = iptables::plan_teardown(sock, &mut b, at)?;
    if !b.is_empty() {
        b.commit(sock)
            .with_context(|| format!("failed to remove IP masquerading for {container_id}/{ifname}"))?;
    }
    nft.done();
    ipt.done();
    legacy::apply(&legacy::masq_del(network, container_id))
        .with_context(|| format!("failed to remove IP masquerading for {container_id}/{ifname} (iptables-legacy)"))
}

/// CHECK: each of the attachment's addresses is masqueraded in the layout ADD chose. With the
/// backend unset, rules in the other layout are healthy too: the pod was added while the node
/// decided otherwise (another release, or before iptables was installed).
pub fn check(network: &str, requested: Requested, args: &CmdArgs, prev: &CniResult) -> Result<()> {
    let ips: Vec<IpNet> = prev.ips.iter().map(|i| i.address).collect();
    let sock = NftSocket::open()?;
    let backend = backend::choose(requested, &sock)?;
    match backend.check(&sock, network, args, &ips) {
        Err(e) if requested == Requested::Auto => backend.other().check(&sock, network, args, &ips).map_err(|_| e),
        r => r,
    }
}

/// GC: the rules of attachments not in the valid list go, nf_tables' layouts in one batch,
/// then x_tables'.
pub fn gc(net: &NetConf) -> Result<()> {
    let Some(valid) = net.gc_valid_attachments() else {
        return Ok(());
    };
    let valid: Vec<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    let sock = NftSocket::open()?;
    let mut b = Batch::new();
    let nft = nftables::plan_gc(&sock, &mut b, &net.name, &valid)?;
    iptables::plan_gc(&sock, &mut b, &net.name, &valid)?;
    if !b.is_empty() {
        b.commit(&sock)
            .with_context(|| format!("failed to garbage-collect IP masquerading of network {}", net.name))?;
    }
    nft.into_iter().for_each(nftables::Forget::done);
    iptables::gc_records(&sock, &net.name, &valid);
    let live = |cid: &str| valid.iter().any(|(c, _)| *c == cid);
    legacy::gc(legacy::Owner::Masq, &net.name, &live)
        .and_then(|p| legacy::apply(&p))
        .with_context(|| {
            format!(
                "failed to garbage-collect IP masquerading of network {} (iptables-legacy)",
                net.name
            )
        })
}
