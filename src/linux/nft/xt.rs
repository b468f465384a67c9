//! xtables compat expressions and the rule shapes iptables-nft writes.
//!
//! iptables-nft stores an `iptables` rule as an ordinary nftables rule in the tables
//! `ip|ip6 filter|nat|…`: native expressions where nftables has one (addresses, interface
//! names, ACCEPT/DROP/RETURN/jumps) and, for the rest, the kernel's xtables compat
//! expressions `match` and `target`, which carry the x_tables extension's name, revision and
//! its binary `info` struct verbatim (`NFTA_MATCH_*`/`NFTA_TARGET_*`). `iptables -S` decodes
//! these back into command lines, so rules written here exactly as iptables-nft 1.8 writes
//! them print exactly like the tool's own, and the tool's `-D`/`-C` find them.
//!
//! Observed (`nft --debug=netlink`, raw dumps) with iptables-nft 1.8.9:
//! - `-m comment --comment T` is `match comment rev 0` with a 256-byte NUL-padded info; no
//!   rule userdata is attached (nft's `comment "…"` stays unset).
//! - `-m conntrack --ctstate S` is `match conntrack rev 3` (`struct xt_conntrack_mtinfo3`).
//! - every rule gets a `counter` right before its verdict or target.
//! - `-i|-o NAME` is `meta iifname|oifname` compared over `strlen + 1` bytes (`NAME+`: the
//!   prefix bytes only); `-s|-d A/P` is a payload load of the prefix's whole bytes, or of the
//!   whole address plus a `bitwise` mask when the prefix is not byte-aligned.
//! - `-p PROTO` additionally sets the rule's `NFTA_RULE_COMPAT` (see [`rule_compat`]).
//!
//! The compat expressions travel as [`Expr::Other`] (encoded here byte for byte as the kernel
//! dumps them), so rules read back compare equal to rules built here.

use std::net::IpAddr;

use ipnet::IpNet;

use super::expr::{CmpOp, Expr, MetaKey, PayloadBase, Reg, Verdict};
use super::wire::{self, AttrWriter};
use super::{Rule, Table};

const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_REV: u16 = 2;
const NFTA_MATCH_INFO: u16 = 3;
// The target attributes have the same numbers (`NFTA_TARGET_NAME/REV/INFO`).

/// `NFTA_RULE_COMPAT` and its members.
pub const NFTA_RULE_COMPAT: u16 = 5;
const NFTA_RULE_COMPAT_PROTO: u16 = 1;
const NFTA_RULE_COMPAT_FLAGS: u16 = 2;
/// `NFT_RULE_COMPAT_F_INV`: the protocol match is inverted (`! -p`).
pub const RULE_COMPAT_F_INV: u32 = 1;

/// `XT_MAX_COMMENT_LEN`: the size of `struct xt_comment_info`.
pub const COMMENT_INFO_LEN: usize = 256;
/// `struct xt_conntrack_mtinfo3` (the `conntrack` match, rev 3): its size, XT_ALIGNed to 8,
/// and where the fields set here sit.
mod mtinfo3 {
    pub const LEN: usize = 168;
    pub const MATCH_FLAGS: usize = 146;
    pub const INVERT_FLAGS: usize = 148;
    pub const STATE_MASK: usize = 150;
    /// `XT_CONNTRACK_STATE` in `match_flags`/`invert_flags`.
    pub const STATE: u16 = 1;
}

/// `--ctstate` bits of the conntrack match (`XT_CONNTRACK_STATE_BIT(ctinfo)` and friends).
pub mod ctstate {
    pub const INVALID: u16 = 1;
    pub const ESTABLISHED: u16 = 2;
    pub const RELATED: u16 = 4;
    pub const NEW: u16 = 8;
    pub const UNTRACKED: u16 = 1 << 8;
    pub const SNAT: u16 = 1 << 9;
    pub const DNAT: u16 = 1 << 10;
}

