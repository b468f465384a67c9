//! The capability sets plugins keep (doc/privileges.md). Each plugin names its set in
//! `CniPlugin::CAPS` (no default: a plugin without one does not compile). One set covers
//! the built-in delegates the plugin runs in the same process (an interface plugin's
//! host-local, static or dhcp IPAM; flannel's delegate); executed delegates start afresh from the bounding set (`linux::privileges::keep_only`).

pub use crate::linux::privileges::Capability;
use Capability::*;

/// Links, addresses, routes, qdiscs, nftables (NET_ADMIN); setns into the pod (SYS_ADMIN);
/// opening a `/proc/<pid>/ns/net` CNI_NETNS of a process with capabilities we dropped
/// (SYS_PTRACE: the kernel's ptrace access check on ns files).
pub const IN_POD: &[Capability] = &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE];
/// IN_POD, and the backup directory, which tuning creates with the reference's mode 0600
/// (no search bit: even its owner root needs DAC_OVERRIDE to create, rename or remove a file
/// in it; DAC_READ_SEARCH does not cover writing).
pub const TUNING: &[Capability] = &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_OVERRIDE];
/// nftables and sysctls of the node's netns only; never opens CNI_NETNS.
pub const NODE_ONLY: &[Capability] = &[CAP_NET_ADMIN];
/// Files in root-owned directories, a unix socket (dhcp's daemon), arithmetic (static).
pub const NONE: &[Capability] = &[];

#[cfg(test)]
mod tests {
    #[test]
    fn flannel_keeps_the_union_of_every_other_plugin() {
        let flannel = crate::plugins::lookup("flannel").unwrap().caps;
        for p in crate::plugins::PLUGINS {
            assert!(
                p.caps.iter().all(|c| flannel.contains(c)),
                "flannel lacks what {} keeps",
                p.name
            );
        }
    }
}
