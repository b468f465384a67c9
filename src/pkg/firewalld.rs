//! The firewall plugin's firewalld backend (upstream's `plugins/meta/firewall/firewalld.go`),
//! and what `cni-multi inspect` asks firewalld.
//!
//! On a node where firewalld runs (it owns `org.fedoraproject.FirewallD1` on the D-Bus system
//! bus), firewalld's own nftables table rejects forwarded traffic of addresses in no
//! permissive zone, whatever another table accepts. So, as upstream, ADD binds each pod
//! address (`10.88.0.5/32`, `fd00::5/128`) to a zone (`firewalldZone`, default `trusted`)
//! with `addSource`, in firewalld's runtime configuration (a firewalld restart or reload
//! forgets it, as it forgets upstream's); DEL unbinds it with `removeSource`; CHECK asks
//! `getZoneOfSource`.
//!
//! Beyond upstream, GC: which sources an attachment bound is kept in a small record per
//! attachment, so GC unbinds only the sources cni-multi bound itself, never one that was in
//! the zone before (another tool's, an operator's) or that a live attachment also names:
//!
//! ```text
//! $CNI_MULTI_STATE_DIR (default /run/cni/cni-multi)/firewalld/<boot id>-<netns cookie>/
//!     <h16(network)>-<h16(ifname:containerID)>
//!         cni-multi firewalld record 1
//!         network <name> / container <id> / ifname <name> / zone <zone>
//!         pending|added|present <source>      one line per address
//! ```
//!
//! `pending` is written before `addSource` (a killed ADD still leaves DEL and GC the address),
//! `added` after it bound the source, `present` when firewalld answered ZONE_ALREADY_SET.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cni::error::{code, CniError, Failures};
use crate::linux::dbus::{self, Bus, Value};
use crate::linux::statefile;
use crate::pkg::nft_records;
use crate::pkg::sha512::hex_prefix;

/// The well-known name firewalld owns on the system bus while it runs.
pub const NAME: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.zone";
/// The D-Bus error firewalld answers with; its message starts with firewalld's error code.
const EXCEPTION: &str = "org.fedoraproject.FirewallD1.Exception";
/// `firewalldZone` when unset (upstream's default).
pub const DEFAULT_ZONE: &str = "trusted";

const MAGIC: &str = "cni-multi firewalld record 1";
const TMP_DIR: &str = ".tmp";
const MAX_FILE: u64 = 16 * 1024;

/// The source firewalld binds for a pod address: the address as a host prefix (upstream's
/// `ipString`).
pub fn source_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// Why firewalld cannot be used: where it was looked for, and what was found there.
#[derive(Debug, Clone)]
pub struct Absent {
    pub address: String,
    pub reason: String,
}

impl std::fmt::Display for Absent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whence = match std::env::var(dbus::SYSTEM_BUS_ENV) {
            Ok(a) if !a.is_empty() => format!("from {}", dbus::SYSTEM_BUS_ENV),
            _ => format!("the default; {} is unset", dbus::SYSTEM_BUS_ENV),
        };
        write!(
            f,
            "firewalld is not reachable on the D-Bus system bus at {} ({whence}): {}",
            self.address, self.reason
        )
    }
}

/// firewalld, running and reachable, for the length of one [`session`].
pub struct Firewalld<'a> {
    bus: &'a Bus,
    address: &'a str,
}

/// Whether `addSource` bound the source or found it bound already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Now,
    Already,
}

/// firewalld's error code (`ZONE_ALREADY_SET`, `INVALID_ZONE`, …) in an error it answered.
fn fw_code(e: &dbus::Error) -> Option<&str> {
    match e {
        dbus::Error::Remote { name, message } if name == EXCEPTION => {
            Some(message.split(':').next().unwrap_or(message).trim())
        }
        _ => None,
    }
}

/// Errors that mean "not there" to a removal: the source is in no zone or another zone
/// (someone moved it: not ours to take), the zone is gone, firewalld left the bus meanwhile.
fn nothing_to_remove(e: &dbus::Error) -> bool {
    matches!(fw_code(e), Some("UNKNOWN_SOURCE" | "ZONE_CONFLICT" | "INVALID_ZONE"))
        || matches!(e, dbus::Error::Remote { name, .. }
            if name == "org.freedesktop.DBus.Error.ServiceUnknown"
                || name == "org.freedesktop.DBus.Error.NameHasNoOwner")
}

