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
//! found again by comment (through the handles recorded at ADD, `pkg::nft_records`, while the
//! stamp — the admin jump's handle — holds; else by a dump), so DEL works without prevResult; `isolated` also drops frames bridged
//! between two ports of the bridge (the iptables rule only sees them with br_netfilter loaded).
//! As in the reference, isolation rules are per bridge and never torn down.
//!
//! Beside iptables: an accept in our table cannot undo a drop in another table's base chain
//! on the same hook (`iptables -P FORWARD DROP`, as Docker and hardening guides set it). So
//! when the node uses iptables (iptables-nft's `ip filter`/`ip6 filter` table has a `FORWARD`
//! chain), the reference's own iptables rules are written too, encoded as iptables-nft
//! encodes them (so `iptables -S` prints them as the reference's and the reference's DEL
//! removes them):
//!
//! ```text
//! -A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD       (position 1)
//! -A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN
//! -A CNI-FORWARD -d 10.88.0.5/32 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//! -A CNI-FORWARD -s 10.88.0.5/32 -j ACCEPT
//! -A FORWARD -m comment --comment "…(ingressPolicy: same-bridge)" -j CNI-ISOLATION-STAGE-1
//! -A CNI-ISOLATION-STAGE-1 -i br ! -o br -m comment --comment "…" -j CNI-ISOLATION-STAGE-2
//! -A CNI-ISOLATION-STAGE-1 -m comment --comment "…" -j RETURN
//! -A CNI-ISOLATION-STAGE-2 -o br -m comment --comment "…" -j DROP
//! -A CNI-ISOLATION-STAGE-2 -m comment --comment "…" -j RETURN
//! ```
//!
//! `backend`: `"nftables"` = our table only; `"iptables"` = the reference's rules only (the
//! filter table and its FORWARD chain are created if missing); empty = our table, plus the
//! reference's rules in each family whose iptables FORWARD chain exists. DEL always removes
//! the attachment's rules of both kinds (the per-IP iptables rules carry no comment: their
//! addresses come from prevResult and from our own commented rules).

use std::net::IpAddr;

use crate::cni::gokeys::GoKeys;
use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cni::config::{self, NetConf};
use crate::cni::error::{code, CniError};
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::nft::{
    ct_state, priority,
    xt::{self, IptRule},
    Batch, Chain, ChainType, CmpOp, Family, Hook, NftSocket, Policy, Position, Rule, RuleBuilder, Table,
};
use crate::pkg::nft_records::{self as records, Recorded, Records};
use crate::pkg::reference_iptables as reference;
use crate::pkg::sha512::hex_prefix;

pub static PLUGIN: Plugin = entry::<Firewall>();

struct Firewall;

pub const TABLE: &str = "cni_firewall";
pub const FORWARD: &str = "forward";
pub const CNI_FORWARD: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";

// ---- config ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
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

/// Where the rules go (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Auto,
    Iptables,
    Nftables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    Open,
    SameBridge,
    Isolated,
}

