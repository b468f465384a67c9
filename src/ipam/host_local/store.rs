//! The on-disk store, file for file the reference's (backend/disk): `<dataDir>/<network>/`
//! holds one file per reserved address (`<containerID>\r\n<ifname>`), `last_reserved_ip.<set>`
//! and `lock` (flock, exclusive). Directories 0755, files 0600, nothing opened through a symlink.
//!
//! Crash safety: a reservation is written to a temp file first (`.tmp-<pid>-<n>`, never a
//! valid IP) and then hard-linked to its final name. link(2) fails with EEXIST atomically, so
//! it is the reference's exclusive create, but the name only appears with its full content.
//! Temp files are only created while holding the lock, so any temp file seen by a new lock
//! holder belongs to a dead process and is removed.
//!
//! Empty reservation files (the reference's O_EXCL create then write, killed in between) are
//! treated as free: every writer, the reference's included, creates and fills a reservation
//! while holding the flock, so an empty file seen under the lock can never be filled any more.
//!
//! The index: `<dataDir>/.<network>.index` (outside the network's directory, so the
//! reference never sees it and writing it does not change that directory) caches every
//! reservation's name and content, stamped with the directory's inode, ctime and mtime as
//! stat(2) gave them after our last change. It is used only while the stamp still matches: any
//! create, link, rename or unlink in the directory — the reference's included — changes its
//! ctime (since Linux 6.13 a change after a stat always gets a distinct, fine-grained ctime),
//! and a stale or unreadable index is rebuilt from the files, which stay the only truth. With a
//! fresh index ADD's duplicate check, DEL without prevResult and the search for a free address
//! read no reservation file, whatever the number of pods.
//!
//! The index is a journal: a snapshot (`+name\tcontent` lines and a `@stamp` line), then per
//! operation its changes (`+…`, `-name`) and the new `@stamp`, appended in one write(2). Only
//! a file whose last line is the directory's current stamp is trusted, so a write cut short
//! by SIGKILL, or a change made after it, means a rebuild. It is rewritten whole (temp file and
//! rename) only when rebuilt or when the journal outgrows the snapshot: replacing a 25 KB file
//! on every ADD made ext4 write back the new one and free (and, mounted with `discard`,
//! discard) the old one's blocks, most of what a 99 % full range cost over an empty one.
//! `last_reserved_ip.<set>` is overwritten in place for the same reason.

use crate::linux::files::Reader;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
pub const LAST_IP_PREFIX: &str = "last_reserved_ip.";
pub const LINE_BREAK: &str = "\r\n";
const TMP_PREFIX: &str = ".tmp-";

static TMP_SEQ: AtomicU32 = AtomicU32::new(0);

/// Who holds a reservation, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    /// None for legacy files that hold only the container ID.
    pub ifname: Option<String>,
}

impl Owner {
    pub fn parse(content: &str) -> Option<Owner> {
        let t = content.trim();
        if t.is_empty() {
            return None;
        }
        Some(match t.split_once(LINE_BREAK) {
            Some((id, ifname)) => Owner {
                container_id: id.to_string(),
                ifname: Some(ifname.to_string()),
            },
            None => Owner {
                container_id: t.to_string(),
                ifname: None,
            },
        })
    }
}

/// One reservation file found in the directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ip: IpAddr,
    pub name: String,
    /// The trimmed content (empty for an abandoned empty file).
    pub content: String,
}

/// What a store knows of its directory's reservations.
enum Index {
    /// Nothing trusted: every question is asked of the files.
    Unknown,
    /// The index file's records (its stamp matched, every line checked), searched when
    /// asked instead of parsed up front: a DEL with prevResult never needs them, and an
    /// ADD only its matches and the set of taken names. This operation's own records (the
    /// store's `journal`) apply after them.
    Loaded(String),
    /// Every reservation, name -> trimmed content (rebuilt from the files).
    Full(BTreeMap<String, String>),
}

/// One journal record: a reservation set (`+name\tcontent`, content escaped) or removed.
enum Rec<'a> {
    Set(&'a str, &'a str),
    Del(&'a str),
}

/// The records of index text that `load_index` checked (stamp lines skipped).
fn records(text: &str) -> impl Iterator<Item = Rec<'_>> {
    text.split('\n').filter_map(|l| {
        if let Some(r) = l.strip_prefix('+') {
            let (name, content) = r.split_once('\t')?;
            Some(Rec::Set(name, content))
        } else {
            l.strip_prefix('-').map(Rec::Del)
        }
    })
}

/// A network's directory, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    index_path: PathBuf,
    /// What the index says, kept in step with our changes.
    index: std::cell::RefCell<Index>,
    /// The directory changed (by us): the index needs a new stamp.
    dirty: std::cell::Cell<bool>,
    /// The index must be written whole (rebuilt from the files, or never saved).
    rewrite: std::cell::Cell<bool>,
    /// This operation's changes, as journal records still to be appended.
    journal: std::cell::RefCell<String>,
    /// Records in the file's snapshot and after it, for deciding when to compact.
    file_lines: std::cell::Cell<(usize, usize)>,
    /// Reservation files made before the lock (`open_for_add`), with their content.
    spares: std::cell::RefCell<(String, Vec<File>)>,
    /// The addresses the index holds as taken, for the free-address search; reset on change.
    taken: std::cell::RefCell<Option<std::collections::HashSet<IpAddr>>>,
    _lock: Flock<File>,
}