/// Which compat expression: `match` or `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XtKind {
    Match,
    Target,
}

impl XtKind {
    fn expr_name(self) -> &'static str {
        match self {
            XtKind::Match => "match",
            XtKind::Target => "target",
        }
    }
}

/// One xtables extension as a compat expression: name, revision and its raw info struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xt {
    pub kind: XtKind,
    pub name: String,
    pub rev: u32,
    pub info: Vec<u8>,
}

impl Xt {
    pub fn new(kind: XtKind, name: &str, rev: u32, info: Vec<u8>) -> Self {
        Xt {
            kind,
            name: name.to_string(),
            rev,
            info,
        }
    }

    /// The expression, attributes in the kernel's dump order (name, revision, info).
    pub fn to_expr(&self) -> Expr {
        let mut w = AttrWriter::new();
        w.put_str(NFTA_MATCH_NAME, &self.name)
            .put_u32(NFTA_MATCH_REV, self.rev)
            .put(NFTA_MATCH_INFO, &self.info);
        Expr::Other {
            name: self.kind.expr_name().to_string(),
            data: w.buf,
        }
    }

    /// The compat expression `e` is, if it is one.
    pub fn from_expr(e: &Expr) -> Option<Xt> {
        let Expr::Other { name, data } = e else {
            return None;
        };
        let kind = match name.as_str() {
            "match" => XtKind::Match,
            "target" => XtKind::Target,
            _ => return None,
        };
        Some(Xt {
            kind,
            name: wire::attr_str(data, NFTA_MATCH_NAME)?,
            rev: wire::attr_u32(data, NFTA_MATCH_REV).unwrap_or(0),
            info: wire::attr(data, NFTA_MATCH_INFO).unwrap_or(&[]).to_vec(),
        })
    }
}

/// `-m comment --comment TEXT` (longer texts are cut to 255 bytes, as the kernel's limit).
pub fn comment(text: &str) -> Expr {
    comment_match(text).to_expr()
}

/// The `comment` match itself (also what legacy x_tables stores).
pub fn comment_match(text: &str) -> Xt {
    let mut info = vec![0u8; COMMENT_INFO_LEN];
    let s = text.as_bytes();
    let n = s.len().min(COMMENT_INFO_LEN - 1);
    info[..n].copy_from_slice(&s[..n]);
    Xt::new(XtKind::Match, "comment", 0, info)
}

/// The text of a `-m comment` expression.
pub fn comment_text(e: &Expr) -> Option<String> {
    let x = Xt::from_expr(e).filter(|x| x.kind == XtKind::Match && x.name == "comment")?;
    Some(wire::cstr(&x.info))
}

/// The first `-m comment` text among a rule's expressions.
pub fn rule_comment(exprs: &[Expr]) -> Option<String> {
    exprs.iter().find_map(comment_text)
}

/// `-m conntrack --ctstate STATES` ([`ctstate`] bits; `invert` = `! --ctstate`).
pub fn conntrack_state(states: u16, invert: bool) -> Expr {
    conntrack_state_match(states, invert).to_expr()
}

