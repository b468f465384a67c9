//! Where one attachment's nftables rules are, without dumping whole chains: the handles the
//! kernel gave them at ADD (NLM_F_ECHO), kept in a small file per attachment. A cache, never
//! a second source of truth: the rules keep the reference's layout and comments, and every
//! use of a record first checks it.
//!
//! ```text
//! $CNI_MULTI_STATE_DIR (default /run/cni/cni-multi)/nft/<boot id>-<netns cookie>/<family>-<table>/
//!     <h16(network)>-<h16(ifname:containerID)>   "<chain> <handle>" per rule
//!     stamp                                      handles of the shared base-chain rules
//!                                                (the firewall: of its admin jump)
//! ```
//!
//! - Keyed by boot and network namespace (the rules live in the node's netns; a cookie is
//!   never reused while the system runs), so records never point into another ruleset.
//! - A record is used only if every rule it names still exists (one GETRULE each, not a
//!   dump) with the attachment's comment; else the caller dumps the chains as before.
//! - The stamp says the records are complete: every rule with our comments has a record.
//!   It holds the handles of the shared rules ADD lists anyway (the base chains), which the
//!   reference plugins flush and rebuild on every ADD, so a reference ADD after a node swap
//!   (rules without records) invalidates it. Without a valid stamp a missing record means
//!   nothing and the chains are dumped; that dump writes every attachment's record again
//!   and the stamp (when the ruleset did not change during it).
//! - ADD writes its record "pending" before its commit and the handles after, so a crash
//!   in between leaves a record that is not used. A record that cannot be written takes the
//!   stamp away.

use std::path::PathBuf;

use anyhow::Result;

use crate::linux::nft::{Family, NftSocket, Rule};
use crate::linux::statefile;

/// Overrides the state root (tests and the bench point it at a temp dir).
pub const ENV_STATE_DIR: &str = "CNI_MULTI_STATE_DIR";
const DEFAULT_STATE_DIR: &str = "/run/cni/cni-multi";
const MAGIC: &str = "cni-multi nft record 1";
const PENDING: &str = "pending";
/// Subdirectory of the temp files of record writes (not a key: `is_key` refuses it).
const TMP_DIR: &str = ".tmp";
/// A record names a handful of rules; anything larger is not one of ours.
const MAX_FILE: u64 = 16 * 1024;

/// `<h16(network hash)>-<h16(ifname:containerID)>`: an attachment's record name (and the
/// prefix of its masquerade comments).
pub fn key(network_hash: &str, ifname: &str, container_id: &str) -> String {
    format!(
        "{network_hash}-{}",
        crate::pkg::sha512::hex_prefix(&format!("{ifname}:{container_id}"), 16)
    )
}

