//! The firewall's iptables layout: the reference's iptables backend's own rules
//! (`plugins/meta/firewall/iptables.go`, `ingresspolicy.go`) in iptables' `filter` tables,
//! written over netlink and encoded as iptables-nft 1.8 encodes them, so that `iptables-save`
//! prints them as the reference's, the reference's CHECK accepts them and its DEL removes
//! them (and ours removes the reference's: the same rules):
//!
//! ```text
//! -A FORWARD -m comment --comment "…(ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1   (position 1)
//! -A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
//! -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
//! -A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! -A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT
//! -A CNI-ISOLATION-STAGE-1 -i br ! -o br -m comment --comment "…" -j CNI-ISOLATION-STAGE-2
//! -A CNI-ISOLATION-STAGE-1 -m comment --comment "…" -j RETURN
//! -A CNI-ISOLATION-STAGE-2 -o br -m comment --comment "…" -j DROP
//! -A CNI-ISOLATION-STAGE-2 -m comment --comment "…" -j RETURN
//! ```
//!
//! Made if missing exactly as the reference makes them through iptables-nft: the `filter`
//! table and the chains `CNI-FORWARD` and the admin chain (`-N`), then the built-in `FORWARD`
//! (iptables-nft makes a built-in chain when a rule first goes into it, policy ACCEPT). So the
//! accepts are in iptables' own FORWARD from ADD on, and a DROP policy set there later (Docker,
//! a hardening script, a restored ruleset) does not cut the pod off.
//!
//! `FORWARD` is shared with the node's other components and `CNI-FORWARD` grows with the pods,
//! so the common path lists neither. The records (`pkg::nft_records`, `<family>-filter`) hold,
//! per attachment, the handles of its per-address rules; per address (`ip-<addr>`), the
//! handles of that address's two rules; and a stamp: the handles of the `FORWARD` and admin
//! jumps and `CNI-FORWARD`'s use count (its rules plus the jumps into it) after our last
//! change. While the use count is still the stamp's (one GETCHAIN) and both jumps are still
//! there (a GETRULE each), nobody else changed `CNI-FORWARD`, so the per-address records are
//! complete: ADD adds an address's rules unless its record names them (the reference's
//! `AppendUnique`), and DEL deletes what the attachment's record names. Otherwise the chains
//! are listed, as the reference's `iptables -C` would, and the records written again.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use super::{ingress_comment, Ingress};
use super::{ADMIN_COMMENT, CNI_FORWARD, FORWARD_COMMENT, STAGE1, STAGE2};
use crate::cni::result::CniResult;
use crate::linux::nft::{
    xt::{self, IptRule},
    Batch, Chain, Family, Hook, NftSocket, Position, Rule, Table,
};
use crate::pkg::nft_records::{Recorded, Records};
use crate::pkg::reference_iptables as reference;

pub const TABLE: &str = "filter";
pub const FORWARD: &str = "FORWARD";

fn ipt_table(f: Family) -> Table {
    Table::new(f, TABLE)
}

/// The families (`ip`, `ip6`) of the result's addresses, each with its addresses.
pub fn families(prev: &CniResult) -> Vec<(Family, Vec<IpAddr>)> {
    let ips: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
    [(Family::Ip, false), (Family::Ip6, true)]
        .into_iter()
        .map(|(f, v6)| (f, ips.iter().copied().filter(|a| a.is_ipv6() == v6).collect::<Vec<_>>()))
        .filter(|(_, ips)| !ips.is_empty())
        .collect()
}

fn forward_jump(t: &Table) -> Rule {
    IptRule::new(t, FORWARD).comment(FORWARD_COMMENT).jump(CNI_FORWARD)
}

fn admin_jump(t: &Table, admin: &str) -> Rule {
    IptRule::new(t, CNI_FORWARD).comment(ADMIN_COMMENT).jump(admin)
}

/// The reference's per-address rules (`getPrivChainRules`).
fn pod_rules(t: &Table, ip: IpAddr) -> [Rule; 2] {
    [
        IptRule::new(t, CNI_FORWARD)
            .dst(ip, false)
            .ctstate(xt::ctstate::RELATED | xt::ctstate::ESTABLISHED)
            .jump("ACCEPT"),
        IptRule::new(t, CNI_FORWARD).src(ip, false).jump("ACCEPT"),
    ]
}

/// Queues `r` unless an equal rule is in `have` (the reference's `AppendUnique`/`InsertUnique`).
fn insert_unique(b: &mut Batch, have: &[Rule], r: Rule, pos: Position) {
    if !have.iter().any(|h| xt::same_rule(&h.exprs, &r.exprs)) {
        b.add_rule(&r, pos);
    }
}

