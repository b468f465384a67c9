//! The reference's per-attachment rule comment of portmap and firewall.

use crate::pkg::masquerade::nftables::truncate;
use crate::pkg::sha512::hex_prefix;

/// Our rule comment for one attachment (≤ 128 bytes: a 64-char ID, 16 hex, a 15-char ifname).
pub fn rule_comment(network: &str, container_id: &str, ifname: &str) -> String {
    let mut c = format!("{container_id}, nethash: {}, if: {ifname}", hex_prefix(network, 16));
    truncate(&mut c, 128);
    c
}

/// The record key (`nft_records::key`) of the attachment a [`rule_comment`] names:
/// `Some(Some(key))`; `Some(None)` for a comment of this form that may have been cut at 128
/// bytes (its attachment cannot be told); `None` for any other comment.
pub fn record_key(c: &str) -> Option<Option<String>> {
    let (cid, rest) = c.split_once(", nethash: ")?;
    let (hash, ifname) = rest.split_once(", if: ")?;
    let whole = c.len() < 128 && crate::pkg::nft_records::is_key(&format!("{hash}-{hash}"));
    Some(whole.then(|| crate::pkg::nft_records::key(hash, ifname, cid)))
}