/// Runs `f` with firewalld on the system bus (`$DBUS_SYSTEM_BUS_ADDRESS`, else the default
/// socket): one connection, made and closed on the calling thread (`dbus::with_bus`).
pub fn session<T>(f: impl AsyncFnOnce(&Firewalld<'_>) -> T) -> Result<T, Absent> {
    session_at(&dbus::system_bus_address(), f)
}

fn session_at<T>(address: &str, f: impl AsyncFnOnce(&Firewalld<'_>) -> T) -> Result<T, Absent> {
    let absent = |reason: String| Absent {
        address: address.to_string(),
        reason,
    };
    let r = dbus::with_bus(address, async |bus| match bus.name_has_owner(NAME).await {
        Ok(true) => Ok(f(&Firewalld { bus, address }).await),
        Ok(false) => Err(format!("no connection owns {NAME} (firewalld is not running)")),
        Err(e) => Err(e.to_string()),
    });
    match r {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(reason)) => Err(absent(reason)),
        Err(dbus::Error::Connect { reason, .. }) => Err(absent(reason)),
        Err(e) => Err(absent(e.to_string())),
    }
}

impl Firewalld<'_> {
    pub fn address(&self) -> &str {
        self.address
    }

    async fn zone_call(&self, member: &str, args: &[&str]) -> Result<Value, dbus::Error> {
        self.bus.call(NAME, PATH, ZONE_IFACE, member, args).await
    }

    /// Binds `source` to `zone` in the runtime configuration.
    pub async fn add_source(&self, zone: &str, source: &str) -> Result<Bound, dbus::Error> {
        match self.zone_call("addSource", &[zone, source]).await {
            Ok(_) => Ok(Bound::Now),
            Err(e) if fw_code(&e) == Some("ZONE_ALREADY_SET") => Ok(Bound::Already),
            Err(e) => Err(e),
        }
    }

    /// Unbinds `source` from `zone`; a source that is not there is no error.
    pub async fn remove_source(&self, zone: &str, source: &str) -> Result<(), dbus::Error> {
        match self.zone_call("removeSource", &[zone, source]).await {
            Err(e) if !nothing_to_remove(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// The zone `source` is bound to, `""` when none.
    pub async fn zone_of_source(&self, source: &str) -> Result<String, dbus::Error> {
        match self.zone_call("getZoneOfSource", &[source]).await? {
            Value::Str(z) => Ok(z),
            v => Err(dbus::Error::Call(format!("getZoneOfSource answered {v:?}"))),
        }
    }
}

// ---- the records ----------------------------------------------------------------------------

/// How an attachment's source came to be in its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// ADD was about to bind it (or was killed while it did).
    Pending,
    /// ADD bound it: ours.
    Added,
    /// It was bound already when ADD asked (ZONE_ALREADY_SET): DEL unbinds it, as upstream
    /// does, GC leaves it.
    Present,
}

impl Held {
    fn as_str(self) -> &'static str {
        match self {
            Held::Pending => "pending",
            Held::Added => "added",
            Held::Present => "present",
        }
    }
}

/// What one attachment bound in firewalld.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub zone: String,
    pub sources: Vec<(Held, String)>,
}

impl Record {
    fn to_text(&self) -> String {
        let mut t = format!(
            "{MAGIC}\nnetwork {}\ncontainer {}\nifname {}\nzone {}\n",
            self.network, self.container_id, self.ifname, self.zone
        );
        for (h, s) in &self.sources {
            t += &format!("{} {s}\n", h.as_str());
        }
        t
    }

    fn parse(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut r = Record::default();
        for l in lines {
            let (k, v) = l.split_once(' ')?;
            match k {
                "network" => r.network = v.into(),
                "container" => r.container_id = v.into(),
                "ifname" => r.ifname = v.into(),
                "zone" => r.zone = v.into(),
                "pending" => r.sources.push((Held::Pending, v.into())),
                "added" => r.sources.push((Held::Added, v.into())),
                "present" => r.sources.push((Held::Present, v.into())),
                _ => return None,
            }
        }
        (!r.zone.is_empty()).then_some(r)
    }

    /// The sources cni-multi may have bound (GC unbinds only these).
    fn ours(&self) -> impl Iterator<Item = &str> {
        self.sources
            .iter()
            .filter(|(h, _)| *h != Held::Present)
            .map(|(_, s)| s.as_str())
    }
}

/// The records of the node's network namespace (the calling thread's), keyed like the
/// nftables records (`nft_records::key`). Without a netns cookie there is no store: ADD then
/// binds as upstream does and GC has nothing to go by.
pub struct Store {
    dir: Option<PathBuf>,
}

