//! portmap with `backend: "iptables"`: the reference's own iptables rules
//! (`plugins/meta/portmap/portmap_iptables.go`), written over netlink into iptables-nft's `nat`
//! tables, encoded as iptables-nft encodes them (`linux::nft::xt`), so `iptables -t nat -S`
//! shows exactly the reference's and the reference's DEL removes them:
//!
//! ```text
//! -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ  (position 1)
//! -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//! -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! -A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"net\" id: \"cid\"" -m multiport --dports 8080 -j CNI-DN-<h21>
//! -A CNI-DN-<h21> -s 10.88.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK      (snat: hairpin)
//! -A CNI-DN-<h21> -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK      (snat, IPv4: localhost)
//! -A CNI-DN-<h21> -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
//! ```
//!
//! The portmap plugin decides when to call this (and does its own sysctls); this module only
//! writes, removes and checks the rules. `conditionsV4/V6` (raw iptables arguments) are not
//! supported here: the caller refuses them.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

use super::sha512::hex_prefix;
use crate::linux::nft::xt::{self, IptRule};
use crate::linux::nft::{priority, Batch, Chain, ChainType, Expr, Family, Hook, L4Proto, NftSocket, Policy};
use crate::linux::nft::{Position, Rule, Table, Verdict};

pub const TABLE: &str = "nat";
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// The chain of portmap versions before 0.7, removed on DEL like the reference does.
pub const OLD_SNAT_PREFIX: &str = "CNI-SN-";
const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";
/// `1 << RTN_LOCAL` for `-m addrtype --dst-type LOCAL`.
const ADDRTYPE_LOCAL: u16 = 1 << 2;
/// `multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// One mapping, as the portmap plugin validated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub proto: L4Proto,
    pub host_ip: Option<IpAddr>,
}

/// What the rules depend on besides the mappings.
#[derive(Clone, Debug)]
pub struct Params<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub snat: bool,
    /// `markMasqBit` (default 13).
    pub mark_bit: u32,
    /// `externalSetMarkChain`: jump there instead of making CNI-HOSTPORT-SETMARK/-MASQ.
    pub external_setmark: Option<&'a str>,
}

/// `utils.MustFormatChainNameWithPrefix(net, cid, "DN-")`: 28 characters in all.
pub fn dnat_chain_name(network: &str, container_id: &str) -> String {
    format!("CNI-DN-{}", hex_prefix(&format!("{network}{container_id}"), 21))
}

fn old_snat_chain_name(network: &str, container_id: &str) -> String {
    format!(
        "{OLD_SNAT_PREFIX}{}",
        hex_prefix(&format!("{network}{container_id}"), 21)
    )
}

fn proto_name(p: L4Proto) -> &'static str {
    match p {
        L4Proto::Tcp => "tcp",
        L4Proto::Udp => "udp",
        L4Proto::Sctp => "sctp",
    }
}

/// A rule and the compat protocol iptables-nft sends with it (`-p`).
struct Want {
    rule: Rule,
    proto: Option<u8>,
}

/// The objects of one family: (chain, entry chains, entry rules, rules, prepend entry).
struct ChainSpec {
    name: String,
    entry_chains: &'static [&'static str],
    entry_rules: Vec<Want>,
    rules: Vec<Want>,
    prepend_entry: bool,
}

fn plain(rule: Rule) -> Want {
    Want { rule, proto: None }
}

fn setmark_chain(t: &Table, mark: u32) -> ChainSpec {
    ChainSpec {
        name: SETMARK_CHAIN.into(),
        entry_chains: &[],
        entry_rules: vec![],
        rules: vec![plain(
            IptRule::new(t, SETMARK_CHAIN)
                .comment(SETMARK_COMMENT)
                .target(&xt::mark_target(mark, mark)),
        )],
        prepend_entry: false,
    }
}

