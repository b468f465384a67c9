//! `cni-multi net` as the runtime side (libcni): the environment plugins get, the invocation
//! log under it, and where a network's plugin configurations come from.

mod common;

use common::rig::{self, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

/// A fake third-party plugin: a shell script in a plugin dir.
fn script(dir: &TempDir, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A chained plugin that records its environment (`env.<verb>`) and prints a minimal result.
fn recorder(dir: &TempDir, out: &TempDir) {
    script(
        dir,
        "recorder",
        &format!(
            r#"env > {}/env.$CNI_COMMAND
cat >/dev/null
[ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"1.0.0"}}'
exit 0"#,
            out.as_str()
        ),
    );
}

fn env_of(out: &TempDir, verb: &str) -> Vec<String> {
    std::fs::read_to_string(out.join(format!("env.{verb}")))
        .unwrap_or_else(|e| panic!("the recorder did not run for {verb}: {e}"))
        .lines()
        .map(String::from)
        .collect()
}

fn net(node: &TestNs, args: &[&str]) -> Invocation {
    Invocation::cli(&[&["net"], args].concat()).in_node(node)
}

#[test]
fn net_gives_plugins_the_callers_environment_with_cni_variables_overriding() {
    if !rig::require_root("net_gives_plugins_the_callers_environment") {
        return;
    }
    let node = TestNs::new_node("nenv-node");
    let pod = TestNs::new("nenv-pod");
    let ours = PluginDir::new();
    let third = TempDir::new("nenv-bin");
    let out = TempDir::new("nenv-out");
    let conf = TempDir::new("nenv-conf");
    let cache = TempDir::new("nenv-cache");
    recorder(&third, &out);
    let list = json!({"cniVersion": "1.0.0", "name": "envnet",
        "plugins": [{"type": "loopback"}, {"type": "recorder"}]});
    std::fs::write(conf.join("10-envnet.conflist"), list.to_string()).unwrap();
    let path = format!("{}:{}", ours.as_str(), third.as_str());
    let run = |verb: &str| -> Outcome {
        net(
            &node,
            &[
                verb,
                "envnet",
                pod.path_str(),
                "--conf-dir",
                conf.as_str(),
                "--cache-dir",
                cache.as_str(),
            ],
        )
        .env("CNI_PATH", &path)
        .env("CM_TEST_ARBITRARY", "a value with spaces=and;signs")
        .env("HTTPS_PROXY", "http://proxy.invalid:3128")
        // The caller's own CNI_* are what the runtime sets for the run, not what it had.
        .env("CNI_COMMAND", "VERSION")
        .env("CNI_CONTAINERID", "caller-id")
        .run_cli()
    };
    let o = run("add");
    assert!(o.success(), "{o}");
    assert!(run("del").success());
    for verb in ["ADD", "DEL"] {
        let env = env_of(&out, verb);
        for want in [
            "CM_TEST_ARBITRARY=a value with spaces=and;signs".to_string(),
            "HTTPS_PROXY=http://proxy.invalid:3128".to_string(),
            format!("CNI_COMMAND={verb}"),
            "CNI_IFNAME=eth0".to_string(),
            format!("CNI_NETNS={}", pod.path_str()),
            format!("CNI_PATH={path}"),
            format!("PATH={}", rig::PLUGIN_PATH),
        ] {
            assert!(env.contains(&want), "{verb}: {want:?} missing from {env:#?}");
        }
        assert_eq!(env.iter().filter(|l| l.starts_with("CNI_COMMAND=")).count(), 1);
        let cid = env.iter().find_map(|l| l.strip_prefix("CNI_CONTAINERID=")).unwrap();
        assert!(
            cid.starts_with("cni-multi-"),
            "{verb}: the runtime's container ID, got {cid}"
        );
    }
}

#[test]
fn net_add_logs_one_line_per_plugin_run_in_process_or_executed() {
    if !rig::require_root("net_add_logs_one_line_per_plugin_run") {
        return;
    }
    let node = TestNs::new_node("nlog-node");
    let pod = TestNs::new("nlog-pod");
    let ours = PluginDir::new();
    // tuning reached through a wrapper script: not this executable, so it is executed (and
    // logs its own line as a plugin run by a runtime does).
    let wrapped = TempDir::new("nlog-bin");
    script(
        &wrapped,
        "tuning",
        &format!("exec {} \"$@\"", ours.plugin("tuning").display()),
    );
    let conf = TempDir::new("nlog-conf");
    let cache = TempDir::new("nlog-cache");
    let data = TempDir::new("nlog-data");
    let logs = TempDir::new("nlog-log");
    let log = logs.join("cni.log");
    let list = json!({"cniVersion": "1.0.0", "name": "lognet", "plugins": [
        {"type": "bridge", "bridge": "cninlog0",
         "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.78.0.0/24"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "tuning"}]});
    std::fs::write(conf.join("10-lognet.conflist"), list.to_string()).unwrap();
    let run = |verb: &str| {
        let o = net(
            &node,
            &[
                verb,
                "lognet",
                pod.path_str(),
                "--conf-dir",
                conf.as_str(),
                "--cache-dir",
                cache.as_str(),
            ],
        )
        .env("CNI_PATH", &format!("{}:{}", wrapped.as_str(), ours.as_str()))
        .env("CNI_MULTI_LOG", log.to_str().unwrap())
        .argv(&["--container-id", "ctr-nlog"])
        .run_cli();
        assert!(o.success(), "{verb}: {o}");
    };
    run("add");
    run("del");
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["plugin"].as_str().unwrap(), l["verb"].as_str().unwrap()))
        .collect();
    // host-local finishes (and is written) before the bridge that called it.
    let want = [
        ("host-local", "ADD"),
        ("bridge", "ADD"),
        ("portmap", "ADD"),
        ("tuning", "ADD"),
        ("tuning", "DEL"),
        ("portmap", "DEL"),
        ("host-local", "DEL"),
        ("bridge", "DEL"),
    ];
    assert_eq!(got, want, "{lines:#?}");
    for l in &lines {
        assert_eq!(l["ok"], true, "{l}");
        assert_eq!(l["containerID"], "ctr-nlog", "{l}");
        assert_eq!(l["network"], "lognet", "{l}");
        assert_eq!(l["netns"], pod.path_str(), "{l}");
    }
}

