//! [`RuleBuilder`]: high-level matches and statements, encoded exactly as `nft` encodes them so
//! that `nft list ruleset` prints them back as the same source (`ip saddr 10.1.0.5`, not raw
//! `@nh,96,32`). The encodings were taken from `nft --debug=netlink` (nftables 1.0.6):
//!
//! - a network-header match needs a protocol dependency first, except in `ip`/`ip6` tables:
//!   `meta nfproto` in `inet`, `meta protocol` in `bridge`/`netdev`; emitted once per rule;
//! - a transport match (`tcp dport`) needs `meta l4proto` first, in every family;
//! - a prefix on a byte boundary loads only the prefix bytes (`/24` → 3-byte load + cmp); any
//!   other prefix loads the whole address and masks it with `bitwise` (nft then prints the
//!   prefix notation back); a full-length prefix is a plain comparison.

use std::net::IpAddr;

use ipnet::IpNet;

use super::expr::*;
use super::Family;
use super::{Rule, Table};
use crate::linux::NfProto;

/// Transport protocols that have ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Proto {
    Tcp = 6,
    Udp = 17,
    Sctp = 132,
}

/// Builds a [`Rule`], tracking which protocol dependencies it already asserted.
#[derive(Clone, Debug)]
pub struct RuleBuilder {
    rule: Rule,
    l3: Option<bool>, // Some(is_v6)
    l4: Option<u8>,
}

pub(crate) fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// An interface name as `nft` compares it: padded with NULs to IFNAMSIZ (16), or, for a
/// trailing `*` wildcard, just the prefix bytes.
fn ifname_bytes(name: &str) -> Vec<u8> {
    match name.strip_suffix('*') {
        Some(prefix) => prefix.as_bytes().to_vec(),
        None => {
            let mut v = name.as_bytes().to_vec();
            v.resize(16, 0);
            v
        }
    }
}

impl RuleBuilder {
    /// A rule for `chain` in `table`.
    pub fn new(table: &Table, chain: &str) -> Self {
        RuleBuilder {
            rule: Rule::new(table, chain),
            l3: None,
            l4: None,
        }
    }

    /// Appends a raw expression.
    pub fn expr(mut self, e: Expr) -> Self {
        self.rule.exprs.push(e);
        self
    }

    pub fn comment(mut self, c: &str) -> Self {
        self.rule.comment = Some(c.to_string());
        self
    }

    pub fn build(self) -> Rule {
        self.rule
    }

    fn push(&mut self, e: Expr) {
        self.rule.exprs.push(e);
    }

    fn cmp(&mut self, op: CmpOp, data: Vec<u8>) {
        self.push(Expr::Cmp {
            sreg: Reg::R1,
            op,
            data,
        });
    }

    fn meta(&mut self, key: MetaKey) {
        self.push(Expr::Meta { key, dreg: Reg::R1 });
    }

    /// The layer-3 protocol dependency of a network-header match.
    fn need_l3(&mut self, v6: bool) {
        if self.l3 == Some(v6) {
            return;
        }
        self.l3 = Some(v6);
        match self.rule.table.family {
            Family::Ip | Family::Ip6 => {}
            Family::Inet => {
                self.meta(MetaKey::NfProto);
                self.cmp(CmpOp::Eq, vec![if v6 { 10 } else { 2 }]);
            }
            Family::Bridge | Family::Netdev => {
                // meta protocol holds the ethertype, big-endian.
                self.meta(MetaKey::Protocol);
                let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
                self.cmp(CmpOp::Eq, ethertype.to_be_bytes().to_vec());
            }
        }
    }

    fn need_l4(&mut self, proto: u8) {
        if self.l4 == Some(proto) {
            return;
        }
        self.l4 = Some(proto);
        self.meta(MetaKey::L4Proto);
        self.cmp(CmpOp::Eq, vec![proto]);
    }