/// `f` if it is a regular file: a FIFO, socket, device or directory planted in the data dir
/// is never read from, locked or trusted.
fn regular(f: File, path: &Path) -> io::Result<File> {
    if f.metadata()?.is_file() {
        Ok(f)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ))
    }
}

/// A reservation holds a container ID and an ifname; 64 KiB of it is garbage, not an owner.
const ENTRY_MAX: u64 = 64 * 1024;
/// Every file of the data dir is read without following a symlink or waiting on a FIFO.
const ENTRY: Reader = Reader::no_follow(ENTRY_MAX);
/// One line a reservation: far beyond any node's pods; a larger index is rebuilt instead.
const INDEX: Reader = Reader::no_follow(256 << 20);

mod libc_flags {
    pub const O_NOFOLLOW: i32 = nix::fcntl::OFlag::O_NOFOLLOW.bits();
    pub const O_CLOEXEC: i32 = nix::fcntl::OFlag::O_CLOEXEC.bits();
    pub const O_NONBLOCK: i32 = nix::fcntl::OFlag::O_NONBLOCK.bits();
    pub const O_TMPFILE: i32 = nix::fcntl::OFlag::O_TMPFILE.bits();
}

/// The network's directory under `data_dir` (created 0755 if needed); it must not be a symlink.
pub fn network_dir(data_dir: &str, network: &str) -> io::Result<PathBuf> {
    let data_dir = if data_dir.is_empty() {
        DEFAULT_DATA_DIR
    } else {
        data_dir
    };
    // The skel already rejected names that could leave the data dir; check again, cheaply.
    if network.is_empty() || network.starts_with('.') || network.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network name {network:?}"),
        ));
    }
    let dir = Path::new(data_dir).join(network);
    fs::DirBuilder::new().recursive(true).mode(0o755).create(&dir)?;
    let md = fs::symlink_metadata(&dir)?;
    if !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory (symlinks are not followed)", dir.display()),
        ));
    }
    Ok(dir)
}

impl Store {
    /// Open (creating it if needed) and lock the network's directory.
    pub fn open(data_dir: &str, network: &str) -> io::Result<Store> {
        Store::lock_dir(network_dir(data_dir, network)?, network)
    }

    /// `open` for an ADD of (id, ifname) over `sets` range sets. Each reservation's file is
    /// made and written before the lock is taken, unnamed (O_TMPFILE), and only linked under
    /// its address while locked: the inode allocation (costly on ext4 after many deletions)
    /// and the write leave the time other ADDs wait for the lock, and a process killed before
    /// the link leaves nothing behind. Without O_TMPFILE, temp files are made under the lock.
    pub fn open_for_add(data_dir: &str, network: &str, id: &str, ifname: &str, sets: usize) -> io::Result<Store> {
        let dir = network_dir(data_dir, network)?;
        let content = reservation(id, ifname);
        let spares: Vec<File> = (0..sets)
            .map_while(|_| unnamed_file(&dir, content.as_bytes()).ok())
            .collect();
        let store = Store::lock_dir(dir, network)?;
        *store.spares.borrow_mut() = (content, spares);
        Ok(store)
    }

