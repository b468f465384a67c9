//! A table as iptables sees it: chains with their policy and rules; a rule is the fixed
//! `ipt_entry`/`ip6t_entry` part (addresses and masks, interfaces, protocol, flags and inverse
//! flags), its matches and its target. Lossless: every field the kernel keeps is here, so a
//! table read and written back unchanged is the same table (other writers' rules survive).
//!
//! The builder methods ([`Rule::src`], [`Rule::proto`], [`Rule::dport`], …) set the fields as
//! iptables-legacy 1.8 sets them for the same command-line options.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::ext;
use super::{hook_of, Family};
use crate::linux::nft::xt::{self, Xt, XtKind};

/// `IPT_INV_*` / `IP6T_INV_*` (the same bits in both families).
pub mod inv {
    pub const VIA_IN: u8 = 0x01;
    pub const VIA_OUT: u8 = 0x02;
    pub const TOS: u8 = 0x04;
    pub const SRCIP: u8 = 0x08;
    pub const DSTIP: u8 = 0x10;
    pub const FRAG: u8 = 0x20;
    pub const PROTO: u8 = 0x40;
}

/// `IP6T_F_PROTO`: ip6tables sets it with `-p` (the kernel tests the protocol only then).
pub const IP6T_F_PROTO: u8 = 0x01;

/// Packet and byte counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// An address and its mask (`-s`/`-d`); a zero mask matches every address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub addr: IpAddr,
    pub mask: IpAddr,
}

impl Addr {
    /// Any address of the family (no `-s`/`-d`).
    pub fn any(family: Family) -> Addr {
        let z = if family.is_v6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        Addr { addr: z, mask: z }
    }

    /// A prefix, as iptables stores `-s A/P`: the address masked.
    pub fn net(net: IpNet) -> Addr {
        Addr {
            addr: net.trunc().network(),
            mask: net.netmask(),
        }
    }

    pub fn is_any(&self) -> bool {
        self.mask.is_unspecified()
    }

    /// The prefix, when the mask is one (iptables also accepts non-contiguous masks).
    pub fn prefix(&self) -> Option<IpNet> {
        let bits: u32 = match self.mask {
            IpAddr::V4(m) => m.octets().iter().map(|b| b.count_ones()).sum(),
            IpAddr::V6(m) => m.octets().iter().map(|b| b.count_ones()).sum(),
        };
        let n = IpNet::new(self.addr, bits as u8).ok()?;
        (n.netmask() == self.mask).then_some(n)
    }
}

/// An interface match (`-i`/`-o`): the name and the mask of the bytes compared
/// (iptables: `strlen + 1` bytes, or `strlen` for a `NAME+` prefix; all zero for any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Iface {
    pub name: String,
    pub mask: [u8; 16],
}

impl Iface {
    /// iptables' spelling: `NAME` exactly, `NAME+` any name starting with NAME (stored with
    /// its `+`, as iptables stores it).
    pub fn parse(spec: &str) -> Iface {
        let mut mask = [0u8; 16];
        let n = match spec.strip_suffix('+') {
            Some(p) => p.len(),
            None => spec.len() + 1,
        };
        mask[..n.min(16)].fill(0xff);
        Iface {
            name: spec.chars().take(15).collect(),
            mask,
        }
    }

    pub fn is_any(&self) -> bool {
        self.mask == [0; 16]
    }
}

/// A built-in chain's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Accept,
    Drop,
    Return,
    /// Another standard verdict (`NF_QUEUE` …), as the kernel stores it (`-verdict - 1`).
    Standard(i32),
    /// `-j CHAIN`.
    Jump(String),
    /// `-g CHAIN`.
    Goto(String),
    /// No target: the rule only counts, evaluation goes on.
    Continue,
    /// An extension target (`DNAT`, `MASQUERADE`, `MARK`, `REJECT` …).
    Ext(Xt),
}

