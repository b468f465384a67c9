//! ipMasq in the iptables layout: the reference's own nat rules (upstream
//! `pkg/ip/ipmasq_iptables_linux.go`, `SetupIPMasq`; Debian's 1.1.1 writes the same), written
//! over netlink into iptables-nft's `nat` tables and encoded as iptables-nft 1.8 encodes them
//! (`linux::nft::xt`), so that `iptables-save` prints exactly the reference's rules and the
//! reference's CHECK and DEL accept and remove them:
//!
//! ```text
//! -N CNI-<h24(net+cid)>
//! -A CNI-<h24> -d 10.1.0.0/24 -m comment --comment "name: \"net\" id: \"cid\"" -j ACCEPT
//! -A CNI-<h24> ! -d 224.0.0.0/4 -m comment --comment "…" -j MASQUERADE      (v6: ff00::/8)
//! -A POSTROUTING -s 10.1.0.5/32 -m comment --comment "…" -j CNI-<h24>
//! ```
//!
//! POSTROUTING is shared with everything else on the node (kube-proxy, Docker, podman), so the
//! common path never lists it:
//! - ADD of a new attachment: its chain does not exist yet, and the kernel allows no jump to
//!   a missing chain, so there is nothing to look for: the rules are appended blind (the
//!   reference's `AppendUnique` would find nothing either). The handles the kernel gives the
//!   POSTROUTING jumps are recorded (`pkg::nft_records`, `<family>-nat-ipmasq`).
//! - DEL: the chain's use count (its own rules plus every jump into it, one GETCHAIN) against
//!   its rules (a dump of that small chain) and the recorded jumps (a GETRULE each): when they
//!   add up, those are all the jumps. Otherwise (a chain the reference made, a lost record, a
//!   jump from elsewhere) POSTROUTING is listed, as the reference's DEL would look.
//!
//! Unlike the reference's teardown, ours needs no addresses (the jumps are found by their
//! target), so DEL works with the netns gone; and GC removes the chains of containers that
//! are not valid, which upstream's iptables backend cannot.

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

use super::Attachment;
use crate::linux::nft::xt::{self, IptRule};
use crate::linux::nft::{Batch, Chain, Expr, Family, NftSocket, Position, Rule};
use crate::linux::nft::{Table, Verdict};
use crate::pkg::nft_records::{Recorded, Records};
use crate::pkg::reference_iptables as reference;

pub const TABLE: &str = "nat";
pub const POSTROUTING: &str = "POSTROUTING";
/// The records' directory name (`<family>-nat-ipmasq`): portmap keeps records of the same
/// `nat` table under its own name.
const RECORDS: &str = "nat-ipmasq";

/// `utils.FormatChainName`: `CNI-` and the first 24 hex digits of sha512(network + cid).
pub fn chain_name(network: &str, container_id: &str) -> String {
    reference::masq_chain(network, container_id)
}

/// `utils.FormatComment`.
pub fn comment(network: &str, container_id: &str) -> String {
    reference::masq_comment(network, container_id)
}

fn family(v6: bool) -> Family {
    if v6 {
        Family::Ip6
    } else {
        Family::Ip
    }
}

fn records(sock: &NftSocket, f: Family) -> Records {
    Records::open(sock, f, RECORDS)
}

/// The rules of one address, in the reference's order: the chain's two, then the jump.
fn rules(t: &Table, chain: &str, comment: &str, ip: IpNet) -> [Rule; 3] {
    let v6 = matches!(ip, IpNet::V6(_));
    let multicast: IpNet = if v6 {
        "ff00::/8".parse().unwrap()
    } else {
        "224.0.0.0/4".parse().unwrap()
    };
    [
        IptRule::new(t, chain)
            .dst(ip.trunc(), false)
            .comment(comment)
            .jump("ACCEPT"),
        IptRule::new(t, chain)
            .dst(multicast, true)
            .comment(comment)
            .target(&xt::masquerade_target(v6)),
        IptRule::new(t, POSTROUTING)
            .src(ip.addr(), false)
            .comment(comment)
            .jump(chain),
    ]
}

/// Where one family's jumps are after ADD's commit: handles already there, and batch indexes
/// of the ones this batch adds.
#[derive(Default)]
struct Jumps {
    family: Option<Family>,
    known: Vec<u64>,
    added: Vec<usize>,
}

