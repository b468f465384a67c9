//! Which packet-filter tools a node uses, read without running any of them: where the
//! `iptables` / `ip6tables` executable is and which variant it is, whether iptables-nft's
//! tables exist in nf_tables, whether legacy x_tables tables exist in this network namespace.
//! The decision made from these facts lives above (`pkg::backend`); this module only reads.

use std::path::{Path, PathBuf};

use super::nft::{Family, NftSocket};
use super::Result;

/// Where an `iptables` executable is looked for after `$PATH`: the directories systemd and
/// the distributions put it in (kubelet or containerd started by hand may have a short PATH).
pub const STANDARD_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The tables iptables-nft makes in nf_tables (`iptables -t <table>`), per family.
pub const IPTABLES_TABLES: &[&str] = &["filter", "nat", "mangle", "raw", "security"];

/// What an `iptables` executable turns out to be once its symlinks are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolVariant {
    /// `xtables-nft-multi` / `iptables-nft`: rules are nf_tables rules.
    Nft,
    /// `xtables-legacy-multi` / `iptables-legacy`: rules live in x_tables.
    Legacy,
    /// Anything else (a wrapper script such as Kubernetes' `iptables-wrapper`, a busybox).
    Unknown,
}

/// The facts of one family (`ip` or `ip6`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FamilyProbe {
    /// The first `iptables` (v4) / `ip6tables` (v6) found, with its variant.
    pub tool: Option<(PathBuf, ToolVariant)>,
    /// iptables-nft's tables present in nf_tables (`ip filter`, `ip nat`, …), by name.
    pub nft_tables: Vec<String>,
    /// Legacy x_tables tables registered in this netns (`/proc/net/ip_tables_names`).
    pub legacy_tables: Vec<String>,
    /// Those of `legacy_tables` that hold something: a rule, a user-defined chain or a DROP
    /// policy (a table is registered by a mere `iptables-legacy -L`; one that could not be
    /// read counts as in use).
    pub legacy_in_use: Vec<String>,
}

/// The `iptables` (or `ip6tables`) executable `$PATH` (given as `path_env`), then the
/// standard directories, would run.
pub fn find_tool(name: &str, path_env: Option<&str>) -> Option<PathBuf> {
    let from_path = path_env
        .into_iter()
        .flat_map(|p| p.split(':'))
        .filter(|d| !d.is_empty());
    from_path
        .chain(STANDARD_DIRS.iter().copied())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The variant of an executable, from the names along its symlink chain (Debian's
/// alternatives: `/usr/sbin/iptables` → `/etc/alternatives/iptables` →
/// `/usr/sbin/iptables-nft` → `xtables-nft-multi`). The first name that tells wins.
pub fn variant_of(path: &Path) -> ToolVariant {
    let mut p = path.to_path_buf();
    for _ in 0..16 {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(v) = variant_of_name(name) {
            return v;
        }
        match std::fs::read_link(&p) {
            Ok(next) => p = p.parent().map(|d| d.join(&next)).unwrap_or(next),
            Err(_) => break,
        }
    }
    ToolVariant::Unknown
}

/// `iptables-nft`, `xtables-nft-multi`, `ip6tables-legacy`, … by name alone.
pub fn variant_of_name(name: &str) -> Option<ToolVariant> {
    if name.contains("legacy") {
        Some(ToolVariant::Legacy)
    } else if name.contains("-nft") || name.starts_with("xtables-nft") {
        Some(ToolVariant::Nft)
    } else {
        None
    }
}

/// The facts of `family` in the namespace `sock` is bound to (which must be the calling
/// thread's, for the `/proc/thread-self/net` read), with `$PATH` as given.
pub fn probe(sock: &NftSocket, family: Family, path_env: Option<&str>) -> Result<FamilyProbe> {
    let v6 = family == Family::Ip6;
    let tool = find_tool(if v6 { "ip6tables" } else { "iptables" }, path_env).map(|p| {
        let v = variant_of(&p);
        (p, v)
    });
    let nft_tables = sock
        .list_tables(family)?
        .into_iter()
        .filter(|t| IPTABLES_TABLES.contains(&t.as_str()))
        .collect();
    let xf = super::xtables::Family::of(v6);
    let legacy_tables = super::xtables::registered(xf);
    let legacy_in_use = legacy_tables
        .iter()
        .filter(|t| super::xtables::in_use(xf, t).unwrap_or(true))
        .cloned()
        .collect();
    Ok(FamilyProbe {
        tool,
        nft_tables,
        legacy_tables,
        legacy_in_use,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_by_name() {
        assert_eq!(variant_of_name("iptables-legacy"), Some(ToolVariant::Legacy));
        assert_eq!(variant_of_name("xtables-legacy-multi"), Some(ToolVariant::Legacy));
        assert_eq!(variant_of_name("ip6tables-nft"), Some(ToolVariant::Nft));
        assert_eq!(variant_of_name("xtables-nft-multi"), Some(ToolVariant::Nft));
        assert_eq!(variant_of_name("iptables"), None);
        assert_eq!(variant_of_name("iptables-wrapper"), None);
    }

    #[test]
    fn follows_the_alternatives_chain() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let d = std::env::temp_dir().join(format!("cm-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sbin")).unwrap();
        std::fs::create_dir_all(d.join("alt")).unwrap();
        let multi = d.join("sbin/xtables-legacy-multi");
        std::fs::write(&multi, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&multi, std::fs::Permissions::from_mode(0o755)).unwrap();
        symlink("xtables-legacy-multi", d.join("sbin/iptables-legacy")).unwrap();
        symlink(d.join("sbin/iptables-legacy"), d.join("alt/iptables")).unwrap();
        symlink("../alt/iptables", d.join("sbin/iptables")).unwrap();
        let sbin = d.join("sbin");
        let found = find_tool("iptables", Some(&format!("/nonexistent:{}", sbin.display()))).unwrap();
        assert_eq!(found, sbin.join("iptables"));
        assert_eq!(variant_of(&found), ToolVariant::Legacy);
        // A plain file of an unknown name says nothing.
        let w = d.join("sbin/wrapper");
        std::fs::write(&w, b"#!/bin/sh\n").unwrap();
        assert_eq!(variant_of(&w), ToolVariant::Unknown);
        // Not executable: not found there.
        std::fs::set_permissions(&multi, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_ne!(
            find_tool("iptables", Some(&sbin.display().to_string())),
            Some(sbin.join("iptables"))
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
