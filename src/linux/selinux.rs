//! Whether SELinux is on, as go-selinux's `GetEnabled` decides it: selinuxfs is mounted and
//! this thread's context is not "kernel".

use std::path::Path;

/// SELINUX_MAGIC, the statfs type of selinuxfs.
const SELINUX_MAGIC: i64 = 0xf97c_ff8c;

pub fn enabled() -> bool {
    selinuxfs_mounted() && current_context().is_some_and(|c| c != "kernel")
}

// f_type's C type differs between libcs and architectures.
#[allow(clippy::unnecessary_cast)]
fn selinuxfs_mounted() -> bool {
    let at_default = nix::sys::statfs::statfs(Path::new("/sys/fs/selinux"))
        .is_ok_and(|s| s.filesystem_type().0 as i64 == SELINUX_MAGIC);
    at_default
        || std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|m| {
            m.lines()
                .any(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("selinuxfs ")))
        })
}

/// This thread's security context (`/proc/thread-self/attr/current`), without its NUL.
fn current_context() -> Option<String> {
    let raw = std::fs::read("/proc/thread-self/attr/current").ok()?;
    let s = String::from_utf8_lossy(&raw);
    Some(s.trim_end_matches(['\0', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    /// This machine has no SELinux; where it has, the answer must agree with selinuxfs.
    #[test]
    fn agrees_with_selinuxfs() {
        assert_eq!(
            super::enabled(),
            std::path::Path::new("/sys/fs/selinux/enforce").exists()
        );
    }
}