/// The `conntrack` match (rev 3) of [`conntrack_state`].
pub fn conntrack_state_match(states: u16, invert: bool) -> Xt {
    let mut info = vec![0u8; mtinfo3::LEN];
    let put = |info: &mut Vec<u8>, at: usize, v: u16| info[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    put(&mut info, mtinfo3::MATCH_FLAGS, mtinfo3::STATE);
    if invert {
        put(&mut info, mtinfo3::INVERT_FLAGS, mtinfo3::STATE);
    }
    put(&mut info, mtinfo3::STATE_MASK, states);
    Xt::new(XtKind::Match, "conntrack", 3, info)
}

/// (state mask, inverted) of a `-m conntrack --ctstate` expression that matches on state only.
pub fn conntrack_state_of(e: &Expr) -> Option<(u16, bool)> {
    conntrack_state_of_match(&Xt::from_expr(e)?)
}

/// [`conntrack_state_of`] for the match itself.
pub fn conntrack_state_of_match(x: &Xt) -> Option<(u16, bool)> {
    if !(x.kind == XtKind::Match && x.name == "conntrack" && x.rev == 3) {
        return None;
    }
    let get = |at: usize| x.info.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    if get(mtinfo3::MATCH_FLAGS)? != mtinfo3::STATE {
        return None;
    }
    Some((
        get(mtinfo3::STATE_MASK)?,
        get(mtinfo3::INVERT_FLAGS)? & mtinfo3::STATE != 0,
    ))
}

/// `-j MASQUERADE` without options: rev 0 with `struct nf_nat_ipv4_multi_range_compat`
/// (`rangesize` 1, the range zeroed; 24 bytes) for IPv4, a zeroed `struct nf_nat_range`
/// (40 bytes) for IPv6, as iptables-nft sends them.
pub fn masquerade_target(v6: bool) -> Xt {
    let info = if v6 {
        vec![0u8; 40]
    } else {
        let mut v = vec![0u8; 24];
        v[..4].copy_from_slice(&1u32.to_ne_bytes());
        v
    };
    Xt::new(XtKind::Target, "MASQUERADE", 0, info)
}

/// `-m multiport --dports P[,P…]` (rev 1, `struct xt_multiport_v1`, up to 15 ports) or
/// `--sports` (`dest` false).
pub fn multiport(dest: bool, ports: &[u16]) -> Expr {
    multiport_match(dest, ports).to_expr()
}

/// The `multiport` match (rev 1) of [`multiport`].
pub fn multiport_match(dest: bool, ports: &[u16]) -> Xt {
    let mut info = vec![0u8; 48];
    info[0] = if dest { 1 } else { 0 }; // XT_MULTIPORT_DESTINATION / _SOURCE
    let n = ports.len().min(15);
    info[1] = n as u8;
    for (i, p) in ports[..n].iter().enumerate() {
        info[2 + 2 * i..4 + 2 * i].copy_from_slice(&p.to_ne_bytes());
    }
    Xt::new(XtKind::Match, "multiport", 1, info)
}

/// `-m addrtype --dst-type TYPE` (rev 1): `rtn_bits` is `1 << RTN_*`, e.g. `1 << 2` = LOCAL.
pub fn addrtype_dst(rtn_bits: u16) -> Expr {
    addrtype_dst_match(rtn_bits).to_expr()
}

/// The `addrtype` match (rev 1) of [`addrtype_dst`].
pub fn addrtype_dst_match(rtn_bits: u16) -> Xt {
    let mut info = vec![0u8; 8];
    info[2..4].copy_from_slice(&rtn_bits.to_ne_bytes());
    Xt::new(XtKind::Match, "addrtype", 1, info)
}

/// `-j DNAT --to-destination ADDR[:PORT]` (rev 2, `struct nf_nat_range2`, 48 bytes).
pub fn dnat_target(addr: IpAddr, port: Option<u16>) -> Xt {
    let mut info = vec![0u8; 48];
    let mut flags = 1u32; // NF_NAT_RANGE_MAP_IPS
    let a = addr_bytes(addr);
    info[4..4 + a.len()].copy_from_slice(&a);
    info[20..20 + a.len()].copy_from_slice(&a);
    if let Some(p) = port {
        flags |= 2; // NF_NAT_RANGE_PROTO_SPECIFIED
        info[36..38].copy_from_slice(&p.to_be_bytes());
        info[38..40].copy_from_slice(&p.to_be_bytes());
    }
    info[..4].copy_from_slice(&flags.to_ne_bytes());
    Xt::new(XtKind::Target, "DNAT", 2, info)
}

/// `-j MARK --set-xmark VALUE/MASK` (rev 2, `struct xt_mark_tginfo2`).
pub fn mark_target(value: u32, mask: u32) -> Xt {
    let mut info = value.to_ne_bytes().to_vec();
    info.extend_from_slice(&mask.to_ne_bytes());
    Xt::new(XtKind::Target, "MARK", 2, info)
}

/// One side of `-m tcp|udp [!] --sport|--dport FROM[:TO]` (`FROM:FROM` for a single port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
    pub invert: bool,
}

