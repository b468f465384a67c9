//! firewall: the reference's iptables-backend behaviour (`plugins/meta/firewall`), expressed in
//! nftables and programmed over netlink.
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
//! Differences from the reference, on purpose: one `inet` table serves both families; rules are
//! found again by comment, so DEL works without prevResult; `isolated` also drops frames bridged
//! between two ports of the bridge (the iptables rule only sees them with br_netfilter loaded).
//! As in the reference, isolation rules are per bridge and never torn down.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cni::config::{self, NetConf};
use crate::cni::error::{code, CniError};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::nft::{
    ct_state, priority, Batch, Chain, ChainType, CmpOp, Family, Hook, NftSocket, Policy, Position, Rule, RuleBuilder,
    Table,
};
use crate::pkg::reference_iptables as reference;

pub static PLUGIN: Plugin = Plugin {
    name: "firewall",
    kind: Kind::Meta,
    summary: "allow traffic to and from the container; optional bridge isolation (nftables)",
    versions: &["0.4.0", "1.0.0", "1.1.0"],
    add,
    del,
    check: Some(check),
    status: None,
    gc: None,
};

pub const TABLE: &str = "cni_firewall";
pub const FORWARD: &str = "forward";
pub const CNI_FORWARD: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";

// ---- config ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct FirewallConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    backend: String,
    #[serde(rename = "iptablesAdminChainName", default)]
    admin_chain: String,
    #[serde(rename = "ingressPolicy", default)]
    ingress_policy: String,
    /// Only the firewalld backend (refused below) uses it; typed so that a wrong type is a
    /// config error like every other key.
    #[serde(rename = "firewalldZone", default)]
    _firewalld_zone: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    Open,
    SameBridge,
    Isolated,
}

fn parse_conf(stdin: &[u8]) -> Result<(FirewallConf, Ingress)> {
    let mut c: FirewallConf = config::parse(stdin)?;
    match c.backend.as_str() {
        "" | "iptables" | "nftables" => {}
        "firewalld" => bail!(CniError::new(
            code::UNSUPPORTED_FIELD,
            "backend \"firewalld\" is not supported: cni-multi talks to no D-Bus; it programs the \
             iptables backend's rules with nftables (use backend \"iptables\" or leave it empty)"
        )),
        other => bail!(CniError::invalid_config(format!("unknown firewall backend {other:?}"))),
    }
    if c.admin_chain.is_empty() {
        c.admin_chain = "CNI-ADMIN".into();
    }
    if c.admin_chain.len() > 28 {
        bail!(CniError::invalid_config(
            "iptablesAdminChainName is longer than 28 characters"
        ));
    }
    let ingress = match c.ingress_policy.as_str() {
        "" | "open" => Ingress::Open,
        "same-bridge" => Ingress::SameBridge,
        "isolated" => Ingress::Isolated,
        other => bail!(CniError::invalid_config(format!("unknown ingress policy: {other:?}"))),
    };
    Ok((c, ingress))
}

fn table() -> Table {
    Table::new(Family::Inet, TABLE).with_comment(FORWARD_COMMENT)
}

fn bridge_table() -> Table {
    Table::new(Family::Bridge, TABLE).with_comment(FORWARD_COMMENT)
}

fn ingress_comment(i: Ingress) -> &'static str {
    match i {
        Ingress::Isolated => "CNI firewall plugin rules (ingressPolicy: isolated)",
        _ => "CNI firewall plugin rules (ingressPolicy: same-bridge)",
    }
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

fn add(args: &CmdArgs) -> Result<CniResult> {
    let (conf, ingress) = parse_conf(&args.stdin)?;
    let Some(prev) = conf.net.prev_result()? else {
        bail!("must be called as chained plugin");
    };
    let sock = NftSocket::open()?;
    let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
    let t = table();
    let have = sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?;
    let mut b = Batch::new();
    b.add_table(&t);
    for c in [CNI_FORWARD, &conf.admin_chain, STAGE1, STAGE2] {
        b.add_chain(&Chain::regular(&t, c));
    }
    let fwd = Chain::base(
        &t,
        FORWARD,
        ChainType::Filter,
        Hook::Forward,
        priority::FILTER,
        Policy::Accept,
    );
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
    // The admin chain is evaluated first, so operators can override the accepts.
    let admin_jump = RuleBuilder::new(&t, CNI_FORWARD)
        .jump(&conf.admin_chain)
        .comment(ADMIN_COMMENT)
        .build();
    if !have.iter().any(|r| r.exprs == admin_jump.exprs) {
        b.add_rule(&admin_jump, Position::Prepend);
    }
    for r in have.iter().filter(|r| r.comment.as_deref() == Some(comment.as_str())) {
        b.del_rule(&t, CNI_FORWARD, r.handle.unwrap_or_default());
    }
    for r in pod_rules(&prev, &comment) {
        b.add_rule(&r, Position::Append);
    }
    if ingress != Ingress::Open {
        add_isolation(&sock, &mut b, &prev, ingress, &comment)?;
    }
    b.commit(&sock).context("failed to set up firewall rules")?;
    Ok(prev)
}