fn parse_conf(stdin: &[u8]) -> Result<(FirewallConf, Ingress, Backend)> {
    let mut c: FirewallConf = config::parse(stdin)?;
    let backend = match c.backend.as_str() {
        "" => Backend::Auto,
        "iptables" => Backend::Iptables,
        "nftables" => Backend::Nftables,
        "firewalld" => bail!(CniError::new(
            code::UNSUPPORTED_FIELD,
            "backend \"firewalld\" is not supported: cni-multi talks to no D-Bus; it programs the \
             iptables backend's rules over netlink (use backend \"iptables\" or \"nftables\", or leave \
             it empty)"
        )),
        other => bail!(CniError::invalid_config(format!("unknown firewall backend {other:?}"))),
    };
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
    Ok((c, ingress, backend))
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

impl CniPlugin for Firewall {
    const NAME: &'static str = "firewall";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "allow traffic to and from the container; optional bridge isolation (nftables)";
    const VERSIONS: &'static [&'static str] = &["0.4.0", "1.0.0", "1.1.0"];
    const HAS_STATUS: bool = false;
    const HAS_GC: bool = false;
    type Conf = (FirewallConf, Ingress, Backend);
    type Lenient = (FirewallConf, Ingress, Backend);

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        parse_conf(&args.stdin)
    }
    fn add((conf, ingress, backend): (FirewallConf, Ingress, Backend), args: &CmdArgs) -> Result<CniResult> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        let bridge = if ingress == Ingress::Open {
            None
        } else {
            Some(bridge_name(&prev)?)
        };
        let sock = NftSocket::open()?;
        let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        if backend != Backend::Nftables {
            warn_legacy(&prev);
        }
        // Shared rules are added only when missing: pods added in parallel would each add them
        // (seen: three FORWARD jumps from twelve parallel ADDs). So the batch is committed only at
        // the generation its listings saw, and rebuilt when another writer came in between.
        let key = records::key(&hex_prefix(&conf.net.name, 16), &args.ifname, &args.container_id);
        let rec = Records::open(&sock, Family::Inet, TABLE);
        let mut plan = None;
        if backend != Backend::Iptables {
            rec.put_pending(&key);
        }
        let handles = Batch::build_and_commit_echo(&sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
            if backend != Backend::Iptables {
                plan = Some(add_nft(&sock, b, &rec, &key, &conf, &prev, ingress, &comment)?);
            }
            for (f, ips) in ipt_families(&sock, backend, &prev)? {
                ipt_add(&sock, b, f, &ips, &conf.admin_chain, ingress, bridge)?;
            }
            Ok(())
        })
        .context("failed to set up firewall rules")?;
        if let Some(p) = plan {
            p.record(&rec, &key, &handles);
        }
        Ok(prev)
    }
    /// Removes this attachment's rules from CNI-FORWARD of our table, by comment (no prevResult
    /// needed), and the per-IP accepts in iptables' `CNI-FORWARD` (ours, or the reference's from
    /// before a node swap: the same rules), in one batch, whatever the backend. Those carry no
    /// comment: their IPs come from prevResult or, without one, from our commented rules and from
    /// the reference's masquerade and port-mapping rules of the attachment (their DELs run after
    /// this one in a chain). The chains and the per-bridge isolation rules stay, as in the reference.
    fn del((conf, _, _): (FirewallConf, Ingress, Backend), args: &CmdArgs) -> Result<()> {
        let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        // A prevResult that does not parse must not keep the rules we can find by comment.
        let prev = conf.net.prev_result().ok().flatten();
        let sock = NftSocket::open()?;
        let t = table();
        let mut b = Batch::new();
        let mut ips: Vec<IpAddr> = prev
            .iter()
            .flat_map(|p| p.ips.iter().map(|i| i.address.addr()))
            .collect();
        let key = records::key(&hex_prefix(&conf.net.name, 16), &args.ifname, &args.container_id);
        let rec = Records::open(&sock, Family::Inet, TABLE);
        let admin_jump = RuleBuilder::new(&t, CNI_FORWARD)
            .jump(&conf.admin_chain)
            .comment(ADMIN_COMMENT)
            .build();
        let recorded = match rec.get(&key) {
            Recorded::Rules(r) if stamped_admin(&sock, &rec, &admin_jump)?.is_some() => {
                records::verify(&sock, Family::Inet, TABLE, &r, &|c| c == comment)?
            }
            _ => None,
        };
        let ours = match recorded {
            Some(rules) => rules,
            None => sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?,
        };
        for r in ours {
            if r.comment.as_deref() == Some(comment.as_str()) {
                b.del_rule(&t, CNI_FORWARD, r.handle.unwrap_or_default());
                ips.extend(xt::full_addresses(&r.exprs));
            }
        }
        ips.sort();
        ips.dedup();
        let bt = bridge_table();
        for r in sock.list_rules(Family::Bridge, TABLE, FORWARD)? {
            if r.comment.as_deref() == Some(comment.as_str()) {
                b.del_rule(&bt, FORWARD, r.handle.unwrap_or_default());
            }
        }
        if prev.is_none() {
            for ip in reference::attachment_ips(&sock, &conf.net.name, &args.container_id)? {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if reference::plan_forward_removal(&sock, &mut b, &ips)? == 0 && !ips.is_empty() {
            reference::note_if_legacy("filter", "firewall rules");
        }
        if !b.is_empty() {
            b.commit(&sock).context("failed to remove firewall rules")?;
        }
        rec.forget(&key);
        Ok(())
    }
    /// Our rules for every address, or (a pod the reference made before a node swap) the
    /// reference's accepts in iptables' `CNI-FORWARD`.
    fn check((conf, _, backend): (FirewallConf, Ingress, Backend), args: &CmdArgs) -> Result<()> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        let sock = NftSocket::open()?;
        let ipt = ipt_families(&sock, backend, &prev)?;
        for (f, ips) in &ipt {
            ipt_check(&sock, *f, ips, &conf.admin_chain, &args.container_id)?;
        }
        let nft = check_nft(&sock, &conf, &prev, &comment, &args.container_id);
        match backend {
            Backend::Iptables => Ok(()),
            Backend::Nftables => nft,
            // A pod the reference made has only the iptables rules: healthy when they cover
            // every family of the result.
            Backend::Auto => {
                let covered = ipt.iter().map(|(_, ips)| ips.len()).sum::<usize>() == prev.ips.len();
                if covered && !prev.ips.is_empty() {
                    Ok(())
                } else {
                    nft
                }
            }
        }
    }
}

