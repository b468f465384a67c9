//! Where an attachment's NAT and filter rules go: the layout chosen from a plugin's backend
//! key (`ipMasqBackend`, portmap's and the firewall's `backend`) and, when that is unset, from
//! what the node uses, as upstream chooses since v1.6 ("iptables, unless only nftables is
//! available") but without running a program (doc/firewall.md, "How the layout is chosen").
//!
//! The node's kind is read from the IPv4 facts of the node netns
//! ([`crate::linux::filter_probe`]), in this order:
//!
//! 1. The kernel's state, when it tells one story: legacy x_tables tables **in use** in this
//!    netns and no iptables-nft table in nf_tables → **legacy**; iptables-nft tables and no
//!    legacy table in use → **iptables-nft**. (What Kubernetes' `iptables-wrapper` also looks
//!    at: the rules already there say which iptables the node's other components use.) A
//!    legacy table is in use when it holds a rule, a user-defined chain or a DROP policy: one
//!    with only its built-in chains and ACCEPT policies (what `iptables-legacy -L` or
//!    `iptables-legacy-save` leave behind: reading a table registers it) filters nothing and
//!    says nothing about the node.
//! 2. Otherwise (both or neither), the `iptables` executable `$PATH`, then the standard sbin
//!    and bin directories, would run: `iptables-legacy`/`xtables-legacy-multi` → **legacy**;
//!    any other (`iptables-nft`, a wrapper) → **iptables-nft**.
//! 3. No `iptables` executable either: iptables-nft tables → **iptables-nft**; legacy tables
//!    in use → **legacy**; neither → **nftables only**.

use anyhow::{bail, Result};

use crate::cni::error::CniError;
use crate::linux::filter_probe::{self, FamilyProbe, ToolVariant};
use crate::linux::nft::{Family, NftSocket};

/// The kind of packet filter a node runs (what `cni-multi inspect` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// iptables over nf_tables (`iptables-nft`): iptables' tables are nftables tables.
    IptablesNft,
    /// iptables over x_tables (`iptables-legacy`).
    IptablesLegacy,
    /// No iptables at all: nftables only.
    NftablesOnly,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::IptablesNft => "iptables-nft",
            NodeKind::IptablesLegacy => "iptables-legacy",
            NodeKind::NftablesOnly => "nftables",
        }
    }
}

/// Where one verb writes (or, for CHECK, looks for) an attachment's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The reference's iptables rules, in iptables-nft's nf_tables tables.
    Iptables,
    /// The reference's iptables rules, in legacy x_tables.
    IptablesLegacy,
    /// Upstream's nftables backend's tables.
    Nftables,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Iptables => "iptables",
            Layout::IptablesLegacy => "iptables-legacy",
            Layout::Nftables => "nftables",
        }
    }
}

/// A backend key's value, as the configuration gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requested {
    /// Unset or `""`: the node decides.
    #[default]
    Auto,
    Iptables,
    Nftables,
}

impl Requested {
    /// `key`'s value: unset/`""`, `"iptables"`, `"nftables"`; anything else is code 7 naming
    /// the key (upstream: "unknown ipmasq backend", "unknown portmap backend").
    pub fn parse(key: &str, value: Option<&str>) -> Result<Requested> {
        match value.unwrap_or("") {
            "" => Ok(Requested::Auto),
            "iptables" => Ok(Requested::Iptables),
            "nftables" => Ok(Requested::Nftables),
            other => bail!(CniError::invalid_config(format!(
                "{key}: unknown backend {other:?} (expected \"iptables\" or \"nftables\", or unset)"
            ))),
        }
    }
}

/// The node's kind from one family's facts (the rule in the module doc).
pub fn node_kind_of(p: &FamilyProbe) -> NodeKind {
    match (p.legacy_in_use.is_empty(), p.nft_tables.is_empty()) {
        (false, true) => return NodeKind::IptablesLegacy,
        (true, false) => return NodeKind::IptablesNft,
        _ => {}
    }
    match &p.tool {
        Some((_, ToolVariant::Legacy)) => NodeKind::IptablesLegacy,
        Some(_) => NodeKind::IptablesNft,
        None if !p.nft_tables.is_empty() => NodeKind::IptablesNft,
        None if !p.legacy_in_use.is_empty() => NodeKind::IptablesLegacy,
        None => NodeKind::NftablesOnly,
    }
}

/// The node's kind in the netns `sock` is bound to (the calling thread's), `$PATH` as the
/// process has it.
pub fn node_kind(sock: &NftSocket) -> Result<NodeKind> {
    let path = std::env::var("PATH").ok();
    Ok(node_kind_of(&filter_probe::probe(sock, Family::Ip, path.as_deref())?))
}

/// The layout of a request on a node of `kind`: `"nftables"` is nftables; `"iptables"` is the
/// node's iptables (legacy on a legacy node, as the `iptables` tool there would be); unset
/// follows the node.
pub fn layout_for(requested: Requested, kind: NodeKind) -> Layout {
    match (requested, kind) {
        (Requested::Nftables, _) | (Requested::Auto, NodeKind::NftablesOnly) => Layout::Nftables,
        (_, NodeKind::IptablesLegacy) => Layout::IptablesLegacy,
        (_, NodeKind::IptablesNft) | (Requested::Iptables, NodeKind::NftablesOnly) => Layout::Iptables,
    }
}

