//! DHCPv4 messages (RFC 2131/2132), pure: encode, decode, the options the plugin reads
//! (1, 3, 6, 15, 51, 53, 54, 58, 59, 119, 121) and the IPv4/UDP framing a packet socket needs
//! before the interface has an address. No syscalls, so all of it is unit-tested.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const HEADER_LEN: usize = 236;
/// RFC 2131 §2: a client must accept 576-byte messages; BOOTP relays expect at least 300.
const MIN_LEN: usize = 300;

pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOST_NAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMS: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const DOMAIN_SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const STATIC_ROUTES: u8 = 33;
    pub const END: u8 = 255;
}

numbered_enums! {
    /// Option 53's values.
    pub enum MessageType: u8 {
        Discover = 1, Offer = 2, Request = 3, Decline = 4, Ack = 5, Nak = 6, Release = 7, Inform = 8,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    Short(usize),
    NotBootReply,
    NoMagic,
    BadOption(u8),
}

impl std::fmt::Display for PacketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PacketError::Short(n) => write!(f, "DHCP message too short ({n} bytes)"),
            PacketError::NotBootReply => f.write_str("not a BOOTREPLY"),
            PacketError::NoMagic => f.write_str("no DHCP magic cookie"),
            PacketError::BadOption(c) => write!(f, "option {c} runs past the end of the message"),
        }
    }
}

impl std::error::Error for PacketError {}

