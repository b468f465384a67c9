//! The kernel layer must never start threads (setns moves only the calling thread, so a
//! helper thread would silently act in the wrong namespace). libtest runs tests on its own
//! threads, so the work happens in a forked child, which starts with exactly one thread:
//! if anything (e.g. neli's NlRouter) spawned one, the child would see Threads: 2.

use std::os::fd::AsFd;

use std::io::Write;

use crate::common::rig::TestNs;
use cni_multi::linux::netlink::{addr::IpFamily, LinkSpec, Route, VethPeer};
use cni_multi::linux::{NetNs, Netlink};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult};

fn threads() -> u32 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn work(a: &TestNs, b: &TestNs) -> Result<(), String> {
    let start = NetNs::current().map_err(|e| e.to_string())?;
    let ha = NetNs::open(a.path()).map_err(|e| e.to_string())?;
    let hb = NetNs::open(b.path()).map_err(|e| e.to_string())?;
    let mut nla = Netlink::in_netns(&ha).map_err(|e| e.to_string())?;
    let mut nlb = Netlink::in_netns(&hb).map_err(|e| e.to_string())?;
    nla.create_link(&LinkSpec::veth("t0", VethPeer::new("t1").netns(hb.as_fd())).up())
        .map_err(|e| e.to_string())?;
    let t0 = nla.link_by_name("t0").map_err(|e| e.to_string())?.ok_or("t0")?;
    let t1 = nlb.link_by_name("t1").map_err(|e| e.to_string())?.ok_or("t1")?;
    nla.add_addr(t0.index, "10.77.0.1/24".parse().unwrap(), false)
        .map_err(|e| e.to_string())?;
    nlb.add_addr(t1.index, "10.77.0.2/24".parse().unwrap(), false)
        .map_err(|e| e.to_string())?;
    nlb.set_up(t1.index).map_err(|e| e.to_string())?;
    nlb.add_route(&Route::new("10.78.0.0/16".parse().unwrap()).gw("10.77.0.1".parse().unwrap()))
        .map_err(|e| e.to_string())?;
    nlb.routes(IpFamily::V4, None).map_err(|e| e.to_string())?;
    nla.links().map_err(|e| e.to_string())?;
    // The thread is back in the namespace it started in.
    let cur = NetNs::current().map_err(|e| e.to_string())?;
    if !cur.same_as(&start).map_err(|e| e.to_string())? {
        return Err("thread left in another namespace".into());
    }
    Ok(())
}

#[test]
fn netlink_work_stays_single_threaded() {
    let a = TestNs::new_node("th-a");
    let b = TestNs::new_node("th-b");
    // SAFETY: the child only runs this test's code and leaves through _exit; the parent's
    // other threads (libtest's) hold no locks the child needs (glibc resets malloc's).
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            let code = match std::panic::catch_unwind(|| {
                assert_eq!(threads(), 1, "child starts single-threaded");
                let r = work(&a, &b);
                (r, threads())
            }) {
                Ok((Ok(()), 1)) => 0,
                Ok((Ok(()), n)) => {
                    let _ = writeln!(std::io::stderr(), "threads after netlink work: {n}");
                    2
                }
                Ok((Err(e), _)) => {
                    let _ = writeln!(std::io::stderr(), "netlink work failed: {e}");
                    3
                }
                Err(_) => 4,
            };
            // SAFETY: _exit only ends this forked child, skipping destructors on purpose:
            // the parent owns the namespaces.
            unsafe { nix::libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let st = waitpid(child, None).unwrap();
            assert_eq!(st, WaitStatus::Exited(child, 0), "child failed, see stderr");
        }
    }
    let (ok, out) = sh(&b, &["ping", "-c1", "-W1", "10.77.0.1"]);
    assert!(ok, "{out}");
}

/// Runs a command inside the namespace; (success, stdout+stderr).
fn sh(ns: &TestNs, argv: &[&str]) -> (bool, String) {
    let o = ns.exec(argv);
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s += &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), s)
}
