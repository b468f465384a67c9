//! tuning: change sysctls and link attributes (mac, promisc, mtu, allmulti, txQLen) of the
//! interface a previous plugin made, in the container's netns. Chained only: it needs a
//! prevResult and prints it back (with the new MAC).
//!
//! ADD writes the original link attributes to `<dataDir>/<cid>_<ifname>.json` (the
//! reference's file and format), so DEL can put them back; sysctls are never restored.

use crate::cni::args::CniArgs;
use crate::cni::config::{self, NetConf};
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::link::fmt_mac;
use crate::linux::{statefile, NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::mac::parse_mac;
use crate::pkg::netns::{open_netns, open_netns_for_del};
use anyhow::{anyhow, bail, Context};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

pub static PLUGIN: Plugin = entry::<TuningPlugin>();

/// (`Tuning` is the checked config.)
const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
const ALLOWLIST_FILE: &str = "/etc/cni/tuning/allowlist.conf";

// ---- config -----------------------------------------------------------------------------

/// A sysctl map in file order. A duplicated key is remembered, not silently merged, because
/// the reference rejects it (and serde's maps keep only the last value).
#[derive(Debug, Clone, Default)]
struct Sysctls {
    entries: Vec<(String, String)>,
    duplicated: bool,
}

impl Sysctls {
    fn set(&mut self, k: String, v: String) {
        match self.entries.iter_mut().find(|(key, _)| *key == k) {
            Some(e) => e.1 = v,
            None => self.entries.push((k, v)),
        }
    }
}

/// A map: its keys are sysctl names, kept as written.
impl GoKeys for Sysctls {
    fn shape() -> crate::cni::gokeys::Shape {
        <std::collections::HashMap<String, String> as GoKeys>::shape()
    }
}

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Sysctls;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of sysctl names to string values")
            }
            fn visit_unit<E>(self) -> Result<Sysctls, E> {
                Ok(Sysctls::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Sysctls, A::Error> {
                let mut s = Sysctls::default();
                while let Some((k, v)) = m.next_entry::<String, String>()? {
                    if s.entries.iter().any(|(key, _)| *key == k) {
                        s.duplicated = true;
                    }
                    s.set(k, v);
                }
                Ok(s)
            }
        }
        d.deserialize_any(V)
    }
}

/// The tunable keys: at the top of the config, and again in `args.cni` (which wins).
#[derive(Debug, Default, Deserialize, GoKeys)]
struct TuningArgs {
    #[serde(default)]
    sysctl: Option<Sysctls>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    promisc: Option<bool>,
    #[serde(default)]
    mtu: Option<i64>,
    #[serde(default)]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default)]
    tx_qlen: Option<i64>,
}

#[derive(Debug, Default, Deserialize, GoKeys)]
struct ArgsBlock {
    #[serde(default)]
    cni: Option<TuningArgs>,
}

#[derive(Debug, Deserialize, GoKeys)]
struct TuningConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(flatten)]
    top: TuningArgs,
    #[serde(rename = "args", default)]
    tuning_args: Option<ArgsBlock>,
}

/// The effective settings, after the overrides.
#[derive(Debug)]
struct Tuning {
    net: NetConf,
    data_dir: PathBuf,
    sysctl: Vec<(String, String)>,
    mac: String,
    promisc: bool,
    mtu: i64,
    tx_qlen: Option<i64>,
    allmulti: Option<bool>,
}

impl Tuning {
    fn changes_link(&self) -> bool {
        !self.mac.is_empty() || self.mtu != 0 || self.promisc || self.allmulti.is_some() || self.tx_qlen.is_some()
    }
}

/// Go skel answers plain errors with code 999; config mistakes here are plain errors there.
fn plain(e: CniError) -> anyhow::Error {
    anyhow!(e.msg)
}

