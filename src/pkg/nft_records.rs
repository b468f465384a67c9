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
//! - A record may carry a label: the comment its rules carry (or, for iptables-layout jumps,
//!   the chain they enter). Where a comment does not name the attachment (portmap's rules
//!   carry only the container ID, as upstream's do), the label lets a dump tell which rules a
//!   record still holds, and GC verify a record it cannot derive from its key.
//!
//! [`Cache`] is the one place the lookup-or-dump logic lives: a verb opens it, tells it the
//! shared handles it listed (the stamp), asks for the attachment's rules by record, falls
//! back to [`Cache::dump`] when the record cannot be used, and after its commit hands it the
//! handles the kernel echoed ([`Cache::committed`]).

use std::path::PathBuf;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use crate::linux::nft::{Family, NftSocket, Rule};
use crate::linux::statefile;

/// Overrides the state root (tests and the bench point it at a temp dir).
pub const ENV_STATE_DIR: &str = "CNI_MULTI_STATE_DIR";
const DEFAULT_STATE_DIR: &str = "/run/cni/cni-multi";
const MAGIC: &str = "cni-multi nft record 1";
const PENDING: &str = "pending";
/// The line that carries a record's label (never a chain name of ours).
const LABEL: &str = "label=";
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
        Self::open_dir(sock, &format!("{family}-{table}"))
    }

    /// The records one user keeps of a table others write too (`<family>-<table>-<scope>`):
    /// e.g. portmap's jumps in iptables' `nat`, where ipMasq keeps records of its own.
    pub fn open_scoped(sock: &NftSocket, family: Family, table: &str, scope: &str) -> Records {
        Self::open_dir(sock, &format!("{family}-{table}-{scope}"))
    }

    fn open_dir(sock: &NftSocket, name: &str) -> Records {
        let root = std::env::var_os(ENV_STATE_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
        let dir = match (sock.netns_cookie(), boot) {
            (Some(c), Some(b)) => Some(root.join("nft").join(format!("{}-{c}", b.trim())).join(name)),
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
        self.get_labelled(key).0
    }

    /// The record and its label (see the module doc), if it has one.
    pub fn get_labelled(&self, key: &str) -> (Recorded, Option<String>) {
        if self.dir.is_none() {
            return (Recorded::Unusable, None);
        }
        match self.read(key) {
            None => (Recorded::Missing, None),
            Some(Err(_)) => (Recorded::Unusable, None),
            Some(Ok(bytes)) => match parse(&bytes) {
                Some((rules, label)) => (Recorded::Rules(rules), label),
                None => (Recorded::Unusable, None),
            },
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
        self.put_labelled(key, None, rules)
    }

    /// [`put`](Self::put) with a label (one line of text).
    pub fn put_labelled(&self, key: &str, label: Option<&str>, rules: &[(String, u64)]) {
        let mut text = format!("{MAGIC}\n");
        if let Some(l) = label.filter(|l| !l.contains('\n')) {
            text += &format!("{LABEL}{l}\n");
        }
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

fn parse(bytes: &[u8]) -> Option<(Handles, Option<String>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut lines = text.lines().peekable();
    if lines.next()? != MAGIC {
        return None;
    }
    let label = lines
        .next_if(|l| l.starts_with(LABEL))
        .map(|l| l[LABEL.len()..].to_string());
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
    (!out.is_empty()).then_some((out, label))
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

/// (chain, handle) of each rule of a record.
pub type Handles = Vec<(String, u64)>;
/// Where an unclaimed rule goes (see [`Attribution::ByRecord`]).
pub type Claim = Option<Option<(String, String)>>;
/// A dump's rules, each with its attachment key when it can be told.
pub type Keyed = Vec<(Rule, Option<String>)>;

/// How a dump's rules are told apart by attachment (see [`Cache::dump`]).
pub enum Attribution<'f> {
    /// The comment names the attachment: `Some(Some(key))` ours, `Some(None)` ours but its
    /// attachment cannot be told (a comment cut at 128 bytes), `None` not ours.
    ByComment(&'f dyn Fn(&str) -> Option<Option<String>>),
    /// The comment names no attachment (portmap's carry only the container ID, as upstream's
    /// do): a rule belongs to the record that holds its handle, when every rule of that record
    /// is there with the record's label as its comment. Any other rule goes to
    /// `unclaimed(comment)`: `Some(Some((key, label)))` records it there, `Some(None)` is ours
    /// but cannot be recorded (the records are then incomplete), `None` is not ours.
    ByRecord(&'f dyn Fn(&str) -> Claim),
}

/// One verb's use of the records of one table (see the module doc): lookup by record, the
/// dump fallback, and the bookkeeping after a commit, in one place for every plugin.
pub struct Cache<'a> {
    sock: &'a NftSocket,
    family: Family,
    table: String,
    rec: Records,
    /// The shared rules' handles as the verb listed them.
    listed: Vec<u64>,
    stamped: bool,
}

impl<'a> Cache<'a> {
    /// The records of `family table` (`rec`, opened by [`Records::open`] or
    /// [`Records::open_scoped`]), not yet stamped.
    pub fn new(sock: &'a NftSocket, family: Family, table: &str, rec: Records) -> Cache<'a> {
        Cache {
            sock,
            family,
            table: table.to_string(),
            rec,
            listed: Vec::new(),
            stamped: false,
        }
    }

    /// [`Cache::new`] with the table's own records.
    pub fn open(sock: &'a NftSocket, family: Family, table: &str) -> Cache<'a> {
        Self::new(sock, family, table, Records::open(sock, family, table))
    }

    pub fn records(&self) -> &Records {
        &self.rec
    }

    /// The shared rules' handles as the verb listed them: the records are complete while the
    /// stamp holds exactly these. Returns whether it does.
    pub fn stamp_with(&mut self, listed: Vec<u64>) -> bool {
        self.stamped = self.rec.stamp_matches(&listed);
        self.listed = listed;
        self.stamped
    }

    /// For a stamp the caller verified itself (the firewall fetches its one handle and
    /// compares the rule): `Some(handles)` when it holds.
    pub fn stamp_verified(&mut self, handles: Option<Vec<u64>>) {
        self.stamped = handles.is_some();
        self.listed = handles.unwrap_or_default();
    }

    pub fn stamped(&self) -> bool {
        self.stamped
    }

    /// The rules of `key`'s record, each fetched by handle and kept only with a comment `ours`
    /// accepts: `Some(rules)` when the record holds; `Some([])` when the stamp says the records
    /// are complete and `key` has none and `missing_is_none`; `None` when the caller must dump
    /// (no stamp, no usable record, a rule gone or another's).
    pub fn lookup(&self, key: &str, ours: &dyn Fn(&str) -> bool, missing_is_none: bool) -> Result<Option<Vec<Rule>>> {
        if !self.stamped {
            return Ok(None);
        }
        match self.rec.get(key) {
            Recorded::Missing if missing_is_none => Ok(Some(Vec::new())),
            Recorded::Rules(r) => verify(self.sock, self.family, &self.table, &r, ours),
            _ => Ok(None),
        }
    }

    /// The dump fallback: `dump` lists every commented rule of the per-attachment chains,
    /// between two reads of the ruleset's generation; only a dump the ruleset did not change
    /// during writes the records again (every attachment's but `except`, which the caller
    /// records after its commit). Returns each rule with its attachment key, when that can
    /// be told, and whether the records are complete now.
    pub fn dump(
        &self,
        except: &[&str],
        dump: impl FnOnce() -> Result<Vec<Rule>>,
        how: Attribution,
    ) -> Result<(Keyed, bool)> {
        let gen = self.sock.generation()?;
        let all = dump()?;
        let steady = self.sock.generation()? == gen;
        match how {
            Attribution::ByComment(key_of) => {
                let complete = steady && rerecord(&self.rec, &all, except.first().copied().unwrap_or(""), key_of);
                let keyed = all
                    .into_iter()
                    .map(|r| {
                        let k = r.comment.as_deref().and_then(key_of).flatten();
                        (r, k)
                    })
                    .collect();
                Ok((keyed, complete))
            }
            Attribution::ByRecord(unclaimed) => Ok(self.rerecord_claimed(all, except, steady, unclaimed)),
        }
    }

    /// [`Attribution::ByRecord`]: existing records claim their rules; the rest go by
    /// `unclaimed`. With `write`, records are rewritten: new groups written, records whose
    /// rules are gone forgotten (pending ones are left to their ADD).
    fn rerecord_claimed(
        &self,
        all: Vec<Rule>,
        except: &[&str],
        write: bool,
        unclaimed: &dyn Fn(&str) -> Claim,
    ) -> (Keyed, bool) {
        let by_handle: BTreeMap<(String, u64), &str> = all
            .iter()
            .filter_map(|r| Some(((r.chain.clone(), r.handle?), r.comment.as_deref()?)))
            .collect();
        let mut claimed: BTreeMap<(String, u64), String> = BTreeMap::new();
        let mut holding: BTreeSet<String> = BTreeSet::new();
        let mut broken: Vec<String> = Vec::new();
        for k in self.rec.keys() {
            let (Recorded::Rules(r), label) = self.rec.get_labelled(&k) else {
                continue;
            };
            let first = r.first().and_then(|(c, h)| by_handle.get(&(c.clone(), *h)).copied());
            let label = label.as_deref().or(first);
            let holds = label.is_some() && r.iter().all(|(c, h)| by_handle.get(&(c.clone(), *h)).copied() == label);
            if holds {
                for (c, h) in r {
                    claimed.insert((c, h), k.clone());
                }
                holding.insert(k);
            } else {
                broken.push(k);
            }
        }
        let mut complete = true;
        let mut groups: BTreeMap<String, (String, Vec<(String, u64)>)> = BTreeMap::new();
        let mut out = Vec::with_capacity(all.len());
        for r in all {
            let (Some(c), Some(h)) = (r.comment.clone(), r.handle) else {
                out.push((r, None));
                continue;
            };
            let key = match claimed.get(&(r.chain.clone(), h)) {
                Some(k) => Some(k.clone()),
                None => match unclaimed(&c) {
                    Some(Some((k, label))) => {
                        groups
                            .entry(k.clone())
                            .or_insert_with(|| (label, Vec::new()))
                            .1
                            .push((r.chain.clone(), h));
                        Some(k)
                    }
                    Some(None) => {
                        complete = false;
                        None
                    }
                    None => None,
                },
            };
            out.push((r, key));
        }
        if write && complete {
            for (k, (label, rules)) in &groups {
                if !except.contains(&k.as_str()) {
                    self.rec.put_labelled(k, Some(label), rules);
                }
            }
            for k in broken
                .iter()
                .filter(|k| !groups.contains_key(*k) && !except.contains(&k.as_str()))
            {
                self.rec.forget(k);
            }
        }
        (out, write && complete)
    }

    /// Before the commit that makes `key`'s rules (see [`Records::put_pending`]).
    pub fn pending(&self, key: &str) {
        self.rec.put_pending(key);
    }

    /// After ADD's commit: `made` is the attachment's rules as the kernel echoed them (`None`
    /// when a handle is unknown), `shared_now` the shared rules' handles now, `complete`
    /// whether the records were complete before this ADD (the stamp held, or the dump
    /// rewrote them). The stamp is kept, renewed or taken away accordingly.
    pub fn committed(
        &self,
        key: &str,
        label: Option<&str>,
        made: Option<Vec<(String, u64)>>,
        shared_now: Option<Vec<u64>>,
        complete: bool,
    ) {
        match made {
            Some(m) if !m.is_empty() => self.rec.put_labelled(key, label, &m),
            _ => self.rec.forget(key),
        }
        match shared_now {
            Some(hs) if self.stamped && hs == self.listed => {} // as it was
            Some(hs) if complete => self.rec.put_stamp(&hs),
            _ => self.rec.forget_stamp(),
        }
    }

    pub fn forget(&self, key: &str) {
        self.rec.forget(key);
    }

    /// GC: the keys with `prefix` (a network's) that are not in `keep`.
    pub fn stale_keys(&self, prefix: &str, keep: &[String]) -> Vec<String> {
        self.rec
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(prefix) && !keep.contains(k))
            .collect()
    }

    /// The rules of `key`'s record that still exist with a comment `ours` accepts (given the
    /// record's label): what GC may remove of a record that may be partly stale.
    pub fn surviving(&self, key: &str, ours: &dyn Fn(&str, Option<&str>) -> bool) -> Result<Vec<Rule>> {
        let (Recorded::Rules(r), label) = self.rec.get_labelled(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (chain, h) in r {
            if let Some(rule) = self.sock.get_rule(self.family, &self.table, &chain, h)? {
                if rule.comment.as_deref().is_some_and(|c| ours(c, label.as_deref())) {
                    out.push(rule);
                }
            }
        }
        Ok(out)
    }
}

/// (chain, handle) of `n` rules a batch added from message `at` on, as
/// [`Batch::commit_echo`](crate::linux::nft::Batch::commit_echo) gave the handles; `chain_of(i)`
/// names the chain of the i-th. `None` when one is unknown.
pub fn echoed(
    handles: &[Option<u64>],
    at: usize,
    n: usize,
    chain_of: impl Fn(usize) -> String,
) -> Option<Vec<(String, u64)>> {
    (0..n).map(|i| Some((chain_of(i), (*handles.get(at + i)?)?))).collect()
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

    #[test]
    fn labels_round_trip_and_old_records_read_without_one() {
        let dir = std::env::temp_dir().join(format!("nft-records-label-{}", std::process::id()));
        let r = Records::at(&dir.join("ip-t"));
        let k = key("0123456789abcdef", "eth0", "cid");
        let rules = vec![("hostports".to_string(), 4)];
        r.put_labelled(&k, Some("cid"), &rules);
        assert_eq!(r.get_labelled(&k), (Recorded::Rules(rules.clone()), Some("cid".into())));
        assert_eq!(r.get(&k), Recorded::Rules(rules.clone()));
        // A record written before labels: no label line.
        std::fs::write(dir.join("ip-t").join(&k), "cni-multi nft record 1\nhostports 4\n").unwrap();
        assert_eq!(r.get_labelled(&k), (Recorded::Rules(rules), None));
        // A label alone is no record (a finished ADD always made rules).
        r.put_labelled(&k, Some("cid"), &[]);
        assert_eq!(r.get(&k), Recorded::Unusable);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn echoed_handles_need_every_one() {
        let hs = [None, Some(7), Some(9)];
        assert_eq!(
            echoed(&hs, 1, 2, |i| format!("c{i}")),
            Some(vec![("c0".to_string(), 7), ("c1".to_string(), 9)])
        );
        assert_eq!(echoed(&hs, 0, 2, |_| "c".into()), None);
        assert_eq!(echoed(&hs, 2, 2, |_| "c".into()), None);
    }
}
