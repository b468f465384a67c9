//! portmap's nftables layout: upstream v1.9's nftables backend
//! (`plugins/meta/portmap/portmap_nftables.go`), byte for byte where a swap can see it, over
//! netlink:
//!
//! ```text
//! table ip cni_hostport {                      (and table ip6 cni_hostport)
//!     comment "CNI portmap plugin"
//!     chain hostports        { tcp dport 8080 dnat to 10.88.0.5:80 comment "<containerID>"
//!                              ip daddr 192.0.2.1 tcp dport 8081 dnat to 10.88.0.5:81 comment "<containerID>" }
//!     chain hostip_hostports { }                  (v1.9 keeps it, empty, for older versions' rules)
//!     chain hostports_all    { jump hostip_hostports; jump hostports }
//!     chain prerouting  { type nat hook prerouting priority dstnat; [conditions] fib daddr type local jump hostports_all }
//!     chain output      { type nat hook output priority -100;       [conditions] fib daddr type local jump hostports_all }
//!     chain masquerading { type nat hook postrouting priority srcnat;
//!         ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade comment "<containerID>"   (hairpin; masqAll: saddr 0.0.0.0/0)
//!         ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade comment "<containerID>" } (IPv4, not masqAll)
//! }
//! ```
//!
//! Every rule carries the bare container ID, as upstream writes it, so upstream's DEL (by
//! comment) removes ours and ours removes upstream's. The attachment (network, ifname) is not
//! in the comment: it is in the records (`nft_records`, keyed by attachment, labelled with the
//! container ID), which is how ADD and DEL leave another attachment of the same container
//! alone and how GC tells networks apart. Rules no record claims (made by upstream's binary,
//! or before a crash) belong to their container: the per-container record
//! [`unclaimed_key`] holds them, and ADD and DEL of any attachment of that container remove
//! them, as upstream's DEL would. Rules of cni-multi before 2026-12 (comment
//! `<containerID>, nethash: <h16>, if: <ifname>`, host-IP mappings in `hostip_hostports`) are
//! found and removed too.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

use super::Mapping;
use crate::cni::error::CniError;
use crate::linux::nft::{
    nat_flags, priority, rtn, Batch, Chain, ChainType, CmpOp, Expr, Family, Hook, NftSocket, Policy, Position, Rule,
    RuleBuilder, Table,
};
use crate::pkg::comment::{record_key, rule_comment};
use crate::pkg::nft_records::{self as records, Attribution, Cache};

pub const TABLE: &str = "cni_hostport";
const TABLE_COMMENT: &str = "CNI portmap plugin";
pub const HOSTPORTS: &str = "hostports";
pub const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
pub const HOSTPORTS_ALL: &str = "hostports_all";
pub const MASQUERADING: &str = "masquerading";
/// The chains that hold per-container rules.
const RULE_CHAINS: [&str; 3] = [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING];
/// The shared base-chain rules (their handles are the records' stamp).
const SHARED_CHAINS: [&str; 3] = [HOSTPORTS_ALL, "prerouting", "output"];
/// The network hash of the per-container records of rules no attachment claims.
const UNCLAIMED_NET: &str = "0000000000000000";

/// One attachment, as the rules and records know it.
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Attachment<'_> {
    pub fn key(&self) -> String {
        super::attachment_key(self.network, self.ifname, self.container_id)
    }

    /// The comment of cni-multi's releases before upstream's layout.
    fn old_comment(&self) -> String {
        rule_comment(self.network, self.container_id, self.ifname)
    }

    /// Whether a rule's comment makes it this attachment's (or its container's).
    fn owns(&self, c: &str) -> bool {
        c == self.container_id || c == self.old_comment()
    }
}

/// The record of a container's rules that no attachment's record claims.
pub fn unclaimed_key(container_id: &str) -> String {
    records::key(UNCLAIMED_NET, "", container_id)
}

