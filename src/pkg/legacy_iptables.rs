//! The reference plugins' iptables rules on a node whose iptables is legacy (x_tables,
//! `iptables-legacy`): ipMasq (bridge, ptp), portmap and the firewall, IPv4 and IPv6, written,
//! checked and removed as the reference does it through `iptables-legacy`, so that
//! `iptables-legacy-save` shows the same rules after either's ADD and either's DEL removes
//! the other's.
//!
//! Each change is described once as a [`Plan`]: a table and its [`Step`]s ("this chain exists",
//! "this rule is there, first or last", "this rule is gone", "this chain and every jump to it
//! are gone"), layout-neutral data in iptables' own terms ([`Rule`] is what an `iptables`
//! command line states). [`apply`] carries plans out in x_tables (`linux::xtables`: one whole
//! table replace per plan, under the xtables lock, redone when a writer that takes no lock
//! came in between); [`check`] verifies them. The same plans could be rendered for
//! iptables-nft; the plugins' iptables-nft rules are still written by `masq_iptables`,
//! `portmap_iptables` and the firewall.
//!
//! DEL plans only remove: on a table x_tables has not registered in this namespace they do
//! nothing (reading a table registers it; a node that never used iptables-legacy stays so).

use std::net::IpAddr;

use anyhow::{anyhow, Result};
use ipnet::IpNet;

use super::reference_iptables::{dnat_chain, dnat_comment, masq_chain, masq_comment, PortmapKeys};
use crate::linux::nft::xt;
use crate::linux::xtables::{self, ext, Family, Policy, Rule, Table};

pub const NAT: &str = "nat";
pub const FILTER: &str = "filter";

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `iptables -N CHAIN` unless it exists.
    Chain(String),
    /// The rule is in `chain` (added first with `prepend`, else last, unless an equal rule is
    /// there: the reference's `InsertUnique`/`AppendUnique`).
    Rule { chain: String, rule: Rule, prepend: bool },
    /// Every rule of `chain` equal to this one is gone (`iptables -D`, quietly).
    Delete { chain: String, rule: Rule },
    /// The chain, its rules and every rule jumping to it are gone (`-F`, `-D …`, `-X`).
    RemoveChain(String),
}

/// Steps in one table of one family, carried out as one replace of that table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub family: Family,
    pub table: &'static str,
    pub steps: Vec<Step>,
}

impl Plan {
    fn new(family: Family, table: &'static str) -> Plan {
        Plan {
            family,
            table,
            steps: Vec::new(),
        }
    }

    fn chain(&mut self, name: &str) {
        self.steps.push(Step::Chain(name.to_string()));
    }

    fn rule(&mut self, chain: &str, rule: Rule, prepend: bool) {
        self.steps.push(Step::Rule {
            chain: chain.to_string(),
            rule,
            prepend,
        });
    }

    /// Whether the plan adds anything (a plan that only removes never registers a table).
    pub fn adds(&self) -> bool {
        self.steps
            .iter()
            .any(|s| matches!(s, Step::Chain(_) | Step::Rule { .. }))
    }

    /// Carries the steps out on a table model; whether anything changed.
    pub fn apply_to(&self, t: &mut Table) -> std::result::Result<bool, String> {
        let mut changed = false;
        for s in &self.steps {
            changed |= match s {
                Step::Chain(c) => t.ensure_chain(c)?,
                Step::Rule { chain, rule, prepend } => t.insert_unique(chain, rule.clone(), *prepend)?,
                Step::Delete { chain, rule } => t.delete_rules(chain, |r| r.same_as(rule)) > 0,
                Step::RemoveChain(c) => t.remove_chain(c),
            };
        }
        Ok(changed)
    }

    /// What a table lacks of the plan's chains and rules (removals are not checked).
    pub fn missing_in(&self, t: &Table) -> Option<String> {
        self.steps.iter().find_map(|s| match s {
            Step::Chain(c) if !t.has_chain(c) => Some(format!("chain {c} does not exist")),
            Step::Rule { chain, rule, .. } if !t.rules(chain).iter().any(|r| r.same_as(rule)) => {
                Some(format!("a rule of {chain} is missing ({})", describe(rule)))
            }
            _ => None,
        })
    }
}

