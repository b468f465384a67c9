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

use std::net::IpAddr;

use anyhow::{bail, Context, Result};

use super::{ingress_comment, Ingress};
use super::{ADMIN_COMMENT, CNI_FORWARD, FORWARD_COMMENT, STAGE1, STAGE2};
use crate::cni::result::CniResult;
use crate::linux::nft::{
    priority,
    xt::{self, IptRule},
    Batch, Chain, ChainType, Family, Hook, NftSocket, Policy, Position, Rule, Table,
};
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

/// Legacy iptables' rules are out of reach (no netlink interface): say so where its filter
/// table is in use, since a DROP policy there still drops the pod's traffic.
pub fn warn_legacy(prev: &CniResult) {
    for (v6, tool) in [(false, "iptables"), (true, "ip6tables")] {
        if prev.ips.iter().any(|i| i.address.addr().is_ipv6() == v6)
            && crate::linux::nft::iptables::legacy_tables(v6)
                .iter()
                .any(|t| t == TABLE)
        {
            eprintln!(
                "firewall: legacy {tool} (x_tables) has a filter table in this network namespace; \
                 cni-multi writes the iptables rules through nftables (iptables-nft) only, so a \
                 DROP policy of the legacy FORWARD chain still drops the pod's forwarded traffic \
                 (see `{tool}-legacy -S FORWARD`)"
            );
        }
    }
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
) -> Result<()> {
    let t = ipt_table(f);
    let mut p = Present::look(sock, f, &[FORWARD, CNI_FORWARD, admin, STAGE1, STAGE2])?;
    p.ensure(b, &t, Chain::regular(&t, CNI_FORWARD));
    p.ensure(b, &t, Chain::regular(&t, admin));
    let forward = Chain::base(
        &t,
        FORWARD,
        ChainType::Filter,
        Hook::Forward,
        priority::FILTER,
        Policy::Accept,
    );
    let fwd = sock.list_rules(f, TABLE, FORWARD)?;
    if !fwd.iter().any(|h| xt::same_rule(&h.exprs, &forward_jump(&t).exprs)) {
        p.ensure(b, &t, forward.clone());
        b.add_rule(&forward_jump(&t), Position::Prepend);
    }
    let have = sock.list_rules(f, TABLE, CNI_FORWARD)?;
    insert_unique(b, &have, admin_jump(&t, admin), Position::Prepend);
    for ip in ips {
        for r in pod_rules(&t, *ip) {
            insert_unique(b, &have, r, Position::Append);
        }
    }
    let Some(br) = bridge else {
        return Ok(());
    };
    p.ensure(b, &t, Chain::regular(&t, STAGE1));
    p.ensure(b, &t, Chain::regular(&t, STAGE2));
    let shared = ingress_comment(Ingress::SameBridge);
    let c = ingress_comment(ingress);
    let to_stage1 = IptRule::new(&t, FORWARD).comment(shared).jump(STAGE1);
    if !fwd.iter().any(|h| xt::same_rule(&h.exprs, &to_stage1.exprs)) {
        p.ensure(b, &t, forward);
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

/// DEL: queues into `b` the removal of the per-address accepts in `CNI-FORWARD` of `ips`
/// (ours or the reference's: the same rules), both families. The chains, jumps and
/// per-bridge isolation rules stay, as in the reference.
pub fn plan_del(sock: &NftSocket, b: &mut Batch, ips: &[IpAddr]) -> Result<usize> {
    reference::plan_forward_removal(sock, b, ips)
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