impl Store {
    pub fn open() -> Store {
        let cookie = crate::linux::nft::NftSocket::open().ok().and_then(|s| s.netns_cookie());
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
        let dir = match (cookie, boot) {
            (Some(c), Some(b)) => Some(
                nft_records::state_root()
                    .join("firewalld")
                    .join(format!("{}-{c}", b.trim())),
            ),
            _ => None,
        };
        Store { dir }
    }

    /// A store kept in `dir` (unit tests).
    #[cfg(test)]
    fn at(dir: &std::path::Path) -> Store {
        Store {
            dir: Some(dir.to_path_buf()),
        }
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(key))
    }

    pub fn get(&self, key: &str) -> Option<Record> {
        let bytes = statefile::read_regular(&self.path(key)?, MAX_FILE).ok()?;
        Record::parse(&bytes)
    }

    pub fn put(&self, key: &str, rec: &Record) -> io::Result<()> {
        let (Some(p), Some(dir)) = (self.path(key), self.dir.as_ref()) else {
            return Ok(());
        };
        let tmp = dir.join(TMP_DIR);
        let text = rec.to_text();
        let mut r = statefile::write_atomic_in(&p, &tmp, text.as_bytes(), 0o600, false);
        if r.as_ref().is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&tmp)?;
            r = statefile::write_atomic_in(&p, &tmp, text.as_bytes(), 0o600, false);
        }
        r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
    }

    pub fn forget(&self, key: &str) {
        if let (Some(p), Some(d)) = (self.path(key), self.dir.as_ref()) {
            let _ = statefile::remove_with_temps_in(&p, &d.join(TMP_DIR));
        }
    }

    /// Every readable record, with its key.
    pub fn all(&self) -> Vec<(String, Record)> {
        let Some(rd) = self.dir.as_ref().and_then(|d| std::fs::read_dir(d).ok()) else {
            return Vec::new();
        };
        let mut out: Vec<(String, Record)> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| nft_records::is_key(n))
            .filter_map(|k| self.get(&k).map(|r| (k, r)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The record key of an attachment.
pub fn key(network: &str, container_id: &str, ifname: &str) -> String {
    nft_records::key(&hex_prefix(network, 16), ifname, container_id)
}

/// A zone name firewalld could have: it becomes a line of the record, and firewalld's own
/// names are letters, digits and `_-+/.` (code 7 names the key otherwise).
pub fn check_zone_name(zone: &str) -> Result<()> {
    if zone.is_empty() || zone.len() > 64 || !zone.chars().all(|c| c.is_ascii_alphanumeric() || "_-+/.".contains(c)) {
        bail!(CniError::invalid_config(format!(
            "firewalldZone {zone:?} is not a firewalld zone name"
        )));
    }
    Ok(())
}

// ---- the verbs --------------------------------------------------------------------------------

/// One attachment: what its record is keyed and labelled by.
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Attachment<'_> {
    fn key(&self) -> String {
        key(self.network, self.container_id, self.ifname)
    }
}

/// What the firewall's `backend` asks of firewalld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `backend` unset: firewalld when it runs (upstream's `isFirewalldRunning`).
    IfRunning,
    /// `backend: "firewalld"`: firewalld, or code 11 naming the bus.
    Required,
}

/// firewalld's absence, as `want` takes it: `Ok(None)` (use the other backends) or code 11.
fn unless_required<T>(want: Want, r: Result<T, Absent>) -> Result<Option<T>> {
    match (r, want) {
        (Ok(t), _) => Ok(Some(t)),
        (Err(_), Want::IfRunning) => Ok(None),
        (Err(a), Want::Required) => {
            Err(CniError::new(code::TRY_AGAIN_LATER, format!("backend \"firewalld\": {a}")).into())
        }
    }
}

/// ADD: binds every address to `zone`. False when firewalld is not running and not required
/// (the caller's rules then do the job). On failure nothing this call bound stays bound.
pub fn add(want: Want, att: &Attachment, zone: &str, ips: &[IpAddr]) -> Result<bool> {
    let store = Store::open();
    let key = att.key();
    let r = session(async |fw| add_in(fw, &store, &key, att, zone, ips).await);
    Ok(unless_required(want, r)?.transpose()?.is_some())
}

