//! portmap: forward host ports to the container (`runtimeConfig.portMappings`), the reference's
//! nftables backend (`plugins/meta/portmap/portmap_nftables.go`), programmed over netlink.
//!
//! ```text
//! table ip cni_hostport {                      (and table ip6 cni_hostport)
//!     chain hostports        { tcp dport 8080 dnat to 10.88.0.5:80 comment "<id>" }
//!     chain hostip_hostports { ip daddr 192.0.2.1 tcp dport 8080 dnat to 10.88.0.5:80 comment "<id>" }
//!     chain hostports_all    { jump hostip_hostports; jump hostports }
//!     chain prerouting  { type nat hook prerouting priority dstnat; [conditions] fib daddr type local jump hostports_all }
//!     chain output      { type nat hook output priority dstnat;     [conditions] fib daddr type local jump hostports_all }
//!     chain masquerading { type nat hook postrouting priority srcnat;
//!         ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade comment "<id>"      (hairpin)
//!         ip saddr 127.0.0.1 ip daddr 10.88.0.5 masquerade comment "<id>" }    (localhost, v4)
//! }
//! ```
//!
//! The reference comments each rule with the bare container ID, so two networks sharing a
//! container ID collide and GC cannot tell networks apart. Our comment is
//! `<containerID>, nethash: <h16(network)>, if: <ifname>`; DEL also removes rules that carry
//! the bare container ID, so rules made by the reference binaries are cleaned up after a swap.

use std::net::IpAddr;

use crate::cni::gokeys::GoKeys;
use anyhow::{bail, Context, Result};
use ipnet::IpNet;
use serde::Deserialize;

use crate::cni::config::{self, NetConf, PortMapping};
use crate::cni::error::{code, CniError};
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::conntrack::{self, CtFamily};
use crate::linux::netlink::Family as IpFamily;
use crate::linux::nft::{
    nat_flags, priority, rtn, Batch, Chain, ChainType, CmpOp, Expr, Family, Hook, L4Proto, NftSocket, Policy, Position,
    Rule, RuleBuilder, Table,
};
use crate::linux::{sysctl, Netlink};
use crate::pkg::comment::rule_comment;
use crate::pkg::nft_records::{self as records, Recorded, Records};
use crate::pkg::portmap_iptables as ipt;
use crate::pkg::reference_iptables as reference;
use crate::pkg::sha512::hex_prefix;
use crate::pkg::undo::Undo;

pub static PLUGIN: Plugin = entry::<Portmap>();

struct Portmap;

pub const TABLE: &str = "cni_hostport";
const TABLE_COMMENT: &str = "CNI portmap plugin";
pub const HOSTPORTS: &str = "hostports";
pub const HOSTIP_HOSTPORTS: &str = "hostip_hostports";
pub const HOSTPORTS_ALL: &str = "hostports_all";
pub const MASQUERADING: &str = "masquerading";
const RULE_CHAINS: [&str; 3] = [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING];

// ---- config ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
struct PortMapConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    snat: Option<bool>,
    #[serde(rename = "masqAll", default)]
    masq_all: bool,
    #[serde(rename = "markMasqBit", default)]
    mark_masq_bit: Option<serde_json::Value>,
    #[serde(rename = "externalSetMarkChain", default)]
    external_set_mark_chain: Option<String>,
    #[serde(rename = "conditionsV4", default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(rename = "conditionsV6", default)]
    conditions_v6: Option<Vec<String>>,
    #[serde(default)]
    backend: Option<String>,
}

/// One validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapping {
    host_port: u16,
    container_port: u16,
    proto: L4Proto,
    host_ip: Option<IpAddr>,
}

/// Everything ADD/DEL/CHECK need, validated.
struct Conf {
    net: NetConf,
    snat: bool,
    masq_all: bool,
    mappings: Vec<Mapping>,
    cond_v4: Vec<Cond>,
    cond_v6: Vec<Cond>,
    /// `backend: "iptables"`: the reference's own iptables rules (`portmap_iptables`).
    iptables: Option<IptablesOpts>,
}

/// The iptables backend's own keys.
struct IptablesOpts {
    mark_bit: u32,
    external_setmark: Option<String>,
}

fn unsupported(msg: String) -> anyhow::Error {
    CniError::new(code::UNSUPPORTED_FIELD, msg).into()
}

