//! `cni-multi net` as the runtime side (libcni): the environment plugins get, the invocation
//! log under it, and where a network's plugin configurations come from.

use crate::common::rig::{self, Invocation, Outcome, PluginDir, TempDir, TestNs};
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

/// The spec's example network `dbnet` (SPEC.md 1.1.0, "Example configuration": bridge, tuning
/// and portmap), with tuning and portmap moved out of the list into `<conf-dir>/dbnet/*.conf`
/// as libcni v1.3 loads them; the runtime's arguments of the spec's appendix (mac and
/// portMappings capability args, `argA=foo`, with `IgnoreUnknown` as a real runtime must).
struct DbNet {
    node: TestNs,
    pod: TestNs,
    ours: PluginDir,
    conf: TempDir,
    cache: TempDir,
    data: TempDir,
    log: TempDir,
}

impl DbNet {
    fn new(tag: &str) -> DbNet {
        DbNet {
            node: TestNs::new_node(&format!("{tag}n")),
            pod: TestNs::new(&format!("{tag}p")),
            ours: PluginDir::new(),
            conf: TempDir::new(&format!("{tag}-conf")),
            cache: TempDir::new(&format!("{tag}-cache")),
            data: TempDir::new(&format!("{tag}-data")),
            log: TempDir::new(&format!("{tag}-log")),
        }
    }