fn masq_chain(t: &Table, v6: bool, mark: u32) -> ChainSpec {
    ChainSpec {
        name: MASQ_CHAIN.into(),
        entry_chains: &["POSTROUTING"],
        // Prepended so that bridge/ptp's masquerade rules cannot stomp on it.
        prepend_entry: true,
        entry_rules: vec![plain(
            IptRule::new(t, "POSTROUTING").comment(MASQ_COMMENT).jump(MASQ_CHAIN),
        )],
        rules: vec![plain(
            IptRule::new(t, MASQ_CHAIN)
                .mark(mark, mark)
                .target(&xt::masquerade_target(v6)),
        )],
    }
}

fn toplevel_chain(t: &Table) -> ChainSpec {
    let entry = |c: &str| {
        plain(
            IptRule::new(t, c)
                .with(xt::addrtype_dst(ADDRTYPE_LOCAL))
                .jump(DNAT_CHAIN),
        )
    };
    ChainSpec {
        name: DNAT_CHAIN.into(),
        entry_chains: &["PREROUTING", "OUTPUT"],
        entry_rules: vec![entry("PREROUTING"), entry("OUTPUT")],
        rules: vec![],
        prepend_entry: false,
    }
}

/// `fillDnatRules`: the per-container chain, its entry rules (per protocol, sorted, 15 ports
/// each) and per mapping the hairpin and localhost mark rules and the DNAT.
fn dnat_chain(t: &Table, p: &Params, maps: &[Mapping], container: IpNet) -> ChainSpec {
    let v6 = matches!(container, IpNet::V6(_));
    let name = dnat_chain_name(p.network, p.container_id);
    let comment = trim_comment(&format!("dnat name: \"{}\" id: \"{}\"", p.network, p.container_id));
    let setmark = p.external_setmark.unwrap_or(SETMARK_CHAIN);
    let mut protos: Vec<L4Proto> = maps.iter().map(|m| m.proto).collect();
    protos.sort_by_key(|p| proto_name(*p));
    protos.dedup();
    let mut entry_rules = Vec::new();
    for proto in protos {
        let ports: Vec<u16> = maps.iter().filter(|m| m.proto == proto).map(|m| m.host_port).collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            entry_rules.push(Want {
                rule: IptRule::new(t, DNAT_CHAIN)
                    .proto(proto as u8)
                    .comment(&comment)
                    .with(xt::multiport(true, chunk))
                    .jump(&name),
                proto: Some(proto as u8),
            });
        }
    }
    let mut rules = Vec::new();
    for m in maps {
        // A hostIP of the other family skips the mapping; an unspecified one matches any.
        let dst = match m.host_ip {
            Some(ip) if ip.is_ipv6() != v6 => continue,
            Some(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let base = |src: Option<IpNet>| {
            let mut r = IptRule::new(t, &name).proto(m.proto as u8);
            if let Some(s) = src {
                r = r.src(s, false);
            }
            if let Some(d) = dst {
                r = r.dst(d, false);
            }
            r.dport(m.host_port)
        };
        let want = |rule| Want {
            rule,
            proto: Some(m.proto as u8),
        };
        if p.snat {
            rules.push(want(base(Some(container.trunc())).jump(setmark)));
            if !v6 {
                rules.push(want(base(Some("127.0.0.1/32".parse().unwrap())).jump(setmark)));
            }
        }
        rules.push(want(
            base(None).target(&xt::dnat_target(container.addr(), Some(m.container_port))),
        ));
    }
    ChainSpec {
        name,
        entry_chains: &[DNAT_CHAIN],
        entry_rules,
        rules,
        prepend_entry: false,
    }
}

/// `trimComment`: comments are cut to 255 bytes (the xt comment match's limit).
fn trim_comment(c: &str) -> String {
    let mut s = c.to_string();
    if s.len() > 255 {
        let mut n = 255;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    s
}

fn table(v6: bool) -> Table {
    Table::new(if v6 { Family::Ip6 } else { Family::Ip }, TABLE)
}

/// The base chains iptables-nft makes in `nat` (priorities as iptables-nft sets them).
fn base_chain(t: &Table, name: &str) -> Option<Chain> {
    let (hook, prio) = match name {
        "PREROUTING" => (Hook::Prerouting, priority::DSTNAT),
        "INPUT" => (Hook::Input, priority::SRCNAT),
        "OUTPUT" => (Hook::Output, priority::DSTNAT),
        "POSTROUTING" => (Hook::Postrouting, priority::SRCNAT),
        _ => return None,
    };
    Some(Chain::base(t, name, ChainType::Nat, hook, prio, Policy::Accept))
}

struct Ctx<'a> {
    sock: &'a NftSocket,
    t: Table,
    chains: Vec<String>,
    b: Batch,
    /// Rules listed per chain, plus those queued in this batch.
    seen: Vec<(String, Vec<Rule>)>,
}

impl Ctx<'_> {
    fn ensure_chain(&mut self, name: &str) {
        if self.chains.iter().any(|c| c == name) {
            return;
        }
        let c = base_chain(&self.t, name).unwrap_or_else(|| Chain::regular(&self.t, name));
        self.b.add_chain(&c);
        self.chains.push(name.to_string());
    }

    fn rules(&mut self, chain: &str) -> Result<&mut Vec<Rule>> {
        if let Some(i) = self.seen.iter().position(|(c, _)| c == chain) {
            return Ok(&mut self.seen[i].1);
        }
        let have = if self.chains.iter().any(|c| c == chain) {
            self.sock.list_rules(self.t.family, TABLE, chain)?
        } else {
            Vec::new()
        };
        self.seen.push((chain.to_string(), have));
        Ok(&mut self.seen.last_mut().unwrap().1)
    }

    /// The reference's `insertUnique`.
    fn insert_unique(&mut self, w: &Want, prepend: bool) -> Result<()> {
        let have = self.rules(&w.rule.chain)?;
        if have.iter().any(|h| xt::same_rule(&h.exprs, &w.rule.exprs)) {
            return Ok(());
        }
        have.push(w.rule.clone());
        let pos = if prepend { Position::Prepend } else { Position::Append };
        match w.proto {
            Some(p) => self.b.add_rule_compat(&w.rule, pos, p, false),
            None => self.b.add_rule(&w.rule, pos),
        };
        Ok(())
    }

    /// The reference's `chain.setup`: the chain, its rules, then its entry rules.
    fn setup(&mut self, c: &ChainSpec) -> Result<()> {
        self.ensure_chain(&c.name);
        for r in &c.rules {
            self.insert_unique(r, false)?;
        }
        for e in c.entry_chains {
            self.ensure_chain(e);
        }
        for r in &c.entry_rules {
            self.insert_unique(r, c.prepend_entry)?;
        }
        Ok(())
    }

    /// The reference's `chain.teardown`: the jumps to `name` in `entry_chains`, the chain's
    /// rules and the chain.
    fn teardown(&mut self, name: &str, entry_chains: &[&str]) -> Result<()> {
        if !self.chains.iter().any(|c| c == name) {
            return Ok(());
        }
        let jumps = |r: &Rule| {
            r.exprs
                .iter()
                .any(|x| matches!(x, Expr::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) if c == name))
        };
        for e in entry_chains {
            if !self.chains.iter().any(|c| c == e) {
                continue;
            }
            let t = self.t.clone();
            let have = self.rules(e)?;
            let gone: Vec<u64> = have.iter().filter(|r| jumps(r)).filter_map(|r| r.handle).collect();
            // Later insert_unique calls must not take the deleted jumps for present ones.
            have.retain(|r| !jumps(r));
            for h in gone {
                self.b.del_rule(&t, e, h);
            }
        }
        self.b.flush_chain(&self.t, name);
        self.b.del_chain(&self.t, name);
        self.chains.retain(|c| c != name);
        // Known empty from here on (a listing would still show the old rules).
        self.seen.retain(|(c, _)| c != name);
        self.seen.push((name.to_string(), Vec::new()));
        Ok(())
    }
}