async fn add_in(
    fw: &Firewalld<'_>,
    store: &Store,
    key: &str,
    att: &Attachment<'_>,
    zone: &str,
    ips: &[IpAddr],
) -> Result<()> {
    let before = store.get(key);
    let was_ours = |s: &str| {
        before
            .as_ref()
            .is_some_and(|r| r.zone == zone && r.ours().any(|o| o == s))
    };
    let mut rec = Record {
        network: att.network.into(),
        container_id: att.container_id.into(),
        ifname: att.ifname.into(),
        zone: zone.into(),
        sources: ips.iter().map(|ip| (Held::Pending, source_of(*ip))).collect(),
    };
    store
        .put(key, &rec)
        .context("cannot write the firewalld record of the attachment")?;
    for i in 0..rec.sources.len() {
        let src = rec.sources[i].1.clone();
        match fw.add_source(zone, &src).await {
            Ok(Bound::Now) => rec.sources[i].0 = Held::Added,
            Ok(Bound::Already) if was_ours(&src) => rec.sources[i].0 = Held::Added,
            Ok(Bound::Already) => rec.sources[i].0 = Held::Present,
            Err(e) => {
                for (_, s) in rec.sources[..i].iter().filter(|(h, _)| *h == Held::Added) {
                    if let Err(e) = fw.remove_source(zone, s).await {
                        eprintln!("rollback: firewalld removeSource {zone} {s}: {e}");
                    }
                }
                store.forget(key);
                return Err(add_error(zone, &src, &e));
            }
        }
    }
    store
        .put(key, &rec)
        .context("cannot write the firewalld record of the attachment")
}

fn add_error(zone: &str, src: &str, e: &dbus::Error) -> anyhow::Error {
    let msg = format!("failed to add the address {src} to firewalld zone {zone:?}: {e}");
    match fw_code(e) {
        Some("INVALID_ZONE") => CniError::invalid_config(format!("firewalldZone {zone:?}: {msg}")).into(),
        _ => CniError::internal(msg).into(),
    }
}

/// DEL: unbinds what the record names and the addresses of prevResult (`prev_ips`, bound to
/// `zone` as upstream assumes). Best effort: firewalld gone, the zone gone, a source no longer
/// bound are all fine. `ask_firewalld` says whether to look for firewalld when the attachment
/// has no record (the backend is firewalld, or unset).
pub fn del(att: &Attachment, zone: &str, prev_ips: &[IpAddr], ask_firewalld: bool) -> Result<()> {
    let store = Store::open();
    let key = att.key();
    let rec = store.get(&key);
    let mut todo: Vec<(String, String)> = Vec::new();
    if let Some(r) = &rec {
        todo.extend(r.sources.iter().map(|(_, s)| (r.zone.clone(), s.clone())));
    }
    if rec.is_some() || ask_firewalld {
        for ip in prev_ips {
            let s = source_of(*ip);
            if !todo.iter().any(|(_, t)| *t == s) {
                todo.push((zone.to_string(), s));
            }
        }
    }
    if !todo.is_empty() {
        // firewalld not running: its runtime sources went with it.
        let r = session(async |fw| {
            let mut errs = Failures::new();
            for (z, s) in &todo {
                if let Err(e) = fw.remove_source(z, s).await {
                    errs.push(anyhow::anyhow!("firewalld removeSource {z} {s}: {e}"));
                }
            }
            errs.finish().map_err(anyhow::Error::from)
        });
        if let Ok(r) = r {
            r?;
        }
    }
    if rec.is_some() {
        store.forget(&key);
    }
    Ok(())
}

/// CHECK: every address is bound to `zone`. False when firewalld is not running and not
/// required.
pub fn check(want: Want, zone: &str, ips: &[IpAddr]) -> Result<bool> {
    let r = session(async |fw| {
        for ip in ips {
            let src = source_of(*ip);
            let z = fw
                .zone_of_source(&src)
                .await
                .map_err(|e| anyhow::anyhow!("firewalld getZoneOfSource {src}: {e}"))?;
            if z != zone {
                let now = if z.is_empty() {
                    "in no zone".to_string()
                } else {
                    format!("in zone {z:?}")
                };
                bail!("firewalld: the address {src} is {now}, not in zone {zone:?}");
            }
        }
        Ok(())
    });
    Ok(unless_required(want, r)?.transpose()?.is_some())
}

