//! flannel: the saved delegate config byte for byte as the reference writes it (its
//! flannel_linux_test.go cases: v4, v6, dual stack, two networks, IPAM merge), DEL from the
//! saved file, the subnet.env errors, STATUS and GC; then a real ADD/CHECK/DEL through
//! bridge + host-local in throw-away namespaces.

use crate::common::rig::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;

const V4: &str = "\nFLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
const V6: &str =
    "\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
const DUAL: &str = "\nFLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";
const MULTI: &str =
    "\nFLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";

/// A CNI_PATH with a fake delegate named `bridge` that logs every call (verb, container,
/// stdin) and answers ADD with a fixed result: the saved config is then checkable without
/// touching the kernel.
struct Recorder {
    dir: PluginDir,
    log: std::path::PathBuf,
    _tmp: TempDir,
}

impl Recorder {
    fn new() -> Recorder {
        let tmp = TempDir::new("fl-rec");
        let log = tmp.join("calls");
        let dir = PluginDir::new();
        let script = dir.plugin("bridge");
        std::fs::remove_file(&script).unwrap();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{{ echo \"== $CNI_COMMAND $CNI_CONTAINERID\"; cat; echo; }} >> {}\n\
                 [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.1.17.2/24\",\"gateway\":\"10.1.17.1\"}}],\"dns\":{{}}}}'\n\
                 exit 0\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Recorder { dir, log, _tmp: tmp }
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

struct Setup {
    state: TempDir,
    node: TestNs,
}

impl Setup {
    fn new(env: &str) -> Setup {
        let state = TempDir::new("fl-state");
        std::fs::write(state.join("subnet.env"), env).unwrap();
        Setup {
            state,
            node: TestNs::new_node("fl-node"),
        }
    }

    fn data_dir(&self) -> std::path::PathBuf {
        self.state.join("data")
    }

    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "cni-flannel",
            "type": "flannel",
            "subnetFile": self.state.join("subnet.env"),
            "dataDir": self.data_dir(),
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn run(&self, rec: &Recorder, cmd: &str, cid: &str, conf: &Value) -> Outcome {
        Invocation::new("flannel", cmd)
            .in_node(&self.node)
            .netns("/run/netns/cm-flannel-test-unused")
            .container_id(cid)
            .config(conf)
            .run_ours_in(&rec.dir)
    }

    fn saved(&self, cid: &str) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join(cid)).ok()
    }
}

/// ADD, check the saved bytes and what the delegate got, DEL, check the file is gone, DEL again.
fn golden(env: &str, extra: Value, expected: &str) {
    let (s, rec) = (Setup::new(env), Recorder::new());
    let conf = s.conf(extra);
    let add = s.run(&rec, "ADD", "cid-golden", &conf);
    add.expect_ok();
    assert_eq!(
        add.result()["ips"][0]["address"],
        "10.1.17.2/24",
        "the delegate's result is printed"
    );
    let saved = s.saved("cid-golden").expect("saved delegate config");
    assert_eq!(saved, expected, "saved delegate config");
    assert_eq!(
        rec.calls(),
        format!("== ADD cid-golden\n{expected}\n"),
        "delegate got the same bytes"
    );
    let meta = std::fs::metadata(s.data_dir().join("cid-golden")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(s.data_dir()).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // DEL replays the saved config (not this DEL's), then forgets it; a second DEL is a no-op.
    let mut del_conf = conf.clone();
    del_conf["runtimeConfig"] = json!({"ignored": true});
    s.run(&rec, "DEL", "cid-golden", &del_conf).expect_ok();
    assert_eq!(
        rec.calls(),
        format!("== ADD cid-golden\n{expected}\n== DEL cid-golden\n{expected}\n")
    );
    assert_eq!(s.saved("cid-golden"), None);
    s.run(&rec, "DEL", "cid-golden", &conf).expect_ok();
    assert_eq!(
        rec.calls().matches("== DEL").count(),
        1,
        "nothing to replay the second time"
    );
}

#[test]
fn saved_config_v4() {
    if !require_root("saved_config_v4") {
        return;
    }
    golden(
        V4,
        json!({}),
        r#"{"cniVersion":"1.0.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}"#,
    );
}

#[test]
fn saved_config_v6() {
    if !require_root("saved_config_v6") {
        return;
    }
    golden(
        V6,
        json!({}),
        r#"{"cniVersion":"1.0.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"fc00::/64"}]],"routes":[{"dst":"fc00::/48"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}"#,
    );
}

#[test]
fn saved_config_dual_stack() {
    if !require_root("saved_config_dual_stack") {
        return;
    }
    golden(
        DUAL,
        json!({}),
        r#"{"cniVersion":"1.0.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"fc00::/64"}]],"routes":[{"dst":"10.1.0.0/16"},{"dst":"fc00::/48"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}"#,
    );
}

#[test]
fn saved_config_two_networks() {
    if !require_root("saved_config_two_networks") {
        return;
    }
    golden(
        MULTI,
        json!({}),
        r#"{"cniVersion":"1.0.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"},{"dst":"192.168.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}"#,
    );
}

#[test]
fn saved_config_ipam_merge_and_delegate_keys() {
    if !require_root("saved_config_ipam_merge_and_delegate_keys") {
        return;
    }
    // The reference test's input IPAM (type, unknown key, routes) with the dual-stack file,
    // plus delegate keys, runtimeConfig and FLANNEL_IPMASQ=false.
    golden(
        &DUAL.replace("FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false"),
        json!({
            "ipam": {"type": "my-ipam", "unknown-param": "unknown-value",
                     "routes": [{"dst": "10.96.0.0/12"}, {"dst": "192.168.244.0/24", "gw": "10.1.17.20"}]},
            "delegate": {"hairpinMode": true, "bridge": "cni1", "mtu": 1400},
            "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
        }),
        concat!(
            r#"{"bridge":"cni1","cniVersion":"1.0.0","hairpinMode":true,"ipMasq":true,"#,
            r#""ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}],[{"subnet":"fc00::/64"}]],"#,
            r#""routes":[{"dst":"10.96.0.0/12"},{"dst":"192.168.244.0/24","gw":"10.1.17.20"},{"dst":"10.1.0.0/16"},{"dst":"fc00::/48"}],"#,
            r#""type":"my-ipam","unknown-param":"unknown-value"},"isGateway":true,"mtu":1400,"name":"cni-flannel","#,
            r#""runtimeConfig":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]},"type":"bridge"}"#
        ),
    );
}

#[test]
fn subnet_env_errors() {
    if !require_root("subnet_env_errors") {
        return;
    }
    let (s, rec) = (Setup::new("foo=bar\n"), Recorder::new());
    let file = s.state.join("subnet.env");
    let o = s.run(&rec, "ADD", "c1", &s.conf(json!({})));
    o.expect_err(999);
    assert_eq!(
        o.msg().unwrap(),
        format!(
            "loadFlannelSubnetEnv failed: {} is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ",
            file.display()
        )
    );
    std::fs::remove_file(&file).unwrap();
    let o = s.run(&rec, "ADD", "c1", &s.conf(json!({})));
    o.expect_err(999);
    assert_eq!(
        o.msg().unwrap(),
        format!(
            "loadFlannelSubnetEnv failed: open {}: no such file or directory",
            file.display()
        )
    );
    assert!(
        o.json.as_ref().unwrap()["details"]
            .as_str()
            .unwrap()
            .contains("flanneld"),
        "{o}"
    );
    assert_eq!(rec.calls(), "", "no delegate call");
    assert_eq!(s.saved("c1"), None);
}

#[test]
fn delegate_name_and_ipam_rejected() {
    if !require_root("delegate_name_and_ipam_rejected") {
        return;
    }
    let (s, rec) = (Setup::new(V4), Recorder::new());
    for (d, msg) in [
        (
            json!({"name": "x"}),
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
        ),
        (
            json!({"ipam": {}}),
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
        ),
        (
            json!({"type": 1}),
            "'delegate' dictionary, if present, must have (string) 'type' field",
        ),
    ] {
        let o = s.run(&rec, "ADD", "c1", &s.conf(json!({ "delegate": d })));
        // The reference's words; code 7 (a config of the wrong shape), not its 999.
        o.expect_err(7);
        assert_eq!(o.msg(), Some(msg));
    }
    assert_eq!(rec.calls(), "");
}

/// A delegate's error keeps the delegate's code, its message prefixed as the reference's
/// (which reports 999 for any delegate error: doc/differences.md).
#[test]
fn a_delegate_error_keeps_its_code() {
    if !require_root("a_delegate_error_keeps_its_code") {
        return;
    }
    let (s, rec) = (Setup::new(V4), Recorder::new());
    let script = rec.dir.plugin("bridge");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"try again later\"}'\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = s.run(&rec, "ADD", "c1", &s.conf(json!({})));
    o.expect_err(11);
    assert_eq!(o.msg(), Some("failed to delegate add: try again later"));
}

#[test]
fn status_reports_missing_subnet_file() {
    if !require_root("status_reports_missing_subnet_file") {
        return;
    }
    let (s, rec) = (Setup::new(V4), Recorder::new());
    let conf = s.conf(json!({"cniVersion": "1.1.0"}));
    s.run(&rec, "STATUS", "", &conf).expect_ok();
    std::fs::write(s.state.join("subnet.env"), "FLANNEL_NETWORK=10.1.0.0/16\n").unwrap();
    let o = s.run(&rec, "STATUS", "", &conf);
    o.expect_err(50);
    assert!(o
        .msg()
        .unwrap()
        .contains("is missing FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"));
    std::fs::remove_file(s.state.join("subnet.env")).unwrap();
    let o = s.run(&rec, "STATUS", "", &conf);
    o.expect_err(50);
    assert!(
        o.msg()
            .unwrap()
            .contains(&s.state.join("subnet.env").display().to_string()),
        "{o}"
    );
}

#[test]
fn gc_forwards_and_forgets_stale_attachments() {
    if !require_root("gc_forwards_and_forgets_stale_attachments") {
        return;
    }
    let (s, rec) = (Setup::new(V4), Recorder::new());
    let conf = s.conf(json!({"cniVersion": "1.1.0"}));
    for cid in ["live", "dead"] {
        s.run(&rec, "ADD", cid, &conf).expect_ok();
    }
    // Without the valid-attachments key GC keeps everything and calls no delegate.
    let before = rec.calls();
    s.run(&rec, "GC", "", &conf).expect_ok();
    assert!(
        s.saved("live").is_some() && s.saved("dead").is_some(),
        "GC without the key removed saved configs"
    );
    assert_eq!(rec.calls(), before, "GC without the key reached the delegate");
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "live", "ifname": "eth0"}]);
    s.run(&rec, "GC", "", &gc).expect_ok();
    assert!(s.saved("live").is_some());
    assert_eq!(s.saved("dead"), None, "stale saved config removed");
    let calls = rec.calls();
    let gc_calls: Vec<&str> = calls.split("== ").filter(|c| c.starts_with("GC")).collect();
    assert_eq!(gc_calls.len(), 1, "one GC per distinct saved config: {calls}");
    let sent: Value = serde_json::from_str(gc_calls[0].trim_start_matches("GC ").trim()).unwrap();
    assert_eq!(sent["cni.dev/valid-attachments"], gc["cni.dev/valid-attachments"]);
    assert_eq!(sent["ipam"]["ranges"], json!([[{"subnet": "10.1.17.0/24"}]]));
}