    fn lock_dir(dir: PathBuf, network: &str) -> io::Result<Store> {
        let lock = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK | libc_flags::O_CLOEXEC)
            .open(dir.join("lock"))
            .map_err(|e| io::Error::new(e.kind(), format!("lock {}: {e}", dir.join("lock").display())))?;
        let lock = regular(lock, &dir.join("lock"))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
        let index_path = dir.with_file_name(format!(".{network}.index"));
        let store = Store {
            dir,
            index_path,
            index: std::cell::RefCell::new(Index::Unknown),
            dirty: std::cell::Cell::new(false),
            rewrite: std::cell::Cell::new(false),
            journal: std::cell::RefCell::new(String::new()),
            file_lines: std::cell::Cell::new((0, 0)),
            spares: std::cell::RefCell::new((String::new(), Vec::new())),
            taken: std::cell::RefCell::new(None),
            _lock: lock,
        };
        // A killed writer's index temp file (we hold the lock: nobody is writing it now).
        let _ = fs::remove_file(store.index_tmp());
        // A fresh index proves the directory unchanged since our last (complete) operation,
        // so there can be no temp file of a killed one to sweep.
        match store.load_index() {
            Some((text, lines)) => {
                *store.index.borrow_mut() = Index::Loaded(text);
                store.file_lines.set(lines);
            }
            None => {
                store.remove_stale_temps();
                store.rebuild_index();
            }
        }
        Ok(store)
    }

    fn index_tmp(&self) -> PathBuf {
        self.index_path.with_extension("index.tmp")
    }

    /// The directory's identity and change times, as the index's stamp.
    fn stamp(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(&self.dir).ok()?;
        Some(format!(
            "{} {} {}.{:09} {}.{:09}",
            m.dev(),
            m.ino(),
            m.ctime(),
            m.ctime_nsec(),
            m.mtime(),
            m.mtime_nsec()
        ))
    }

    /// The index file's records and its (snapshot, journal) line counts, if every line is
    /// well formed and the last one is the directory's current stamp.
    fn load_index(&self) -> Option<(String, (usize, usize))> {
        let mut s = String::from_utf8(INDEX.read(&self.index_path).ok()?).ok()?;
        let body = s.strip_prefix(INDEX_HEADER)?.strip_prefix('\n')?;
        // Whole records only: a cut append has no final newline or no final stamp.
        let body = body.strip_suffix('\n')?;
        let (records, last) = body.rsplit_once('\n').unwrap_or(("", body));
        if last.strip_prefix('@')? != self.stamp()? {
            return None;
        }
        let (mut snapshot, mut journal) = (0, 0);
        for l in records.split('\n').filter(|l| !l.is_empty()) {
            let ok = match l.as_bytes()[0] {
                b'+' => l.split_once('\t').is_some_and(|(_, c)| valid_escapes(c)),
                b'-' | b'@' => true,
                _ => false,
            };
            if !ok {
                return None;
            }
            if journal > 0 || l.starts_with('@') {
                journal += 1;
            } else {
                snapshot += 1;
            }
        }
        let header = INDEX_HEADER.len() + 1;
        s.drain(..header);
        Some((s, (snapshot, journal)))
    }

    /// Read every reservation (the reference's scan) into the index.
    fn rebuild_index(&self) {
        let m = self
            .scan()
            .ok()
            .map(|v| v.into_iter().map(|e| (e.name, e.content)).collect());
        self.dirty.set(m.is_some());
        self.rewrite.set(m.is_some());
        *self.index.borrow_mut() = m.map_or(Index::Unknown, Index::Full);
        *self.taken.borrow_mut() = None;
    }

    /// Bring the index up to date with the directory's current stamp (under the lock, after
    /// every change of this operation): this operation's records appended, or, when rebuilt
    /// or when the journal has outgrown the snapshot, the whole index rewritten. Best effort:
    /// without it the next call rebuilds.
    fn save_index(&self) {
        if !self.dirty.get() && !self.rewrite.get() && self.journal.borrow().is_empty() {
            return;
        }
        let idx = self.index.borrow();
        let stamp = match (&*idx, self.stamp()) {
            (Index::Unknown, _) | (_, None) => {
                let _ = fs::remove_file(&self.index_path);
                return;
            }
            (_, Some(stamp)) => stamp,
        };
        let journal = self.journal.borrow();
        let (snapshot, old) = self.file_lines.get();
        let lines = old + journal.matches('\n').count() + 1;
        // Compacted when the journal holds more records than half the snapshot (at least
        // 512): reading stays O(reservations), rewriting happens once in hundreds of calls.
        if matches!(&*idx, Index::Loaded(_)) && !self.rewrite.get() && lines <= 512 + snapshot / 2 {
            let mut rec = String::with_capacity(journal.len() + stamp.len() + 2);
            rec.push_str(&journal);
            rec.push('@');
            rec.push_str(&stamp);
            rec.push('\n');
            if self.append_index(rec.as_bytes()).is_ok() {
                return;
            }
        }
        let full;
        let entries = match &*idx {
            Index::Full(m) => m,
            _ => {
                full = self.materialize(&idx, &journal);
                &full
            }
        };
        let mut text = format!("{INDEX_HEADER}\n");
        for (name, content) in entries {
            text.push('+');
            text.push_str(name);
            text.push('\t');
            escape_into(&mut text, content);
            text.push('\n');
        }
        text.push('@');
        text.push_str(&stamp);
        text.push('\n');
        let text = text.into_bytes();
        // One fixed temp name: it is only written under the lock, and a temp file a killed
        // writer left behind is overwritten here or removed by the next `open`.
        let tmp = self.index_tmp();
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text));
        if written.and_then(|_| fs::rename(&tmp, &self.index_path)).is_err() {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&self.index_path);
        }
    }

    /// Every reservation a loaded index holds, with this operation's records applied.
    fn materialize(&self, idx: &Index, journal: &str) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let text = match idx {
            Index::Loaded(t) => t.as_str(),
            _ => "",
        };
        for r in records(text).chain(records(journal)) {
            match r {
                Rec::Set(name, c) => m.insert(name.to_string(), unescape(c).unwrap_or_default()),
                Rec::Del(name) => m.remove(name),
            };
        }
        m
    }

    /// Append `rec` to the index file this operation loaded, in one write(2).
    fn append_index(&self, rec: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut f = OpenOptions::new()
            .append(true)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK | libc_flags::O_CLOEXEC)
            .open(&self.index_path)?;
        let md = f.metadata()?;
        // Only our own regular file: never through a second name into something else.
        if !md.is_file() || md.nlink() != 1 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "index is not a plain file"));
        }
        f.write_all(rec)
    }

    fn index_set(&self, name: String, content: Option<String>) {
        if let (Some(t), Ok(ip)) = (self.taken.borrow_mut().as_mut(), name.parse::<IpAddr>()) {
            match &content {
                Some(c) if !c.is_empty() => t.insert(ip),
                _ => t.remove(&ip),
            };
        }
        let mut idx = self.index.borrow_mut();
        if !matches!(&*idx, Index::Unknown) {
            let mut j = self.journal.borrow_mut();
            match &content {
                Some(c) => {
                    j.push('+');
                    j.push_str(&name);
                    j.push('\t');
                    escape_into(&mut j, c);
                }
                None => {
                    j.push('-');
                    j.push_str(&name);
                }
            }
            j.push('\n');
            if let Index::Full(m) = &mut *idx {
                match content {
                    Some(c) => m.insert(name, c),
                    None => m.remove(&name),
                };
            }
            self.dirty.set(true);
        }
    }

    /// Whether the index knows `ip` to be held (a non-empty reservation). False when unsure.
    pub fn known_taken(&self, ip: IpAddr) -> bool {
        let mut taken = self.taken.borrow_mut();
        if taken.is_none() {
            // Built once per allocation: a lap over a full range then costs a hash lookup
            // an address, no formatting.
            *taken = match &*self.index.borrow() {
                Index::Unknown => None,
                Index::Full(m) => Some(
                    m.iter()
                        .filter(|(_, c)| !c.is_empty())
                        .filter_map(|(n, _)| n.parse().ok())
                        .collect(),
                ),
                Index::Loaded(text) => {
                    let mut t = std::collections::HashSet::new();
                    for r in records(text).chain(records(&self.journal.borrow())) {
                        match r {
                            Rec::Set(n, c) if !c.is_empty() => n.parse().ok().map(|ip| t.insert(ip)),
                            Rec::Set(n, _) | Rec::Del(n) => n.parse().ok().map(|ip| t.remove(&ip)),
                        };
                    }
                    Some(t)
                }
            };
        }
        taken.as_ref().is_some_and(|t| t.contains(&ip))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Temp files seen under the lock are leftovers of killed processes.
    fn remove_stale_temps(&self) {
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }

    /// Write `content` to a fresh temp file (O_EXCL, O_NOFOLLOW, 0600) and return its path.
    fn write_temp(&self, content: &[u8]) -> io::Result<PathBuf> {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        // The directory changes: the index's stamp must be renewed.
        self.dirty.set(true);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_CLOEXEC)
            .open(&tmp)?;
        if let Err(e) = f.write_all(content) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(tmp)
    }

    /// Reserve `ip` for (id, ifname). Ok(false) if someone else holds it.
    pub fn reserve(&self, id: &str, ifname: &str, ip: IpAddr, range_id: usize) -> io::Result<bool> {
        self.pending(id, ifname)?.claim(ip, range_id)
    }

    /// Prepare a reservation for (id, ifname): its content is written once, to a temp file,
    /// and then linked under each candidate address until one is free.
    pub fn pending(&self, id: &str, ifname: &str) -> io::Result<Pending<'_>> {
        let content = reservation(id, ifname);
        let spare = {
            let mut s = self.spares.borrow_mut();
            if s.0 == content {
                s.1.pop()
            } else {
                None
            }
        };
        let tmp = match spare {
            Some(f) => Tmp::Unnamed(f),
            None => Tmp::Named(self.write_temp(content.as_bytes())?),
        };
        Ok(Pending {
            store: self,
            tmp: std::cell::RefCell::new(tmp),
            content,
        })
    }

    /// A regular file with nothing but whitespace in it.
    fn is_abandoned(&self, path: &Path) -> bool {
        match fs::symlink_metadata(path) {
            Ok(md) if md.is_file() && md.len() == 0 => true,
            Ok(md) if md.is_file() && md.len() < 64 => read_trimmed(path).is_some_and(|s| s.is_empty()),
            _ => false,
        }
    }

    /// `last_reserved_ip.<set>`: the address as text, no newline. An existing plain file is
    /// overwritten in place (no new inode, no freed blocks, the directory unchanged); anything
    /// else is replaced by a temp file and rename. A kill between the write and the truncation
    /// can leave another address there: it is only where the round-robin search starts.
    fn set_last_reserved(&self, range_id: usize, ip: IpAddr) -> io::Result<()> {
        let path = self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"));
        let text = ip.to_string();
        if overwrite_in_place(&path, text.as_bytes()).is_ok() {
            return Ok(());
        }
        let tmp = self.write_temp(text.as_bytes())?;
        let r = fs::rename(&tmp, &path);
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r
    }

    pub fn last_reserved(&self, range_id: usize) -> Option<IpAddr> {
        let s = String::from_utf8(ENTRY.read(&self.dir.join(format!("{LAST_IP_PREFIX}{range_id}"))).ok()?).ok()?;
        // Go's net.ParseIP does not trim: a file with a newline is no IP.
        s.parse().ok()
    }

    /// Every file whose name is an IP address, with its trimmed content. This is the
    /// reference's scan (ADD's duplicate check, DEL without prevResult), so it is kept to
    /// four syscalls a file: openat relative to the directory, fstat, one read, close.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let v = self.scan()?;
        *self.index.borrow_mut() = Index::Full(v.iter().map(|e| (e.name.clone(), e.content.clone())).collect());
        *self.taken.borrow_mut() = None;
        self.dirty.set(true);
        self.rewrite.set(true);
        Ok(v)
    }

    /// The reservations whose content is one of `wanted`, as the index has them (the
    /// files, when there is no index). Only the matches are copied.
    fn indexed(&self, wanted: &[&str]) -> io::Result<Vec<Entry>> {
        if let Index::Loaded(text) = &*self.index.borrow() {
            // Escaped once, compared with the records as they are: no copy of a non-match.
            let esc: Vec<String> = wanted
                .iter()
                .map(|w| {
                    let mut e = String::new();
                    escape_into(&mut e, w);
                    e
                })
                .collect();
            let journal = self.journal.borrow();
            let mut hits: BTreeMap<&str, &str> = BTreeMap::new();
            for r in records(text).chain(records(&journal)) {
                match r {
                    Rec::Set(n, c) if esc.iter().any(|e| e == c) => hits.insert(n, c),
                    Rec::Set(n, _) | Rec::Del(n) => hits.remove(n),
                };
            }
            return Ok(hits
                .into_iter()
                .filter_map(|(name, c)| {
                    Some(Entry {
                        ip: name.parse().ok()?,
                        name: name.to_string(),
                        content: unescape(c)?,
                    })
                })
                .collect());
        }
        if let Index::Full(m) = &*self.index.borrow() {
            return Ok(m
                .iter()
                .filter(|(_, content)| wanted.contains(&content.as_str()))
                .filter_map(|(name, content)| {
                    Some(Entry {
                        ip: name.parse().ok()?,
                        name: name.clone(),
                        content: content.clone(),
                    })
                })
                .collect());
        }
        Ok(self
            .scan()?
            .into_iter()
            .filter(|e| wanted.contains(&e.content.as_str()))
            .collect())
    }

    fn scan(&self) -> io::Result<Vec<Entry>> {
        let dir = File::open(&self.dir)?;
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(ip) = name.parse::<IpAddr>() else { continue };
            if !e.file_type().map(|t| t.is_file()).unwrap_or(false) {
                continue;
            }
            let Some(content) = read_small_at(&dir, &name) else {
                continue;
            };
            out.push(Entry { ip, name, content });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The trimmed content of the reservation file of `ip`, if there is one.
    pub fn owner_of(&self, ip: IpAddr) -> Option<String> {
        read_trimmed(&self.dir.join(ip.to_string()))
    }

    fn matching(&self, matcher: &str) -> io::Result<Vec<Entry>> {
        self.indexed(&[matcher])
    }

    /// The IPs held by (id, ifname), legacy id-only files included (GetByID).
    pub fn get_by_id(&self, id: &str, ifname: &str) -> Vec<IpAddr> {
        let (new, old) = keys(id, ifname);
        self.indexed(&[&new, &old])
            .unwrap_or_default()
            .into_iter()
            .map(|e| e.ip)
            .collect()
    }

    /// Whether any file belongs to (id, ifname), or to the id alone (FindByID).
    pub fn find_by_id(&self, id: &str, ifname: &str) -> io::Result<bool> {
        let (new, old) = keys(id, ifname);
        let entries = self.indexed(&[&new, &old])?;
        Ok(entries.iter().any(|e| e.content == new) || entries.iter().any(|e| e.content == old))
    }

    /// Release by (id, ifname); only when none matched, the legacy id-only files (ReleaseByID).
    pub fn release_by_id(&self, id: &str, ifname: &str) -> io::Result<()> {
        let (new, old) = keys(id, ifname);
        let mut found = false;
        for e in self.matching(&new)? {
            if self.remove(&e.name) {
                found = true;
            }
        }
        if !found {
            for e in self.matching(&old)? {
                self.remove(&e.name);
            }
        }
        Ok(())
    }

    /// Remove a reservation file by name; true if it was there and is gone.
    fn remove(&self, name: &str) -> bool {
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => {
                self.index_set(name.to_string(), None);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.index_set(name.to_string(), None);
                false
            }
            Err(_) => false,
        }
    }

    /// Remove one reservation by address.
    pub fn release_ip(&self, ip: IpAddr) -> io::Result<()> {
        let name = ip.to_string();
        match fs::remove_file(self.dir.join(&name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                self.index_set(name, None);
                Ok(())
            }
        }
    }

    /// Prove the directory is writable: create and remove a temp file.
    pub fn probe_writable(&self) -> io::Result<()> {
        let tmp = self.write_temp(b"")?;
        fs::remove_file(tmp)
    }
}