/// `$CNI_MULTI_STATE_DIR`, else `/run/cni/cni-multi`: where cni-multi keeps its records
/// (these, and the firewalld backend's).
pub fn state_root() -> PathBuf {
    std::env::var_os(ENV_STATE_DIR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// What the record of one attachment says.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No record.
    Missing,
    /// A record that cannot be used (pending, unreadable, malformed).
    Unusable,
    /// (chain, handle) of each rule.
    Rules(Vec<(String, u64)>),
}

/// The records of one table in this network namespace. Without a state dir (no netns
/// cookie, no writable dir) every lookup says `Unusable` and callers dump, as before.
pub struct Records {
    dir: Option<PathBuf>,
}

impl Records {
    pub fn open(sock: &NftSocket, family: Family, table: &str) -> Records {
        let root = state_root();
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
        let dir = match (sock.netns_cookie(), boot) {
            (Some(c), Some(b)) => Some(
                root.join("nft")
                    .join(format!("{}-{c}", b.trim()))
                    .join(format!("{family}-{table}")),
            ),
            _ => None,
        };
        Records { dir }
    }

    /// Records kept in `dir` (unit tests).
    #[cfg(test)]
    fn at(dir: &std::path::Path) -> Records {
        Records {
            dir: Some(dir.to_path_buf()),
        }
    }

    fn path(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(name))
    }

    /// Where the temp files of writes go: a subdirectory, so that removing a record scans
    /// only in-flight (or killed) writes, not one file per attachment.
    fn tmp_dir(&self) -> Option<PathBuf> {
        self.path(TMP_DIR)
    }

    fn read(&self, name: &str) -> Option<std::io::Result<Vec<u8>>> {
        let p = self.path(name)?;
        match statefile::read_regular(&p, MAX_FILE) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            r => Some(r),
        }
    }

    /// Writes `name`, making the directories on first use. False when it could not.
    fn write(&self, name: &str, text: &str) -> bool {
        let (Some(p), Some(tmp)) = (self.path(name), self.tmp_dir()) else {
            return false;
        };
        let mut r = statefile::write_atomic_in(&p, &tmp, text.as_bytes(), 0o600, false);
        if r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
            use std::os::unix::fs::DirBuilderExt;
            if std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&tmp)
                .is_ok()
            {
                r = statefile::write_atomic_in(&p, &tmp, text.as_bytes(), 0o600, false);
            }
        }
        r.is_ok()
    }

    pub fn get(&self, key: &str) -> Recorded {
        if self.dir.is_none() {
            return Recorded::Unusable;
        }
        match self.read(key) {
            None => Recorded::Missing,
            Some(Err(_)) => Recorded::Unusable,
            Some(Ok(bytes)) => parse(&bytes).map_or(Recorded::Unusable, Recorded::Rules),
        }
    }

    /// Before the commit that makes the attachment's rules: the record is not to be used
    /// until [`put`](Self::put) replaces it.
    pub fn put_pending(&self, key: &str) {
        if !self.write(key, &format!("{MAGIC}\n{PENDING}\n")) {
            self.forget_stamp();
        }
    }

    pub fn put(&self, key: &str, rules: &[(String, u64)]) {
        let mut text = format!("{MAGIC}\n");
        for (chain, h) in rules {
            text += &format!("{chain} {h}\n");
        }
        if !self.write(key, &text) {
            self.forget_stamp();
        }
    }

    pub fn forget(&self, key: &str) {
        if let (Some(p), Some(tmp)) = (self.path(key), self.tmp_dir()) {
            let _ = statefile::remove_with_temps_in(&p, &tmp);
        }
    }

    /// The attachment keys that have a record (GC).
    pub fn keys(&self) -> Vec<String> {
        let Some(rd) = self.dir.as_ref().and_then(|d| std::fs::read_dir(d).ok()) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_key(n))
            .collect()
    }

    /// Whether the records are complete for a table whose shared rules have `base` handles.
    pub fn stamp_matches(&self, base: &[u64]) -> bool {
        !base.is_empty() && matches!(self.read("stamp"), Some(Ok(b)) if b == stamp_text(base).as_bytes())
    }

    /// The handles the stamp holds, if there is a readable one.
    pub fn stamp(&self) -> Option<Vec<u64>> {
        let b = self.read("stamp")?.ok()?;
        let text = std::str::from_utf8(&b).ok()?;
        let (magic, hs) = text.strip_suffix('\n')?.split_once('\n')?;
        if magic != MAGIC {
            return None;
        }
        hs.split(' ').map(|h| h.parse().ok()).collect()
    }

    pub fn put_stamp(&self, base: &[u64]) {
        if base.is_empty() || !self.write("stamp", &stamp_text(base)) {
            self.forget_stamp();
        }
    }

    pub fn forget_stamp(&self) {
        if let (Some(p), Some(tmp)) = (self.path("stamp"), self.tmp_dir()) {
            let _ = statefile::remove_with_temps_in(&p, &tmp);
        }
    }
}

fn stamp_text(base: &[u64]) -> String {
    let hs: Vec<String> = base.iter().map(u64::to_string).collect();
    format!("{MAGIC}\n{}\n", hs.join(" "))
}

/// `<16 hex>-<16 hex>`.
pub fn is_key(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 33
        && b[16] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 16 || c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

fn parse(bytes: &[u8]) -> Option<Vec<(String, u64)>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let mut out = Vec::new();
    for l in lines {
        let (chain, h) = l.split_once(' ')?;
        let h: u64 = h.parse().ok()?;
        if chain.is_empty() || h == 0 {
            return None;
        }
        out.push((chain.to_string(), h));
    }
    // An empty record is a pending one (or damaged): a finished ADD always made rules.
    (!out.is_empty()).then_some(out)
}