/// One rule (an `ipt_entry` or `ip6t_entry` with its matches and target).
#[derive(Debug, Clone)]
pub struct Rule {
    pub family: Family,
    pub src: Addr,
    pub dst: Addr,
    pub in_iface: Iface,
    pub out_iface: Iface,
    /// Layer 4 protocol (`-p`), 0 for any.
    pub proto: u16,
    /// `IPT_F_FRAG` (IPv4) or `IP6T_F_PROTO`/`IP6T_F_TOS` (IPv6); the goto flag is the target's.
    pub flags: u8,
    /// [`inv`] bits.
    pub invflags: u8,
    /// IPv6 only (`ip6t_ip6.tos`).
    pub tos: u8,
    pub nfcache: u32,
    pub matches: Vec<Xt>,
    pub target: Target,
    pub counters: Counters,
    /// The index of the entry this rule was read from, for handing its counters back.
    pub(crate) origin: Option<u32>,
}

impl PartialEq for Rule {
    /// Everything but where the rule was read from.
    fn eq(&self, o: &Rule) -> bool {
        self.same_as(o) && self.counters == o.counters
    }
}

impl Eq for Rule {}

impl Rule {
    /// A rule that matches every packet of `family` and does nothing (`iptables -A C`).
    pub fn new(family: Family) -> Rule {
        Rule {
            family,
            src: Addr::any(family),
            dst: Addr::any(family),
            in_iface: Iface::default(),
            out_iface: Iface::default(),
            proto: 0,
            flags: 0,
            invflags: 0,
            tos: 0,
            nfcache: 0,
            matches: Vec::new(),
            target: Target::Continue,
            counters: Counters::default(),
            origin: None,
        }
    }

    /// The same rule as `o`, counters aside (what `iptables -C`/`-D` compare).
    pub fn same_as(&self, o: &Rule) -> bool {
        self.family == o.family
            && self.src == o.src
            && self.dst == o.dst
            && self.in_iface == o.in_iface
            && self.out_iface == o.out_iface
            && self.proto == o.proto
            && self.flags == o.flags
            && self.invflags == o.invflags
            && self.tos == o.tos
            && self.nfcache == o.nfcache
            && self.matches == o.matches
            && self.target == o.target
    }

    fn invert(mut self, bit: u8, on: bool) -> Self {
        if on {
            self.invflags |= bit;
        }
        self
    }

    /// `[!] -s ADDR[/PREFIX]` (an address alone is /32 or /128).
    pub fn src(mut self, net: impl Into<IpNet>, invert: bool) -> Self {
        self.src = Addr::net(net.into());
        self.invert(inv::SRCIP, invert)
    }

    /// `[!] -d ADDR[/PREFIX]`.
    pub fn dst(mut self, net: impl Into<IpNet>, invert: bool) -> Self {
        self.dst = Addr::net(net.into());
        self.invert(inv::DSTIP, invert)
    }

    /// `[!] -i NAME` (`NAME+` is a prefix).
    pub fn in_iface(mut self, name: &str, invert: bool) -> Self {
        self.in_iface = Iface::parse(name);
        self.invert(inv::VIA_IN, invert)
    }

    /// `[!] -o NAME`.
    pub fn out_iface(mut self, name: &str, invert: bool) -> Self {
        self.out_iface = Iface::parse(name);
        self.invert(inv::VIA_OUT, invert)
    }

    /// `-p PROTO` (a protocol number).
    pub fn proto(mut self, proto: u8) -> Self {
        self.proto = proto as u16;
        if self.family.is_v6() {
            self.flags |= IP6T_F_PROTO;
        }
        self
    }

    /// `--dport PORT` of the protocol set by [`proto`](Self::proto): the implicit `-m tcp`,
    /// `-m udp` or `-m sctp` iptables loads for it.
    pub fn dport(self, port: u16) -> Self {
        let m = ext::dport_match(self.proto as u8, port);
        self.with(m)
    }

    /// Any match, in command-line order.
    pub fn with(mut self, m: Xt) -> Self {
        self.matches.push(m);
        self
    }

    /// `-m comment --comment TEXT`.
    pub fn comment(self, text: &str) -> Self {
        self.with(xt::comment_match(text))
    }

    /// `-m conntrack --ctstate STATES` ([`xt::ctstate`] bits).
    pub fn ctstate(self, states: u16) -> Self {
        self.with(xt::conntrack_state_match(states, false))
    }