/// `create`: queue the table's creation if it is missing (ADD).
fn ctx(sock: &NftSocket, v6: bool, create: bool) -> Result<Ctx<'_>> {
    let t = table(v6);
    let chains: Vec<String> = sock.list_chains(t.family, TABLE)?.into_iter().map(|c| c.name).collect();
    let mut b = Batch::new();
    if create && chains.is_empty() && !sock.table_exists(t.family, TABLE)? {
        b.add_table(&t);
    }
    Ok(Ctx {
        sock,
        t,
        chains,
        b,
        seen: Vec::new(),
    })
}

/// ADD for one container address (the reference's `forwardPorts`), one atomic batch.
pub fn setup(sock: &NftSocket, p: &Params, maps: &[Mapping], container: IpNet) -> Result<()> {
    let v6 = matches!(container, IpNet::V6(_));
    let family = table(v6).family;
    // Committed at the generation of the listings: parallel ADDs share the top-level chains.
    Batch::build_and_commit(sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
        let mut c = ctx(sock, v6, true)?;
        let t = c.t.clone();
        let mark = 1u32 << p.mark_bit;
        if p.snat && p.external_setmark.is_none() {
            c.setup(&setmark_chain(&t, mark))?;
            c.setup(&masq_chain(&t, v6, mark))?;
        }
        c.setup(&toplevel_chain(&t))?;
        let dn = dnat_chain(&t, p, maps, container);
        // A stale chain of the same attachment goes first, as in the reference.
        c.teardown(&dn.name, &[DNAT_CHAIN])?;
        c.setup(&dn)?;
        *b = std::mem::take(&mut c.b);
        Ok(())
    })
    .with_context(|| format!("failed to set up port mappings (iptables, {family})"))
}

