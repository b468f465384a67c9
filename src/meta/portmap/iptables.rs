//! portmap's iptables layout: the reference's own iptables rules
//! (`plugins/meta/portmap/portmap_iptables.go`), written over netlink into iptables-nft's `nat`
//! tables, encoded as iptables-nft 1.8 encodes them (`linux::nft::xt`), so `iptables-save`
//! shows exactly the reference's and the reference's CHECK and DEL accept and remove them:
//!
//! ```text
//! -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
//! -A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ  (position 1)
//! -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//! -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! -A CNI-HOSTPORT-DNAT [conditions] -p tcp -m comment --comment "dnat name: \"net\" id: \"cid\"" -m multiport --dports 8080 [conditions] -j CNI-DN-<h21>
//! -A CNI-DN-<h21> -s 10.88.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK      (snat: hairpin; masqAll: no -s)
//! -A CNI-DN-<h21> -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK      (snat, IPv4, not masqAll: localhost)
//! -A CNI-DN-<h21> -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.88.0.5:80
//! ```
//!
//! `conditionsV4`/`conditionsV6` in iptables syntax are appended to the entry rules, as
//! upstream appends them to the iptables command line; [`parse_conditions`] translates the
//! options real configurations use and refuses the rest (code 7).
//!
//! Without a dump of the shared chains on the common path: the shared rules' handles are
//! recorded (`nft_records`, scope `portmap`: the stamp) and checked one by one (GETRULE);
//! whether an attachment's chain exists is one GETCHAIN (a jump to a missing chain cannot
//! exist), and its entry jumps are recorded. Anything that does not check out falls back to
//! the listings the reference's own logic needs (`insertUnique`, `teardown`).

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use ipnet::IpNet;

use super::Mapping;
use crate::cni::error::CniError;
use crate::linux::nft::iptables::IptRule as Listed;
use crate::linux::nft::xt::{self, IptRule, PortRange};
use crate::linux::nft::{priority, Batch, Chain, ChainType, Expr, Family, Hook, L4Proto, NftSocket, Policy};
use crate::linux::nft::{Position, Rule, Table, Verdict};
use crate::pkg::nft_records::{self as records, Recorded, Records};
use crate::pkg::reference_iptables as reference;
use crate::pkg::sha512::hex_prefix;

pub const TABLE: &str = "nat";
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
pub const SETMARK_CHAIN: &str = "CNI-HOSTPORT-SETMARK";
pub const MASQ_CHAIN: &str = "CNI-HOSTPORT-MASQ";
/// The chain of portmap versions before 0.7, removed on DEL like the reference does.
pub const OLD_SNAT_PREFIX: &str = "CNI-SN-";
/// The records' scope in the nat tables (ipMasq keeps records there too).
const SCOPE: &str = "portmap";
const SETMARK_COMMENT: &str = "CNI portfwd masquerade mark";
const MASQ_COMMENT: &str = "CNI portfwd requiring masquerade";
/// `1 << RTN_LOCAL` for `-m addrtype --dst-type LOCAL`.
const ADDRTYPE_LOCAL: u16 = 1 << 2;
/// `multiport` takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;
/// `IFNAMSIZ - 1`.
const IFNAME_MAX: usize = 15;

/// What the rules depend on besides the mappings.
pub type Params<'a> = reference::PortmapKeys<'a, &'a Conds>;

/// `utils.MustFormatChainNameWithPrefix(net, cid, "DN-")`: 28 characters in all.
pub fn dnat_chain_name(network: &str, container_id: &str) -> String {
    format!("CNI-DN-{}", hex_prefix(&format!("{network}{container_id}"), 21))
}

fn old_snat_chain_name(network: &str, container_id: &str) -> String {
    format!(
        "{OLD_SNAT_PREFIX}{}",
        hex_prefix(&format!("{network}{container_id}"), 21)
    )
}

fn proto_name(p: L4Proto) -> &'static str {
    match p {
        L4Proto::Tcp => "tcp",
        L4Proto::Udp => "udp",
        L4Proto::Sctp => "sctp",
    }
}

// ---- conditions ---------------------------------------------------------------------------

/// `conditionsV4`/`conditionsV6` in iptables syntax, translated: the parts iptables keeps in
/// the rule's IP header (encoded first) and the matches (encoded after the entry rule's own
/// `-m comment` and `-m multiport`, in the order given).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conds {
    iif: Option<(String, bool)>,
    oif: Option<(String, bool)>,
    src: Option<(IpNet, bool)>,
    dst: Option<(IpNet, bool)>,
    matches: Vec<CondMatch>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CondMatch {
    Comment(String),
    /// `-m tcp|udp [[!] --sport P[:P]] [[!] --dport P[:P]]`.
    Ports {
        proto: L4Proto,
        sport: PortRange,
        dport: PortRange,
    },
}

impl Conds {
    pub fn is_empty(&self) -> bool {
        *self == Conds::default()
    }

