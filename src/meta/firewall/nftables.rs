//! The firewall's nftables layout: cni-multi's own tables (`backend: "nftables"`, and the
//! default on a node without iptables). The reference's iptables behaviour, expressed in
//! nftables:
//!
//! ```text
//! table inet cni_firewall {
//!     chain forward { type filter hook forward priority filter; policy accept;
//!         jump CNI-ISOLATION-STAGE-1
//!         jump CNI-FORWARD comment "CNI firewall plugin rules" }
//!     chain CNI-FORWARD {
//!         jump CNI-ADMIN comment "CNI firewall plugin admin overrides"      (always first)
//!         ip daddr 10.88.0.5 ct state established,related accept comment "<attachment>"
//!         ip saddr 10.88.0.5 accept comment "<attachment>" }
//!     chain CNI-ADMIN { }                                                    (operators' rules)
//!     chain CNI-ISOLATION-STAGE-1 {                                          (ingressPolicy)
//!         iifname "br" oifname != "br" jump CNI-ISOLATION-STAGE-2
//!         iifname "br" oifname "br" drop }                                   (isolated)
//!     chain CNI-ISOLATION-STAGE-2 { oifname "br" drop }
//! }
//! table bridge cni_firewall {                                                (isolated only)
//!     chain forward { type filter hook forward priority filter; policy accept;
//!         iifname "<pod's host veth>" drop comment "<attachment>" }
//! }
//! ```
//!
//! Differences from the reference's iptables rules, on purpose: one `inet` table serves both
//! families; rules are found again by comment (through the handles recorded at ADD,
//! `pkg::nft_records`, while the stamp — the admin jump's handle — holds; else by a dump), so
//! DEL works without prevResult; `isolated` also drops frames bridged between two ports of the
//! bridge (the iptables rule only sees them with br_netfilter loaded). As in the reference,
//! isolation rules are per bridge and never torn down.
//!
//! An accept here cannot undo a drop in another table's base chain on the same hook
//! (`iptables -P FORWARD DROP`): that is why a node that uses iptables gets the iptables layout.

use std::net::IpAddr;

use anyhow::{bail, Result};

use super::{bridge_name, ingress_comment, FirewallConf, Ingress};
use super::{ADMIN_COMMENT, CNI_FORWARD, FORWARD, FORWARD_COMMENT, STAGE1, STAGE2, TABLE};
use crate::cni::result::CniResult;
use crate::linux::nft::{
    ct_state, xt, Batch, Chain, CmpOp, Family, Hook, NftSocket, Position, Rule, RuleBuilder, Table,
};
use crate::pkg::nft_records::{self as records, Recorded, Records};

fn table() -> Table {
    Table::new(Family::Inet, TABLE).with_comment(FORWARD_COMMENT)
}

fn bridge_table() -> Table {
    Table::new(Family::Bridge, TABLE).with_comment(FORWARD_COMMENT)
}

pub fn records(sock: &NftSocket) -> Records {
    Records::open(sock, Family::Inet, TABLE)
}

fn admin_jump(admin: &str) -> Rule {
    RuleBuilder::new(&table(), CNI_FORWARD)
        .jump(admin)
        .comment(ADMIN_COMMENT)
        .build()
}

/// The per-container rules in CNI-FORWARD.
fn pod_rules(prev: &CniResult, comment: &str) -> Vec<Rule> {
    let t = table();
    let mut out = Vec::new();
    for ip in &prev.ips {
        let a = ip.address.addr();
        out.push(
            RuleBuilder::new(&t, CNI_FORWARD)
                .daddr(CmpOp::Eq, a)
                .ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
                .accept()
                .comment(comment)
                .build(),
        );
        out.push(
            RuleBuilder::new(&t, CNI_FORWARD)
                .saddr(CmpOp::Eq, a)
                .accept()
                .comment(comment)
                .build(),
        );
    }
    out
}

// ---- ADD ---------------------------------------------------------------------------------

/// Where ADD's batch put what the records need: the pod's rules (index, count) and the
/// admin jump (its handle when it was there, else its index in the batch).
pub struct NftPlan {
    pods: (usize, usize),
    admin: Result<u64, usize>,
    /// The records are complete (the stamp held, or the dump rewrote them).
    complete: bool,
    stamped: Option<u64>,
}

