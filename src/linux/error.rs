//! One error type for every kernel call: what was being done to which object, the errno,
//! and the kernel's extended-ack text when it sent one.

use std::fmt;
use std::io;

/// A failed kernel operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    context: String,
    errno: Option<i32>,
    ext_ack: Option<String>,
    detail: Option<String>,
}

/// Result of a kernel operation.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error the kernel reported with `errno` (positive) and maybe an extended-ack message.
    pub fn kernel(context: impl Into<String>, errno: i32, ext_ack: Option<String>) -> Self {
        Error {
            context: context.into(),
            errno: Some(errno),
            ext_ack: ext_ack.filter(|s| !s.is_empty()),
            detail: None,
        }
    }

    /// Wraps an `io::Error`; keeps its errno when it has one.
    pub fn io(context: impl Into<String>, err: io::Error) -> Self {
        let errno = err.raw_os_error();
        Error {
            context: context.into(),
            errno,
            ext_ack: None,
            detail: if errno.is_none() { Some(err.to_string()) } else { None },
        }
    }

    /// Wraps a `nix` errno.
    pub fn nix(context: impl Into<String>, err: nix::errno::Errno) -> Self {
        Self::kernel(context, err as i32, None)
    }

    /// An error without errno (malformed reply, invalid argument caught before the kernel).
    pub fn other(context: impl Into<String>, detail: impl Into<String>) -> Self {
        Error {
            context: context.into(),
            errno: None,
            ext_ack: None,
            detail: Some(detail.into()),
        }
    }

    /// What was being done, naming the object, e.g. `create veth "eth0"`.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The errno (positive), when the failure came with one.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The kernel's extended-ack message, when it sent one.
    pub fn ext_ack(&self) -> Option<&str> {
        self.ext_ack.as_deref()
    }

    /// The object is absent (ENOENT, ENODEV, ESRCH).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno,
            Some(nix::libc::ENOENT) | Some(nix::libc::ENODEV) | Some(nix::libc::ESRCH)
        )
    }

    /// The object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno == Some(nix::libc::EEXIST)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.context)?;
        if let Some(e) = self.errno {
            write!(f, ": {}", io::Error::from_raw_os_error(e))?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if let Some(x) = &self.ext_ack {
            write!(f, ": {x}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// An errno's text as Go prints it: the C description with a lower-case first letter
/// ("no such file or directory"), which the reference's error messages carry.
pub fn errno_text(errno: i32) -> String {
    let d = nix::errno::Errno::from_raw(errno).desc();
    let mut c = d.chars();
    c.next()
        .map(|f| f.to_lowercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// An I/O error's text as Go prints it: [`errno_text`] when it carries an errno, else as is.
pub fn io_errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_text(n),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_errno_and_ext_ack() {
        let e = Error::kernel(r#"create veth "eth0""#, 17, Some("peer exists".into()));
        assert_eq!(
            e.to_string(),
            r#"create veth "eth0": File exists (os error 17): peer exists"#
        );
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        assert_eq!(e.errno(), Some(17));
    }

    #[test]
    fn not_found_kinds() {
        for n in [nix::libc::ENOENT, nix::libc::ENODEV, nix::libc::ESRCH] {
            assert!(Error::kernel("x", n, None).is_not_found());
        }
        let e = Error::io("open", io::Error::from_raw_os_error(2));
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "open: No such file or directory (os error 2)");
        assert_eq!(Error::other("parse", "short").to_string(), "parse: short");
    }
}
