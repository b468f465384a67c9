//! Persistent tun/tap devices via /dev/net/tun, created in the calling thread's network
//! namespace (enter one with [`NetNs::enter`](super::NetNs::enter) first).

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use nix::libc;

use super::{Error, Result};

const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

nix::ioctl_readwrite_bad!(
    tunsetiff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    IfReq
);
nix::ioctl_write_int_bad!(
    tunsetpersist,
    nix::request_code_write!(b'T', 203, std::mem::size_of::<libc::c_int>())
);
nix::ioctl_write_int_bad!(
    tunsetowner,
    nix::request_code_write!(b'T', 204, std::mem::size_of::<libc::c_int>())
);
nix::ioctl_write_int_bad!(
    tunsetgroup,
    nix::request_code_write!(b'T', 206, std::mem::size_of::<libc::c_int>())
);

/// Options for [`create`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TunTap {
    /// Name, or a template like `tap%d`.
    pub name: String,
    /// Tun (layer 3) instead of tap (layer 2).
    pub tun: bool,
    /// IFF_MULTI_QUEUE.
    pub multi_queue: bool,
    /// IFF_VNET_HDR.
    pub vnet_hdr: bool,
    /// Keep the packet-information header (no IFF_NO_PI).
    pub pi: bool,
    /// Owning uid.
    pub owner: Option<u32>,
    /// Owning gid.
    pub group: Option<u32>,
}

/// Creates a persistent tun/tap device (IFF_NO_PI unless `pi`) and returns the name the
/// kernel gave it.
pub fn create(opts: &TunTap) -> Result<String> {
    let what = || format!("create {} {:?}", if opts.tun { "tun" } else { "tap" }, opts.name);
    if opts.name.len() >= libc::IFNAMSIZ {
        return Err(Error::kernel(what(), libc::EINVAL, Some("name too long".into())));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io(what(), e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: if opts.tun { IFF_TUN } else { IFF_TAP } | if opts.pi { 0 } else { IFF_NO_PI },
        _pad: [0; 22],
    };
    if opts.vnet_hdr {
        req.flags |= IFF_VNET_HDR;
    }
    if opts.multi_queue {
        req.flags |= IFF_MULTI_QUEUE;
    }
    req.name[..opts.name.len()].copy_from_slice(opts.name.as_bytes());
    // SAFETY: `f` is open /dev/net/tun for the whole block and req is a properly sized,
    // initialised ifreq.
    unsafe {
        tunsetiff(f.as_raw_fd(), &mut req).map_err(|e| Error::nix(what(), e))?;
        if let Some(uid) = opts.owner {
            tunsetowner(f.as_raw_fd(), uid as libc::c_int).map_err(|e| Error::nix(what(), e))?;
        }
        if let Some(gid) = opts.group {
            tunsetgroup(f.as_raw_fd(), gid as libc::c_int).map_err(|e| Error::nix(what(), e))?;
        }
        // Persist so the device outlives this fd; it is then removed with a link delete.
        tunsetpersist(f.as_raw_fd(), 1).map_err(|e| Error::nix(what(), e))?;
    }
    let end = req.name.iter().position(|&c| c == 0).unwrap_or(req.name.len());
    Ok(String::from_utf8_lossy(&req.name[..end]).into_owned())
}