/// The reference rejects duplicated sysctl keys before anything else.
fn reject_duplicate_sysctls(stdin: &[u8]) -> anyhow::Result<()> {
    #[derive(Deserialize, GoKeys)]
    struct Only {
        #[serde(default)]
        sysctl: Option<Sysctls>,
    }
    if let Ok(Only { sysctl: Some(s) }) = crate::cni::gokeys::from_slice::<Only>(stdin) {
        if s.duplicated {
            bail!("duplicated sysctl keys are not allowed");
        }
    }
    Ok(())
}

/// Parse the config and apply the overrides in the reference's order: CNI_ARGS `MAC`, then
/// `runtimeConfig.mac`, then `args.cni.*`.
fn parse_conf(stdin: &[u8], cni_args: &str) -> anyhow::Result<Tuning> {
    // A config of the wrong shape is code 7 with the key named, as in every plugin.
    let c: TuningConf = config::parse(stdin)?;
    let mut t = Tuning {
        data_dir: PathBuf::from(c.data_dir.filter(|d| !d.is_empty()).unwrap_or(DEFAULT_DATA_DIR.into())),
        sysctl: c.top.sysctl.map(|s| s.entries).unwrap_or_default(),
        mac: c.top.mac.unwrap_or_default(),
        promisc: c.top.promisc.unwrap_or(false),
        mtu: c.top.mtu.unwrap_or(0),
        tx_qlen: c.top.tx_qlen,
        allmulti: c.top.allmulti,
        net: c.net,
    };
    if !cni_args.is_empty() {
        let a = CniArgs::parse(cni_args).map_err(plain)?;
        a.check_known(&["MAC"]).map_err(plain)?;
        if let Some(mac) = a.get("MAC").filter(|m| !m.is_empty()) {
            t.mac = mac.to_string();
        }
    }
    if let Some(mac) = t.net.runtime_config.mac.clone().filter(|m| !m.is_empty()) {
        t.mac = mac;
    }
    if let Some(a) = c.tuning_args.and_then(|a| a.cni) {
        if let Some(s) = a.sysctl {
            let mut merged = Sysctls {
                entries: std::mem::take(&mut t.sysctl),
                duplicated: false,
            };
            for (k, v) in s.entries {
                merged.set(k, v);
            }
            t.sysctl = merged.entries;
        }
        if let Some(m) = a.mac {
            t.mac = m;
        }
        if let Some(p) = a.promisc {
            t.promisc = p;
        }
        if let Some(m) = a.mtu {
            t.mtu = m;
        }
        if let Some(m) = a.allmulti {
            t.allmulti = Some(m);
        }
        if let Some(q) = a.tx_qlen {
            t.tx_qlen = Some(q);
        }
    }
    Ok(t)
}

/// If the allowlist file exists, every sysctl key must match one of its regexes
/// (one per line, unanchored like Go's `regexp.MatchString`).
fn check_allowlist(sysctl: &[(String, String)], file: &Path) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(go_path_error("open", file, &e)),
    };
    let allowed: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let regexes = allowed
        .iter()
        .map(|p| regex_lite::Regex::new(p).map_err(|e| anyhow!("error parsing regexp {p:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for (key, _) in sysctl {
        if !regexes.iter().any(|r| r.is_match(key)) {
            bail!(
                "Sysctl {key} is not allowed. Only the following sysctls are allowed: [{}]",
                allowed.join(" ")
            );
        }
    }
    Ok(())
}

/// `net.ipv4.conf.IFNAME.x` -> `/proc/sys/net/ipv4/conf/<ifname>/x`: dots become slashes
/// first, so an ifname with a dot (eth0.100) survives; the path must stay under
/// /proc/sys/net after cleaning.
fn sysctl_path(key: &str, ifname: &str) -> anyhow::Result<PathBuf> {
    let rel = key.replace('.', "/").replacen("IFNAME", ifname, 1);
    let mut parts: Vec<&str> = vec!["proc", "sys"];
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let path = format!("/{}", parts.join("/"));
    if !path.starts_with("/proc/sys/net/") {
        bail!("invalid net sysctl key: {key:?}");
    }
    Ok(PathBuf::from(path))
}

/// An io error worded like Go's `*PathError` (`open /x: no such file or directory`).
fn go_path_error(op: &str, path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow!("{op} {}: {}", path.display(), crate::linux::error::io_errno_text(e))
}

fn mac_of(s: &str) -> anyhow::Result<[u8; 6]> {
    parse_mac(s).map_err(|e| anyhow!("invalid args {s} for MAC addr: {}", e.msg))
}

fn u32_of(what: &str, v: i64) -> anyhow::Result<u32> {
    u32::try_from(v).map_err(|_| anyhow!("invalid {what} {v}"))
}

/// What DEL puts back: the original values of the attributes ADD changes. Field order and
/// one-space indent are the reference's file format.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Backup {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "is_zero")]
    mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allmulti: Option<bool>,
    #[serde(rename = "txQLen", default, skip_serializing_if = "Option::is_none")]
    tx_qlen: Option<u32>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// A backup holds five short fields; anything much larger is not ours.
const BACKUP_MAX: u64 = 64 * 1024;

fn backup_path(dir: &Path, cid: &str, ifname: &str) -> PathBuf {
    dir.join(format!("{cid}_{ifname}.json"))
}

fn go_indent_json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    v.serialize(&mut ser).expect("serialising to memory cannot fail");
    out
}