/// The rules a record names, each fetched by handle (one GETRULE, not a dump) and kept only
/// if its comment satisfies `ours`. `None` when any is missing or another's: the record is
/// stale and the caller must dump.
pub fn verify(
    sock: &NftSocket,
    family: Family,
    table: &str,
    rec: &[(String, u64)],
    ours: &dyn Fn(&str) -> bool,
) -> Result<Option<Vec<Rule>>> {
    let mut out = Vec::with_capacity(rec.len());
    for (chain, h) in rec {
        match sock.get_rule(family, table, chain, *h)? {
            Some(r) if r.comment.as_deref().is_some_and(ours) => out.push(r),
            _ => return Ok(None),
        }
    }
    Ok(Some(out))
}

/// Writes again the record of every attachment with rules in `rules` (a dump the ruleset did
/// not change during), skipping `except` (the caller's own, recorded after its commit).
/// `key_of` maps a comment to `Some(Some(key))` (ours), `Some(None)` (ours, but the
/// attachment cannot be told) or `None` (not ours). False when some comment of ours had no
/// key: the records cannot be complete.
pub fn rerecord(rec: &Records, rules: &[Rule], except: &str, key_of: &dyn Fn(&str) -> Option<Option<String>>) -> bool {
    let mut by_key: std::collections::BTreeMap<String, Vec<(String, u64)>> = Default::default();
    let mut complete = true;
    for r in rules {
        let (Some(c), Some(h)) = (r.comment.as_deref(), r.handle) else {
            continue;
        };
        match key_of(c) {
            Some(Some(k)) => by_key.entry(k).or_default().push((r.chain.clone(), h)),
            Some(None) => complete = false,
            None => {}
        }
    }
    if complete {
        for (k, rules) in by_key.iter().filter(|(k, _)| k.as_str() != except) {
            rec.put(k, rules);
        }
    }
    complete
}

/// (chain, handle) of `rules`, as a record holds them.
pub fn handles_of(rules: &[Rule]) -> Vec<(String, u64)> {
    rules
        .iter()
        .filter_map(|r| r.handle.map(|h| (r.chain.clone(), h)))
        .collect()
}

/// The handles of `rules` (a stamp).
pub fn base_handles(rules: &[Rule]) -> Vec<u64> {
    rules.iter().filter_map(|r| r.handle).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let dir = std::env::temp_dir().join(format!("nft-records-unit-{}", std::process::id()));
        let r = Records::at(&dir.join("inet-t"));
        let k = key("0123456789abcdef", "eth0", "cid");
        assert!(is_key(&k));
        assert_eq!(r.get(&k), Recorded::Missing);
        r.put_pending(&k);
        assert_eq!(r.get(&k), Recorded::Unusable);
        let rules = vec![("masq_checks".to_string(), 7), ("masq_checks".to_string(), 9)];
        r.put(&k, &rules);
        assert_eq!(r.get(&k), Recorded::Rules(rules));
        assert_eq!(r.keys(), vec![k.clone()]);
        for bad in [
            "",
            "garbage\n",
            "cni-multi nft record 1\nc x\n",
            "cni-multi nft record 1\nc 0\n",
        ] {
            std::fs::write(dir.join("inet-t").join(&k), bad).unwrap();
            assert_eq!(r.get(&k), Recorded::Unusable, "{bad:?}");
        }
        // A killed write's temp file is in the temp dir, and forget removes it.
        let left = dir.join("inet-t").join(TMP_DIR).join(format!(".{k}.tmp-1"));
        std::fs::write(&left, "x").unwrap();
        r.forget(&k);
        assert_eq!(r.get(&k), Recorded::Missing);
        assert!(!left.exists());
        assert!(!r.stamp_matches(&[3, 4]));
        r.put_stamp(&[3, 4]);
        assert!(r.stamp_matches(&[3, 4]) && !r.stamp_matches(&[3, 5]) && !r.stamp_matches(&[]));
        r.forget_stamp();
        assert!(!r.stamp_matches(&[3, 4]));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!is_key("0123456789abcdef-0123456789abcdeg") && !is_key("stamp"));
    }
}