impl PortRange {
    /// What the match holds when the option is not given: every port.
    pub const ANY: PortRange = PortRange {
        from: 0,
        to: u16::MAX,
        invert: false,
    };

    fn is_any(&self) -> bool {
        self.from == 0 && self.to == u16::MAX
    }

    fn single(&self) -> bool {
        self.from != 0 && self.from == self.to
    }
}

/// `-m tcp` / `-m udp` without ports, as iptables-nft sends it: the compat match with its
/// `struct xt_tcp` / `struct xt_udp` (every port; padded to 16 bytes, XT_ALIGN).
pub fn tcpudp_any(proto: u8) -> Expr {
    let mut info = vec![0u8; 16];
    info[2..4].copy_from_slice(&u16::MAX.to_ne_bytes());
    info[6..8].copy_from_slice(&u16::MAX.to_ne_bytes());
    let name = if proto == 17 { "udp" } else { "tcp" };
    Xt::new(XtKind::Match, name, 0, info).to_expr()
}

/// `-p sctp --dport PORT`: iptables-nft has no native form for the sctp match, so it sends
/// the compat `sctp` match (rev 0) with `struct xt_sctp_info` (296 bytes, XT_ALIGNed): the
/// destination port range, every flag_info's chunk type 0xff and `XT_SCTP_DEST_PORTS`, as a
/// raw dump of iptables' own rule shows.
pub fn sctp_dport(port: u16) -> Expr {
    let mut info = vec![0u8; 296];
    info[0..2].copy_from_slice(&port.to_ne_bytes());
    info[2..4].copy_from_slice(&port.to_ne_bytes());
    for i in 0..4 {
        info[268 + 3 * i] = 0xff;
    }
    info[284..288].copy_from_slice(&2u32.to_ne_bytes());
    Xt::new(XtKind::Match, "sctp", 0, info).to_expr()
}

/// `nft_range` over register 1 (`range eq|neq FROM TO`), as the kernel dumps it.
fn range_expr(invert: bool, from: &[u8], to: &[u8]) -> Expr {
    const SREG: u16 = 1;
    const OP: u16 = 2;
    const FROM: u16 = 3;
    const TO: u16 = 4;
    // The kernel dumps the two data nests without NLA_F_NESTED (nla_nest_start_noflag).
    let value = |v: &[u8]| {
        let mut d = AttrWriter::new();
        d.put(wire::NFTA_DATA_VALUE, v);
        d.buf
    };
    let mut w = AttrWriter::new();
    w.put_u32(SREG, Reg::R1.0)
        .put_u32(OP, if invert { 1 } else { 0 })
        .put(FROM, &value(from))
        .put(TO, &value(to));
    Expr::Other {
        name: "range".to_string(),
        data: w.buf,
    }
}