    /// `-m mark --mark VALUE/MASK`.
    pub fn mark(self, value: u32, mask: u32) -> Self {
        self.with(ext::mark_match(value, mask, false))
    }

    /// `-m multiport --dports P,…`.
    pub fn multiport_dports(self, ports: &[u16]) -> Self {
        self.with(xt::multiport_match(true, ports))
    }

    /// `-m addrtype --dst-type TYPE` (`1 << RTN_*`).
    pub fn addrtype_dst(self, rtn_bits: u16) -> Self {
        self.with(xt::addrtype_dst_match(rtn_bits))
    }

    /// `-j ACCEPT|DROP|RETURN|CHAIN`.
    pub fn jump(mut self, target: &str) -> Self {
        self.target = match target {
            "ACCEPT" => Target::Accept,
            "DROP" => Target::Drop,
            "RETURN" => Target::Return,
            chain => Target::Jump(chain.to_string()),
        };
        self
    }

    /// `-g CHAIN`.
    pub fn goto(mut self, chain: &str) -> Self {
        self.target = Target::Goto(chain.to_string());
        self
    }

    /// `-j TARGET` of an extension target (DNAT, MASQUERADE, MARK …).
    pub fn target(mut self, t: Xt) -> Self {
        self.target = Target::Ext(t);
        self
    }

    /// The chain this rule jumps or goes to.
    pub fn jump_target(&self) -> Option<&str> {
        match &self.target {
            Target::Jump(c) | Target::Goto(c) => Some(c),
            _ => None,
        }
    }

    /// The first `-m comment` text.
    pub fn comment_text(&self) -> Option<String> {
        self.matches
            .iter()
            .find(|m| m.kind == XtKind::Match && m.name == "comment")
            .map(|m| ext::cstr(&m.info))
    }

    /// The extension target named `name`.
    pub fn ext_target(&self, name: &str) -> Option<&Xt> {
        match &self.target {
            Target::Ext(x) if x.name == name => Some(x),
            _ => None,
        }
    }

    /// `-s A` with a full-length mask (/32 or /128), not inverted.
    pub fn src_host(&self) -> Option<IpAddr> {
        host(&self.src, self.invflags & inv::SRCIP != 0)
    }

    /// `-d A` with a full-length mask, not inverted.
    pub fn dst_host(&self) -> Option<IpAddr> {
        host(&self.dst, self.invflags & inv::DSTIP != 0)
    }
}

fn host(a: &Addr, inverted: bool) -> Option<IpAddr> {
    let p = a.prefix()?;
    (!inverted && p.prefix_len() == p.max_prefix_len()).then_some(a.addr)
}

/// One chain: a built-in one (`hook` set, with a policy) or a user-defined one.
#[derive(Debug, Clone)]
pub struct Chain {
    pub name: String,
    /// The netfilter hook a built-in chain is entered from ([`super::HOOKS`]).
    pub hook: Option<usize>,
    /// A built-in chain's policy.
    pub policy: Option<Policy>,
    /// A built-in chain's policy counters.
    pub counters: Counters,
    pub rules: Vec<Rule>,
    /// The entries this chain's head (user chains) and tail (policy or RETURN) were read from.
    pub(crate) head: Option<u32>,
    pub(crate) tail: Option<u32>,
}

impl PartialEq for Chain {
    /// Everything but where the chain was read from.
    fn eq(&self, o: &Chain) -> bool {
        self.name == o.name
            && self.hook == o.hook
            && self.policy == o.policy
            && self.counters == o.counters
            && self.rules == o.rules
    }
}

impl Eq for Chain {}

impl Chain {
    /// An empty user-defined chain.
    pub fn user(name: &str) -> Chain {
        Chain {
            name: name.to_string(),
            hook: None,
            policy: None,
            counters: Counters::default(),
            rules: Vec::new(),
            head: None,
            tail: None,
        }
    }