/// A short human description of a rule for CHECK's messages.
fn describe(r: &Rule) -> String {
    let mut s = Vec::new();
    if let Some(a) = r.src.prefix().filter(|_| !r.src.is_any()) {
        s.push(format!("-s {a}"));
    }
    if let Some(a) = r.dst.prefix().filter(|_| !r.dst.is_any()) {
        s.push(format!("-d {a}"));
    }
    if let Some(c) = r.comment_text() {
        s.push(format!("--comment {c:?}"));
    }
    match &r.target {
        xtables::Target::Ext(x) => s.push(format!("-j {}", x.name)),
        t => s.push(format!("-j {t:?}")),
    }
    s.join(" ")
}

/// Carries the plans out in x_tables, each as one table replace, all under one hold of the
/// xtables lock. Plans that only remove skip tables not registered in this namespace.
pub fn apply(plans: &[Plan]) -> Result<()> {
    let todo: Vec<&Plan> = plans
        .iter()
        .filter(|p| !p.steps.is_empty())
        .filter(|p| p.adds() || xtables::registered(p.family).iter().any(|t| t == p.table))
        .collect();
    if todo.is_empty() {
        // A node that never used iptables-legacy: not even the lock is taken.
        return Ok(());
    }
    let lock = xtables::lock()?;
    for p in todo {
        xtables::modify_locked(&lock, p.family, p.table, |t| p.apply_to(t))
            .map_err(|e| anyhow!("{} (legacy {} {}): {e}", p.family.tool(), p.family, p.table))?;
    }
    Ok(())
}

/// Verifies that every chain and rule of the plans is in x_tables.
pub fn check(plans: &[Plan]) -> Result<()> {
    for p in plans {
        let what = format!("{} table {}", p.family.tool(), p.table);
        let Some(t) = xtables::read_if_registered(p.family, p.table)? else {
            if p.adds() {
                return Err(anyhow!("{what} does not exist"));
            }
            continue;
        };
        if let Some(m) = p.missing_in(&t) {
            return Err(anyhow!("{what}: {m}"));
        }
    }
    Ok(())
}

fn family_of(ip: IpAddr) -> Family {
    Family::of(ip.is_ipv6())
}

// ---- ipMasq (bridge, ptp; `pkg/ip/ipmasq_linux.go`) ---------------------------------------

pub const POSTROUTING: &str = "POSTROUTING";

/// ADD: per family of `ips`, the attachment's chain and, per address, its two rules and the
/// POSTROUTING jump, appended as the reference appends them:
///
/// ```text
/// -A CNI-<h24> -d 10.1.0.0/24 -m comment --comment "name: \"net\" id: \"cid\"" -j ACCEPT
/// -A CNI-<h24> ! -d 224.0.0.0/4 -m comment --comment "…" -j MASQUERADE      (v6: ff00::/8)
/// -A POSTROUTING -s 10.1.0.5/32 -m comment --comment "…" -j CNI-<h24>
/// ```
pub fn masq_add(network: &str, container_id: &str, ips: &[IpNet]) -> Vec<Plan> {
    let chain = masq_chain(network, container_id);
    let comment = masq_comment(network, container_id);
    let mut plans: Vec<Plan> = Vec::new();
    for f in [Family::V4, Family::V6] {
        let mine: Vec<IpNet> = ips.iter().copied().filter(|i| family_of(i.addr()) == f).collect();
        if mine.is_empty() {
            continue;
        }
        let mut p = Plan::new(f, NAT);
        p.chain(&chain);
        let multicast: IpNet = if f.is_v6() { "ff00::/8" } else { "224.0.0.0/4" }.parse().unwrap();
        for ip in mine {
            p.rule(
                &chain,
                Rule::new(f).dst(ip.trunc(), false).comment(&comment).jump("ACCEPT"),
                false,
            );
            p.rule(
                &chain,
                Rule::new(f)
                    .dst(multicast, true)
                    .comment(&comment)
                    .target(xt::masquerade_target(f.is_v6())),
                false,
            );
            p.rule(
                POSTROUTING,
                Rule::new(f).src(ip.addr(), false).comment(&comment).jump(&chain),
                false,
            );
        }
        plans.push(p);
    }
    plans
}

/// DEL, both families: the attachment's chain and the POSTROUTING jumps to it (whatever
/// address they name: the reference's older `-s <ip>/<prefix>` form too).
pub fn masq_del(network: &str, container_id: &str) -> Vec<Plan> {
    let chain = masq_chain(network, container_id);
    [Family::V4, Family::V6]
        .map(|f| Plan {
            family: f,
            table: NAT,
            steps: vec![Step::RemoveChain(chain.clone())],
        })
        .to_vec()
}

