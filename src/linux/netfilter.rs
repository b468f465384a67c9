//! The one way to open a `NETLINK_NETFILTER` socket, which nftables (`nft`) and
//! ctnetlink (`conntrack`) share: here, or in another network namespace.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use neli::consts::socket::NlFamily;
use neli::socket::NlSocket;
use neli::utils::Groups;

use super::{Error, NetNs, Result};

const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;

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
            SOL_NETLINK,
            NETLINK_CAP_ACK,
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