impl NftPlan {
    pub fn record(&self, rec: &Records, key: &str, handles: &[Option<u64>]) {
        let (i, n) = self.pods;
        let made: Option<Vec<(String, u64)>> = handles
            .get(i..i + n)
            .and_then(|hs| hs.iter().map(|h| h.map(|h| (CNI_FORWARD.to_string(), h))).collect());
        match made {
            Some(m) if !m.is_empty() => rec.put(key, &m),
            _ => rec.forget(key),
        }
        let admin = match self.admin {
            Ok(h) => Some(h),
            Err(i) => handles.get(i).copied().flatten(),
        };
        match admin {
            Some(h) if self.stamped == Some(h) => {} // as it was
            Some(h) if self.complete => rec.put_stamp(&[h]),
            _ => rec.forget_stamp(),
        }
    }
}

/// The stamp of the firewall's records is the handle of the admin jump in `CNI-FORWARD`
/// (made once per table, never rebuilt): it holds while that handle is still this jump.
fn stamped_admin(sock: &NftSocket, rec: &Records, admin_jump: &Rule) -> Result<Option<u64>> {
    let Some([h]) = rec.stamp().as_deref().and_then(|s| <[u64; 1]>::try_from(s).ok()) else {
        return Ok(None);
    };
    let r = sock.get_rule(Family::Inet, TABLE, CNI_FORWARD, h)?;
    Ok(
        r.filter(|r| r.exprs == admin_jump.exprs && r.comment == admin_jump.comment)
            .map(|_| h),
    )
}

/// ADD: our table's rules for the attachment, queued into `b` (see the module doc).
#[allow(clippy::too_many_arguments)]
pub fn add(
    sock: &NftSocket,
    b: &mut Batch,
    rec: &Records,
    key: &str,
    conf: &FirewallConf,
    prev: &CniResult,
    ingress: Ingress,
    comment: &str,
) -> Result<NftPlan> {
    let t = table();
    // The admin chain is evaluated first, so operators can override the accepts.
    let admin_jump = admin_jump(&conf.admin_chain);
    // This attachment's old rules and the admin jump: from the records while their stamp
    // holds, else from a dump of CNI-FORWARD (which writes the records again).
    let stamped = stamped_admin(sock, rec, &admin_jump)?;
    let from_record = match (stamped, rec.get(key)) {
        (Some(_), Recorded::Missing) => Some(Vec::new()),
        (Some(_), Recorded::Rules(r)) => records::verify(sock, Family::Inet, TABLE, &r, &|c| c == comment)?,
        _ => None,
    };
    // Pending only now: read before, a pending record of its own would make every ADD of a
    // new attachment dump and write every record again.
    rec.put_pending(key);
    let (stale, admin, complete) = match from_record {
        Some(r) => (r, stamped, true),
        None => {
            let gen = sock.generation()?;
            let have = sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?;
            let complete =
                sock.generation()? == gen && records::rerecord(rec, &have, key, &crate::pkg::comment::record_key);
            let admin = have.iter().find(|r| r.exprs == admin_jump.exprs).and_then(|r| r.handle);
            let stale = have
                .into_iter()
                .filter(|r| r.comment.as_deref() == Some(comment))
                .collect();
            (stale, admin, complete)
        }
    };
    b.add_table(&t);
    for c in [CNI_FORWARD, &conf.admin_chain, STAGE1, STAGE2] {
        b.add_chain(&Chain::regular(&t, c));
    }
    let fwd = Chain::filter(&t, FORWARD, Hook::Forward);
    b.add_chain(&fwd);
    // The entry chain is ours alone: rebuilt so isolation is evaluated before CNI-FORWARD.
    b.flush_chain(&t, FORWARD);
    b.add_rule(&RuleBuilder::new(&t, FORWARD).jump(STAGE1).build(), Position::Append);
    b.add_rule(
        &RuleBuilder::new(&t, FORWARD)
            .jump(CNI_FORWARD)
            .comment(FORWARD_COMMENT)
            .build(),
        Position::Append,
    );
    let admin = match admin {
        Some(h) => Ok(h),
        None => {
            b.add_rule(&admin_jump, Position::Prepend);
            Err(b.len() - 1)
        }
    };
    for r in &stale {
        b.del_rule(&t, CNI_FORWARD, r.handle.unwrap_or_default());
    }
    let first = b.len();
    let pods = pod_rules(prev, comment);
    for r in &pods {
        b.add_rule(r, Position::Append);
    }
    if ingress != Ingress::Open {
        add_isolation(sock, b, prev, ingress, comment)?;
    }
    Ok(NftPlan {
        pods: (first, pods.len()),
        admin,
        complete,
        stamped,
    })
}

