//! Least privilege: drop every capability a network plugin never needs.

use caps::{CapSet, Capability};

/// What plugins use: netlink and setns (NET_ADMIN, SYS_ADMIN), raw sockets (DHCP),
/// opening other processes' namespaces (SYS_PTRACE), and state files owned by others
/// (DAC_OVERRIDE, FOWNER, CHOWN for tap owners).
const KEEP: &[Capability] = &[
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_NET_RAW,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_PTRACE,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_CHOWN,
];

/// Reduce the effective and permitted sets to `KEEP`. Failure is not fatal: an
/// unprivileged run has nothing to drop. The bounding set is left alone so that an
/// executed third-party delegate still starts with what root normally has.
pub fn drop_unneeded() {
    let Ok(permitted) = caps::read(None, CapSet::Permitted) else {
        return;
    };
    let keep: caps::CapsHashSet = permitted.iter().copied().filter(|c| KEEP.contains(c)).collect();
    if keep.len() == permitted.len() {
        return;
    }
    let _ = caps::set(None, CapSet::Effective, &keep);
    let _ = caps::set(None, CapSet::Permitted, &keep);
}
