//! The one way to open a `NETLINK_NETFILTER` socket, which nftables (`nft`) and
//! ctnetlink (`conntrack`) share: here, or in another network namespace.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType};

use super::netlink::wire::{attrs, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSG_HDRLEN, NLM_F_ACK_TLVS, NLM_F_CAPPED};
use super::{late_close, Error, NetNs, Result};

/// An IP family as netfilter numbers it (`NFPROTO_IPV4`, `NFPROTO_IPV6`): the family a NAT
/// expression rewrites, the conntrack table an entry is in. Unlike
/// [`super::netlink::IpFamily`] there is no "all", and unlike [`super::nft::Family`] no table
/// family that is not an IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NfProto {
    Ipv4 = 2,
    Ipv6 = 10,
}

/// A netfilter netlink socket, bound to the network namespace it was opened in. Dropping it
/// hands the descriptor to [`late_close`]: its close may wait for nf_tables.
#[derive(Debug)]
pub(crate) struct NfSocket {
    /// Always Some; taken only by drop.
    fd: Option<OwnedFd>,
}

impl NfSocket {
    /// A socket in the calling thread's network namespace. `what` names the caller's
    /// operation in errors; `timeout` bounds every receive so that a missing ack can never
    /// hang it.
    pub(crate) fn open(what: &str, timeout: Duration) -> Result<NfSocket> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| Error::nix(what, e))?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| Error::nix(what, e))?;
        // Extended acks carry the kernel's reason and the offending attribute; capped acks
        // keep error replies small (they would otherwise echo each whole request).
        enable_netlink_opt(fd.as_fd(), libc::NETLINK_EXT_ACK).map_err(|e| Error::io(what, e))?;
        let _ = enable_netlink_opt(fd.as_fd(), libc::NETLINK_CAP_ACK);
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(|e| Error::nix(what, e))?;
        Ok(NfSocket { fd: Some(fd) })
    }

    /// [`NfSocket::open`] inside `ns`: the thread enters `ns`, opens the socket (which stays
    /// bound to `ns`) and switches back, as [`super::Netlink::in_netns`] does for rtnetlink.
    pub(crate) fn open_in(ns: &NetNs, what: &str, timeout: Duration) -> Result<NfSocket> {
        let _guard = ns.enter()?;
        NfSocket::open(what, timeout)
    }

    /// Sends `buf` (one or more whole netlink messages) in one datagram.
    pub(crate) fn send(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(socket::send(self.as_fd().as_raw_fd(), buf, MsgFlags::empty())?)
    }

    /// Receives one datagram into `buf`; with MSG_TRUNC the result is the datagram's full
    /// length even when `buf` was too small.
    pub(crate) fn recv(&self, buf: &mut [u8], flags: MsgFlags) -> io::Result<usize> {
        Ok(socket::recv(self.as_fd().as_raw_fd(), buf, flags)?)
    }
}

impl AsFd for NfSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("open until dropped").as_fd()
    }
}

impl Drop for NfSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            late_close::close(fd);
        }
    }
}

/// Turns a `SOL_NETLINK` flag on (nix has no socket option for NETLINK_EXT_ACK or
/// NETLINK_CAP_ACK).
fn enable_netlink_opt(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads size_of::<c_int>() bytes from `one`, which outlives the call;
    // the borrow keeps the descriptor open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// (errno, ext-ack message, ext-ack offset) of an NLMSG_ERROR reply with header `flags` and
/// payload `body`; errno 0 is a plain ack.
pub(crate) fn parse_ack(flags: u16, body: &[u8]) -> Option<(i32, Option<String>, Option<usize>)> {
    let code = i32::from_ne_bytes(body.get(..4)?.try_into().ok()?);
    let mut kmsg = None;
    let mut offs = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the error code comes the request's header, and its payload unless capped.
        let orig_len = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?) as usize;
        let skip = 4 + if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            orig_len
        };
        for (ty, p) in attrs(body.get((skip + 3) & !3..).unwrap_or(&[])) {
            match ty {
                NLMSGERR_ATTR_MSG => {
                    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
                    kmsg = Some(String::from_utf8_lossy(&p[..end]).into_owned());
                }
                NLMSGERR_ATTR_OFFS => offs = p.get(..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap()) as usize),
                _ => {}
            }
        }
    }
    // The kernel sends 0 or a negative errno; i32::MIN has no positive errno (and negating
    // it overflowed: found by the nft fuzz target): not an ack we can read.
    Some((code.checked_neg()?, kmsg, offs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_with_ext_ack_text_and_offset() {
        // errno -22, the capped request header, then NLMSGERR_ATTR_MSG "bad" and _OFFS 20.
        let mut body = (-22i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend_from_slice(b"bad\0");
        body.extend_from_slice(&8u16.to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_OFFS.to_ne_bytes());
        body.extend_from_slice(&20u32.to_ne_bytes());
        let got = parse_ack(NLM_F_ACK_TLVS | NLM_F_CAPPED, &body);
        assert_eq!(got, Some((22, Some("bad".to_string()), Some(20))));
        // Without the TLV flag only the errno counts; a plain ack is 0.
        assert_eq!(parse_ack(0, &body), Some((22, None, None)));
        assert_eq!(parse_ack(0, &0i32.to_ne_bytes()), Some((0, None, None)));
        assert_eq!(parse_ack(0, &[1, 2]), None);
    }
}
