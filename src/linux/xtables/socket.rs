//! The x_tables socket options (`IPT_SO_*` / `IP6T_SO_*` on an IP socket of the calling
//! thread's network namespace), the xtables lock, and the read-change-replace loop.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::libc;
use nix::sys::stat::Mode;

use super::blob::{self, Info};
use super::model::Table;
use super::Family;
use crate::linux::{Error, Result};

/// `IPT_BASE_CTL` (= `IP6T_BASE_CTL`): GET_INFO / SET_REPLACE, GET_ENTRIES / SET_ADD_COUNTERS.
const SO_GET_INFO: i32 = 64;
const SO_GET_ENTRIES: i32 = 65;
const SO_SET_REPLACE: i32 = 64;
const SO_SET_ADD_COUNTERS: i32 = 65;
const SOL_IPV6: i32 = 41;

/// How often a replace is redone after the table changed under it (a writer that took no
/// lock). Each try re-reads the table, so this only bounds a table that never holds still.
const REPLACE_TRIES: usize = 10;

/// The lock file iptables uses (`XT_LOCK_NAME`), unless `$XTABLES_LOCKFILE` names another.
pub const LOCK_FILE: &str = "/run/xtables.lock";

fn lock_path() -> PathBuf {
    std::env::var_os("XTABLES_LOCKFILE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(LOCK_FILE))
}

/// The xtables lock, held until dropped.
#[must_use = "dropping the lock releases it at once"]
pub struct XtLock {
    _lock: Flock<File>,
}

/// Takes the lock every iptables (legacy) writer takes: an exclusive flock on
/// `/run/xtables.lock`, waited for as `iptables -w` waits.
pub fn lock() -> Result<XtLock> {
    let path = lock_path();
    let what = format!("xtables lock {}", path.display());
    let fd = nix::fcntl::open(
        &path,
        // As iptables opens it (symlinks followed: it is root's file in a root-owned /run).
        OFlag::O_CREAT | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| Error::nix(format!("open {what}"), e))?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::nix(format!("take {what}"), e))?;
    Ok(XtLock { _lock: lock })
}

/// The tables of `f` x_tables has instantiated in the calling thread's network namespace
/// (`/proc/net/ip_tables_names`); empty without x_tables in the kernel. Reading it changes
/// nothing, unlike [`read`].
pub fn registered(f: Family) -> Vec<String> {
    let path = match f {
        Family::V4 => "/proc/thread-self/net/ip_tables_names",
        Family::V6 => "/proc/thread-self/net/ip6_tables_names",
    };
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

struct Sock {
    fd: OwnedFd,
    family: Family,
}

impl Sock {
    fn open(f: Family) -> Result<Sock> {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
        let af = if f.is_v6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if cfg!(fuzzing) {
            return Err(Error::other("open x_tables socket", "no kernel access in a fuzz build"));
        }
        // iptables opens a raw socket (CAP_NET_RAW); the kernel passes the IPT_SO_* options of
        // any IPv4/IPv6 socket on to netfilter (ip_setsockopt → nf_setsockopt), and checks only
        // CAP_NET_ADMIN there, so a UDP socket does without the extra capability.
        let fd = socket(af, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::Udp)
            .map_err(|e| Error::nix(format!("open {f} x_tables socket"), e))?;
        Ok(Sock { fd, family: f })
    }

    fn level(&self) -> i32 {
        if self.family.is_v6() {
            SOL_IPV6
        } else {
            libc::SOL_IP
        }
    }

    fn get(&self, opt: i32, buf: &mut [u8]) -> std::result::Result<usize, nix::errno::Errno> {
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `buf`.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                self.level(),
                opt,
                buf.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        if r < 0 {
            return Err(nix::errno::Errno::last());
        }
        Ok(len as usize)
    }

    fn set(&self, opt: i32, buf: &[u8]) -> std::result::Result<(), nix::errno::Errno> {
        // SAFETY: the kernel reads `buf.len()` bytes; for SET_REPLACE it also writes the old
        // counters through the pointer in the header, which the caller keeps alive and sized.
        let r = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                self.level(),
                opt,
                buf.as_ptr() as *const libc::c_void,
                buf.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(nix::errno::Errno::last());
        }
        Ok(())
    }

    fn info(&self, table: &str) -> Result<Info> {
        let mut b = Info::request(table);
        self.get(SO_GET_INFO, &mut b).map_err(|e| {
            let why = if e == nix::errno::Errno::EPERM {
                " (needs CAP_NET_ADMIN)"
            } else {
                ""
            };
            Error::nix(format!("read {} x_tables table {table}{why}", self.family), e)
        })?;
        Info::parse(&b).ok_or_else(|| Error::other(format!("read {} table {table}", self.family), "short reply"))
    }

    /// The table's info and decoded entries, re-read while they change under the read.
    fn read(&self, table: &str) -> Result<(Info, Table)> {
        let what = || format!("read {} x_tables table {table}", self.family);
        for _ in 0..REPLACE_TRIES {
            let info = self.info(table)?;
            let mut b = vec![0u8; blob::GET_ENTRIES_HDR + info.size as usize];
            b[..blob::TABLE_NAME_LEN].copy_from_slice(&Info::request(table)[..blob::TABLE_NAME_LEN]);
            b[32..36].copy_from_slice(&info.size.to_ne_bytes());
            match self.get(SO_GET_ENTRIES, &mut b) {
                // The table's size changed since GET_INFO.
                Err(nix::errno::Errno::EAGAIN) => continue,
                Err(e) => return Err(Error::nix(what(), e)),
                Ok(_) => {}
            }
            let t =
                blob::decode(self.family, &info, &b[blob::GET_ENTRIES_HDR..]).map_err(|e| Error::other(what(), e))?;
            return Ok((info, t));
        }
        Err(Error::other(what(), "the table kept changing while it was read"))
    }

    /// Replaces the table read as `old` with `t`; then hands the old entries' counters to the
    /// entries that came from them. `Err(EAGAIN)` when the table changed since it was read.
    fn replace(&self, t: &Table, old: &Info) -> std::result::Result<(), ReplaceError> {
        let enc = blob::encode(t).map_err(ReplaceError::Model)?;
        let mut counters = vec![0u8; old.num_entries as usize * blob::COUNTERS_LEN];
        let mut b = blob::replace_header(t, &enc, old.num_entries, counters.as_mut_ptr());
        b.extend_from_slice(&enc.blob);
        self.set(SO_SET_REPLACE, &b).map_err(ReplaceError::Kernel)?;
        let add = blob::add_counters(t, &enc, &counters);
        if let Err(e) = self.set(SO_SET_ADD_COUNTERS, &add) {
            // The rules are in; only the counts of the old entries are lost. Not a failure of
            // the change itself (iptables reports it the same way, after committing).
            eprintln!(
                "x_tables: {} table {}: the old counters could not be restored: {}",
                self.family,
                t.name,
                crate::linux::error::errno_text(e as i32)
            );
        }
        Ok(())
    }
}

