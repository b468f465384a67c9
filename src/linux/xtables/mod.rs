//! Legacy iptables' tables (x_tables, what `iptables-legacy` programs), read and written the
//! way iptables-legacy does it, without running it:
//!
//! - a table is read whole with `IPT_SO_GET_INFO` + `IPT_SO_GET_ENTRIES` (`IP6T_SO_*` for
//!   IPv6; on a UDP socket, for which CAP_NET_ADMIN suffices) and decoded ([`blob`]) into a
//!   [`Table`] of [`Chain`]s of [`Rule`]s;
//! - a change is made to that model and the whole table is written back with
//!   `IPT_SO_SET_REPLACE`; the counters the kernel hands back for the old table are then
//!   added to the surviving entries with `IPT_SO_SET_ADD_COUNTERS`, as libiptc does, so no
//!   rule or policy loses its counts;
//! - all of it under the flock iptables takes (`/run/xtables.lock`, or `$XTABLES_LOCKFILE`,
//!   waited for like `iptables -w`), so an `iptables-legacy` run never interleaves with ours;
//!   a writer that takes no lock is caught by the kernel when the number of entries changed
//!   between our read and our replace (`EAGAIN`): then the whole read-change-write is redone.
//!
//! The layout written is libiptc's, byte for byte: built-in chains in hook order, each ended
//! by its policy entry, user chains sorted by name, each opened by an `ERROR` entry naming it
//! and closed by an unconditional `RETURN`, the table closed by an `ERROR` entry; jumps are
//! byte offsets to the first entry after the chain's head. So `iptables-legacy-save` prints
//! our rules exactly as it prints the same rules made by `iptables-legacy -A`.
//!
//! Reading a table the kernel has not instantiated in a namespace instantiates it (x_tables
//! makes per-netns tables on first use): [`registered`] says which exist, without that side
//! effect, and [`read_if_registered`] reads only those.

pub mod blob;
pub mod ext;
mod model;
mod socket;

pub use model::{inv, Addr, Chain, Counters, Iface, Policy, Rule, Table, Target, IP6T_F_PROTO, MAX_CHAIN_NAME};
pub use socket::{in_use, lock, modify, modify_locked, read, read_if_registered, registered, XtLock, LOCK_FILE};

/// Which x_tables: `ip_tables` (iptables) or `ip6_tables` (ip6tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn is_v6(self) -> bool {
        self == Family::V6
    }

    pub fn of(v6: bool) -> Family {
        if v6 {
            Family::V6
        } else {
            Family::V4
        }
    }

    /// The tool that shows this family: `iptables-legacy` / `ip6tables-legacy`.
    pub fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-legacy",
            Family::V6 => "ip6tables-legacy",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        })
    }
}

/// Netfilter's IPv4/IPv6 hooks, in number order, and the built-in chain each one enters.
pub const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// The hook number of a built-in chain name.
pub fn hook_of(chain: &str) -> Option<usize> {
    HOOKS.iter().position(|h| *h == chain)
}
