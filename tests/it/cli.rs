//! The multicall door and the human CLI: dispatch on argv[0], `list`, `install`,
//! `<plugin> <VERB>` by hand, `net` (a list run like cnitool), delegation both ways,
//! and the single-thread promise.

use crate::common::rig::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn cni_multi(args: &[&str]) -> std::process::Output {
    Command::new(ours_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn list_shows_every_plugin_with_kind() {
    let o = cni_multi(&["list"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("loopback") && l.contains("interface")),
        "{out}"
    );
    // Every listed plugin answers VERSION through a symlink of its name.
    let dir = PluginDir::new();
    for line in out.lines() {
        let name = line.split_whitespace().next().unwrap();
        let r = Invocation::new(name, "VERSION").in_root_ns().run_ours_in(&dir);
        assert!(r.success(), "{name}: {r}");
        assert!(r.stdout.contains("supportedVersions"), "{name}: {r}");
    }
}

#[test]
fn unknown_name_is_a_cni_error_listing_plugins() {
    let dir = TempDir::new("unknown-name");
    let link = dir.join("no-such-plugin");
    std::os::unix::fs::symlink(ours_bin(), &link).unwrap();
    let o = Command::new(&link).env_clear().output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(e["msg"].as_str().unwrap().contains("\"no-such-plugin\""), "{e}");
    assert!(e["details"].as_str().unwrap().contains("loopback"), "{e}");
}

#[test]
fn version_and_help() {
    let o = cni_multi(&["version"]);
    assert!(o.status.success());
    let v = stdout(&o);
    assert!(v.starts_with("cni-multi "), "{v}");
    // What build.rs passes: the commit (unknown outside make), target and libc, crate versions.
    let libc = if cfg!(target_env = "musl") { "musl" } else { "gnu" };
    assert!(v.lines().any(|l| l.starts_with("commit: ")), "{v}");
    assert!(v.contains(&format!("-linux-{libc} (libc: {libc})")), "{v}");
    let crates = v.lines().find(|l| l.starts_with("crates: ")).unwrap_or_default();
    for c in ["neli 0.", "nix 0.", "serde_json 1."] {
        assert!(crates.contains(c), "{c} missing: {v}");
    }
    let o = cni_multi(&["--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("install"));
    let o = cni_multi(&["loopback", "--help"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("--netns"));
    let o = cni_multi(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn install_makes_symlinks_atomically() {
    let dir = TempDir::new("install");
    // An old file in the way is replaced, not appended to.
    std::fs::write(dir.join("loopback"), b"old binary").unwrap();
    let o = cni_multi(&["install", "--dir", dir.as_str(), "--dry-run"]);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read(dir.join("loopback")).unwrap(),
        b"old binary",
        "dry run changes nothing"
    );
    let o = cni_multi(&["install", "--dir", dir.as_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let target = std::fs::read_link(dir.join("loopback")).unwrap();
    assert_eq!(
        std::fs::canonicalize(target).unwrap(),
        std::fs::canonicalize(ours_bin()).unwrap()
    );
    // No temporary names are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    // The installed symlink works like a runtime call.
    let r = Invocation::new("loopback", "VERSION")
        .in_root_ns()
        .run_binary(&dir.join("loopback"), dir.as_str());
    assert!(r.success(), "{r}");
}

#[test]
fn install_copy_puts_the_binary_beside_relative_links_and_leaves_other_files() {
    let dir = TempDir::new("install-copy");
    // A populated plugin directory: an unrelated plugin, an old copy, an old link.
    std::fs::write(dir.join("whereabouts"), b"third party").unwrap();
    std::fs::write(dir.join("cni-multi"), b"old cni-multi").unwrap();
    std::os::unix::fs::symlink("/nonexistent/old", dir.join("bridge")).unwrap();
    for round in 0..2 {
        let o = cni_multi(&["install", "--copy", "--dir", dir.as_str()]);
        assert!(
            o.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let copy = dir.join("cni-multi");
        assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(ours_bin()).unwrap());
        let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{mode:o}");
        for name in ["bridge", "loopback", "host-local"] {
            assert_eq!(
                std::fs::read_link(dir.join(name)).unwrap(),
                std::path::PathBuf::from("cni-multi"),
                "{name}"
            );
        }
        assert_eq!(std::fs::read(dir.join("whereabouts")).unwrap(), b"third party");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
    // The links work from the directory wherever it is mounted: run through one.
    let r = Invocation::new("loopback", "VERSION")
        .in_root_ns()
        .run_binary(&dir.join("loopback"), dir.as_str());
    assert!(r.success(), "{r}");
    assert!(r.stdout.contains("1.1.0"), "{r}");
}

#[test]
fn loopback_by_hand_and_through_a_symlink() {
    if !require_root("loopback_by_hand_and_through_a_symlink") {
        return;
    }
    let node = TestNs::new_node("cli-node");
    let pod = TestNs::new("cli-pod");
    let conf = r#"{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}"#;
    let o = node.exec(&[
        "sh",
        "-c",
        &format!(
            "echo '{conf}' | '{}' loopback ADD --netns {}",
            ours_bin().display(),
            pod.path_str()
        ),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let by_hand: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(by_hand["interfaces"][0]["name"], "lo");
    assert_eq!(pod.link("lo").unwrap()["operstate"], "UNKNOWN");
    // A runtime-style call through the symlink gives the same result.
    let pod2 = TestNs::new("cli-pod2");
    let r = Invocation::new("loopback", "ADD")
        .in_node(&node)
        .pod(&pod2)
        .config(&serde_json::from_str(conf).unwrap())
        .run_ours();
    r.expect_ok();
    let mut a = by_hand.clone();
    let mut b = r.result().clone();
    a["interfaces"][0]["sandbox"] = json!("x");
    b["interfaces"][0]["sandbox"] = json!("x");
    assert_eq!(a, b);
    // By hand, an error is shown with its code and the exit status is non-zero.
    let o = node.exec(&[
        "sh",
        "-c",
        &format!(
            "echo '{{\"cniVersion\":\"1.0.0\",\"name\":\"bad name\"}}' | '{}' loopback ADD --netns {}",
            ours_bin().display(),
            pod.path_str()
        ),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("error code 7"));
}

/// A fake third-party plugin: a shell script in the CNI_PATH.
fn script(dir: &TempDir, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `cni-multi net VERB` of the list saved in `cache` (see `save_list`), run in `node` behind
/// `prefix` (e.g. strace and its options).
fn net(
    node: &TestNs,
    prefix: &[&str],
    verb: &str,
    netns: &str,
    cache: &TempDir,
    cni_path: &str,
) -> std::process::Output {
    let bin = ours_bin();
    let conf = cache.join("net.conflist");
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend([
        bin.to_str().unwrap(),
        "net",
        verb,
        "x",
        netns,
        "--conf",
        conf.to_str().unwrap(),
    ]);
    argv.extend(["--cache-dir", cache.as_str(), "--path", cni_path]);
    node.exec(&argv)
}

fn save_list(list: &Value, cache: &TempDir) {
    std::fs::write(cache.join("net.conflist"), list.to_string()).unwrap();
}

fn net_add(list: &Value, netns: &str, cni_path: &str, cache: &TempDir, node: &TestNs) -> std::process::Output {
    save_list(list, cache);
    net(node, &[], "add", netns, cache, cni_path)
}

#[test]
fn delegation_executes_third_party_plugins_and_reports_their_errors() {
    if !require_root("delegation_executes_third_party_plugins_and_reports_their_errors") {
        return;
    }
    let node = TestNs::new_node("deleg-node");
    let pod = TestNs::new("deleg-pod");
    let dir = TempDir::new("deleg-path");
    let cache = TempDir::new("deleg-cache");
    // A plugin that echoes its environment back as a result, to show what it was given.
    script(
        &dir,
        "echo-env",
        r#"cat >/dev/null; printf '{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.9/24"}],"dns":{"domain":"%s %s %s"}}' "$CNI_COMMAND" "$CNI_IFNAME" "$CNI_CONTAINERID""#,
    );
    script(
        &dir,
        "json-error",
        r#"cat >/dev/null; echo '{"code":11,"msg":"try later","details":"busy"}'; exit 1"#,
    );
    script(&dir, "stderr-only", "cat >/dev/null; echo 'it broke' >&2; exit 1");
    script(&dir, "garbage", "cat >/dev/null; echo 'not json'; exit 1");
    let list = |t: &str| json!({"cniVersion": "1.0.0", "name": "dnet", "plugins": [{"type": t}]});
    let o = net_add(&list("echo-env"), pod.path_str(), dir.as_str(), &cache, &node);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["ips"][0]["address"], "10.9.0.9/24");
    assert!(
        r["dns"]["domain"].as_str().unwrap().starts_with("ADD eth0 cni-multi-"),
        "{r}"
    );
    // The cache is libcni's format.
    let cached: Vec<_> = std::fs::read_dir(cache.join("results")).unwrap().collect();
    assert_eq!(cached.len(), 1);
    let c: Value = serde_json::from_slice(&std::fs::read(cached[0].as_ref().unwrap().path()).unwrap()).unwrap();
    assert_eq!(c["kind"], "cniCacheV1");
    assert_eq!(c["result"]["ips"][0]["address"], "10.9.0.9/24");

    let err = |t: &str| {
        String::from_utf8_lossy(&net_add(&list(t), pod.path_str(), dir.as_str(), &cache, &node).stderr).into_owned()
    };
    let e = err("json-error");
    assert!(e.contains("try later"), "{e}");
    assert!(err("stderr-only").contains("netplugin failed: \"it broke\""));
    assert!(err("garbage").contains("netplugin failed but error parsing its diagnostic message"));
    assert!(err("no-such").contains("failed to find plugin \"no-such\""));
}

/// Runs `net add` under strace and returns the syscalls of interest it made.
fn traced_net_add(list: &Value, netns: &str, cni_path: &str, node: &TestNs) -> (bool, String) {
    let cache = TempDir::new("trace-cache");
    save_list(list, &cache);
    let trace = cache.join("trace");
    let strace = tool("strace");
    let prefix = [
        strace.to_str().unwrap(),
        "-f",
        "-qq",
        "-e",
        "trace=execve,clone,clone3,fork,vfork",
        "-o",
        trace.to_str().unwrap(),
    ];
    let o = net(node, &prefix, "add", netns, &cache, cni_path);
    (o.status.success(), std::fs::read_to_string(trace).unwrap())
}

#[test]
fn builtin_delegates_run_in_process_on_one_thread() {
    if !require_root("builtin_delegates_run_in_process_on_one_thread") {
        return;
    }
    let node = TestNs::new_node("thr-node");
    let pod = TestNs::new("thr-pod");
    let ours = PluginDir::new();
    let list = json!({"cniVersion": "1.0.0", "name": "tnet", "plugins": [{"type": "loopback"}]});
    // Our symlink in CNI_PATH: the plugin runs in-process, and no thread or process is made.
    let (ok, trace) = traced_net_add(&list, pod.path_str(), ours.as_str(), &node);
    assert!(ok, "{trace}");
    assert_eq!(
        trace.lines().filter(|l| l.contains("execve(")).count(),
        1,
        "only strace's own exec: {trace}"
    );
    // Syscall names only: the binary's own path may contain "clone" (a CI checkout does).
    assert!(
        !["clone(", "clone3(", "fork(", "vfork("]
            .iter()
            .any(|c| trace.contains(c)),
        "no thread or child: {trace}"
    );
    // The reference binary in CNI_PATH: it is executed instead.
    if require_reference("builtin_delegates_run_in_process_on_one_thread", "loopback") {
        let pod2 = TestNs::new("thr-pod2");
        let (ok, trace) = traced_net_add(&list, pod2.path_str(), REFERENCE_DIR, &node);
        assert!(ok, "{trace}");
        assert!(trace.contains("execve(\"/usr/lib/cni/loopback\""), "{trace}");
    }
}

#[test]
fn net_runs_a_list_add_check_del() {
    if !require_root("net_runs_a_list_add_check_del") {
        return;
    }
    let node = TestNs::new_node("net-node");
    let pod = TestNs::new("net-pod");
    let ours = PluginDir::new();
    let cache = TempDir::new("net-cache");
    let list = json!({"cniVersion": "1.0.0", "name": "lnet", "plugins": [{"type": "loopback"}]});
    let o = net_add(&list, pod.path_str(), ours.as_str(), &cache, &node);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pod.link("lo").unwrap()["operstate"], "UNKNOWN");
    let run = |verb: &str| net(&node, &[], verb, pod.path_str(), &cache, ours.as_str());
    assert!(run("check").status.success());
    assert!(run("del").status.success());
    assert_eq!(pod.link("lo").unwrap()["operstate"], "DOWN");
    assert_eq!(
        std::fs::read_dir(cache.join("results")).unwrap().count(),
        0,
        "DEL removes the cache"
    );
    assert!(run("del").status.success(), "a second DEL succeeds");
}

/// A plugin drops every capability it never needs before it touches anything (so a bug in
/// it cannot use them; see `linux::privileges`), and still does its work with what is left.
#[test]
fn plugins_drop_unneeded_capabilities() {
    if !require_root("plugins_drop_unneeded_capabilities") {
        return;
    }
    let node = TestNs::new_node("caps-node");
    let pod = TestNs::new("caps-pod");
    let dir = PluginDir::new();
    let trace = TempDir::new("caps-trace");
    let log = trace.join("capset");
    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"loopback"}"#;
    let o = node.exec(&[
        "sh",
        "-c",
        &format!(
            "echo '{conf}' | CNI_COMMAND=ADD CNI_CONTAINERID=c CNI_NETNS={} CNI_IFNAME=lo CNI_PATH={} \
             {} -qq -e trace=capset -o {} {}",
            pod.path_str(),
            dir.as_str(),
            tool("strace").display(),
            log.display(),
            dir.plugin("loopback").display()
        ),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let calls = std::fs::read_to_string(&log).unwrap();
    let last = calls
        .lines()
        .rfind(|l| l.starts_with("capset("))
        .expect("capset was called");
    let permitted = last.split("permitted=").nth(1).unwrap();
    for kept in ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] {
        assert!(permitted.contains(kept), "{kept} kept: {last}");
    }
    for dropped in ["CAP_SYS_MODULE", "CAP_SYS_BOOT", "CAP_SETUID", "CAP_BPF"] {
        assert!(!permitted.contains(dropped), "{dropped} dropped: {last}");
    }
    assert_eq!(pod.link("lo").unwrap()["operstate"], "UNKNOWN", "the ADD still worked");
}

#[test]
fn explain_and_plugin_help_list_every_key_with_type_and_default() {
    let o = cni_multi(&["explain", "portmap"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    let snat = out
        .lines()
        .find(|l| l.trim_start().starts_with("snat "))
        .expect("snat listed");
    assert!(snat.contains("bool") && snat.contains("true"), "{snat}");
    assert!(out.contains("common keys"), "{out}");
    // Every listed plugin explains itself; the same text follows `<plugin> --help`.
    for line in stdout(&cni_multi(&["list"])).lines() {
        let name = line.split_whitespace().next().unwrap();
        let e = cni_multi(&["explain", name]);
        assert!(e.status.success(), "explain {name}");
        let h = cni_multi(&[name, "--help"]);
        assert!(h.status.success(), "{name} --help");
        assert!(stdout(&h).ends_with(&stdout(&e)), "{name} --help:\n{}", stdout(&h));
    }
    let bad = cni_multi(&["explain", "nosuch"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no plugin \"nosuch\""));
}
