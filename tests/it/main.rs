//! The integration tests: one crate, one module per area (each was its own crate,
//! tests/<name>.rs, until #27), and one shared rig, `common` (namespaces, plugin runs, the
//! reference plugins, what a test needs and whether it ran: `common::rig`).
//!
//! `cargo test --test it -- bridge::` runs one module; doc/testing.md has the rest.
//! scripts/tests-into-one-crate.sh moves a new tests/<name>.rs in here.

mod common;

// One line per module, sorted (the script adds them).
mod bandwidth;
mod bandwidth_chains;
mod bandwidth_reference;
mod bridge;
mod bridge_reference;
mod bridge_vlan;
mod cli;
mod cluster;
mod conformance;
mod corpus;
mod demo;
mod dhcp;
mod dhcp_reference;
mod dummy;
mod faults;
mod firewall;
mod firewall_iptables;
mod firewall_lifecycle;
mod firewalld;
mod flannel;
mod go_keys;
mod host_device;
mod hostile_files;
mod inspect;
mod invocation_log;
mod ipam_host_local;
mod ipam_static;
mod ipmasq_layouts;
mod iptables_swap;
mod ipvlan;
mod late_close;
mod legacy_iptables;
mod legacy_node;
mod linux_netlink;
mod linux_netns_ping;
mod linux_nft;
mod linux_packet;
mod linux_threads;
mod linux_xtables;
mod macvlan;
mod macvlan_reference;
mod masquerade;
mod masquerade_reference;
mod net_runtime;
mod nft_quiet_rebuild;
mod nft_records;
mod nftables_only_node;
mod portmap;
mod portmap_cases;
mod portmap_iptables;
mod portmap_l2only;
mod portmap_nftables;
mod privileges;
mod ptp;
mod ptp_reference;
mod sbr;
mod sbr_reference;
mod spoofcheck;
mod symlinks;
mod tap;
mod tuning;
mod veth_firewall;
mod vlan;
mod vrf;
