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

/// `argv[0]` of this executable when it runs only to create one device ([`helper_main`]).
pub const HELPER: &str = "cni-multi-tuntap-helper";

/// [`create`] in a child process: `exe` (this executable) run as [`HELPER`], in the calling
/// thread's network namespace. With `label`, the child first writes it to its
/// `/proc/thread-self/attr/exec`, so the program it becomes runs in that SELinux context and the
/// kernel labels the device it makes with it (a tun device takes its creator's context): what
/// go-selinux's SetExecLabel before `ip tuntap add` does in the reference's tap plugin.
pub fn create_in_child(exe: &std::path::Path, opts: &TunTap, label: Option<&str>) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let what = || format!("create tap {:?} in a labelled process", opts.name);
    let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    let flag = |b: bool| if b { "1" } else { "0" };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg0(HELPER)
        .args([
            opts.name.as_str(),
            flag(opts.tun),
            flag(opts.multi_queue),
            flag(opts.vnet_hdr),
            flag(opts.pi),
        ])
        .args([opt(opts.owner), opt(opts.group)])
        .stdin(std::process::Stdio::null());
    if let Some(label) = label {
        let label = label.as_bytes().to_vec();
        // SAFETY: runs in the forked child before exec; open/write/close are async-signal-safe
        // and nothing is allocated (the label was copied before the fork).
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(
                    c"/proc/thread-self/attr/exec".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, label.as_ptr().cast(), label.len());
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n < 0 {
                    return Err(err);
                }
                Ok(())
            });
        }
    }
    // A failed label write comes back from spawn as its errno (EINVAL: a context the policy
    // does not know).
    let out = cmd.output().map_err(|e| Error::io(what(), e))?;
    if !out.status.success() {
        return Err(Error::other(what(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The [`HELPER`] process: `NAME TUN MULTI_QUEUE VNET_HDR PI OWNER GROUP` (flags 0/1, `-` for
/// no owner or group); prints the device's name. Exit status 1 with the error on stderr.
pub fn helper_main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Option<TunTap> {
        let [name, tun, mq, vnet, pi, owner, group] = args.as_slice() else {
            return None;
        };
        let flag = |s: &str| match s {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        };
        let id = |s: &str| if s == "-" { Some(None) } else { s.parse().ok().map(Some) };
        Some(TunTap {
            name: name.clone(),
            tun: flag(tun)?,
            multi_queue: flag(mq)?,
            vnet_hdr: flag(vnet)?,
            pi: flag(pi)?,
            owner: id(owner)?,
            group: id(group)?,
        })
    })();
    let Some(opts) = parsed else {
        eprintln!("{HELPER}: bad arguments {args:?}");
        return 2;
    };
    match create(&opts) {
        Ok(name) => {
            println!("{name}");
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
