//! Shared test helpers.
#![allow(dead_code)]

pub mod bw_rig;
pub mod cluster;
pub mod dhcp_rig;
pub mod firewalld_rig;
pub mod fw_rig;
pub mod legacy_rig;
pub mod links_rig;
pub mod nftns;
pub mod rig;
pub mod sbr_rig;
pub mod veth_rig;
