//! Reading and writing /proc/sys. Keys use the slash form relative to /proc/sys, e.g.
//! `net/ipv4/ip_forward` (not the dotted form: interface names may contain dots). Paths under
//! /proc/sys/net resolve against the calling thread's network namespace, so enter one with
//! [`NetNs::enter`](super::NetNs::enter) first to change it there.

use std::path::PathBuf;

use super::{Error, Result};

fn path(key: &str) -> Result<PathBuf> {
    let bad = key.is_empty() || key.starts_with('/') || key.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::other(format!("sysctl {key:?}"), "invalid key"));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

/// Reads a sysctl, without the trailing newline.
pub fn read(key: &str) -> Result<String> {
    let p = path(key)?;
    let s = std::fs::read_to_string(&p).map_err(|e| Error::io(format!("read sysctl {key}"), e))?;
    Ok(s.trim_end_matches('\n').to_string())
}

/// Writes a sysctl.
pub fn write(key: &str, value: &str) -> Result<()> {
    let p = path(key)?;
    std::fs::write(&p, value).map_err(|e| Error::io(format!("write sysctl {key}={value}"), e))
}

/// Writes a sysctl only when its current value differs; returns whether it wrote.
/// Avoids failing on a read-only /proc/sys when the value is already right.
pub fn write_if_different(key: &str, value: &str) -> Result<bool> {
    if read(key)? == value.trim_end_matches('\n') {
        return Ok(false);
    }
    write(key, value)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        assert!(path("net/ipv4/ip_forward").is_ok());
        assert!(path("net/ipv4/conf/eth0.100/forwarding").is_ok());
        for k in ["", "/net/ipv4", "net/../../etc", "net//x", "net/./x"] {
            assert!(path(k).is_err(), "{k}");
        }
    }

    #[test]
    fn read_works() {
        assert!(!read("kernel/ostype").unwrap().ends_with('\n'));
    }
}