/// The expressions iptables-nft 1.8.9 writes for `-m tcp|udp` with these ports (its
/// `add_nft_tcpudp`, as observed with `nft --debug=netlink`): both sides single ports with the
/// same negation → one 4-byte load of both ports; else each side given → a 2-byte load and
/// `cmp` (one port), `cmp lte|gt` (from 0), or `range`; no side given → the compat match.
pub fn tcpudp_ports(proto: u8, sport: PortRange, dport: PortRange) -> Vec<Expr> {
    if sport.is_any() && dport.is_any() && !sport.invert && !dport.invert {
        return vec![tcpudp_any(proto)];
    }
    let load = |offset: u32, len: u32| Expr::Payload {
        base: PayloadBase::Transport,
        offset,
        len,
        dreg: Reg::R1,
    };
    let op = |invert: bool| if invert { CmpOp::Neq } else { CmpOp::Eq };
    if sport.single() && dport.single() && sport.invert == dport.invert {
        let mut data = sport.from.to_be_bytes().to_vec();
        data.extend(dport.from.to_be_bytes());
        return vec![
            load(0, 4),
            Expr::Cmp {
                sreg: Reg::R1,
                op: op(sport.invert),
                data,
            },
        ];
    }
    let mut out = Vec::new();
    for (offset, p) in [(0, sport), (2, dport)] {
        if p.from == 0 && p.to == u16::MAX {
            continue;
        }
        out.push(load(offset, 2));
        out.push(if p.from == p.to {
            Expr::Cmp {
                sreg: Reg::R1,
                op: op(p.invert),
                data: p.from.to_be_bytes().to_vec(),
            }
        } else if p.from == 0 {
            Expr::Cmp {
                sreg: Reg::R1,
                op: if p.invert { CmpOp::Gt } else { CmpOp::Lte },
                data: p.to.to_be_bytes().to_vec(),
            }
        } else {
            range_expr(p.invert, &p.from.to_be_bytes(), &p.to.to_be_bytes())
        });
    }
    out
}

/// The `NFTA_RULE_COMPAT` attribute iptables-nft adds for `-p PROTO` (flags:
/// [`RULE_COMPAT_F_INV`]), for callers that write rules with protocol-bound extensions.
pub fn rule_compat(proto: u8, flags: u32) -> Vec<u8> {
    let mut w = AttrWriter::new();
    w.nest(NFTA_RULE_COMPAT, |w| {
        w.put_u32(NFTA_RULE_COMPAT_PROTO, proto as u32)
            .put_u32(NFTA_RULE_COMPAT_FLAGS, flags);
    });
    w.buf
}

/// (protocol, flags) of a rule's `NFTA_RULE_COMPAT` attribute, given the rule's attributes.
pub fn rule_compat_of(rule_attrs: &[u8]) -> Option<(u8, u32)> {
    let c = wire::attr(rule_attrs, NFTA_RULE_COMPAT)?;
    Some((
        wire::attr_u32(c, NFTA_RULE_COMPAT_PROTO)? as u8,
        wire::attr_u32(c, NFTA_RULE_COMPAT_FLAGS).unwrap_or(0),
    ))
}

/// Builds a rule the way iptables-nft encodes an `iptables -A CHAIN …` command line.
///
/// Call in iptables-nft's order: interfaces (`-i`, `-o`), addresses (`-s`, `-d`), then the
/// `-m` matches in command-line order, then one of the finishing calls, which add the
/// `counter` and the verdict or target.
pub struct IptRule {
    rule: Rule,
}

impl IptRule {
    pub fn new(table: &Table, chain: &str) -> Self {
        IptRule {
            rule: Rule::new(table, chain),
        }
    }

    fn iface(mut self, key: MetaKey, name: &str, invert: bool) -> Self {
        self.rule.exprs.push(Expr::Meta { key, dreg: Reg::R1 });
        let data = match name.strip_suffix('+') {
            Some("") => return self, // `+` alone matches every name: no comparison
            Some(prefix) => prefix.as_bytes().to_vec(),
            None => {
                let mut v = name.as_bytes().to_vec();
                v.push(0);
                v
            }
        };
        self.rule.exprs.push(Expr::Cmp {
            sreg: Reg::R1,
            op: if invert { CmpOp::Neq } else { CmpOp::Eq },
            data,
        });
        self
    }

    /// `[!] -i NAME` (`NAME+` is a prefix).
    pub fn in_iface(self, name: &str, invert: bool) -> Self {
        self.iface(MetaKey::IifName, name, invert)
    }

    /// `[!] -o NAME`.
    pub fn out_iface(self, name: &str, invert: bool) -> Self {
        self.iface(MetaKey::OifName, name, invert)
    }