/// One DHCP message. Options keep their order; a repeated option is concatenated on decode
/// (RFC 3396), so each code appears once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Message {
    /// A BOOTREQUEST of `kind` from `mac`.
    pub fn request(kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
        Message {
            op: 1,
            xid,
            secs: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options: vec![(opt::MESSAGE_TYPE, vec![kind as u8])],
        }
    }

    /// Sets (or replaces) option `code`.
    pub fn set(&mut self, code: u8, value: Vec<u8>) {
        match self.options.iter_mut().find(|(c, _)| *c == code) {
            Some(slot) => slot.1 = value,
            None => self.options.push((code, value)),
        }
    }

    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.options.iter().find(|(c, _)| *c == code).map(|(_, v)| v.as_slice())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(MIN_LEN);
        b.extend_from_slice(&[self.op, 1, 6, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&(if self.broadcast { 0x8000u16 } else { 0 }).to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(HEADER_LEN, 0); // chaddr padding, sname, file
        b.extend_from_slice(&MAGIC);
        for (code, value) in &self.options {
            // Values over 255 bytes are split into several instances (RFC 3396).
            let mut chunks = value.chunks(255).peekable();
            if chunks.peek().is_none() {
                b.extend_from_slice(&[*code, 0]);
            }
            for c in chunks {
                b.push(*code);
                b.push(c.len() as u8);
                b.extend_from_slice(c);
            }
        }
        b.push(opt::END);
        if b.len() < MIN_LEN {
            b.resize(MIN_LEN, 0);
        }
        b
    }

    pub fn decode(buf: &[u8]) -> Result<Message, PacketError> {
        if buf.len() < HEADER_LEN + 4 {
            return Err(PacketError::Short(buf.len()));
        }
        if buf[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
            return Err(PacketError::NoMagic);
        }
        let ip = |o: usize| Ipv4Addr::new(buf[o], buf[o + 1], buf[o + 2], buf[o + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&buf[28..34]);
        let mut m = Message {
            op: buf[0],
            xid: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
            secs: u16::from_be_bytes([buf[8], buf[9]]),
            broadcast: buf[10] & 0x80 != 0,
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr,
            options: Vec::new(),
        };
        parse_options(&buf[HEADER_LEN + 4..], &mut m.options)?;
        // Option overload (52): more options in the file (1) and/or sname (2) fields.
        if let Some(&[o]) = m.get(opt::OVERLOAD) {
            if o & 1 != 0 {
                parse_options(&buf[108..236], &mut m.options)?;
            }
            if o & 2 != 0 {
                parse_options(&buf[44..108], &mut m.options)?;
            }
        }
        Ok(m)
    }

    pub fn message_type(&self) -> Option<MessageType> {
        match self.get(opt::MESSAGE_TYPE) {
            Some(&[t]) => MessageType::from_raw(t),
            _ => None,
        }
    }

    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.get(opt::SERVER_ID).and_then(ipv4)
    }

    fn seconds(&self, code: u8) -> Option<u32> {
        match self.get(code)? {
            &[a, b, c, d] => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }

    pub fn lease_time(&self) -> Option<u32> {
        self.seconds(opt::LEASE_TIME)
    }

    pub fn renewal_time(&self) -> Option<u32> {
        self.seconds(opt::RENEWAL_TIME)
    }

    pub fn rebinding_time(&self) -> Option<u32> {
        self.seconds(opt::REBINDING_TIME)
    }

    pub fn subnet_mask(&self) -> Option<Ipv4Addr> {
        self.get(opt::SUBNET_MASK).and_then(ipv4)
    }

    pub fn routers(&self) -> Vec<Ipv4Addr> {
        ipv4_list(self.get(opt::ROUTER))
    }

    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        ipv4_list(self.get(opt::DNS))
    }

    pub fn domain_name(&self) -> Option<String> {
        let v = self.get(opt::DOMAIN_NAME)?;
        // Some servers count a trailing NUL.
        let v = v.strip_suffix(&[0]).unwrap_or(v);
        Some(String::from_utf8_lossy(v).into_owned()).filter(|s| !s.is_empty())
    }

    pub fn domain_search(&self) -> Vec<String> {
        self.get(opt::DOMAIN_SEARCH).map(decode_domain_list).unwrap_or_default()
    }

    /// Option 121, or None when absent or malformed (a malformed option is ignored whole,
    /// RFC 3442 §3 says so for an invalid destination descriptor).
    pub fn classless_routes(&self) -> Option<Vec<(Ipv4Net, Ipv4Addr)>> {
        parse_classless_routes(self.get(opt::CLASSLESS_ROUTES)?)
    }

    /// The address with its prefix: yiaddr and the subnet mask (the classful default when the
    /// server sends none, as the reference's Go client does).
    pub fn address(&self) -> Option<Ipv4Net> {
        if self.yiaddr.is_unspecified() {
            return None;
        }
        let prefix = match self.subnet_mask() {
            Some(m) => mask_prefix(m)?,
            None => classful_prefix(self.yiaddr),
        };
        Ipv4Net::new(self.yiaddr, prefix).ok()
    }

    /// The routes of the lease: option 121 alone when present and not empty (RFC 3442 §4:
    /// the router and static routes options are then ignored), else option 33's routes and a
    /// default route via the first router, as the reference's Routes(). A route whose router
    /// is 0.0.0.0 is on-link (gateway None).
    pub fn routes(&self) -> Vec<(Ipv4Net, Option<Ipv4Addr>)> {
        if let Some(list) = self.classless_routes().filter(|l| !l.is_empty()) {
            return list
                .into_iter()
                .map(|(dst, gw)| (dst, Some(gw).filter(|g| !g.is_unspecified())))
                .collect();
        }
        let mut out: Vec<_> = self
            .static_routes()
            .into_iter()
            .map(|(dst, gw)| (dst, Some(gw)))
            .collect();
        if let Some(gw) = self.routers().first() {
            out.push((Ipv4Net::default(), Some(*gw)));
        }
        out
    }

    /// Option 33 (RFC 2132 §5.8): destination and router pairs, each destination's mask its
    /// class's. Unlike the reference, which passes the address as it came (so 10.1.0.0 gives
    /// 10.1.0.0/8, which the kernel refuses), the destination is cut to its class's network,
    /// and 0.0.0.0, which the RFC forbids here, is skipped.
    pub fn static_routes(&self) -> Vec<(Ipv4Net, Ipv4Addr)> {
        let Some(b) = self.get(opt::STATIC_ROUTES) else {
            return Vec::new();
        };
        b.chunks_exact(8)
            .filter_map(|p| {
                let dst = ipv4(&p[..4])?;
                let gw = ipv4(&p[4..])?;
                if dst.is_unspecified() {
                    return None;
                }
                Some((Ipv4Net::new(dst, classful_prefix(dst)).ok()?.trunc(), gw))
            })
            .collect()
    }
}