/// Who a rule no record claims belongs to: an old comment names its attachment; any other
/// comment in these chains is a container ID (ours or upstream's).
fn unclaimed(c: &str) -> Option<Option<(String, String)>> {
    match record_key(c) {
        Some(k) => Some(k.map(|k| (k, c.to_string()))),
        None => Some(Some((unclaimed_key(c), c.to_string()))),
    }
}

// ---- conditions ---------------------------------------------------------------------------

/// One match of `conditionsV4`/`conditionsV6` in nft syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    Iifname(CmpOp, String),
    Oifname(CmpOp, String),
    Addr { src: bool, op: CmpOp, net: IpNet },
}

/// Parses the subset of nft match syntax cni-multi can encode: `[meta] iifname|oifname [!=] NAME`
/// and `ip|ip6 saddr|daddr [!=] ADDR[/LEN]` (upstream hands the text to `nft`). Anything else is
/// code 7 naming the key.
pub fn parse_conditions(which: &str, conds: &[String], v6: bool) -> Result<Vec<Cond>> {
    let joined = conds.join(" ");
    let mut toks = joined.split_whitespace().map(|t| t.trim_matches('"')).peekable();
    let mut out = Vec::new();
    let bad = |t: &str| -> anyhow::Error {
        CniError::invalid_config(format!(
            "{which}: unsupported nft match at {t:?} (supported: [meta] iifname|oifname [!=] NAME, \
             ip|ip6 saddr|daddr [!=] ADDR[/LEN])"
        ))
        .into()
    };
    fn op<'a>(toks: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>) -> CmpOp {
        match toks.next_if(|t| *t == "!=" || *t == "==") {
            Some("!=") => CmpOp::Neq,
            _ => CmpOp::Eq,
        }
    }
    while let Some(t) = toks.next() {
        let t = if t == "meta" {
            toks.next().ok_or_else(|| bad("meta"))?
        } else {
            t
        };
        match t {
            "iifname" | "oifname" => {
                let o = op(&mut toks);
                let name = toks.next().ok_or_else(|| bad(t))?.to_string();
                if name.is_empty() || name.len() > 15 {
                    return Err(bad(&name));
                }
                out.push(if t == "iifname" {
                    Cond::Iifname(o, name)
                } else {
                    Cond::Oifname(o, name)
                });
            }
            "ip" | "ip6" => {
                if (t == "ip6") != v6 {
                    bail!(CniError::invalid_config(format!(
                        "{which}: {t} match in the wrong address family"
                    )));
                }
                let field = toks.next().ok_or_else(|| bad(t))?;
                let src = match field {
                    "saddr" => true,
                    "daddr" => false,
                    other => return Err(bad(&format!("{t} {other}"))),
                };
                let o = op(&mut toks);
                let a = toks.next().ok_or_else(|| bad(field))?;
                let net = a
                    .parse::<IpNet>()
                    .or_else(|_| a.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| bad(a))?;
                if net.addr().is_ipv6() != v6 {
                    bail!(CniError::invalid_config(format!(
                        "{which}: address {a} of the wrong family"
                    )));
                }
                out.push(Cond::Addr { src, op: o, net });
            }
            other => return Err(bad(other)),
        }
    }
    Ok(out)
}

fn apply_conditions(mut rb: RuleBuilder, conds: &[Cond]) -> RuleBuilder {
    for c in conds {
        rb = match c {
            Cond::Iifname(op, n) => rb.iifname(*op, n),
            Cond::Oifname(op, n) => rb.oifname(*op, n),
            Cond::Addr { src: true, op, net } => rb.saddr(*op, *net),
            Cond::Addr { src: false, op, net } => rb.daddr(*op, *net),
        };
    }
    rb
}

// ---- the rules ----------------------------------------------------------------------------

/// What the per-container rules depend on.
pub struct Params<'a> {
    pub snat: bool,
    pub masq_all: bool,
    pub mappings: &'a [Mapping],
    /// This family's conditions.
    pub conds: &'a [Cond],
}