/// ADD: per address, the chain (created if missing) and its rules, each added unless already
/// there (`AppendUnique`), the nat table and POSTROUTING created as iptables-nft would (at the
/// first rule appended to it). One batch, committed at the generation its lookups saw.
pub fn setup(sock: &NftSocket, network: &str, ifname: &str, container_id: &str, ips: &[IpNet]) -> Result<()> {
    let chain = chain_name(network, container_id);
    let comment = comment(network, container_id);
    let key = super::nftables::hash_for_instance(network, ifname, container_id);
    let by_family: Vec<(Family, Vec<IpNet>)> = [false, true]
        .into_iter()
        .map(|v6| {
            let mine = ips.iter().copied().filter(|i| matches!(i, IpNet::V6(_)) == v6);
            (family(v6), mine.collect::<Vec<_>>())
        })
        .filter(|(_, ips)| !ips.is_empty())
        .collect();
    // No "pending" record before the commit: DEL trusts a record only when the chain's use
    // count adds up with it, so a crash between commit and record cannot mislead it.
    let mut plans: Vec<Jumps> = Vec::new();
    let handles = Batch::build_and_commit_echo(sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
        plans.clear();
        for (f, ips) in &by_family {
            plans.push(queue_family(sock, b, *f, &chain, &comment, ips)?);
        }
        Ok(())
    })
    .context("failed to set up IP masquerading (iptables)")?;
    for p in plans {
        let Some(f) = p.family else { continue };
        let made: Option<Vec<u64>> = p.added.iter().map(|i| handles.get(*i).copied().flatten()).collect();
        let rec = records(sock, f);
        match made {
            Some(m) => {
                let all: Vec<(String, u64)> = p
                    .known
                    .into_iter()
                    .chain(m)
                    .map(|h| (POSTROUTING.to_string(), h))
                    .collect();
                if all.is_empty() {
                    rec.forget(&key);
                } else {
                    rec.put(&key, &all);
                }
            }
            None => rec.forget(&key),
        }
    }
    Ok(())
}

fn queue_family(
    sock: &NftSocket,
    b: &mut Batch,
    f: Family,
    chain: &str,
    comment: &str,
    ips: &[IpNet],
) -> Result<Jumps> {
    let t = Table::new(f, TABLE);
    let mut jumps = Jumps {
        family: Some(f),
        ..Default::default()
    };
    // A chain that does not exist has no rules and no jump into it: nothing to list.
    let fresh = !sock.chain_exists(f, TABLE, chain)?;
    let mut have = Vec::new();
    let mut post = true;
    if fresh {
        post = sock.chain_exists(f, TABLE, POSTROUTING)?;
        if !post && !sock.table_exists(f, TABLE)? {
            b.add_table(&t);
        }
        b.add_chain(&Chain::regular(&t, chain));
    } else {
        have = sock.list_rules(f, TABLE, chain)?;
        have.extend(sock.list_rules(f, TABLE, POSTROUTING)?);
    }
    for ip in ips {
        for r in rules(&t, chain, comment, *ip) {
            if let Some(h) = have
                .iter()
                .find(|h| h.chain == r.chain && xt::same_rule(&h.exprs, &r.exprs))
            {
                if r.chain == POSTROUTING {
                    jumps.known.extend(h.handle);
                }
                continue;
            }
            if r.chain == POSTROUTING && !post {
                // iptables-nft makes a built-in chain when a rule first goes into it; only
                // a missing one is sent (re-adding a base chain would reset its policy).
                b.add_chain(&Chain::srcnat(&t, POSTROUTING));
                post = true;
            }
            b.add_rule(&r, Position::Append);
            if r.chain == POSTROUTING {
                jumps.added.push(b.len() - 1);
            }
            have.push(r);
        }
    }
    Ok(jumps)
}

fn jumps_to(r: &Rule, chain: &str) -> bool {
    r.exprs
        .iter()
        .any(|e| matches!(e, Expr::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) if c == chain))
}

/// The jumps into the attachment's chain in family `f` (whose use count is `used`), from its
/// record: `None` when the record and the use count do not add up (the caller lists
/// POSTROUTING instead).
fn quick(sock: &NftSocket, rec: &Records, f: Family, used: u32, chain: &str, key: &str) -> Result<Option<Vec<u64>>> {
    let Recorded::Rules(r) = rec.get(key) else {
        return Ok(None);
    };
    let mut jumps = Vec::with_capacity(r.len());
    for (c, h) in &r {
        match sock.get_rule(f, TABLE, c, *h)? {
            Some(rule) if jumps_to(&rule, chain) => jumps.push(*h),
            _ => return Ok(None),
        }
    }
    let inside = sock.list_rule_comments(f, TABLE, chain)?.len();
    Ok((used as usize == inside + jumps.len()).then_some(jumps))
}