// ---- portmap (`plugins/meta/portmap/portmap.go`) ------------------------------------------

pub const HOSTPORT_DNAT: &str = "CNI-HOSTPORT-DNAT";
pub const HOSTPORT_SETMARK: &str = "CNI-HOSTPORT-SETMARK";
pub const HOSTPORT_MASQ: &str = "CNI-HOSTPORT-MASQ";
const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";
/// `1 << RTN_LOCAL`.
const ADDRTYPE_LOCAL: u16 = 1 << 2;
const MULTIPORT_MAX: usize = 15;

/// One port mapping, as the portmap plugin validated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    /// 6 (tcp), 17 (udp) or 132 (sctp).
    pub proto: u8,
    pub host_ip: Option<IpAddr>,
}

/// portmap's keys the rules depend on; the conditions were parsed by the caller (`-i`, `-s`,
/// `-m comment`, `-m tcp --sport` …).
pub type Portmap<'a> = PortmapKeys<'a, Option<&'a dyn Fn(Rule) -> Rule>>;

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        132 => "sctp",
        _ => "",
    }
}

/// The old per-container SNAT chain of portmap before 0.7, removed on DEL as the reference does.
fn old_snat_chain(network: &str, container_id: &str) -> String {
    super::reference_iptables::chain_name("SN-", network, container_id)
}