/// Chains of one family's filter table as ADD found them.
struct Present {
    table: bool,
    chains: Vec<String>,
}

impl Present {
    /// One GETCHAIN per chain (a dump of the family's chains would read every table's, and
    /// a kube-proxy node has thousands in `nat`).
    fn look(sock: &NftSocket, f: Family, names: &[&str]) -> Result<Present> {
        let mut chains = Vec::new();
        for n in names {
            if sock.chain_exists(f, TABLE, n)? {
                chains.push(n.to_string());
            }
        }
        let table = !chains.is_empty() || sock.table_exists(f, TABLE)?;
        Ok(Present { table, chains })
    }

    fn has(&self, name: &str) -> bool {
        self.chains.iter().any(|c| c == name)
    }

    /// Queues the chain unless it is there. Only missing chains are sent: re-adding an existing
    /// base chain would reset its policy.
    fn ensure(&mut self, b: &mut Batch, t: &Table, c: Chain) {
        if !self.table {
            b.add_table(t);
            self.table = true;
        }
        if !self.has(&c.name) {
            self.chains.push(c.name.clone());
            b.add_chain(&c);
        }
    }
}

/// This layout's records in family `f` (see the module doc).
fn records(sock: &NftSocket, f: Family) -> Records {
    Records::open(sock, f, TABLE)
}

/// The record of one address's two rules.
fn index_name(ip: IpAddr) -> String {
    format!("ip-{ip}")
}

/// A rule ADD needs afterwards: already there (its handle), or added by the batch (its index).
#[derive(Clone, Copy)]
enum Slot {
    Have(u64),
    Added(usize),
}

impl Slot {
    fn handle(self, echoed: &[Option<u64>]) -> Option<u64> {
        match self {
            Slot::Have(h) => Some(h),
            Slot::Added(i) => echoed.get(i).copied().flatten(),
        }
    }
}

/// What ADD did in one family, for the records after its commit. (No "pending" record
/// before the commit: a crash between commit and record leaves the stamp's use count behind,
/// and every record is checked rule by rule before use, so nothing stale is trusted.)
pub struct Plan {
    rec: Records,
    /// The attachment's two rules per address.
    pods: Vec<(IpAddr, [Slot; 2])>,
    fwd: Slot,
    admin: Slot,
    /// `CNI-FORWARD`'s use count once the batch is in.
    used_after: u64,
    /// Every address's rule pair as listed (the slow path): the index is written again.
    listed: Vec<(IpAddr, [u64; 2])>,
}

impl Plan {
    /// After the commit: the attachment's record, the index of its addresses (of every
    /// listed address after a listing) and the stamp.
    pub fn record(&self, key: &str, echoed: &[Option<u64>]) {
        let rec = &self.rec;
        for (ip, hs) in &self.listed {
            put_pair(rec, *ip, hs);
        }
        let mut mine = Vec::new();
        let mut complete = true;
        for (ip, slots) in &self.pods {
            match (slots[0].handle(echoed), slots[1].handle(echoed)) {
                (Some(a), Some(b)) => {
                    put_pair(rec, *ip, &[a, b]);
                    mine.extend([a, b]);
                }
                _ => complete = false,
            }
        }
        if complete && !mine.is_empty() {
            let rules: Vec<(String, u64)> = mine.into_iter().map(|h| (CNI_FORWARD.to_string(), h)).collect();
            rec.put(key, &rules);
        } else {
            rec.forget(key);
        }
        match (self.fwd.handle(echoed), self.admin.handle(echoed)) {
            (Some(f), Some(a)) if complete => rec.put_stamp(&[f, a, self.used_after]),
            _ => rec.forget_stamp(),
        }
    }
}

fn put_pair(rec: &Records, ip: IpAddr, hs: &[u64; 2]) {
    let rules: Vec<(String, u64)> = hs.iter().map(|h| (CNI_FORWARD.to_string(), *h)).collect();
    rec.put(&index_name(ip), &rules);
}

/// The rule `handle` of `chain`, if it is still `want` (one GETRULE).
fn still(sock: &NftSocket, f: Family, chain: &str, handle: u64, want: &Rule) -> Result<bool> {
    Ok(sock
        .get_rule(f, TABLE, chain, handle)?
        .is_some_and(|r| xt::same_rule(&r.exprs, &want.exprs)))
}