impl Drop for Store {
    /// Runs before the lock field is dropped, so the index is written under the lock.
    fn drop(&mut self) {
        self.save_index();
    }
}

const INDEX_HEADER: &str = "cni-multi host-local index 2";

/// Overwrite a small regular file that has no other name, keeping its inode and blocks.
fn overwrite_in_place(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc_flags::O_NOFOLLOW | libc_flags::O_NONBLOCK | libc_flags::O_CLOEXEC)
        .open(path)?;
    let md = f.metadata()?;
    if !md.is_file() || md.nlink() != 1 || md.len() > ENTRY_MAX {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a plain file"));
    }
    f.write_all_at(content, 0)?;
    if md.len() > content.len() as u64 {
        f.set_len(content.len() as u64)?;
    }
    Ok(())
}

/// Contents are the reference's trimmed file contents, `id\r\nifname`, but any bytes may
/// appear in a file someone else wrote: backslash, tab, CR and LF are escaped.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Whether `s` is something `escape_into` can have written.
fn valid_escapes(s: &str) -> bool {
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'\\' && !matches!(it.next(), Some(b'\\' | b't' | b'r' | b'n')) {
            return false;
        }
    }
    true
}

fn unescape(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return Some(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match it.next()? {
            '\\' => '\\',
            't' => '\t',
            'r' => '\r',
            'n' => '\n',
            _ => return None,
        });
    }
    Some(out)
}