#[test]
fn a_plugin_run_by_hand_logs_its_line_and_its_delegates() {
    if !rig::require_root("a_plugin_run_by_hand_logs_its_line") {
        return;
    }
    let node = TestNs::new_node("hlog-node");
    let pod = TestNs::new("hlog-pod");
    let ours = PluginDir::new();
    let data = TempDir::new("hlog-data");
    let logs = TempDir::new("hlog-log");
    let log = logs.join("cni.log");
    let conf = json!({"cniVersion": "1.0.0", "name": "handnet", "type": "bridge", "bridge": "cnihlog0",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{"subnet": "10.79.0.0/24"}]]}});
    for verb in ["ADD", "DEL"] {
        let o = Invocation::cli(&["bridge", verb, "--netns", pod.path_str(), "--container-id", "ctr-hlog"])
            .in_node(&node)
            .env("CNI_PATH", ours.as_str())
            .env("CNI_MULTI_LOG", log.to_str().unwrap())
            .config(&conf)
            .run_cli();
        assert!(o.success(), "{verb}: {o}");
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let got: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|l| (l["plugin"].as_str().unwrap().into(), l["verb"].as_str().unwrap().into()))
        .collect();
    let want: Vec<(String, String)> = [
        ("host-local", "ADD"),
        ("bridge", "ADD"),
        ("host-local", "DEL"),
        ("bridge", "DEL"),
    ]
    .iter()
    .map(|(p, v)| (p.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want, "{text}");
}