enum ReplaceError {
    Model(String),
    Kernel(nix::errno::Errno),
}

/// Reads a table of the calling thread's netns. The kernel instantiates a table it has not
/// made in this namespace yet (as `iptables-legacy -L` does): see [`read_if_registered`].
pub fn read(f: Family, table: &str) -> Result<Table> {
    Ok(Sock::open(f)?.read(table)?.1)
}

/// Whether a registered table holds anything beyond its built-in chains with ACCEPT
/// policies ([`Table::in_use`]). More entries than built-in chains (+1, the table's end) means
/// rules or user chains, told by `IPT_SO_GET_INFO` alone: a large table (kube-proxy's nat) is
/// not read for it. An unregistered table is not in use (and stays unregistered).
pub fn in_use(f: Family, table: &str) -> Result<bool> {
    if !registered(f).iter().any(|t| t == table) {
        return Ok(false);
    }
    let sock = Sock::open(f)?;
    let info = sock.info(table)?;
    if info.num_entries > info.valid_hooks.count_ones() + 1 {
        return Ok(true);
    }
    Ok(sock.read(table)?.1.in_use())
}

/// [`read`], but only a table that is already registered ([`registered`]); `None` otherwise.
pub fn read_if_registered(f: Family, table: &str) -> Result<Option<Table>> {
    if !registered(f).iter().any(|t| t == table) {
        return Ok(None);
    }
    read(f, table).map(Some)
}

/// Changes one table as iptables-legacy does, under [`lock`]: read it, let `change` edit the
/// model, write it back whole. `change` returns whether it changed anything (nothing is
/// written otherwise) or an error that stops the change. When another writer that took no lock
/// changed the table in between, the kernel refuses the replace and it is all redone from a
/// fresh read. Returns whether the table was written.
pub fn modify(
    f: Family,
    table: &str,
    change: impl FnMut(&mut Table) -> std::result::Result<bool, String>,
) -> Result<bool> {
    let _lock = lock()?;
    modify_locked(&_lock, f, table, change)
}

/// [`modify`] for a caller already holding the lock (several tables changed as one step).
pub fn modify_locked(
    _lock: &XtLock,
    f: Family,
    table: &str,
    mut change: impl FnMut(&mut Table) -> std::result::Result<bool, String>,
) -> Result<bool> {
    let sock = Sock::open(f)?;
    let what = || format!("replace {f} x_tables table {table}");
    for _ in 0..REPLACE_TRIES {
        let (info, mut t) = sock.read(table)?;
        if !change(&mut t).map_err(|e| Error::other(what(), e))? {
            return Ok(false);
        }
        match sock.replace(&t, &info) {
            Ok(()) => return Ok(true),
            Err(ReplaceError::Kernel(nix::errno::Errno::EAGAIN)) => continue,
            Err(ReplaceError::Kernel(e)) => {
                let hint = if e == nix::errno::Errno::EINVAL {
                    " (the kernel refused the table; its log says why)"
                } else {
                    ""
                };
                return Err(Error::nix(format!("{}{hint}", what()), e));
            }
            Err(ReplaceError::Model(m)) => return Err(Error::other(what(), m)),
        }
    }
    Err(Error::other(
        what(),
        "the table kept changing between read and replace (a writer that does not take the xtables lock?)",
    ))
}