/// A fully written reservation waiting for an address; its temp file goes away on drop.
pub struct Pending<'s> {
    store: &'s Store,
    tmp: std::cell::RefCell<Tmp>,
    content: String,
}

/// A written reservation file not yet under its address.
enum Tmp {
    /// `.tmp-<pid>-<n>` in the directory, made under the lock.
    Named(PathBuf),
    /// An O_TMPFILE, made before the lock.
    Unnamed(File),
}

impl Pending<'_> {
    /// Give the file the name `path` (fails with EEXIST if taken).
    fn link(&self, path: &Path) -> io::Result<()> {
        let mut tmp = self.tmp.borrow_mut();
        if let Tmp::Unnamed(f) = &*tmp {
            match link_unnamed(f, path) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    // Not linkable here (no /proc, no privilege): a named temp file instead.
                    *tmp = Tmp::Named(self.store.write_temp(self.content.as_bytes())?);
                }
                r => return r,
            }
        }
        match &*tmp {
            Tmp::Named(p) => fs::hard_link(p, path),
            Tmp::Unnamed(f) => link_unnamed(f, path),
        }
    }

    /// Link the reservation under `ip` (atomic exclusive create). Ok(false) if it is taken.
    pub fn claim(&self, ip: IpAddr, range_id: usize) -> io::Result<bool> {
        let path = self.store.dir.join(ip.to_string());
        let mut linked = self.link(&path);
        if matches!(&linked, Err(e) if e.kind() == io::ErrorKind::AlreadyExists) && self.store.is_abandoned(&path) {
            // An empty file left by a writer killed between create and write: reclaim it.
            let _ = fs::remove_file(&path);
            linked = self.link(&path);
        }
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // The index did not know this one: it is a cache, the link is the truth.
                if let Some(c) = read_trimmed(&path) {
                    self.store.index_set(ip.to_string(), Some(c));
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        self.store.index_set(ip.to_string(), Some(self.content.clone()));
        if let Err(e) = self.store.set_last_reserved(range_id, ip) {
            let _ = fs::remove_file(&path);
            self.store.index_set(ip.to_string(), None);
            return Err(e);
        }
        Ok(true)
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Tmp::Named(p) = &*self.tmp.borrow() {
            let _ = fs::remove_file(p);
        }
    }
}

