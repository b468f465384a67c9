//! bridge `macspoofchk`: frames entering the bridge from a pod's port with any source MAC but
//! the pod's own are dropped. Same objects as the reference (`pkg/link/spoofcheck.go`):
//!
//! ```text
//! table bridge nat {
//!     chain PREROUTING { type filter hook prerouting priority -300; policy accept;
//!         iifname "veth1234" jump cni-br-iface-<cid>-<ifname> comment "macspoofchk-<cid>-<ifname>" }
//!     chain cni-br-iface-<cid>-<ifname> { jump cni-br-iface-<cid>-<ifname>-mac comment "…" }
//!     chain cni-br-iface-<cid>-<ifname>-mac {
//!         ether saddr 0a:58:… return comment "…"
//!         drop comment "…" }
//! }
//! ```
//!
//! Unlike the reference (two transactions), setup is one atomic batch, and a repeated setup
//! replaces the attachment's PREROUTING rule instead of adding a second one.

use anyhow::{Context, Result};

use crate::linux::nft::{
    Batch, Chain, ChainType, CmpOp, Family, Hook, NftSocket, Policy, Position, RuleBuilder, Table,
};

pub const TABLE: &str = "nat";
pub const PREROUTING: &str = "PREROUTING";

fn table() -> Table {
    Table::new(Family::Bridge, TABLE)
}

/// `<cid>-<ifname>`, the reference's refID.
fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

pub fn iface_chain(container_id: &str, ifname: &str) -> String {
    format!("cni-br-iface-{}", ref_id(container_id, ifname))
}

pub fn mac_chain(container_id: &str, ifname: &str) -> String {
    iface_chain(container_id, ifname) + "-mac"
}

pub fn rule_comment(container_id: &str, ifname: &str) -> String {
    format!("macspoofchk-{}", ref_id(container_id, ifname))
}

/// Allow only `container_mac` as the source of frames arriving from `host_veth` (the pod's
/// bridge port), for the attachment (container_id, ifname). Runs in the node's netns.
pub fn setup(
    sock: &NftSocket,
    host_veth: &str,
    container_mac: [u8; 6],
    container_id: &str,
    ifname: &str,
) -> Result<()> {
    let t = table();
    let iface = iface_chain(container_id, ifname);
    let mac = mac_chain(container_id, ifname);
    let comment = rule_comment(container_id, ifname);
    let stale = sock
        .list_rules(Family::Bridge, TABLE, PREROUTING)
        .context("could not list bridge nat PREROUTING")?;
    let mut b = Batch::new();
    b.add_table(&t);
    b.add_chain(&Chain::base(
        &t,
        PREROUTING,
        ChainType::Filter,
        Hook::Prerouting,
        -300,
        Policy::Accept,
    ));
    b.add_chain(&Chain::regular(&t, &iface));
    b.add_chain(&Chain::regular(&t, &mac));
    for r in stale.iter().filter(|r| r.comment.as_deref() == Some(comment.as_str())) {
        b.del_rule(&t, PREROUTING, r.handle.unwrap_or_default());
    }
    b.flush_chain(&t, &iface);
    b.flush_chain(&t, &mac);
    let rules = [
        RuleBuilder::new(&t, PREROUTING)
            .iifname(CmpOp::Eq, host_veth)
            .jump(&iface),
        RuleBuilder::new(&t, &iface).jump(&mac),
        RuleBuilder::new(&t, &mac).ether_saddr(CmpOp::Eq, container_mac).ret(),
        RuleBuilder::new(&t, &mac).drop(),
    ];
    for r in rules {
        b.add_rule(&r.comment(&comment).build(), Position::Append);
    }
    b.commit(sock).context("failed to setup spoof-check")
}

/// Removes the attachment's PREROUTING rule and its two chains; what is already gone is fine.
/// Needs neither the veth nor the MAC.
pub fn teardown(sock: &NftSocket, container_id: &str, ifname: &str) -> Result<()> {
    let t = table();
    let iface = iface_chain(container_id, ifname);
    let mac = mac_chain(container_id, ifname);
    let comment = rule_comment(container_id, ifname);
    let mut b = Batch::new();
    let pre = sock
        .list_rules(Family::Bridge, TABLE, PREROUTING)
        .context("could not list bridge nat PREROUTING")?;
    for r in pre.iter().filter(|r| r.comment.as_deref() == Some(comment.as_str())) {
        b.del_rule(&t, PREROUTING, r.handle.unwrap_or_default());
    }
    // The iface chain jumps to the mac chain: empty it before deleting either.
    for chain in [&iface, &mac] {
        if sock.chain_exists(Family::Bridge, TABLE, chain)? {
            b.flush_chain(&t, chain);
        }
    }
    for chain in [&iface, &mac] {
        if sock.chain_exists(Family::Bridge, TABLE, chain)? {
            b.del_chain(&t, chain);
        }
    }
    if b.is_empty() {
        return Ok(());
    }
    b.commit(sock).context("failed to teardown spoof-check")
}