/// DEL (the reference's `unforwardPorts`): in both families the attachment's DNAT chain with
/// the jumps to it, and the chain of old versions; shared chains stay.
pub fn teardown(sock: &NftSocket, network: &str, container_id: &str) -> Result<()> {
    for v6 in [false, true] {
        let mut c = ctx(sock, v6, false)?;
        c.teardown(&dnat_chain_name(network, container_id), &[DNAT_CHAIN])?;
        c.teardown(&old_snat_chain_name(network, container_id), &["POSTROUTING"])?;
        if !c.b.is_empty() {
            c.b.commit(sock).context("failed to remove port mappings (iptables)")?;
        }
    }
    Ok(())
}

/// CHECK (the reference's `checkPorts`): the DNAT chain, its rules and entry rules.
pub fn check(sock: &NftSocket, p: &Params, maps: &[Mapping], container: IpNet) -> Result<()> {
    let v6 = matches!(container, IpNet::V6(_));
    let t = table(v6);
    let dn = dnat_chain(&t, p, maps, container);
    if !sock.chain_exists(t.family, TABLE, &dn.name)? {
        bail!(
            "could not check dnat chain: chain {} does not exist in {} {TABLE}",
            dn.name,
            t.family
        );
    }
    let have = sock.list_rules(t.family, TABLE, &dn.name)?;
    let entry = sock.list_rules(t.family, TABLE, DNAT_CHAIN)?;
    for w in dn.rules.iter().chain(&dn.entry_rules) {
        let pool = if w.rule.chain == DNAT_CHAIN { &entry } else { &have };
        if !pool.iter().any(|h| xt::same_rule(&h.exprs, &w.rule.exprs)) {
            bail!(
                "could not check dnat chain: a rule of {} is missing in {} {TABLE}",
                w.rule.chain,
                t.family
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_name_matches_the_reference() {
        // Seen from the reference portmap: network "pmnet", container "abc123".
        assert_eq!(dnat_chain_name("pmnet", "abc123"), "CNI-DN-b5380f05ebb61736bc431");
    }
}