struct TuningPlugin;

impl CniPlugin for TuningPlugin {
    const NAME: &'static str = "tuning";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "set sysctls, MAC, MTU, promisc, allmulti and txqueuelen of the container interface";
    const CAPS: &'static [Capability] = caps::TUNING;
    const HAS_STATUS: bool = false;
    const HAS_GC: bool = false;
    type Conf = Tuning;
    type Lenient = Tuning;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        reject_duplicate_sysctls(&args.stdin)?;
        parse_conf(&args.stdin, &args.args)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        parse_conf(&args.stdin, &args.args)
    }

    fn add(t: Tuning, args: &CmdArgs) -> anyhow::Result<CniResult> {
        check_allowlist(&t.sysctl, Path::new(ALLOWLIST_FILE))?;
        if t.net.prev_result.as_ref().is_none_or(|v| v.is_null()) {
            bail!("Required prevResult missing");
        }
        let mut result = t.net.prev_result()?.expect("checked above");
        let ns = open_netns(&args.netns)?;

        // Undo: a failed ADD leaves the sysctls and the link as it found them and no backup.
        let before = write_sysctls(&ns, &t.sysctl, &args.ifname)?;
        if !t.changes_link() {
            return Ok(result);
        }
        let linked = (|| {
            let mut nl = Netlink::in_netns(&ns)?;
            let backup = create_backup(&mut nl, &t, args)?;
            if let Err(e) = apply_link(&mut nl, &t, &args.ifname) {
                let _ = restore(&mut nl, &args.ifname, &backup);
                let _ = statefile::remove_with_temps(&backup_path(&t.data_dir, &args.container_id, &args.ifname));
                return Err(e);
            }
            Ok(())
        })();
        if let Err(e) = linked {
            restore_sysctls(&ns, &before);
            return Err(e);
        }
        if !t.mac.is_empty() {
            for i in result.interfaces.iter_mut().filter(|i| i.name == args.ifname) {
                i.mac = t.mac.clone();
            }
        }
        Ok(result)
    }

    /// Put the backed-up attributes back. Always succeeds once the config parses (restore
    /// errors are swallowed, like the reference). The backup is removed after a clean restore,
    /// and also when the netns or the link is gone, since nothing can use it any more.
    fn del(t: Tuning, args: &CmdArgs) -> anyhow::Result<()> {
        let path = backup_path(&t.data_dir, &args.container_id, &args.ifname);
        // A backup that is not a small regular file of the right shape (a symlink, a FIFO,
        // garbage) was not written by us: never followed or trusted, only removed (a directory
        // is left for a person).
        let data = match statefile::read_regular(&path, BACKUP_MAX) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An ADD killed while saving leaves only its temp file.
                let _ = statefile::remove_with_temps(&path);
                return Ok(());
            }
            Err(e) => {
                eprintln!("tuning: ignoring backup: {e}");
                let _ = statefile::remove_with_temps(&path);
                return Ok(());
            }
        };
        let Ok(backup) = serde_json::from_slice::<Backup>(&data) else {
            eprintln!("tuning: ignoring backup {}: not a tuning backup", path.display());
            let _ = statefile::remove_with_temps(&path);
            return Ok(());
        };
        let gone = || {
            let _ = statefile::remove_with_temps(&path);
            Ok(())
        };
        let Ok(Some(ns)) = open_netns_for_del(&args.netns) else {
            return gone();
        };
        let Ok(mut nl) = Netlink::in_netns(&ns) else {
            return Ok(());
        };
        match nl.link_by_name(&args.ifname) {
            Ok(Some(_)) => {}
            Ok(None) => return gone(),
            Err(_) => return Ok(()),
        }
        if restore(&mut nl, &args.ifname, &backup).is_ok() {
            let _ = statefile::remove_with_temps(&path);
        }
        Ok(())
    }

    fn check(t: Tuning, args: &CmdArgs) -> anyhow::Result<()> {
        if t.net.prev_result.as_ref().is_none_or(|v| v.is_null()) {
            bail!("Required prevResult missing");
        }
        t.net.prev_result()?;
        let ns = open_netns(&args.netns)?;
        if !t.sysctl.is_empty() {
            let _in = ns.enter()?;
            for (key, want) in &t.sysctl {
                let path = sysctl_path(key, &args.ifname)?;
                let cur = std::fs::read_to_string(&path).map_err(|e| go_path_error("open", &path, &e))?;
                let cur = cur.strip_suffix('\n').unwrap_or(&cur);
                if want != cur {
                    bail!(
                        "Error: Tuning configured value of {} is {want}, current value is {cur}",
                        path.display()
                    );
                }
            }
        }
        let mut nl = Netlink::in_netns(&ns)?;
        let link = nl
            .link_by_name(&args.ifname)
            .ok()
            .flatten()
            .with_context(|| format!("Cannot find container link {}", args.ifname))?;
        let ifname = &args.ifname;
        if !t.mac.is_empty() {
            let cur = link.mac.map(|m| fmt_mac(&m)).unwrap_or_default();
            // Compared as addresses, so an upper-case MAC in the config matches.
            if parse_mac(&t.mac).ok() != link.mac {
                bail!(
                    "Error: Tuning configured Ethernet of {ifname} is {}, current value is {cur}",
                    t.mac
                );
            }
        }
        if t.promisc != link.promisc {
            bail!(
                "Error: Tuning link {ifname} configured promisc is {}, current value is {}",
                t.promisc,
                link.promisc as u8
            );
        }
        if t.mtu != 0 && t.mtu != i64::from(link.mtu) {
            bail!(
                "Error: Tuning configured MTU of {ifname} is {}, current value is {}",
                t.mtu,
                link.mtu
            );
        }
        if let Some(want) = t.allmulti {
            if want != link.allmulti {
                bail!(
                    "Error: Tuning configured all-multicast mode of {ifname} is {want}, current value is {}",
                    link.allmulti
                );
            }
        }
        if let Some(want) = t.tx_qlen {
            if want != i64::from(link.txqlen) {
                bail!(
                    "Error: Tuning configured Transmit Queue Length of {ifname} is {want}, current value is {}",
                    link.txqlen
                );
            }
        }
        Ok(())
    }
}