/// ADD for one container address (the reference's `forwardPorts`): the shared chains (mark,
/// masquerade, top-level DNAT) and the attachment's `CNI-DN-…` chain, rebuilt from scratch.
pub fn portmap_add(p: &Portmap, maps: &[HostPort], container: IpNet) -> Plan {
    let f = family_of(container.addr());
    let mut plan = Plan::new(f, NAT);
    let r = || Rule::new(f);
    let mark = 1u32 << p.mark_bit;
    if p.snat && p.external_setmark.is_none() {
        plan.chain(HOSTPORT_SETMARK);
        plan.rule(
            HOSTPORT_SETMARK,
            r().comment(SETMARK_COMMENT).target(xt::mark_target(mark, mark)),
            false,
        );
        plan.chain(HOSTPORT_MASQ);
        plan.rule(
            HOSTPORT_MASQ,
            r().mark(mark, mark).target(xt::masquerade_target(f.is_v6())),
            false,
        );
        // First, so that ipMasq's rules cannot stomp on it.
        plan.rule(POSTROUTING, r().comment(MASQ_COMMENT).jump(HOSTPORT_MASQ), true);
    }
    plan.chain(HOSTPORT_DNAT);
    for entry in ["PREROUTING", "OUTPUT"] {
        plan.rule(entry, r().addrtype_dst(ADDRTYPE_LOCAL).jump(HOSTPORT_DNAT), false);
    }
    let dn = dnat_chain(p.network, p.container_id);
    // A stale chain of the same attachment goes first.
    plan.steps.push(Step::RemoveChain(dn.clone()));
    plan.chain(&dn);
    let setmark = p.external_setmark.unwrap_or(HOSTPORT_SETMARK);
    for m in maps {
        // A hostIP of the other family skips the mapping; an unspecified one matches any.
        let dst = match m.host_ip {
            Some(ip) if family_of(ip) != f => continue,
            Some(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let base = || {
            let b = r().proto(m.proto).dport(m.host_port);
            match dst {
                Some(d) => b.dst(d, false),
                None => b,
            }
        };
        if p.snat {
            // masqAll's `-s 0.0.0.0/0` is no source match at all, as iptables stores it.
            let hairpin = if p.masq_all {
                base()
            } else {
                base().src(container.trunc(), false)
            };
            plan.rule(&dn, hairpin.jump(setmark), false);
            if !f.is_v6() && !p.masq_all {
                let lo: IpAddr = "127.0.0.1".parse().unwrap();
                plan.rule(&dn, base().src(lo, false).jump(setmark), false);
            }
        }
        plan.rule(
            &dn,
            base().target(xt::dnat_target(container.addr(), Some(m.container_port))),
            false,
        );
    }
    let comment = dnat_comment(p.network, p.container_id);
    let mut protos: Vec<u8> = maps.iter().map(|m| m.proto).collect();
    protos.sort_by_key(|p| proto_name(*p));
    protos.dedup();
    for proto in protos {
        let ports: Vec<u16> = maps.iter().filter(|m| m.proto == proto).map(|m| m.host_port).collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            let mut entry = r().proto(proto).comment(&comment).multiport_dports(chunk);
            if let Some(c) = p.conditions {
                entry = c(entry);
            }
            plan.rule(HOSTPORT_DNAT, entry.jump(&dn), false);
        }
    }
    plan
}

/// DEL (the reference's `unforwardPorts`), both families: the attachment's DNAT chain and the
/// chain of old versions, with the jumps to them; shared chains stay.
pub fn portmap_del(network: &str, container_id: &str) -> Vec<Plan> {
    let dn = dnat_chain(network, container_id);
    let sn = old_snat_chain(network, container_id);
    [Family::V4, Family::V6]
        .map(|f| Plan {
            family: f,
            table: NAT,
            steps: vec![Step::RemoveChain(dn.clone()), Step::RemoveChain(sn.clone())],
        })
        .to_vec()
}

/// CHECK's plan (the reference's `checkPorts`): the attachment's chain, its rules and the
/// jumps to it; the shared chains are not checked, as in the reference.
pub fn portmap_check_plan(p: &Portmap, maps: &[HostPort], container: IpNet) -> Plan {
    portmap_check_of(portmap_add(p, maps, container), p.network, p.container_id)
}

/// [`portmap_check_plan`] from the ADD plan of the attachment.
pub fn portmap_check_of(mut plan: Plan, network: &str, container_id: &str) -> Plan {
    let dn = dnat_chain(network, container_id);
    plan.steps.retain(|s| match s {
        Step::Chain(c) => *c == dn,
        Step::Rule { chain, rule, .. } => *chain == dn || rule.jump_target() == Some(dn.as_str()),
        _ => false,
    });
    plan
}

// ---- firewall (`plugins/meta/firewall/iptables.go`) ---------------------------------------

pub const FORWARD: &str = "FORWARD";
pub const CNI_FORWARD: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";
const SHARED_ISOLATION: &str = "CNI firewall plugin rules (ingressPolicy: same-bridge)";
const ISOLATED: &str = "CNI firewall plugin rules (ingressPolicy: isolated)";

/// The firewall's `ingressPolicy` for the bridge `prevResult.interfaces[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation<'a> {
    SameBridge(&'a str),
    Isolated(&'a str),
}

/// The per-address accepts (`getPrivChainRules`).
fn pod_accepts(ip: IpAddr) -> [Rule; 2] {
    let f = family_of(ip);
    [
        Rule::new(f)
            .dst(ip, false)
            .ctstate(xt::ctstate::RELATED | xt::ctstate::ESTABLISHED)
            .jump("ACCEPT"),
        Rule::new(f).src(ip, false).jump("ACCEPT"),
    ]
}

/// ADD, per family of `ips`, in the reference's order: its chains, the FORWARD jump and the
/// admin jump first in their chains, the per-address accepts appended, then the isolation
/// stages of `ingressPolicy`.
pub fn firewall_add(ips: &[IpAddr], admin: &str, isolation: Option<Isolation>) -> Vec<Plan> {
    let mut plans = Vec::new();
    for f in [Family::V4, Family::V6] {
        let mine: Vec<IpAddr> = ips.iter().copied().filter(|i| family_of(*i) == f).collect();
        if mine.is_empty() {
            continue;
        }
        let r = || Rule::new(f);
        let mut p = Plan::new(f, FILTER);
        p.chain(CNI_FORWARD);
        p.chain(admin);
        p.rule(FORWARD, r().comment(FORWARD_COMMENT).jump(CNI_FORWARD), true);
        p.rule(CNI_FORWARD, r().comment(ADMIN_COMMENT).jump(admin), true);
        for ip in mine {
            for rule in pod_accepts(ip) {
                p.rule(CNI_FORWARD, rule, false);
            }
        }
        if let Some(iso) = isolation {
            let (br, c, isolated) = match iso {
                Isolation::SameBridge(b) => (b, SHARED_ISOLATION, false),
                Isolation::Isolated(b) => (b, ISOLATED, true),
            };
            p.chain(STAGE1);
            p.chain(STAGE2);
            p.rule(FORWARD, r().comment(SHARED_ISOLATION).jump(STAGE1), true);
            p.rule(
                STAGE1,
                r().in_iface(br, false).out_iface(br, true).comment(c).jump(STAGE2),
                true,
            );
            if isolated {
                // Traffic between two ports of the bridge (seen with br_netfilter only).
                p.rule(
                    STAGE1,
                    r().in_iface(br, false).out_iface(br, false).comment(c).jump("DROP"),
                    true,
                );
            }
            p.rule(STAGE2, r().out_iface(br, false).comment(c).jump("DROP"), true);
            p.rule(STAGE1, r().comment(SHARED_ISOLATION).jump("RETURN"), false);
            p.rule(STAGE2, r().comment(SHARED_ISOLATION).jump("RETURN"), false);
        }
        plans.push(p);
    }
    plans
}

/// DEL: the per-address accepts of `ips`; the chains and isolation rules stay, as in the
/// reference.
pub fn firewall_del(ips: &[IpAddr]) -> Vec<Plan> {
    let mut plans = Vec::new();
    for f in [Family::V4, Family::V6] {
        let mut p = Plan::new(f, FILTER);
        for ip in ips.iter().copied().filter(|i| family_of(*i) == f) {
            for rule in pod_accepts(ip) {
                p.steps.push(Step::Delete {
                    chain: CNI_FORWARD.into(),
                    rule,
                });
            }
        }
        if !p.steps.is_empty() {
            plans.push(p);
        }
    }
    plans
}

/// CHECK's plan (the reference's `checkRules`): the chains, both jumps and every accept.
pub fn firewall_check_plan(ips: &[IpAddr], admin: &str) -> Vec<Plan> {
    firewall_add(ips, admin, None)
}

/// The addresses the legacy nat table names for an attachment: the sources of its ipMasq
/// entry rules and the DNAT destinations of its portmap chain (the firewall's accepts carry no
/// comment: this lets its DEL find them without a prevResult).
pub fn attachment_ips(network: &str, container_id: &str) -> Result<Vec<IpAddr>> {
    let (comment, dn) = (masq_comment(network, container_id), dnat_chain(network, container_id));
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        let Some(t) = xtables::read_if_registered(f, NAT)? else {
            continue;
        };
        let masq = t
            .rules(POSTROUTING)
            .iter()
            .filter(|r| r.comment_text().as_deref() == Some(comment.as_str()) && r.jump_target().is_some())
            .filter_map(Rule::src_host);
        let dnat = t.rules(&dn).iter().filter_map(|r| dnat_addr(r.ext_target("DNAT")?));
        for ip in masq.chain(dnat) {
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// The address of a DNAT target (revisions 1 and 2: `nf_nat_range`, address at 4).
fn dnat_addr(x: &xt::Xt) -> Option<IpAddr> {
    let flags = u32::from_ne_bytes(x.info.get(..4)?.try_into().ok()?);
    let a: [u8; 16] = x.info.get(4..20)?.try_into().ok()?;
    if x.rev == 0 || flags & 1 == 0 {
        return None;
    }
    Some(if a[4..].iter().all(|&b| b == 0) {
        IpAddr::from([a[0], a[1], a[2], a[3]])
    } else {
        IpAddr::from(a)
    })
}

// ---- the node's state --------------------------------------------------------------------

/// Whether the legacy `FORWARD` chain of `f` drops what no rule accepts (policy DROP). A
/// filter table that is not registered has no such chain.
pub fn forward_drops(f: Family) -> Result<bool> {
    Ok(
        xtables::read_if_registered(f, FILTER)?.and_then(|t| t.chain(FORWARD).and_then(|c| c.policy))
            == Some(Policy::Drop),
    )
}

/// Why a firewall ADD whose accepts go to `layout` (not x_tables) must fail: a family of
/// `ips` whose legacy FORWARD policy is DROP. An accept in nf_tables cannot override a drop in
/// x_tables (each table's verdict stands), so the pod would have no forwarded traffic.
pub fn forward_drop_refusal(ips: &[IpAddr], layout: &str) -> Result<Option<String>> {
    for f in [Family::V4, Family::V6] {
        if !ips.iter().any(|i| family_of(*i) == f) || !forward_drops(f)? {
            continue;
        }
        return Ok(Some(format!(
            "the legacy FORWARD policy is DROP in this network namespace (x_tables: `{tool} -S \
             FORWARD`), but this node's firewall rules go to {layout}, where an accept cannot \
             override it: the pod would have no forwarded traffic. Make iptables-legacy the node's \
             iptables (its `iptables` tool, or legacy rules and no iptables-nft tables) so that \
             cni-multi writes the accepts into x_tables, or accept the pod's traffic in the legacy \
             FORWARD chain",
            tool = f.tool()
        )));
    }
    Ok(None)
}

/// What a firewall ADD that could not write its accepts into x_tables (the table kept
/// changing under a writer that takes no lock, the lock could not be taken, the kernel refused
/// the table) fails with: the legacy FORWARD policy named when it is DROP in a family of
/// `ips`, since the pod's forwarded traffic then depends on exactly these accepts.
pub fn firewall_add_failed(ips: &[IpAddr]) -> String {
    let drops: Vec<Family> = [Family::V4, Family::V6]
        .into_iter()
        .filter(|f| ips.iter().any(|i| family_of(*i) == *f) && forward_drops(*f).unwrap_or(false))
        .collect();
    if drops.is_empty() {
        return "failed to set up firewall rules (iptables-legacy)".into();
    }
    format!(
        "failed to set up firewall rules (iptables-legacy): the legacy FORWARD policy is DROP ({}) and \
         only these accepts in x_tables let the pod's forwarded traffic through, so ADD fails rather \
         than leave the pod without traffic",
        drops
            .iter()
            .map(|f| format!("`{} -S FORWARD`", f.tool()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whose chains [`gc`] collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// ipMasq's `CNI-<h24>` (comment `name: "<net>" id: "<cid>"`).
    Masq,
    /// portmap's `CNI-DN-<h21>` (comment `dnat name: …`, and the old `snat name: …`).
    Portmap,
}

/// GC: the `owner`'s chains (with their jumps) of `network`'s attachments whose container
/// `keep` does not name, found by their comments in the legacy nat tables.
pub fn gc(owner: Owner, network: &str, keep: &dyn Fn(&str) -> bool) -> Result<Vec<Plan>> {
    let mut plans = Vec::new();
    for f in [Family::V4, Family::V6] {
        let Some(t) = xtables::read_if_registered(f, NAT)? else {
            continue;
        };
        plans.push(gc_plan(&t, owner, network, keep));
    }
    Ok(plans)
}

fn gc_plan(t: &Table, owner: Owner, network: &str, keep: &dyn Fn(&str) -> bool) -> Plan {
    use super::reference_iptables::parse_comment;
    let kinds: &[&str] = match owner {
        Owner::Masq => &[""],
        Owner::Portmap => &["dnat ", "snat "],
    };
    let mut steps: Vec<Step> = Vec::new();
    for r in t.chains.iter().flat_map(|c| &c.rules) {
        let Some(text) = r.comment_text() else { continue };
        let Some((net, cid)) = kinds.iter().find_map(|k| parse_comment(&text, k)) else {
            continue;
        };
        let Some(chain) = r.jump_target() else { continue };
        let step = Step::RemoveChain(chain.to_string());
        if net == network && !keep(cid) && chain.starts_with("CNI-") && !steps.contains(&step) {
            steps.push(step);
        }
    }
    Plan {
        family: t.family,
        table: NAT,
        steps,
    }
}

/// (network, container ID, chain) of every per-attachment chain the reference's (or our)
/// ipMasq and portmap rules made in the legacy nat tables, found by their comments.
pub fn owners() -> Result<Vec<(String, String, String)>> {
    use super::reference_iptables::parse_comment;
    let mut out = Vec::new();
    for f in [Family::V4, Family::V6] {
        let Some(t) = xtables::read_if_registered(f, NAT)? else {
            continue;
        };
        for c in &t.chains {
            for r in &c.rules {
                let Some(text) = r.comment_text() else { continue };
                let Some((net, cid)) = ["", "dnat "].iter().find_map(|k| parse_comment(&text, k)) else {
                    continue;
                };
                let chain = r.jump_target().unwrap_or(&c.name).to_string();
                out.push((net.to_string(), cid.to_string(), chain));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The `--dport` of a rule's port match, for tests and CHECK messages.
pub fn rule_dport(r: &Rule) -> Option<u16> {
    r.matches.iter().find_map(ext::dport_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::xtables::blob::empty_table;

    fn nat(f: Family) -> Table {
        empty_table(f, NAT, 0b11011)
    }

    fn filter(f: Family) -> Table {
        let mut t = empty_table(f, FILTER, 0b1110);
        t.set_policy(FORWARD, Policy::Drop).unwrap();
        t
    }

    fn run(t: &mut Table, plans: &[Plan]) -> bool {
        let mut changed = false;
        let (f, name) = (t.family, t.name.clone());
        for p in plans.iter().filter(|p| p.family == f && p.table == name) {
            changed |= p.apply_to(t).unwrap();
        }
        changed
    }

    #[test]
    fn masq_add_is_idempotent_and_del_restores_the_table() {
        let ips: Vec<IpNet> = vec!["10.1.0.5/24".parse().unwrap(), "fd10::5/64".parse().unwrap()];
        for f in [Family::V4, Family::V6] {
            let before = nat(f);
            let mut t = before.clone();
            let add = masq_add("mynet", "cid123", &ips);
            assert_eq!(add.len(), 2);
            assert!(run(&mut t, &add));
            assert!(!run(&mut t, &add), "a second ADD changes nothing");
            let chain = masq_chain("mynet", "cid123");
            assert_eq!(t.rules(&chain).len(), 2);
            let jump = &t.rules(POSTROUTING)[0];
            assert_eq!(jump.jump_target(), Some(chain.as_str()));
            assert_eq!(jump.comment_text().unwrap(), r#"name: "mynet" id: "cid123""#);
            assert!(add.iter().all(|p| p.family != f || p.missing_in(&t).is_none()));
            assert!(run(&mut t, &masq_del("mynet", "cid123")));
            assert_eq!(t, before);
            assert!(add.iter().any(|p| p.family == f && p.missing_in(&t).is_some()));
        }
    }

    #[test]
    fn portmap_rules_and_teardown() {
        let p = Portmap {
            network: "pmnet",
            container_id: "abc123",
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_setmark: None,
            conditions: None,
        };
        let maps = [
            HostPort {
                host_port: 8080,
                container_port: 80,
                proto: 6,
                host_ip: None,
            },
            HostPort {
                host_port: 5353,
                container_port: 53,
                proto: 17,
                host_ip: Some("192.168.1.1".parse().unwrap()),
            },
            HostPort {
                host_port: 9,
                container_port: 9,
                proto: 6,
                host_ip: Some("fd00::1".parse().unwrap()),
            },
        ];
        let mut t = nat(Family::V4);
        let add = portmap_add(&p, &maps, "10.1.0.5/24".parse().unwrap());
        assert!(add.adds());
        add.apply_to(&mut t).unwrap();
        let dn = dnat_chain("pmnet", "abc123");
        // Two mappings of this family, each: hairpin mark, localhost mark, DNAT.
        assert_eq!(t.rules(&dn).len(), 6);
        assert_eq!(rule_dport(&t.rules(&dn)[5]), Some(5353));
        // One multiport jump per protocol, tcp carrying both tcp ports (9 is v6-only, skipped
        // in the chain but listed, as the reference lists every port of the protocol).
        let entries = t.rules(HOSTPORT_DNAT);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].proto, 6);
        assert_eq!(entries[1].proto, 17);
        assert_eq!(t.rules(POSTROUTING)[0].jump_target(), Some(HOSTPORT_MASQ));
        assert!(portmap_check_plan(&p, &maps, "10.1.0.5/24".parse().unwrap())
            .missing_in(&t)
            .is_none());
        // The same ADD again leaves one copy of everything (the chain is rebuilt).
        add.apply_to(&mut t).unwrap();
        assert_eq!((t.rules(&dn).len(), t.rules(HOSTPORT_DNAT).len()), (6, 2));
        assert_eq!(t.rules("PREROUTING").len(), 1);
        for d in portmap_del("pmnet", "abc123") {
            if d.family == Family::V4 {
                assert!(d.apply_to(&mut t).unwrap());
            }
        }
        assert!(!t.has_chain(&dn) && t.rules(HOSTPORT_DNAT).is_empty());
        assert!(t.has_chain(HOSTPORT_MASQ), "shared chains stay");
        // masqAll: one source-less mark rule per mapping; conditions end each entry rule.
        let iif = |r: Rule| r.in_iface("eth0", false);
        let all = Portmap {
            masq_all: true,
            conditions: Some(&iif),
            ..p
        };
        let plan = portmap_add(&all, &maps[..1], "10.1.0.5/24".parse().unwrap());
        let mut t = nat(Family::V4);
        plan.apply_to(&mut t).unwrap();
        assert_eq!(t.rules(&dn).len(), 2);
        assert!(t.rules(&dn)[0].src.is_any());
        assert_eq!(t.rules(HOSTPORT_DNAT)[0].in_iface.name, "eth0");
    }

    #[test]
    fn gc_removes_the_chains_of_dead_attachments_only() {
        let mut t = nat(Family::V4);
        let pm = |cid: &'static str| Portmap {
            network: "n",
            container_id: cid,
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_setmark: None,
            conditions: None,
        };
        let map = [HostPort {
            host_port: 8080,
            container_port: 80,
            proto: 6,
            host_ip: None,
        }];
        for (net, cid) in [("n", "live"), ("n", "dead"), ("other", "dead")] {
            let ip: IpNet = "10.1.0.5/24".parse().unwrap();
            run(&mut t, &masq_add(net, cid, &[ip]));
            portmap_add(
                &Portmap {
                    network: net,
                    ..pm(cid)
                },
                &map,
                ip,
            )
            .apply_to(&mut t)
            .unwrap();
        }
        let keep = |cid: &str| cid == "live";
        let plan = gc_plan(&t, Owner::Portmap, "n", &keep);
        assert_eq!(plan.steps, [Step::RemoveChain(dnat_chain("n", "dead"))]);
        plan.apply_to(&mut t).unwrap();
        assert!(
            t.has_chain(&masq_chain("n", "dead")),
            "portmap's GC leaves ipMasq's chains"
        );
        let plan = gc_plan(&t, Owner::Masq, "n", &keep);
        assert_eq!(plan.steps, [Step::RemoveChain(masq_chain("n", "dead"))]);
        plan.apply_to(&mut t).unwrap();
        for (net, cid, there) in [("n", "live", true), ("n", "dead", false), ("other", "dead", true)] {
            assert_eq!(t.has_chain(&masq_chain(net, cid)), there, "{net} {cid}");
            assert_eq!(t.has_chain(&dnat_chain(net, cid)), there, "{net} {cid}");
        }
        for o in [Owner::Masq, Owner::Portmap] {
            assert!(gc_plan(&t, o, "n", &keep).steps.is_empty());
        }
    }

    #[test]
    fn firewall_add_del_and_isolation() {
        let ips: Vec<IpAddr> = vec!["10.1.0.5".parse().unwrap(), "fd10::5".parse().unwrap()];
        let mut t = filter(Family::V4);
        let add = firewall_add(&ips, "CNI-ADMIN", Some(Isolation::Isolated("cni0")));
        assert!(run(&mut t, &add));
        let fwd: Vec<Option<&str>> = t.rules(FORWARD).iter().map(|r| r.jump_target()).collect();
        assert_eq!(fwd, [Some(STAGE1), Some(CNI_FORWARD)]);
        assert_eq!(t.rules(CNI_FORWARD).len(), 3);
        assert_eq!(t.rules(STAGE1).len(), 3);
        assert_eq!(t.rules(STAGE2).len(), 2);
        let check = firewall_check_plan(&ips, "CNI-ADMIN");
        assert!(check
            .iter()
            .all(|p| p.family != Family::V4 || p.missing_in(&t).is_none()));
        // A second pod on the same bridge adds its accepts only.
        let other: Vec<IpAddr> = vec!["10.1.0.6".parse().unwrap()];
        run(
            &mut t,
            &firewall_add(&other, "CNI-ADMIN", Some(Isolation::Isolated("cni0"))),
        );
        assert_eq!((t.rules(CNI_FORWARD).len(), t.rules(STAGE1).len()), (5, 3));
        assert!(run(&mut t, &firewall_del(&ips)));
        assert_eq!(
            t.rules(CNI_FORWARD).len(),
            3,
            "the other pod's accepts and the admin jump stay"
        );
        let miss = check[0].missing_in(&t).unwrap();
        assert!(miss.contains("-d 10.1.0.5/32"), "{miss}");
        assert!(!run(&mut t, &firewall_del(&ips)), "a second DEL finds nothing");
        assert_eq!(t.chain(FORWARD).unwrap().policy, Some(Policy::Drop));
    }
}
