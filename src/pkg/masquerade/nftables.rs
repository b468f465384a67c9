//! ipMasq in the nftables layout: upstream's nftables backend (v1.9.1
//! `pkg/ip/ipmasq_nftables_linux.go`), same table, chains, rules and comments, so that
//! upstream's DEL and GC find a cni-multi pod's rules and ours find an upstream pod's:
//!
//! ```text
//! table inet cni_plugins_masquerade {                                  (comment: TABLE_COMMENT)
//!     chain masq_checks {                                              (comment: CHAIN_COMMENT)
//!         ip saddr 10.88.0.5 ip daddr != 10.88.0.0/16 masquerade comment "<h16(net)>-<h16(if:cid)>, net: …, if: …, id: …"
//!     }
//!     chain postrouting {
//!         type nat hook postrouting priority srcnat; policy accept;
//!         ip daddr 224.0.0.0/4 return
//!         ip6 daddr ff00::/8 return
//!         goto masq_checks
//!     }
//! }
//! ```
//!
//! Every rule is found again by its comment, whose first 33 characters are a hash of the
//! network and of the (ifname, containerID) attachment. So DEL needs neither the netns nor the
//! IPs, and GC can tell which attachments a rule belongs to. ADD and DEL use the handles
//! recorded at ADD (`pkg::nft_records`) while the stamp (the handles of `postrouting`'s three
//! rules, which upstream rebuilds on every ADD) holds.

use anyhow::{Context, Result};
use ipnet::IpNet;

use crate::linux::nft::{Batch, Chain, CmpOp, Expr, Family, NftSocket, Position, Rule};
use crate::linux::nft::{RuleBuilder, Table};
use crate::pkg::nft_records::{self as records, Recorded, Records};
use crate::pkg::sha512::hex_prefix;

use super::Attachment;

pub const TABLE: &str = "cni_plugins_masquerade";
/// v1.9.1 ipmasq_nftables_linux.go:94.
pub const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
pub const CHAIN: &str = "masq_checks";
/// v1.9.1 ipmasq_nftables_linux.go:98.
pub const CHAIN_COMMENT: &str = "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";
pub const POSTROUTING: &str = "postrouting";
/// `knftables.CommentLengthMax`, also what `nft` accepts.
const COMMENT_MAX: usize = 128;

fn table() -> Table {
    Table::new(Family::Inet, TABLE).with_comment(TABLE_COMMENT)
}

/// `h16(network)`: the prefix every rule of a network carries.
pub fn hash_for_network(network: &str) -> String {
    hex_prefix(network, 16)
}

/// `h16(network)-h16(ifname:containerID)`: the prefix of one attachment's rules.
pub fn hash_for_instance(network: &str, ifname: &str, container_id: &str) -> String {
    records::key(&hash_for_network(network), ifname, container_id)
}

/// The rule comment: the instance hash, then a human description, cut to 128 bytes.
pub fn comment_for_instance(network: &str, ifname: &str, container_id: &str) -> String {
    let strip = |s: &str| s.replace('"', "");
    let mut c = format!(
        "{}, net: {}, if: {}, id: {}",
        hash_for_instance(network, ifname, container_id),
        strip(network),
        strip(ifname),
        strip(container_id)
    );
    truncate(&mut c, COMMENT_MAX);
    c
}

pub(crate) fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut n = max;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
}

/// The masquerade rules of `masq_checks` whose comment starts with `prefix` (a dump).
fn find_rules(sock: &NftSocket, prefix: &str) -> Result<Vec<Rule>> {
    let rules = sock
        .list_rule_comments(Family::Inet, TABLE, CHAIN)
        .context("could not list the masquerade rules")?;
    Ok(rules
        .into_iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(prefix)))
        .collect())
}

fn records(sock: &NftSocket) -> Records {
    Records::open(sock, Family::Inet, TABLE)
}

/// The attachment's rules from its record, when the stamp says the records are complete
/// (`stamped`) and the record checks out; `None`: dump.
fn recorded(sock: &NftSocket, rec: &Records, key: &str, stamped: bool, add: bool) -> Result<Option<Vec<Rule>>> {
    if !stamped {
        return Ok(None);
    }
    match rec.get(key) {
        // Complete records and none for this attachment: it has no rules (ADD). DEL still
        // dumps: a lost record must not leave rules behind.
        Recorded::Missing if add => Ok(Some(Vec::new())),
        Recorded::Rules(r) => records::verify(sock, Family::Inet, TABLE, &r, &|c| c.starts_with(key)),
        _ => Ok(None),
    }
}

/// The dump ADD falls back to: the attachment's rules, and every attachment's record written
/// again from it. True in the second place when the records are now complete (the ruleset
/// did not change during the dump).
fn dump_and_rerecord(sock: &NftSocket, rec: &Records, key: &str) -> Result<(Vec<Rule>, bool)> {
    let gen = sock.generation()?;
    let all = find_rules(sock, "")?;
    let key_of = |c: &str| c.get(..33).filter(|k| records::is_key(k)).map(|k| Some(k.to_string()));
    let complete = sock.generation()? == gen && records::rerecord(rec, &all, key, &key_of);
    let mine = all
        .into_iter()
        .filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(key)))
        .collect();
    Ok((mine, complete))
}