/// /proc/sys/net belongs to the netns of the thread that opens it, so the writes happen
/// inside the container's netns.
fn write_sysctls(ns: &NetNs, sysctl: &[(String, String)], ifname: &str) -> anyhow::Result<Saved> {
    if sysctl.is_empty() {
        return Ok(Vec::new());
    }
    let _in = ns.enter()?;
    let mut saved = Vec::new();
    for (key, value) in sysctl {
        let path = match sysctl_path(key, ifname) {
            Ok(p) => p,
            Err(e) => {
                put_back(&saved);
                return Err(e);
            }
        };
        // Read first so a failed ADD can put it back (a write-only entry just cannot be).
        let old = std::fs::read_to_string(&path).ok();
        if let Err(e) = std::fs::write(&path, value) {
            put_back(&saved);
            return Err(go_path_error("open", &path, &e));
        }
        saved.push((path, old));
    }
    Ok(saved)
}

/// Sysctl paths written by this ADD with the values they had before.
type Saved = Vec<(PathBuf, Option<String>)>;

/// Newest first; must run inside the container's netns.
fn put_back(saved: &Saved) {
    for (path, old) in saved.iter().rev() {
        if let Some(v) = old {
            if let Err(e) = std::fs::write(path, v.trim_end()) {
                eprintln!("rollback: could not restore {}: {e}", path.display());
            }
        }
    }
}