fn parse_conf(stdin: &[u8]) -> Result<Conf> {
    let c: PortMapConf = config::parse(stdin)?;
    const NFT_ONLY: &str = "the nftables backend needs no mark (use backend \"iptables\" for it)";
    let mark_bit = match c.mark_masq_bit.as_ref().filter(|v| !v.is_null()) {
        None => None,
        Some(v) => match v.as_u64().filter(|b| *b <= 31) {
            Some(b) => Some(b as u32),
            None => bail!(CniError::invalid_config(format!(
                "markMasqBit must be between 0 and 31, got {v}"
            ))),
        },
    };
    let external = c.external_set_mark_chain.clone().filter(|s| !s.is_empty());
    if mark_bit.is_some() && external.is_some() {
        bail!(CniError::invalid_config(
            "cannot specify externalSetMarkChain and markMasqBit"
        ));
    }
    // As upstream: no backend but an iptables-only key means the iptables backend.
    let iptables = match c.backend.as_deref() {
        Some("iptables") => true,
        None | Some("") => mark_bit.is_some() || external.is_some(),
        Some("nftables") => {
            if mark_bit.is_some() || external.is_some() {
                return Err(unsupported(format!(
                    "markMasqBit and externalSetMarkChain are iptables-only options: {NFT_ONLY}"
                )));
            }
            false
        }
        Some(other) => bail!(CniError::invalid_config(format!("unknown portmap backend {other:?}"))),
    };
    if iptables
        && (c.conditions_v4.as_ref().is_some_and(|v| !v.is_empty())
            || c.conditions_v6.as_ref().is_some_and(|v| !v.is_empty()))
    {
        return Err(unsupported(
            "conditionsV4/conditionsV6 are not supported with the iptables backend (they are raw \
             iptables arguments, and cni-multi runs no iptables; the nftables backend takes nft \
             matches)"
                .to_string(),
        ));
    }
    let cond_v4 = parse_conditions(c.conditions_v4.as_deref().unwrap_or_default(), false)?;
    let cond_v6 = parse_conditions(c.conditions_v6.as_deref().unwrap_or_default(), true)?;
    let mut mappings = Vec::new();
    for m in c.net.runtime_config.port_mappings.iter().flatten() {
        mappings.push(parse_mapping(m)?);
    }
    Ok(Conf {
        net: c.net,
        snat: c.snat.unwrap_or(true),
        masq_all: c.masq_all,
        mappings,
        cond_v4,
        cond_v6,
        iptables: iptables.then(|| IptablesOpts {
            mark_bit: mark_bit.unwrap_or(13),
            external_setmark: external,
        }),
    })
}

fn parse_mapping(m: &PortMapping) -> Result<Mapping> {
    let port = |what: &str, p: i64| -> Result<u16> {
        if p <= 0 || p > 65535 {
            bail!(CniError::invalid_config(format!("Invalid {what} number: {p}")));
        }
        Ok(p as u16)
    };
    let proto = match m.protocol.to_ascii_lowercase().as_str() {
        // Kubernetes always sends a protocol; an empty one means TCP as in the CRI API.
        "" | "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        "sctp" => L4Proto::Sctp,
        other => bail!(CniError::invalid_config(format!(
            "unknown port mapping protocol {other:?}"
        ))),
    };
    let host_ip = match m.host_ip.as_str() {
        "" => None,
        s => Some(
            s.parse::<IpAddr>()
                .map_err(|_| CniError::invalid_config(format!("invalid hostIP {s:?}")))?,
        ),
    };
    Ok(Mapping {
        host_port: port("host port", m.host_port)?,
        container_port: port("container port", m.container_port)?,
        proto,
        host_ip,
    })
}

/// One match of `conditionsV4`/`conditionsV6` in nft syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    Iifname(CmpOp, String),
    Oifname(CmpOp, String),
    Addr { src: bool, op: CmpOp, net: IpNet },
}

