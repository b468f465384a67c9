//! The reference's per-attachment rule comment of portmap and firewall.

use crate::pkg::masquerade::truncate;
use crate::pkg::sha512::hex_prefix;

/// Our rule comment for one attachment (≤ 128 bytes: a 64-char ID, 16 hex, a 15-char ifname).
pub fn rule_comment(network: &str, container_id: &str, ifname: &str) -> String {
    let mut c = format!("{container_id}, nethash: {}, if: {ifname}", hex_prefix(network, 16));
    truncate(&mut c, 128);
    c
}
