//! State files in directories other software (or a local user) may also write: never
//! followed through a symlink, never blocked on (a FIFO), never written through a hard link,
//! never trusted beyond a size limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::libc;

use super::files::{self, Reader, Refused};

/// Read a regular file of at most `max` bytes (`files::Reader::no_follow`). A symlink, FIFO,
/// socket, device or directory at `path`, or a larger file, is an error naming the path and
/// what was found.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    Reader::no_follow(max).read(path).map_err(|e| match files::refusal(&e) {
        Some(Refused::NotRegular(what)) => not_regular(path, what),
        Some(Refused::TooLarge { len, max }) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, more than the {max} a state file may have",
                path.display()
            ),
        ),
        Some(Refused::Grew { max }) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} grew beyond {max} bytes while being read", path.display()),
        ),
        None => e,
    })
}

/// Replace `path` with `data` (mode `mode`): written to a fresh O_EXCL|O_NOFOLLOW temp file
/// beside it, fsynced when `sync` (state that must survive a node crash), then renamed over it. Whatever was at `path` (a symlink, a hard link
/// to another file) is replaced, never written through; a directory there is an error. On any
/// failure (a full or read-only filesystem) the temp file is removed and `path` is as before.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    write_atomic_in(path, dir, data, mode, sync)
}

/// [`write_atomic`] with its temp file in `tmp_dir` (same filesystem as `path`): a directory
/// holding only temp files keeps [`remove_with_temps_in`] O(1) however many files `path`'s
/// directory holds.
pub fn write_atomic_in(path: &Path, tmp_dir: &Path, data: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if md.is_dir() {
            return Err(not_regular(path, "a directory"));
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tmp_dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // A leftover of a killed run with our pid: ours to replace.
    let _ = std::fs::remove_file(&tmp);
    let write = || -> io::Result<()> {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// `.<name>.tmp-`: the temp files of `write_atomic` for `path` start with this.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Remove `path` and the temp files a killed `write_atomic` for it may have left.
pub fn remove_with_temps(path: &Path) -> io::Result<()> {
    remove_with_temps_in(path, path.parent().unwrap_or(Path::new(".")))
}

/// [`remove_with_temps`] for files written by [`write_atomic_in`] with `tmp_dir`: only that
/// directory is scanned.
pub fn remove_with_temps_in(path: &Path, tmp_dir: &Path) -> io::Result<()> {
    let prefix = temp_prefix(path);
    if let Ok(rd) = std::fs::read_dir(tmp_dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = remove(&e.path());
            }
        }
    }
    remove(path)
}

/// Remove `path` if it is a regular file or a symlink (the link itself, never its target).
/// A directory or anything else is left alone and reported.
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(md) if md.is_file() || md.file_type().is_symlink() || md.file_type().is_fifo() => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        }
        Ok(md) => Err(not_regular(path, files::what(&md.file_type()))),
    }
}

fn not_regular(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is {what}, not a regular file: refusing to use it", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_entries_are_refused_not_followed() {
        let d = files::test_dir("statefile-hostile");
        let target = d.join("target");
        std::fs::write(&target, b"secret").unwrap();
        std::os::unix::fs::symlink(&target, d.join("link")).unwrap();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(d.join("dir")).unwrap();
        std::fs::write(d.join("big"), vec![b'x'; 10 << 20]).unwrap();
        for (name, needle) in [
            ("link", "symlink"),
            ("fifo", "FIFO"),
            ("dir", "directory"),
            ("big", "bytes"),
        ] {
            let e = read_regular(&d.join(name), 1 << 20).unwrap_err();
            assert!(e.to_string().contains(needle), "{name}: {e}");
        }
        // Writing replaces the symlink and the hard link instead of writing through them.
        std::fs::hard_link(&target, d.join("hard")).unwrap();
        write_atomic(&d.join("link"), b"new", 0o600, true).unwrap();
        write_atomic(&d.join("hard"), b"new", 0o600, false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"secret");
        assert_eq!(read_regular(&d.join("link"), 10).unwrap(), b"new");
        assert!(write_atomic(&d.join("dir"), b"x", 0o600, false).is_err());
        remove(&d.join("fifo")).unwrap();
        assert!(remove(&d.join("dir")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