/// Parses the subset of nft match syntax cni-multi can encode: `[meta] iifname|oifname [!=] NAME`
/// and `ip|ip6 saddr|daddr [!=] ADDR[/LEN]`. iptables syntax and anything else is refused.
fn parse_conditions(conds: &[String], v6: bool) -> Result<Vec<Cond>> {
    let which = if v6 { "conditionsV6" } else { "conditionsV4" };
    // iptables options start with `-`, negations are a lone `!`; an nft `!=` may be an element
    // of its own (`["iifname", "!=", "eth0"]`: the elements are joined, as in the reference).
    let iptables = |c: &str| c.starts_with('-') || (c.starts_with('!') && !c.starts_with("!="));
    if let Some(c) = conds.iter().find(|c| iptables(c.trim_start())) {
        return Err(unsupported(format!(
            "{which}: {c:?} is iptables syntax; cni-multi programs port mappings with nftables, \
             so conditions must be nft matches (e.g. \"ip saddr 10.0.0.0/8\")"
        )));
    }
    let joined = conds.join(" ");
    let mut toks = joined.split_whitespace().map(|t| t.trim_matches('"')).peekable();
    let mut out = Vec::new();
    let bad = |t: &str| {
        unsupported(format!(
            "{which}: unsupported nft match at {t:?} (supported: [meta] iifname|oifname [!=] NAME, \
             ip|ip6 saddr|daddr [!=] ADDR[/LEN])"
        ))
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

/// The container's first IPv4 and IPv6 address, skipping addresses of known host-side
/// interfaces and of other container interfaces (the reference's rule).
/// The container address with its prefix (the iptables backend's hairpin rule matches the
/// pod's subnet).
fn container_net(prev: &CniResult, cip: IpAddr) -> IpNet {
    prev.ips
        .iter()
        .map(|ip| ip.address)
        .find(|n| n.addr() == cip)
        .unwrap_or_else(|| IpNet::from(cip))
}

fn ipt_params<'a>(conf: &'a Conf, o: &'a IptablesOpts, args: &'a CmdArgs) -> ipt::Params<'a> {
    ipt::Params {
        network: &conf.net.name,
        container_id: &args.container_id,
        snat: conf.snat,
        mark_bit: o.mark_bit,
        external_setmark: o.external_setmark.as_deref(),
    }
}

fn ipt_mappings(conf: &Conf) -> Vec<ipt::Mapping> {
    conf.mappings
        .iter()
        .map(|m| ipt::Mapping {
            host_port: m.host_port,
            container_port: m.container_port,
            proto: m.proto,
            host_ip: m.host_ip,
        })
        .collect()
}

fn container_ips(prev: &CniResult, ifname: &str) -> (Option<IpAddr>, Option<IpAddr>) {
    let (mut v4, mut v6) = (None, None);
    for ip in &prev.ips {
        let a = ip.address.addr();
        if (a.is_ipv4() && v4.is_some()) || (a.is_ipv6() && v6.is_some()) {
            continue;
        }
        if let Some(i) = ip.interface.and_then(|i| prev.interfaces.get(i)) {
            if i.name != ifname || i.sandbox.is_empty() {
                continue;
            }
        }
        if a.is_ipv4() {
            v4 = Some(a);
        } else {
            v6 = Some(a);
        }
    }
    (v4, v6)
}

fn table(v6: bool) -> Table {
    Table::new(if v6 { Family::Ip6 } else { Family::Ip }, TABLE).with_comment(TABLE_COMMENT)
}

/// (containerID, network hash, ifname) of one of our comments.
fn parse_comment(c: &str) -> Option<(&str, &str, &str)> {
    let (cid, rest) = c.split_once(", nethash: ")?;
    let (hash, ifname) = rest.split_once(", if: ")?;
    Some((cid, hash, ifname))
}

/// The per-container rules for one family: (chain, rule).
fn container_rules(conf: &Conf, cip: IpAddr, comment: &str) -> Vec<Rule> {
    let v6 = cip.is_ipv6();
    let t = table(v6);
    let mut out = Vec::new();
    for m in &conf.mappings {
        let host_ip = match m.host_ip {
            // A hostIP of the other family belongs to the other table.
            Some(h) if h.is_ipv6() != v6 => continue,
            Some(h) if h.is_unspecified() => None,
            h => h,
        };
        let rb = match host_ip {
            Some(h) => RuleBuilder::new(&t, HOSTIP_HOSTPORTS).daddr(CmpOp::Eq, h),
            None => RuleBuilder::new(&t, HOSTPORTS),
        };
        out.push(
            rb.dport(m.proto, CmpOp::Eq, m.host_port)
                .dnat(cip, Some(m.container_port))
                .comment(comment)
                .build(),
        );
    }
    if conf.snat {
        // Hairpin (the pod reaching itself through the host port) and, for IPv4, localhost
        // traffic need the source rewritten, or the reply would bypass the DNAT.
        let mut rb = RuleBuilder::new(&t, MASQUERADING);
        if !conf.masq_all {
            rb = rb.saddr(CmpOp::Eq, cip);
        }
        out.push(rb.daddr(CmpOp::Eq, cip).masquerade().comment(comment).build());
        if !v6 && !conf.masq_all {
            let lo: IpAddr = "127.0.0.1".parse().unwrap();
            out.push(
                RuleBuilder::new(&t, MASQUERADING)
                    .saddr(CmpOp::Eq, lo)
                    .daddr(CmpOp::Eq, cip)
                    .masquerade()
                    .comment(comment)
                    .build(),
            );
        }
    }
    out
}

