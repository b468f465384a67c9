//! File identity: the one "same device and inode" test of the crate, below every layer (pure
//! std, no CNI words) so that `cni` (is a delegate this executable?), `linux` (are two netns
//! handles the same namespace?) and the door (is CNI_NETNS our own netns?) share it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether two files' metadata name the same file (same device and inode).
pub fn same(a: &Metadata, b: &Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Whether two paths name the same file, symlinks followed; false when either cannot be read.
pub fn same_path(a: impl AsRef<Path>, b: impl AsRef<Path>) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => same(&a, &b),
        _ => false,
    }
}
