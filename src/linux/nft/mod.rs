//! nftables over `NETLINK_NETFILTER`, without the `nft` binary.
//!
//! A generic library: a typed model of tables, chains, rules and sets ([`Table`], [`Chain`],
//! [`Rule`], [`Set`]), rule expressions ([`Expr`]) with a [`RuleBuilder`] that emits the same
//! expression sequences `nft` does (so `nft list ruleset` prints our rules like its own), an
//! atomic [`Batch`] and an [`NftSocket`] that commits batches and lists one table's objects.
//!
//! ```no_run
//! use cni_multi::linux::nft::*;
//! let t = Table::new(Family::Inet, "demo");
//! let rule = RuleBuilder::new(&t, "post")
//!     .saddr(CmpOp::Eq, "10.1.0.5".parse::<std::net::IpAddr>().unwrap())
//!     .masquerade()
//!     .comment("example")
//!     .build();
//! let mut b = Batch::new();
//! b.add_table(&t);
//! b.add_chain(&Chain::base(&t, "post", ChainType::Nat, Hook::Postrouting, 100, Policy::Accept));
//! b.add_rule(&rule, Position::Append);
//! b.commit(&NftSocket::open().unwrap()).unwrap();
//! ```

mod batch;
mod expr;
pub mod iptables;
mod msg;
mod rule;
mod socket;
mod wire;
pub mod xt;

pub use batch::{Batch, Position};
pub use expr::{
    ct_state, fib_flags, nat_flags, rtn, CmpOp, CtKey, Expr, FibResult, MetaKey, NatType, PayloadBase, Reg, Verdict,
};
pub use rule::{L4Proto, RuleBuilder};
pub use socket::NftSocket;

/// An nftables table family (`NFPROTO_*`: `inet`, `ip`, `ip6`, `bridge`, `netdev`), the
/// `nfgen_family` of every message. The IP family of an address or route is
/// [`crate::linux::netlink::IpFamily`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
    Bridge,
    Netdev,
}

impl Family {
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    /// The keyword `nft` uses for this family.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table, identified by family and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    pub family: Family,
    pub name: String,
    /// Shown by `nft` as `comment "…"`; only sent when the table is created.
    pub comment: Option<String>,
}

impl Table {
    pub fn new(family: Family, name: &str) -> Self {
        Table {
            family,
            name: name.to_string(),
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: &str) -> Self {
        self.comment = Some(comment.to_string());
        self
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "table {} {}", self.family, self.name)
    }
}

/// The type of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// Netfilter hooks. For `ip`/`ip6`/`inet`/`bridge` they are `NF_INET_*` (the bridge hooks have
/// the same numbers); for `netdev`, `Ingress`/`Egress` are 0/1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Ingress,
    Egress,
}

impl Hook {
    fn number(self, family: Family) -> u32 {
        match (self, family) {
            (Hook::Ingress, Family::Netdev) => 0,
            (Hook::Egress, Family::Netdev) => 1,
            (Hook::Prerouting, _) => 0,
            (Hook::Input, _) => 1,
            (Hook::Forward, _) => 2,
            (Hook::Output, _) => 3,
            (Hook::Postrouting, _) => 4,
            (Hook::Ingress, _) => 5, // NF_INET_INGRESS (inet family)
            (Hook::Egress, _) => 1,
        }
    }

    fn from_number(n: u32, family: Family) -> Option<Hook> {
        Some(match (n, family) {
            (0, Family::Netdev) => Hook::Ingress,
            (1, Family::Netdev) => Hook::Egress,
            (0, _) => Hook::Prerouting,
            (1, _) => Hook::Input,
            (2, _) => Hook::Forward,
            (3, _) => Hook::Output,
            (4, _) => Hook::Postrouting,
            (5, _) => Hook::Ingress,
            _ => return None,
        })
    }
}

/// A base chain's default verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// The standard priorities `nft` names (`srcnat`, `dstnat`, …) for the ip families.
pub mod priority {
    pub const RAW: i32 = -300;
    pub const MANGLE: i32 = -150;
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SECURITY: i32 = 50;
    pub const SRCNAT: i32 = 100;
}

/// Hook attachment of a base chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseChain {
    pub chain_type: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: Policy,
    /// Device for netdev-family chains.
    pub device: Option<String>,
}

/// A chain: regular (`base == None`, reached by jump/goto) or attached to a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    pub table: Table,
    pub name: String,
    pub base: Option<BaseChain>,
    /// Kernel handle, filled in when listing.
    pub handle: Option<u64>,
    /// Shown by `nft` as `comment "…"` (chain userdata, Linux 5.10+); only sent when the
    /// chain is created (the kernel ignores it on an existing chain).
    pub comment: Option<String>,
}

