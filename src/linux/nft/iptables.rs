//! Reading rules made by the `iptables-nft` tool: its tables are ordinary nftables tables
//! (`ip nat`, `ip filter`, `ip6 nat`, `ip6 filter`), with native expressions where iptables-nft
//! has a translation (addresses, `-p`, `--dport`, jumps, ACCEPT) and xtables compat `match` /
//! `target` expressions elsewhere (`-m comment`, `-m multiport`, `-j DNAT`, `-j MASQUERADE`).
//!
//! [`IptRule::parse`] turns a listed [`Rule`] into the few fields needed to recognise and
//! delete rules by their `-s`/`-d`, `-p`, `--dport`, comment and target; everything else is
//! kept as raw xt matches or skipped. Writing is not done here.
//!
//! Legacy iptables (x_tables, `iptables-legacy`) keeps its rules outside nftables: that is
//! `linux::xtables`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::expr::{CmpOp, Expr, MetaKey, PayloadBase, Verdict};
use super::socket::NftSocket;
use super::wire;
use super::{Batch, Family, Rule, Table};
use crate::linux::Error;

const NFTA_XT_NAME: u16 = 1;
const NFTA_XT_REV: u16 = 2;
const NFTA_XT_INFO: u16 = 3;

/// An xtables compat match or target: extension name, revision and its binary info blob
/// (the kernel's `struct xt_*_info`, in host byte order unless the struct says otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xt {
    pub name: String,
    pub rev: u32,
    pub info: Vec<u8>,
}

impl Xt {
    fn decode(data: &[u8]) -> Option<Xt> {
        Some(Xt {
            name: wire::attr_str(data, NFTA_XT_NAME)?,
            rev: wire::attr_u32(data, NFTA_XT_REV).unwrap_or(0),
            info: wire::attr(data, NFTA_XT_INFO).unwrap_or(&[]).to_vec(),
        })
    }
}

/// `-s`/`-d`: an address prefix, possibly negated (`! -d 224.0.0.0/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    pub net: IpNet,
    pub invert: bool,
}

/// What a rule does when it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IptTarget {
    /// A standard verdict (`-j ACCEPT`, `-j CHAIN`, `-g CHAIN`, `-j RETURN` …).
    Verdict(Verdict),
    /// An extension target (`-j DNAT`, `-j MASQUERADE`, `-j MARK` …).
    Xt(Xt),
    /// No target (a counting rule).
    None,
}

/// `-j DNAT --to-destination ADDR[:PORT]` as decoded from its `nf_nat_range` info.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnatTo {
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
}

/// One iptables-nft rule, decoded as far as recognising it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IptRule {
    pub chain: String,
    pub handle: u64,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    /// `-p` (layer 4 protocol number).
    pub proto: Option<u8>,
    /// `--dport` of `-m tcp`/`-m udp` (translated natively by iptables-nft).
    pub dport: Option<u16>,
    /// `-m comment --comment` (or a native rule comment, for rules made by other tools).
    pub comment: Option<String>,
    /// Every xt match other than `comment`, in order.
    pub matches: Vec<Xt>,
    pub target: IptTarget,
    /// Expressions this decoder did not understand (interface matches, marks, …): a rule
    /// with any of them is more specific than its decoded fields say.
    pub unknown: usize,
}

/// Which field a payload/meta load put into the register a following `cmp` tests.
#[derive(Clone, Copy)]
enum Load {
    Src(u32),
    Dst(u32),
    Proto,
    Dport,
    Other,
}