/// Masquerade traffic from each of `ips` to anything outside its subnet (and not multicast),
/// for the attachment (network, ifname, container_id). Replaces that attachment's earlier rules.
/// One atomic batch, applied through `sock` (a socket in the node's netns, where the rules live).
pub fn setup(sock: &NftSocket, network: &str, ifname: &str, container_id: &str, ips: &[IpNet]) -> Result<()> {
    let key = hash_for_instance(network, ifname, container_id);
    let rec = records(sock);
    let t = table();
    let mut b = Batch::new();
    b.add_table(&t);
    b.add_chain(&Chain::regular(&t, CHAIN).with_comment(CHAIN_COMMENT));
    b.add_chain(&Chain::srcnat(&t, POSTROUTING));
    // The base chain must have exactly this shape; upstream flushes and rebuilds it on
    // every ADD, which here is done only when it differs (a rebuild frees rules, and that
    // makes the socket's close wait a whole RCU grace period).
    let multicast4: IpNet = "224.0.0.0/4".parse().unwrap();
    let multicast6: IpNet = "ff00::/8".parse().unwrap();
    let mut base: Vec<Rule> = [multicast4, multicast6]
        .into_iter()
        .map(|net| RuleBuilder::new(&t, POSTROUTING).daddr(CmpOp::Eq, net).ret().build())
        .collect();
    base.push(RuleBuilder::new(&t, POSTROUTING).goto(CHAIN).build());
    let listed = sock
        .list_rules(Family::Inet, TABLE, POSTROUTING)
        .context("could not list the masquerade base chain")?;
    let stamped = rec.stamp_matches(&records::base_handles(&listed));
    let (stale, complete) = match recorded(sock, &rec, &key, stamped, true)? {
        Some(r) => (r, stamped),
        None => dump_and_rerecord(sock, &rec, &key)?,
    };
    let mut base_at = None;
    if !holds(&listed, &base) {
        b.flush_chain(&t, POSTROUTING);
        base_at = Some(b.len());
        for r in &base {
            b.add_rule(r, Position::Append);
        }
    }
    for r in &stale {
        if let Some(h) = r.handle {
            b.del_rule(&t, CHAIN, h);
        }
    }
    let comment = comment_for_instance(network, ifname, container_id);
    let first = b.len();
    for ip in ips {
        b.add_rule(&masq_rule(ip, &comment), Position::Append);
    }
    rec.put_pending(&key);
    let handles = b
        .commit_echo(sock)
        .with_context(|| format!("failed to set up IP masquerading for {container_id}/{ifname}"))?;
    let echoed = |from: usize, n: usize| -> Option<Vec<u64>> { handles.get(from..from + n)?.iter().copied().collect() };
    match echoed(first, ips.len()) {
        Some(hs) if !hs.is_empty() => rec.put(
            &key,
            &hs.into_iter().map(|h| (CHAIN.to_string(), h)).collect::<Vec<_>>(),
        ),
        _ => rec.forget(&key),
    }
    let base_now = match base_at {
        Some(i) => echoed(i, base.len()),
        None => Some(records::base_handles(&listed)),
    };
    match base_now {
        Some(_) if stamped && base_at.is_none() => {} // as it was
        Some(hs) if complete => rec.put_stamp(&hs),
        _ => rec.forget_stamp(),
    }
    Ok(())
}

/// Whether the listed rules are exactly `expected` (expressions and comments, in order).
fn holds(have: &[Rule], expected: &[Rule]) -> bool {
    have.len() == expected.len()
        && have
            .iter()
            .zip(expected)
            .all(|(h, e)| h.exprs == e.exprs && h.comment == e.comment)
}

/// The rule ADD makes for one address of the attachment.
fn masq_rule(ip: &IpNet, comment: &str) -> Rule {
    RuleBuilder::new(&table(), CHAIN)
        .saddr(CmpOp::Eq, ip.addr())
        .daddr(CmpOp::Neq, ip.trunc())
        .masquerade()
        .comment(comment)
        .build()
}

/// CHECK: every one of `ips` is masqueraded for the attachment by its rule in `masq_checks`.
pub fn check(sock: &NftSocket, network: &str, ifname: &str, container_id: &str, ips: &[IpNet]) -> Result<()> {
    let comment = comment_for_instance(network, ifname, container_id);
    let ours = sock
        .list_rules(Family::Inet, TABLE, CHAIN)
        .context("could not list the masquerade rules")?;
    let missing = ips
        .iter()
        .filter(|ip| {
            let want = masq_rule(ip, &comment);
            !ours
                .iter()
                .any(|r| r.comment == want.comment && same_exprs(&r.exprs, &want.exprs))
        })
        .count();
    if missing > 0 {
        anyhow::bail!(
            "IP masquerading for {container_id}/{ifname}: {missing} of {} address(es) have no rule in inet {TABLE} {CHAIN}",
            ips.len()
        );
    }
    Ok(())
}