// ---- ADD ---------------------------------------------------------------------------------

impl CniPlugin for Portmap {
    const NAME: &'static str = "portmap";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "forward host ports to the container (nftables over netlink)";
    const HAS_STATUS: bool = false;
    type Conf = Conf;
    type Lenient = NetConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }
    fn add(conf: Conf, args: &CmdArgs) -> Result<CniResult> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        if conf.mappings.is_empty() {
            // Nothing to forward: touch nothing (the reference used to run iptables regardless).
            return Ok(prev);
        }
        let (v4, v6) = container_ips(&prev, &args.ifname);
        let sock = NftSocket::open()?;
        let comment = rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        let key = records::key(&hex_prefix(&conf.net.name, 16), &args.ifname, &args.container_id);
        // Each family is its own batch and route_localnet may fail after the first: a failed ADD
        // takes back every rule it committed (found by comment, as DEL finds them).
        let mut undo = Undo::new();
        for cip in [v4, v6].into_iter().flatten() {
            match &conf.iptables {
                Some(o) => {
                    ipt::setup(
                        &sock,
                        &ipt_params(&conf, o, args),
                        &ipt_mappings(&conf),
                        container_net(&prev, cip),
                    )?;
                    let (net, cid) = (conf.net.name.clone(), args.container_id.clone());
                    undo.push(format!("remove iptables port mappings of {cid}"), move || {
                        ipt::teardown(&NftSocket::open()?, &net, &cid)
                    });
                }
                None => {
                    forward_ports(&sock, &conf, cip, &comment, &key)?;
                    let (fam, c, k) = (table(cip.is_ipv6()).family, comment.clone(), key.clone());
                    undo.push(format!("remove {fam} port mappings of {c}"), move || {
                        let sock = NftSocket::open()?;
                        let mut b = Batch::new();
                        delete_into(&mut b, fam, &own_rules(&sock, fam, |x| x == c)?);
                        if !b.is_empty() {
                            b.commit(&sock)?;
                        }
                        Records::open(&sock, fam, TABLE).forget(&k);
                        Ok(())
                    });
                }
            }
            if cip.is_ipv4() && conf.snat {
                enable_localnet_routing(cip)?;
            }
            // A UDP "connection" to the host port may still point at a previous container:
            // conntrack would keep sending it there, so forget those entries.
            let fam = if cip.is_ipv6() { CtFamily::V6 } else { CtFamily::V4 };
            for m in conf.mappings.iter().filter(|m| m.proto == L4Proto::Udp) {
                // Failures are only logged by the reference; a stale entry is not fatal.
                if let Err(e) = conntrack::delete_by_dst_port(fam, L4Proto::Udp as u8, m.host_port) {
                    eprintln!(
                        "portmap: could not delete conntrack entries of udp port {}: {e}",
                        m.host_port
                    );
                }
            }
        }
        undo.commit();
        Ok(prev)
    }
    /// Removes the attachment's rules in both families, found by comment: the mappings need not
    /// be resent, and neither the netns nor prevResult is needed. The reference's iptables chain
    /// and jumps of the attachment (made before a node swap) go in the same batch.
    fn del(net: NetConf, args: &CmdArgs) -> Result<()> {
        let ours = rule_comment(&net.name, &args.container_id, &args.ifname);
        let key = records::key(&hex_prefix(&net.name, 16), &args.ifname, &args.container_id);
        let sock = NftSocket::open()?;
        let mut errors = Vec::new();
        let mut b = Batch::new();
        let mut recs = Vec::new();
        for fam in [Family::Ip, Family::Ip6] {
            let rec = Records::open(&sock, fam, TABLE);
            // The reference's nftables backend comments its rules with the bare container ID;
            // a record (while the stamp holds: the reference has not run an ADD since) says
            // there are none, and where ours are.
            let found = match recorded_for_del(&sock, &rec, fam, &ours, &key) {
                Ok(Some(rules)) => Ok(rules),
                Ok(None) => own_rules(&sock, fam, |c| c == ours || c == args.container_id),
                Err(e) => Err(e),
            };
            match found {
                Ok(rules) => delete_into(&mut b, fam, &rules),
                Err(e) => errors.push(format!("{fam}: {e:#}")),
            }
            recs.push(rec);
        }
        let (dnat, snat) = reference_comments(&net.name, &args.container_id);
        let chains = [
            reference::dnat_chain(&net.name, &args.container_id),
            reference::chain_name("SN-", &net.name, &args.container_id),
        ];
        // Where the reference's releases put an attachment's jumps (CNI-HOSTPORT-SNAT: before 0.8).
        let scope = reference::Scope::Chains(&[
            reference::HOSTPORT_DNAT,
            "CNI-HOSTPORT-SNAT",
            "CNI-HOSTPORT-MASQ",
            "CNI-HOSTPORT-SETMARK",
        ]);
        match reference::plan_nat_removal(&sock, &mut b, scope, &|c| c == dnat || c == snat, &chains) {
            Ok(0) => reference::note_if_legacy("nat", "port mappings"),
            Ok(_) => {}
            Err(e) => errors.push(format!("iptables: {e:#}")),
        }
        if !b.is_empty() {
            if let Err(e) = b.commit(&sock) {
                errors.push(format!("error deleting rules: {e}"));
            }
        }
        if !errors.is_empty() {
            bail!("could not remove port mappings: {}", errors.join("; "));
        }
        for rec in &recs {
            rec.forget(&key);
        }
        Ok(())
    }
    /// Every rule ADD would make for these mappings exists, expression for expression.
    fn check(conf: Conf, args: &CmdArgs) -> Result<()> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        if conf.mappings.is_empty() {
            return Ok(());
        }
        let (v4, v6) = container_ips(&prev, &args.ifname);
        let sock = NftSocket::open()?;
        let comment = rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        for cip in [v4, v6].into_iter().flatten() {
            if let Some(o) = &conf.iptables {
                ipt::check(
                    &sock,
                    &ipt_params(&conf, o, args),
                    &ipt_mappings(&conf),
                    container_net(&prev, cip),
                )?;
                continue;
            }
            let fam = table(cip.is_ipv6()).family;
            let have = own_rules_with(&sock, fam, |c| c == comment, true)?;
            let missing = container_rules(&conf, cip, &comment).into_iter().find(|want| {
                !have
                    .iter()
                    .any(|r| r.chain == want.chain && same_exprs(&r.exprs, &want.exprs))
            });
            if let Some(want) = missing {
                // A pod the reference made before a node swap is healthy in its form too.
                let forwards = reference_forwards(&conf, cip);
                if !reference::dnat_intact(&sock, &conf.net.name, &args.container_id, cip, &forwards)? {
                    bail!(
                        "missing hostport rule in {fam} {TABLE} {}: {}",
                        want.chain,
                        describe(&want)
                    );
                }
            }
        }
        Ok(())
    }
    /// Removes this network's rules whose attachment is not in `cni.dev/valid-attachments`.
    /// Rules made by the reference's nftables backend carry only a container ID (no network), so
    /// they are left alone; its iptables chains name the network and go like ours.
    fn gc(args: &CmdArgs) -> Result<()> {
        let net: NetConf = config::parse(&args.stdin)?;
        // Without the list there is nothing to tell live attachments from dead ones: keep all.
        let Some(valid) = net.gc_valid_attachments() else {
            return Ok(());
        };
        let hash = hex_prefix(&net.name, 16);
        let sock = NftSocket::open()?;
        let mut errors = Vec::new();
        let mut b = Batch::new();
        for fam in [Family::Ip, Family::Ip6] {
            let stale = own_rules(&sock, fam, |c| match parse_comment(c) {
                Some((cid, h, ifname)) => {
                    h == hash && !valid.iter().any(|a| a.container_id == cid && a.ifname == ifname)
                }
                None => false,
            });
            match stale {
                Ok(rules) => delete_into(&mut b, fam, &rules),
                Err(e) => errors.push(format!("{fam}: {e:#}")),
            }
        }
        // The reference's chains carry network and container ID (not the ifname, which it ignores).
        let dead = |c: &str| {
            ["dnat ", "snat "].into_iter().any(|kind| {
                reference::parse_comment(c, kind)
                    .is_some_and(|(n, cid)| n == net.name && !valid.iter().any(|a| a.container_id == cid))
            })
        };
        if let Err(e) = reference::plan_nat_removal(&sock, &mut b, reference::Scope::Table, &dead, &[]) {
            errors.push(format!("iptables: {e:#}"));
        }
        if !b.is_empty() {
            if let Err(e) = b.commit(&sock) {
                errors.push(format!("error deleting rules: {e}"));
            }
        }
        if !errors.is_empty() {
            bail!("portmap GC: {}", errors.join("; "));
        }
        // The records of attachments that are not valid go too (their rules just went).
        let keep: Vec<String> = valid
            .iter()
            .map(|a| records::key(&hash, &a.ifname, &a.container_id))
            .collect();
        for fam in [Family::Ip, Family::Ip6] {
            let rec = Records::open(&sock, fam, TABLE);
            for k in rec.keys() {
                if k.starts_with(&format!("{hash}-")) && !keep.contains(&k) {
                    rec.forget(&k);
                }
            }
        }
        Ok(())
    }
}