    fn addr(mut self, src: bool, net: IpNet, invert: bool) -> Self {
        let (offset, full) = match (net, src) {
            (IpNet::V4(_), true) => (12, 4),
            (IpNet::V4(_), false) => (16, 4),
            (IpNet::V6(_), true) => (8, 16),
            (IpNet::V6(_), false) => (24, 16),
        };
        let plen = net.prefix_len() as usize;
        if plen == 0 && !invert {
            return self; // iptables-nft emits nothing for 0.0.0.0/0
        }
        let data = addr_bytes(net.trunc().network());
        let mask = addr_bytes(net.netmask());
        // A byte-aligned prefix compares its whole bytes; any other a masked full address.
        let aligned = plen.is_multiple_of(8);
        let len = if aligned { plen / 8 } else { full };
        self.rule.exprs.push(Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: len as u32,
            dreg: Reg::R1,
        });
        if !aligned {
            self.rule.exprs.push(Expr::Bitwise {
                sreg: Reg::R1,
                dreg: Reg::R1,
                mask,
                xor: vec![0; full],
            });
        }
        self.rule.exprs.push(Expr::Cmp {
            sreg: Reg::R1,
            op: if invert { CmpOp::Neq } else { CmpOp::Eq },
            data: data[..len].to_vec(),
        });
        self
    }

    /// `-p PROTO` (a protocol number): iptables-nft puts it before the addresses. Rules with
    /// protocol-bound extensions (`multiport`, …) must also carry the rule's compat protocol:
    /// add them with [`Batch::add_rule_compat`](super::Batch::add_rule_compat).
    pub fn proto(mut self, proto: u8) -> Self {
        self.rule.exprs.push(Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: Reg::R1,
        });
        self.rule.exprs.push(Expr::Cmp {
            sreg: Reg::R1,
            op: CmpOp::Eq,
            data: vec![proto],
        });
        self
    }

    /// `-m tcp|udp --dport PORT` (after `proto`), which iptables-nft writes natively.
    pub fn dport(mut self, port: u16) -> Self {
        self.rule.exprs.push(Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Reg::R1,
        });
        self.rule.exprs.push(Expr::Cmp {
            sreg: Reg::R1,
            op: CmpOp::Eq,
            data: port.to_be_bytes().to_vec(),
        });
        self
    }

    /// `-m mark --mark VALUE/MASK`, which iptables-nft writes natively.
    pub fn mark(mut self, value: u32, mask: u32) -> Self {
        self.rule.exprs.push(Expr::Meta {
            key: MetaKey::Mark,
            dreg: Reg::R1,
        });
        if mask != u32::MAX {
            self.rule.exprs.push(Expr::Bitwise {
                sreg: Reg::R1,
                dreg: Reg::R1,
                mask: mask.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
        }
        self.rule.exprs.push(Expr::Cmp {
            sreg: Reg::R1,
            op: CmpOp::Eq,
            data: value.to_ne_bytes().to_vec(),
        });
        self
    }

    /// `[!] -s ADDR[/PREFIX]` (an address alone is /32 or /128).
    pub fn src(self, net: impl Into<IpNet>, invert: bool) -> Self {
        self.addr(true, net.into(), invert)
    }

    /// `[!] -d ADDR[/PREFIX]`.
    pub fn dst(self, net: impl Into<IpNet>, invert: bool) -> Self {
        self.addr(false, net.into(), invert)
    }

    /// Any compat (or native) expression, in command-line order.
    pub fn with(mut self, e: Expr) -> Self {
        self.rule.exprs.push(e);
        self
    }

    /// `-m comment --comment TEXT`.
    pub fn comment(self, text: &str) -> Self {
        self.with(comment(text))
    }

    /// `-m conntrack --ctstate STATES`.
    pub fn ctstate(self, states: u16) -> Self {
        self.with(conntrack_state(states, false))
    }

    /// `-j ACCEPT|DROP|RETURN|CHAIN`: the counter and a native verdict.
    pub fn jump(mut self, target: &str) -> Rule {
        let v = match target {
            "ACCEPT" => Verdict::Accept,
            "DROP" => Verdict::Drop,
            "RETURN" => Verdict::Return,
            chain => Verdict::Jump(chain.to_string()),
        };
        self.rule.exprs.push(Expr::Counter { packets: 0, bytes: 0 });
        self.rule.exprs.push(Expr::Verdict(v));
        self.rule
    }

    /// `-j TARGET` of an xtables target extension: the counter and the compat target.
    pub fn target(mut self, t: &Xt) -> Rule {
        self.rule.exprs.push(Expr::Counter { packets: 0, bytes: 0 });
        self.rule.exprs.push(t.to_expr());
        self.rule
    }

    /// No target (`iptables -A CHAIN -s …` alone): just the counter.
    pub fn no_target(mut self) -> Rule {
        self.rule.exprs.push(Expr::Counter { packets: 0, bytes: 0 });
        self.rule
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Whether two rules have the same expressions, counters' values aside (listed rules carry
/// the packets they counted). This is how iptables-nft's `-C`/`-D` compare too.
pub fn same_rule(a: &[Expr], b: &[Expr]) -> bool {
    let zero = |e: &Expr| match e {
        Expr::Counter { .. } => Expr::Counter { packets: 0, bytes: 0 },
        e => e.clone(),
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| zero(x) == zero(y))
}

/// The addresses a rule compares whole (`-s ADDR`, `-d ADDR` with /32 or /128), as found in
/// rules of `ip`/`ip6` tables or `inet` tables (after their `meta nfproto` dependency).
pub fn full_addresses(exprs: &[Expr]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for w in exprs.windows(2) {
        let (
            Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len,
                ..
            },
            Expr::Cmp {
                op: CmpOp::Eq, data, ..
            },
        ) = (&w[0], &w[1])
        else {
            continue;
        };
        let a = match (*offset, *len, data.len()) {
            (12 | 16, 4, 4) => IpAddr::from(<[u8; 4]>::try_from(data.as_slice()).unwrap()),
            (8 | 24, 16, 16) => IpAddr::from(<[u8; 16]>::try_from(data.as_slice()).unwrap()),
            _ => continue,
        };
        out.push(a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::nft::Family;

    #[test]
    fn comment_round_trip_and_size() {
        let e = comment("CNI firewall plugin rules");
        let x = Xt::from_expr(&e).unwrap();
        assert_eq!(
            (x.kind, x.name.as_str(), x.rev, x.info.len()),
            (XtKind::Match, "comment", 0, 256)
        );
        assert_eq!(comment_text(&e).as_deref(), Some("CNI firewall plugin rules"));
        // As the kernel dumps it: "comment\0", rev 0 big-endian, info.
        let Expr::Other { data, .. } = &e else { panic!() };
        assert_eq!(&data[..12], b"\x0c\x00\x01\x00comment\x00");
        assert_eq!(&data[12..20], b"\x08\x00\x02\x00\x00\x00\x00\x00");
        assert_eq!(data.len(), 12 + 8 + 4 + 256);
    }

    #[test]
    fn conntrack_state_layout_matches_iptables_nft() {
        // Seen in a raw dump of `-m conntrack --ctstate RELATED,ESTABLISHED`.
        let e = conntrack_state(ctstate::RELATED | ctstate::ESTABLISHED, false);
        let x = Xt::from_expr(&e).unwrap();
        assert_eq!((x.name.as_str(), x.rev, x.info.len()), ("conntrack", 3, 168));
        let nonzero: Vec<(usize, u8)> = x.info.iter().copied().enumerate().filter(|(_, b)| *b != 0).collect();
        assert_eq!(nonzero, [(146, 1), (150, 6)]);
        assert_eq!(conntrack_state_of(&e), Some((6, false)));
    }

    #[test]
    fn iface_and_addr_shapes() {
        let t = Table::new(Family::Ip, "filter");
        let r = IptRule::new(&t, "C")
            .in_iface("cni0", false)
            .out_iface("cni0", true)
            .src("10.1.0.0/20".parse::<IpNet>().unwrap(), false)
            .dst("10.88.0.5".parse::<IpAddr>().unwrap(), false)
            .jump("ACCEPT");
        assert_eq!(
            r.exprs[1],
            Expr::Cmp {
                sreg: Reg::R1,
                op: CmpOp::Eq,
                data: b"cni0\0".to_vec()
            }
        );
        assert!(matches!(&r.exprs[3], Expr::Cmp { op: CmpOp::Neq, .. }));
        assert!(matches!(&r.exprs[4], Expr::Payload { offset: 12, len: 4, .. }));
        assert!(matches!(&r.exprs[5], Expr::Bitwise { mask, .. } if mask == &[255, 255, 240, 0]));
        assert!(matches!(&r.exprs[7], Expr::Payload { offset: 16, len: 4, .. }));
        assert_eq!(r.exprs[9], Expr::Counter { packets: 0, bytes: 0 });
        assert_eq!(r.exprs[10], Expr::Verdict(Verdict::Accept));
        assert_eq!(full_addresses(&r.exprs), ["10.88.0.5".parse::<IpAddr>().unwrap()]);
        let r24 = IptRule::new(&t, "C")
            .dst("10.1.0.0/24".parse::<IpNet>().unwrap(), true)
            .no_target();
        assert!(matches!(&r24.exprs[0], Expr::Payload { len: 3, .. }));
        assert!(matches!(&r24.exprs[1], Expr::Cmp { op: CmpOp::Neq, data, .. } if data == &[10, 1, 0]));
    }

    #[test]
    fn same_rule_ignores_counter_values() {
        let t = Table::new(Family::Ip6, "filter");
        let a = IptRule::new(&t, "C").comment("x").jump("RETURN");
        let mut b = a.clone();
        b.exprs[1] = Expr::Counter { packets: 5, bytes: 400 };
        assert!(same_rule(&a.exprs, &b.exprs));
        assert!(!same_rule(
            &a.exprs,
            &IptRule::new(&t, "C").comment("y").jump("RETURN").exprs
        ));
    }

    #[test]
    fn portmap_extensions_match_iptables_nft_bytes() {
        // Raw dumps of the reference portmap's rules (iptables-nft 1.8.9).
        let info = |e: &Expr| Xt::from_expr(e).unwrap().info;
        let mp = info(&multiport(true, &[8080]));
        assert_eq!((&mp[..4], mp.len()), (&[1u8, 1, 0x90, 0x1f][..], 48));
        assert_eq!(info(&addrtype_dst(1 << 2)), [0, 0, 4, 0, 0, 0, 0, 0]);
        let d = dnat_target("10.88.0.5".parse().unwrap(), Some(80));
        let mut want = vec![3, 0, 0, 0, 10, 88, 0, 5];
        want.extend([0; 12]);
        want.extend([10, 88, 0, 5]);
        want.extend([0; 12]);
        want.extend([0, 0x50, 0, 0x50]);
        want.extend([0; 8]);
        assert_eq!((d.name.as_str(), d.rev, d.info), ("DNAT", 2, want));
        assert_eq!(mark_target(0x2000, 0x2000).info, [0, 0x20, 0, 0, 0, 0x20, 0, 0]);
        let m = masquerade_target(false);
        assert_eq!((m.info.len(), m.info[0]), (24, 1));
        assert_eq!(masquerade_target(true).info, vec![0; 40]);
    }

    #[test]
    fn compat_attr_round_trip() {
        let a = rule_compat(6, 0);
        assert_eq!(rule_compat_of(&a), Some((6, 0)));
    }
}
