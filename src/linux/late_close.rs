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

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use nix::libc;
use nix::unistd::ForkResult;

static ENABLED: AtomicBool = AtomicBool::new(false);
static HELD: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// From now on [`close`] defers; only for a short-lived process that calls [`finish`].
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Close `fd` now, or keep it for [`finish`] when deferral is enabled.
pub fn close(fd: OwnedFd) {
    if ENABLED.load(Ordering::Relaxed) {
        if let Ok(mut h) = HELD.lock() {
            h.push(fd);
            return;
        }
    }
    drop(fd);
}

/// Hand the deferred sockets to a child that closes them after this process has exited.
/// Call last, after stdout is flushed; without deferred sockets it does nothing.
pub fn finish() {
    let mut fds = match HELD.lock() {
        Ok(mut h) => std::mem::take(&mut *h),
        Err(_) => return,
    };
    if fds.is_empty() {
        return;
    }
    fds.sort_unstable_by_key(|fd| fd.as_raw_fd());
    // SAFETY: fork in a process whose other threads (if any) are finished; the child only
    // makes async-signal-safe system calls and leaves with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => child(fds),
        // No child: close here and pay the wait.
        Err(_) => drop(fds),
        // The caller exits; the child holds the sockets. Closing them here could make this
        // process the last holder, and its close the one that waits.
        Ok(ForkResult::Parent { .. }) => std::mem::forget(fds),
    }
}

/// `keep` is sorted.
fn child(mut keep: Vec<OwnedFd>) -> ! {
    // Close every descriptor but the sockets: stdout's EOF, flocks and netns handles must
    // not wait for this child.
    let mut from: u32 = 0;
    for fd in &keep {
        let fd = fd.as_raw_fd() as u32;
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd + 1;
    }
    close_range(from, u32::MAX);
    let _ = nix::unistd::setsid();
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    // close(2) each; the vector's buffer stays allocated (no allocator calls after fork).
    keep.drain(..).for_each(drop);
    // SAFETY: _exit ends the process at once; nothing of the parent's (atexit handlers,
    // stdio buffers) runs twice.
    unsafe { libc::_exit(0) }
}

fn close_range(first: u32, last: u32) {
    // SAFETY: close_range takes no pointers; it closes descriptors of this (single-threaded)
    // child that nothing in it uses any more.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r != 0 {
        // Kernels before 5.9: close one by one up to the soft limit.
        let mut rl = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 1024,
        };
        // SAFETY: getrlimit writes into the struct we pass (nix's needs its "resource"
        // feature, which this crate does not build).
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        let max = rl.rlim_cur.min(65536) as u32;
        for fd in first..=last.min(max) {
            let _ = nix::unistd::close(fd as i32);
        }
    }
}