fn restore_sysctls(ns: &NetNs, saved: &Saved) {
    if saved.is_empty() {
        return;
    }
    match ns.enter() {
        Ok(_in) => put_back(saved),
        Err(e) => eprintln!("rollback: cannot enter the container netns to restore sysctls: {e}"),
    }
}

fn create_backup(nl: &mut Netlink, t: &Tuning, args: &CmdArgs) -> anyhow::Result<Backup> {
    let link = nl
        .link_by_name(&args.ifname)?
        .ok_or_else(|| anyhow!("failed to get {:?}: Link not found", args.ifname))?;
    let b = Backup {
        mac: if t.mac.is_empty() {
            String::new()
        } else {
            link.mac.map(|m| fmt_mac(&m)).unwrap_or_default()
        },
        promisc: t.promisc.then_some(link.promisc),
        mtu: if t.mtu != 0 { link.mtu } else { 0 },
        allmulti: t.allmulti.map(|_| link.allmulti),
        tx_qlen: t.tx_qlen.map(|_| link.txqlen),
    };
    if !t.data_dir.exists() {
        // 0600 on a directory is the reference's mode; root needs no search bit.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o600)
            .create(&t.data_dir)
            .map_err(|e| {
                anyhow!(
                    "failed to create backup directory: {}",
                    go_path_error("mkdir", &t.data_dir, &e)
                )
            })?;
    }
    let path = backup_path(&t.data_dir, &args.container_id, &args.ifname);
    write_private(&path, &go_indent_json(&b)).map_err(|e| {
        anyhow!(
            "failed to save file {}.json: {}",
            args.ifname,
            go_path_error("open", &path, &e)
        )
    })?;
    Ok(b)
}

/// Through a temp file and rename: a full or read-only dataDir leaves no half-written backup,
/// and a symlink or hard link planted at the path is replaced, never written through. No
/// fsync (as in the reference): a backup matters only while the pod's netns lives, and a
/// node crash takes that with it.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    statefile::write_atomic(path, data, 0o600, false)
}

/// The reference's order: mac, promisc (only ever turned on), mtu, allmulti, txQLen.
fn apply_link(nl: &mut Netlink, t: &Tuning, ifname: &str) -> anyhow::Result<()> {
    let index = nl
        .link_by_name(ifname)?
        .ok_or_else(|| anyhow!("failed to get {ifname:?}: Link not found"))?
        .index;
    if !t.mac.is_empty() {
        nl.set_mac(index, mac_of(&t.mac)?)?;
    }
    if t.promisc {
        nl.set_promisc(index, true)?;
    }
    if t.mtu != 0 {
        nl.set_mtu(index, u32_of("mtu", t.mtu)?)?;
    }
    if let Some(on) = t.allmulti {
        nl.set_allmulti(index, on)?;
    }
    if let Some(q) = t.tx_qlen {
        nl.set_txqlen(index, u32_of("txQLen", q)?)?;
    }
    Ok(())
}

// ---- del --------------------------------------------------------------------------------