    /// The spec's list, keeping only the plugins `inline` names (and `extra` keys).
    fn write_list(&self, inline: &[&str], extra: Value) {
        let bridge = json!({
            "type": "bridge", "bridge": "cni0", "keyA": ["some more", "plugin specific", "configuration"],
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1",
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.data.path()},
            "dns": {"nameservers": ["10.1.0.1"]}
        });
        let all = [
            ("bridge", bridge),
            ("tuning", Self::tuning()),
            ("portmap", Self::portmap()),
        ];
        let plugins: Vec<Value> = all
            .into_iter()
            .filter(|(n, _)| inline.contains(n))
            .map(|(_, v)| v)
            .collect();
        let mut list = json!({"cniVersion": "1.1.0", "cniVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
            "name": "dbnet", "plugins": plugins});
        for (k, v) in extra.as_object().unwrap() {
            list[k] = v.clone();
        }
        std::fs::write(self.conf.join("10-dbnet.conflist"), list.to_string()).unwrap();
    }

    fn tuning() -> Value {
        json!({"type": "tuning", "capabilities": {"mac": true}, "sysctl": {"net.core.somaxconn": "500"}})
    }

    fn portmap() -> Value {
        json!({"type": "portmap", "capabilities": {"portMappings": true}})
    }

    /// `dbnet/10-tuning.conf`, `dbnet/20-portmap.conf`, and what must be ignored there: a
    /// `.json` file and a directory named like a `.conf`.
    fn write_dir(&self) {
        let dir = self.conf.join("dbnet");
        std::fs::create_dir_all(dir.join("30-not-a-file.conf")).unwrap();
        std::fs::write(dir.join("10-tuning.conf"), Self::tuning().to_string()).unwrap();
        std::fs::write(dir.join("20-portmap.conf"), Self::portmap().to_string()).unwrap();
        std::fs::write(dir.join("05-ignored.json"), json!({"type": "cm-not-run"}).to_string()).unwrap();
    }

    fn net(&self, verb: &str) -> Outcome {
        let caps = json!({"mac": "c2:11:22:33:44:55",
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
        net(
            &self.node,
            &[
                verb,
                "dbnet",
                self.pod.path_str(),
                "--conf-dir",
                self.conf.as_str(),
                "--cache-dir",
                self.cache.as_str(),
            ],
        )
        .argv(&[
            "--container-id",
            "ctr-dbnet",
            "--args",
            "IgnoreUnknown=1;argA=foo",
            "--cap-args",
            &caps.to_string(),
        ])
        .env("CNI_PATH", self.ours.as_str())
        .env("CNI_MULTI_LOG", self.log.join("log").to_str().unwrap())
        .path_env("")
        .run_cli()
    }

    /// (plugin, verb) of each plugin run logged so far, and the log is emptied.
    fn runs(&self) -> Vec<(String, String)> {
        let path = self.log.join("log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|l| (l["plugin"].as_str().unwrap().into(), l["verb"].as_str().unwrap().into()))
            .collect()
    }
}

fn runs(want: &[(&str, &str)]) -> Vec<(String, String)> {
    want.iter().map(|(p, v)| (p.to_string(), v.to_string())).collect()
}

#[test]
fn net_loads_plugins_from_the_network_directory_after_the_inlined_ones() {
    if !rig::require_root("net_loads_plugins_from_the_network_directory") {
        return;
    }
    let n = DbNet::new("ndir");
    n.write_list(&["bridge"], json!({}));
    n.write_dir();
    let o = n.net("add");
    assert!(o.success(), "{o}");
    // The chain is the list's bridge, then the directory's plugins in file-name order.
    assert_eq!(
        n.runs(),
        runs(&[
            ("host-local", "ADD"),
            ("bridge", "ADD"),
            ("tuning", "ADD"),
            ("portmap", "ADD")
        ])
    );
    let r = o.json.clone().unwrap();
    assert_eq!(r["cniVersion"], "1.1.0", "cniVersions: the highest supported");
    assert_eq!(r["ips"][0]["address"], "10.1.0.2/16");
    // tuning's sysctl and the mac capability; portmap's mapping.
    assert_eq!(n.pod.exec_ok(&["cat", "/proc/sys/net/core/somaxconn"]).trim(), "500");
    assert!(n.pod.ip(&["link", "show", "eth0"]).contains("c2:11:22:33:44:55"));
    assert!(n.node.exec_ok(&["nft", "list", "ruleset"]).contains("8080"));
    assert!(n.net("check").success());
    assert_eq!(
        n.runs(),
        runs(&[
            ("host-local", "CHECK"),
            ("bridge", "CHECK"),
            ("tuning", "CHECK"),
            ("portmap", "CHECK")
        ])
    );
    let o = n.net("del");
    assert!(o.success(), "{o}");
    assert_eq!(
        n.runs(),
        runs(&[
            ("portmap", "DEL"),
            ("tuning", "DEL"),
            ("host-local", "DEL"),
            ("bridge", "DEL")
        ])
    );
    assert!(!n.node.exec_ok(&["nft", "list", "ruleset"]).contains("8080"));
}

#[test]
fn load_only_inlined_plugins_ignores_the_network_directory() {
    if !rig::require_root("load_only_inlined_plugins_ignores_the_network_directory") {
        return;
    }
    let n = DbNet::new("ninl");
    n.write_list(&["bridge"], json!({"loadOnlyInlinedPlugins": true}));
    n.write_dir();
    let o = n.net("add");
    assert!(o.success(), "{o}");
    assert_eq!(n.runs(), runs(&[("host-local", "ADD"), ("bridge", "ADD")]));
    assert!(n.net("del").success());
    assert_eq!(n.runs(), runs(&[("host-local", "DEL"), ("bridge", "DEL")]));
    // The string spelling libcni accepts, and the whole spec list inline: the same three.
    n.write_list(
        &["bridge", "tuning", "portmap"],
        json!({"loadOnlyInlinedPlugins": "TRUE"}),
    );
    assert!(n.net("add").success());
    assert_eq!(
        n.runs(),
        runs(&[
            ("host-local", "ADD"),
            ("bridge", "ADD"),
            ("tuning", "ADD"),
            ("portmap", "ADD")
        ])
    );
    assert!(n.net("del").success());
}

/// What libcni refuses, refused before any plugin runs, each message naming the file.
#[test]
fn conf_dir_errors_name_the_file_and_run_nothing() {
    if !rig::require_root("conf_dir_errors_name_the_file_and_run_nothing") {
        return;
    }
    let n = DbNet::new("nerr");
    let dir = n.conf.join("dbnet");
    let list = n.conf.join("10-dbnet.conflist");
    let fails = |what: &str, file: &std::path::Path, msg: &str| {
        let o = n.net("add");
        assert_eq!(o.status, 1, "{what}: {o}");
        let want = format!("{}: {msg}", file.display());
        assert!(o.stderr.contains(&want), "{what}: want {want:?} in {o}");
        assert!(n.runs().is_empty(), "{what}: a plugin ran");
        assert_eq!(n.node.link_names(), ["lo"], "{what}: something was made");
    };
    // A plugin file that is not JSON.
    n.write_list(&["bridge"], json!({}));
    n.write_dir();
    std::fs::write(dir.join("20-portmap.conf"), "{").unwrap();
    fails(
        "malformed",
        &dir.join("20-portmap.conf"),
        "error parsing configuration: EOF",
    );
    // A plugin file without a type.
    std::fs::write(dir.join("20-portmap.conf"), r#"{"capabilities":{"portMappings":true}}"#).unwrap();
    fails(
        "no type",
        &dir.join("20-portmap.conf"),
        "error parsing configuration: missing 'type'",
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // No `plugins` and no directory: no plugin at all.
    n.write_list(&[], json!({}));
    let text = std::fs::read_to_string(&list).unwrap().replace(r#","plugins":[]"#, "");
    std::fs::write(&list, &text).unwrap();
    fails("no plugins", &list, "no plugin configs found");
    // `loadOnlyInlinedPlugins` needs `plugins`.
    let only = text.replace(r#""name":"dbnet""#, r#""name":"dbnet","loadOnlyInlinedPlugins":true"#);
    std::fs::write(&list, only).unwrap();
    fails(
        "inlined only, none inlined",
        &list,
        "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key",
    );
    // A malformed list earlier in the directory stops the search, as in libcni.
    n.write_list(&["bridge"], json!({}));
    let bad = n.conf.join("00-bad.conflist");
    std::fs::write(&bad, "{").unwrap();
    fails("another list malformed", &bad, "error parsing configuration list: EOF");
}
