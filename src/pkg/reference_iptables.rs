//! The reference plugins' iptables state (upstream's iptables backend, Debian 1.1.1), as far
//! as a node swapped to cni-multi with pods running needs it: finding an attachment's rules
//! and chains, removing them (DEL, GC) and telling whether they are intact (CHECK). Read and
//! deleted over netlink in the iptables-nft tables (`linux::nft::iptables`); nothing is written
//! in the reference's form here.
//!
//! What identifies an attachment (the reference ignores the ifname):
//! - ipMasq (bridge, ptp): nat chain `CNI-<24 hex of sha512(net+cid)>`, entered from POSTROUTING
//!   by `-s <ip> -m comment --comment 'name: "<net>" id: "<cid>"' -j CNI-…`; its own two rules
//!   carry the same comment;
//! - portmap: nat chain `CNI-DN-<21 hex>`, entered from `CNI-HOSTPORT-DNAT` by rules commented
//!   `dnat name: "<net>" id: "<cid>"` (older releases: `CNI-SN-…`, `snat name: …`);
//! - firewall: `CNI-FORWARD` (filter) `-d <ip> -m conntrack … -j ACCEPT` and `-s <ip> -j ACCEPT`,
//!   uncommented: found by the pod's IPs.
//!
//! Shared chains (`CNI-HOSTPORT-*`, `CNI-FORWARD`, `CNI-ADMIN`, isolation stages) stay, as in
//! the reference.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result};
use ipnet::IpNet;

use super::sha512::hex_prefix;
use crate::linux::nft::iptables::{self, IptRule};
use crate::linux::nft::{Batch, NftSocket, Verdict};

/// portmap's keys its iptables rules depend on, as both iptables layouts take them (netlink:
/// `meta::portmap::iptables::Params`; x_tables: `legacy_iptables::Portmap`). `C` is the
/// layout's form of this family's `conditionsV4`/`conditionsV6`.
#[derive(Clone, Copy, Debug)]
pub struct PortmapKeys<'a, C> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub snat: bool,
    /// `masqAll` (upstream v1.6+): the hairpin mark rule matches every source, and there is no
    /// separate localhost rule.
    pub masq_all: bool,
    /// `markMasqBit` (default 13).
    pub mark_bit: u32,
    /// `externalSetMarkChain`: jump there instead of making CNI-HOSTPORT-SETMARK/-MASQ.
    pub external_setmark: Option<&'a str>,
    /// This family's conditions, added to each entry rule after its matches.
    pub conditions: C,
}

pub const NAT: &str = "nat";
pub const FILTER: &str = "filter";
pub const HOSTPORT_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub const CNI_FORWARD: &str = "CNI-FORWARD";

/// Chains the reference shares between attachments: never removed here.
const SHARED: [&str; 9] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-SNAT",
    "CNI-HOSTPORT-SETMARK",
    "CNI-HOSTPORT-MASQ",
    "CNI-FORWARD",
    "CNI-ADMIN",
    "CNI-ISOLATION-STAGE-1",
    "CNI-ISOLATION-STAGE-2",
    "CNI-ISOLATION",
];

/// upstream `utils.MustFormatChainNameWithPrefix`: `CNI-` + prefix + sha512(net+cid) in hex,
/// cut to iptables' 28 characters.
pub fn chain_name(prefix: &str, network: &str, container_id: &str) -> String {
    let head = format!("CNI-{prefix}");
    format!(
        "{head}{}",
        hex_prefix(&format!("{network}{container_id}"), 28 - head.len())
    )
}

/// The ipMasq chain of an attachment.
pub fn masq_chain(network: &str, container_id: &str) -> String {
    chain_name("", network, container_id)
}

/// portmap's per-attachment DNAT chain.
pub fn dnat_chain(network: &str, container_id: &str) -> String {
    chain_name("DN-", network, container_id)
}

