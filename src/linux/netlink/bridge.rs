//! Bridge port options (hairpin, isolation) and bridge VLAN entries, sent with family
//! AF_BRIDGE.

use super::link::{ifinfomsg, IFLA_AF_SPEC, IFLA_EXT_MASK, IFLA_PROTINFO, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK};
use super::wire::{attrs, get_i32, get_u16, Payload, NLA_F_NESTED};
use super::{Mode, Netlink};
use crate::linux::Result;

const AF_BRIDGE: u8 = nix::libc::AF_BRIDGE as u8;
const IFLA_BRPORT_MODE: u16 = 4;
const IFLA_BRPORT_ISOLATED: u16 = 33;
const IFLA_BRIDGE_VLAN_INFO: u16 = 2;
const BRIDGE_VLAN_INFO_PVID: u16 = 0x2;
const BRIDGE_VLAN_INFO_UNTAGGED: u16 = 0x4;
const RTEXT_FILTER_BRVLAN: u32 = 1 << 1;

/// A VLAN on a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    /// VLAN id.
    pub vid: u16,
    /// Untagged frames entering the port get this VLAN.
    pub pvid: bool,
    /// Frames leave the port untagged.
    pub untagged: bool,
}

pub(crate) fn encode_port(index: u32, hairpin: Option<bool>, isolated: Option<bool>) -> Vec<u8> {
    let mut p = Payload::new(&ifinfomsg(AF_BRIDGE, index, 0, 0));
    // NLA_F_NESTED tells the bridge this is the nested form, not the legacy u8 port state.
    p.nest(IFLA_PROTINFO | NLA_F_NESTED, |n| {
        if let Some(h) = hairpin {
            n.u8(IFLA_BRPORT_MODE, h as u8);
        }
        if let Some(i) = isolated {
            n.u8(IFLA_BRPORT_ISOLATED, i as u8);
        }
    });
    p.into_bytes()
}

pub(crate) fn encode_vlan(index: u32, v: BridgeVlan) -> Vec<u8> {
    let mut flags = 0;
    if v.pvid {
        flags |= BRIDGE_VLAN_INFO_PVID;
    }
    if v.untagged {
        flags |= BRIDGE_VLAN_INFO_UNTAGGED;
    }
    let mut p = Payload::new(&ifinfomsg(AF_BRIDGE, index, 0, 0));
    p.nest(IFLA_AF_SPEC, |n| {
        let mut info = [0u8; 4]; // struct bridge_vlan_info { u16 flags; u16 vid; }
        info[..2].copy_from_slice(&flags.to_ne_bytes());
        info[2..].copy_from_slice(&v.vid.to_ne_bytes());
        n.attr(IFLA_BRIDGE_VLAN_INFO, &info);
    });
    p.into_bytes()
}

pub(crate) fn parse_vlans(b: &[u8]) -> Option<(u32, Vec<BridgeVlan>)> {
    let index = get_i32(b.get(4..)?)? as u32;
    let mut out = Vec::new();
    for (ty, d) in attrs(b.get(16..)?) {
        if ty != IFLA_AF_SPEC {
            continue;
        }
        for (t, v) in attrs(d) {
            if t == IFLA_BRIDGE_VLAN_INFO {
                let flags = get_u16(v)?;
                out.push(BridgeVlan {
                    vid: get_u16(v.get(2..)?)?,
                    pvid: flags & BRIDGE_VLAN_INFO_PVID != 0,
                    untagged: flags & BRIDGE_VLAN_INFO_UNTAGGED != 0,
                });
            }
        }
    }
    Some((index, out))
}

impl Netlink {
    /// Sets hairpin mode and/or isolation of bridge port `index` (None leaves it unchanged).
    pub fn set_bridge_port(&mut self, index: u32, hairpin: Option<bool>, isolated: Option<bool>) -> Result<()> {
        let what = || format!("set bridge port link #{index} hairpin {hairpin:?} isolated {isolated:?}");
        self.request(RTM_SETLINK, Mode::Change, encode_port(index, hairpin, isolated), &what)?;
        Ok(())
    }

    /// Adds VLAN `v` on bridge port (or bridge device) `index`.
    pub fn bridge_vlan_add(&mut self, index: u32, v: BridgeVlan) -> Result<()> {
        let what = || format!("add vlan {} to bridge port link #{index}", v.vid);
        self.request(RTM_SETLINK, Mode::Change, encode_vlan(index, v), &what)?;
        Ok(())
    }

    /// Removes VLAN `vid` from bridge port `index`.
    pub fn bridge_vlan_del(&mut self, index: u32, vid: u16) -> Result<()> {
        let what = || format!("delete vlan {vid} from bridge port link #{index}");
        let v = BridgeVlan {
            vid,
            pvid: false,
            untagged: false,
        };
        self.request(RTM_DELLINK, Mode::Change, encode_vlan(index, v), &what)?;
        Ok(())
    }

    /// VLANs configured on bridge port `index`.
    pub fn bridge_vlans(&mut self, index: u32) -> Result<Vec<BridgeVlan>> {
        let mut p = Payload::new(&ifinfomsg(AF_BRIDGE, 0, 0, 0));
        p.u32(IFLA_EXT_MASK, RTEXT_FILTER_BRVLAN);
        let msgs = self.dump(RTM_GETLINK, p.into_bytes(), &|| format!("list vlans of link #{index}"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| parse_vlans(m))
            .filter(|(i, _)| *i == index)
            .flat_map(|(_, v)| v)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_bytes() {
        let b = encode_port(4, Some(true), Some(false));
        assert_eq!(b[0], AF_BRIDGE);
        assert_eq!(
            &b[16..],
            &[20, 0, 12, 0x80, 5, 0, 4, 0, 1, 0, 0, 0, 5, 0, 33, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn vlan_bytes_roundtrip() {
        let v = BridgeVlan {
            vid: 10,
            pvid: true,
            untagged: true,
        };
        let b = encode_vlan(3, v);
        assert_eq!(&b[16..], &[12, 0, 26, 0, 8, 0, 2, 0, 6, 0, 10, 0]);
        assert_eq!(parse_vlans(&b).unwrap(), (3, vec![v]));
    }
}