/// The handles of the FORWARD and admin jumps when the stamp holds: `CNI-FORWARD`'s use count
/// (`used`) is the stamp's and both jumps are where it says.
fn stamped(sock: &NftSocket, f: Family, rec: &Records, used: Option<u32>, admin: &str) -> Result<Option<(u64, u64)>> {
    let t = ipt_table(f);
    let (Some(used), Some(stamp)) = (used, rec.stamp()) else {
        return Ok(None);
    };
    let &[hf, ha, u] = stamp.as_slice() else {
        return Ok(None);
    };
    if u != u64::from(used)
        || !still(sock, f, FORWARD, hf, &forward_jump(&t))?
        || !still(sock, f, CNI_FORWARD, ha, &admin_jump(&t, admin))?
    {
        return Ok(None);
    }
    Ok(Some((hf, ha)))
}

/// The handles of `ip`'s two rules from its record, if they are still those rules.
fn recorded_pair(sock: &NftSocket, f: Family, rec: &Records, ip: IpAddr) -> Result<Option<[u64; 2]>> {
    let Recorded::Rules(r) = rec.get(&index_name(ip)) else {
        return Ok(None);
    };
    let want = pod_rules(&ipt_table(f), ip);
    match r.as_slice() {
        [(c1, h1), (c2, h2)] if c1 == CNI_FORWARD && c2 == CNI_FORWARD => {
            Ok(
                (still(sock, f, CNI_FORWARD, *h1, &want[0])? && still(sock, f, CNI_FORWARD, *h2, &want[1])?)
                    .then_some([*h1, *h2]),
            )
        }
        _ => Ok(None),
    }
}

/// The reference's ADD in one family's filter table, in its order: the chains, the FORWARD
/// jump and the admin jump at position 1, the per-address rules appended, then the isolation.
pub fn add(
    sock: &NftSocket,
    b: &mut Batch,
    f: Family,
    ips: &[IpAddr],
    admin: &str,
    ingress: Ingress,
    bridge: Option<&str>,
) -> Result<Plan> {
    let t = ipt_table(f);
    let used = sock.chain_use(f, TABLE, CNI_FORWARD)?;
    let mut plan = Plan {
        rec: records(sock, f),
        pods: Vec::new(),
        fwd: Slot::Have(0),
        admin: Slot::Have(0),
        used_after: used.map_or(0, u64::from),
        listed: Vec::new(),
    };
    let forward = Chain::filter(&t, FORWARD, Hook::Forward);
    let mut p;
    let mut fwd: Option<Vec<Rule>> = None;
    if let Some((hf, ha)) = stamped(sock, f, &plan.rec, used, admin)? {
        // Both jumps are there, so is every chain but the isolation stages.
        p = Present {
            table: true,
            chains: vec![FORWARD.to_string(), CNI_FORWARD.to_string(), admin.to_string()],
        };
        if ingress != Ingress::Open {
            for c in [STAGE1, STAGE2] {
                if sock.chain_exists(f, TABLE, c)? {
                    p.chains.push(c.to_string());
                }
            }
        }
        (plan.fwd, plan.admin) = (Slot::Have(hf), Slot::Have(ha));
        for ip in ips {
            let slots = match recorded_pair(sock, f, &plan.rec, *ip)? {
                Some([h1, h2]) => [Slot::Have(h1), Slot::Have(h2)],
                None => {
                    let mut s = [Slot::Have(0); 2];
                    for (i, r) in pod_rules(&t, *ip).into_iter().enumerate() {
                        b.add_rule(&r, Position::Append);
                        s[i] = Slot::Added(b.len() - 1);
                        plan.used_after += 1;
                    }
                    s
                }
            };
            plan.pods.push((*ip, slots));
        }
    } else {
        p = Present::look(sock, f, &[FORWARD, CNI_FORWARD, admin, STAGE1, STAGE2])?;
        p.ensure(b, &t, Chain::regular(&t, CNI_FORWARD));
        p.ensure(b, &t, Chain::regular(&t, admin));
        let listed = sock.list_rules(f, TABLE, FORWARD)?;
        plan.fwd = match find(&listed, &forward_jump(&t)) {
            Some(h) => Slot::Have(h),
            None => {
                p.ensure(b, &t, forward.clone());
                b.add_rule(&forward_jump(&t), Position::Prepend);
                plan.used_after += 1;
                Slot::Added(b.len() - 1)
            }
        };
        fwd = Some(listed);
        let have = sock.list_rules(f, TABLE, CNI_FORWARD)?;
        plan.admin = match find(&have, &admin_jump(&t, admin)) {
            Some(h) => Slot::Have(h),
            None => {
                b.add_rule(&admin_jump(&t, admin), Position::Prepend);
                plan.used_after += 1;
                Slot::Added(b.len() - 1)
            }
        };
        plan.listed = pairs(f, &have);
        for ip in ips {
            let mut s = [Slot::Have(0); 2];
            for (i, r) in pod_rules(&t, *ip).into_iter().enumerate() {
                s[i] = match find(&have, &r) {
                    Some(h) => Slot::Have(h),
                    None => {
                        b.add_rule(&r, Position::Append);
                        plan.used_after += 1;
                        Slot::Added(b.len() - 1)
                    }
                };
            }
            plan.pods.push((*ip, s));
        }
    }
    if let Some(br) = bridge {
        let fwd = match fwd {
            Some(l) => l,
            None => sock.list_rules(f, TABLE, FORWARD)?,
        };
        add_isolation(sock, b, &mut p, f, &fwd, ingress, br)?;
    }
    Ok(plan)
}