/// `utils.FormatComment`: `name: "<net>" id: "<cid>"` (Go's %q; names and IDs that reach a
/// plugin hold no quote or backslash).
pub fn masq_comment(network: &str, container_id: &str) -> String {
    format!("name: \"{network}\" id: \"{container_id}\"")
}

/// portmap's comment on the jumps to its per-attachment chain.
pub fn dnat_comment(network: &str, container_id: &str) -> String {
    format!("dnat {}", masq_comment(network, container_id))
}

/// (network, container ID) of a comment `<kind>name: "<net>" id: "<cid>"`, where kind is ""
/// (ipMasq), "dnat " or "snat " (portmap).
pub fn parse_comment<'a>(comment: &'a str, kind: &str) -> Option<(&'a str, &'a str)> {
    let rest = comment.strip_prefix(kind)?.strip_prefix("name: \"")?;
    let (net, rest) = rest.split_once("\" id: \"")?;
    Some((net, rest.strip_suffix('"')?))
}

/// Whether `chain` is one attachment's own chain (removable), not a shared or built-in one.
fn per_attachment(chain: &str) -> bool {
    chain.starts_with("CNI-") && !SHARED.contains(&chain)
}

/// Where [`plan_nat_removal`] looks.
pub enum Scope<'a> {
    /// Only these chains (DEL: the chains the reference uses for one attachment; fast on a
    /// node whose nat table is large). With `names` given, every rule `pick` selects here
    /// must jump to one of them: a family where none exists is skipped unlisted.
    Chains(&'a [&'a str]),
    /// Every chain of the table (GC).
    Table,
}

/// Adds to `b` the removal, in the nat tables of both families, of the rules `pick` selects by
/// comment, of the per-attachment chains they are in or jump to, of the chains `names` (if they
/// exist) and of every rule (within `scope`) still jumping to a removed chain. Returns how many
/// objects go.
pub fn plan_nat_removal(
    sock: &NftSocket,
    b: &mut Batch,
    scope: Scope,
    pick: &dyn Fn(&str) -> bool,
    names: &[String],
) -> Result<usize> {
    let mut n = 0;
    let what = "could not list the iptables nat rules";
    for v6 in [false, true] {
        let (rules, existing) = match scope {
            Scope::Table => (
                iptables::list_table(sock, v6, NAT).context(what)?,
                iptables::list_chain_names(sock, v6, NAT).context(what)?,
            ),
            Scope::Chains(chains) => {
                let mut existing = Vec::new();
                for c in names {
                    if iptables::chain_exists(sock, v6, NAT, c).context(what)? {
                        existing.push(c.clone());
                    }
                }
                // What DEL picks in these chains are the jumps into the attachment's own
                // chains `names`, and a jump to a missing chain cannot exist: none of them
                // there (a node the reference never ran on) is nothing to find, without
                // listing the shared chains, which grow with the node's other rules.
                if !names.is_empty() && existing.is_empty() {
                    continue;
                }
                let mut list: Vec<&str> = chains.to_vec();
                list.extend(existing.iter().map(String::as_str));
                (
                    iptables::list_chains_rules(sock, v6, NAT, &list).context(what)?,
                    existing,
                )
            }
        };
        let picked: Vec<&IptRule> = rules
            .iter()
            .filter(|r| r.comment.as_deref().is_some_and(pick))
            .collect();
        let mut chains: BTreeSet<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|c| existing.iter().any(|e| e == c))
            .collect();
        for r in &picked {
            chains.extend(r.jump_target().filter(|c| per_attachment(c)));
            if per_attachment(&r.chain) {
                chains.insert(&r.chain);
            }
        }
        // A chain still entered from a rule that is not going (another attachment's, or an
        // operator's) would make the whole batch fail: keep it, and the rules inside it.
        let doomed = |chains: &BTreeSet<&str>, r: &IptRule| {
            picked.iter().any(|p| p.handle == r.handle && p.chain == r.chain)
                || r.jump_target().is_some_and(|t| chains.contains(t))
        };
        let blocked: BTreeSet<&str> = rules
            .iter()
            .filter(|r| !doomed(&chains, r) && !chains.contains(r.chain.as_str()))
            .filter_map(|r| r.jump_target())
            .filter(|t| chains.contains(t))
            .collect();
        chains.retain(|c| !blocked.contains(c));
        let del: Vec<&IptRule> = rules
            .iter()
            .filter(|r| !chains.contains(r.chain.as_str()) && doomed(&chains, r))
            .collect();
        let chains: Vec<&str> = chains.into_iter().collect();
        n += del.len() + chains.len();
        iptables::remove(b, v6, NAT, &del, &chains);
    }
    Ok(n)
}

