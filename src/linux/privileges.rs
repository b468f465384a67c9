//! Least privilege: keep only the capabilities the caller names (its own minimal set).

use caps::CapSet;
pub use caps::Capability;

/// Reduce this process to the capabilities in `keep` that it has; failure is not fatal (an
/// unprivileged run has nothing to drop).
///
/// The bounding and inheritable sets are left alone, so an executed third-party delegate
/// still starts with what root normally has (as uid 0, exec gives the bounding set). Where
/// that rule does not apply, the permitted set must stay too, or the child would lose what
/// the caller gave: under no_new_privs exec caps the child at our permitted set; a non-root
/// process (SECBIT_NOROOT, or ambient capabilities of a non-zero uid) passes its caps on
/// through the ambient set, which shrinks with the permitted one. Then only the effective
/// set is reduced, which still keeps every syscall of this process to `keep`.
pub fn keep_only(keep: &[Capability]) {
    let Ok(permitted) = caps::read(None, CapSet::Permitted) else {
        return;
    };
    let kept: caps::CapsHashSet = permitted.iter().copied().filter(|c| keep.contains(c)).collect();
    let _ = caps::set(None, CapSet::Effective, &kept);
    if kept.len() != permitted.len() && exec_gives_bounding_set() {
        let _ = caps::set(None, CapSet::Permitted, &kept);
    }
}

/// Whether an exec'd program gets the bounding set whatever our permitted set is: effective
/// uid 0 with root's rule in force (no SECBIT_NOROOT) and no no_new_privs.
fn exec_gives_bounding_set() -> bool {
    const SECBIT_NOROOT: i32 = 1;
    // A failed query counts as no_new_privs set: then we do not rely on the bounding set.
    let nnp = nix::sys::prctl::get_no_new_privs().unwrap_or(true);
    // SAFETY: an argument-less prctl query (nix has no wrapper for the securebits).
    let secbits = unsafe { nix::libc::prctl(nix::libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    nix::unistd::geteuid().is_root() && !nnp && secbits >= 0 && secbits & SECBIT_NOROOT == 0
}
