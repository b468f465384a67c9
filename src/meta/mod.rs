//! Meta plugins (chained after an interface plugin) and the firewall helpers bridge and ptp
//! share. Everything here programs nftables over netlink (`linux::nft`); nothing is exec'd.
//!
//! - [`masquerade`]: ipMasq for bridge/ptp (`inet cni_plugins_masquerade`);
//! - [`masq_iptables`]: ipMasq with `ipMasqBackend: "iptables"` (the reference's iptables rules);
//! - [`spoofcheck`]: bridge `macspoofchk` (`bridge nat`);
//! - [`portmap`]: the portmap plugin (`ip`/`ip6 cni_hostport`);
//! - [`portmap_iptables`]: portmap's rules for `backend: "iptables"` (the reference's own);
//! - [`firewall`]: the firewall plugin (`inet cni_firewall`, `bridge cni_firewall`);
//! - [`bandwidth`]: tbf shaping on the host veth and an IFB (tc over rtnetlink, `linux::netlink::tc`);
//! - [`sbr`]: source based routing (ip rules and a routing table per container address);
//! - [`tuning`]: sysctls and link attributes of the container interface;
//! - [`reference_iptables`]: the reference plugins' iptables rules (iptables-nft), found and
//!   removed after a node swap;
//! - [`flannel`]: builds a bridge + host-local delegate from flanneld's subnet.env.

pub mod bandwidth;
pub mod firewall;
pub mod flannel;
pub mod masq_iptables;
pub mod masquerade;
pub mod portmap;
pub mod portmap_iptables;
pub mod reference_iptables;
pub mod sbr;
pub mod sha512;
pub mod spoofcheck;
pub mod tuning;
