//! Reading small files that other software (or a local user) controls: only a regular file,
//! only up to a bound. A FIFO would block the caller forever and a device like /dev/zero
//! would be read until memory runs out; the open is non-blocking so that even opening a
//! FIFO returns at once.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The bytes of the regular file at `path` (symlinks followed), at most `max` of them.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files() {
        let dir = std::env::temp_dir().join(format!("cni-multi-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, b"abc").unwrap();
        assert_eq!(read_regular(&small, 3).unwrap(), b"abc");
        let e = read_regular(&small, 2).unwrap_err();
        assert_eq!(e.to_string(), "larger than 2 bytes");
        for p in [fifo.as_path(), Path::new("/dev/zero"), dir.as_path()] {
            let e = read_regular(p, 10).unwrap_err();
            assert_eq!(e.to_string(), "not a regular file", "{p:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