impl IptRule {
    /// Decodes a rule of an `ip`/`ip6` iptables-nft table (listed with its expressions).
    pub fn parse(rule: &Rule) -> IptRule {
        let v6 = rule.table.family == Family::Ip6;
        let (src_off, dst_off) = if v6 { (8, 24) } else { (12, 16) };
        let mut r = IptRule {
            chain: rule.chain.clone(),
            handle: rule.handle.unwrap_or_default(),
            src: None,
            dst: None,
            proto: None,
            dport: None,
            comment: rule.comment.clone(),
            matches: Vec::new(),
            target: IptTarget::None,
            unknown: 0,
        };
        let mut load: Option<Load> = None;
        let mut mask: Option<Vec<u8>> = None;
        for e in &rule.exprs {
            match e {
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset,
                    len,
                    ..
                } if *offset == src_off => load = Some(Load::Src(*len)),
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset,
                    len,
                    ..
                } if *offset == dst_off => load = Some(Load::Dst(*len)),
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                    ..
                } => load = Some(Load::Dport),
                Expr::Meta {
                    key: MetaKey::L4Proto, ..
                } => load = Some(Load::Proto),
                Expr::Payload { .. } | Expr::Meta { .. } | Expr::Ct { .. } => load = Some(Load::Other),
                Expr::Bitwise { mask: m, .. } => mask = Some(m.clone()),
                Expr::Cmp { op, data, .. } => {
                    let invert = *op == CmpOp::Neq;
                    match load.take() {
                        Some(Load::Src(len)) => r.src = addr_match(v6, len, mask.take(), data, invert),
                        Some(Load::Dst(len)) => r.dst = addr_match(v6, len, mask.take(), data, invert),
                        Some(Load::Proto) if !invert => r.proto = data.first().copied(),
                        Some(Load::Dport) if !invert && data.len() == 2 => {
                            r.dport = Some(u16::from_be_bytes([data[0], data[1]]))
                        }
                        _ => r.unknown += 1,
                    }
                    mask = None;
                }
                Expr::Counter { .. } => {}
                Expr::Verdict(v) => r.target = IptTarget::Verdict(v.clone()),
                Expr::Other { name, data } if name == "match" => match Xt::decode(data) {
                    Some(x) if x.name == "comment" => r.comment = Some(wire::cstr(&x.info)),
                    Some(x) => r.matches.push(x),
                    None => r.unknown += 1,
                },
                Expr::Other { name, data } if name == "target" => match Xt::decode(data) {
                    Some(x) => r.target = IptTarget::Xt(x),
                    None => r.unknown += 1,
                },
                _ => r.unknown += 1,
            }
        }
        r
    }

    /// The chain this rule jumps or goes to, if any.
    pub fn jump_target(&self) -> Option<&str> {
        match &self.target {
            IptTarget::Verdict(Verdict::Jump(c)) | IptTarget::Verdict(Verdict::Goto(c)) => Some(c),
            _ => None,
        }
    }

    /// Whether the target is the extension `name` (`MASQUERADE`, `DNAT`, `MARK` …).
    pub fn xt_target(&self) -> Option<&Xt> {
        match &self.target {
            IptTarget::Xt(x) => Some(x),
            _ => None,
        }
    }

    /// Whether the rule carries the xt match `name` (e.g. `conntrack`, `multiport`).
    pub fn has_match(&self, name: &str) -> bool {
        self.matches.iter().any(|m| m.name == name)
    }

    /// The destination ports of `-m multiport --dports` (revision 0 or 1), if present.
    pub fn multiport_dports(&self) -> Option<Vec<u16>> {
        let m = self.matches.iter().find(|m| m.name == "multiport")?;
        // struct xt_multiport{,_v1}: u8 flags, u8 count, u16 ports[15] (host order), …
        let (flags, count) = (*m.info.first()?, *m.info.get(1)? as usize);
        if flags != 1 || count > 15 {
            return None; // not (only) destination ports
        }
        (0..count)
            .map(|i| {
                let o = 2 + 2 * i;
                Some(u16::from_ne_bytes([*m.info.get(o)?, *m.info.get(o + 1)?]))
            })
            .collect()
    }

    /// `-j DNAT --to-destination …` (revisions 0–2 share the address and port offsets of
    /// `nf_nat_range`: u32 flags, `min_addr[16]`, `max_addr[16]`, min_proto (network order) …).
    pub fn dnat_to(&self) -> Option<DnatTo> {
        let x = self.xt_target().filter(|x| x.name == "DNAT")?;
        if x.rev == 0 {
            // nf_nat_ipv4_multi_range_compat: u32 rangesize, then u32 flags, be32 min_ip, be32
            // max_ip, be16 min port, be16 max port.
            let i = &x.info;
            let flags = u32::from_ne_bytes(i.get(4..8)?.try_into().ok()?);
            let ip: [u8; 4] = i.get(8..12)?.try_into().ok()?;
            let port = u16::from_be_bytes(i.get(16..18)?.try_into().ok()?);
            return Some(DnatTo {
                addr: (flags & 1 != 0).then(|| IpAddr::V4(Ipv4Addr::from(ip))),
                port: (flags & 2 != 0).then_some(port),
            });
        }
        let i = &x.info;
        let flags = u32::from_ne_bytes(i.get(0..4)?.try_into().ok()?);
        let a: [u8; 16] = i.get(4..20)?.try_into().ok()?;
        let port = u16::from_be_bytes(i.get(36..38)?.try_into().ok()?);
        Some(DnatTo {
            addr: (flags & 1 != 0).then(|| dnat_addr(a)),
            port: (flags & 2 != 0).then_some(port),
        })
    }
}

