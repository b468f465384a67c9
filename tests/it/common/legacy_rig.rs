//! A "legacy node": a node netns whose iptables is iptables-legacy (x_tables), the reference
//! plugins run with a PATH whose `iptables`, `ip6tables` and their `-save`/`-restore` are the
//! `-legacy` tools (as Debian's alternatives set them on such a node), and readers of the
//! node's x_tables and nf_tables state.

use crate::common::rig::{self, TempDir, TestNs, PLUGIN_PATH};

/// The tools the reference plugins exec, each a symlink to its `-legacy` twin.
const TOOLS: [&str; 6] = [
    "iptables",
    "ip6tables",
    "iptables-save",
    "iptables-restore",
    "ip6tables-save",
    "ip6tables-restore",
];

/// `iptables-save` → `iptables-legacy-save`, `ip6tables` → `ip6tables-legacy`.
fn legacy_twin(tool: &str) -> String {
    let (base, rest) = tool.split_once('-').unwrap_or((tool, ""));
    if rest.is_empty() {
        format!("{base}-legacy")
    } else {
        format!("{base}-legacy-{rest}")
    }
}

/// A directory of symlinks making `iptables` the legacy one, first in the returned PATH.
pub struct LegacyPath {
    dir: TempDir,
}

impl LegacyPath {
    pub fn new() -> LegacyPath {
        let dir = TempDir::new("legacy-path");
        for t in TOOLS {
            let target = rig::tool(&legacy_twin(t));
            std::os::unix::fs::symlink(&target, dir.join(t)).unwrap();
        }
        LegacyPath { dir }
    }

    /// The PATH for a reference plugin on a legacy node.
    pub fn path(&self) -> String {
        format!("{}:{PLUGIN_PATH}", self.dir.as_str())
    }
}

impl Default for LegacyPath {
    fn default() -> Self {
        Self::new()
    }
}

/// Root, the reference plugins named and the legacy tools; skips (fails under CI=true).
pub fn require(test: &str, plugins: &[&str]) -> bool {
    for p in plugins {
        if !rig::require_reference(test, p) {
            return false;
        }
    }
    for t in TOOLS.iter().map(|t| legacy_twin(t)).chain(["nft".to_string()]) {
        if !rig::tool(&t).is_file() {
            assert!(
                !rig::in_ci(),
                "{test}: needs {t}, and CI=true: failing instead of skipping"
            );
            eprintln!("{test}: skipped: needs {t} (Debian's iptables package)");
            return false;
        }
    }
    true
}

/// `iptables-legacy-save -t TABLE` (or ip6tables') without its timestamp comments and
/// counters: what a reader compares.
pub fn saved(ns: &TestNs, v6: bool, table: &str) -> String {
    let tool = if v6 {
        "ip6tables-legacy-save"
    } else {
        "iptables-legacy-save"
    };
    ns.exec_ok(&[tool, "-t", table])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.split_once(" [") {
            // `:CHAIN POLICY [p:b]`
            Some((head, _)) if l.starts_with(':') => format!("{head}\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// nat and filter of both families, as `saved` prints them.
pub fn all_saved(ns: &TestNs) -> String {
    let mut s = String::new();
    for v6 in [false, true] {
        for t in ["nat", "filter"] {
            s += &saved(ns, v6, t);
        }
    }
    s
}

/// `nft list ruleset`.
pub fn nft_ruleset(ns: &TestNs) -> String {
    ns.exec_ok(&["nft", "list", "ruleset"])
}

/// `iptables-legacy -P FORWARD DROP` in both families (what Docker leaves on a node).
pub fn forward_drop(ns: &TestNs) {
    ns.exec_ok(&["iptables-legacy", "-w", "-P", "FORWARD", "DROP"]);
    ns.exec_ok(&["ip6tables-legacy", "-w", "-P", "FORWARD", "DROP"]);
}
