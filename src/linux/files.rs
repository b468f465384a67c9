//! The one way to read a small file that other software (or a local user) controls: only a
//! regular file, only up to a bound, and (unless the caller asks to follow) never through a
//! symlink. A FIFO would block the caller forever and a device like /dev/zero would be read
//! until memory runs out; the open is non-blocking so that even opening a FIFO returns at
//! once, and the type and size are checked on the opened file (fstat), so nothing can be
//! swapped in between the check and the read.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::libc;

/// How a file is read: the size cap, and whether a symlink at the path is followed.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    max: u64,
    follow: bool,
}

impl Reader {
    /// A symlink is refused (O_NOFOLLOW): for files in directories others may write.
    pub const fn no_follow(max: u64) -> Reader {
        Reader { max, follow: false }
    }

    /// A symlink is followed: for files a config names (/etc/resolv.conf is often a link).
    pub const fn following(max: u64) -> Reader {
        Reader { max, follow: true }
    }

    fn flags(self) -> OFlag {
        let f = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        if self.follow {
            f
        } else {
            f | OFlag::O_NOFOLLOW
        }
    }

    /// The bytes of the regular file at `path`, at most `max` of them.
    pub fn read(self, path: &Path) -> io::Result<Vec<u8>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(self.flags().bits())
            .open(path)
            .map_err(|e| self.open_error(e))?;
        self.read_open(f)
    }

    /// The same for `name` in the directory `dir` (openat: no path walk, one syscall fewer
    /// a file for a caller that reads a whole directory).
    pub fn read_at(self, dir: &File, name: &str) -> io::Result<Vec<u8>> {
        let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, self.flags(), nix::sys::stat::Mode::empty())
            .map_err(|e| self.open_error(io::Error::from(e)))?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        self.read_open(unsafe { File::from_raw_fd(fd) })
    }

    fn open_error(self, e: io::Error) -> io::Error {
        match e.raw_os_error() {
            Some(libc::ELOOP) if !self.follow => refused(Refused::NotRegular("a symlink")),
            _ => e,
        }
    }

    fn read_open(self, f: File) -> io::Result<Vec<u8>> {
        let md = f.metadata()?;
        if !md.is_file() {
            return Err(refused(Refused::NotRegular(what(&md.file_type()))));
        }
        if md.len() > self.max {
            return Err(refused(Refused::TooLarge {
                len: md.len(),
                max: self.max,
            }));
        }
        let mut out = Vec::with_capacity(md.len() as usize);
        // Bounded again: the file may grow while it is read.
        f.take(self.max + 1).read_to_end(&mut out)?;
        if out.len() as u64 > self.max {
            return Err(refused(Refused::Grew { max: self.max }));
        }
        Ok(out)
    }
}

/// Why a file was not read: the inner error of the io::Error (kind InvalidData) `Reader`
/// returns; `refusal` gets it back, so a caller can name the file or stay quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A symlink (where none is followed), FIFO, socket, device or directory: what it is.
    NotRegular(&'static str),
    TooLarge {
        len: u64,
        max: u64,
    },
    /// Within the bound when opened, beyond it while being read.
    Grew {
        max: u64,
    },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotRegular(_) => write!(f, "not a regular file"),
            Refused::TooLarge { max, .. } => write!(f, "larger than {max} bytes"),
            Refused::Grew { max } => write!(f, "grew beyond {max} bytes while being read"),
        }
    }
}

impl std::error::Error for Refused {}

fn refused(r: Refused) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, r)
}

/// The refusal behind an error of `Reader`, if it is one (not an error of open or read).
pub fn refusal(e: &io::Error) -> Option<Refused> {
    e.get_ref()?.downcast_ref::<Refused>().copied()
}

/// What a file that is not a regular one is, for messages ("a FIFO").
pub fn what(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// A fresh, empty scratch directory for a unit test of files here or in statefile.
#[cfg(test)]
pub(super) fn test_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("cni-multi-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files() {
        let dir = test_dir("files-small");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, b"abc").unwrap();
        for r in [Reader::following(3), Reader::no_follow(3)] {
            assert_eq!(r.read(&small).unwrap(), b"abc");
            assert_eq!(r.read_at(&File::open(&dir).unwrap(), "small").unwrap(), b"abc");
        }
        let e = Reader::following(2).read(&small).unwrap_err();
        assert_eq!(e.to_string(), "larger than 2 bytes");
        assert_eq!(refusal(&e), Some(Refused::TooLarge { len: 3, max: 2 }));
        for (p, what) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a device"),
            (dir.as_path(), "a directory"),
        ] {
            for r in [Reader::following(10), Reader::no_follow(10)] {
                let e = r.read(p).unwrap_err();
                assert_eq!(e.to_string(), "not a regular file", "{p:?}");
                assert_eq!(refusal(&e), Some(Refused::NotRegular(what)), "{p:?}");
            }
        }
        // An error of open itself is no refusal.
        let e = Reader::following(10).read(&dir.join("missing")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(refusal(&e), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symlinks_followed_only_when_asked() {
        let dir = test_dir("files-link");
        std::fs::write(dir.join("target"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.join("target"), dir.join("link")).unwrap();
        assert_eq!(Reader::following(10).read(&dir.join("link")).unwrap(), b"secret");
        let e = Reader::no_follow(10).read(&dir.join("link")).unwrap_err();
        assert_eq!(refusal(&e), Some(Refused::NotRegular("a symlink")));
        let e = Reader::no_follow(10)
            .read_at(&File::open(&dir).unwrap(), "link")
            .unwrap_err();
        assert_eq!(refusal(&e), Some(Refused::NotRegular("a symlink")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