/// The DNAT target's address: IPv4 sits in the first four bytes of the union, the rest zero.
fn dnat_addr(a: [u8; 16]) -> IpAddr {
    if a[4..].iter().all(|&b| b == 0) {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// An address match from a load of `len` bytes, an optional bitwise mask and the compared data:
/// iptables-nft loads only the prefix's whole bytes for byte-aligned prefixes, and masks the
/// full address otherwise.
fn addr_match(v6: bool, len: u32, mask: Option<Vec<u8>>, data: &[u8], invert: bool) -> Option<AddrMatch> {
    let full = if v6 { 16 } else { 4 };
    if len as usize > full || data.len() != len as usize {
        return None;
    }
    let prefix = match &mask {
        Some(m) => m.iter().map(|b| b.count_ones()).sum::<u32>() as u8,
        None => (len * 8) as u8,
    };
    let mut bytes = data.to_vec();
    bytes.resize(full, 0);
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))
    } else {
        IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))
    };
    Some(AddrMatch {
        net: IpNet::new(addr, prefix).ok()?,
        invert,
    })
}

/// An iptables-nft table (`ip nat`, `ip6 filter` …): the [`Table`] handle for batches.
pub fn table(v6: bool, name: &str) -> Table {
    Table::new(if v6 { Family::Ip6 } else { Family::Ip }, name)
}

