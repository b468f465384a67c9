//! Netlink wire format: the framing constants every family shares (route netlink here,
//! nf_tables and ctnetlink over NETLINK_NETFILTER), defined only here, and route-netlink
//! payloads: fixed headers plus type-length-value attributes.
//!
//! neli frames the route-netlink messages (nlmsghdr, sequence, ack and error parsing) but has no typed
//! payloads for link kinds, `rtnexthop`, metrics or bridge VLAN info, and its generic
//! attribute builders cannot express a nested `ifinfomsg` (the veth peer). So payloads are
//! built and parsed here, by hand, in one small place that unit tests check byte by byte.

use std::net::IpAddr;

// <linux/netlink.h>: the message header and its types and flags.
pub const NLMSG_HDRLEN: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_ECHO: u16 = 0x8;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
// Flags of an NLMSG_ERROR reply: the request is echoed capped to its header; extended-ack
// attributes (the kernel's message, the offending attribute's offset) follow.
pub const NLM_F_CAPPED: u16 = 0x100;
pub const NLM_F_ACK_TLVS: u16 = 0x200;
pub const NLMSGERR_ATTR_MSG: u16 = 1;
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

/// Set on attributes whose payload is itself attributes, where the kernel requires it.
pub const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without NLA_F_NESTED and NLA_F_NET_BYTEORDER.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds up to the 4-byte netlink alignment.
pub fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A payload under construction: a fixed header followed by attributes.
#[derive(Debug, Default, Clone)]
pub struct Payload {
    buf: Vec<u8>,
}

impl Payload {
    /// Starts a payload with a fixed header (ifinfomsg, rtmsg, ...).
    pub fn new(header: &[u8]) -> Self {
        let mut buf = header.to_vec();
        buf.resize(align(buf.len()), 0);
        Payload { buf }
    }

    /// Appends a raw attribute.
    pub fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// Appends a u8 attribute.
    pub fn u8(&mut self, ty: u16, v: u8) -> &mut Self {
        self.attr(ty, &[v])
    }

    /// Appends a u16 attribute (host order).
    pub fn u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// Appends a u32 attribute (host order).
    pub fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// Appends a NUL-terminated string attribute.
    pub fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v)
    }

    /// Appends an IP address attribute (4 or 16 bytes).
    pub fn ip(&mut self, ty: u16, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.attr(ty, &a.octets()),
            IpAddr::V6(a) => self.attr(ty, &a.octets()),
        }
    }

    /// Appends a nested attribute whose content `f` writes.
    pub fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Payload)) -> &mut Self {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        let mut inner = Payload {
            buf: std::mem::take(&mut self.buf),
        };
        f(&mut inner);
        self.buf = inner.buf;
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    /// Appends raw bytes (e.g. a fixed struct inside a nest), padded.
    pub fn raw(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Consumes into the encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Iterates the attributes in `buf`, yielding (type without flag bits, payload).
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

/// Iterator from [`attrs`]; stops at the first malformed attribute.
pub struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > self.buf.len() {
            return None;
        }
        let data = &self.buf[4..len];
        self.buf = &self.buf[align(len).min(self.buf.len())..];
        Some((ty, data))
    }
}

/// Reads a host-order u16.
pub fn get_u16(b: &[u8]) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(..2)?.try_into().ok()?))
}

/// Reads a host-order u32.
pub fn get_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Reads a host-order i32.
pub fn get_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// Reads a string attribute, dropping the trailing NUL.
pub fn get_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Reads a 4- or 16-byte address.
pub fn get_ip(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
        _ => None,
    }
}

/// Reads a 6-byte MAC address.
pub fn get_mac(b: &[u8]) -> Option<[u8; 6]> {
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attrs_roundtrip() {
        let mut p = Payload::new(&[1, 2, 3]);
        p.str(3, "ab").nest(18, |n| {
            n.str(1, "veth");
        });
        assert_eq!(
            p.bytes(),
            &[
                1, 2, 3, 0, // header padded
                7, 0, 3, 0, b'a', b'b', 0, 0, // IFNAME "ab\0" + pad
                16, 0, 18, 0, // nest
                9, 0, 1, 0, b'v', b'e', b't', b'h', 0, 0, 0, 0
            ][..]
        );
        let a: Vec<_> = attrs(&p.bytes()[4..]).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(get_str(a[0].1), "ab");
        let inner: Vec<_> = attrs(a[1].1).collect();
        assert_eq!(inner[0].0, 1);
        assert_eq!(get_str(inner[0].1), "veth");
    }
}
