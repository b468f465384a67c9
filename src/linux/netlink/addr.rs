//! Interface addresses: list, add, delete, and DAD state.

use std::net::IpAddr;

use ipnet::IpNet;

use super::wire::{attrs, get_ip, get_u32, Payload};
use super::{Mode, Netlink};
use crate::linux::Result;

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const IFA_FLAGS: u16 = 8;

/// The IP family of an address, route, rule or neighbour, and of a dump's filter (`All`):
/// the socket address family (AF_UNSPEC, AF_INET, AF_INET6) route netlink carries. Not an
/// nftables table family, which is [`crate::linux::nft::Family`] (`inet`, `ip`, `bridge` …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// Both.
    All,
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    pub(crate) fn af(self) -> u8 {
        match self {
            IpFamily::All => 0,
            IpFamily::V4 => nix::libc::AF_INET as u8,
            IpFamily::V6 => nix::libc::AF_INET6 as u8,
        }
    }

    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> IpFamily {
        if ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        }
    }
}

/// IFA_F_* flags of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrFlags(pub u32);

impl AddrFlags {
    /// IFA_F_SECONDARY.
    pub const SECONDARY: u32 = 0x01;
    /// IFA_F_NODAD.
    pub const NODAD: u32 = 0x02;
    /// IFA_F_OPTIMISTIC.
    pub const OPTIMISTIC: u32 = 0x04;
    /// IFA_F_DADFAILED.
    pub const DADFAILED: u32 = 0x08;
    /// IFA_F_DEPRECATED.
    pub const DEPRECATED: u32 = 0x20;
    /// IFA_F_TENTATIVE.
    pub const TENTATIVE: u32 = 0x40;
    /// IFA_F_PERMANENT.
    pub const PERMANENT: u32 = 0x80;

    /// Duplicate address detection still running.
    pub fn tentative(self) -> bool {
        self.0 & Self::TENTATIVE != 0
    }
    /// Duplicate address detection found a duplicate.
    pub fn dadfailed(self) -> bool {
        self.0 & Self::DADFAILED != 0
    }
    /// Added without duplicate address detection.
    pub fn nodad(self) -> bool {
        self.0 & Self::NODAD != 0
    }
}

/// An address on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// Interface index.
    pub index: u32,
    /// Address with prefix length.
    pub ip: IpNet,
    /// Scope (0 universe, 253 link, 254 host).
    pub scope: u8,
    /// Flags.
    pub flags: AddrFlags,
}

impl Addr {
    pub(crate) fn parse(b: &[u8]) -> Option<Addr> {
        if b.len() < 8 {
            return None;
        }
        let prefix = b[1];
        let mut flags = b[2] as u32;
        let scope = b[3];
        let index = get_u32(&b[4..])?;
        let (mut local, mut address) = (None, None);
        for (ty, d) in attrs(&b[8..]) {
            match ty {
                IFA_LOCAL => local = get_ip(d),
                IFA_ADDRESS => address = get_ip(d),
                IFA_FLAGS => flags = get_u32(d)?,
                _ => {}
            }
        }
        // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
        let ip = local.or(address)?;
        Some(Addr {
            index,
            ip: IpNet::new(ip, prefix).ok()?,
            scope,
            flags: AddrFlags(flags),
        })
    }
}

fn ifaddrmsg(family: u8, prefix: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut h = [0u8; 8];
    h[0] = family;
    h[1] = prefix;
    h[3] = scope;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

/// The RTM_NEWADDR / RTM_DELADDR payload for `ip` on `index`.
pub(crate) fn encode_addr(index: u32, ip: IpNet, nodad: bool) -> Vec<u8> {
    let fam = IpFamily::of(ip.addr()).af();
    let mut p = Payload::new(&ifaddrmsg(fam, ip.prefix_len(), 0, index));
    p.ip(IFA_LOCAL, ip.addr()).ip(IFA_ADDRESS, ip.addr());
    if let IpNet::V4(v4) = ip {
        // Like the reference (vishvananda/netlink): set the broadcast address for real subnets.
        if v4.prefix_len() < 31 {
            p.ip(IFA_BROADCAST, IpAddr::V4(v4.broadcast()));
        }
    }
    if nodad {
        p.u32(IFA_FLAGS, AddrFlags::NODAD);
    }
    p.into_bytes()
}

impl Netlink {
    /// Addresses, optionally only those of `index`, of the given family.
    pub fn addrs(&mut self, index: Option<u32>, family: IpFamily) -> Result<Vec<Addr>> {
        // With strict checking the kernel filters by index itself; filter again for old kernels.
        let p = Payload::new(&ifaddrmsg(family.af(), 0, 0, index.unwrap_or(0)));
        let msgs = self.dump(RTM_GETADDR, p.into_bytes(), &|| "list addresses".to_string())?;
        Ok(msgs
            .iter()
            .filter_map(|m| Addr::parse(m))
            .filter(|a| index.is_none_or(|i| a.index == i))
            .filter(|a| family == IpFamily::All || IpFamily::of(a.ip.addr()) == family)
            .collect())
    }

    /// Adds an address; EEXIST if present. `nodad` skips IPv6 duplicate address detection.
    pub fn add_addr(&mut self, index: u32, ip: IpNet, nodad: bool) -> Result<()> {
        let what = || format!("add address {ip} to link #{index}");
        match self.request(RTM_NEWADDR, Mode::Create, encode_addr(index, ip, nodad), &what) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.name_link(index, e)),
        }
    }

    /// Removes an address.
    pub fn del_addr(&mut self, index: u32, ip: IpNet) -> Result<()> {
        let what = || format!("delete address {ip} from link #{index}");
        match self.request(RTM_DELADDR, Mode::Change, encode_addr(index, ip, false), &what) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.name_link(index, e)),
        }
    }

    /// IPv6 addresses of `index` still doing duplicate address detection. Wait until this
    /// is empty before using them; an entry with `dadfailed` will never settle.
    pub fn addrs_tentative(&mut self, index: u32) -> Result<Vec<Addr>> {
        Ok(self
            .addrs(Some(index), IpFamily::V6)?
            .into_iter()
            .filter(|a| a.flags.tentative() || a.flags.dadfailed())
            .collect())
    }
}

impl From<AddrFlags> for u32 {
    fn from(f: AddrFlags) -> u32 {
        f.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_v4_bytes() {
        let b = encode_addr(3, "10.1.2.3/24".parse().unwrap(), false);
        let mut want = vec![2, 24, 0, 0];
        want.extend_from_slice(&3u32.to_ne_bytes());
        want.extend_from_slice(&[8, 0, 2, 0, 10, 1, 2, 3]); // LOCAL
        want.extend_from_slice(&[8, 0, 1, 0, 10, 1, 2, 3]); // ADDRESS
        want.extend_from_slice(&[8, 0, 4, 0, 10, 1, 2, 255]); // BROADCAST
        assert_eq!(b, want);
    }

    #[test]
    fn add_v6_nodad_and_parse() {
        let b = encode_addr(4, "fd00::1/64".parse().unwrap(), true);
        assert_eq!(&b[..4], &[10, 64, 0, 0]);
        let a = Addr::parse(&b).unwrap();
        assert_eq!(a.ip, "fd00::1/64".parse::<IpNet>().unwrap());
        assert_eq!(a.index, 4);
        assert!(a.flags.nodad());
    }
}
