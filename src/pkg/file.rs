//! Files plugins keep for DEL (tuning's backups, flannel's delegate configs).

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Create or truncate `path` for writing, mode 0600, refusing a symlink in its place (the
/// reference's files hold configs other users should not read or redirect).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}