/// A reservation file's content: `<id>\r\n<ifname>`, the reference's.
fn reservation(id: &str, ifname: &str) -> String {
    format!("{}{LINE_BREAK}{ifname}", id.trim())
}

/// An unnamed regular file in `dir` (O_TMPFILE, 0600) holding `content`.
fn unnamed_file(dir: &Path, content: &[u8]) -> io::Result<File> {
    let mut f = OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc_flags::O_TMPFILE | libc_flags::O_CLOEXEC)
        .open(dir)?;
    f.write_all(content)?;
    Ok(f)
}

/// Give an O_TMPFILE the name `path`: linkat(AT_EMPTY_PATH) (CAP_DAC_READ_SEARCH, or since
/// Linux 6.10 the opener), else through /proc/self/fd.
fn link_unnamed(f: &File, path: &Path) -> io::Result<()> {
    use nix::fcntl::AtFlags;
    use nix::unistd::linkat;
    use std::os::fd::AsRawFd;
    match linkat(Some(f.as_raw_fd()), Path::new(""), None, path, AtFlags::AT_EMPTY_PATH) {
        Ok(()) => return Ok(()),
        Err(e) if e == nix::errno::Errno::EEXIST => return Err(e.into()),
        Err(_) => {}
    }
    let from = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
    Ok(linkat(None, from.as_path(), None, path, AtFlags::AT_SYMLINK_FOLLOW)?)
}

fn keys(id: &str, ifname: &str) -> (String, String) {
    let id = id.trim();
    (format!("{id}{LINE_BREAK}{ifname}"), id.to_string())
}