/// The reference's per-IP accepts in `CNI-FORWARD` (filter, both families) for `ips`, added to
/// `b` for removal. Returns how many rules go.
pub fn plan_forward_removal(sock: &NftSocket, b: &mut Batch, ips: &[IpAddr]) -> Result<usize> {
    let mut n = 0;
    for v6 in [false, true] {
        let mine: Vec<IpAddr> = ips.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        if mine.is_empty() {
            continue;
        }
        let rules = iptables::list_chains_rules(sock, v6, FILTER, &[CNI_FORWARD])
            .context("could not list the iptables filter rules")?;
        let del: Vec<&IptRule> = rules
            .iter()
            .filter(|r| mine.iter().any(|ip| is_forward_accept(r, *ip)))
            .collect();
        n += del.len();
        iptables::remove(b, v6, FILTER, &del, &[]);
    }
    Ok(n)
}

/// `-d <ip> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT` or `-s <ip> -j ACCEPT`.
fn is_forward_accept(r: &IptRule, ip: IpAddr) -> bool {
    let host = |a: Option<iptables::AddrMatch>| a.is_some_and(|a| !a.invert && a.net == IpNet::from(ip));
    let accept = r.target == iptables::IptTarget::Verdict(Verdict::Accept) && r.unknown == 0;
    let to = host(r.dst) && r.src.is_none() && r.matches.len() == 1 && r.has_match("conntrack");
    let from = host(r.src) && r.dst.is_none() && r.matches.is_empty();
    accept && r.proto.is_none() && (to || from)
}