/// Expressions equal but for counters (the kernel fills in their values).
fn same_exprs(a: &[Expr], b: &[Expr]) -> bool {
    let strip = |v: &[Expr]| -> Vec<Expr> {
        v.iter()
            .filter(|e| !matches!(e, Expr::Counter { .. }))
            .cloned()
            .collect()
    };
    strip(a) == strip(b)
}

/// DEL: queues into `b` the removal of the attachment's rules (its record's, while the stamp
/// holds, else found by a dump of `masq_checks`). Needs neither the container's netns nor its
/// IPs. Returns the record to forget once `b` is committed.
pub fn plan_teardown(sock: &NftSocket, b: &mut Batch, at: Attachment) -> Result<Forget> {
    let key = hash_for_instance(at.network, at.ifname, at.container_id);
    let rec = records(sock);
    // The record is trusted only while the stamp holds (upstream has not run an ADD since).
    let stamped = match rec.get(&key) {
        Recorded::Rules(_) => {
            let listed = match sock.list_rules(Family::Inet, TABLE, POSTROUTING) {
                Err(e) if e.is_not_found() => Vec::new(),
                r => r.context("could not list the masquerade base chain")?,
            };
            rec.stamp_matches(&records::base_handles(&listed))
        }
        _ => false,
    };
    let rules = match recorded(sock, &rec, &key, stamped, false)? {
        Some(r) => r,
        None => find_rules(sock, &key)?,
    };
    delete_into(b, &rules);
    Ok(Forget { rec, key })
}

/// A record to remove after the batch that removed its rules is committed.
pub struct Forget {
    rec: Records,
    key: String,
}

impl Forget {
    pub fn done(self) {
        self.rec.forget(&self.key);
    }
}

/// Removes the attachment's rules (this layout only; `super::teardown` removes both).
pub fn teardown(sock: &NftSocket, network: &str, ifname: &str, container_id: &str) -> Result<()> {
    let mut b = Batch::new();
    let forget = plan_teardown(sock, &mut b, Attachment::new(network, ifname, container_id))?;
    commit(sock, &b).with_context(|| format!("failed to remove IP masquerading for {container_id}/{ifname}"))?;
    forget.done();
    Ok(())
}

/// GC: queues into `b` the removal of the rules of `network` whose attachment is not in
/// `valid` (`(containerID, ifname)` pairs, as in `cni.dev/valid-attachments`), as upstream's
/// gcIPMasqNFTables. Returns the records to forget once `b` is committed.
pub fn plan_gc(sock: &NftSocket, b: &mut Batch, network: &str, valid: &[(&str, &str)]) -> Result<Vec<Forget>> {
    let keep: Vec<String> = valid
        .iter()
        .map(|(cid, ifname)| comment_for_instance(network, ifname, cid))
        .collect();
    let rules = find_rules(sock, &hash_for_network(network))?;
    let stale: Vec<Rule> = rules
        .into_iter()
        .filter(|r| !keep.iter().any(|k| Some(k.as_str()) == r.comment.as_deref()))
        .collect();
    delete_into(b, &stale);
    // The records of attachments that are not valid go too (their rules are going).
    let rec = records(sock);
    let keep: Vec<String> = valid
        .iter()
        .map(|(cid, ifname)| hash_for_instance(network, ifname, cid))
        .collect();
    let prefix = format!("{}-", hash_for_network(network));
    Ok(rec
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&prefix) && !keep.contains(k))
        .map(|key| Forget {
            rec: records(sock),
            key,
        })
        .collect())
}

/// GC of this layout alone (`super::gc` does both).
pub fn gc(sock: &NftSocket, network: &str, valid: &[(&str, &str)]) -> Result<()> {
    let mut b = Batch::new();
    let forget = plan_gc(sock, &mut b, network, valid)?;
    commit(sock, &b).with_context(|| format!("failed to garbage-collect IP masquerading of network {network}"))?;
    forget.into_iter().for_each(Forget::done);
    Ok(())
}

fn delete_into(b: &mut Batch, rules: &[Rule]) {
    let t = table();
    for r in rules {
        if let Some(h) = r.handle {
            b.del_rule(&t, CHAIN, h);
        }
    }
}

fn commit(sock: &NftSocket, b: &Batch) -> Result<()> {
    if !b.is_empty() {
        b.commit(sock)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_shape() {
        let c = comment_for_instance("mynet", "eth0", "abc");
        let (hash, rest) = c.split_once(", ").unwrap();
        assert_eq!(hash.len(), 33);
        assert_eq!(&hash[..16], &hex_prefix("mynet", 16));
        assert_eq!(&hash[17..], &hex_prefix("eth0:abc", 16));
        assert_eq!(rest, "net: mynet, if: eth0, id: abc");
        let long = comment_for_instance("n", "eth0", &"x".repeat(200));
        assert_eq!(long.len(), 128);
        assert!(long.starts_with(&hash_for_instance("n", "eth0", &"x".repeat(200))));
    }
}