    /// An empty built-in chain with policy ACCEPT.
    pub fn builtin(hook: usize) -> Chain {
        Chain {
            hook: Some(hook),
            policy: Some(Policy::Accept),
            ..Chain::user(super::HOOKS[hook])
        }
    }

    pub fn is_builtin(&self) -> bool {
        self.hook.is_some()
    }
}

/// The longest chain name iptables accepts (`XT_EXTENSION_MAXNAMELEN - 1`).
pub const MAX_CHAIN_NAME: usize = 28;

/// One x_tables table of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub family: Family,
    /// The hooks the table is registered at (a bit per hook).
    pub valid_hooks: u32,
    /// Built-in chains first (hook order), then user chains (sorted by name, as libiptc keeps
    /// them).
    pub chains: Vec<Chain>,
}

impl Table {
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| c.name == name)
    }

    /// The rules of `chain` (none when it does not exist).
    pub fn rules(&self, chain: &str) -> &[Rule] {
        self.chain(chain).map(|c| c.rules.as_slice()).unwrap_or(&[])
    }

    /// Whether a user chain or built-in chain of this name exists.
    pub fn has_chain(&self, name: &str) -> bool {
        self.chain(name).is_some()
    }

    /// Whether the table holds anything beyond its built-in chains with ACCEPT policies:
    /// a rule, a user-defined chain or a DROP policy (a table someone only listed has not).
    pub fn in_use(&self) -> bool {
        self.chains
            .iter()
            .any(|c| !c.is_builtin() || !c.rules.is_empty() || c.policy == Some(Policy::Drop))
    }

    /// `iptables -N NAME` unless it exists (`-N` fails on a built-in name, so does this).
    /// Returns whether the chain was made.
    pub fn ensure_chain(&mut self, name: &str) -> Result<bool, String> {
        if self.has_chain(name) {
            return Ok(false);
        }
        if name.is_empty() || name.len() > MAX_CHAIN_NAME || hook_of(name).is_some() {
            return Err(format!("invalid chain name {name:?}"));
        }
        // Among the user chains, in name order (libiptc's iptc_insert_chain).
        let at = self
            .chains
            .iter()
            .position(|c| !c.is_builtin() && c.name.as_str() > name)
            .unwrap_or(self.chains.len());
        self.chains.insert(at, Chain::user(name));
        Ok(true)
    }

    /// Adds `rule` to `chain` (first with `prepend`, else last) unless an equal rule is there
    /// (the reference's `InsertUnique`/`AppendUnique`). Returns whether it was added.
    pub fn insert_unique(&mut self, chain: &str, rule: Rule, prepend: bool) -> Result<bool, String> {
        if let Some(j) = rule.jump_target() {
            if self.chain(j).is_none_or(|c| c.is_builtin()) {
                return Err(format!("rule in {chain} jumps to {j}, which is no user chain"));
            }
        }
        let name = self.name.clone();
        let c = self
            .chain_mut(chain)
            .ok_or_else(|| format!("no chain {chain} in table {name}"))?;
        if c.rules.iter().any(|r| r.same_as(&rule)) {
            return Ok(false);
        }
        if prepend {
            c.rules.insert(0, rule);
        } else {
            c.rules.push(rule);
        }
        Ok(true)
    }

    /// Removes the rules of `chain` that `pick` selects; returns how many went.
    pub fn delete_rules(&mut self, chain: &str, pick: impl Fn(&Rule) -> bool) -> usize {
        let Some(c) = self.chain_mut(chain) else { return 0 };
        let n = c.rules.len();
        c.rules.retain(|r| !pick(r));
        n - c.rules.len()
    }

    /// Removes a user chain with its rules and every rule (in any chain) that jumps or goes
    /// to it, as `iptables -F C; iptables -D … -j C; iptables -X C` would. Returns whether
    /// anything changed; a missing chain is fine, a built-in one is kept.
    pub fn remove_chain(&mut self, name: &str) -> bool {
        let Some(i) = self.chains.iter().position(|c| c.name == name && !c.is_builtin()) else {
            return false;
        };
        self.chains.remove(i);
        for c in &mut self.chains {
            c.rules.retain(|r| r.jump_target() != Some(name));
        }
        true
    }

    /// Sets a built-in chain's policy (`iptables -P`).
    pub fn set_policy(&mut self, chain: &str, p: Policy) -> Result<(), String> {
        match self.chain_mut(chain) {
            Some(c) if c.is_builtin() => {
                c.policy = Some(p);
                Ok(())
            }
            _ => Err(format!("no built-in chain {chain}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            name: "filter".into(),
            family: Family::V4,
            valid_hooks: 0b1110,
            chains: vec![Chain::builtin(1), Chain::builtin(2), Chain::builtin(3)],
        }
    }

    #[test]
    fn addr_and_iface_as_iptables_sets_them() {
        let a = Addr::net("10.1.2.3/24".parse().unwrap());
        assert_eq!(a.addr, "10.1.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(a.mask, "255.255.255.0".parse::<IpAddr>().unwrap());
        assert_eq!(a.prefix(), Some("10.1.2.0/24".parse().unwrap()));
        let odd = Addr {
            addr: "10.0.0.0".parse().unwrap(),
            mask: "255.0.255.0".parse().unwrap(),
        };
        assert_eq!(odd.prefix(), None);
        assert!(Addr::any(Family::V6).is_any());
        let i = Iface::parse("cni0");
        assert_eq!(
            (i.name.as_str(), &i.mask[..6]),
            ("cni0", &[255, 255, 255, 255, 255, 0][..])
        );
        let p = Iface::parse("veth+");
        assert_eq!((p.name.as_str(), &p.mask[..5]), ("veth+", &[255, 255, 255, 255, 0][..]));
        assert!(Iface::parse("+").is_any());
    }

    #[test]
    fn user_chains_stay_sorted_after_builtins() {
        let mut t = table();
        assert!(t.ensure_chain("CNI-FORWARD").unwrap());
        assert!(t.ensure_chain("CNI-ADMIN").unwrap());
        assert!(t.ensure_chain("DOCKER").unwrap());
        assert!(!t.ensure_chain("CNI-ADMIN").unwrap());
        assert!(!t.ensure_chain("FORWARD").unwrap());
        assert!(
            t.ensure_chain("PREROUTING").is_err(),
            "a built-in name is not a user chain"
        );
        assert!(t.ensure_chain(&"X".repeat(29)).is_err());
        let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["INPUT", "FORWARD", "OUTPUT", "CNI-ADMIN", "CNI-FORWARD", "DOCKER"]
        );
    }

    #[test]
    fn unique_inserts_and_chain_removal() {
        let mut t = table();
        t.ensure_chain("CNI-FORWARD").unwrap();
        let jump = Rule::new(Family::V4)
            .comment("CNI firewall plugin rules")
            .jump("CNI-FORWARD");
        assert!(t.insert_unique("FORWARD", jump.clone(), true).unwrap());
        assert!(!t.insert_unique("FORWARD", jump.clone(), true).unwrap());
        let a = Rule::new(Family::V4)
            .src("10.0.0.5".parse::<IpAddr>().unwrap(), false)
            .jump("ACCEPT");
        assert!(t.insert_unique("CNI-FORWARD", a.clone(), false).unwrap());
        // A counted copy is still the same rule.
        let mut counted = a.clone();
        counted.counters.packets = 9;
        assert!(!t.insert_unique("CNI-FORWARD", counted, false).unwrap());
        assert!(t.insert_unique("NOPE", a, false).is_err());
        assert!(t
            .insert_unique("FORWARD", Rule::new(Family::V4).jump("MISSING"), false)
            .is_err());
        assert_eq!(t.rules("CNI-FORWARD")[0].src_host(), Some("10.0.0.5".parse().unwrap()));
        assert!(t.in_use());
        assert!(t.remove_chain("CNI-FORWARD"));
        assert!(t.rules("FORWARD").is_empty(), "the jump went with the chain");
        assert!(!t.remove_chain("CNI-FORWARD"));
        assert!(!t.remove_chain("FORWARD"));
        assert!(!t.in_use());
        t.set_policy("FORWARD", Policy::Drop).unwrap();
        assert!(t.in_use());
    }
}