/// The pod addresses the reference's nat state names for an attachment: the sources of its
/// ipMasq entry rules and the DNAT destinations of its portmap chain. (The firewall's accepts
/// carry no comment; this lets its DEL find them without a prevResult.)
pub fn attachment_ips(sock: &NftSocket, network: &str, container_id: &str) -> Result<Vec<IpAddr>> {
    let (comment, dn) = (masq_comment(network, container_id), dnat_chain(network, container_id));
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in iptables::list_chains_rules(sock, v6, NAT, &["POSTROUTING", &dn])? {
            let ip = if r.comment.as_deref() == Some(comment.as_str()) && r.jump_target().is_some() {
                r.src.filter(|s| !s.invert).map(|s| s.net.addr())
            } else if r.chain == dn {
                r.dnat_to().and_then(|d| d.addr)
            } else {
                None
            };
            if let Some(ip) = ip.filter(|ip| !out.contains(ip)) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

// ---- CHECK -------------------------------------------------------------------------------

/// ipMasq for `ip` of the attachment, the reference's way: the POSTROUTING entry rule and a
/// chain that accepts the subnet and masquerades the rest (but multicast).
pub fn masq_intact(sock: &NftSocket, network: &str, container_id: &str, ip: IpNet) -> Result<bool> {
    let v6 = ip.addr().is_ipv6();
    let rules = iptables::list_chains_rules(sock, v6, NAT, &["POSTROUTING"])?;
    let comment = masq_comment(network, container_id);
    let host = IpNet::from(ip.addr());
    let Some(entry) = rules.iter().find(|r| {
        r.chain == "POSTROUTING"
            && r.comment.as_deref() == Some(comment.as_str())
            && r.src
                .is_some_and(|s| !s.invert && (s.net == host || s.net == ip.trunc()))
            && r.jump_target().is_some()
    }) else {
        return Ok(false);
    };
    let inside = iptables::list_chains_rules(sock, v6, NAT, &[entry.jump_target().unwrap_or_default()])?;
    let accept = inside.iter().any(|r| {
        r.dst.is_some_and(|d| !d.invert && d.net == ip.trunc())
            && r.target == iptables::IptTarget::Verdict(Verdict::Accept)
    });
    let masq = inside
        .iter()
        .any(|r| r.dst.is_some_and(|d| d.invert) && r.xt_target().is_some_and(|x| x.name == "MASQUERADE"));
    Ok(accept && masq)
}

/// One port mapping as portmap's CHECK needs it.
#[derive(Clone, Copy, Debug)]
pub struct Forward {
    pub proto: u8,
    pub host_port: u16,
    pub container_port: u16,
    pub host_ip: Option<IpAddr>,
}

/// portmap for container address `cip`, the reference's way: each mapping's host port is in a
/// jump from `CNI-HOSTPORT-DNAT` to the attachment's chain, which DNATs it to `cip`.
pub fn dnat_intact(
    sock: &NftSocket,
    network: &str,
    container_id: &str,
    cip: IpAddr,
    forwards: &[Forward],
) -> Result<bool> {
    let v6 = cip.is_ipv6();
    let (comment, chain) = (dnat_comment(network, container_id), dnat_chain(network, container_id));
    let rules = iptables::list_chains_rules(sock, v6, NAT, &[HOSTPORT_DNAT, &chain])?;
    for f in forwards {
        let jumped = rules.iter().any(|r| {
            r.chain == HOSTPORT_DNAT
                && r.comment.as_deref() == Some(comment.as_str())
                && r.jump_target() == Some(chain.as_str())
                && r.proto == Some(f.proto)
                // iptables-nft releases that translate multiport natively (a set lookup) leave
                // nothing to decode; the DNAT rule below still pins the port.
                && r.multiport_dports().is_none_or(|p| p.contains(&f.host_port))
        });
        let want_dst = f.host_ip.filter(|h| !h.is_unspecified()).map(IpNet::from);
        let dnat = rules.iter().any(|r| {
            r.chain == chain
                && r.proto == Some(f.proto)
                && r.dport == Some(f.host_port)
                && r.dst.map(|d| d.net) == want_dst
                && r.dnat_to()
                    .is_some_and(|d| d.addr == Some(cip) && d.port == Some(f.container_port))
        });
        if !(jumped && dnat) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The firewall's two accepts for `ip`, the reference's way.
pub fn forward_intact(sock: &NftSocket, ip: IpAddr) -> Result<bool> {
    let rules = iptables::list_chains_rules(sock, ip.is_ipv6(), FILTER, &[CNI_FORWARD])?;
    let of = |to: bool| {
        rules
            .iter()
            .filter(|r| is_forward_accept(r, ip))
            .any(|r| r.dst.is_some() == to)
    };
    Ok(of(true) && of(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_reference_makes_them() {
        // Seen with Debian's 1.1.1: network "mynet", container "cid123".
        assert_eq!(masq_chain("mynet", "cid123"), "CNI-3ca866696ff070a963b9d05c");
        assert_eq!(dnat_chain("mynet", "cid123"), "CNI-DN-3ca866696ff070a963b9d");
        assert_eq!(masq_comment("mynet", "cid123"), r#"name: "mynet" id: "cid123""#);
        assert_eq!(parse_comment(&dnat_comment("n", "c"), "dnat "), Some(("n", "c")));
        assert_eq!(parse_comment(&dnat_comment("n", "c"), ""), None);
        assert!(!per_attachment("CNI-HOSTPORT-DNAT") && !per_attachment("POSTROUTING"));
        assert!(per_attachment("CNI-DN-3ca866696ff070a963b9d"));
    }
}
