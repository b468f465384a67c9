//! Hostile files in state directories: a tuning backup, flannel saved config, host-local
//! reservation or lock, or libcni cache entry that is a symlink (to /etc/passwd, into another
//! directory, to a file holding a plausible state), a FIFO, a directory or 10 MB of garbage.
//! None may be followed, blocked on or trusted: each ends in a clear error or a safe recovery,
//! and a file it points at is never changed.

use crate::common::rig::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

/// No plugin run here should take long; one that hangs on a FIFO is killed and reported.
const HANG: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    SymlinkPasswd,
    SymlinkVictim,
    SymlinkDir,
    Fifo,
    Dir,
    Garbage,
}

const KINDS: [Kind; 6] = [
    Kind::SymlinkPasswd,
    Kind::SymlinkVictim,
    Kind::SymlinkDir,
    Kind::Fifo,
    Kind::Dir,
    Kind::Garbage,
];

/// A file outside the state dir that a symlink may point at, with content that would be a
/// valid state file if it were trusted.
struct Victim {
    dir: TempDir,
}

impl Victim {
    fn new(content: &str) -> Victim {
        let dir = TempDir::new("victim");
        std::fs::write(dir.join("file"), content).unwrap();
        Victim { dir }
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.join("file")
    }

    fn content(&self) -> String {
        std::fs::read_to_string(self.file()).unwrap()
    }

    fn dir_is_empty_but_file(&self) -> bool {
        std::fs::read_dir(self.dir.path()).unwrap().count() == 1
    }
}

fn passwd_digest() -> Vec<u8> {
    std::fs::read("/etc/passwd").unwrap()
}

fn plant(path: &Path, kind: Kind, victim: &Victim) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    match kind {
        Kind::SymlinkPasswd => std::os::unix::fs::symlink("/etc/passwd", path).unwrap(),
        Kind::SymlinkVictim => std::os::unix::fs::symlink(victim.file(), path).unwrap(),
        Kind::SymlinkDir => std::os::unix::fs::symlink(victim.dir.path(), path).unwrap(),
        Kind::Fifo => {
            run_ok(&["mkfifo", path.to_str().unwrap()]);
        }
        Kind::Dir => std::fs::create_dir(path).unwrap(),
        Kind::Garbage => std::fs::write(path, vec![0xa5u8; 10 << 20]).unwrap(),
    }
}

fn not_hung(o: &Outcome, what: &str) {
    assert!(!o.timed_out, "{what}: blocked (killed after {HANG:?}): {o}");
}

/// A clear error is a CNI error JSON with a message.
fn clear_error(o: &Outcome, what: &str) {
    assert!(!o.success(), "{what}: should fail: {o}");
    assert!(
        o.code().is_some() && !o.msg().unwrap_or("").is_empty(),
        "{what}: CNI error JSON: {o}"
    );
}

// ---- tuning ------------------------------------------------------------------------------

fn tuning_pod() -> TestNs {
    let pod = TestNs::new("hf-tun-pod");
    pod.ip(&[
        "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", "peer0",
    ]);
    pod
}

fn tuning_conf(pod: &TestNs, data: &TempDir) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "hft", "type": "tuning", "dataDir": data.as_str(), "mtu": 1300,
        "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": pod.path_str()}],
                       "ips": [{"address": "10.81.0.5/24", "interface": 0}]}
    })
}