#[test]
fn del_keeps_unparseable_saved_config() {
    if !require_root("del_keeps_unparseable_saved_config") {
        return;
    }
    let (s, rec) = (Setup::new(V4), Recorder::new());
    std::fs::create_dir_all(s.data_dir()).unwrap();
    std::fs::write(s.data_dir().join("c1"), "not json").unwrap();
    s.run(&rec, "DEL", "c1", &s.conf(json!({}))).expect_ok();
    assert_eq!(s.saved("c1").as_deref(), Some("not json"));
    assert_eq!(rec.calls(), "");
}

/// The real thing: flannel -> bridge -> host-local in a node netns, a pod gets an address of
/// the node's subnet, CHECK passes, DEL leaves no link, reservation or saved config.
#[test]
fn add_check_del_with_bridge_and_host_local() {
    if !require_root("add_check_del_with_bridge_and_host_local") {
        return;
    }
    let c = crate::common::cluster::Cluster::new(1, true);
    let node = &c.nodes[0];
    let pod = c.add_pod(node, "p1").unwrap_or_else(|o| panic!("ADD failed:\n{o}"));
    assert!(pod.ip.starts_with("10.244.1."), "{}", pod.result);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(node.flannel_data_dir().join(&pod.container_id)).unwrap())
            .unwrap();
    assert_eq!(saved["ipMasq"], false);
    assert_eq!(saved["mtu"], 1450);
    assert_eq!(pod.ns.link("eth0").unwrap()["mtu"], 1450);
    assert!(node.ns.link("cni0").is_some());
    let reservation = node.ipam_data_dir().join("cbr0").join(&pod.ip);
    assert!(reservation.exists());
    c.check_pod(node, &pod).expect_ok();
    c.del_pod(node, &pod).expect_ok();
    assert!(!reservation.exists());
    assert!(!node.flannel_data_dir().join(&pod.container_id).exists());
    assert_eq!(pod.ns.link("eth0"), None);
    c.del_pod(node, &pod).expect_ok();
}
