//! Shared test helpers.
#![allow(dead_code)]

pub mod dhcp_rig;
pub mod nftns;
pub mod rig;
pub mod sbr_rig;
pub mod veth_rig;