pub fn table(v6: bool) -> Table {
    Table::new(if v6 { Family::Ip6 } else { Family::Ip }, TABLE).with_comment(TABLE_COMMENT)
}

/// The per-container rules of one family, in upstream's order (`forwardPorts`,
/// portmap_nftables.go v1.9.1 lines 187-251; masqAll as on upstream's main since 3d27709f).
pub fn container_rules(p: &Params, cip: IpAddr, container_id: &str) -> Vec<Rule> {
    let v6 = cip.is_ipv6();
    let t = table(v6);
    let mut out = Vec::new();
    for m in p.mappings {
        let host_ip = match m.host_ip {
            // A hostIP of the other family belongs to the other table.
            Some(h) if h.is_ipv6() != v6 => continue,
            Some(h) if h.is_unspecified() => None,
            h => h,
        };
        // v1.9 puts host-IP mappings into `hostports` too ("we want to remove
        // 'hostip_hostports' long-term").
        let mut rb = RuleBuilder::new(&t, HOSTPORTS);
        if let Some(h) = host_ip {
            rb = rb.daddr(CmpOp::Eq, h);
        }
        out.push(
            rb.dport(m.proto, CmpOp::Eq, m.host_port)
                .dnat(cip, Some(m.container_port))
                .comment(container_id)
                .build(),
        );
    }
    if p.snat {
        // Hairpin (the pod reaching itself through the host port) and, for IPv4, localhost
        // traffic need the source rewritten, or the reply would bypass the DNAT.
        let src = if p.masq_all {
            IpNet::new(cip, 0).unwrap()
        } else {
            IpNet::from(cip)
        };
        out.push(
            RuleBuilder::new(&t, MASQUERADING)
                .saddr(CmpOp::Eq, src)
                .daddr(CmpOp::Eq, cip)
                .masquerade()
                .comment(container_id)
                .build(),
        );
        if !v6 && !p.masq_all {
            let lo: IpAddr = "127.0.0.1".parse().unwrap();
            out.push(
                RuleBuilder::new(&t, MASQUERADING)
                    .saddr(CmpOp::Eq, lo)
                    .daddr(CmpOp::Eq, cip)
                    .masquerade()
                    .comment(container_id)
                    .build(),
            );
        }
    }
    out
}

/// The shared rules of one family: `hostports_all`'s two jumps, `prerouting`'s and `output`'s
/// entry rule (portmap_nftables.go v1.9.1 lines 119-176).
fn shared_rules(t: &Table, conds: &[Cond]) -> Vec<(&'static str, Vec<Rule>)> {
    let all = [HOSTIP_HOSTPORTS, HOSTPORTS]
        .into_iter()
        .map(|target| RuleBuilder::new(t, HOSTPORTS_ALL).jump(target).build())
        .collect();
    let entry = |c: &str| {
        vec![apply_conditions(RuleBuilder::new(t, c), conds)
            .fib_daddr_type(rtn::LOCAL)
            .jump(HOSTPORTS_ALL)
            .build()]
    };
    vec![
        (HOSTPORTS_ALL, all),
        ("prerouting", entry("prerouting")),
        ("output", entry("output")),
    ]
}

// ---- ADD ----------------------------------------------------------------------------------