/// The handle of the first rule of `have` equal to `want`.
fn find(have: &[Rule], want: &Rule) -> Option<u64> {
    have.iter()
        .find(|h| xt::same_rule(&h.exprs, &want.exprs))
        .and_then(|h| h.handle)
}

/// Every address with both of its rules in the listed `CNI-FORWARD`, with their handles.
fn pairs(f: Family, have: &[Rule]) -> Vec<(IpAddr, [u64; 2])> {
    let t = ipt_table(f);
    let mut out = Vec::new();
    for r in have {
        let Some(ip) = xt::full_addresses(&r.exprs).into_iter().next() else {
            continue;
        };
        if out.iter().any(|(a, _)| *a == ip) {
            continue;
        }
        let want = pod_rules(&t, ip);
        if let (Some(a), Some(b)) = (find(have, &want[0]), find(have, &want[1])) {
            out.push((ip, [a, b]));
        }
    }
    out
}

/// The reference's isolation stages for `bridge` (`ingresspolicy.go`): the FORWARD jump to
/// stage 1 first, the bridge's rules before the stages' RETURNs.
fn add_isolation(
    sock: &NftSocket,
    b: &mut Batch,
    p: &mut Present,
    f: Family,
    fwd: &[Rule],
    ingress: Ingress,
    br: &str,
) -> Result<()> {
    let t = ipt_table(f);
    p.ensure(b, &t, Chain::regular(&t, STAGE1));
    p.ensure(b, &t, Chain::regular(&t, STAGE2));
    let shared = ingress_comment(Ingress::SameBridge);
    let c = ingress_comment(ingress);
    let to_stage1 = IptRule::new(&t, FORWARD).comment(shared).jump(STAGE1);
    if find(fwd, &to_stage1).is_none() {
        b.add_rule(&to_stage1, Position::Prepend);
    }
    let s1 = sock.list_rules(f, TABLE, STAGE1)?;
    let s2 = sock.list_rules(f, TABLE, STAGE2)?;
    insert_unique(
        b,
        &s1,
        IptRule::new(&t, STAGE1)
            .in_iface(br, false)
            .out_iface(br, true)
            .comment(c)
            .jump(STAGE2),
        Position::Prepend,
    );
    if ingress == Ingress::Isolated {
        // Traffic between two ports of the bridge (seen here with br_netfilter only).
        insert_unique(
            b,
            &s1,
            IptRule::new(&t, STAGE1)
                .in_iface(br, false)
                .out_iface(br, false)
                .comment(c)
                .jump("DROP"),
            Position::Prepend,
        );
    }
    insert_unique(
        b,
        &s1,
        IptRule::new(&t, STAGE1).comment(shared).jump("RETURN"),
        Position::Append,
    );
    insert_unique(
        b,
        &s2,
        IptRule::new(&t, STAGE2).out_iface(br, false).comment(c).jump("DROP"),
        Position::Prepend,
    );
    insert_unique(
        b,
        &s2,
        IptRule::new(&t, STAGE2).comment(shared).jump("RETURN"),
        Position::Append,
    );
    Ok(())
}

/// What DEL removes in one family, for the records after its commit.
pub struct Removal {
    rec: Records,
    ips: Vec<IpAddr>,
    /// The stamp to write afterwards (it held before and is moved by what goes).
    stamp: Option<[u64; 3]>,
}

