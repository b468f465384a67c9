//! Ranges and range sets: the reference's `Canonicalize`, `Contains`, `Overlaps`
//! and their exact error texts (backend/allocator/range.go, range_set.go).
//!
//! Addresses are kept canonical: an IPv4-mapped IPv6 address is an IPv4 address,
//! as Go's `To4()` makes it.

use ipnet::IpNet;
use std::cmp::Ordering;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::pkg::ip::{canon, next_ip};

pub fn to_u128(ip: IpAddr) -> u128 {
    match canon(ip) {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// Go's ip.Cmp: numeric comparison of the canonical forms.
fn cmp(a: IpAddr, b: IpAddr) -> Ordering {
    to_u128(a).cmp(&to_u128(b))
}

/// A range as written in the config, after JSON decoding (strings already parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRange {
    pub subnet: Option<IpNet>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

/// A canonical range: every field set, start and end inside the subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Always the network address (host bits are rejected).
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// The subnet's family, prefix and (canonical) address as Go holds them after canonicalizeIP.
fn is_v4(ip: IpAddr) -> bool {
    matches!(canon(ip), IpAddr::V4(_))
}

/// Whether `addr` lies in `subnet` and between the optional bounds (Go's Range.Contains).
fn contains_with(subnet: &IpNet, start: Option<IpAddr>, end: Option<IpAddr>, addr: IpAddr) -> bool {
    let addr = canon(addr);
    if is_v4(addr) != is_v4(subnet.addr()) {
        return false;
    }
    if !subnet_contains(subnet, addr) {
        return false;
    }
    if start.is_some_and(|s| cmp(addr, s) == Ordering::Less) {
        return false;
    }
    if end.is_some_and(|e| cmp(addr, e) == Ordering::Greater) {
        return false;
    }
    true
}

fn subnet_contains(subnet: &IpNet, addr: IpAddr) -> bool {
    let bits = if is_v4(subnet.addr()) { 32 } else { 128 };
    let p = subnet.prefix_len() as u32;
    let mask: u128 = if p == 0 { 0 } else { (!0u128) << (bits - p) };
    let mask = if bits == 32 { mask & 0xffff_ffff } else { mask };
    (to_u128(addr) & mask) == (to_u128(subnet.addr()) & mask)
}

impl RawRange {
    /// Fill in defaults and check the range (range.go Canonicalize), with the reference's messages.
    pub fn canonicalize(&self) -> Result<Range, String> {
        let Some(raw_subnet) = self.subnet else {
            return Err("IP <nil> not v4 nor v6".into());
        };
        let addr = canon(raw_subnet.addr());
        let ones = raw_subnet.prefix_len() as u32;
        let mask_bits = raw_subnet.max_prefix_len() as u32;
        if ones + 2 > mask_bits {
            return Err(format!("Network {addr}/{ones} too small to allocate from"));
        }
        if is_v4(addr) != (mask_bits == 32) {
            return Err("IPNet IP and Mask version mismatch".into());
        }
        let subnet = IpNet::new(addr, ones as u8).map_err(|e| e.to_string())?;
        let network = subnet.network();
        if network != addr {
            return Err(format!(
                "Network has host bits set. For a subnet mask of length {ones} the network address is {network}"
            ));
        }
        let gateway = self.gateway.map(canon).unwrap_or_else(|| next_ip(network));
        let raw_end = self.range_end.map(canon);
        let start = match self.range_start.map(canon) {
            Some(s) => {
                if !contains_with(&subnet, Some(s), raw_end, s) {
                    return Err(format!("RangeStart {s} not in network {subnet}"));
                }
                s
            }
            None => next_ip(network),
        };
        let end = match raw_end {
            Some(e) => {
                if !contains_with(&subnet, Some(start), Some(e), e) {
                    return Err(format!("RangeEnd {e} not in network {subnet}"));
                }
                e
            }
            None => last_ip(&subnet),
        };
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }
}

/// The last address of a subnet, minus the broadcast for IPv4 (v6 keeps the all-ones address).
fn last_ip(subnet: &IpNet) -> IpAddr {
    match subnet.broadcast() {
        IpAddr::V4(b) => IpAddr::V4(Ipv4Addr::from(u32::from(b).wrapping_sub(1))),
        v6 => v6,
    }
}

impl Range {
    pub fn contains(&self, addr: IpAddr) -> bool {
        contains_with(&self.subnet, Some(self.start), Some(self.end), addr)
    }

    pub fn overlaps(&self, other: &Range) -> bool {
        if self.is_v4() != other.is_v4() {
            return false;
        }
        self.contains(other.start) || self.contains(other.end) || other.contains(self.start) || other.contains(self.end)
    }

    pub fn is_v4(&self) -> bool {
        is_v4(self.start)
    }

    /// How many addresses the iterator can hand out (the gateway excluded).
    pub fn capacity(&self) -> u128 {
        let n = to_u128(self.end).saturating_sub(to_u128(self.start)).saturating_add(1);
        if self.contains(self.gateway) {
            n - 1
        } else {
            n
        }
    }

    /// The address `n` steps after `ip` in this range's family.
    pub fn offset(&self, ip: IpAddr, n: u128) -> IpAddr {
        from_u128(to_u128(ip).wrapping_add(n), self.is_v4())
    }
}

/// One entry of `ranges`: a pool of disjoint subnets that yields one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl RangeSet {
    /// range_set.go Canonicalize: non-empty, one family, no overlaps inside the set.
    pub fn canonicalize(raw: &[RawRange]) -> Result<RangeSet, String> {
        if raw.is_empty() {
            return Err("empty range set".into());
        }
        let mut out: Vec<Range> = Vec::with_capacity(raw.len());
        for r in raw {
            let r = r.canonicalize()?;
            if let Some(first) = out.first() {
                if first.is_v4() != r.is_v4() {
                    return Err("mixed address families".into());
                }
            }
            out.push(r);
        }
        for (i, r1) in out.iter().enumerate() {
            for r2 in &out[i + 1..] {
                if r1.overlaps(r2) {
                    return Err(format!("subnets {r1} and {r2} overlap"));
                }
            }
        }
        Ok(RangeSet(out))
    }

    pub fn range_for(&self, addr: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(addr))
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        self.range_for(addr).is_some()
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn is_v4(&self) -> bool {
        self.0[0].is_v4()
    }
}

/// The reference's round-robin iterator (allocator.go RangeIter), step for step: start after
/// the last reserved address if it is in the set, else at the first range's start; move to the
/// next range after each range end, wrapping; skip gateways; stop after one full lap.
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    idx: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    pub fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> RangeIter<'a> {
        if let Some(last) = last_reserved.map(canon) {
            if let Some(idx) = set.0.iter().position(|r| r.contains(last)) {
                return RangeIter {
                    set,
                    idx,
                    cur: Some(last),
                    start: None,
                };
            }
        }
        RangeIter {
            set,
            idx: 0,
            cur: None,
            start: Some(set.0[0].start),
        }
    }
}