#[test]
fn tuning_backup_hostile() {
    if !require_root("tuning_backup_hostile") {
        return;
    }
    let passwd = passwd_digest();
    for kind in KINDS {
        let what = format!("tuning backup {kind:?}");
        let node = TestNs::new_node("hf-tun-node");
        let pod = tuning_pod();
        let data = TempDir::new("hf-tun-data");
        // A plausible backup that would set the MTU to 9000 on DEL, if it were trusted.
        let victim = Victim::new(r#"{"mtu": 1234}"#);
        let backup = data.join("hfc_eth0.json");
        let inv = |cmd: &str| {
            Invocation::new("tuning", cmd)
                .pod(&pod)
                .in_node(&node)
                .container_id("hfc")
                .config(&tuning_conf(&pod, &data))
                .timeout(HANG)
        };
        // DEL first: the planted file is never read as a backup, never blocked on.
        plant(&backup, kind, &victim);
        let d = inv("DEL").run_ours();
        not_hung(&d, &what);
        d.expect_ok();
        assert_eq!(
            pod.link("eth0").unwrap()["mtu"],
            1500,
            "{what}: DEL trusted the planted backup"
        );
        // ADD: a symlink, FIFO or garbage is replaced (safe recovery); a directory is an error.
        let _ = std::fs::remove_file(&backup);
        if !backup.is_dir() {
            plant(&backup, kind, &victim);
        }
        let a = inv("ADD").run_ours();
        not_hung(&a, &what);
        if kind == Kind::Dir {
            clear_error(&a, &what);
            assert_eq!(
                pod.link("eth0").unwrap()["mtu"],
                1500,
                "{what}: failed ADD left the MTU"
            );
        } else {
            a.expect_ok();
            let md = std::fs::symlink_metadata(&backup).unwrap();
            assert!(md.is_file(), "{what}: the backup is a regular file now");
            inv("DEL").run_ours().expect_ok();
            assert_eq!(
                pod.link("eth0").unwrap()["mtu"],
                1500,
                "{what}: DEL restored the real MTU"
            );
        }
        assert_eq!(victim.content(), r#"{"mtu": 1234}"#, "{what}: victim file changed");
        assert!(
            victim.dir_is_empty_but_file(),
            "{what}: something written into the other dir"
        );
        assert_eq!(passwd_digest(), passwd, "{what}: /etc/passwd changed");
    }
}

// ---- flannel -----------------------------------------------------------------------------

/// A CNI_PATH with a fake delegate `bridge` that records every call: a followed symlink
/// would show up as a delegated DEL.
fn recording_path(dir: &TempDir) -> String {
    use std::os::unix::fs::PermissionsExt;
    let log = dir.join("calls");
    let p = dir.join("bridge");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND\" >> {}\n\
             [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.82.0.5/24\"}}]}}'\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.as_str().to_string()
}

#[test]
fn flannel_saved_config_hostile() {
    if !require_root("flannel_saved_config_hostile") {
        return;
    }
    let passwd = passwd_digest();
    for kind in KINDS {
        let what = format!("flannel saved config {kind:?}");
        let node = TestNs::new_node("hf-fl-node");
        let state = TempDir::new("hf-fl-state");
        let path_dir = TempDir::new("hf-fl-path");
        let cni_path = recording_path(&path_dir);
        std::fs::write(
            state.join("subnet.env"),
            "FLANNEL_NETWORK=10.82.0.0/16\nFLANNEL_SUBNET=10.82.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        let data = state.join("data");
        let victim = Victim::new(r#"{"cniVersion":"1.0.0","name":"x","type":"bridge"}"#);
        let conf = json!({"cniVersion": "1.0.0", "name": "hff", "type": "flannel",
                          "subnetFile": state.join("subnet.env"), "dataDir": data});
        let inv = |cmd: &str| {
            Invocation::new("flannel", cmd)
                .in_node(&node)
                .netns("/var/run/netns/none")
                .container_id("hfc")
                .cni_path(&cni_path)
                .config(&conf)
                .timeout(HANG)
        };
        plant(&data.join("hfc"), kind, &victim);
        let d = inv("DEL").run_ours();
        not_hung(&d, &what);
        d.expect_ok();
        let calls = std::fs::read_to_string(path_dir.join("calls")).unwrap_or_default();
        assert_eq!(calls, "", "{what}: DEL delegated a planted config");
        if kind == Kind::Dir {
            // Left for a person; ADD cannot save over it and says so.
            let a = inv("ADD").run_ours();
            not_hung(&a, &what);
            clear_error(&a, &what);
        } else {
            assert!(
                std::fs::symlink_metadata(data.join("hfc")).is_err(),
                "{what}: planted entry removed"
            );
            plant(&data.join("hfc"), kind, &victim);
            let a = inv("ADD").run_ours();
            not_hung(&a, &what);
            a.expect_ok();
            assert!(
                std::fs::symlink_metadata(data.join("hfc")).unwrap().is_file(),
                "{what}: saved as a file"
            );
            inv("DEL").run_ours().expect_ok();
        }
        assert!(
            victim.content().contains("\"name\":\"x\""),
            "{what}: victim file changed"
        );
        assert!(
            victim.dir_is_empty_but_file(),
            "{what}: something written into the other dir"
        );
        assert_eq!(passwd_digest(), passwd, "{what}: /etc/passwd changed");
    }
}

// ---- host-local --------------------------------------------------------------------------

fn host_local(cmd: &str, data: &TempDir, cid: &str) -> Invocation {
    Invocation::new("host-local", cmd)
        .container_id(cid)
        .netns("/var/run/netns/none")
        .config(&json!({"cniVersion": "1.0.0", "name": "hfh",
            "ipam": {"type": "host-local", "dataDir": data.as_str(),
                     "ranges": [[{"subnet": "10.83.0.0/29"}]]}}))
        .timeout(HANG)
}

#[test]
fn host_local_reservation_hostile() {
    if !require_root("host_local_reservation_hostile") {
        return;
    }
    let passwd = passwd_digest();
    for kind in KINDS {
        let what = format!("host-local reservation {kind:?}");
        let data = TempDir::new("hf-hl");
        // The container's own ID in the victim: a followed symlink would look like its lease.
        let victim = Victim::new("hfc\r\neth0");
        // The first address the allocator would hand out.
        plant(&data.join("hfh/10.83.0.2"), kind, &victim);
        let a = host_local("ADD", &data, "hfc").run_ours();
        not_hung(&a, &what);
        a.expect_ok();
        let ip = a.result()["ips"][0]["address"].as_str().unwrap().to_string();
        assert_ne!(
            ip, "10.83.0.2/29",
            "{what}: the planted entry was taken as free or as ours"
        );
        let d = host_local("DEL", &data, "hfc").run_ours();
        not_hung(&d, &what);
        d.expect_ok();
        assert!(
            std::fs::symlink_metadata(data.join("hfh/10.83.0.2")).is_ok(),
            "{what}: DEL removed an entry that is not the container's"
        );
        assert!(std::fs::symlink_metadata(data.join("hfh").join(ip.split('/').next().unwrap())).is_err());
        assert_eq!(victim.content(), "hfc\r\neth0", "{what}: victim changed");
        assert_eq!(passwd_digest(), passwd, "{what}: /etc/passwd changed");
    }
}

#[test]
fn host_local_lock_hostile() {
    if !require_root("host_local_lock_hostile") {
        return;
    }
    let passwd = passwd_digest();
    for kind in KINDS {
        let what = format!("host-local lock {kind:?}");
        let data = TempDir::new("hf-hll");
        let victim = Victim::new("");
        plant(&data.join("hfh/lock"), kind, &victim);
        let a = host_local("ADD", &data, "hfc").run_ours();
        not_hung(&a, &what);
        // A 10 MB lock file is still a regular file we may flock: its content is never read.
        if kind == Kind::Garbage {
            a.expect_ok();
            host_local("DEL", &data, "hfc").run_ours().expect_ok();
        } else {
            clear_error(&a, &what);
            assert!(
                a.msg().unwrap().contains("lock"),
                "{what}: the message names the lock: {a}"
            );
        }
        assert_eq!(victim.content(), "", "{what}: victim changed");
        assert!(
            victim.dir_is_empty_but_file(),
            "{what}: something written into the other dir"
        );
        assert_eq!(passwd_digest(), passwd, "{what}: /etc/passwd changed");
    }
}

// ---- libcni cache (cni-multi net) ----------------------------------------------------------

#[test]
fn libcni_cache_entry_hostile() {
    if !require_root("libcni_cache_entry_hostile") {
        return;
    }
    let passwd = passwd_digest();
    let plugins = PluginDir::new();
    for kind in KINDS {
        let what = format!("cache entry {kind:?}");
        let node = TestNs::new_node("hf-cache-node");
        let pod = TestNs::new("hf-cache-pod");
        let state = TempDir::new("hf-cache");
        let list = json!({"cniVersion": "1.0.0", "name": "hfc", "plugins": [
            {"type": "bridge", "bridge": "cmhf0",
             "ipam": {"type": "host-local", "subnet": "10.84.0.0/24", "dataDir": state.join("ipam")}}]});
        std::fs::write(state.join("net.conflist"), list.to_string()).unwrap();
        // A cached result naming another address: trusted, DEL would release that one.
        let victim =
            Victim::new(r#"{"kind":"cniCacheV1","result":{"cniVersion":"1.0.0","ips":[{"address":"10.84.0.99/24"}]}}"#);
        let entry = state.join("cache/results/hfc-hfcid-eth0");
        let net = |verb: &str| {
            let o = std::process::Command::new(tool("timeout"))
                .args(["20", "nsenter", &format!("--net={}", node.path_str()), "--"])
                .arg(ours_bin())
                .args(["net", verb, "hfc", pod.path_str()])
                .args(["--conf", state.join("net.conflist").to_str().unwrap()])
                .args(["--cache-dir", state.join("cache").to_str().unwrap()])
                .args(["--path", plugins.as_str(), "--container-id", "hfcid"])
                .env_clear()
                .env("PATH", PLUGIN_PATH)
                .output()
                .unwrap();
            assert_ne!(o.status.code(), Some(124), "{what}: net {verb} blocked");
            o
        };
        plant(&entry, kind, &victim);
        let d = net("del");
        assert!(
            d.status.success(),
            "{what}: DEL: {}",
            String::from_utf8_lossy(&d.stderr)
        );
        let a = net("add");
        if kind == Kind::Dir {
            assert!(!a.status.success(), "{what}: ADD cannot cache over a directory");
            let err = String::from_utf8_lossy(&a.stderr);
            assert!(err.contains("cache"), "{what}: the error names the cache: {err}");
        } else {
            assert!(
                a.status.success(),
                "{what}: ADD: {}",
                String::from_utf8_lossy(&a.stderr)
            );
            assert!(
                std::fs::symlink_metadata(&entry).unwrap().is_file(),
                "{what}: cached as a file"
            );
        }
        let d = net("del");
        assert!(
            d.status.success(),
            "{what}: DEL: {}",
            String::from_utf8_lossy(&d.stderr)
        );
        let left: Vec<_> = std::fs::read_dir(state.join("ipam/hfc"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
            .collect();
        assert!(left.is_empty(), "{what}: reservations left {left:?}");
        assert!(victim.content().contains("10.84.0.99"), "{what}: victim changed");
        assert!(
            victim.dir_is_empty_but_file(),
            "{what}: something written into the other dir"
        );
        assert_eq!(passwd_digest(), passwd, "{what}: /etc/passwd changed");
    }
}

// ---- names that become paths or interface names ----------------------------------------------

/// Container IDs, ifnames and network names with `..`, `/`, NUL, unicode or too many bytes are
/// refused before any plugin acts (code 4 for the env, 7 for the config), by every plugin that
/// makes files or links from them; a 300-byte container ID that passes the rules but cannot
/// be a file name fails with a CNI error and leaves nothing.
#[test]
fn names_that_become_paths_are_validated() {
    if !require_root("names_that_become_paths_are_validated") {
        return;
    }
    let plugins = [
        "bridge",
        "ptp",
        "host-local",
        "tuning",
        "portmap",
        "firewall",
        "bandwidth",
        "flannel",
    ];
    let bad_ids = ["..", "../../etc", "a/b", "é", "-x", ".hidden", "a b"];
    let bad_ifnames = ["..", ".", "a/b", "eth0:1", "eth 0", "abcdefghijklmnop", "ééééééééé"];
    let bad_names = ["..", "../x", "a/b", "é", "a\u{0}b", "-x", ""];
    let mut checked = 0;
    for plugin in plugins {
        let node = TestNs::new_node("hf-names-node");
        let pod = TestNs::new("hf-names-pod");
        let data = TempDir::new("hf-names");
        let conf = |name: &str| {
            json!({"cniVersion": "1.0.0", "name": name, "type": plugin, "dataDir": data.as_str(),
                   "subnetFile": data.join("subnet.env"), "bridge": "cmnm0",
                   "ipam": {"type": "host-local", "subnet": "10.86.0.0/24", "dataDir": data.as_str()},
                   "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.86.0.5/24"}]}})
        };
        let run = |cid: &str, ifname: &str, name: &str| {
            Invocation::new(plugin, "ADD")
                .pod(&pod)
                .in_node(&node)
                .container_id(cid)
                .ifname(ifname)
                .config(&conf(name))
                .timeout(HANG)
                .run_ours()
        };
        for id in bad_ids {
            run(id, "eth0", "ok").expect_err(4);
            checked += 1;
        }
        for ifname in bad_ifnames {
            run("cid", ifname, "ok").expect_err(4);
            checked += 1;
        }
        for name in bad_names {
            run("cid", "eth0", name).expect_err(7);
            checked += 1;
        }
        let links: Vec<String> = node
            .ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .filter(|n| n != "lo")
            .collect();
        assert!(links.is_empty(), "{plugin}: links made {links:?}");
        assert_eq!(
            std::fs::read_dir(data.path()).unwrap().count(),
            0,
            "{plugin}: files made"
        );
    }
    // Valid characters, but longer than a file name may be: an error, nothing left.
    let long = "a".repeat(300);
    let pod = tuning_pod();
    let data = TempDir::new("hf-long");
    let o = Invocation::new("tuning", "ADD")
        .pod(&pod)
        .container_id(&long)
        .config(&tuning_conf(&pod, &data))
        .run_ours();
    assert!(!o.success() && o.code().is_some(), "{o}");
    assert_eq!(
        pod.link("eth0").unwrap()["mtu"],
        1500,
        "tuning: failed ADD left the MTU"
    );
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0, "tuning: files left");
    eprintln!("names: {checked} bad names refused across {} plugins", plugins.len());
}
