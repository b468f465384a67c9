//! Rule expressions: the kernel's little register machine, one variant per expression type,
//! encoded to and decoded from `NFTA_EXPR_*` attributes.
//!
//! Registers: `nft` uses the 128-bit register names (`NFT_REG_1` = 1 …); register 0 is the
//! verdict register. Data compared or loaded into registers is raw bytes in the byte order of
//! the source (packet fields: network order; meta/ct/fib values: host order).

use super::wire::{self, AttrWriter};
use crate::linux::NfProto;

/// A register number (`NFT_REG_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg(pub u32);

impl Reg {
    pub const VERDICT: Reg = Reg(0);
    pub const R1: Reg = Reg(1);
    pub const R2: Reg = Reg(2);
    pub const R3: Reg = Reg(3);
    pub const R4: Reg = Reg(4);
}

numbered_enums! {
    /// Where a payload offset counts from (`enum nft_payload_bases`).
    pub enum PayloadBase: u32 { Link = 0, Network = 1, Transport = 2 }
    /// `enum nft_cmp_ops`.
    pub enum CmpOp: u32 { Eq = 0, Neq = 1, Lt = 2, Lte = 3, Gt = 4, Gte = 5 }
    /// `enum nft_meta_keys` (the ones a network plugin needs).
    pub enum MetaKey: u32 {
        Len = 0, Protocol = 1, Mark = 3, Iif = 4, Oif = 5, IifName = 6, OifName = 7, NfProto = 15,
        L4Proto = 16, BriIifName = 17, BriOifName = 18, PktType = 19,
    }
    /// `enum nft_ct_keys` (subset).
    pub enum CtKey: u32 { State = 0, Direction = 1, Status = 2, Mark = 3, Zone = 17 }
    /// `enum nft_fib_result`.
    pub enum FibResult: u32 { Oif = 1, OifName = 2, AddrType = 3 }
}

/// Conntrack state bits as loaded by `ct state` (host order u32).
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
    pub const UNTRACKED: u32 = 64;
}

/// `NFTA_FIB_F_*` input flags.
pub mod fib_flags {
    pub const SADDR: u32 = 1;
    pub const DADDR: u32 = 2;
    pub const MARK: u32 = 4;
    pub const IIF: u32 = 8;
    pub const OIF: u32 = 16;
    pub const PRESENT: u32 = 32;
}

/// Route types as returned by `fib … type` (`RTN_*`, host order u32).
pub mod rtn {
    pub const UNICAST: u32 = 1;
    pub const LOCAL: u32 = 2;
    pub const BROADCAST: u32 = 3;
    pub const MULTICAST: u32 = 5;
}

/// `NF_NAT_RANGE_*` flags for nat/masq/redir.
pub mod nat_flags {
    pub const MAP_IPS: u32 = 1;
    pub const PROTO_SPECIFIED: u32 = 2;
    pub const PROTO_RANDOM: u32 = 4;
    pub const PERSISTENT: u32 = 8;
    pub const PROTO_RANDOM_FULLY: u32 = 16;
}

/// `enum nft_nat_types`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatType {
    Snat = 0,
    Dnat = 1,
}

/// A verdict, as stored in the verdict register by an `immediate` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    // NF_DROP, NF_ACCEPT and the negative NFT_* codes.
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }
}