/// One atomic batch per family: the table's skeleton (shared chains rebuilt only where they
/// differ), this attachment's old rules and its container's unclaimed ones out, its new rules
/// in. The old rules come from the records while the stamp holds, else from a dump of the
/// per-container chains.
pub fn forward_ports(sock: &NftSocket, p: &Params, a: &Attachment, cip: IpAddr) -> Result<()> {
    let v6 = cip.is_ipv6();
    let t = table(v6);
    let key = a.key();
    let orphans = unclaimed_key(a.container_id);
    let mut cache = Cache::open(sock, t.family, TABLE);
    let mut b = Batch::new();
    b.add_table(&t);
    for c in [HOSTPORTS, HOSTIP_HOSTPORTS, HOSTPORTS_ALL] {
        b.add_chain(&Chain::regular(&t, c));
    }
    let mut shared = Vec::new();
    for (name, rules) in shared_rules(&t, p.conds) {
        if name != HOSTPORTS_ALL {
            let hook = if name == "prerouting" {
                Hook::Prerouting
            } else {
                Hook::Output
            };
            b.add_chain(&Chain::base(
                &t,
                name,
                ChainType::Nat,
                hook,
                priority::DSTNAT,
                Policy::Accept,
            ));
        }
        // Rebuilt only when it differs from what this config wants: a rebuild frees rules,
        // and that makes the socket's close wait a whole RCU grace period.
        shared.push(rebuild_if_different(sock, &mut b, &t, name, &rules)?);
    }
    if p.snat {
        b.add_chain(&Chain::srcnat(&t, MASQUERADING));
    }
    let listed: Vec<u64> = shared.iter().flat_map(|s| s.listed.iter().copied()).collect();
    cache.stamp_with(listed);
    let ours = |c: &str| a.owns(c);
    let theirs = |c: &str| c == a.container_id;
    let (stale, complete) = match (cache.lookup(&key, &ours, true)?, cache.lookup(&orphans, &theirs, true)?) {
        (Some(mine), Some(unclaimed)) => (union(mine, unclaimed), true),
        _ => {
            let (all, complete) = cache.dump(
                &[&key, &orphans],
                || own_rules(sock, t.family),
                Attribution::ByRecord(&unclaimed),
            )?;
            let mine = all
                .into_iter()
                .filter(|(_, k)| k.as_deref().is_some_and(|k| k == key || k == orphans))
                .map(|(r, _)| r)
                .collect();
            (mine, complete)
        }
    };
    delete_into(&mut b, t.family, &stale);
    let first = b.len();
    let mine = container_rules(p, cip, a.container_id);
    for r in &mine {
        b.add_rule(r, Position::Append);
    }
    cache.pending(&key);
    let handles = b
        .commit_echo(sock)
        .context("unable to set up nftables rules for port mappings")?;
    let made = records::echoed(&handles, first, mine.len(), |i| mine[i].chain.clone());
    // The shared rules' handles now: as listed, or as the kernel gave the rebuilt ones.
    let now: Option<Vec<u64>> = shared
        .iter()
        .map(|s| match s.rebuilt_at {
            None => Some(s.listed.clone()),
            Some((i, n)) => handles.get(i..i + n)?.iter().copied().collect(),
        })
        .collect::<Option<Vec<Vec<u64>>>>()
        .map(|v| v.concat());
    cache.committed(&key, Some(a.container_id), made, now, complete);
    cache.forget(&orphans);
    Ok(())
}

/// The rules of both lists, each once (a rule may be in a record and, found by a concurrent
/// dump before that record was written, in its container's unclaimed record too).
fn union(mut a: Vec<Rule>, b: Vec<Rule>) -> Vec<Rule> {
    for r in b {
        if !a.iter().any(|x| x.handle == r.handle && x.chain == r.chain) {
            a.push(r);
        }
    }
    a
}

/// A shared chain as ADD found it: its rules' handles, and where in the batch its rebuilt
/// rules are (index, count) when it had to be rebuilt.
struct Shared {
    listed: Vec<u64>,
    rebuilt_at: Option<(usize, usize)>,
}