impl Chain {
    pub fn regular(table: &Table, name: &str) -> Self {
        Chain {
            table: table.clone(),
            name: name.to_string(),
            base: None,
            handle: None,
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: &str) -> Self {
        self.comment = Some(comment.to_string());
        self
    }

    /// `type nat hook postrouting priority srcnat; policy accept;`: where masquerading goes.
    pub fn srcnat(table: &Table, name: &str) -> Self {
        Self::base(
            table,
            name,
            ChainType::Nat,
            Hook::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        )
    }

    pub fn base(table: &Table, name: &str, chain_type: ChainType, hook: Hook, priority: i32, policy: Policy) -> Self {
        Chain {
            table: table.clone(),
            name: name.to_string(),
            base: Some(BaseChain {
                chain_type,
                hook,
                priority,
                policy,
                device: None,
            }),
            handle: None,
            comment: None,
        }
    }

    /// A filter base chain at the filter priority with policy accept (`iptables -t filter`'s
    /// chains, and the firewall's own): most base chains we make.
    pub fn filter(table: &Table, name: &str, hook: Hook) -> Self {
        Chain::base(table, name, ChainType::Filter, hook, priority::FILTER, Policy::Accept)
    }
}

/// A rule: a list of expressions, an optional comment and (when listed) its handle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: String,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
    pub handle: Option<u64>,
}

impl Rule {
    /// An empty rule for `chain` in `table`, not yet in the kernel (no handle).
    pub fn new(table: &Table, chain: &str) -> Rule {
        Rule {
            table: table.clone(),
            chain: chain.to_string(),
            exprs: Vec::new(),
            comment: None,
            handle: None,
        }
    }
}

/// Key types of sets, as `nft` datatype ids (they decide how `nft` prints elements).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKeyType {
    Ipv4Addr,
    Ipv6Addr,
    EtherAddr,
    InetProto,
    InetService,
    Mark,
    IfName,
}

impl SetKeyType {
    /// (datatype id in nft's `enum datatypes`, key length in bytes)
    fn id_len(self) -> (u32, u32) {
        match self {
            SetKeyType::Ipv4Addr => (7, 4),
            SetKeyType::Ipv6Addr => (8, 16),
            SetKeyType::EtherAddr => (9, 6),
            SetKeyType::InetProto => (12, 1),
            SetKeyType::InetService => (13, 2),
            SetKeyType::Mark => (19, 4),
            SetKeyType::IfName => (41, 16),
        }
    }
}

/// Set flags (`NFT_SET_*`).
pub mod set_flags {
    pub const CONSTANT: u32 = 0x2;
    pub const INTERVAL: u32 = 0x4;
    pub const TIMEOUT: u32 = 0x10;
}

/// A named set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub table: Table,
    pub name: String,
    pub key: SetKeyType,
    /// [`set_flags`]
    pub flags: u32,
}

impl Set {
    pub fn new(table: &Table, name: &str, key: SetKeyType) -> Self {
        Set {
            table: table.clone(),
            name: name.to_string(),
            key,
            flags: 0,
        }
    }

    pub fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
}

/// A set element: a single key (bytes in network order, length of the key type) or, for
/// interval sets, an inclusive range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetElem {
    Key(Vec<u8>),
    Range(Vec<u8>, Vec<u8>),
}

impl SetElem {
    pub fn addr(a: std::net::IpAddr) -> Self {
        SetElem::Key(rule::addr_bytes(a))
    }

    /// A prefix, as the inclusive range of its addresses (interval sets only).
    pub fn prefix(net: ipnet::IpNet) -> Self {
        let net = net.trunc();
        SetElem::Range(rule::addr_bytes(net.network()), rule::addr_bytes(net.broadcast()))
    }

    pub fn port(p: u16) -> Self {
        SetElem::Key(p.to_be_bytes().to_vec())
    }

    pub fn mac(m: [u8; 6]) -> Self {
        SetElem::Key(m.to_vec())
    }
}

/// Fuzzing entry (fuzz/): a receive buffer as the kernel could send it, split and decoded the
/// way every dump and ack is (acks, chains, rules with their expressions, comments), and the
/// decoded expressions encoded again. Decoding untrusted bytes may fail; it must never panic.
#[doc(hidden)]
pub fn fuzz_decode(buf: &[u8]) {
    let family = match buf.first().copied().unwrap_or(0) % 5 {
        0 => Family::Inet,
        1 => Family::Ip,
        2 => Family::Ip6,
        3 => Family::Bridge,
        _ => Family::Netdev,
    };
    let t = Table::new(family, "t");
    for m in wire::nlmsgs(buf) {
        let _ = socket::parse_ack(&m);
        let body = m.body.get(wire::NFGENMSG_LEN..).unwrap_or(&[]);
        let _ = socket::decode_chain(&t, body);
        let r = socket::decode_rule(&t, body, true);
        let mut w = wire::AttrWriter::new();
        for e in &r.exprs {
            let _ = e.name();
            e.encode(&mut w);
        }
        for (_, e, _) in wire::attrs(&w.buf) {
            let _ = Expr::decode(e);
        }
    }
}

/// Every chain and rule of `family` as this kernel dumps them, one netlink message each: the
/// seeds of the `nft` fuzz target (`fuzz/seeds/nft`).
#[doc(hidden)]
pub fn fuzz_seeds(sock: &NftSocket, family: Family) -> Result<Vec<Vec<u8>>, crate::linux::Error> {
    let mut out = Vec::new();
    for (get, new) in [
        (wire::NFT_MSG_GETCHAIN, wire::NFT_MSG_NEWCHAIN),
        (wire::NFT_MSG_GETRULE, wire::NFT_MSG_NEWRULE),
    ] {
        for body in sock.request("fuzz seed dump", get, family, true, &[])? {
            out.push(wire::nlmsg(wire::nft_type(new), 2, 0, family.nfproto(), 0, &body));
        }
    }
    Ok(out)
}
