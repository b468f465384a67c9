//! The README's commands work as written and leave nothing behind: the main job (`make demo`)
//! and the network made by hand.

use crate::common::rig::{ours_bin, require_root, state_dir, tool, unique_name, TempDir, PLUGIN_PATH};
use serde_json::Value;

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

/// The README's sh block after `heading`, as written.
fn readme_block(heading: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let after = &readme[readme.find(heading).unwrap_or_else(|| panic!("README: no {heading:?}"))..];
    let start = after.find("```sh\n").expect("an sh block") + "```sh\n".len();
    let len = after[start..].find("\n```").expect("the block's end");
    after[start..start + len + 1].to_string()
}

/// Deletes the block's namespaces should it stop half-way.
struct NsGuard(Vec<String>);

impl Drop for NsGuard {
    fn drop(&mut self) {
        for n in &self.0 {
            if std::path::Path::new("/run/netns").join(n).exists() {
                let _ = std::process::Command::new(tool("ip"))
                    .args(["netns", "del", n])
                    .status();
            }
        }
    }
}

/// The README's "Using it by hand" block, run as written but for its names: the namespaces and
/// /tmp/cm get unique ones (tests run side by side), `sudo` is `env` (the tests run as root, and
/// sudo's secure_path would not find the binary under test, which stands first on PATH as the
/// README's install step would put it), and plugin records go to the tests' state dir. Every
/// command must succeed (`set -e`; `cm inspect` exits 1 on a problem), the log must hold one
/// line per plugin run, and nothing is left.
#[test]
fn readme_by_hand_block_runs_as_written() {
    if !require_root("readme_by_hand_block_runs_as_written") {
        return;
    }
    let block = readme_block("A network on a throw-away node");
    for name in ["node1", "pod1", "/tmp/cm"] {
        assert!(
            block.contains(name),
            "the README's block no longer uses {name}:\n{block}"
        );
    }
    let tmp = TempDir::new("readme");
    let bin = tmp.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(ours_bin(), bin.join("cni-multi")).unwrap();
    let (node, pod) = (unique_name("rdn"), unique_name("rdp"));
    let _guard = NsGuard(vec![node.clone(), pod.clone()]);
    let cm = tmp.join("cm");
    let script = block
        .replace("node1", &node)
        .replace("pod1", &pod)
        .replace("/tmp/cm", cm.to_str().unwrap());
    let o = std::process::Command::new(tool("bash"))
        .arg("-c")
        .arg(format!("set -e\nsudo() {{ env \"$@\"; }}\n{script}"))
        .env_clear()
        .env("PATH", format!("{}:{PLUGIN_PATH}", bin.display()))
        .env("CNI_MULTI_STATE_DIR", state_dir())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{script}\nstdout:\n{out}\nstderr:\n{err}");
    for want in [
        "network mynet",
        "port 8080/tcp -> 80",
        "no problems found",
        "\"127.0.0.1/8\"",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let runs: Vec<(String, String)> = out
        .lines()
        .filter(|l| l.starts_with("{\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| (l["plugin"].as_str().unwrap().into(), l["verb"].as_str().unwrap().into()))
        .collect();
    let want: Vec<(String, String)> = [
        ("host-local", "ADD"),
        ("bridge", "ADD"),
        ("portmap", "ADD"),
        ("host-local", "CHECK"),
        ("bridge", "CHECK"),
        ("portmap", "CHECK"),
        ("host-local", "STATUS"),
        ("bridge", "STATUS"),
        ("portmap", "STATUS"),
        ("portmap", "DEL"),
        ("host-local", "DEL"),
        ("bridge", "DEL"),
    ]
    .iter()
    .map(|(p, v)| (p.to_string(), v.to_string()))
    .collect();
    assert_eq!(runs, want, "{out}");
    for n in [&node, &pod] {
        assert!(!std::path::Path::new("/run/netns").join(n).exists(), "{n} left");
    }
    assert!(!cm.exists(), "{} left", cm.display());
}