/// [`layout_for`] with the node probed only when the request leaves it open.
pub fn choose(requested: Requested, sock: &NftSocket) -> Result<Layout> {
    Ok(match requested {
        Requested::Nftables => Layout::Nftables,
        r => layout_for(r, node_kind(sock)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `legacy`: tables in use (registered too); `idle`: registered, holding nothing.
    fn probe_idle(tool: Option<ToolVariant>, nft: &[&str], legacy: &[&str], idle: &[&str]) -> FamilyProbe {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        FamilyProbe {
            tool: tool.map(|v| (PathBuf::from("/usr/sbin/iptables"), v)),
            nft_tables: names(nft),
            legacy_tables: names(&[legacy, idle].concat()),
            legacy_in_use: names(legacy),
        }
    }

    fn probe(tool: Option<ToolVariant>, nft: &[&str], legacy: &[&str]) -> FamilyProbe {
        probe_idle(tool, nft, legacy, &[])
    }

    #[test]
    fn the_kernel_state_decides_when_it_is_one_sided() {
        use NodeKind::*;
        use ToolVariant::*;
        // Legacy rules and no iptables-nft table: legacy, whatever the tool says.
        assert_eq!(node_kind_of(&probe(Some(Nft), &[], &["filter"])), IptablesLegacy);
        // iptables-nft tables and no legacy one: iptables-nft, even with a legacy tool.
        assert_eq!(node_kind_of(&probe(Some(Legacy), &["nat"], &[])), IptablesNft);
        // Both: the tool decides.
        assert_eq!(
            node_kind_of(&probe(Some(Legacy), &["nat"], &["filter"])),
            IptablesLegacy
        );
        assert_eq!(node_kind_of(&probe(Some(Unknown), &["nat"], &["filter"])), IptablesNft);
        assert_eq!(node_kind_of(&probe(None, &["nat"], &["filter"])), IptablesNft);
        // Neither: the tool decides; no tool is an nftables-only node.
        assert_eq!(node_kind_of(&probe(Some(Nft), &[], &[])), IptablesNft);
        assert_eq!(node_kind_of(&probe(Some(Unknown), &[], &[])), IptablesNft);
        assert_eq!(node_kind_of(&probe(Some(Legacy), &[], &[])), IptablesLegacy);
        assert_eq!(node_kind_of(&probe(None, &[], &[])), NftablesOnly);
        // No tool: whichever tables there are.
        assert_eq!(node_kind_of(&probe(None, &[], &["nat"])), IptablesLegacy);
        assert_eq!(node_kind_of(&probe(None, &["nat"], &[])), IptablesNft);
    }

    #[test]
    fn idle_legacy_tables_say_nothing() {
        use NodeKind::*;
        use ToolVariant::*;
        // `iptables-legacy -L` once on an iptables-nft node: still iptables-nft.
        assert_eq!(node_kind_of(&probe_idle(Some(Nft), &[], &[], &["filter"])), IptablesNft);
        assert_eq!(
            node_kind_of(&probe_idle(Some(Nft), &["filter"], &[], &["filter", "nat"])),
            IptablesNft
        );
        // Nothing else there and no tool: nftables only.
        assert_eq!(node_kind_of(&probe_idle(None, &[], &[], &["filter"])), NftablesOnly);
        // A legacy table in use beside an idle one: legacy.
        assert_eq!(
            node_kind_of(&probe_idle(Some(Nft), &[], &["filter"], &["nat"])),
            IptablesLegacy
        );
        // With the legacy tool, an idle table does not matter either way.
        assert_eq!(
            node_kind_of(&probe_idle(Some(Legacy), &[], &[], &["filter"])),
            IptablesLegacy
        );
    }

    #[test]
    fn layouts() {
        use Layout as L;
        use NodeKind::*;
        use Requested::*;
        assert_eq!(layout_for(Auto, IptablesNft), L::Iptables);
        assert_eq!(layout_for(Auto, IptablesLegacy), L::IptablesLegacy);
        assert_eq!(layout_for(Auto, NftablesOnly), L::Nftables);
        assert_eq!(layout_for(Iptables, IptablesNft), L::Iptables);
        assert_eq!(layout_for(Iptables, IptablesLegacy), L::IptablesLegacy);
        assert_eq!(layout_for(Iptables, NftablesOnly), L::Iptables);
        for k in [IptablesNft, IptablesLegacy, NftablesOnly] {
            assert_eq!(layout_for(Nftables, k), L::Nftables);
        }
    }

    #[test]
    fn backend_values() {
        assert_eq!(Requested::parse("ipMasqBackend", None).unwrap(), Requested::Auto);
        assert_eq!(Requested::parse("ipMasqBackend", Some("")).unwrap(), Requested::Auto);
        assert_eq!(
            Requested::parse("backend", Some("nftables")).unwrap(),
            Requested::Nftables
        );
        let e = Requested::parse("ipMasqBackend", Some("pf")).unwrap_err();
        let e = e.downcast_ref::<CniError>().unwrap();
        assert_eq!(e.code, crate::cni::error::code::INVALID_CONFIG);
        assert!(e.msg.contains("ipMasqBackend") && e.msg.contains("pf"), "{}", e.msg);
    }
}