/// Where ADD's batch put what the records need: the pod's rules (index, count) and the
/// admin jump (its handle when it was there, else its index in the batch).
struct NftPlan {
    pods: (usize, usize),
    admin: Result<u64, usize>,
    /// The records are complete (the stamp held, or the dump rewrote them).
    complete: bool,
    stamped: Option<u64>,
}

impl NftPlan {
    fn record(&self, rec: &Records, key: &str, handles: &[Option<u64>]) {
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

/// Our own table's rules (see the module doc).
#[allow(clippy::too_many_arguments)]
fn add_nft(
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
    let admin_jump = RuleBuilder::new(&t, CNI_FORWARD)
        .jump(&conf.admin_chain)
        .comment(ADMIN_COMMENT)
        .build();
    // This attachment's old rules and the admin jump: from the records while their stamp
    // holds, else from a dump of CNI-FORWARD (which writes the records again).
    let stamped = stamped_admin(sock, rec, &admin_jump)?;
    let from_record = match (stamped, rec.get(key)) {
        (Some(_), Recorded::Missing) => Some(Vec::new()),
        (Some(_), Recorded::Rules(r)) => records::verify(sock, Family::Inet, TABLE, &r, &|c| c == comment)?,
        _ => None,
    };
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

/// The bridge of an ingress policy: `prevResult.interfaces[0]`, as in the reference.
fn bridge_name(prev: &CniResult) -> Result<&str> {
    match prev.interfaces.first().map(|i| i.name.as_str()) {
        Some(n) if !n.is_empty() => Ok(n),
        _ => bail!(
            "interface needs to be set for ingress policy, make sure to chain \"firewall\" plugin with \"bridge\""
        ),
    }
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

// ---- the reference's rules in iptables-nft's filter tables --------------------------------

const IPT_TABLE: &str = "filter";
const IPT_FORWARD: &str = "FORWARD";

fn ipt_table(f: Family) -> Table {
    Table::new(f, IPT_TABLE)
}

/// The families (`ip`, `ip6`) whose iptables rules this attachment gets, each with its
/// addresses: with `backend: "iptables"` every family of the result, by default those whose
/// iptables FORWARD chain exists (the node uses iptables there).
fn ipt_families(sock: &NftSocket, backend: Backend, prev: &CniResult) -> Result<Vec<(Family, Vec<IpAddr>)>> {
    let ips: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
    ipt_families_of(sock, backend, &ips)
}

fn ipt_families_of(sock: &NftSocket, backend: Backend, ips: &[IpAddr]) -> Result<Vec<(Family, Vec<IpAddr>)>> {
    let mut out = Vec::new();
    if backend == Backend::Nftables {
        return Ok(out);
    }
    for (f, v6) in [(Family::Ip, false), (Family::Ip6, true)] {
        let mine: Vec<IpAddr> = ips.iter().copied().filter(|a| a.is_ipv6() == v6).collect();
        if mine.is_empty() {
            continue;
        }
        if backend == Backend::Iptables || sock.chain_exists(f, IPT_TABLE, IPT_FORWARD)? {
            out.push((f, mine));
        }
    }
    Ok(out)
}

fn ipt_forward_jump(t: &Table) -> Rule {
    IptRule::new(t, IPT_FORWARD).comment(FORWARD_COMMENT).jump(CNI_FORWARD)
}

fn ipt_admin_jump(t: &Table, admin: &str) -> Rule {
    IptRule::new(t, CNI_FORWARD).comment(ADMIN_COMMENT).jump(admin)
}

/// The reference's per-address rules (`getPrivChainRules`).
fn ipt_pod_rules(t: &Table, ip: IpAddr) -> [Rule; 2] {
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
fn warn_legacy(prev: &CniResult) {
    for (v6, tool) in [(false, "iptables"), (true, "ip6tables")] {
        if prev.ips.iter().any(|i| i.address.addr().is_ipv6() == v6)
            && crate::linux::nft::iptables::legacy_tables(v6)
                .iter()
                .any(|t| t == IPT_TABLE)
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

/// The reference's ADD in one family's filter table, in its order: chains, the FORWARD jump
/// and the admin jump at position 1, the per-address rules appended, then the isolation.
fn ipt_add(
    sock: &NftSocket,
    b: &mut Batch,
    f: Family,
    ips: &[IpAddr],
    admin: &str,
    ingress: Ingress,
    bridge: Option<&str>,
) -> Result<()> {
    let t = ipt_table(f);
    let chains: Vec<String> = sock.list_chains(f, IPT_TABLE)?.into_iter().map(|c| c.name).collect();
    if chains.is_empty() && !sock.table_exists(f, IPT_TABLE)? {
        b.add_table(&t);
    }
    // Only missing chains are sent: re-adding an existing base chain would reset its policy.
    if !chains.iter().any(|c| c == IPT_FORWARD) {
        b.add_chain(&Chain::base(
            &t,
            IPT_FORWARD,
            ChainType::Filter,
            Hook::Forward,
            priority::FILTER,
            Policy::Accept,
        ));
    }
    let ensure = |b: &mut Batch, name: &str| {
        if !chains.iter().any(|c| c == name) {
            b.add_chain(&Chain::regular(&t, name));
        }
    };
    ensure(b, CNI_FORWARD);
    ensure(b, admin);
    let fwd = sock.list_rules(f, IPT_TABLE, IPT_FORWARD)?;
    insert_unique(b, &fwd, ipt_forward_jump(&t), Position::Prepend);
    let have = sock.list_rules(f, IPT_TABLE, CNI_FORWARD)?;
    insert_unique(b, &have, ipt_admin_jump(&t, admin), Position::Prepend);
    for ip in ips {
        for r in ipt_pod_rules(&t, *ip) {
            insert_unique(b, &have, r, Position::Append);
        }
    }
    let Some(br) = bridge else {
        return Ok(());
    };
    ensure(b, STAGE1);
    ensure(b, STAGE2);
    let shared = ingress_comment(Ingress::SameBridge);
    let c = ingress_comment(ingress);
    insert_unique(
        b,
        &fwd,
        IptRule::new(&t, IPT_FORWARD).comment(shared).jump(STAGE1),
        Position::Prepend,
    );
    let s1 = sock.list_rules(f, IPT_TABLE, STAGE1)?;
    let s2 = sock.list_rules(f, IPT_TABLE, STAGE2)?;
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
        &s2,
        IptRule::new(&t, STAGE2).out_iface(br, false).comment(c).jump("DROP"),
        Position::Prepend,
    );
    insert_unique(
        b,
        &s1,
        IptRule::new(&t, STAGE1).comment(shared).jump("RETURN"),
        Position::Append,
    );
    insert_unique(
        b,
        &s2,
        IptRule::new(&t, STAGE2).comment(shared).jump("RETURN"),
        Position::Append,
    );
    Ok(())
}

/// The reference's CHECK in one family: both jumps and every per-address rule.
fn ipt_check(sock: &NftSocket, f: Family, ips: &[IpAddr], admin: &str, cid: &str) -> Result<()> {
    let t = ipt_table(f);
    let fwd = sock.list_rules(f, IPT_TABLE, IPT_FORWARD)?;
    let jump = ipt_forward_jump(&t);
    if !fwd.iter().any(|r| xt::same_rule(&r.exprs, &jump.exprs)) {
        bail!("iptables ({f} filter) {IPT_FORWARD} does not jump to {CNI_FORWARD}");
    }
    let have = sock.list_rules(f, IPT_TABLE, CNI_FORWARD)?;
    let jump = ipt_admin_jump(&t, admin);
    if !have.iter().any(|r| xt::same_rule(&r.exprs, &jump.exprs)) {
        bail!("iptables ({f} filter) {CNI_FORWARD} does not jump to {admin}");
    }
    for ip in ips {
        for want in ipt_pod_rules(&t, *ip) {
            if !have.iter().any(|r| xt::same_rule(&r.exprs, &want.exprs)) {
                bail!("missing iptables rule in {f} filter {CNI_FORWARD} for {ip} of {cid}");
            }
        }
    }
    Ok(())
}

// ---- DEL ---------------------------------------------------------------------------------

// ---- CHECK -------------------------------------------------------------------------------

fn check_nft(sock: &NftSocket, conf: &FirewallConf, prev: &CniResult, comment: &str, cid: &str) -> Result<()> {
    let have = sock.list_rules(Family::Inet, TABLE, CNI_FORWARD)?;
    let admin = RuleBuilder::new(&table(), CNI_FORWARD).jump(&conf.admin_chain).build();
    let has_admin = have.iter().any(|r| r.exprs == admin.exprs);
    let all_ours = pod_rules(prev, comment)
        .iter()
        .all(|want| have.iter().any(|r| r.comment == want.comment && r.exprs == want.exprs));
    if has_admin && all_ours {
        return Ok(());
    }
    let mut theirs = true;
    for ip in &prev.ips {
        theirs &= reference::forward_intact(sock, ip.address.addr())?;
    }
    if theirs && !prev.ips.is_empty() {
        return Ok(());
    }
    if !has_admin {
        bail!("{CNI_FORWARD} does not jump to {}", conf.admin_chain);
    }
    bail!("missing firewall rule in inet {TABLE} {CNI_FORWARD} for {cid}")
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
