//! The README's main-job command works and leaves nothing behind.

use crate::common::rig::{ours_bin, require_root};

#[test]
fn demo_runs_and_cleans_up() {
    if !require_root("demo_runs_and_cleans_up") {
        return;
    }
    let o = std::process::Command::new(ours_bin()).arg("demo").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    for check in [
        "pod1 → pod2",
        "pod2 → pod1",
        "pod1 → gateway",
        "node → pod2",
        "no IP reservation left",
    ] {
        assert!(
            out.lines().any(|l| l.contains('✓') && l.contains(check)),
            "{check} missing:\n{out}"
        );
    }
    assert!(!out.contains('✗'), "{out}");
    let left: Vec<_> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.starts_with("cni-multi-demo-")),
        "namespaces left: {left:?}"
    );
}