/// GC: unbinds the sources of `network`'s attachments that are not in `valid` ((container ID,
/// ifname) pairs), of those cni-multi bound itself and no other attachment's record names,
/// while they are still in the zone they were bound to. With firewalld unreachable the
/// records stay for the next GC.
pub fn gc(network: &str, valid: &[(&str, &str)]) -> Result<()> {
    let store = Store::open();
    let prefix = format!("{}-", hex_prefix(network, 16));
    let keep: Vec<String> = valid.iter().map(|(c, i)| key(network, c, i)).collect();
    let (stale, live): (Vec<_>, Vec<_>) = store
        .all()
        .into_iter()
        .partition(|(k, _)| k.starts_with(&prefix) && !keep.contains(k));
    if stale.is_empty() {
        return Ok(());
    }
    let shared = |s: &str| live.iter().any(|(_, l)| l.sources.iter().any(|(_, ls)| ls == s));
    let r = session(async |fw| {
        let mut errs = Failures::new();
        for (k, r) in &stale {
            let mut ok = true;
            for s in r.ours().filter(|s| !shared(s)) {
                let res = match fw.zone_of_source(s).await {
                    Ok(z) if z == r.zone => fw.remove_source(&r.zone, s).await,
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = res {
                    ok = false;
                    errs.push(anyhow::anyhow!(
                        "firewalld: removing {s} of {}/{} from zone {}: {e}",
                        r.container_id,
                        r.ifname,
                        r.zone
                    ));
                }
            }
            if ok {
                store.forget(k);
            }
        }
        Ok(errs.finish()?)
    });
    r.unwrap_or(Ok(()))
}

/// What `cni-multi inspect` shows of firewalld: the bus address, and the zone each of
/// `sources` is in (`""`: none). `Err` when firewalld is not reachable.
pub fn zones_of(sources: &[String]) -> Result<(String, Vec<String>), Absent> {
    session(async |fw| {
        let mut zones = Vec::new();
        for s in sources {
            zones.push(fw.zone_of_source(s).await.unwrap_or_default());
        }
        (fw.address().to_string(), zones)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_host_prefixes() {
        assert_eq!(source_of("10.88.0.5".parse().unwrap()), "10.88.0.5/32");
        assert_eq!(source_of("fd00::5".parse().unwrap()), "fd00::5/128");
    }

    #[test]
    fn firewalld_error_codes_are_read_from_the_exception_message() {
        let e = dbus::Error::Remote {
            name: EXCEPTION.into(),
            message: "ZONE_ALREADY_SET: '10.1.2.3/32' already bound to 'trusted'".into(),
        };
        assert_eq!(fw_code(&e), Some("ZONE_ALREADY_SET"));
        let e = dbus::Error::Remote {
            name: EXCEPTION.into(),
            message: "UNKNOWN_SOURCE: '10.1.2.3/32' is not in any zone".into(),
        };
        assert!(nothing_to_remove(&e));
        let e = dbus::Error::Remote {
            name: "org.freedesktop.DBus.Error.AccessDenied".into(),
            message: "no".into(),
        };
        assert_eq!(fw_code(&e), None);
        assert!(!nothing_to_remove(&e));
    }

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let dir = std::env::temp_dir().join(format!("firewalld-records-unit-{}", std::process::id()));
        let s = Store::at(&dir);
        let k = key("net", "cid", "eth0");
        assert!(s.get(&k).is_none());
        let r = Record {
            network: "net".into(),
            container_id: "cid".into(),
            ifname: "eth0".into(),
            zone: "trusted".into(),
            sources: vec![
                (Held::Added, "10.1.2.3/32".into()),
                (Held::Present, "fd00::3/128".into()),
                (Held::Pending, "10.1.2.4/32".into()),
            ],
        };
        s.put(&k, &r).unwrap();
        assert_eq!(s.get(&k), Some(r.clone()));
        assert_eq!(r.ours().collect::<Vec<_>>(), ["10.1.2.3/32", "10.1.2.4/32"]);
        assert_eq!(s.all(), vec![(k.clone(), r)]);
        for bad in [
            "",
            "garbage\n",
            "cni-multi firewalld record 1\nzone\n",
            "cni-multi firewalld record 1\nnetwork n\n",
        ] {
            std::fs::write(dir.join(&k), bad).unwrap();
            assert!(s.get(&k).is_none(), "{bad:?}");
        }
        s.forget(&k);
        assert!(!dir.join(&k).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn zone_names() {
        for ok in ["trusted", "public", "my-zone_2", "a.b"] {
            check_zone_name(ok).unwrap();
        }
        for bad in ["", "a b", "a\nadded 1.2.3.4/32", &"z".repeat(65)] {
            let e = check_zone_name(bad).unwrap_err();
            let e = e.downcast_ref::<CniError>().unwrap();
            assert_eq!(e.code, code::INVALID_CONFIG, "{bad:?}");
        }
    }
}