    fn addr_match(mut self, src: bool, op: CmpOp, net: IpNet) -> Self {
        let net = net.trunc();
        let v6 = matches!(net, IpNet::V6(_));
        self.need_l3(v6);
        let (offset, full) = match (v6, src) {
            (false, true) => (12, 4),
            (false, false) => (16, 4),
            (true, true) => (8, 16),
            (true, false) => (24, 16),
        };
        let plen = net.prefix_len() as u32;
        let addr = addr_bytes(net.network());
        if plen == full * 8 || (plen.is_multiple_of(8) && plen > 0) {
            let len = if plen == full * 8 { full } else { plen / 8 };
            self.push(Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len,
                dreg: Reg::R1,
            });
            self.cmp(op, addr[..len as usize].to_vec());
        } else {
            self.push(Expr::Payload {
                base: PayloadBase::Network,
                offset,
                len: full,
                dreg: Reg::R1,
            });
            self.push(Expr::Bitwise {
                sreg: Reg::R1,
                dreg: Reg::R1,
                mask: addr_bytes(net.netmask()),
                xor: vec![0; full as usize],
            });
            self.cmp(op, addr);
        }
        self
    }

    /// `ip saddr OP ADDR[/PREFIX]` or `ip6 saddr …`, by the address family of `net`.
    pub fn saddr(self, op: CmpOp, net: impl Into<IpNet>) -> Self {
        self.addr_match(true, op, net.into())
    }

    /// `ip daddr OP ADDR[/PREFIX]` or `ip6 daddr …`.
    pub fn daddr(self, op: CmpOp, net: impl Into<IpNet>) -> Self {
        self.addr_match(false, op, net.into())
    }

    /// `ip[6] saddr|daddr @SET`: look the address up in a named set.
    pub fn addr_in_set(mut self, src: bool, v6: bool, set: &str, invert: bool) -> Self {
        self.need_l3(v6);
        let offset = match (v6, src) {
            (false, true) => 12,
            (false, false) => 16,
            (true, true) => 8,
            (true, false) => 24,
        };
        let len = if v6 { 16 } else { 4 };
        self.push(Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len,
            dreg: Reg::R1,
        });
        self.push(Expr::Lookup {
            set: set.to_string(),
            sreg: Reg::R1,
            invert,
        });
        self
    }

    /// `iifname OP "name"` (a trailing `*` is a prefix wildcard).
    pub fn iifname(mut self, op: CmpOp, name: &str) -> Self {
        self.meta(MetaKey::IifName);
        self.cmp(op, ifname_bytes(name));
        self
    }

    /// `oifname OP "name"`.
    pub fn oifname(mut self, op: CmpOp, name: &str) -> Self {
        self.meta(MetaKey::OifName);
        self.cmp(op, ifname_bytes(name));
        self
    }

    /// `meta iif OP INDEX` / `meta oif OP INDEX` (host-order ifindex).
    pub fn iif(mut self, op: CmpOp, ifindex: u32) -> Self {
        self.meta(MetaKey::Iif);
        self.cmp(op, ifindex.to_ne_bytes().to_vec());
        self
    }

    pub fn oif(mut self, op: CmpOp, ifindex: u32) -> Self {
        self.meta(MetaKey::Oif);
        self.cmp(op, ifindex.to_ne_bytes().to_vec());
        self
    }

    /// `ether saddr OP MAC`.
    pub fn ether_saddr(mut self, op: CmpOp, mac: [u8; 6]) -> Self {
        self.push(Expr::Payload {
            base: PayloadBase::Link,
            offset: 6,
            len: 6,
            dreg: Reg::R1,
        });
        self.cmp(op, mac.to_vec());
        self
    }

    /// `ether daddr OP MAC`.
    pub fn ether_daddr(mut self, op: CmpOp, mac: [u8; 6]) -> Self {
        self.push(Expr::Payload {
            base: PayloadBase::Link,
            offset: 0,
            len: 6,
            dreg: Reg::R1,
        });
        self.cmp(op, mac.to_vec());
        self
    }

    /// `meta l4proto PROTO` (any protocol number).
    pub fn l4proto(mut self, proto: u8) -> Self {
        self.need_l4(proto);
        self
    }

    /// `tcp|udp|sctp dport OP PORT`.
    pub fn dport(self, proto: L4Proto, op: CmpOp, port: u16) -> Self {
        self.port(proto, 2, op, port)
    }

    /// `tcp|udp|sctp sport OP PORT`.
    pub fn sport(self, proto: L4Proto, op: CmpOp, port: u16) -> Self {
        self.port(proto, 0, op, port)
    }

    fn port(mut self, proto: L4Proto, offset: u32, op: CmpOp, port: u16) -> Self {
        self.need_l4(proto as u8);
        self.push(Expr::Payload {
            base: PayloadBase::Transport,
            offset,
            len: 2,
            dreg: Reg::R1,
        });
        self.cmp(op, port.to_be_bytes().to_vec());
        self
    }

    /// `tcp|udp|sctp dport @SET`.
    pub fn dport_in_set(mut self, proto: L4Proto, set: &str) -> Self {
        self.need_l4(proto as u8);
        self.push(Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: Reg::R1,
        });
        self.push(Expr::Lookup {
            set: set.to_string(),
            sreg: Reg::R1,
            invert: false,
        });
        self
    }

    /// `ct state STATES` with [`ct_state`] bits, e.g. `ESTABLISHED | RELATED`: any of them.
    pub fn ct_state(mut self, states: u32) -> Self {
        self.push(Expr::Ct {
            key: CtKey::State,
            dreg: Reg::R1,
        });
        self.push(Expr::Bitwise {
            sreg: Reg::R1,
            dreg: Reg::R1,
            mask: states.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        });
        self.cmp(CmpOp::Neq, vec![0; 4]);
        self
    }

    /// `fib daddr type TYPE` with an [`rtn`] route type, e.g. `rtn::LOCAL`.
    pub fn fib_daddr_type(mut self, rtn: u32) -> Self {
        self.push(Expr::Fib {
            flags: fib_flags::DADDR,
            result: FibResult::AddrType,
            dreg: Reg::R1,
        });
        self.cmp(CmpOp::Eq, rtn.to_ne_bytes().to_vec());
        self
    }

    /// `meta mark & MASK == VALUE` (`meta mark VALUE` when mask is all ones).
    pub fn mark_match(mut self, mask: u32, value: u32) -> Self {
        self.meta(MetaKey::Mark);
        if mask != u32::MAX {
            self.push(Expr::Bitwise {
                sreg: Reg::R1,
                dreg: Reg::R1,
                mask: mask.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            });
        }
        self.cmp(CmpOp::Eq, value.to_ne_bytes().to_vec());
        self
    }

    /// `meta mark set mark | BITS`.
    pub fn mark_set_bits(mut self, bits: u32) -> Self {
        self.meta(MetaKey::Mark);
        self.push(Expr::Bitwise {
            sreg: Reg::R1,
            dreg: Reg::R1,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        });
        self.push(Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: Reg::R1,
        });
        self
    }

    /// `meta mark set VALUE`.
    pub fn mark_set(mut self, value: u32) -> Self {
        self.push(Expr::Immediate {
            dreg: Reg::R1,
            data: value.to_ne_bytes().to_vec(),
        });
        self.push(Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: Reg::R1,
        });
        self
    }

    pub fn counter(self) -> Self {
        self.expr(Expr::Counter { packets: 0, bytes: 0 })
    }

    pub fn notrack(self) -> Self {
        self.expr(Expr::Notrack)
    }

    pub fn masquerade(self) -> Self {
        self.expr(Expr::Masquerade { proto: None, flags: 0 })
    }

    /// `masquerade fully-random` etc. with [`nat_flags`].
    pub fn masquerade_flags(self, flags: u32) -> Self {
        self.expr(Expr::Masquerade { proto: None, flags })
    }

    /// `redirect to :PORT`.
    pub fn redirect(mut self, port: u16) -> Self {
        self.push(Expr::Immediate {
            dreg: Reg::R1,
            data: port.to_be_bytes().to_vec(),
        });
        self.expr(Expr::Redirect {
            proto: Some((Reg::R1, Reg::R1)),
            flags: nat_flags::PROTO_SPECIFIED,
        })
    }

    fn nat(mut self, kind: NatType, addr: IpAddr, port: Option<u16>) -> Self {
        let family = if addr.is_ipv6() { NfProto::Ipv6 } else { NfProto::Ipv4 };
        self.push(Expr::Immediate {
            dreg: Reg::R1,
            data: addr_bytes(addr),
        });
        let mut proto = None;
        let mut flags = 0;
        if let Some(p) = port {
            self.push(Expr::Immediate {
                dreg: Reg::R2,
                data: p.to_be_bytes().to_vec(),
            });
            proto = Some((Reg::R2, Reg::R2));
            flags = nat_flags::PROTO_SPECIFIED;
        }
        self.expr(Expr::Nat {
            kind,
            family,
            addr: Some((Reg::R1, Reg::R1)),
            proto,
            flags,
        })
    }

    /// `dnat ip to ADDR[:PORT]` (or `ip6`, by the address family).
    pub fn dnat(self, addr: IpAddr, port: Option<u16>) -> Self {
        self.nat(NatType::Dnat, addr, port)
    }

    /// `snat ip to ADDR[:PORT]`.
    pub fn snat(self, addr: IpAddr, port: Option<u16>) -> Self {
        self.nat(NatType::Snat, addr, port)
    }

    pub fn verdict(self, v: Verdict) -> Self {
        self.expr(Expr::Verdict(v))
    }

    pub fn accept(self) -> Self {
        self.verdict(Verdict::Accept)
    }

    pub fn drop(self) -> Self {
        self.verdict(Verdict::Drop)
    }

    /// `return` (named `ret` because `return` is a keyword).
    pub fn ret(self) -> Self {
        self.verdict(Verdict::Return)
    }

    pub fn jump(self, chain: &str) -> Self {
        self.verdict(Verdict::Jump(chain.to_string()))
    }

    pub fn goto(self, chain: &str) -> Self {
        self.verdict(Verdict::Goto(chain.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(f: Family) -> Table {
        Table::new(f, "t")
    }

    #[test]
    fn inet_masquerade_matches_nft() {
        // nft: ip saddr 10.1.0.5 ip daddr != 10.1.0.0/24 masquerade
        let r = RuleBuilder::new(&t(Family::Inet), "c")
            .saddr(CmpOp::Eq, "10.1.0.5".parse::<IpAddr>().unwrap())
            .daddr(CmpOp::Neq, "10.1.0.0/24".parse::<IpNet>().unwrap())
            .masquerade()
            .build();
        let reg = Reg::R1;
        assert_eq!(
            r.exprs,
            vec![
                Expr::Meta {
                    key: MetaKey::NfProto,
                    dreg: reg
                },
                Expr::Cmp {
                    sreg: reg,
                    op: CmpOp::Eq,
                    data: vec![2]
                },
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 12,
                    len: 4,
                    dreg: reg
                },
                Expr::Cmp {
                    sreg: reg,
                    op: CmpOp::Eq,
                    data: vec![10, 1, 0, 5]
                },
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 16,
                    len: 3,
                    dreg: reg
                },
                Expr::Cmp {
                    sreg: reg,
                    op: CmpOp::Neq,
                    data: vec![10, 1, 0]
                },
                Expr::Masquerade { proto: None, flags: 0 },
            ]
        );
    }

    #[test]
    fn unaligned_prefix_uses_bitwise_and_no_dependency_in_ip_table() {
        let r = RuleBuilder::new(&t(Family::Ip), "c")
            .daddr(CmpOp::Eq, "224.1.2.3/4".parse::<IpNet>().unwrap())
            .build();
        assert_eq!(
            r.exprs,
            vec![
                Expr::Payload {
                    base: PayloadBase::Network,
                    offset: 16,
                    len: 4,
                    dreg: Reg::R1
                },
                Expr::Bitwise {
                    sreg: Reg::R1,
                    dreg: Reg::R1,
                    mask: vec![0xf0, 0, 0, 0],
                    xor: vec![0; 4]
                },
                Expr::Cmp {
                    sreg: Reg::R1,
                    op: CmpOp::Eq,
                    data: vec![224, 0, 0, 0]
                },
            ]
        );
    }

    #[test]
    fn ifname_padding_and_dnat() {
        let r = RuleBuilder::new(&t(Family::Ip), "c")
            .iifname(CmpOp::Eq, "veth1")
            .dport(L4Proto::Tcp, CmpOp::Eq, 8080)
            .dnat("10.0.0.2".parse().unwrap(), Some(80))
            .build();
        assert_eq!(
            r.exprs[1],
            Expr::Cmp {
                sreg: Reg::R1,
                op: CmpOp::Eq,
                data: b"veth1\0\0\0\0\0\0\0\0\0\0\0".to_vec()
            }
        );
        assert_eq!(
            r.exprs[3],
            Expr::Cmp {
                sreg: Reg::R1,
                op: CmpOp::Eq,
                data: vec![6]
            }
        );
        assert_eq!(
            r.exprs[5],
            Expr::Cmp {
                sreg: Reg::R1,
                op: CmpOp::Eq,
                data: vec![0x1f, 0x90]
            }
        );
        assert_eq!(
            r.exprs[7],
            Expr::Immediate {
                dreg: Reg::R2,
                data: vec![0, 80]
            }
        );
        assert!(matches!(
            r.exprs[8],
            Expr::Nat {
                flags: nat_flags::PROTO_SPECIFIED,
                ..
            }
        ));
    }
}