/// DEL: queues into `b` the removal of the attachment's per-address accepts in
/// `CNI-FORWARD` (ours or the reference's: the same rules), both families: those its record
/// names, and those of `ips` (prevResult's, or found elsewhere) it does not, found by the
/// per-address records while the stamp holds, else by a listing. The chains, jumps and
/// per-bridge isolation rules stay, as in the reference. Returns what goes.
pub fn plan_del(sock: &NftSocket, b: &mut Batch, key: &str, ips: &[IpAddr]) -> Result<Vec<Removal>> {
    let mut out = Vec::new();
    for (f, v6) in [(Family::Ip, false), (Family::Ip6, true)] {
        let t = ipt_table(f);
        let rec = records(sock, f);
        let mut ips: Vec<IpAddr> = ips.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        let recorded = match rec.get(key) {
            Recorded::Rules(r) => r,
            _ => Vec::new(),
        };
        if ips.is_empty() && recorded.is_empty() {
            continue;
        }
        let used = sock.chain_use(f, TABLE, CNI_FORWARD)?;
        let Some(used) = used else {
            continue; // no CNI-FORWARD: nothing of anyone's
        };
        // The attachment's record: its rules still there go by handle, and they name its
        // addresses too (DEL without prevResult).
        let mut gone: Vec<u64> = Vec::new();
        let mut covered: Vec<IpAddr> = Vec::new();
        for (c, h) in &recorded {
            let Some(r) = sock.get_rule(f, TABLE, c, *h)? else {
                continue;
            };
            let Some(ip) = xt::full_addresses(&r.exprs).into_iter().next() else {
                continue;
            };
            if pod_rules(&t, ip).iter().any(|w| xt::same_rule(&r.exprs, &w.exprs)) {
                gone.push(*h);
                covered.push(ip);
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        let stamp = match rec.stamp() {
            Some(s) if s.len() == 3 && s[2] == u64::from(used) => Some([s[0], s[1], s[2]]),
            _ => None,
        };
        let mut unknown = Vec::new();
        for ip in &ips {
            if covered.iter().filter(|c| *c == ip).count() >= 2 {
                continue;
            }
            match recorded_pair(sock, f, &rec, *ip)? {
                Some(hs) => gone.extend(hs.into_iter().filter(|h| !gone.contains(h)).collect::<Vec<_>>()),
                // The records are complete while the stamp holds: no record, no rules.
                None if stamp.is_some() && matches!(rec.get(&index_name(*ip)), Recorded::Missing) => {}
                None => unknown.push(*ip),
            }
        }
        for h in &gone {
            b.del_rule(&t, CNI_FORWARD, *h);
        }
        let mut n = gone.len();
        if !unknown.is_empty() {
            n += reference::plan_forward_removal(sock, b, &unknown)?;
        }
        out.push(Removal {
            rec,
            ips,
            stamp: stamp
                .filter(|_| unknown.is_empty())
                .map(|[a, b, u]| [a, b, u - n as u64]),
        });
    }
    Ok(out)
}

impl Removal {
    /// After the commit: the records of what went, and the stamp.
    pub fn done(&self, key: &str) {
        let rec = &self.rec;
        for ip in &self.ips {
            rec.forget(&index_name(*ip));
        }
        rec.forget(key);
        match self.stamp {
            Some(s) => rec.put_stamp(&s),
            None => rec.forget_stamp(),
        }
    }
}

/// The reference's CHECK in one family: both jumps and every per-address rule.
pub fn check(sock: &NftSocket, f: Family, ips: &[IpAddr], admin: &str, cid: &str) -> Result<()> {
    let t = ipt_table(f);
    let fwd = sock.list_rules(f, TABLE, FORWARD)?;
    let jump = forward_jump(&t);
    if !fwd.iter().any(|r| xt::same_rule(&r.exprs, &jump.exprs)) {
        bail!("iptables ({f} filter) {FORWARD} does not jump to {CNI_FORWARD}");
    }
    let have = sock.list_rules(f, TABLE, CNI_FORWARD)?;
    let jump = admin_jump(&t, admin);
    if !have.iter().any(|r| xt::same_rule(&r.exprs, &jump.exprs)) {
        bail!("iptables ({f} filter) {CNI_FORWARD} does not jump to {admin}");
    }
    for ip in ips {
        for want in pod_rules(&t, *ip) {
            if !have.iter().any(|r| xt::same_rule(&r.exprs, &want.exprs)) {
                bail!("missing iptables rule in {f} filter {CNI_FORWARD} for {ip} of {cid}");
            }
        }
    }
    Ok(())
}

/// CHECK in every family of the result.
pub fn check_all(sock: &NftSocket, prev: &CniResult, admin: &str, cid: &str) -> Result<()> {
    for (f, ips) in families(prev) {
        check(sock, f, &ips, admin, cid).with_context(|| format!("firewall CHECK of {cid}"))?;
    }
    Ok(())
}
