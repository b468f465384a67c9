//! The one way to open a `NETLINK_NETFILTER` socket, which nftables (`nft`) and
//! ctnetlink (`conntrack`) share: here, or in another network namespace.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use neli::consts::socket::NlFamily;
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::netlink::wire::{attrs, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS, NLMSG_HDRLEN, NLM_F_ACK_TLVS, NLM_F_CAPPED};
use super::{Error, NetNs, Result};

/// A netfilter socket in the calling thread's network namespace. `what` names the caller's
/// operation in errors; `timeout` bounds every receive so that a missing ack can never hang it.
pub(crate) fn open_socket(what: &str, timeout: Duration) -> Result<NlSocket> {
    let sock = NlSocket::connect(NlFamily::Netfilter, None, Groups::empty()).map_err(|e| Error::io(what, e))?;
    // Extended acks carry the kernel's reason and the offending attribute; capped acks keep
    // error replies small (they would otherwise echo each whole request).
    sock.enable_ext_ack(true).map_err(|e| Error::io(what, e))?;
    let one: nix::libc::c_int = 1;
    // SAFETY: plain setsockopt on a valid fd with a c_int option value.
    unsafe {
        nix::libc::setsockopt(
            sock.as_raw_fd(),
            nix::libc::SOL_NETLINK,
            nix::libc::NETLINK_CAP_ACK,
            &one as *const _ as *const nix::libc::c_void,
            std::mem::size_of_val(&one) as u32,
        );
    }
    let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
    // SAFETY: the fd is owned by `sock`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| Error::nix(what, e))?;
    Ok(sock)
}

/// [`open_socket`] inside `ns`: the thread enters `ns`, opens the socket (which stays bound to
/// `ns`) and switches back, as [`super::Netlink::in_netns`] does for rtnetlink.
pub(crate) fn open_socket_in(ns: &NetNs, what: &str, timeout: Duration) -> Result<NlSocket> {
    let _guard = ns.enter()?;
    open_socket(what, timeout)
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