/// The reference's restore order: mtu, mac, promisc, allmulti, txQLen; every failure named.
fn restore(nl: &mut Netlink, ifname: &str, b: &Backup) -> anyhow::Result<()> {
    let index = nl
        .link_by_name(ifname)?
        .ok_or_else(|| anyhow!("failed to get {ifname:?}: Link not found"))?
        .index;
    let mut errs = Failures::new();
    let mut note = |what: &str, r: anyhow::Result<()>| {
        errs.keep(r.with_context(|| format!("failed to restore {what}")));
    };
    if b.mtu != 0 {
        note("MTU", nl.set_mtu(index, b.mtu).map_err(Into::into));
    }
    if !b.mac.is_empty() {
        note("MAC address", mac_of(&b.mac).and_then(|m| Ok(nl.set_mac(index, m)?)));
    }
    if let Some(p) = b.promisc {
        note("promiscuous mode", nl.set_promisc(index, p).map_err(Into::into));
    }
    if let Some(a) = b.allmulti {
        note("all-multicast mode", nl.set_allmulti(index, a).map_err(Into::into));
    }
    if let Some(q) = b.tx_qlen {
        note("transmit queue length", nl.set_txqlen(index, q).map_err(Into::into));
    }
    Ok(errs.finish()?)
}

/// Fuzzing entry (fuzz/): the config parser with CNI_ARGS, the sysctl names made into paths
/// and the link values checked, as ADD does before it touches the kernel.
#[doc(hidden)]
pub fn fuzz_parse(args: &CmdArgs) -> anyhow::Result<()> {
    reject_duplicate_sysctls(&args.stdin)?;
    let t = parse_conf(&args.stdin, &args.args)?;
    t.net.prev_result()?;
    for (key, _) in &t.sysctl {
        sysctl_path(key, &args.ifname)?;
    }
    if !t.mac.is_empty() {
        mac_of(&t.mac)?;
    }
    u32_of("mtu", t.mtu)?;
    if let Some(q) = t.tx_qlen {
        u32_of("txQLen", q)?;
    }
    let _ = backup_path(&t.data_dir, &args.container_id, &args.ifname);
    Ok(())
}