/// Read a small regular file `name` in `dir` (no symlinks, no FIFOs, at most ENTRY_MAX), trimmed.
fn read_small_at(dir: &File, name: &str) -> Option<String> {
    let buf = ENTRY.read_at(dir, name).ok()?;
    Some(String::from_utf8_lossy(&buf).trim().to_string())
}

fn read_trimmed(path: &Path) -> Option<String> {
    Some(String::from_utf8(ENTRY.read(path).ok()?).ok()?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cni-multi-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn reserve_writes_reference_layout() {
        let d = tmpdir("layout");
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(s.reserve(" c1 ", "eth0", ip, 0).unwrap());
        assert!(
            !s.reserve("c2", "eth0", ip, 0).unwrap(),
            "second reservation of the same IP fails"
        );
        let dir = d.join("net");
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        assert_eq!(fs::read(dir.join("last_reserved_ip.0")).unwrap(), b"10.0.0.2");
        assert_eq!(
            fs::metadata(dir.join("10.0.0.2")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o755);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(TMP_PREFIX)),
            "no temp file left: {names:?}"
        );
        assert_eq!(s.last_reserved(0), Some(ip));
        assert_eq!(s.get_by_id("c1", "eth0"), vec![ip]);
        assert!(s.find_by_id("c1", "eth0").unwrap());
        s.release_by_id("c1", "eth0").unwrap();
        assert!(!dir.join("10.0.0.2").exists());
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn empty_files_are_reclaimed_and_stale_temps_removed() {
        let d = tmpdir("empty");
        let dir = d.join("net");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("10.0.0.2"), b"").unwrap();
        fs::write(dir.join(".tmp-999999-0"), b"half").unwrap();
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        assert!(!dir.join(".tmp-999999-0").exists());
        assert!(s.reserve("c1", "eth0", "10.0.0.2".parse().unwrap(), 0).unwrap());
        assert_eq!(fs::read(dir.join("10.0.0.2")).unwrap(), b"c1\r\neth0");
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinked_network_dir_and_files_are_not_followed() {
        let d = tmpdir("symlink");
        fs::create_dir_all(d.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("net")).unwrap();
        assert!(Store::open(d.to_str().unwrap(), "net").is_err());
        fs::create_dir_all(d.join("net2")).unwrap();
        std::os::unix::fs::symlink(d.join("target"), d.join("net2").join("10.0.0.2")).unwrap();
        let s = Store::open(d.to_str().unwrap(), "net2").unwrap();
        assert!(!s.reserve("c1", "eth0", "10.0.0.2".parse().unwrap(), 0).unwrap());
        assert!(!d.join("target").exists(), "nothing written through the symlink");
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn legacy_release_only_without_new_style_match() {
        let d = tmpdir("legacy");
        let dir = d.join("net");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("10.0.0.2"), b"c1").unwrap();
        fs::write(dir.join("10.0.0.3"), b"c1\r\neth0").unwrap();
        fs::write(dir.join("10.0.0.4"), b"  c2  \n").unwrap();
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        s.release_by_id("c1", "eth0").unwrap();
        assert!(dir.join("10.0.0.2").exists() && !dir.join("10.0.0.3").exists());
        s.release_by_id("c1", "eth0").unwrap();
        assert!(!dir.join("10.0.0.2").exists());
        s.release_by_id("c2", "eth1").unwrap();
        assert!(
            !dir.join("10.0.0.4").exists(),
            "whitespace around the legacy id is tolerated"
        );
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn index_is_a_cache_the_files_win() {
        let d = tmpdir("index");
        let dir = d.join("net");
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(s.reserve("c1", "eth0", ip("10.0.0.2"), 0).unwrap());
        }
        assert!(d.join(".net.index").is_file(), "the index lives beside the directory");
        assert!(!dir.join(".net.index").exists());
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(
                matches!(*s.index.borrow(), Index::Loaded(_)) && !s.dirty.get(),
                "fresh index loaded"
            );
            assert_eq!(s.get_by_id("c1", "eth0"), vec![ip("10.0.0.2")]);
        }
        // Another implementation adds and removes files between two of our operations.
        fs::write(dir.join("10.0.0.3"), b"c2\r\neth0").unwrap();
        fs::remove_file(dir.join("10.0.0.2")).unwrap();
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert_eq!(s.get_by_id("c2", "eth0"), vec![ip("10.0.0.3")]);
            assert!(s.get_by_id("c1", "eth0").is_empty());
            assert!(s.known_taken(ip("10.0.0.3")) && !s.known_taken(ip("10.0.0.2")));
        }
        // Escapes survive; a garbled or cut index is ignored.
        let mut e = String::new();
        escape_into(&mut e, "a\\b\tc\r\nd");
        assert_eq!(unescape(&e).as_deref(), Some("a\\b\tc\r\nd"));
        let text = fs::read_to_string(d.join(".net.index")).unwrap();
        fs::write(d.join(".net.index"), &text[..text.len() - 3]).unwrap();
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(s.dirty.get(), "a cut index is rebuilt");
        }
        fs::write(d.join(".net.index"), b"{not an index").unwrap();
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert_eq!(s.get_by_id("c2", "eth0"), vec![ip("10.0.0.3")]);
            s.release_by_id("c2", "eth0").unwrap();
        }
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        assert!(!s.dirty.get() && s.get_by_id("c2", "eth0").is_empty());
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn index_journal_appends_and_compacts() {
        let d = tmpdir("journal");
        let ip = |i: u32| -> IpAddr { std::net::Ipv4Addr::from(0x0a00_0002 + i).into() };
        let index = d.join(".net.index");
        let lines = || fs::read_to_string(&index).unwrap().lines().count();
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(s.reserve("c0", "eth0", ip(0), 0).unwrap());
        }
        let after_first = lines();
        // One ADD or DEL appends its record and a stamp; the snapshot is not rewritten.
        for i in 1..5 {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(
                matches!(*s.index.borrow(), Index::Loaded(_)) && !s.rewrite.get(),
                "fresh journal loaded"
            );
            assert!(s.reserve(&format!("c{i}"), "eth0", ip(i), 0).unwrap());
        }
        assert_eq!(lines(), after_first + 8);
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            s.release_by_id("c2", "eth0").unwrap();
        }
        let text = fs::read_to_string(&index).unwrap();
        assert!(text.contains("\n-10.0.0.4\n@"), "{text}");
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert_eq!(s.get_by_id("c3", "eth0"), vec![ip(3)]);
            assert!(s.get_by_id("c2", "eth0").is_empty());
            assert!(s.known_taken(ip(4)) && !s.known_taken(ip(2)));
        }
        // An append cut short (SIGKILL in write(2)): not trusted, rebuilt from the files.
        fs::write(&index, &text[..text.len() - 1]).unwrap();
        {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(s.rewrite.get(), "a cut journal is rebuilt");
            assert_eq!(s.get_by_id("c3", "eth0"), vec![ip(3)]);
        }
        assert_eq!(lines(), 1 + 4 + 1, "rebuilt: header, 4 reservations, stamp");
        // Many operations: the journal is compacted into a snapshot now and then.
        for i in 0..400 {
            let s = Store::open(d.to_str().unwrap(), "net").unwrap();
            assert!(s.reserve("churn", "eth0", ip(100), 0).unwrap(), "round {i}");
            s.release_ip(ip(100)).unwrap();
        }
        assert!(lines() < 1 + 4 + 1 + 3 * 400, "compacted: {} lines", lines());
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        assert!(!s.rewrite.get() && s.get_by_id("churn", "eth0").is_empty());
        assert_eq!(s.get_by_id("c4", "eth0"), vec![ip(4)]);
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn reservations_made_before_the_lock_are_linked_whole() {
        let d = tmpdir("unnamed");
        let dir = d.join("net");
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        {
            let s = Store::open_for_add(d.to_str().unwrap(), "net", " c1 ", "eth0", 2).unwrap();
            assert_eq!(s.spares.borrow().1.len(), 2, "O_TMPFILE works here");
            assert!(s.reserve("c1", "eth0", ip("10.0.0.2"), 0).unwrap());
            // Taken: the same unnamed file is linked under the next address.
            let p = s.pending("c1", "eth0").unwrap();
            assert!(matches!(&*p.tmp.borrow(), Tmp::Unnamed(_)));
            assert!(!p.claim(ip("10.0.0.2"), 0).unwrap());
            assert!(p.claim(ip("10.0.0.3"), 0).unwrap());
            drop(p);
            // Another attachment's ADD through the same store gets a named temp file.
            let p = s.pending("c9", "eth0").unwrap();
            assert!(matches!(&*p.tmp.borrow(), Tmp::Named(_)));
        }
        for (name, want) in [("10.0.0.2", "c1\r\neth0"), ("10.0.0.3", "c1\r\neth0")] {
            assert_eq!(fs::read_to_string(dir.join(name)).unwrap(), want);
            assert_eq!(
                fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with(TMP_PREFIX)), "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn last_reserved_in_place_never_through_a_second_name() {
        let d = tmpdir("lastip");
        let dir = d.join("net");
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let s = Store::open(d.to_str().unwrap(), "net").unwrap();
        assert!(s.reserve("c1", "eth0", ip("10.0.0.200"), 0).unwrap());
        let last = dir.join("last_reserved_ip.0");
        let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).unwrap());
        let before = ino(&last);
        assert!(s.reserve("c2", "eth0", ip("10.0.0.3"), 0).unwrap());
        assert_eq!(fs::read(&last).unwrap(), b"10.0.0.3", "shorter address: truncated");
        assert_eq!(ino(&last), before, "overwritten in place");
        // A second name for the file (a hard link planted from elsewhere) is not written through.
        let other = d.join("other");
        fs::write(&other, b"keep").unwrap();
        fs::remove_file(&last).unwrap();
        fs::hard_link(&other, &last).unwrap();
        assert!(s.reserve("c3", "eth0", ip("10.0.0.4"), 0).unwrap());
        assert_eq!(fs::read(&other).unwrap(), b"keep");
        assert_eq!(fs::read(&last).unwrap(), b"10.0.0.4");
        drop(s);
        fs::remove_dir_all(&d).unwrap();
    }
}
