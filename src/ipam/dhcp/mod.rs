//! dhcp IPAM (plugins/ipam/dhcp): leases from a DHCP server, held by a node daemon.
//!
//! Work in progress: only the wire format (`packet`) has landed; the daemon, its lease
//! state machine and the plugin are not written yet, so `dhcp` is not in the plugin table.

pub mod packet;
