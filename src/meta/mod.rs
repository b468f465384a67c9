//! Meta plugins, chained after an interface plugin. One file per plugin; the firewall helpers
//! bridge and ptp share (masquerade, spoofcheck, rule hashes) are in [`crate::pkg`]. Nothing
//! here is exec'd: nftables and tc go over netlink (`linux`).
//!
//! - [`portmap`]: the portmap plugin (`ip`/`ip6 cni_hostport`);
//! - [`firewall`]: the firewall plugin (`inet cni_firewall`, `bridge cni_firewall`);
//! - [`bandwidth`]: tbf shaping on the host veth and an IFB (tc over rtnetlink, `linux::netlink::tc`);
//! - [`sbr`]: source based routing (ip rules and a routing table per container address);
//! - [`tuning`]: sysctls and link attributes of the container interface;
//! - [`flannel`]: builds a bridge + host-local delegate from flanneld's subnet.env;
//! - [`vrf`]: enslaves the container interface to a VRF in the container netns.

pub mod bandwidth;
pub mod firewall;
pub mod flannel;
pub mod portmap;
pub mod sbr;
pub mod tuning;
pub mod vrf;