/// The reference's two-stage isolation for the bridge `prevResult.interfaces[0]`.
fn add_isolation(sock: &NftSocket, b: &mut Batch, prev: &CniResult, ingress: Ingress, comment: &str) -> Result<()> {
    let br = bridge_name(prev)?;
    let t = table();
    let c = ingress_comment(ingress);
    let mut want = vec![
        RuleBuilder::new(&t, STAGE1)
            .iifname(CmpOp::Eq, br)
            .oifname(CmpOp::Neq, br)
            .jump(STAGE2)
            .comment(c)
            .build(),
        RuleBuilder::new(&t, STAGE2)
            .oifname(CmpOp::Eq, br)
            .drop()
            .comment(c)
            .build(),
    ];
    if ingress == Ingress::Isolated {
        want.push(
            RuleBuilder::new(&t, STAGE1)
                .iifname(CmpOp::Eq, br)
                .oifname(CmpOp::Eq, br)
                .drop()
                .comment(c)
                .build(),
        );
    }
    let mut have = sock.list_rules(Family::Inet, TABLE, STAGE1)?;
    have.extend(sock.list_rules(Family::Inet, TABLE, STAGE2)?);
    for r in want {
        if !have.iter().any(|h| h.chain == r.chain && h.exprs == r.exprs) {
            b.add_rule(&r, Position::Prepend);
        }
    }
    if ingress == Ingress::Isolated {
        // Frames bridged between two pods never reach the inet forward hook: drop what the
        // pod's bridge port forwards to other ports (its host-side veth in prevResult). Per
        // pod, so DEL removes it. (`meta ibrname` would be per bridge, but needs
        // CONFIG_NFT_BRIDGE_META, which kernels may lack.)
        let bt = bridge_table();
        b.add_table(&bt);
        b.add_chain(&Chain::filter(&bt, FORWARD, Hook::Forward));
        let have = sock.list_rules(Family::Bridge, TABLE, FORWARD)?;
        for r in have.iter().filter(|r| r.comment.as_deref() == Some(comment)) {
            b.del_rule(&bt, FORWARD, r.handle.unwrap_or_default());
        }
        for port in prev.interfaces.iter().skip(1).filter(|i| i.sandbox.is_empty()) {
            let r = RuleBuilder::new(&bt, FORWARD)
                .iifname(CmpOp::Eq, &port.name)
                .drop()
                .comment(comment)
                .build();
            b.add_rule(&r, Position::Append);
        }
    }
    Ok(())
}

// ---- DEL ---------------------------------------------------------------------------------

/// DEL: queues into `b` the removal of the attachment's rules in our tables, found by comment
/// (the record while its stamp holds, else a dump of CNI-FORWARD; no prevResult needed).
/// Returns the addresses those rules named (the iptables layout's rules of the same
/// attachment carry no comment: these find them without a prevResult).
pub fn plan_del(
    sock: &NftSocket,
    b: &mut Batch,
    rec: &Records,
    key: &str,
    admin: &str,
    comment: &str,
) -> Result<Vec<IpAddr>> {
    let t = table();
    let mut ips = Vec::new();
    let recorded = match rec.get(key) {
        Recorded::Rules(r) if stamped_admin(sock, rec, &admin_jump(admin))?.is_some() => {
            records::verify(sock, Family::Inet, TABLE, &r, &|c| c == comment)?
        }
        _ => None,
    };
    let ours = match recorded {
        Some(rules) => rules,
        None => sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?,
    };
    for r in ours {
        if r.comment.as_deref() == Some(comment) {
            b.del_rule(&t, CNI_FORWARD, r.handle.unwrap_or_default());
            ips.extend(xt::full_addresses(&r.exprs));
        }
    }
    let bt = bridge_table();
    for r in sock.list_rules(Family::Bridge, TABLE, FORWARD)? {
        if r.comment.as_deref() == Some(comment) {
            b.del_rule(&bt, FORWARD, r.handle.unwrap_or_default());
        }
    }
    Ok(ips)
}

// ---- CHECK -------------------------------------------------------------------------------

/// CHECK: the admin jump and this attachment's rules for every address, in our table.
pub fn check(sock: &NftSocket, conf: &FirewallConf, prev: &CniResult, comment: &str, cid: &str) -> Result<()> {
    let have = sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?;
    let admin = RuleBuilder::new(&table(), CNI_FORWARD).jump(&conf.admin_chain).build();
    if !have.iter().any(|r| r.exprs == admin.exprs) {
        bail!("inet {TABLE} {CNI_FORWARD} does not jump to {}", conf.admin_chain);
    }
    let all_ours = pod_rules(prev, comment)
        .iter()
        .all(|want| have.iter().any(|r| r.comment == want.comment && r.exprs == want.exprs));
    if !all_ours {
        bail!("missing firewall rule in inet {TABLE} {CNI_FORWARD} for {cid}");
    }
    Ok(())
}