/// Every rule of one iptables-nft table, decoded; a missing table lists as empty.
pub fn list_table(sock: &NftSocket, v6: bool, name: &str) -> Result<Vec<IptRule>, Error> {
    let t = table(v6, name);
    match sock.list_table_rules(t.family, name) {
        Ok(rules) => Ok(rules.iter().map(IptRule::parse).collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The rules of some chains of one iptables-nft table, decoded, chain by chain; a missing
/// table or chain lists as empty. Cheaper than [`list_table`] where the table is large (a
/// kube-proxy node has thousands of nat rules).
pub fn list_chains_rules(sock: &NftSocket, v6: bool, name: &str, chains: &[&str]) -> Result<Vec<IptRule>, Error> {
    let t = table(v6, name);
    let mut out = Vec::new();
    for c in chains {
        match sock.list_rules(t.family, name, c) {
            Ok(rules) => out.extend(rules.iter().map(IptRule::parse)),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether the chain exists in the iptables-nft table (false also without the table).
pub fn chain_exists(sock: &NftSocket, v6: bool, name: &str, chain: &str) -> Result<bool, Error> {
    sock.chain_exists(table(v6, name).family, name, chain)
}

/// The chain names of one iptables-nft table; a missing table has none.
pub fn list_chain_names(sock: &NftSocket, v6: bool, name: &str) -> Result<Vec<String>, Error> {
    let t = table(v6, name);
    match sock.list_chains(t.family, name) {
        Ok(cs) => Ok(cs.into_iter().map(|c| c.name).collect()),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Adds to `b` the removal of `rules` (of table `name`) and of `chains` (flushed, then
/// deleted: the rules jumping to them must be among `rules` or already gone).
pub fn remove(b: &mut Batch, v6: bool, name: &str, rules: &[&IptRule], chains: &[&str]) {
    let t = table(v6, name);
    for r in rules {
        b.del_rule(&t, &r.chain, r.handle);
    }
    for c in chains {
        b.flush_chain(&t, c);
        b.del_chain(&t, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::nft::Reg;

    fn xt(kind: &str, name: &str, rev: u32, info: &[u8]) -> Expr {
        let mut w = wire::AttrWriter::new();
        w.put_str(NFTA_XT_NAME, name)
            .put_u32(NFTA_XT_REV, rev)
            .put(NFTA_XT_INFO, info);
        Expr::Other {
            name: kind.into(),
            data: w.buf,
        }
    }

    fn rule(v6: bool, chain: &str, exprs: Vec<Expr>) -> Rule {
        Rule {
            table: table(v6, "nat"),
            chain: chain.into(),
            exprs,
            comment: None,
            handle: Some(5),
        }
    }

    fn load(base: PayloadBase, offset: u32, len: u32) -> Expr {
        Expr::Payload {
            base,
            offset,
            len,
            dreg: Reg::R1,
        }
    }

    fn cmp(op: CmpOp, data: &[u8]) -> Expr {
        Expr::Cmp {
            sreg: Reg::R1,
            op,
            data: data.to_vec(),
        }
    }

    #[test]
    fn masquerade_jump_as_iptables_nft_encodes_it() {
        // -A POSTROUTING -s 10.66.0.2/32 -m comment --comment "…" -j CNI-abc
        let mut comment = b"name: \"n\" id: \"c\"".to_vec();
        comment.resize(256, 0);
        let r = IptRule::parse(&rule(
            false,
            "POSTROUTING",
            vec![
                load(PayloadBase::Network, 12, 4),
                cmp(CmpOp::Eq, &[10, 66, 0, 2]),
                xt("match", "comment", 0, &comment),
                Expr::Counter { packets: 0, bytes: 0 },
                Expr::Verdict(Verdict::Jump("CNI-abc".into())),
            ],
        ));
        assert_eq!(r.src.unwrap().net, "10.66.0.2/32".parse::<IpNet>().unwrap());
        assert_eq!(r.comment.as_deref(), Some("name: \"n\" id: \"c\""));
        assert_eq!(r.jump_target(), Some("CNI-abc"));
        assert_eq!((r.unknown, r.matches.len()), (0, 0));
    }

    #[test]
    fn prefixes_aligned_and_masked() {
        // -d 10.66.0.0/24 (3-byte load), ! -d 224.0.0.0/4 (mask), v6 -d fd66::/64 (8 bytes)
        let r = IptRule::parse(&rule(
            false,
            "c",
            vec![load(PayloadBase::Network, 16, 3), cmp(CmpOp::Eq, &[10, 66, 0])],
        ));
        assert_eq!(r.dst.unwrap().net, "10.66.0.0/24".parse::<IpNet>().unwrap());
        let r = IptRule::parse(&rule(
            false,
            "c",
            vec![
                load(PayloadBase::Network, 16, 4),
                Expr::Bitwise {
                    sreg: Reg::R1,
                    dreg: Reg::R1,
                    mask: vec![0xf0, 0, 0, 0],
                    xor: vec![0; 4],
                },
                cmp(CmpOp::Neq, &[0xe0, 0, 0, 0]),
                xt("target", "MASQUERADE", 0, &[0; 8]),
            ],
        ));
        let d = r.dst.unwrap();
        assert_eq!((d.net, d.invert), ("224.0.0.0/4".parse().unwrap(), true));
        assert_eq!(r.xt_target().unwrap().name, "MASQUERADE");
        let r = IptRule::parse(&rule(
            true,
            "c",
            vec![
                load(PayloadBase::Network, 24, 8),
                cmp(CmpOp::Eq, &[0xfd, 0x66, 0, 0, 0, 0, 0, 0]),
            ],
        ));
        assert_eq!(r.dst.unwrap().net, "fd66::/64".parse::<IpNet>().unwrap());
    }

    #[test]
    fn portmap_rules() {
        // -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.66.0.2:80 (rev 2)
        let mut info = vec![0u8; 44];
        info[..4].copy_from_slice(&3u32.to_ne_bytes());
        info[4..8].copy_from_slice(&[10, 66, 0, 2]);
        info[20..24].copy_from_slice(&[10, 66, 0, 2]);
        info[36..38].copy_from_slice(&80u16.to_be_bytes());
        info[38..40].copy_from_slice(&80u16.to_be_bytes());
        let r = IptRule::parse(&rule(
            false,
            "CNI-DN-x",
            vec![
                Expr::Meta {
                    key: MetaKey::L4Proto,
                    dreg: Reg::R1,
                },
                cmp(CmpOp::Eq, &[6]),
                load(PayloadBase::Transport, 2, 2),
                cmp(CmpOp::Eq, &8080u16.to_be_bytes()),
                xt("target", "DNAT", 2, &info),
            ],
        ));
        assert_eq!((r.proto, r.dport), (Some(6), Some(8080)));
        assert_eq!(
            r.dnat_to(),
            Some(DnatTo {
                addr: Some("10.66.0.2".parse().unwrap()),
                port: Some(80)
            })
        );
        // -m multiport --dports 8080,9090 (rev 1)
        let mut mp = vec![0u8; 2 + 30 + 15 + 1];
        mp[0] = 1;
        mp[1] = 2;
        mp[2..4].copy_from_slice(&8080u16.to_ne_bytes());
        mp[4..6].copy_from_slice(&9090u16.to_ne_bytes());
        let r = IptRule::parse(&rule(
            false,
            "CNI-HOSTPORT-DNAT",
            vec![xt("match", "multiport", 1, &mp)],
        ));
        assert_eq!(r.multiport_dports(), Some(vec![8080, 9090]));
    }
}