/// Flush and refill `chain` in the batch unless it already holds exactly `rules`.
fn rebuild_if_different(sock: &NftSocket, b: &mut Batch, t: &Table, chain: &str, rules: &[Rule]) -> Result<Shared> {
    let have = sock.list_rules(t.family, &t.name, chain)?;
    let same = have.len() == rules.len()
        && have
            .iter()
            .zip(rules)
            .all(|(h, e)| h.exprs == e.exprs && h.comment == e.comment);
    let mut rebuilt_at = None;
    if !same {
        b.flush_chain(t, chain);
        rebuilt_at = Some((b.len(), rules.len()));
        for r in rules {
            b.add_rule(r, Position::Append);
        }
    }
    Ok(Shared {
        listed: records::base_handles(&have),
        rebuilt_at,
    })
}

/// Every commented rule of the per-container chains of one family (comments only).
fn own_rules(sock: &NftSocket, fam: Family) -> Result<Vec<Rule>> {
    own_rules_with(sock, fam, false)
}

/// [`own_rules`], with the rules' expressions decoded when `exprs` is set (CHECK compares
/// them; finding rules by comment does not need them).
fn own_rules_with(sock: &NftSocket, fam: Family, exprs: bool) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for chain in RULE_CHAINS {
        let listed = if exprs {
            sock.list_rules(fam, TABLE, chain)
        } else {
            sock.list_rule_comments(fam, TABLE, chain)
        };
        let rules = listed.with_context(|| format!("could not list rules of {fam} {TABLE} {chain}"))?;
        out.extend(rules.into_iter().filter(|r| r.comment.is_some()));
    }
    Ok(out)
}

fn delete_into(b: &mut Batch, fam: Family, rules: &[Rule]) {
    let t = Table::new(fam, TABLE);
    for r in rules {
        if let Some(h) = r.handle {
            b.del_rule(&t, &r.chain, h);
        }
    }
}

// ---- DEL ----------------------------------------------------------------------------------

