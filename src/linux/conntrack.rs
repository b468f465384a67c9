//! Conntrack entries over `NETLINK_NETFILTER` (ctnetlink): delete the entries of one
//! destination port, as `conntrack -D -p udp --dport N` does, without the conntrack binary.
//!
//! The kernel cannot delete by a filter (a flush with a tuple filter is refused), so the
//! table of one address family is dumped, matched here on the original tuple, and each match
//! deleted by its tuple. [`Conntrack`] is a ctnetlink socket in the namespace it was opened in.

use std::time::Duration;

use nix::sys::socket::MsgFlags;

use super::netfilter::{self, NfProto, NfSocket};
use super::netlink::wire::{
    attrs, NLA_F_NESTED, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use super::{Error, Result};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;

fn msg(ty: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = NLMSG_HDRLEN + 4 + attrs.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&(len as u32).to_ne_bytes());
    v.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | ty).to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: family, version 0, res_id 0
    v.extend_from_slice(attrs);
    v
}

fn put_attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize((buf.len() + 3) & !3, 0);
}

fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf).find(|(t, _)| *t == ty).map(|(_, p)| p)
}

/// (type, seq, body, flags) of each netlink message in a receive buffer.
fn messages(buf: &[u8]) -> Vec<(u16, u32, &[u8], u16)> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
        out.push((ty, seq, &buf[off + NLMSG_HDRLEN..off + len], flags));
        off += (len + 3) & !3;
    }
    out
}

const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A ctnetlink socket, bound to the network namespace it was opened in.
pub struct Conntrack {
    // A netfilter socket: its close may wait for nf_tables (see late_close).
    sock: NfSocket,
}

/// [`Conntrack::delete_by_dst_port`] in the calling thread's network namespace.
pub fn delete_by_dst_port(family: NfProto, l4proto: u8, dport: u16) -> Result<usize> {
    Conntrack::open()?.delete_by_dst_port(family, l4proto, dport)
}

impl Conntrack {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        let sock = NfSocket::open("conntrack: open NETLINK_NETFILTER socket", RECV_TIMEOUT)?;
        Ok(Conntrack { sock })
    }

    /// Deletes the conntrack entries of `family` whose original direction goes to transport
    /// protocol `l4proto` (6 tcp, 17 udp, 132 sctp) port `dport`. Returns how many it deleted;
    /// entries that vanish meanwhile are not errors.
    pub fn delete_by_dst_port(&self, family: NfProto, l4proto: u8, dport: u16) -> Result<usize> {
        let what = format!("delete conntrack entries to port {dport}/{l4proto}");
        let sock = &self.sock;
        let mut rbuf = vec![0u8; 64 * 1024];
        let mut recv = |sock: &NfSocket| -> Result<Vec<u8>> {
            let n = sock
                .recv(&mut rbuf[..], MsgFlags::empty())
                .map_err(|e| Error::io(&what, e))?;
            Ok(rbuf[..n].to_vec())
        };

        // 1. Dump and keep the original tuples (and zones) that match.
        let seq = 1;
        sock.send(&msg(
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family as u8,
            &[],
        ))
        .map_err(|e| Error::io(&what, e))?;
        let mut victims: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        'dump: loop {
            let data = recv(sock)?;
            for (ty, s, body, flags) in messages(&data) {
                if s != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => {
                        let errno = ack_errno(body);
                        let ext_ack = netfilter::parse_ack(flags, body).and_then(|a| a.1);
                        if errno == 0 {
                            break 'dump;
                        }
                        return Err(Error::kernel(&what, errno, ext_ack));
                    }
                    _ => {
                        let a = body.get(4..).unwrap_or(&[]);
                        let Some(orig) = attr(a, CTA_TUPLE_ORIG) else { continue };
                        let Some(proto) = attr(orig, CTA_TUPLE_PROTO) else {
                            continue;
                        };
                        let num = attr(proto, CTA_PROTO_NUM).and_then(|p| p.first().copied());
                        let port = attr(proto, CTA_PROTO_DST_PORT).map(|p| u16::from_be_bytes([p[0], p[1]]));
                        if num == Some(l4proto) && port == Some(dport) {
                            victims.push((orig.to_vec(), attr(a, CTA_ZONE).map(|z| z.to_vec())));
                        }
                    }
                }
            }
        }

        // 2. Delete each by its tuple.
        let mut deleted = 0;
        for (i, (orig, zone)) in victims.iter().enumerate() {
            let seq = 2 + i as u32;
            let mut a = Vec::new();
            put_attr(&mut a, CTA_TUPLE_ORIG | NLA_F_NESTED, orig);
            if let Some(z) = zone {
                put_attr(&mut a, CTA_ZONE, z);
            }
            sock.send(&msg(
                IPCTNL_MSG_CT_DELETE,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                family as u8,
                &a,
            ))
            .map_err(|e| Error::io(&what, e))?;
            loop {
                let data = recv(sock)?;
                let ack = messages(&data)
                    .into_iter()
                    .find(|(ty, s, _, _)| *ty == NLMSG_ERROR && *s == seq)
                    .map(|(_, _, body, flags)| {
                        let ext_ack = netfilter::parse_ack(flags, body).and_then(|a| a.1);
                        (ack_errno(body), ext_ack)
                    });
                match ack {
                    None => continue,
                    Some((0, _)) => {
                        deleted += 1;
                        break;
                    }
                    Some((e, _)) if e == nix::libc::ENOENT => break,
                    Some((e, ext_ack)) => return Err(Error::kernel(&what, e, ext_ack)),
                }
            }
        }
        Ok(deleted)
    }
}

/// The errno of an NLMSG_ERROR body (0 for an ack). The kernel sends 0 or a negative errno;
/// anything else (i32::MIN overflowed the negation) is read as EIO.
fn ack_errno(body: &[u8]) -> i32 {
    let code = i32::from_ne_bytes(body.get(..4).unwrap_or(&[0; 4]).try_into().unwrap());
    match code.checked_neg() {
        Some(e) if e >= 0 => e,
        _ => nix::libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trip() {
        let mut a = Vec::new();
        put_attr(&mut a, CTA_PROTO_NUM, &[17]);
        put_attr(&mut a, CTA_PROTO_DST_PORT, &8080u16.to_be_bytes());
        assert_eq!(a.len(), 16);
        assert_eq!(attr(&a, CTA_PROTO_NUM), Some(&[17u8][..]));
        assert_eq!(attr(&a, CTA_PROTO_DST_PORT), Some(&[0x1f, 0x90][..]));
        let m = msg(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST, 7, 2, &a);
        let parsed = messages(&m);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, (1 << 8) | 2);
        assert_eq!(parsed[0].1, 7);
    }

    #[test]
    fn ack_errno_of_odd_codes() {
        assert_eq!(ack_errno(&0i32.to_ne_bytes()), 0);
        assert_eq!(ack_errno(&(-2i32).to_ne_bytes()), 2);
        assert_eq!(ack_errno(&[]), 0);
        // Negating i32::MIN overflowed (the same defect the nft fuzz target found in nft acks).
        assert_eq!(ack_errno(&i32::MIN.to_ne_bytes()), nix::libc::EIO);
        assert_eq!(ack_errno(&5i32.to_ne_bytes()), nix::libc::EIO);
    }
}