/// One atomic batch: the table's skeleton (shared chains rebuilt), this attachment's old rules
/// out, its new rules in. The old rules come from the attachment's record (`nft_records`)
/// when the records are complete, else from a dump of the per-container chains.
fn forward_ports(sock: &NftSocket, conf: &Conf, cip: IpAddr, comment: &str, key: &str) -> Result<()> {
    let v6 = cip.is_ipv6();
    let t = table(v6);
    let conds = if v6 { &conf.cond_v6 } else { &conf.cond_v4 };
    let rec = Records::open(sock, t.family, TABLE);
    let mut b = Batch::new();
    b.add_table(&t);
    for c in [HOSTPORTS, HOSTIP_HOSTPORTS, HOSTPORTS_ALL] {
        b.add_chain(&Chain::regular(&t, c));
    }
    // The shared chains are rebuilt only when they differ from what this config wants: a
    // rebuild frees rules, and that makes the socket's close wait a whole RCU grace period.
    let all: Vec<Rule> = [HOSTIP_HOSTPORTS, HOSTPORTS]
        .into_iter()
        .map(|target| RuleBuilder::new(&t, HOSTPORTS_ALL).jump(target).build())
        .collect();
    let mut shared = vec![rebuild_if_different(sock, &mut b, &t, HOSTPORTS_ALL, &all)?];
    for (name, hook) in [("prerouting", Hook::Prerouting), ("output", Hook::Output)] {
        b.add_chain(&Chain::base(
            &t,
            name,
            ChainType::Nat,
            hook,
            priority::DSTNAT,
            Policy::Accept,
        ));
        let rb = apply_conditions(RuleBuilder::new(&t, name), conds);
        let entry = [rb.fib_daddr_type(rtn::LOCAL).jump(HOSTPORTS_ALL).build()];
        shared.push(rebuild_if_different(sock, &mut b, &t, name, &entry)?);
    }
    if conf.snat {
        b.add_chain(&Chain::srcnat(&t, MASQUERADING));
    }
    let listed: Vec<u64> = shared.iter().flat_map(|s| s.listed.iter().copied()).collect();
    let stamped = rec.stamp_matches(&listed);
    let from_record = match (stamped, rec.get(key)) {
        // Complete records and none for this attachment: it has no rules.
        (true, Recorded::Missing) => Some(Vec::new()),
        (true, Recorded::Rules(r)) => records::verify(sock, t.family, TABLE, &r, &|c| c == comment)?,
        _ => None,
    };
    let (stale, complete) = match from_record {
        Some(r) => (r, true),
        None => dump_and_rerecord(sock, &rec, t.family, comment, key)?,
    };
    for r in &stale {
        b.del_rule(&t, &r.chain, r.handle.unwrap_or_default());
    }
    let first = b.len();
    let mine = container_rules(conf, cip, comment);
    for r in &mine {
        b.add_rule(r, Position::Append);
    }
    rec.put_pending(key);
    let handles = b
        .commit_echo(sock)
        .context("unable to set up nftables rules for port mappings")?;
    let made: Option<Vec<(String, u64)>> = mine
        .iter()
        .enumerate()
        .map(|(i, r)| Some((r.chain.clone(), handles.get(first + i).copied().flatten()?)))
        .collect();
    match made {
        Some(m) if !m.is_empty() => rec.put(key, &m),
        _ => rec.forget(key),
    }
    // The shared rules' handles now: as listed, or as the kernel gave the rebuilt ones.
    let now: Option<Vec<u64>> = shared
        .iter()
        .map(|s| match s.rebuilt_at {
            None => Some(s.listed.clone()),
            Some((i, n)) => handles.get(i..i + n)?.iter().copied().collect(),
        })
        .collect::<Option<Vec<Vec<u64>>>>()
        .map(|v| v.concat());
    match now {
        Some(hs) if stamped && hs == listed => {} // as it was
        Some(hs) if complete => rec.put_stamp(&hs),
        _ => rec.forget_stamp(),
    }
    Ok(())
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

/// The dump ADD falls back to: every rule of the per-container chains, the attachment's
/// (`comment`) returned and every attachment's record written again. True in the second place
/// when the records are now complete: the ruleset did not change during the dumps and every
/// comment of ours names its attachment whole (not cut at 128 bytes).
fn dump_and_rerecord(
    sock: &NftSocket,
    rec: &Records,
    fam: Family,
    comment: &str,
    key: &str,
) -> Result<(Vec<Rule>, bool)> {
    let gen = sock.generation()?;
    let all = own_rules(sock, fam, |_| true)?;
    let complete = sock.generation()? == gen && records::rerecord(rec, &all, key, &crate::pkg::comment::record_key);
    let mine = all
        .into_iter()
        .filter(|r| r.comment.as_deref() == Some(comment))
        .collect();
    Ok((mine, complete))
}

/// DEL's lookup of the attachment's rules in one family by its record: `None` when there is
/// no usable record or the stamp does not hold (then DEL dumps).
fn recorded_for_del(sock: &NftSocket, rec: &Records, fam: Family, ours: &str, key: &str) -> Result<Option<Vec<Rule>>> {
    let Recorded::Rules(r) = rec.get(key) else {
        return Ok(None);
    };
    let mut listed = Vec::new();
    for chain in [HOSTPORTS_ALL, "prerouting", "output"] {
        match sock.list_rules(fam, TABLE, chain) {
            Ok(rules) => listed.extend(records::base_handles(&rules)),
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    if !rec.stamp_matches(&listed) {
        return Ok(None);
    }
    records::verify(sock, fam, TABLE, &r, &|c| c == ours)
}

/// `route_localnet=1` on the interface that routes to the container, so that 127.0.0.1 may
/// be DNATed to it (the kernel drops martian 127/8 sources otherwise). A node with no route
/// to the pod (an L2-only bridge) has no such interface: the rules stay, as in the reference.
fn enable_localnet_routing(cip: IpAddr) -> Result<()> {
    let mut nl = Netlink::new()?;
    let routes = nl.routes(IpFamily::V4, Some(254))?;
    let Some(best) = routes
        .iter()
        .filter(|r| r.dst.contains(&cip) && r.oif.is_some())
        .max_by_key(|r| r.dst.prefix_len())
    else {
        return Ok(());
    };
    let link = nl
        .link_by_index(best.oif.unwrap())?
        .with_context(|| format!("the interface routing to {cip} vanished"))?;
    sysctl::write_if_different(&format!("net/ipv4/conf/{}/route_localnet", link.name), "1")?;
    Ok(())
}

// ---- DEL ---------------------------------------------------------------------------------

/// The comments the reference's iptables backend puts on the jumps to an attachment's chains
/// (`dnat …` today, `snat …` in releases before 0.8).
fn reference_comments(network: &str, container_id: &str) -> (String, String) {
    let dnat = reference::dnat_comment(network, container_id);
    let snat = format!("snat {}", reference::masq_comment(network, container_id));
    (dnat, snat)
}

/// The rules of the per-container chains of one family whose comment satisfies `pick`.
fn own_rules(sock: &NftSocket, fam: Family, pick: impl Fn(&str) -> bool) -> Result<Vec<Rule>> {
    own_rules_with(sock, fam, pick, false)
}

/// `own_rules`, with the rules' expressions decoded when `exprs` is set (CHECK compares them;
/// finding rules by comment does not need them).
fn own_rules_with(sock: &NftSocket, fam: Family, pick: impl Fn(&str) -> bool, exprs: bool) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for chain in RULE_CHAINS {
        let listed = if exprs {
            sock.list_rules(fam, TABLE, chain)
        } else {
            sock.list_rule_comments(fam, TABLE, chain)
        };
        let rules = listed.with_context(|| format!("could not list rules of {fam} {TABLE} {chain}"))?;
        out.extend(rules.into_iter().filter(|r| r.comment.as_deref().is_some_and(&pick)));
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

// ---- CHECK -------------------------------------------------------------------------------

/// The mappings of `cip`'s family, as the reference's iptables chain holds them.
fn reference_forwards(conf: &Conf, cip: IpAddr) -> Vec<reference::Forward> {
    conf.mappings
        .iter()
        .filter(|m| m.host_ip.is_none_or(|h| h.is_ipv6() == cip.is_ipv6()))
        .map(|m| reference::Forward {
            proto: m.proto as u8,
            host_port: m.host_port,
            container_port: m.container_port,
            host_ip: m.host_ip,
        })
        .collect()
}

/// Compares expressions ignoring counters (the kernel fills in their values) and the
/// MAP_IPS flag the kernel adds to a nat with an address.
fn same_exprs(a: &[Expr], b: &[Expr]) -> bool {
    let strip = |v: &[Expr]| -> Vec<Expr> {
        v.iter()
            .filter(|e| !matches!(e, Expr::Counter { .. }))
            .map(|e| match e {
                Expr::Nat {
                    kind,
                    family,
                    addr,
                    proto,
                    flags,
                } => Expr::Nat {
                    kind: *kind,
                    family: *family,
                    addr: *addr,
                    proto: *proto,
                    flags: flags & !nat_flags::MAP_IPS,
                },
                e => e.clone(),
            })
            .collect()
    };
    strip(a) == strip(b)
}

fn describe(r: &Rule) -> String {
    format!("{} rule {:?}", r.chain, r.comment.as_deref().unwrap_or(""))
}

// ---- GC ----------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> Result<Conf> {
        parse_conf(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"portmap"{extra}}}"#).as_bytes())
    }

    fn err_code(r: Result<Conf>) -> u32 {
        CniError::from_anyhow(&r.err().expect("an error")).code
    }

    #[test]
    fn backends_and_their_options() {
        assert!(conf(r#","backend":"iptables""#).unwrap().iptables.is_some());
        assert!(conf(r#""#).unwrap().iptables.is_none());
        // As upstream, an iptables-only key without a backend selects iptables.
        assert_eq!(conf(r#","markMasqBit":5"#).unwrap().iptables.unwrap().mark_bit, 5);
        assert_eq!(conf(r#","backend":"iptables""#).unwrap().iptables.unwrap().mark_bit, 13);
        let ext = conf(r#","externalSetMarkChain":"KUBE-MARK-MASQ""#)
            .unwrap()
            .iptables
            .unwrap();
        assert_eq!(ext.external_setmark.as_deref(), Some("KUBE-MARK-MASQ"));
        assert_eq!(err_code(conf(r#","backend":"nftables","markMasqBit":13"#)), 2);
        assert_eq!(err_code(conf(r#","markMasqBit":32"#)), 7);
        assert_eq!(err_code(conf(r#","markMasqBit":"13""#)), 7);
        assert_eq!(err_code(conf(r#","markMasqBit":13,"externalSetMarkChain":"X""#)), 7);
        assert_eq!(
            err_code(conf(r#","backend":"iptables","conditionsV4":["-s","1.2.3.4"]"#)),
            2
        );
        assert_eq!(err_code(conf(r#","conditionsV4":["-s","1.2.3.4"]"#)), 2);
        assert_eq!(err_code(conf(r#","conditionsV4":["tcp dport 5"]"#)), 2);
        assert_eq!(err_code(conf(r#","backend":"ebpf""#)), 7);
        assert!(conf(r#","backend":"nftables","markMasqBit":null"#).is_ok());
    }

    #[test]
    fn mappings_and_conditions() {
        let c = conf(
            r#","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
               {"HostPort":53,"ContainerPort":53,"Protocol":"UDP","HostIP":"127.0.0.1"}]},
               "conditionsV4":["ip saddr != 10.0.0.0/8", "iifname \"eth0\""],"conditionsV6":["meta oifname lo"]"#,
        )
        .unwrap();
        assert!(c.snat && !c.masq_all);
        assert_eq!(c.mappings[1].proto, L4Proto::Udp);
        assert_eq!(c.mappings[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(
            c.cond_v4,
            vec![
                Cond::Addr {
                    src: true,
                    op: CmpOp::Neq,
                    net: "10.0.0.0/8".parse().unwrap()
                },
                Cond::Iifname(CmpOp::Eq, "eth0".into())
            ]
        );
        assert_eq!(c.cond_v6, vec![Cond::Oifname(CmpOp::Eq, "lo".into())]);
        for bad in [0, -1, 70000] {
            let e = conf(&format!(
                r#","runtimeConfig":{{"portMappings":[{{"hostPort":{bad},"containerPort":80,"protocol":"tcp"}}]}}"#
            ));
            assert_eq!(err_code(e), 7);
        }
        assert_eq!(err_code(conf(r#","conditionsV6":["ip saddr 1.2.3.4"]"#)), 7);
    }

    #[test]
    fn comments_round_trip() {
        let c = rule_comment("net", &"c".repeat(64), "eth0");
        assert!(c.len() <= 128);
        let (cid, h, i) = parse_comment(&c).unwrap();
        assert_eq!((cid.len(), h, i), (64, hex_prefix("net", 16).as_str(), "eth0"));
        assert_eq!(parse_comment("abc"), None);
    }
}