/// One expression of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// Load `len` bytes at `base + offset` of the packet into `dreg`.
    Payload {
        base: PayloadBase,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    /// Compare `sreg` with `data`; the rule stops matching when false.
    Cmp {
        sreg: Reg,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Load packet metadata into `dreg`.
    Meta {
        key: MetaKey,
        dreg: Reg,
    },
    /// Set packet metadata (e.g. the mark) from `sreg`.
    MetaSet {
        key: MetaKey,
        sreg: Reg,
    },
    /// Load constant data into a data register.
    Immediate {
        dreg: Reg,
        data: Vec<u8>,
    },
    /// Set the verdict (an `immediate` into register 0).
    Verdict(Verdict),
    /// Count packets/bytes; the values are filled in when listing.
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// Load conntrack data into `dreg`.
    Ct {
        key: CtKey,
        dreg: Reg,
    },
    /// Set conntrack data (e.g. the ct mark) from `sreg`.
    CtSet {
        key: CtKey,
        sreg: Reg,
    },
    /// snat/dnat with address and/or port taken from registers.
    Nat {
        kind: NatType,
        family: NfProto,
        addr: Option<(Reg, Reg)>,
        proto: Option<(Reg, Reg)>,
        flags: u32,
    },
    Masquerade {
        proto: Option<(Reg, Reg)>,
        flags: u32,
    },
    Redirect {
        proto: Option<(Reg, Reg)>,
        flags: u32,
    },
    /// Route lookup; `flags` from [`fib_flags`].
    Fib {
        flags: u32,
        result: FibResult,
        dreg: Reg,
    },
    /// Match `sreg` against a named set (`invert` = `!=`).
    Lookup {
        set: String,
        sreg: Reg,
        invert: bool,
    },
    /// Skip connection tracking.
    Notrack,
    /// An expression this library does not model (found when listing rules made by others).
    Other {
        name: String,
        data: Vec<u8>,
    },
}

// Per-expression attribute numbers (`enum nft_*_attributes`).
const PAYLOAD_DREG: u16 = 1;
const PAYLOAD_BASE: u16 = 2;
const PAYLOAD_OFFSET: u16 = 3;
const PAYLOAD_LEN: u16 = 4;
const CMP_SREG: u16 = 1;
const CMP_OP: u16 = 2;
const CMP_DATA: u16 = 3;
const BITWISE_SREG: u16 = 1;
const BITWISE_DREG: u16 = 2;
const BITWISE_LEN: u16 = 3;
const BITWISE_MASK: u16 = 4;
const BITWISE_XOR: u16 = 5;
const META_DREG: u16 = 1;
const META_KEY: u16 = 2;
const META_SREG: u16 = 3;
const IMM_DREG: u16 = 1;
const IMM_DATA: u16 = 2;
const COUNTER_BYTES: u16 = 1;
const COUNTER_PACKETS: u16 = 2;
const CT_DREG: u16 = 1;
const CT_KEY: u16 = 2;
const CT_SREG: u16 = 4;
const NAT_TYPE: u16 = 1;
const NAT_FAMILY: u16 = 2;
const NAT_ADDR_MIN: u16 = 3;
const NAT_ADDR_MAX: u16 = 4;
const NAT_PROTO_MIN: u16 = 5;
const NAT_PROTO_MAX: u16 = 6;
const NAT_FLAGS: u16 = 7;
const MASQ_FLAGS: u16 = 1;
const MASQ_PROTO_MIN: u16 = 2;
const MASQ_PROTO_MAX: u16 = 3;
const REDIR_PROTO_MIN: u16 = 1;
const REDIR_PROTO_MAX: u16 = 2;
const REDIR_FLAGS: u16 = 3;
const FIB_DREG: u16 = 1;
const FIB_RESULT: u16 = 2;
const FIB_FLAGS: u16 = 3;
const LOOKUP_SET: u16 = 1;
const LOOKUP_SREG: u16 = 2;
const LOOKUP_FLAGS: u16 = 5;
const LOOKUP_F_INV: u32 = 1;

impl Expr {
    /// The kernel's name for this expression type (`NFTA_EXPR_NAME`).
    pub fn name(&self) -> &str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Counter { .. } => "counter",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Nat { .. } => "nat",
            Expr::Masquerade { .. } => "masq",
            Expr::Redirect { .. } => "redir",
            Expr::Fib { .. } => "fib",
            Expr::Lookup { .. } => "lookup",
            Expr::Notrack => "notrack",
            Expr::Other { name, .. } => name,
        }
    }

    /// Appends this expression as one `NFTA_LIST_ELEM` of an expression list.
    pub fn encode(&self, w: &mut AttrWriter) {
        w.nest(wire::NFTA_LIST_ELEM, |w| {
            w.put_str(wire::NFTA_EXPR_NAME, self.name());
            w.nest(wire::NFTA_EXPR_DATA, |w| self.encode_data(w));
        });
    }

    fn encode_data(&self, w: &mut AttrWriter) {
        match self {
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                w.put_u32(PAYLOAD_DREG, dreg.0)
                    .put_u32(PAYLOAD_BASE, *base as u32)
                    .put_u32(PAYLOAD_OFFSET, *offset)
                    .put_u32(PAYLOAD_LEN, *len);
            }
            Expr::Cmp { sreg, op, data } => {
                w.put_u32(CMP_SREG, sreg.0).put_u32(CMP_OP, *op as u32);
                w.nest(CMP_DATA, |w| {
                    w.put(wire::NFTA_DATA_VALUE, data);
                });
            }
            Expr::Bitwise { sreg, dreg, mask, xor } => {
                w.put_u32(BITWISE_SREG, sreg.0)
                    .put_u32(BITWISE_DREG, dreg.0)
                    .put_u32(BITWISE_LEN, mask.len() as u32);
                w.nest(BITWISE_MASK, |w| {
                    w.put(wire::NFTA_DATA_VALUE, mask);
                });
                w.nest(BITWISE_XOR, |w| {
                    w.put(wire::NFTA_DATA_VALUE, xor);
                });
            }
            Expr::Meta { key, dreg } => {
                w.put_u32(META_DREG, dreg.0).put_u32(META_KEY, *key as u32);
            }
            Expr::MetaSet { key, sreg } => {
                w.put_u32(META_KEY, *key as u32).put_u32(META_SREG, sreg.0);
            }
            Expr::Immediate { dreg, data } => {
                w.put_u32(IMM_DREG, dreg.0);
                w.nest(IMM_DATA, |w| {
                    w.put(wire::NFTA_DATA_VALUE, data);
                });
            }
            Expr::Verdict(v) => {
                w.put_u32(IMM_DREG, Reg::VERDICT.0);
                w.nest(IMM_DATA, |w| {
                    w.nest(wire::NFTA_DATA_VERDICT, |w| {
                        w.put_u32(wire::NFTA_VERDICT_CODE, v.code() as u32);
                        if let Verdict::Jump(c) | Verdict::Goto(c) = v {
                            w.put_str(wire::NFTA_VERDICT_CHAIN, c);
                        }
                    });
                });
            }
            Expr::Counter { packets, bytes } => {
                w.put_u64(COUNTER_BYTES, *bytes).put_u64(COUNTER_PACKETS, *packets);
            }
            Expr::Ct { key, dreg } => {
                w.put_u32(CT_DREG, dreg.0).put_u32(CT_KEY, *key as u32);
            }
            Expr::CtSet { key, sreg } => {
                w.put_u32(CT_KEY, *key as u32).put_u32(CT_SREG, sreg.0);
            }
            Expr::Nat {
                kind,
                family,
                addr,
                proto,
                flags,
            } => {
                w.put_u32(NAT_TYPE, *kind as u32).put_u32(NAT_FAMILY, *family as u32);
                if let Some((min, max)) = addr {
                    w.put_u32(NAT_ADDR_MIN, min.0).put_u32(NAT_ADDR_MAX, max.0);
                }
                if let Some((min, max)) = proto {
                    w.put_u32(NAT_PROTO_MIN, min.0).put_u32(NAT_PROTO_MAX, max.0);
                }
                if *flags != 0 {
                    w.put_u32(NAT_FLAGS, *flags);
                }
            }
            Expr::Masquerade { proto, flags } => {
                if *flags != 0 {
                    w.put_u32(MASQ_FLAGS, *flags);
                }
                if let Some((min, max)) = proto {
                    w.put_u32(MASQ_PROTO_MIN, min.0).put_u32(MASQ_PROTO_MAX, max.0);
                }
            }
            Expr::Redirect { proto, flags } => {
                if let Some((min, max)) = proto {
                    w.put_u32(REDIR_PROTO_MIN, min.0).put_u32(REDIR_PROTO_MAX, max.0);
                }
                if *flags != 0 {
                    w.put_u32(REDIR_FLAGS, *flags);
                }
            }
            Expr::Fib { flags, result, dreg } => {
                w.put_u32(FIB_DREG, dreg.0)
                    .put_u32(FIB_RESULT, *result as u32)
                    .put_u32(FIB_FLAGS, *flags);
            }
            Expr::Lookup { set, sreg, invert } => {
                w.put_str(LOOKUP_SET, set).put_u32(LOOKUP_SREG, sreg.0);
                if *invert {
                    w.put_u32(LOOKUP_FLAGS, LOOKUP_F_INV);
                }
            }
            Expr::Notrack => {}
            Expr::Other { data, .. } => w.buf.extend_from_slice(data),
        }
    }

    /// Decodes one `NFTA_LIST_ELEM` payload. Anything unexpected becomes [`Expr::Other`].
    pub fn decode(elem: &[u8]) -> Expr {
        let name = wire::attr_str(elem, wire::NFTA_EXPR_NAME).unwrap_or_default();
        let data = wire::attr(elem, wire::NFTA_EXPR_DATA).unwrap_or(&[]);
        Self::decode_data(&name, data).unwrap_or_else(|| Expr::Other {
            name,
            data: data.to_vec(),
        })
    }

    fn decode_data(name: &str, d: &[u8]) -> Option<Expr> {
        let u = |ty| wire::attr_u32(d, ty);
        let reg = |ty| u(ty).map(Reg);
        let value = |ty| {
            wire::attr(d, ty)
                .and_then(|n| wire::attr(n, wire::NFTA_DATA_VALUE))
                .map(<[u8]>::to_vec)
        };
        let range = |a, b| Some((reg(a)?, reg(b)?));
        Some(match name {
            "payload" => Expr::Payload {
                base: PayloadBase::from_raw(u(PAYLOAD_BASE)?)?,
                offset: u(PAYLOAD_OFFSET)?,
                len: u(PAYLOAD_LEN)?,
                dreg: reg(PAYLOAD_DREG)?,
            },
            "cmp" => Expr::Cmp {
                sreg: reg(CMP_SREG)?,
                op: CmpOp::from_raw(u(CMP_OP)?)?,
                data: value(CMP_DATA)?,
            },
            "bitwise" => Expr::Bitwise {
                sreg: reg(BITWISE_SREG)?,
                dreg: reg(BITWISE_DREG)?,
                mask: value(BITWISE_MASK)?,
                xor: value(BITWISE_XOR)?,
            },
            "meta" => {
                let key = MetaKey::from_raw(u(META_KEY)?)?;
                match reg(META_DREG) {
                    Some(dreg) => Expr::Meta { key, dreg },
                    None => Expr::MetaSet {
                        key,
                        sreg: reg(META_SREG)?,
                    },
                }
            }
            "immediate" => {
                let dreg = reg(IMM_DREG)?;
                let data = wire::attr(d, IMM_DATA)?;
                if let Some(v) = wire::attr(data, wire::NFTA_DATA_VERDICT) {
                    let chain = || wire::attr_str(v, wire::NFTA_VERDICT_CHAIN);
                    Expr::Verdict(match wire::attr_u32(v, wire::NFTA_VERDICT_CODE)? as i32 {
                        0 => Verdict::Drop,
                        1 => Verdict::Accept,
                        -1 => Verdict::Continue,
                        -3 => Verdict::Jump(chain()?),
                        -4 => Verdict::Goto(chain()?),
                        -5 => Verdict::Return,
                        _ => return None,
                    })
                } else {
                    Expr::Immediate {
                        dreg,
                        data: value(IMM_DATA)?,
                    }
                }
            }
            "counter" => Expr::Counter {
                packets: wire::attr_u64(d, COUNTER_PACKETS).unwrap_or(0),
                bytes: wire::attr_u64(d, COUNTER_BYTES).unwrap_or(0),
            },
            "ct" => {
                let key = CtKey::from_raw(u(CT_KEY)?)?;
                match reg(CT_DREG) {
                    Some(dreg) => Expr::Ct { key, dreg },
                    None => Expr::CtSet {
                        key,
                        sreg: reg(CT_SREG)?,
                    },
                }
            }
            "nat" => Expr::Nat {
                kind: if u(NAT_TYPE)? == 0 {
                    NatType::Snat
                } else {
                    NatType::Dnat
                },
                family: if u(NAT_FAMILY)? == 10 {
                    NfProto::Ipv6
                } else {
                    NfProto::Ipv4
                },
                addr: range(NAT_ADDR_MIN, NAT_ADDR_MAX),
                proto: range(NAT_PROTO_MIN, NAT_PROTO_MAX),
                flags: u(NAT_FLAGS).unwrap_or(0),
            },
            "masq" => Expr::Masquerade {
                proto: range(MASQ_PROTO_MIN, MASQ_PROTO_MAX),
                flags: u(MASQ_FLAGS).unwrap_or(0),
            },
            "redir" => Expr::Redirect {
                proto: range(REDIR_PROTO_MIN, REDIR_PROTO_MAX),
                flags: u(REDIR_FLAGS).unwrap_or(0),
            },
            "fib" => Expr::Fib {
                flags: u(FIB_FLAGS)?,
                result: FibResult::from_raw(u(FIB_RESULT)?)?,
                dreg: reg(FIB_DREG)?,
            },
            "lookup" => Expr::Lookup {
                set: wire::attr_str(d, LOOKUP_SET)?,
                sreg: reg(LOOKUP_SREG)?,
                invert: u(LOOKUP_FLAGS).unwrap_or(0) & LOOKUP_F_INV != 0,
            },
            "notrack" => Expr::Notrack,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(e: &Expr) -> Vec<u8> {
        let mut w = AttrWriter::new();
        e.encode(&mut w);
        w.buf
    }

    /// The payload of the single list element `enc` produced.
    fn elem(buf: &[u8]) -> &[u8] {
        let (ty, p, _) = wire::attrs(buf).next().unwrap();
        assert_eq!(ty, wire::NFTA_LIST_ELEM);
        p
    }

    #[test]
    fn payload_bytes() {
        let e = Expr::Payload {
            base: PayloadBase::Network,
            offset: 12,
            len: 4,
            dreg: Reg::R1,
        };
        let b = enc(&e);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[52u8, 0, 1, 0x80][..],                           // LIST_ELEM, nested
            &[12, 0, 1, 0], b"payload\0",                        // NAME
            &[36, 0, 2, 0x80],                                    // DATA, nested
            &[8, 0, 1, 0, 0, 0, 0, 1],                            // DREG = 1 (be32)
            &[8, 0, 2, 0, 0, 0, 0, 1],                            // BASE = network
            &[8, 0, 3, 0, 0, 0, 0, 12],                           // OFFSET
            &[8, 0, 4, 0, 0, 0, 0, 4],                            // LEN
        ].concat();
        assert_eq!(b, want);
        assert_eq!(Expr::decode(elem(&b)), e);
    }

    #[test]
    fn jump_verdict_bytes() {
        let e = Expr::Verdict(Verdict::Jump("c".into()));
        let b = enc(&e);
        let data = wire::attr(elem(&b), wire::NFTA_EXPR_DATA).unwrap();
        let imm = wire::attr(data, IMM_DATA).unwrap();
        let v = wire::attr(imm, wire::NFTA_DATA_VERDICT).unwrap();
        // NFT_JUMP = -3 as big-endian u32, then the NUL-terminated chain name.
        assert_eq!(v, [8, 0, 1, 0, 0xff, 0xff, 0xff, 0xfd, 6, 0, 2, 0, b'c', 0, 0, 0]);
        assert_eq!(Expr::decode(elem(&b)), e);
    }

    #[test]
    fn cmp_and_nat_round_trip() {
        for e in [
            Expr::Cmp {
                sreg: Reg::R1,
                op: CmpOp::Neq,
                data: vec![10, 1, 0],
            },
            Expr::Bitwise {
                sreg: Reg::R1,
                dreg: Reg::R1,
                mask: vec![0xf0, 0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::Nat {
                kind: NatType::Dnat,
                family: NfProto::Ipv4,
                addr: Some((Reg::R1, Reg::R1)),
                proto: Some((Reg::R2, Reg::R2)),
                flags: nat_flags::PROTO_SPECIFIED,
            },
            Expr::Masquerade { proto: None, flags: 0 },
            Expr::Lookup {
                set: "s".into(),
                sreg: Reg::R1,
                invert: true,
            },
            Expr::Fib {
                flags: fib_flags::DADDR,
                result: FibResult::AddrType,
                dreg: Reg::R1,
            },
            Expr::Counter { packets: 0, bytes: 0 },
            Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: Reg::R1,
            },
        ] {
            assert_eq!(Expr::decode(elem(&enc(&e))), e);
        }
    }

    #[test]
    fn cmp_data_is_nested_value() {
        let b = enc(&Expr::Cmp {
            sreg: Reg::R1,
            op: CmpOp::Eq,
            data: vec![6],
        });
        let data = wire::attr(elem(&b), wire::NFTA_EXPR_DATA).unwrap();
        assert_eq!(wire::attr_u32(data, CMP_OP), Some(0));
        // CMP_DATA { DATA_VALUE [6] } — the value padded to 4 bytes on the wire.
        assert_eq!(wire::attr(data, CMP_DATA).unwrap(), [5, 0, 1, 0, 6, 0, 0, 0]);
    }
}
