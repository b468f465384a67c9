//! The kernel, typed: netlink (links, addresses, routes, neighbours, rules, bridge ports),
//! network namespaces, sysctls, tun/tap devices, capabilities and whether SELinux is on. Nothing here knows
//! what it is used for.

pub mod conntrack;
pub mod dbus;
pub mod error;
pub mod files;
pub mod filter_probe;
pub mod late_close;
mod netfilter;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod packet;
pub mod ping;
pub mod privileges;
pub mod selinux;
pub mod statefile;
pub mod sysctl;
pub mod tuntap;
pub mod xtables;

pub use error::{Error, Result};
pub use netfilter::NfProto;
pub use netlink::Netlink;
pub use netns::{NetNs, NetNsGuard, NetNsLock, NsError};
