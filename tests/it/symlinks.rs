//! `symlinks.sh`: dry run changes nothing; a real run makes one link per plugin, replaces old
//! entries, is idempotent and leaves no temp files. Its plugin list matches the rig's.

use crate::common::rig::{TempDir, PLUGINS};
use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("symlinks.sh")
}

fn run(args: &[&str]) -> String {
    let out = Command::new("sh")
        .arg(script())
        .args(args)
        .output()
        .expect("run sh symlinks.sh");
    assert!(
        out.status.success(),
        "symlinks.sh {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn plugin_list_matches_rig() {
    let text = std::fs::read_to_string(script()).unwrap();
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("PLUGINS=\""))
        .expect("PLUGINS=\"...\" line");
    let listed: Vec<&str> = line.trim_end_matches('"').split_whitespace().collect();
    assert_eq!(listed, PLUGINS);
}

#[test]
fn dry_run_changes_nothing() {
    let tmp = TempDir::new("symdry");
    let dir = tmp.join("bin");
    let out = run(&[
        "--dir",
        dir.to_str().unwrap(),
        "--binary",
        "/nonexistent/cni-multi",
        "--dry-run",
    ]);
    assert!(!dir.exists(), "dry run created {}", dir.display());
    for p in PLUGINS {
        assert!(
            out.contains(&format!("{}/{p}\n", dir.display())),
            "dry run does not mention {p}:\n{out}"
        );
    }
}

#[test]
fn links_every_plugin_and_replaces_old_files() {
    let tmp = TempDir::new("symreal");
    let dir = tmp.join("bin");
    std::fs::create_dir(&dir).unwrap();
    let bin = tmp.join("cni-multi");
    std::fs::write(&bin, "#!/bin/sh\n").unwrap();
    // An old plugin binary and an old link pointing elsewhere are both replaced.
    std::fs::write(dir.join("bridge"), "old binary").unwrap();
    std::os::unix::fs::symlink("/elsewhere", dir.join("ptp")).unwrap();
    std::fs::write(dir.join("unrelated"), "keep me").unwrap();

    for _ in 0..2 {
        run(&["--dir", dir.to_str().unwrap(), "--binary", bin.to_str().unwrap()]);
        for p in PLUGINS {
            assert_eq!(std::fs::read_link(dir.join(p)).unwrap(), bin, "{p}");
        }
        let mut want: Vec<String> = PLUGINS.iter().map(|s| s.to_string()).collect();
        want.push("unrelated".into());
        want.sort();
        assert_eq!(entries(&dir), want, "leftover or missing entries");
    }
}

#[test]
fn default_binary_is_in_dir_and_must_exist() {
    let tmp = TempDir::new("symdef");
    let out = Command::new("sh")
        .arg(script())
        .args(["--dir", tmp.as_str()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no cni-multi in dir must fail");
    std::fs::write(tmp.join("cni-multi"), "").unwrap();
    run(&["--dir", tmp.as_str()]);
    assert_eq!(std::fs::read_link(tmp.join("loopback")).unwrap(), tmp.join("cni-multi"));
}
