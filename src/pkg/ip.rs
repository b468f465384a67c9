//! Address arithmetic the way Go's `net` and the reference's `pkg/ip` do it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Go's canonicalizeIP: `::ffff:a.b.c.d` is `a.b.c.d`.
pub fn canon(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The next address (wrapping at the end of the family's space, like Go's NextIP).
pub fn next_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_add(1))),
    }
}
