//! Meta plugins (chained after an interface plugin) and the firewall helpers bridge and ptp
//! share. Everything here programs nftables over netlink (`linux::nft`); nothing is exec'd.
//!
//! - [`masquerade`]: ipMasq for bridge/ptp (`inet cni_plugins_masquerade`);
//! - [`spoofcheck`]: bridge `macspoofchk` (`bridge nat`);
//! - [`portmap`]: the portmap plugin (`ip`/`ip6 cni_hostport`);
//! - [`firewall`]: the firewall plugin (`inet cni_firewall`, `bridge cni_firewall`);
//! - [`bandwidth`]: tbf shaping on the host veth and an IFB (not in the plugin table yet: its
//!   kernel tests and the comparison with the reference are still to come);
//! - [`tuning`]: sysctls and link attributes of the container interface;
//! - [`flannel`]: builds a bridge + host-local delegate from flanneld's subnet.env;
//! - [`vrf`]: enslaves the container interface to a VRF in the container netns.

pub mod bandwidth;
pub mod firewall;
pub mod flannel;
pub mod masquerade;
pub mod portmap;
pub mod sha512;
pub mod spoofcheck;
pub mod tuning;
pub mod vrf;