/// DEL: queues into `b` the removal of the attachment's chain and of every jump into it, in
/// both families (ours, or the reference's from before a node swap: the same rules). Missing
/// tables or chains are fine. Returns the records to forget once `b` is committed.
pub fn plan_teardown(sock: &NftSocket, b: &mut Batch, at: Attachment) -> Result<Forget> {
    let chain = chain_name(at.network, at.container_id);
    let key = super::nftables::hash_for_instance(at.network, at.ifname, at.container_id);
    let mut quick_plan = Vec::new();
    let mut recs = Vec::new();
    let mut listed = false;
    for f in [Family::Ip, Family::Ip6] {
        // No chain, no jump into it: nothing of this attachment in this family.
        let Some(used) = sock.chain_use(f, TABLE, &chain)? else {
            continue;
        };
        let rec = records(sock, f);
        match quick(sock, &rec, f, used, &chain, &key)? {
            Some(jumps) => quick_plan.push((f, jumps)),
            None => listed = true,
        }
        recs.push(rec);
    }
    if listed {
        // The reference's own way: its comment on the POSTROUTING jumps, its chain by name.
        let comment = comment(at.network, at.container_id);
        let scope = reference::Scope::Chains(&[POSTROUTING]);
        reference::plan_nat_removal(sock, b, scope, &|c| c == comment, &[chain])?;
    } else {
        for (f, jumps) in &quick_plan {
            let t = Table::new(*f, TABLE);
            for h in jumps {
                b.del_rule(&t, POSTROUTING, *h);
            }
            b.flush_chain(&t, &chain);
            b.del_chain(&t, &chain);
        }
    }
    Ok(Forget { key, recs })
}

/// The records of an attachment, to remove once the batch that removed its rules committed.
pub struct Forget {
    key: String,
    recs: Vec<Records>,
}

impl Forget {
    pub fn done(self) {
        for rec in &self.recs {
            rec.forget(&self.key);
        }
    }
}

/// Removes the attachment's rules in this layout alone (`super::teardown` does both).
pub fn teardown(sock: &NftSocket, network: &str, ifname: &str, container_id: &str) -> Result<()> {
    let mut b = Batch::new();
    let forget = plan_teardown(sock, &mut b, Attachment::new(network, ifname, container_id))?;
    if !b.is_empty() {
        b.commit(sock).context("failed to remove IP masquerading (iptables)")?;
    }
    forget.done();
    Ok(())
}

/// GC: queues into `b` the removal of the chains (and the jumps into them) of `network`'s
/// containers that have no attachment in `valid` (the reference's chains are per container,
/// whatever the ifname). Lists the nat tables: GC is not on the common path.
pub fn plan_gc(sock: &NftSocket, b: &mut Batch, network: &str, valid: &[(&str, &str)]) -> Result<()> {
    let dead = |c: &str| {
        reference::parse_comment(c, "")
            .is_some_and(|(net, cid)| net == network && !valid.iter().any(|(v, _)| *v == cid))
    };
    reference::plan_nat_removal(sock, b, reference::Scope::Table, &dead, &[])?;
    Ok(())
}

/// Forgets the records of `network`'s attachments that are not in `valid` (after GC's commit).
pub fn gc_records(sock: &NftSocket, network: &str, valid: &[(&str, &str)]) {
    let keep: Vec<String> = valid
        .iter()
        .map(|(cid, ifname)| super::nftables::hash_for_instance(network, ifname, cid))
        .collect();
    let prefix = format!("{}-", super::nftables::hash_for_network(network));
    for f in [Family::Ip, Family::Ip6] {
        let rec = records(sock, f);
        for k in rec.keys() {
            if k.starts_with(&prefix) && !keep.contains(&k) {
                rec.forget(&k);
            }
        }
    }
}

/// CHECK: every rule of every address is there.
pub fn check(sock: &NftSocket, network: &str, container_id: &str, ips: &[IpNet]) -> Result<()> {
    let chain = chain_name(network, container_id);
    let comment = comment(network, container_id);
    for ip in ips {
        let f = family(matches!(ip, IpNet::V6(_)));
        let t = Table::new(f, TABLE);
        let mut have = sock.list_rules(f, TABLE, &chain)?;
        have.extend(sock.list_rules(f, TABLE, POSTROUTING)?);
        for r in rules(&t, &chain, &comment, *ip) {
            if !have
                .iter()
                .any(|h| h.chain == r.chain && xt::same_rule(&h.exprs, &r.exprs))
            {
                bail!("missing iptables masquerade rule in {f} {TABLE} {} for {ip}", r.chain);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        // Seen from the reference bridge: network "mynet", container "abc123".
        assert_eq!(chain_name("mynet", "abc123"), "CNI-70a29d9dc18bc4d652ea5d59");
        assert_eq!(comment("mynet", "abc123"), "name: \"mynet\" id: \"abc123\"");
    }
}
