//! Closing NETLINK_NETFILTER sockets (nf_tables and ctnetlink alike) after the caller has gone.
//!
//! Closing (or exiting with) a netfilter netlink socket runs the netlink release notifier,
//! and nf_tables' handler (`nft_rcv_nl_event`) flushes the transaction destroy work while
//! holding the netns' commit mutex; that work starts with `synchronize_rcu()`, so after any
//! commit (anyone's: the destroy list is shared) close(2) sleeps for the rest of an RCU
//! grace period, ~8–13 ms here (perf: close → netlink_release → nft_rcv_nl_event →
//! __flush_work; the kworker sits in nf_tables_trans_destroy_work → synchronize_rcu).
//!
//! Everything committed is already in effect when the ack arrives; what the close waits
//! for is only the kernel freeing retired objects. So when deferral is enabled, sockets are
//! kept open and [`finish`] — called after the output is written — forks a child that keeps
//! only those sockets (stdin/stdout/stderr and every other descriptor closed, so no lock and
//! no pipe outlives the parent), waits one grace period *without* the commit mutex
//! (membarrier(MEMBARRIER_CMD_GLOBAL) is a plain synchronize_rcu) so that its close finds
//! the work done and does not stall the next process's commit, closes them and exits.
//! The parent exits at once; its own exit does not release the sockets (the child holds them).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ENABLED: AtomicBool = AtomicBool::new(false);
static HELD: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

/// From now on [`close`] defers; only for a short-lived process that calls [`finish`].
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Close `fd` now, or keep it for [`finish`] when deferral is enabled.
pub fn close(fd: RawFd) {
    if ENABLED.load(Ordering::Relaxed) {
        if let Ok(mut h) = HELD.lock() {
            h.push(fd);
            return;
        }
    }
    // SAFETY: the caller gives up ownership of fd.
    unsafe { nix::libc::close(fd) };
}

/// Hand the deferred sockets to a child that closes them after this process has exited.
/// Call last, after stdout is flushed; without deferred sockets it does nothing.
pub fn finish() {
    let fds = match HELD.lock() {
        Ok(mut h) => std::mem::take(&mut *h),
        Err(_) => return,
    };
    if fds.is_empty() {
        return;
    }
    let mut fds = fds;
    fds.sort_unstable();
    // SAFETY: fork in a process whose other threads (if any) are finished; the child only
    // makes async-signal-safe system calls and leaves with _exit.
    match unsafe { nix::libc::fork() } {
        0 => child(&fds),
        -1 => {
            // No child: close here and pay the wait.
            for fd in fds {
                // SAFETY: we own these descriptors.
                unsafe { nix::libc::close(fd) };
            }
        }
        _ => {} // parent: the caller exits; the child holds the sockets
    }
}

/// `keep` is sorted.
fn child(keep: &[RawFd]) -> ! {
    use nix::libc;
    // Close every descriptor but the sockets: stdout's EOF, flocks and netns handles must
    // not wait for this child.
    let mut from: u32 = 0;
    for &fd in keep {
        if fd as u32 > from {
            close_range(from, fd as u32 - 1);
        }
        from = fd as u32 + 1;
    }
    close_range(from, u32::MAX);
    // SAFETY: plain system calls; no memory is shared with anything else.
    unsafe {
        libc::setsid();
        const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0);
        for &fd in keep {
            libc::close(fd);
        }
        libc::_exit(0)
    }
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range only closes descriptors of this (single-threaded) child.
    let r = unsafe { nix::libc::syscall(nix::libc::SYS_close_range, first, last, 0) };
    if r != 0 {
        // Kernels before 5.9: close one by one up to the soft limit.
        let mut rl = nix::libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 1024,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        unsafe { nix::libc::getrlimit(nix::libc::RLIMIT_NOFILE, &mut rl) };
        let max = rl.rlim_cur.min(65536) as u32;
        for fd in first..=last.min(max) {
            // SAFETY: as above.
            unsafe { nix::libc::close(fd as i32) };
        }
    }
}

/// Owns a netfilter netlink socket (nf_tables, ctnetlink: both run the notifier) and hands
/// it to [`close`] when dropped.
pub struct Deferred<T: std::os::fd::IntoRawFd>(Option<T>);

impl<T: std::os::fd::IntoRawFd> Deferred<T> {
    pub fn new(t: T) -> Self {
        Deferred(Some(t))
    }
}

impl<T: std::os::fd::IntoRawFd> std::ops::Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until drop")
    }
}

impl<T: std::os::fd::IntoRawFd> Drop for Deferred<T> {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            close(t.into_raw_fd());
        }
    }
}
