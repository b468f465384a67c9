//! The opt-in invocation log (CNI_MULTI_LOG): one JSON line per plugin invocation, including
//! the IPAM a plugin runs in-process, with the right fields; a broken log never breaks a plugin.

use crate::common::rig::{self, Invocation, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn every_invocation_appends_one_line_with_its_attachment_and_outcome() {
    if !rig::require_root("invocation_log") {
        return;
    }
    let dir = PluginDir::new();
    let data = TempDir::new("log-data");
    let logs = TempDir::new("log-file");
    let log = logs.join("cni.log");
    let node = TestNs::new_node("log-node");
    let pod = TestNs::new("log-pod");
    let conf = json!({
        "cniVersion": "1.0.0", "name": "lognet", "type": "bridge", "bridge": "cnilog0",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.77.0.0/24"}]]}
    });
    let run = |cmd: &str, conf: &Value| {
        Invocation::new("bridge", cmd)
            .container_id("ctr-log-1")
            .pod(&pod)
            .ifname("eth0")
            .config(conf)
            .in_node(&node)
            .env("PATH", "")
            .env("CNI_MULTI_LOG", log.to_str().unwrap())
            .run_ours_in(&dir)
    };
    run("ADD", &conf).expect_ok();
    let mut bad = conf.clone();
    bad["mtu"] = json!(-1);
    run("ADD", &bad).expect_err(7);
    run("DEL", &conf).expect_ok();

    let got = lines(&log);
    let summary: Vec<(String, String, bool)> = got
        .iter()
        .map(|l| {
            (
                l["plugin"].as_str().unwrap().to_string(),
                l["verb"].as_str().unwrap().to_string(),
                l["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    let want = [
        ("host-local", "ADD", true),
        ("bridge", "ADD", true),
        ("bridge", "ADD", false),
        ("host-local", "DEL", true),
        ("bridge", "DEL", true),
    ];
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(p, v, ok)| (p.to_string(), v.to_string(), *ok))
        .collect();
    assert_eq!(summary, want, "{got:#?}");
    for l in &got {
        assert_eq!(l["containerID"], "ctr-log-1");
        assert_eq!(l["netns"], pod.path_str());
        assert_eq!(l["ifname"], "eth0");
        assert_eq!(l["network"], "lognet");
        assert!(l["ms"].as_f64().unwrap() >= 0.0, "{l}");
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
    }
    assert_eq!(got[0]["ips"], json!(["10.77.0.2/24"]), "{:#}", got[0]);
    assert_eq!(got[1]["ips"], json!(["10.77.0.2/24"]), "{:#}", got[1]);
    let host = got[1]["hostInterfaces"].as_array().unwrap();
    assert_eq!(host[0], "cnilog0", "{:#}", got[1]);
    assert!(host[1].as_str().unwrap().starts_with("veth"), "{:#}", got[1]);
    assert_eq!(got[2]["code"], 7);
    assert!(got[2]["msg"].as_str().unwrap().contains("MTU"), "{:#}", got[2]);
}

#[test]
fn a_log_that_cannot_be_written_changes_nothing_for_the_plugin() {
    if !rig::require_root("invocation_log") {
        return;
    }
    let dir = PluginDir::new();
    let logs = TempDir::new("log-bad");
    let fifo = logs.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let node = TestNs::new_node("log-bad");
    let pod = TestNs::new("log-badp");
    for path in [
        fifo.to_str().unwrap().to_string(),
        logs.path().to_str().unwrap().to_string(),
        "/proc/no/such/dir/log".to_string(),
    ] {
        let out = Invocation::new("loopback", "ADD")
            .container_id("c")
            .pod(&pod)
            .ifname("lo")
            .config(&json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}))
            .in_node(&node)
            .env("PATH", "")
            .env("CNI_MULTI_LOG", &path)
            .run_ours_in(&dir);
        out.expect_ok();
        assert!(out.stderr.is_empty(), "{path}: {}", out.stderr);
    }
}