fn parse_options(mut b: &[u8], out: &mut Vec<(u8, Vec<u8>)>) -> Result<(), PacketError> {
    while let Some((&code, rest)) = b.split_first() {
        match code {
            opt::PAD => b = rest,
            opt::END => break,
            _ => {
                let Some((&len, rest)) = rest.split_first() else {
                    return Err(PacketError::BadOption(code));
                };
                let len = len as usize;
                if rest.len() < len {
                    return Err(PacketError::BadOption(code));
                }
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some(slot) => slot.1.extend_from_slice(&rest[..len]),
                    None => out.push((code, rest[..len].to_vec())),
                }
                b = &rest[len..];
            }
        }
    }
    Ok(())
}

fn ipv4(v: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
}

fn ipv4_list(v: Option<&[u8]>) -> Vec<Ipv4Addr> {
    v.map(|v| v.chunks_exact(4).filter_map(ipv4).collect())
        .unwrap_or_default()
}

/// The prefix length of a contiguous netmask.
pub fn mask_prefix(m: Ipv4Addr) -> Option<u8> {
    let n = u32::from(m);
    let p = n.leading_ones();
    (n.checked_shl(p).unwrap_or(0) == 0).then_some(p as u8)
}

fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// RFC 3442: each route is a width (0..=32), the significant octets of the destination,
/// then the router.
pub fn parse_classless_routes(mut b: &[u8]) -> Option<Vec<(Ipv4Net, Ipv4Addr)>> {
    let mut out = Vec::new();
    while let Some((&width, rest)) = b.split_first() {
        if width > 32 {
            return None;
        }
        let n = (width as usize).div_ceil(8);
        if rest.len() < n + 4 {
            return None;
        }
        let mut dst = [0u8; 4];
        dst[..n].copy_from_slice(&rest[..n]);
        let gw = ipv4(&rest[n..n + 4])?;
        out.push((Ipv4Net::new(Ipv4Addr::from(dst), width).ok()?.trunc(), gw));
        b = &rest[n + 4..];
    }
    Some(out)
}

/// The inverse of [`parse_classless_routes`] (for tests and a test server).
pub fn encode_classless_routes(routes: &[(Ipv4Net, Ipv4Addr)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (dst, gw) in routes {
        let w = dst.prefix_len();
        b.push(w);
        b.extend_from_slice(&dst.network().octets()[..(w as usize).div_ceil(8)]);
        b.extend_from_slice(&gw.octets());
    }
    b
}

/// Option 119 (RFC 3397): DNS names in wire format, with RFC 1035 compression pointers
/// relative to the start of the option. Stops at the first malformed name.
pub fn decode_domain_list(b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let Some((name, next)) = read_name(b, pos) else { break };
        out.push(name);
        pos = next;
    }
    out
}

fn read_name(b: &[u8], start: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut pos = start;
    let mut end = None;
    let mut jumps = 0;
    loop {
        let len = *b.get(pos)? as usize;
        if len == 0 {
            end.get_or_insert(pos + 1);
            break;
        }
        if len & 0xc0 == 0xc0 {
            let ptr = ((len & 0x3f) << 8) | *b.get(pos + 1)? as usize;
            end.get_or_insert(pos + 2);
            jumps += 1;
            if jumps > 32 || ptr >= b.len() {
                return None;
            }
            pos = ptr;
            continue;
        }
        let label = b.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).into_owned());
        pos += 1 + len;
    }
    Some((labels.join("."), end?))
}

/// The reference's client identifier: type 0 then `<containerID>/<network>/<ifname>`,
/// the text cut to 254 bytes (one option's 255 minus the type octet).
pub fn client_id(container_id: &str, network: &str, ifname: &str) -> Vec<u8> {
    let mut id = format!("{container_id}/{network}/{ifname}").into_bytes();
    id.truncate(254);
    let mut v = Vec::with_capacity(id.len() + 1);
    v.push(0);
    v.extend_from_slice(&id);
    v
}

fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut it = part.chunks(2);
        for c in &mut it {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            sum += u32::from(w);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + UDP datagram around `payload`, for a packet socket (the kernel adds the
/// Ethernet header): the client has no address yet, so it cannot use a UDP socket's stack.
pub fn frame_udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = (8 + payload.len()) as u16;
    let total = 20 + udp_len;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut udp = [0u8; 8];
    udp[0..2].copy_from_slice(&sport.to_be_bytes());
    udp[2..4].copy_from_slice(&dport.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 17;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut uc = checksum(&[&pseudo, &udp, payload]);
    if uc == 0 {
        uc = 0xffff;
    }
    udp[6..8].copy_from_slice(&uc.to_be_bytes());
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&ip);
    out.extend_from_slice(&udp);
    out.extend_from_slice(payload);
    out
}

/// The UDP payload of an IPv4 datagram for `dport` (source address and payload), or None for
/// anything else: a packet socket sees every IPv4 packet on the link.
pub fn unframe_udp(b: &[u8], dport: u16) -> Option<(Ipv4Addr, &[u8])> {
    let ihl = usize::from(b.first()? & 0x0f) * 4;
    if b[0] >> 4 != 4 || ihl < 20 || b.len() < ihl + 8 || b[9] != 17 {
        return None;
    }
    // Fragments are not reassembled: DHCP replies fit in one packet.
    if u16::from_be_bytes([b[6], b[7]]) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([b[2], b[3]])).min(b.len());
    let udp = &b[ihl..total];
    if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != dport {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]])).clamp(8, udp.len());
    Some((Ipv4Addr::new(b[12], b[13], b[14], b[15]), &udp[8..ulen]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn reply(kind: MessageType) -> Message {
        let mut m = Message::request(kind, 0x1234_5678, [2, 0, 0, 0, 0, 1]);
        m.op = 2;
        m.yiaddr = Ipv4Addr::new(10, 94, 0, 60);
        m
    }

    #[test]
    fn encode_decode_round_trip() {
        let mut m = Message::request(MessageType::Discover, 0xdead_beef, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        m.broadcast = true;
        m.secs = 3;
        m.set(opt::CLIENT_ID, client_id("c1", "dh", "eth0"));
        m.set(opt::PARAMS, vec![1, 3, 6]);
        let b = m.encode();
        assert_eq!(b.len(), MIN_LEN);
        assert_eq!(&b[0..4], &[1, 1, 6, 0]);
        assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(&b[10..12], &[0x80, 0]);
        assert_eq!(&b[236..240], &MAGIC);
        assert_eq!(&b[240..243], &[53, 1, 1]);
        let d = Message::decode(&b).unwrap();
        assert_eq!(d, m);
        assert_eq!(d.message_type(), Some(MessageType::Discover));
    }

    #[test]
    fn client_id_is_the_references() {
        // From the reference daemon against dnsmasq: 00:63:31:2f:64:68:2f:65:74:68:30.
        assert_eq!(client_id("c1", "dh", "eth0"), b"\0c1/dh/eth0");
        let long = "x".repeat(300);
        let id = client_id(&long, "n", "eth0");
        assert_eq!(id.len(), 255);
        assert_eq!(id[0], 0);
    }

    #[test]
    fn long_option_is_split_and_joined() {
        let mut m = Message::request(MessageType::Request, 1, [0; 6]);
        m.set(opt::DOMAIN_SEARCH, vec![7; 300]);
        let b = m.encode();
        let d = Message::decode(&b).unwrap();
        assert_eq!(d.get(opt::DOMAIN_SEARCH).unwrap().len(), 300);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert_eq!(Message::decode(&[0; 10]), Err(PacketError::Short(10)));
        let mut b = Message::request(MessageType::Discover, 1, [0; 6]).encode();
        b[236] = 0;
        assert_eq!(Message::decode(&b), Err(PacketError::NoMagic));
        let mut b = Message::request(MessageType::Discover, 1, [0; 6]).encode();
        b.truncate(243);
        b.extend_from_slice(&[51, 4, 0]); // lease time cut short
        assert_eq!(Message::decode(&b), Err(PacketError::BadOption(51)));
    }

    #[test]
    fn overloaded_file_field_holds_options() {
        let mut m = reply(MessageType::Ack);
        m.set(opt::OVERLOAD, vec![1]);
        let mut b = m.encode();
        b[108..114].copy_from_slice(&[51, 4, 0, 0, 0x0e, 0x10]);
        b[114] = opt::END;
        assert_eq!(Message::decode(&b).unwrap().lease_time(), Some(3600));
    }

    #[test]
    fn lease_fields() {
        let mut m = reply(MessageType::Ack);
        m.set(opt::SERVER_ID, vec![10, 94, 0, 1]);
        m.set(opt::LEASE_TIME, 120u32.to_be_bytes().to_vec());
        m.set(opt::RENEWAL_TIME, 60u32.to_be_bytes().to_vec());
        m.set(opt::REBINDING_TIME, 105u32.to_be_bytes().to_vec());
        m.set(opt::SUBNET_MASK, vec![255, 255, 255, 0]);
        m.set(opt::ROUTER, vec![10, 94, 0, 1, 10, 94, 0, 2]);
        m.set(opt::DNS, vec![10, 94, 0, 1, 1, 1, 1, 1]);
        m.set(opt::DOMAIN_NAME, b"example.com\0".to_vec());
        let d = Message::decode(&m.encode()).unwrap();
        assert_eq!(d.message_type(), Some(MessageType::Ack));
        assert_eq!(d.server_id(), Some(Ipv4Addr::new(10, 94, 0, 1)));
        assert_eq!(
            (d.lease_time(), d.renewal_time(), d.rebinding_time()),
            (Some(120), Some(60), Some(105))
        );
        assert_eq!(d.address(), Some(net("10.94.0.60/24")));
        assert_eq!(d.routers(), [Ipv4Addr::new(10, 94, 0, 1), Ipv4Addr::new(10, 94, 0, 2)]);
        assert_eq!(d.dns_servers().len(), 2);
        assert_eq!(d.domain_name().as_deref(), Some("example.com"));
        assert_eq!(d.routes(), [(net("0.0.0.0/0"), Some(Ipv4Addr::new(10, 94, 0, 1)))]);
    }

    #[test]
    fn address_without_mask_is_classful() {
        let m = reply(MessageType::Ack);
        assert_eq!(m.address(), Some(net("10.94.0.60/8")));
        let mut m = reply(MessageType::Ack);
        m.set(opt::SUBNET_MASK, vec![255, 0, 255, 0]);
        assert_eq!(m.address(), None, "a non-contiguous mask is no prefix");
    }

    #[test]
    fn mask_prefixes() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 128, 0)), Some(17));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
    }

    #[test]
    fn rfc3442_examples() {
        // RFC 3442 §2's examples: widths 0, 8, 9, 24, 32 and their significant octets.
        let b = [
            0, 10, 0, 0, 1, // default via 10.0.0.1
            8, 10, 10, 0, 0, 2, // 10/8 via 10.0.0.2
            9, 129, 0, 10, 0, 0, 3, // 129.0/9
            24, 192, 168, 1, 0, 0, 0, 0, // 192.168.1/24 on-link
            32, 1, 2, 3, 4, 10, 0, 0, 5,
        ];
        let r = parse_classless_routes(&b).unwrap();
        assert_eq!(
            r,
            [
                (net("0.0.0.0/0"), Ipv4Addr::new(10, 0, 0, 1)),
                (net("10.0.0.0/8"), Ipv4Addr::new(10, 0, 0, 2)),
                (net("129.0.0.0/9"), Ipv4Addr::new(10, 0, 0, 3)),
                (net("192.168.1.0/24"), Ipv4Addr::UNSPECIFIED),
                (net("1.2.3.4/32"), Ipv4Addr::new(10, 0, 0, 5)),
            ]
        );
        assert_eq!(encode_classless_routes(&r), b);
    }

    #[test]
    fn rfc3442_malformed_is_ignored_whole() {
        assert_eq!(parse_classless_routes(&[33, 1, 2, 3, 4, 5, 0, 0, 0, 1]), None);
        assert_eq!(parse_classless_routes(&[24, 192, 168, 1, 10, 0]), None);
        assert_eq!(parse_classless_routes(&[]), Some(vec![]));
    }

    #[test]
    fn classless_routes_win_over_router() {
        let mut m = reply(MessageType::Ack);
        m.set(opt::ROUTER, vec![10, 94, 0, 1]);
        m.set(
            opt::CLASSLESS_ROUTES,
            encode_classless_routes(&[
                (net("10.94.0.0/24"), Ipv4Addr::UNSPECIFIED),
                (net("0.0.0.0/0"), Ipv4Addr::new(10, 94, 0, 254)),
            ]),
        );
        assert_eq!(
            m.routes(),
            [
                (net("10.94.0.0/24"), None),
                (net("0.0.0.0/0"), Some(Ipv4Addr::new(10, 94, 0, 254)))
            ]
        );
        // A malformed 121 falls back to the router option, and so does an empty one.
        m.set(opt::CLASSLESS_ROUTES, vec![40]);
        assert_eq!(m.routes(), [(net("0.0.0.0/0"), Some(Ipv4Addr::new(10, 94, 0, 1)))]);
        m.set(opt::CLASSLESS_ROUTES, vec![]);
        assert_eq!(m.routes(), [(net("0.0.0.0/0"), Some(Ipv4Addr::new(10, 94, 0, 1)))]);
    }

    /// Option 33 without 121: its routes with classful masks, then the default route (the
    /// reference's order); with 121 it is ignored.
    #[test]
    fn static_routes_when_no_classless_routes() {
        let mut m = reply(MessageType::Ack);
        m.set(opt::ROUTER, vec![10, 94, 0, 1]);
        m.set(
            opt::STATIC_ROUTES,
            [
                [10, 1, 0, 0, 10, 94, 0, 2],    // class A, host bits cut
                [172, 16, 0, 0, 10, 94, 0, 3],  // class B
                [192, 168, 7, 0, 10, 94, 0, 4], // class C
                [0, 0, 0, 0, 10, 94, 0, 5],     // forbidden
                [224, 1, 2, 3, 10, 94, 0, 6],   // class D: /24 as Go's DefaultMask
            ]
            .concat()
            .into_iter()
            .chain([1, 2, 3]) // a trailing partial pair is ignored
            .collect(),
        );
        let gw = |x| Some(Ipv4Addr::new(10, 94, 0, x));
        assert_eq!(
            m.routes(),
            [
                (net("10.0.0.0/8"), gw(2)),
                (net("172.16.0.0/16"), gw(3)),
                (net("192.168.7.0/24"), gw(4)),
                (net("224.1.2.0/24"), gw(6)),
                (net("0.0.0.0/0"), gw(1)),
            ]
        );
        m.set(
            opt::CLASSLESS_ROUTES,
            encode_classless_routes(&[(net("10.9.0.0/16"), Ipv4Addr::new(10, 94, 0, 9))]),
        );
        assert_eq!(m.routes(), [(net("10.9.0.0/16"), gw(9))]);
    }

    #[test]
    fn domain_search_with_compression() {
        // RFC 3397 §2's example: eng.apple.com, marketing.apple.com (pointer to offset 4).
        let b = [
            3, b'e', b'n', b'g', 5, b'a', b'p', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 9, b'm', b'a', b'r', b'k',
            b'e', b't', b'i', b'n', b'g', 0xc0, 4,
        ];
        assert_eq!(decode_domain_list(&b), ["eng.apple.com", "marketing.apple.com"]);
        // A pointer loop ends the list instead of hanging.
        assert!(decode_domain_list(&[0xc0, 0]).is_empty());
        assert!(decode_domain_list(&[5, b'a']).is_empty());
    }

    #[test]
    fn udp_framing_round_trip_and_checksums() {
        let payload = Message::request(MessageType::Discover, 7, [1; 6]).encode();
        let f = frame_udp(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            CLIENT_PORT,
            SERVER_PORT,
            &payload,
        );
        assert_eq!(f.len(), 28 + payload.len());
        assert_eq!(checksum(&[&f[..20]]), 0, "IP header checksum verifies");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[12..20]);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&f[24..26]);
        assert_eq!(checksum(&[&pseudo, &f[20..]]), 0, "UDP checksum verifies");
        let (src, p) = unframe_udp(&f, SERVER_PORT).unwrap();
        assert_eq!(src, Ipv4Addr::UNSPECIFIED);
        assert_eq!(p, payload.as_slice());
        assert!(unframe_udp(&f, CLIENT_PORT).is_none(), "other port");
        let mut tcp = f.clone();
        tcp[9] = 6;
        assert!(unframe_udp(&tcp, SERVER_PORT).is_none(), "not UDP");
        let mut frag = f.clone();
        frag[6] = 0x20; // more fragments
        assert!(unframe_udp(&frag, SERVER_PORT).is_none());
        assert!(unframe_udp(&f[..24], SERVER_PORT).is_none());
    }

    #[test]
    fn odd_length_checksum() {
        // 0x0102 + 0x0300 = 0x0402 -> !0x0402
        assert_eq!(checksum(&[&[1, 2, 3]]), !0x0402);
    }
}