/// Fuzzing entry (fuzz/): one sysctl name as tuning maps it to a path under /proc/sys/net.
#[doc(hidden)]
pub fn fuzz_sysctl_path(key: &str, ifname: &str) -> anyhow::Result<PathBuf> {
    sysctl_path(key, ifname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        let p = |k: &str| sysctl_path(k, "eth0.100").map(|p| p.display().to_string());
        assert_eq!(p("net.core.somaxconn").unwrap(), "/proc/sys/net/core/somaxconn");
        assert_eq!(
            p("net.ipv4.conf.IFNAME.arp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.100/arp_filter"
        );
        assert_eq!(p("net/ipv4/ip_forward").unwrap(), "/proc/sys/net/ipv4/ip_forward");
        for bad in ["kernel.hostname", "net", "vm.swappiness"] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid net sysctl key: "), "{bad}: {e}");
        }
    }

    #[test]
    fn wrong_typed_keys_are_code_7_with_the_key_named() {
        for (bad, key) in [
            (r#""mtu":"1500""#, "mtu"),
            (r#""mac":42"#, "mac"),
            (r#""sysctl":"x""#, "sysctl"),
        ] {
            let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"tuning",{bad}}}"#);
            let e = parse_conf(conf.as_bytes(), "").unwrap_err();
            let c = CniError::from_anyhow(&e);
            assert_eq!(c.code, crate::cni::error::code::INVALID_CONFIG, "{bad}: {}", c.msg);
            assert!(c.msg.contains(&format!("key {key:?}")), "{bad}: {}", c.msg);
        }
    }

    #[test]
    fn duplicates_rejected() {
        let dup = br#"{"name":"n","sysctl":{"net.core.somaxconn":"1","net.core.somaxconn":"2"}}"#;
        assert_eq!(
            reject_duplicate_sysctls(dup).unwrap_err().to_string(),
            "duplicated sysctl keys are not allowed"
        );
        assert!(reject_duplicate_sysctls(br#"{"name":"n","sysctl":{"a":"1","b":"2"}}"#).is_ok());
    }

    #[test]
    fn override_order() {
        let conf = br#"{"name":"n","mac":"00:00:00:00:00:01","runtimeConfig":{"mac":"00:00:00:00:00:03"},
            "sysctl":{"net.a":"1","net.b":"2"},"mtu":1400,
            "args":{"cni":{"mac":"00:00:00:00:00:04","sysctl":{"net.b":"3","net.c":"4"},"mtu":1300,"txQLen":0,"allmulti":false,"promisc":true}}}"#;
        let t = parse_conf(conf, "IgnoreUnknown=1;MAC=00:00:00:00:00:02").unwrap();
        assert_eq!(t.mac, "00:00:00:00:00:04");
        assert_eq!(
            t.sysctl,
            vec![
                ("net.a".into(), "1".into()),
                ("net.b".into(), "3".into()),
                ("net.c".into(), "4".into())
            ]
        );
        assert_eq!(
            (t.mtu, t.tx_qlen, t.allmulti, t.promisc),
            (1300, Some(0), Some(false), true)
        );
        assert_eq!(t.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let t = parse_conf(br#"{"name":"n","mac":"00:00:00:00:00:01"}"#, "MAC=00:00:00:00:00:02").unwrap();
        assert_eq!(t.mac, "00:00:00:00:00:02");
        let e = parse_conf(br#"{"name":"n"}"#, "FOO=1").unwrap_err().to_string();
        assert_eq!(e, "ARGS: unknown args [\"FOO=1\"]");
    }

    #[test]
    fn backup_format() {
        let b = Backup {
            mac: "0a:58:0a:f4:01:02".into(),
            promisc: Some(false),
            mtu: 1500,
            allmulti: Some(true),
            tx_qlen: Some(1000),
        };
        assert_eq!(
            String::from_utf8(go_indent_json(&b)).unwrap(),
            "{\n \"mac\": \"0a:58:0a:f4:01:02\",\n \"promisc\": false,\n \"mtu\": 1500,\n \"allmulti\": true,\n \"txQLen\": 1000\n}"
        );
        assert_eq!(go_indent_json(&Backup::default()), b"{}");
    }

    #[test]
    fn allowlist() {
        let dir = std::env::temp_dir().join(format!("cm-tuning-allow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("allowlist.conf");
        let s = |k: &str| vec![(k.to_string(), "1".to_string())];
        assert!(check_allowlist(&s("net.anything"), &f).is_ok(), "no file: no check");
        std::fs::write(
            &f,
            "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]*$\n\n  ^net\\.core\\.somaxconn$  \n",
        )
        .unwrap();
        assert!(check_allowlist(&s("net.core.somaxconn"), &f).is_ok());
        assert!(check_allowlist(&s("net.ipv4.conf.IFNAME.arp_filter"), &f).is_ok());
        let e = check_allowlist(&s("net.ipv4.ip_forward"), &f).unwrap_err().to_string();
        assert!(e.starts_with("Sysctl net.ipv4.ip_forward is not allowed."), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(TuningConf::shape()).unwrap();
        let t = parse_conf(
            br#"{"cniVersion":"1.0.0","name":"n","SysCtl":{"net.ipv4.conf.IFNAME.arp_notify":"1"},"Promisc":true,
                 "MTU":1400,"TxQLen":500,"DataDir":"/tmp/x","Args":{"CNI":{"Mac":"0a:58:00:00:00:03"}}}"#,
            "",
        )
        .unwrap();
        // The sysctl names are data: kept as written.
        assert_eq!(
            t.sysctl,
            vec![("net.ipv4.conf.IFNAME.arp_notify".to_string(), "1".to_string())]
        );
        assert!(t.promisc);
        assert_eq!(
            (t.mtu, t.tx_qlen, t.mac.as_str()),
            (1400, Some(500), "0a:58:00:00:00:03")
        );
        assert_eq!(t.data_dir, PathBuf::from("/tmp/x"));
        // A sysctl given under two spellings of the key is a duplicate, as in the reference
        // (its duplicate check spans every decode of the field).
        let e = reject_duplicate_sysctls(br#"{"sysctl":{"net.a":"1"},"SysCtl":{"net.a":"2"}}"#).unwrap_err();
        assert_eq!(e.to_string(), "duplicated sysctl keys are not allowed");
    }
}
