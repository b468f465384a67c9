//! The capabilities each plugin keeps (doc/privileges.md), keyed by the name it runs as.
//! One set covers the built-in delegates the plugin runs in the same process (an
//! interface plugin's host-local, static or dhcp IPAM; flannel's delegate); executed
//! delegates start afresh from the bounding set (`linux::privileges::keep_only`).

use crate::linux::privileges::Capability::{self, *};

/// Links, addresses, routes, qdiscs, nftables (NET_ADMIN); setns into the pod (SYS_ADMIN);
/// opening a `/proc/<pid>/ns/net` CNI_NETNS of a process with capabilities we dropped
/// (SYS_PTRACE: the kernel's ptrace access check on ns files).
const IN_POD: &[Capability] = &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE];
/// IN_POD, and the backup directory, which tuning creates with the reference's mode 0600
/// (no search bit: even its owner root needs DAC_OVERRIDE to create, rename or remove a file
/// in it; DAC_READ_SEARCH does not cover writing).
const TUNING: &[Capability] = &[CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_OVERRIDE];
/// nftables and sysctls of the node's netns only; never opens CNI_NETNS.
const NODE_ONLY: &[Capability] = &[CAP_NET_ADMIN];
/// Files in root-owned directories, a unix socket (dhcp's daemon), arithmetic (static).
const NONE: &[Capability] = &[];

const TABLE: &[(&str, &[Capability])] = &[
    ("bridge", IN_POD),
    ("dummy", IN_POD),
    ("host-device", IN_POD),
    ("ipvlan", IN_POD),
    ("loopback", IN_POD),
    ("macvlan", IN_POD),
    ("ptp", IN_POD),
    ("tap", IN_POD),
    ("vlan", IN_POD),
    ("dhcp", NONE),
    ("host-local", NONE),
    ("static", NONE),
    ("bandwidth", IN_POD),
    ("firewall", NODE_ONLY),
    // Its delegate may be any built-in plugin: the union of theirs.
    ("flannel", TUNING),
    ("portmap", NODE_ONLY),
    ("sbr", IN_POD),
    ("tuning", TUNING),
    ("vrf", IN_POD),
];

/// The set `plugin` keeps; None for a name not in the table.
pub fn of(plugin: &str) -> Option<&'static [Capability]> {
    TABLE.iter().find(|(p, _)| *p == plugin).map(|(_, c)| *c)
}

/// Every plugin name in the table (for the test that the table covers every plugin).
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(p, _)| *p)
}

#[cfg(test)]
mod tests {
    #[test]
    fn flannel_keeps_the_union_of_every_other_plugin() {
        let flannel = super::of("flannel").unwrap();
        for (p, set) in super::TABLE {
            assert!(set.iter().all(|c| flannel.contains(c)), "flannel lacks what {p} keeps");
        }
    }
}