impl<'a> Iterator for RangeIter<'a> {
    type Item = (IpAddr, &'a Range);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut r = &self.set.0[self.idx];
            let cur = match self.cur {
                None => {
                    self.cur = Some(r.start);
                    self.start = Some(r.start);
                    if r.start == r.gateway {
                        continue;
                    }
                    return Some((r.start, r));
                }
                Some(c) => c,
            };
            let next = if cur == r.end {
                self.idx = (self.idx + 1) % self.set.0.len();
                r = &self.set.0[self.idx];
                r.start
            } else {
                next_ip(cur)
            };
            self.cur = Some(next);
            match self.start {
                None => self.start = Some(next),
                Some(s) if s == next => return None,
                Some(_) => {}
            }
            if next == r.gateway {
                continue;
            }
            return Some((next, r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(subnet: &str) -> RawRange {
        RawRange {
            subnet: Some(subnet.parse().unwrap()),
            ..Default::default()
        }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4_and_v6() {
        let r = raw("10.0.0.0/24").canonicalize().unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.0.0.1"), ip("10.0.0.254"), ip("10.0.0.1"))
        );
        let r = raw("2001:db8::/64").canonicalize().unwrap();
        assert_eq!(r.start, ip("2001:db8::1"));
        assert_eq!(
            r.end,
            ip("2001:db8::ffff:ffff:ffff:ffff"),
            "v6 keeps the all-ones address"
        );
        assert_eq!(r.to_string(), "2001:db8::1-2001:db8::ffff:ffff:ffff:ffff");
    }

    #[test]
    fn validation_messages() {
        assert_eq!(
            raw("10.0.0.0/31").canonicalize().unwrap_err(),
            "Network 10.0.0.0/31 too small to allocate from"
        );
        assert_eq!(
            raw("2001:db8::/127").canonicalize().unwrap_err(),
            "Network 2001:db8::/127 too small to allocate from"
        );
        assert_eq!(
            raw("10.0.0.5/24").canonicalize().unwrap_err(),
            "Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0"
        );
        assert_eq!(
            RawRange::default().canonicalize().unwrap_err(),
            "IP <nil> not v4 nor v6"
        );
        let mut r = raw("10.0.0.0/24");
        r.range_start = Some(ip("10.0.1.5"));
        assert_eq!(
            r.canonicalize().unwrap_err(),
            "RangeStart 10.0.1.5 not in network 10.0.0.0/24"
        );
        let mut r = raw("10.0.0.0/24");
        r.range_start = Some(ip("10.0.0.50"));
        r.range_end = Some(ip("10.0.0.40"));
        assert_eq!(
            r.canonicalize().unwrap_err(),
            "RangeStart 10.0.0.50 not in network 10.0.0.0/24"
        );
        let mut r = raw("10.0.0.0/24");
        r.range_end = Some(ip("10.0.2.1"));
        assert_eq!(
            r.canonicalize().unwrap_err(),
            "RangeEnd 10.0.2.1 not in network 10.0.0.0/24"
        );
        let mut r = raw("10.0.0.0/24");
        r.range_start = Some(ip("::ffff:10.0.0.9"));
        assert_eq!(r.canonicalize().unwrap().start, ip("10.0.0.9"), "v4-mapped is v4");
    }

    #[test]
    fn set_validation() {
        assert_eq!(RangeSet::canonicalize(&[]).unwrap_err(), "empty range set");
        assert_eq!(
            RangeSet::canonicalize(&[raw("10.0.0.0/24"), raw("2001:db8::/64")]).unwrap_err(),
            "mixed address families"
        );
        assert_eq!(
            RangeSet::canonicalize(&[raw("10.0.0.0/24"), raw("10.0.0.0/25")]).unwrap_err(),
            "subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap"
        );
        let s = RangeSet::canonicalize(&[raw("10.0.0.0/24"), raw("10.0.1.0/24")]).unwrap();
        assert_eq!(s.to_string(), "10.0.0.1-10.0.0.254,10.0.1.1-10.0.1.254");
        assert!(s.contains(ip("10.0.1.7")) && !s.contains(ip("10.0.2.7")) && !s.contains(ip("10.0.0.255")));
    }

    fn collect(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        RangeIter::new(set, last.map(ip)).map(|(a, _)| a.to_string()).collect()
    }

    #[test]
    fn iterator_order() {
        let set = RangeSet::canonicalize(&[raw("10.0.0.0/29")]).unwrap();
        let all = collect(&set, None);
        assert_eq!(all, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(
            collect(&set, Some("10.0.0.5")),
            ["10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"]
        );
        assert_eq!(
            collect(&set, Some("192.168.0.1")),
            all,
            "a last IP outside the set is ignored"
        );
        let two = RangeSet::canonicalize(&[raw("10.0.0.0/30"), raw("10.0.1.0/30")]).unwrap();
        assert_eq!(collect(&two, None), ["10.0.0.2", "10.0.1.2"]);
        assert_eq!(collect(&two, Some("10.0.0.2")), ["10.0.1.2", "10.0.0.2"]);
        let mut r = raw("10.0.0.0/29");
        r.gateway = Some(ip("10.0.0.4"));
        let gw = RangeSet::canonicalize(&[r]).unwrap();
        assert_eq!(
            collect(&gw, None),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6"]
        );
        assert_eq!(gw.0[0].capacity(), 5);
    }
}
