//! Neighbour (ARP/NDP) entries and bridge/vxlan forwarding-database (FDB) entries.

use std::net::IpAddr;

use super::addr::IpFamily;
use super::link::fmt_mac;
use super::wire::{attrs, get_i32, get_ip, get_mac, get_u16, Payload};
use super::{Mode, Netlink};
use crate::linux::Result;

const RTM_NEWNEIGH: u16 = 28;
const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;

/// NUD_PERMANENT: never expires.
pub const NUD_PERMANENT: u16 = 0x80;
/// NTF_SELF: the entry belongs to the device itself (vxlan FDB), not its master.
pub const NTF_SELF: u8 = 0x02;
const AF_BRIDGE: u8 = nix::libc::AF_BRIDGE as u8;

/// A neighbour or FDB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neigh {
    /// Device index.
    pub index: u32,
    /// Protocol address (for FDB entries: the remote VTEP), if any.
    pub ip: Option<IpAddr>,
    /// Link-layer address.
    pub lladdr: Option<[u8; 6]>,
    /// NUD_* state.
    pub state: u16,
    /// NTF_* flags.
    pub flags: u8,
    /// True for AF_BRIDGE (FDB) entries.
    pub fdb: bool,
}

fn ndmsg(family: u8, index: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = family;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h[10] = flags;
    h
}

impl Neigh {
    /// A permanent neighbour `ip` -> `lladdr` on `index`.
    pub fn permanent(index: u32, ip: IpAddr, lladdr: [u8; 6]) -> Neigh {
        Neigh {
            index,
            ip: Some(ip),
            lladdr: Some(lladdr),
            state: NUD_PERMANENT,
            flags: 0,
            fdb: false,
        }
    }

    /// A permanent FDB entry on device `index` (e.g. vxlan): frames to `lladdr` go to `dst`.
    pub fn fdb(index: u32, lladdr: [u8; 6], dst: IpAddr) -> Neigh {
        Neigh {
            index,
            ip: Some(dst),
            lladdr: Some(lladdr),
            state: NUD_PERMANENT,
            flags: NTF_SELF,
            fdb: true,
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let fam = if self.fdb {
            AF_BRIDGE
        } else {
            self.ip.map(|i| IpFamily::of(i).af()).unwrap_or(0)
        };
        let mut p = Payload::new(&ndmsg(fam, self.index, self.state, self.flags));
        if let Some(ip) = self.ip {
            p.ip(NDA_DST, ip);
        }
        if let Some(m) = self.lladdr {
            p.attr(NDA_LLADDR, &m);
        }
        p.into_bytes()
    }

    pub(crate) fn parse(b: &[u8]) -> Option<Neigh> {
        if b.len() < 12 {
            return None;
        }
        let mut n = Neigh {
            index: get_i32(&b[4..])? as u32,
            ip: None,
            lladdr: None,
            state: get_u16(&b[8..])?,
            flags: b[10],
            fdb: b[0] == AF_BRIDGE,
        };
        for (ty, d) in attrs(&b[12..]) {
            match ty {
                NDA_DST => n.ip = get_ip(d),
                NDA_LLADDR => n.lladdr = get_mac(d),
                _ => {}
            }
        }
        Some(n)
    }

    fn describe(&self) -> String {
        let what = if self.fdb { "fdb entry" } else { "neighbour" };
        let mac = fmt_mac(&self.lladdr);
        match self.ip {
            Some(ip) => format!("{what} {ip} {mac} on link #{}", self.index),
            None => format!("{what} {mac} on link #{}", self.index),
        }
    }
}

impl Netlink {
    /// Adds a neighbour or FDB entry; EEXIST if present.
    pub fn add_neigh(&mut self, n: &Neigh) -> Result<()> {
        let what = || format!("add {}", n.describe());
        self.request(RTM_NEWNEIGH, Mode::Create, n.encode(), &what)?;
        Ok(())
    }

    /// Adds or overwrites a neighbour or FDB entry.
    pub fn replace_neigh(&mut self, n: &Neigh) -> Result<()> {
        let what = || format!("replace {}", n.describe());
        self.request(RTM_NEWNEIGH, Mode::Replace, n.encode(), &what)?;
        Ok(())
    }

    /// Adds an FDB entry beside existing ones for the same MAC (several VTEPs, NLM_F_APPEND).
    pub fn append_neigh(&mut self, n: &Neigh) -> Result<()> {
        let what = || format!("append {}", n.describe());
        self.request(RTM_NEWNEIGH, Mode::Append, n.encode(), &what)?;
        Ok(())
    }

    /// Deletes a neighbour or FDB entry.
    pub fn del_neigh(&mut self, n: &Neigh) -> Result<()> {
        let what = || format!("delete {}", n.describe());
        self.request(RTM_DELNEIGH, Mode::Change, n.encode(), &what)?;
        Ok(())
    }

    /// Neighbour entries of `family` (or FDB entries when `fdb`), optionally of one device.
    pub fn neighs(&mut self, index: Option<u32>, family: IpFamily, fdb: bool) -> Result<Vec<Neigh>> {
        let fam = if fdb { AF_BRIDGE } else { family.af() };
        // Strict checking rejects a neighbour dump header with an ifindex; filter here.
        let p = Payload::new(&ndmsg(fam, 0, 0, 0));
        let msgs = self.dump(RTM_GETNEIGH, p.into_bytes(), &|| "list neighbours".to_string())?;
        Ok(msgs
            .iter()
            .filter_map(|m| Neigh::parse(m))
            .filter(|n| n.fdb == fdb && index.is_none_or(|i| n.index == i))
            .filter(|n| fdb || family == IpFamily::All || n.ip.map(IpFamily::of) == Some(family))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdb_bytes() {
        let n = Neigh::fdb(5, [2, 0, 0, 0, 0, 9], "192.168.1.2".parse().unwrap());
        let b = n.encode();
        let mut want = vec![7, 0, 0, 0];
        want.extend_from_slice(&5i32.to_ne_bytes());
        want.extend_from_slice(&0x80u16.to_ne_bytes());
        want.extend_from_slice(&[2, 0]);
        want.extend_from_slice(&[8, 0, 1, 0, 192, 168, 1, 2]);
        want.extend_from_slice(&[10, 0, 2, 0, 2, 0, 0, 0, 0, 9, 0, 0]);
        assert_eq!(b, want);
        assert_eq!(Neigh::parse(&b).unwrap(), n);
    }
}
