//! The shared layer below the plugins (the role `pkg/` plays in the reference plugins):
//! building blocks that more than one plugin uses. A plugin file imports this layer, `cni`
//! and `linux`, never another plugin file; nothing here imports a plugin.
//!
//! - [`netns`]: CNI_NETNS opening with the spec's codes; [`ipam`]: IPAM ADD with rollback,
//!   STATUS/GC delegation; [`undo`]: the rollback list of an ADD (a DEL's failures are
//!   collected by `cni::error::Failures`; the private files plugins keep for DEL are
//!   `linux::statefile`'s).
//! - [`link`]: the `mtu` key, DEL of the container link; [`mac`]: MAC parsing and precedence;
//!   [`ip`]: address arithmetic; [`veth`]: the veth pair of bridge and ptp; [`childlink`]: what
//!   macvlan, ipvlan, vlan, tap and dummy share; [`ipconfig`]: ConfigureIface and the CHECK
//!   validations of IPs and routes.
//! - Firewall helpers: [`masquerade`] (ipMasq of bridge and ptp: the layout chosen once per
//!   verb, its `iptables` and `nftables` layouts, DEL and GC of both; portmap's layouts are in
//!   `meta::portmap`); [`reference_iptables`] (the reference's iptables state, found and
//!   removed after a node swap); [`spoofcheck`] (macspoofchk, `bridge nat`); [`sha512`] and
//!   [`comment`] for the reference's rule names and comments; [`nft_records`]: where an
//!   attachment's nftables rules are (handles recorded at ADD), so ADD and DEL need no dump.
//! - [`backend`]: which layout (iptables, iptables-legacy, nftables) an attachment's NAT and
//!   filter rules take: the backend key, else the node's kind.
//! - [`caps`]: the capability sets plugins name in `CniPlugin::CAPS`.

pub mod backend;
pub mod caps;
pub mod childlink;
pub mod comment;
pub mod firewalld;
pub mod ip;
pub mod ipam;
pub mod ipconfig;
pub mod legacy_iptables;
pub mod link;
pub mod mac;
pub mod masquerade;
pub mod netns;
pub mod nft_records;
pub mod reference_iptables;
pub mod sha512;
pub mod spoofcheck;
pub mod undo;
pub mod veth;