    /// The same options on a legacy (x_tables) entry rule: interfaces and addresses in its
    /// IP header, the matches after the rule's own (as iptables-legacy builds it).
    pub fn on_legacy(&self, mut r: crate::linux::xtables::Rule) -> crate::linux::xtables::Rule {
        if let Some((n, inv)) = &self.iif {
            r = r.in_iface(n, *inv);
        }
        if let Some((n, inv)) = &self.oif {
            r = r.out_iface(n, *inv);
        }
        if let Some((a, inv)) = self.src {
            r = r.src(a, inv);
        }
        if let Some((a, inv)) = self.dst {
            r = r.dst(a, inv);
        }
        for m in &self.matches {
            r = match m {
                CondMatch::Comment(c) => r.comment(c),
                CondMatch::Ports { proto, sport, dport } => {
                    let (s, d) = ((sport.from, sport.to), (dport.from, dport.to));
                    match crate::linux::xtables::ext::ports_match(*proto as u8, s, sport.invert, d, dport.invert) {
                        Some(x) => r.with(x),
                        None => r,
                    }
                }
            };
        }
        r
    }

    /// iptables refuses `-m tcp` in a rule of another protocol ("TCP match requires '-p
    /// tcp'"), and the entry rules are one per protocol of the mappings.
    pub fn check_protocols(&self, which: &str, protos: &[L4Proto]) -> Result<()> {
        for m in &self.matches {
            if let CondMatch::Ports { proto, .. } = m {
                if let Some(other) = protos.iter().find(|p| *p != proto) {
                    bail!(CniError::invalid_config(format!(
                        "{which}: \"-m {}\" cannot apply to the {} port mappings (iptables: the \
                         match requires '-p {}', and each protocol's mappings get their own rule)",
                        proto_name(*proto),
                        proto_name(*other),
                        proto_name(*proto)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Translates iptables-syntax conditions (one argument per element, as upstream passes them
/// to iptables) into what iptables-nft would write for them. Supported: `[!] -s|-d ADDR[/LEN]`,
/// `[!] -i|-o NAME[+]`, `-m comment --comment TEXT`, `-m tcp|udp [[!] --sport P[:P]]
/// [[!] --dport P[:P]]` (also with no port); anything else is code 7 naming the option,
/// including what iptables itself refuses in the entry rule (`-p`, a bare `--dport`).
pub fn parse_conditions(which: &str, args: &[String], v6: bool) -> Result<Conds> {
    let bad = |msg: String| -> anyhow::Error { CniError::invalid_config(format!("{which}: {msg}")).into() };
    let mut c = Conds::default();
    let mut i = 0;
    let value = |i: usize, opt: &str| -> Result<&str> {
        args.get(i + 1)
            .map(String::as_str)
            .ok_or_else(|| bad(format!("option \"{opt}\" needs a value")))
    };
    while i < args.len() {
        let mut invert = false;
        if args[i] == "!" {
            invert = true;
            i += 1;
        }
        let Some(opt) = args.get(i).map(String::as_str) else {
            return Err(bad("\"!\" must be followed by an option".into()));
        };
        match opt {
            "-s" | "--source" | "--src" | "-d" | "--destination" | "--dst" => {
                let src = matches!(opt, "-s" | "--source" | "--src");
                let v = value(i, opt)?;
                let slot = if src { &mut c.src } else { &mut c.dst };
                if slot.is_some() {
                    return Err(bad(format!("multiple {opt} options are not allowed")));
                }
                let net = parse_addr(v, v6).map_err(|m| bad(format!("{opt} {v:?}: {m}")))?;
                if invert && net.prefix_len() == 0 {
                    return Err(bad(format!("\"! {opt} {v}\" matches nothing")));
                }
                *slot = Some((net, invert));
                i += 2;
            }
            "-i" | "--in-interface" | "-o" | "--out-interface" => {
                let input = matches!(opt, "-i" | "--in-interface");
                let v = value(i, opt)?;
                let slot = if input { &mut c.iif } else { &mut c.oif };
                if slot.is_some() {
                    return Err(bad(format!("multiple {opt} options are not allowed")));
                }
                if v.is_empty() || v.len() > IFNAME_MAX || v.contains(['/', ' ']) {
                    return Err(bad(format!("{opt} {v:?}: not an interface name")));
                }
                *slot = Some((v.to_string(), invert));
                i += 2;
            }
            "-m" | "--match" if !invert => {
                let name = value(i, opt)?;
                i += 2;
                match name {
                    "comment" => {
                        if args.get(i).map(String::as_str) != Some("--comment") {
                            return Err(bad("\"-m comment\" needs \"--comment TEXT\"".into()));
                        }
                        let text = value(i, "--comment")?;
                        if text.len() > 255 {
                            return Err(bad("a comment may not exceed 255 bytes".into()));
                        }
                        c.matches.push(CondMatch::Comment(text.to_string()));
                        i += 2;
                    }
                    "tcp" | "udp" => {
                        let proto = if name == "tcp" { L4Proto::Tcp } else { L4Proto::Udp };
                        let (mut sport, mut dport) = (None, None);
                        loop {
                            let inv = args.get(i).map(String::as_str) == Some("!");
                            let o = args.get(i + inv as usize).map(String::as_str);
                            let slot = match o {
                                Some("--sport" | "--source-port") => &mut sport,
                                Some("--dport" | "--destination-port") => &mut dport,
                                _ => break,
                            };
                            let o = o.unwrap_or_default();
                            if slot.is_some() {
                                return Err(bad(format!("multiple {o} options are not allowed")));
                            }
                            let v = value(i + inv as usize, o)?;
                            let mut r = parse_ports(v).map_err(|m| bad(format!("{o} {v:?}: {m}")))?;
                            r.invert = inv;
                            *slot = Some(r);
                            i += 2 + inv as usize;
                        }
                        c.matches.push(CondMatch::Ports {
                            proto,
                            sport: sport.unwrap_or(PortRange::ANY),
                            dport: dport.unwrap_or(PortRange::ANY),
                        });
                    }
                    other => {
                        return Err(bad(format!(
                            "match \"-m {other}\" is not supported (supported: comment, tcp, udp)"
                        )))
                    }
                }
            }
            "-p" | "--protocol" => {
                return Err(bad(format!(
                    "\"{opt}\" cannot be used: each entry rule already matches the mappings' \
                     protocol (iptables: multiple -p flags not allowed)"
                )))
            }
            "--dport" | "--sport" | "--destination-port" | "--source-port" => {
                return Err(bad(format!(
                    "\"{opt}\" needs \"-m tcp\" or \"-m udp\" before it (the entry rule's \
                     multiport match would take it for its own --dports, which iptables refuses)"
                )))
            }
            other => {
                return Err(bad(format!(
                    "unsupported iptables option {other:?} (supported: [!] -s, -d, -i, -o; \
                     -m comment --comment; -m tcp|udp [!] --sport, --dport)"
                )))
            }
        }
    }
    Ok(c)
}

/// `ADDR`, `ADDR/LEN` or (IPv4) `ADDR/MASK`, as iptables reads them; no lists, no names.
fn parse_addr(v: &str, v6: bool) -> std::result::Result<IpNet, String> {
    if v.contains(',') {
        return Err("address lists are not supported".into());
    }
    let (a, len) = match v.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (v, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| "not an IP address".to_string())?;
    if addr.is_ipv6() != v6 {
        return Err(format!("not an IPv{} address", if v6 { 6 } else { 4 }));
    }
    let max = if v6 { 128 } else { 32 };
    let plen = match len {
        None => max,
        Some(l) if l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty() => {
            l.parse::<u8>().ok().filter(|p| *p <= max).ok_or("bad prefix length")?
        }
        Some(m) => match m.parse::<std::net::Ipv4Addr>() {
            Ok(mask) if !v6 => {
                let bits = u32::from(mask);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err("a non-contiguous mask is not supported".into());
                }
                bits.leading_ones() as u8
            }
            _ => return Err("bad prefix length".into()),
        },
    };
    IpNet::new(addr, plen).map(|n| n.trunc()).map_err(|e| e.to_string())
}

/// `P`, `P:Q`, `:Q` (from 0), `P:` (to 65535), numbers only.
fn parse_ports(v: &str) -> std::result::Result<PortRange, String> {
    let num = |s: &str, dflt: u16| -> std::result::Result<u16, String> {
        if s.is_empty() {
            return Ok(dflt);
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("ports must be numbers".into());
        }
        s.parse().map_err(|_| "port out of range".to_string())
    };
    let (from, to) = match v.split_once(':') {
        Some((a, b)) => (num(a, 0)?, num(b, u16::MAX)?),
        None if v.is_empty() => return Err("empty port".into()),
        None => {
            let p = num(v, 0)?;
            (p, p)
        }
    };
    if from > to {
        return Err("invalid port range (min > max)".into());
    }
    Ok(PortRange {
        from,
        to,
        invert: false,
    })
}

// ---- the rules ----------------------------------------------------------------------------

/// A rule and the compat protocol iptables-nft sends with it (`-p`).
#[derive(Clone)]
struct Want {
    rule: Rule,
    proto: Option<u8>,
}

/// One chain of the reference's: its rules, and the rules that enter it from `entry_chains`.
struct ChainSpec {
    name: String,
    entry_chains: &'static [&'static str],
    entry_rules: Vec<Want>,
    rules: Vec<Want>,
    prepend_entry: bool,
}

fn plain(rule: Rule) -> Want {
    Want { rule, proto: None }
}

fn setmark_chain(t: &Table, mark: u32) -> ChainSpec {
    ChainSpec {
        name: SETMARK_CHAIN.into(),
        entry_chains: &[],
        entry_rules: vec![],
        rules: vec![plain(
            IptRule::new(t, SETMARK_CHAIN)
                .comment(SETMARK_COMMENT)
                .target(&xt::mark_target(mark, mark)),
        )],
        prepend_entry: false,
    }
}

fn masq_chain(t: &Table, v6: bool, mark: u32) -> ChainSpec {
    ChainSpec {
        name: MASQ_CHAIN.into(),
        entry_chains: &["POSTROUTING"],
        // Prepended so that bridge/ptp's masquerade rules cannot stomp on it.
        prepend_entry: true,
        entry_rules: vec![plain(
            IptRule::new(t, "POSTROUTING").comment(MASQ_COMMENT).jump(MASQ_CHAIN),
        )],
        rules: vec![plain(
            IptRule::new(t, MASQ_CHAIN)
                .mark(mark, mark)
                .target(&xt::masquerade_target(v6)),
        )],
    }
}

fn toplevel_chain(t: &Table) -> ChainSpec {
    let entry = |c: &str| {
        plain(
            IptRule::new(t, c)
                .with(xt::addrtype_dst(ADDRTYPE_LOCAL))
                .jump(DNAT_CHAIN),
        )
    };
    ChainSpec {
        name: DNAT_CHAIN.into(),
        entry_chains: &["PREROUTING", "OUTPUT"],
        entry_rules: vec![entry("PREROUTING"), entry("OUTPUT")],
        rules: vec![],
        prepend_entry: false,
    }
}

/// The shared chains this config needs, in the order `setup` makes them (the stamp's order).
fn shared_chains(t: &Table, p: &Params, v6: bool) -> Vec<ChainSpec> {
    let mark = 1u32 << p.mark_bit;
    let mut out = Vec::new();
    if p.snat && p.external_setmark.is_none() {
        out.push(setmark_chain(t, mark));
        out.push(masq_chain(t, v6, mark));
    }
    out.push(toplevel_chain(t));
    out
}

/// The shared rules of `chains` in stamp order: each chain's rules, then its entry rules.
fn shared_wants(chains: &[ChainSpec]) -> Vec<&Want> {
    chains
        .iter()
        .flat_map(|c| c.rules.iter().chain(&c.entry_rules))
        .collect()
}

/// The attachment's entry rule for one protocol and up to 15 ports, with the conditions.
fn entry_rule(t: &Table, name: &str, comment: &str, proto: L4Proto, ports: &[u16], c: &Conds) -> Rule {
    let mut r = IptRule::new(t, DNAT_CHAIN);
    if let Some((n, inv)) = &c.iif {
        r = r.in_iface(n, *inv);
    }
    if let Some((n, inv)) = &c.oif {
        r = r.out_iface(n, *inv);
    }
    r = r.proto(proto as u8);
    if let Some((a, inv)) = c.src {
        r = r.src(a, inv);
    }
    if let Some((a, inv)) = c.dst {
        r = r.dst(a, inv);
    }
    r = r.comment(comment).with(xt::multiport(true, ports));
    for m in &c.matches {
        r = match m {
            CondMatch::Comment(text) => r.comment(text),
            CondMatch::Ports { proto, sport, dport } => xt::tcpudp_ports(*proto as u8, *sport, *dport)
                .into_iter()
                .fold(r, |r, e| r.with(e)),
        };
    }
    r.jump(name)
}

/// `fillDnatRules`: the per-container chain, its entry rules (per protocol, sorted, 15 ports
/// each) and per mapping the hairpin and localhost mark rules and the DNAT.
fn dnat_chain(t: &Table, p: &Params, maps: &[Mapping], container: IpNet) -> ChainSpec {
    let v6 = matches!(container, IpNet::V6(_));
    let name = dnat_chain_name(p.network, p.container_id);
    let comment = trim_comment(&format!("dnat name: \"{}\" id: \"{}\"", p.network, p.container_id));
    let setmark = p.external_setmark.unwrap_or(SETMARK_CHAIN);
    let mut protos: Vec<L4Proto> = maps.iter().map(|m| m.proto).collect();
    protos.sort_by_key(|p| proto_name(*p));
    protos.dedup();
    let mut entry_rules = Vec::new();
    for proto in protos {
        let ports: Vec<u16> = maps.iter().filter(|m| m.proto == proto).map(|m| m.host_port).collect();
        for chunk in ports.chunks(MULTIPORT_MAX) {
            entry_rules.push(Want {
                rule: entry_rule(t, &name, &comment, proto, chunk, p.conditions),
                proto: Some(proto as u8),
            });
        }
    }
    let mut rules = Vec::new();
    for m in maps {
        // A hostIP of the other family skips the mapping; an unspecified one matches any.
        let dst = match m.host_ip {
            Some(ip) if ip.is_ipv6() != v6 => continue,
            Some(ip) if !ip.is_unspecified() => Some(ip),
            _ => None,
        };
        let base = |src: Option<IpNet>| {
            let mut r = IptRule::new(t, &name).proto(m.proto as u8);
            if let Some(s) = src {
                r = r.src(s, false);
            }
            if let Some(d) = dst {
                r = r.dst(d, false);
            }
            match m.proto {
                L4Proto::Sctp => r.with(xt::sctp_dport(m.host_port)),
                _ => r.dport(m.host_port),
            }
        };
        let want = |rule| Want {
            rule,
            proto: Some(m.proto as u8),
        };
        if p.snat {
            // masqAll: `-s 0.0.0.0/0`, which iptables-nft writes as no match at all.
            let hairpin = if p.masq_all {
                IpNet::new(container.network(), 0).unwrap()
            } else {
                container.trunc()
            };
            rules.push(want(base(Some(hairpin)).jump(setmark)));
            if !v6 && !p.masq_all {
                rules.push(want(base(Some("127.0.0.1/32".parse().unwrap())).jump(setmark)));
            }
        }
        rules.push(want(
            base(None).target(&xt::dnat_target(container.addr(), Some(m.container_port))),
        ));
    }
    ChainSpec {
        name,
        entry_chains: &[DNAT_CHAIN],
        entry_rules,
        rules,
        prepend_entry: false,
    }
}

/// `trimComment`: comments are cut to 255 bytes (the xt comment match's limit).
fn trim_comment(c: &str) -> String {
    let mut s = c.to_string();
    if s.len() > 255 {
        let mut n = 255;
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        s.truncate(n);
    }
    s
}

fn table(v6: bool) -> Table {
    Table::new(if v6 { Family::Ip6 } else { Family::Ip }, TABLE)
}

fn records_of(sock: &NftSocket, family: Family) -> Records {
    Records::open_scoped(sock, family, TABLE, SCOPE)
}

/// The base chains iptables-nft makes in `nat` (priorities as iptables-nft sets them).
fn base_chain(t: &Table, name: &str) -> Option<Chain> {
    let (hook, prio) = match name {
        "PREROUTING" => (Hook::Prerouting, priority::DSTNAT),
        "INPUT" => (Hook::Input, priority::SRCNAT),
        "OUTPUT" => (Hook::Output, priority::DSTNAT),
        "POSTROUTING" => (Hook::Postrouting, priority::SRCNAT),
        _ => return None,
    };
    Some(Chain::base(t, name, ChainType::Nat, hook, prio, Policy::Accept))
}

fn add_want(b: &mut Batch, w: &Want, pos: Position) -> usize {
    match w.proto {
        Some(p) => b.add_rule_compat(&w.rule, pos, p, false),
        None => b.add_rule(&w.rule, pos),
    };
    b.len() - 1
}

/// Where a rule ADD needs ended up: already there (its handle) or in the batch (its index).
#[derive(Clone, Copy, Debug)]
enum Place {
    Have(u64),
    Queued(usize),
}

fn place_handle(p: Place, handles: &[Option<u64>]) -> Option<u64> {
    match p {
        Place::Have(h) => Some(h),
        Place::Queued(i) => handles.get(i).copied().flatten(),
    }
}

/// The reference's own logic over listings (the slow path: anything the records could not
/// vouch for).
struct Ctx<'a> {
    sock: &'a NftSocket,
    t: Table,
    chains: Vec<String>,
    b: Batch,
    /// Rules listed per chain, plus those queued in this batch.
    seen: Vec<(String, Vec<Rule>)>,
}

impl Ctx<'_> {
    fn ensure_chain(&mut self, name: &str) {
        if self.chains.iter().any(|c| c == name) {
            return;
        }
        let c = base_chain(&self.t, name).unwrap_or_else(|| Chain::regular(&self.t, name));
        self.b.add_chain(&c);
        self.chains.push(name.to_string());
    }

    fn rules(&mut self, chain: &str) -> Result<&mut Vec<Rule>> {
        if let Some(i) = self.seen.iter().position(|(c, _)| c == chain) {
            return Ok(&mut self.seen[i].1);
        }
        let have = if self.chains.iter().any(|c| c == chain) {
            self.sock.list_rules(self.t.family, TABLE, chain)?
        } else {
            Vec::new()
        };
        self.seen.push((chain.to_string(), have));
        Ok(&mut self.seen.last_mut().unwrap().1)
    }

    /// The reference's `insertUnique`.
    fn insert_unique(&mut self, w: &Want, prepend: bool) -> Result<Place> {
        let have = self.rules(&w.rule.chain)?;
        if let Some(h) = have.iter().find(|h| xt::same_rule(&h.exprs, &w.rule.exprs)) {
            if let Some(handle) = h.handle {
                return Ok(Place::Have(handle));
            }
        }
        have.push(w.rule.clone());
        let pos = if prepend { Position::Prepend } else { Position::Append };
        Ok(Place::Queued(add_want(&mut self.b, w, pos)))
    }

    /// The reference's `chain.setup`: the chain, its rules, then its entry rules. Returns
    /// where each rule and entry rule is, in that order.
    fn setup(&mut self, c: &ChainSpec) -> Result<Vec<Place>> {
        self.ensure_chain(&c.name);
        let mut out = Vec::new();
        for r in &c.rules {
            out.push(self.insert_unique(r, false)?);
        }
        for e in c.entry_chains {
            self.ensure_chain(e);
        }
        for r in &c.entry_rules {
            out.push(self.insert_unique(r, c.prepend_entry)?);
        }
        Ok(out)
    }

    /// The reference's `chain.teardown`: the jumps to `name` in `entry_chains`, the chain's
    /// rules and the chain.
    fn teardown(&mut self, name: &str, entry_chains: &[&str]) -> Result<()> {
        if !self.chains.iter().any(|c| c == name) {
            return Ok(());
        }
        let jumps = |r: &Rule| {
            r.exprs
                .iter()
                .any(|x| matches!(x, Expr::Verdict(Verdict::Jump(c) | Verdict::Goto(c)) if c == name))
        };
        for e in entry_chains {
            if !self.chains.iter().any(|c| c == e) {
                continue;
            }
            let t = self.t.clone();
            let have = self.rules(e)?;
            let gone: Vec<u64> = have.iter().filter(|r| jumps(r)).filter_map(|r| r.handle).collect();
            // Later insert_unique calls must not take the deleted jumps for present ones.
            have.retain(|r| !jumps(r));
            for h in gone {
                self.b.del_rule(&t, e, h);
            }
        }
        self.b.flush_chain(&self.t, name);
        self.b.del_chain(&self.t, name);
        self.chains.retain(|c| c != name);
        // Known empty from here on (a listing would still show the old rules).
        self.seen.retain(|(c, _)| c != name);
        self.seen.push((name.to_string(), Vec::new()));
        Ok(())
    }
}

/// `create`: queue the table's creation if it is missing (ADD).
fn ctx(sock: &NftSocket, v6: bool, create: bool) -> Result<Ctx<'_>> {
    let t = table(v6);
    let chains: Vec<String> = sock.list_chains(t.family, TABLE)?.into_iter().map(|c| c.name).collect();
    let mut b = Batch::new();
    if create && chains.is_empty() && !sock.table_exists(t.family, TABLE)? {
        b.add_table(&t);
    }
    Ok(Ctx {
        sock,
        t,
        chains,
        b,
        seen: Vec::new(),
    })
}

// ---- ADD ----------------------------------------------------------------------------------

/// Whether the stamp's handles are still exactly the shared rules `wants` (one GETRULE each).
fn shared_hold(sock: &NftSocket, rec: &Records, t: &Table, wants: &[&Want]) -> Result<bool> {
    let Some(stamp) = rec.stamp() else {
        return Ok(false);
    };
    if stamp.len() != wants.len() {
        return Ok(false);
    }
    for (w, h) in wants.iter().zip(stamp) {
        match sock.get_rule(t.family, TABLE, &w.rule.chain, h)? {
            Some(r) if xt::same_rule(&r.exprs, &w.rule.exprs) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The attachment's recorded entry jumps, each fetched by handle: `Some` when every one is
/// still a jump to its chain `dn` with the attachment's comment.
fn recorded_jumps(sock: &NftSocket, rec: &Records, fam: Family, key: &str, dn: &str) -> Result<Option<Vec<u64>>> {
    let (Recorded::Rules(r), Some(label)) = rec.get_labelled(key) else {
        return Ok(None);
    };
    if label != dn {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (chain, h) in r {
        match sock.get_rule(fam, TABLE, &chain, h)? {
            Some(rule) if chain == DNAT_CHAIN && Listed::parse(&rule).jump_target() == Some(dn) => out.push(h),
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// ADD for one container address (the reference's `forwardPorts`), one atomic batch. While
/// the recorded shared rules check out, nothing shared is listed; otherwise the reference's
/// logic runs on listings, committed at the generation they saw (parallel ADDs share the
/// top-level chains).
pub fn setup(sock: &NftSocket, p: &Params, maps: &[Mapping], container: IpNet, key: &str) -> Result<()> {
    let v6 = matches!(container, IpNet::V6(_));
    let t = table(v6);
    let rec = records_of(sock, t.family);
    let shared = shared_chains(&t, p, v6);
    let dn = dnat_chain(&t, p, maps, container);
    let what = || format!("failed to set up port mappings (iptables, {})", t.family);
    if shared_hold(sock, &rec, &t, &shared_wants(&shared))? {
        let exists = sock.chain_exists(t.family, TABLE, &dn.name)?;
        let stale = if exists {
            recorded_jumps(sock, &rec, t.family, key, &dn.name)?
        } else {
            Some(Vec::new())
        };
        if let Some(stale) = stale {
            let mut b = Batch::new();
            if exists {
                for h in stale {
                    b.del_rule(&t, DNAT_CHAIN, h);
                }
                b.flush_chain(&t, &dn.name);
                b.del_chain(&t, &dn.name);
            }
            b.add_chain(&Chain::regular(&t, &dn.name));
            for r in &dn.rules {
                add_want(&mut b, r, Position::Append);
            }
            let first = b.len();
            for r in &dn.entry_rules {
                add_want(&mut b, r, Position::Append);
            }
            rec.put_pending(key);
            // A jump to the old chain that is not recorded makes the kernel refuse its
            // deletion: then the listings decide, as below.
            if let Ok(handles) = b.commit_echo(sock) {
                let made = records::echoed(&handles, first, dn.entry_rules.len(), |_| DNAT_CHAIN.to_string());
                record_jumps(&rec, key, &dn.name, made);
                return Ok(());
            }
        }
    }
    let mut places = Vec::new();
    let mut first = 0;
    rec.put_pending(key);
    let handles = Batch::build_and_commit_echo(sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
        let mut c = ctx(sock, v6, true)?;
        places.clear();
        for s in &shared {
            places.extend(c.setup(s)?);
        }
        // A stale chain of the same attachment goes first, as in the reference.
        c.teardown(&dn.name, &[DNAT_CHAIN])?;
        c.ensure_chain(&dn.name);
        for r in &dn.rules {
            c.insert_unique(r, false)?;
        }
        first = c.b.len();
        for r in &dn.entry_rules {
            c.insert_unique(r, false)?;
        }
        *b = std::mem::take(&mut c.b);
        Ok(())
    })
    .with_context(what)?;
    let made = records::echoed(&handles, first, dn.entry_rules.len(), |_| DNAT_CHAIN.to_string());
    record_jumps(&rec, key, &dn.name, made);
    match places
        .iter()
        .map(|p| place_handle(*p, &handles))
        .collect::<Option<Vec<u64>>>()
    {
        Some(hs) if !hs.is_empty() => rec.put_stamp(&hs),
        _ => rec.forget_stamp(),
    }
    Ok(())
}

fn record_jumps(rec: &Records, key: &str, dn: &str, made: Option<Vec<(String, u64)>>) {
    match made {
        Some(m) if !m.is_empty() => rec.put_labelled(key, Some(dn), &m),
        _ => rec.forget(key),
    }
}

// ---- DEL ----------------------------------------------------------------------------------

/// What DEL found of an attachment in the iptables layout.
pub struct Removal {
    /// Objects queued for removal.
    pub found: usize,
    /// Whether the records alone decided (a failed commit is then retried with listings).
    pub from_records: bool,
}

/// DEL (the reference's `unforwardPorts`): in both families the attachment's DNAT chain with
/// the jumps to it, and the chain of old versions; shared chains stay. Queued into `b`. By
/// record (one GETCHAIN per family, one GETRULE per recorded jump) unless `listings`, or a
/// family's record does not check out: then as the reference finds them (the shared chains
/// the jumps can be in are listed).
pub fn plan_del(
    sock: &NftSocket,
    b: &mut Batch,
    network: &str,
    cid: &str,
    key: &str,
    listings: bool,
) -> Result<Removal> {
    let dn = dnat_chain_name(network, cid);
    let sn = old_snat_chain_name(network, cid);
    if !listings {
        let mut plans = Vec::new();
        for v6 in [false, true] {
            let t = table(v6);
            if !sock.chain_exists(t.family, TABLE, &dn)? {
                if sock.chain_exists(t.family, TABLE, &sn)? {
                    plans.clear();
                    break;
                }
                plans.push((t, Vec::new(), false));
                continue;
            }
            match recorded_jumps(sock, &records_of(sock, t.family), t.family, key, &dn)? {
                Some(jumps) if !sock.chain_exists(t.family, TABLE, &sn)? => plans.push((t, jumps, true)),
                _ => {
                    plans.clear();
                    break;
                }
            }
        }
        if plans.len() == 2 {
            let mut found = 0;
            for (t, jumps, chain) in plans {
                for h in &jumps {
                    b.del_rule(&t, DNAT_CHAIN, *h);
                }
                if chain {
                    b.flush_chain(&t, &dn);
                    b.del_chain(&t, &dn);
                }
                found += jumps.len() + chain as usize;
            }
            return Ok(Removal {
                found,
                from_records: true,
            });
        }
    }
    let dnat = reference::dnat_comment(network, cid);
    let snat = format!("snat {}", reference::masq_comment(network, cid));
    // Where the reference's releases put an attachment's jumps (CNI-HOSTPORT-SNAT: before 0.8).
    let scope = reference::Scope::Chains(&[DNAT_CHAIN, "CNI-HOSTPORT-SNAT", MASQ_CHAIN, SETMARK_CHAIN]);
    let found = reference::plan_nat_removal(sock, b, scope, &|c| c == dnat || c == snat, &[dn, sn])?;
    Ok(Removal {
        found,
        from_records: false,
    })
}

/// After DEL's commit: the attachment's records go.
pub fn forget(sock: &NftSocket, key: &str) {
    for fam in [Family::Ip, Family::Ip6] {
        records_of(sock, fam).forget(key);
    }
}

/// GC: the records of `prefix`'s attachments not in `keep` (their rules went by listing).
pub fn forget_stale(sock: &NftSocket, prefix: &str, keep: &[String]) {
    for fam in [Family::Ip, Family::Ip6] {
        let rec = records_of(sock, fam);
        for k in rec.keys() {
            if k.starts_with(prefix) && !keep.contains(&k) {
                rec.forget(&k);
            }
        }
    }
}

// ---- CHECK --------------------------------------------------------------------------------

/// CHECK (the reference's `checkPorts`): the DNAT chain, its rules and entry rules.
pub fn check(sock: &NftSocket, p: &Params, maps: &[Mapping], container: IpNet) -> Result<()> {
    let v6 = matches!(container, IpNet::V6(_));
    let t = table(v6);
    let dn = dnat_chain(&t, p, maps, container);
    if !sock.chain_exists(t.family, TABLE, &dn.name)? {
        bail!(
            "could not check dnat chain: chain {} does not exist in {} {TABLE}",
            dn.name,
            t.family
        );
    }
    let have = sock.list_rules(t.family, TABLE, &dn.name)?;
    let entry = sock.list_rules(t.family, TABLE, DNAT_CHAIN)?;
    for w in dn.rules.iter().chain(&dn.entry_rules) {
        let pool = if w.rule.chain == DNAT_CHAIN { &entry } else { &have };
        if !pool.iter().any(|h| xt::same_rule(&h.exprs, &w.rule.exprs)) {
            bail!(
                "could not check dnat chain: a rule of {} is missing in {} {TABLE}",
                w.rule.chain,
                t.family
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_name_matches_the_reference() {
        // Seen from the reference portmap: network "pmnet", container "abc123".
        assert_eq!(dnat_chain_name("pmnet", "abc123"), "CNI-DN-b5380f05ebb61736bc431");
    }

    fn conds(args: &[&str], v6: bool) -> Result<Conds> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse_conditions("conditionsV4", &args, v6)
    }

    fn code(r: Result<Conds>) -> (u32, String) {
        let e = r.expect_err("an error");
        let c = CniError::from_anyhow(&e);
        (c.code, c.msg)
    }

    #[test]
    fn conditions_translate_what_iptables_takes() {
        let c = conds(
            &[
                "!",
                "-s",
                "10.0.0.1/255.255.0.0",
                "-i",
                "eth+",
                "-m",
                "comment",
                "--comment",
                "a b",
            ],
            false,
        )
        .unwrap();
        assert_eq!(c.src, Some(("10.0.0.0/16".parse().unwrap(), true)));
        assert_eq!(c.iif, Some(("eth+".into(), false)));
        assert_eq!(c.matches, vec![CondMatch::Comment("a b".into())]);
        let c = conds(&["-m", "tcp", "!", "--dport", "5:6", "--sport", ":9"], false).unwrap();
        assert_eq!(
            c.matches,
            vec![CondMatch::Ports {
                proto: L4Proto::Tcp,
                sport: PortRange {
                    from: 0,
                    to: 9,
                    invert: false
                },
                dport: PortRange {
                    from: 5,
                    to: 6,
                    invert: true
                },
            }]
        );
        assert!(c.check_protocols("conditionsV4", &[L4Proto::Tcp]).is_ok());
        assert_eq!(
            CniError::from_anyhow(&c.check_protocols("conditionsV4", &[L4Proto::Udp]).unwrap_err()).code,
            7
        );
        assert_eq!(
            conds(&["-d", "fd00::/64"], true).unwrap().dst.unwrap().0.prefix_len(),
            64
        );
        assert!(conds(&["-m", "udp"], false).is_ok());
        for (bad, names) in [
            (&["-p", "tcp"][..], "-p"),
            (&["--dport", "80"], "--dport"),
            (&["-j", "ACCEPT"], "-j"),
            (&["-s", "1.2.3.4,5.6.7.8"], "lists"),
            (&["-s", "fd00::1"], "IPv4"),
            (&["-m", "tcp", "--dport", "6:5"], "min > max"),
            (&["-m", "tcp", "--dport", "http"], "numbers"),
            (&["-m", "multiport", "--dports", "1"], "multiport"),
            (&["-s", "1.2.3.4", "--src", "1.2.3.5"], "multiple"),
            (&["-i", "a-very-long-interface"], "interface"),
            (&["!"], "!"),
            (&["-s"], "value"),
            (&["-s 10.0.0.0/8"], "-s 10.0.0.0/8"),
            (&["!", "-d", "0.0.0.0/0"], "nothing"),
        ] {
            let (c, msg) = code(conds(bad, false));
            assert_eq!(c, 7, "{bad:?}: {msg}");
            assert!(
                msg.starts_with("conditionsV4: ") && msg.contains(names),
                "{bad:?}: {msg}"
            );
        }
    }
}