/// Queues into `b` the removal of the attachment's rules in one family and of its
/// container's unclaimed ones (upstream's or a crashed ADD's): by record while the stamp
/// holds, else found in a dump. With complete records and none for the attachment, it has no
/// rules, unless `mapped` (the DEL config carries port mappings, so it had some: a lost
/// record is then looked for in a dump). Returns how many rules go.
pub fn plan_del(sock: &NftSocket, b: &mut Batch, fam: Family, a: &Attachment, mapped: bool) -> Result<usize> {
    if !sock.table_exists(fam, TABLE)? {
        return Ok(0);
    }
    let key = a.key();
    let orphans = unclaimed_key(a.container_id);
    let mut cache = Cache::open(sock, fam, TABLE);
    let mut listed = Vec::new();
    for chain in SHARED_CHAINS {
        match sock.list_rules(fam, TABLE, chain) {
            Ok(rules) => listed.extend(records::base_handles(&rules)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    cache.stamp_with(listed);
    let ours = |c: &str| a.owns(c);
    let theirs = |c: &str| c == a.container_id;
    let rules = match (
        cache.lookup(&key, &ours, !mapped)?,
        cache.lookup(&orphans, &theirs, true)?,
    ) {
        (Some(mine), Some(unclaimed)) => union(mine, unclaimed),
        _ => {
            let (all, _) = cache.dump(
                &[&key, &orphans],
                || own_rules(sock, fam),
                Attribution::ByRecord(&unclaimed),
            )?;
            all.into_iter()
                .filter(|(_, k)| k.as_deref().is_some_and(|k| k == key || k == orphans))
                .map(|(r, _)| r)
                .collect()
        }
    };
    delete_into(b, fam, &rules);
    Ok(rules.len())
}

/// After DEL's commit (or ADD's rollback): the attachment's and its container's unclaimed
/// records go.
pub fn forget(sock: &NftSocket, fam: Family, a: &Attachment) {
    let cache = Cache::open(sock, fam, TABLE);
    cache.forget(&a.key());
    cache.forget(&unclaimed_key(a.container_id));
}

// ---- CHECK --------------------------------------------------------------------------------

/// Every rule ADD would make for these mappings exists, expression for expression, with the
/// container's comment; or (rules of cni-multi's older layout) as many as upstream's CHECK
/// counts. The error names the first missing rule.
pub fn check(sock: &NftSocket, p: &Params, a: &Attachment, cip: IpAddr) -> Result<()> {
    let fam = table(cip.is_ipv6()).family;
    let have = own_rules_with(sock, fam, true)?;
    let missing = container_rules(p, cip, a.container_id).into_iter().find(|want| {
        !have.iter().any(|r| {
            r.chain == want.chain && r.comment.as_deref() == Some(a.container_id) && same_exprs(&r.exprs, &want.exprs)
        })
    });
    let Some(want) = missing else {
        return Ok(());
    };
    // upstream's checkPortsAgainstRules (portmap_nftables.go v1.9.1 lines 261-320), for the
    // older comment: enough rules in each chain.
    let old = a.old_comment();
    let count = |chains: &[&str]| {
        have.iter()
            .filter(|r| chains.contains(&r.chain.as_str()) && r.comment.as_deref() == Some(old.as_str()))
            .count()
    };
    let ports = p
        .mappings
        .iter()
        .filter(|m| m.host_ip.is_none_or(|h| h.is_ipv6() == cip.is_ipv6()))
        .count();
    let masq = if !p.snat {
        0
    } else if cip.is_ipv4() && !p.masq_all {
        2
    } else {
        1
    };
    if count(&[HOSTPORTS, HOSTIP_HOSTPORTS]) >= ports && count(&[MASQUERADING]) >= masq && ports + masq > 0 {
        return Ok(());
    }
    bail!(
        "missing hostport rule in {fam} {TABLE} {}: {:?}",
        want.chain,
        want.comment.as_deref().unwrap_or("")
    )
}

/// Compares expressions ignoring counters (the kernel fills in their values) and the
/// MAP_IPS flag the kernel adds to a nat with an address.
fn same_exprs(a: &[Expr], b: &[Expr]) -> bool {
    let strip = |v: &[Expr]| -> Vec<Expr> {
        v.iter()
            .filter(|e| !matches!(e, Expr::Counter { .. }))
            .map(|e| {
                let mut e = e.clone();
                if let Expr::Nat { flags, .. } = &mut e {
                    *flags &= !nat_flags::MAP_IPS;
                }
                e
            })
            .collect()
    };
    strip(a) == strip(b)
}

// ---- GC -----------------------------------------------------------------------------------

/// Queues into `b` the removal of the rules of `network`'s attachments not in `keep` (their
/// record keys): by their records, and, for cni-multi's older comments (which name the
/// network), by a dump. Upstream's rules (no record) name no network and stay. Returns the
/// keys whose records go after the commit.
pub fn plan_gc(
    sock: &NftSocket,
    b: &mut Batch,
    fam: Family,
    network_hash: &str,
    keep: &[String],
) -> Result<Vec<String>> {
    if !sock.table_exists(fam, TABLE)? {
        return Ok(Vec::new());
    }
    let cache = Cache::open(sock, fam, TABLE);
    let stale = cache.stale_keys(&format!("{network_hash}-"), keep);
    let mut doomed = Vec::new();
    for k in &stale {
        let rules = cache.surviving(k, &|c, label| match label {
            Some(l) => c == l,
            None => record_key(c) == Some(Some(k.clone())),
        })?;
        doomed = union(doomed, rules);
    }
    let old = own_rules(sock, fam)?.into_iter().filter(|r| {
        r.comment
            .as_deref()
            .and_then(record_key)
            .flatten()
            .is_some_and(|k| k.starts_with(&format!("{network_hash}-")) && !keep.contains(&k))
    });
    doomed = union(doomed, old.collect());
    delete_into(b, fam, &doomed);
    Ok(stale)
}

/// After GC's commit.
pub fn forget_keys(sock: &NftSocket, fam: Family, keys: &[String]) {
    let cache = Cache::open(sock, fam, TABLE);
    for k in keys {
        cache.forget(k);
    }
}
