//! Interface plugins: they create or configure a link in the container's netns. One file per
//! plugin; what they share is in [`crate::pkg`].

pub mod bridge;
pub mod dummy;
pub mod host_device;
pub mod ipvlan;
pub mod loopback;
pub mod macvlan;
pub mod ptp;
pub mod tap;
pub mod vlan;