/// The reference's two-stage isolation for the bridge `prevResult.interfaces[0]`.
fn add_isolation(sock: &NftSocket, b: &mut Batch, prev: &CniResult, ingress: Ingress, comment: &str) -> Result<()> {
    let Some(br) = prev
        .interfaces
        .first()
        .map(|i| i.name.as_str())
        .filter(|n| !n.is_empty())
    else {
        bail!("interface needs to be set for ingress policy, make sure to chain \"firewall\" plugin with \"bridge\"");
    };
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
        b.add_chain(&Chain::base(
            &bt,
            FORWARD,
            ChainType::Filter,
            Hook::Forward,
            priority::FILTER,
            Policy::Accept,
        ));
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

/// Removes this attachment's rules from CNI-FORWARD, by comment (no prevResult needed), and
/// the reference's per-IP accepts in iptables' `CNI-FORWARD` (made before a node swap), in one
/// batch. Those carry no comment: their IPs come from prevResult or, without one, from the
/// reference's masquerade and port-mapping rules of the attachment (their DELs run after this
/// one in a chain). The chains and the per-bridge isolation rules stay, as in the reference.
fn del(args: &CmdArgs) -> Result<()> {
    let (conf, _) = parse_conf(&args.stdin)?;
    let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
    let sock = NftSocket::open()?;
    let t = table();
    let mut b = Batch::new();
    for r in sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)? {
        if r.comment.as_deref() == Some(comment.as_str()) {
            b.del_rule(&t, CNI_FORWARD, r.handle.unwrap_or_default());
        }
    }
    let bt = bridge_table();
    for r in sock.list_rules(Family::Bridge, TABLE, FORWARD)? {
        if r.comment.as_deref() == Some(comment.as_str()) {
            b.del_rule(&bt, FORWARD, r.handle.unwrap_or_default());
        }
    }
    let ips: Vec<IpAddr> = match conf.net.prev_result().ok().flatten() {
        Some(prev) => prev.ips.iter().map(|i| i.address.addr()).collect(),
        None => reference::attachment_ips(&sock, &conf.net.name, &args.container_id)?,
    };
    if reference::plan_forward_removal(&sock, &mut b, &ips)? == 0 && !ips.is_empty() {
        reference::note_if_legacy("filter", "firewall rules");
    }
    if !b.is_empty() {
        b.commit(&sock).context("failed to remove firewall rules")?;
    }
    Ok(())
}

// ---- CHECK -------------------------------------------------------------------------------

/// Our rules for every address, or (a pod the reference made before a node swap) the
/// reference's accepts in iptables' `CNI-FORWARD`.
fn check(args: &CmdArgs) -> Result<()> {
    let (conf, _) = parse_conf(&args.stdin)?;
    let Some(prev) = conf.net.prev_result()? else {
        bail!("must be called as chained plugin");
    };
    let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
    let sock = NftSocket::open()?;
    let have = sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?;
    let admin = RuleBuilder::new(&table(), CNI_FORWARD).jump(&conf.admin_chain).build();
    let has_admin = have.iter().any(|r| r.exprs == admin.exprs);
    let all_ours = pod_rules(&prev, &comment)
        .iter()
        .all(|want| have.iter().any(|r| r.comment == want.comment && r.exprs == want.exprs));
    if has_admin && all_ours {
        return Ok(());
    }
    let mut theirs = true;
    for ip in &prev.ips {
        theirs &= reference::forward_intact(&sock, ip.address.addr())?;
    }
    if theirs && !prev.ips.is_empty() {
        return Ok(());
    }
    if !has_admin {
        bail!("{CNI_FORWARD} does not jump to {}", conf.admin_chain);
    }
    bail!(
        "missing firewall rule in inet {TABLE} {CNI_FORWARD} for {}",
        args.container_id
    )
}

#[cfg(test)]
mod tests {
    use super::parse_conf;

    #[test]
    fn firewalld_zone_of_the_wrong_type_is_a_config_error() {
        let base = r#""cniVersion": "1.0.0", "name": "n", "type": "firewall""#;
        for bad in ["42", "true", "[\"a\"]", "{\"z\": 1}"] {
            let conf = format!("{{{base}, \"firewalldZone\": {bad}}}");
            let e = parse_conf(conf.as_bytes()).expect_err(bad);
            let c = e.downcast_ref::<crate::cni::error::CniError>().expect("a CNI error");
            assert_eq!(c.code, crate::cni::error::code::INVALID_CONFIG, "{bad}: {}", c.msg);
        }
        let ok = format!("{{{base}, \"firewalldZone\": \"trusted\"}}");
        assert!(parse_conf(ok.as_bytes()).is_ok());
    }
}
