//! tuning against the real kernel, side by side with the reference /usr/lib/cni/tuning:
//! the same config on two identical pods must give the same result, the same link state,
//! the same sysctls and the same backup file; DEL must restore both the same way.

use crate::common::rig::*;
use serde_json::{json, Value};

/// The MAC every test pod's eth0 starts with, so backups of both implementations compare.
const ORIG_MAC: &str = "02:00:00:00:00:01";

/// A pod netns with `eth0` (a veth whose peer stays in the pod too), as a main plugin
/// would leave it: up, known MAC, mtu 1500, txqueuelen 1000.
fn pod() -> TestNs {
    let ns = TestNs::new("tun-pod");
    ns.ip(&[
        "link",
        "add",
        "eth0",
        "address",
        ORIG_MAC,
        "txqueuelen",
        "1000",
        "type",
        "veth",
        "peer",
        "name",
        "peer0",
    ]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns
}

fn prev_result(pod: &TestNs) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": ORIG_MAC, "sandbox": pod.path_str()}],
        "ips": [{"address": "10.9.0.2/24", "gateway": "10.9.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    })
}

fn conf(pod: &TestNs, data_dir: &TempDir, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "tnet",
        "type": "tuning",
        "dataDir": data_dir.as_str(),
        "prevResult": prev_result(pod),
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// What tuning may change, as the kernel reports it.
fn link_state(pod: &TestNs) -> Value {
    let l = pod.link("eth0").expect("eth0 exists");
    let flags: Vec<String> = l["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .filter(|f| matches!(f.as_str(), "PROMISC" | "ALLMULTI" | "UP"))
        .collect();
    let sysctl = |k: &str| pod.exec_ok(&["cat", &format!("/proc/sys/{k}")]).trim().to_string();
    json!({
        "mac": l["address"],
        "mtu": l["mtu"],
        "txqlen": l["txqlen"],
        "flags": flags,
        "arp_filter": sysctl("net/ipv4/conf/eth0/arp_filter"),
        "somaxconn": sysctl("net/core/somaxconn"),
    })
}

struct Side {
    pod: TestNs,
    node: TestNs,
    data: TempDir,
}

impl Side {
    fn new() -> Side {
        Side {
            pod: pod(),
            node: TestNs::new_node("tun-node"),
            data: TempDir::new("tun-data"),
        }
    }

    fn run(&self, reference: bool, cmd: &str, extra: &Value, cni_args: Option<&str>) -> Outcome {
        let mut inv = Invocation::new("tuning", cmd)
            .pod(&self.pod)
            .in_node(&self.node)
            .container_id("cid1")
            .config(&conf(&self.pod, &self.data, extra.clone()));
        if let Some(a) = cni_args {
            inv = inv.args(a);
        }
        if reference {
            inv.run_reference()
        } else {
            inv.run_ours()
        }
    }

    fn backup(&self) -> Option<String> {
        std::fs::read_to_string(self.data.join("cid1_eth0.json")).ok()
    }
}

fn normalized(o: &Outcome, pod: &TestNs) -> Value {
    // MACs are what tuning sets, so they stay; only the netns path differs.
    let s = o.stdout.replace(pod.path_str(), "<pod>");
    serde_json::from_str(&s).unwrap_or_else(|_| json!({"raw": s}))
}

/// Run ADD (and then DEL) with the same config through both; compare everything.
fn same_as_reference(test: &str, extra: Value, cni_args: Option<&str>) {
    if !require_reference(test, "tuning") {
        return;
    }
    let (r, o) = (Side::new(), Side::new());
    let before = link_state(&o.pod);
    let ra = r.run(true, "ADD", &extra, cni_args);
    let oa = o.run(false, "ADD", &extra, cni_args);
    assert_eq!(ra.status, oa.status, "{test}: exit\nreference:\n{ra}\nours:\n{oa}");
    if !ra.success() {
        assert_eq!(ra.code(), oa.code(), "{test}: code\nreference:\n{ra}\nours:\n{oa}");
        assert_eq!(ra.msg(), oa.msg(), "{test}: msg\nreference:\n{ra}\nours:\n{oa}");
        return;
    }
    assert_eq!(normalized(&ra, &r.pod), normalized(&oa, &o.pod), "{test}: result");
    assert_eq!(
        ra.stdout.replace(r.pod.path_str(), "P"),
        oa.stdout.replace(o.pod.path_str(), "P"),
        "{test}: bytes"
    );
    assert_eq!(link_state(&r.pod), link_state(&o.pod), "{test}: kernel state after ADD");
    assert_eq!(r.backup(), o.backup(), "{test}: backup file");

    let rc = r.run(true, "CHECK", &extra, cni_args);
    let oc = o.run(false, "CHECK", &extra, cni_args);
    oc.expect_ok();
    // 1.1.1's CHECK forgets the IFNAME substitution and fails on its own ADD; ours does not.
    if !extra.to_string().contains("IFNAME") {
        rc.expect_ok();
    }

    let rd = r.run(true, "DEL", &extra, cni_args);
    let od = o.run(false, "DEL", &extra, cni_args);
    od.expect_ok();
    assert_eq!(
        (rd.status, rd.stdout.as_str()),
        (od.status, od.stdout.as_str()),
        "{test}: DEL"
    );
    assert_eq!(link_state(&r.pod), link_state(&o.pod), "{test}: kernel state after DEL");
    let mut after = link_state(&o.pod);
    let mut expect = before;
    // sysctls are never restored, by design of the reference.
    for k in ["arp_filter", "somaxconn"] {
        after[k] = Value::Null;
        expect[k] = Value::Null;
    }
    assert_eq!(after, expect, "{test}: DEL restores the link");
    assert_eq!(o.backup(), None, "{test}: backup removed");
    assert_eq!(r.backup(), None);
}

#[test]
fn all_attributes_like_reference() {
    same_as_reference(
        "all_attributes_like_reference",
        json!({
            "sysctl": {"net.ipv4.conf.IFNAME.arp_filter": "1", "net.core.somaxconn": "500"},
            "mac": "c2:b0:57:49:47:f1", "mtu": 1454, "promisc": true, "allmulti": true
        }),
        None,
    );
}

#[test]
fn sysctl_only_like_reference() {
    same_as_reference(
        "sysctl_only_like_reference",
        json!({"sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}),
        None,
    );
}

#[test]
fn mac_overrides_like_reference() {
    // CNI_ARGS MAC < runtimeConfig.mac < args.cni.mac; args.cni also overrides mtu and sysctl.
    same_as_reference(
        "mac_overrides_cni_args",
        json!({"mac": "c2:00:00:00:00:01"}),
        Some("IgnoreUnknown=1;MAC=c2:00:00:00:00:02"),
    );
    same_as_reference(
        "mac_overrides_runtime_config",
        json!({"mac": "c2:00:00:00:00:01", "runtimeConfig": {"mac": "c2:00:00:00:00:03"}}),
        Some("MAC=c2:00:00:00:00:02"),
    );
    same_as_reference(
        "mac_overrides_args",
        json!({"mac": "c2:00:00:00:00:01", "runtimeConfig": {"mac": "c2:00:00:00:00:03"},
               "sysctl": {"net.core.somaxconn": "300"},
               "args": {"cni": {"mac": "c2:00:00:00:00:04", "mtu": 1300, "allmulti": false,
                                "sysctl": {"net.core.somaxconn": "400"}}}}),
        Some("MAC=c2:00:00:00:00:02"),
    );
}

#[test]
fn errors_like_reference() {
    same_as_reference("bad_sysctl_key", json!({"sysctl": {"kernel.hostname": "x"}}), None);
    same_as_reference("bad_mac", json!({"mac": "not-a-mac"}), None);
    same_as_reference("unknown_cni_arg", json!({"mtu": 1400}), Some("FOO=bar"));
    same_as_reference(
        "missing_sysctl_file",
        json!({"sysctl": {"net.ipv4.conf.IFNAME.no_such_knob": "1"}}),
        None,
    );
}

#[test]
fn missing_prev_result_like_reference() {
    if !require_reference("missing_prev_result_like_reference", "tuning") {
        return;
    }
    let s = Side::new();
    let mut c = conf(&s.pod, &s.data, json!({"mtu": 1400}));
    c.as_object_mut().unwrap().remove("prevResult");
    let run = |reference: bool| {
        let inv = Invocation::new("tuning", "ADD").pod(&s.pod).in_node(&s.node).config(&c);
        if reference {
            inv.run_reference()
        } else {
            inv.run_ours()
        }
    };
    let (r, o) = (run(true), run(false));
    r.expect_err(999);
    o.expect_err(999);
    assert_eq!(r.msg(), Some("Required prevResult missing"));
    assert_eq!(o.msg(), r.msg());
}

#[test]
fn check_detects_drift_like_reference() {
    if !require_reference("check_detects_drift_like_reference", "tuning") {
        return;
    }
    let extra = json!({"mtu": 1400, "promisc": true});
    let (r, o) = (Side::new(), Side::new());
    r.run(true, "ADD", &extra, None).expect_ok();
    o.run(false, "ADD", &extra, None).expect_ok();
    for s in [&r, &o] {
        s.pod.ip(&["link", "set", "eth0", "mtu", "1350"]);
    }
    let rc = r.run(true, "CHECK", &extra, None);
    let oc = o.run(false, "CHECK", &extra, None);
    rc.expect_err(999);
    oc.expect_err(999);
    assert_eq!(rc.msg(), oc.msg());
    assert_eq!(
        oc.msg(),
        Some("Error: Tuning configured MTU of eth0 is 1400, current value is 1350")
    );
    // promisc off in the config but on in the kernel also fails (both).
    let rc = r.run(true, "CHECK", &json!({}), None);
    let oc = o.run(false, "CHECK", &json!({}), None);
    assert_eq!(rc.msg(), oc.msg());
    assert_eq!(
        oc.msg(),
        Some("Error: Tuning link eth0 configured promisc is false, current value is 1")
    );
}

#[test]
fn txqlen_set_and_restored() {
    // The deployed reference (1.1.1) predates txQLen: ours only.
    if !require_root("txqlen_set_and_restored") {
        return;
    }
    let s = Side::new();
    let extra = json!({"txQLen": 42, "mtu": 1400});
    s.run(false, "ADD", &extra, None).expect_ok();
    assert_eq!(link_state(&s.pod)["txqlen"], 42);
    assert_eq!(
        s.backup().unwrap(),
        "{\n \"mtu\": 1500,\n \"txQLen\": 1000\n}",
        "backup holds the originals"
    );
    s.run(false, "CHECK", &extra, None).expect_ok();
    s.pod.ip(&["link", "set", "eth0", "txqueuelen", "7"]);
    let c = s.run(false, "CHECK", &extra, None);
    c.expect_err(999);
    assert_eq!(
        c.msg(),
        Some("Error: Tuning configured Transmit Queue Length of eth0 is 42, current value is 7")
    );
    s.run(false, "DEL", &extra, None).expect_ok();
    let st = link_state(&s.pod);
    assert_eq!((st["txqlen"].clone(), st["mtu"].clone()), (json!(1000), json!(1500)));
    assert_eq!(s.backup(), None);
}

#[test]
fn duplicate_sysctl_keys_rejected() {
    if !require_root("duplicate_sysctl_keys_rejected") {
        return;
    }
    let s = Side::new();
    let raw = format!(
        r#"{{"cniVersion":"1.0.0","name":"tnet","type":"tuning","dataDir":"{}",
            "sysctl":{{"net.core.somaxconn":"100","net.core.somaxconn":"200"}},"prevResult":{}}}"#,
        s.data.as_str(),
        prev_result(&s.pod)
    );
    let o = Invocation::new("tuning", "ADD")
        .pod(&s.pod)
        .in_node(&s.node)
        .stdin_raw(raw)
        .run_ours();
    o.expect_err(999);
    assert_eq!(o.msg(), Some("duplicated sysctl keys are not allowed"));
}

#[test]
fn del_is_idempotent_and_survives_a_vanished_netns() {
    if !require_root("del_is_idempotent_and_survives_a_vanished_netns") {
        return;
    }
    let s = Side::new();
    let extra = json!({"mtu": 1400});
    s.run(false, "ADD", &extra, None).expect_ok();
    assert!(s.backup().is_some());
    // The netns is gone: DEL succeeds and drops the backup nothing can use any more.
    let d = Invocation::new("tuning", "DEL")
        .netns(vanished_netns_path())
        .in_node(&s.node)
        .container_id("cid1")
        .config(&conf(&s.pod, &s.data, extra.clone()))
        .run_ours();
    d.expect_ok();
    assert_eq!(s.backup(), None);
    s.run(false, "DEL", &extra, None).expect_ok();
}

#[test]
fn failed_add_restores_the_link() {
    if !require_root("failed_add_restores_the_link") {
        return;
    }
    let s = Side::new();
    // mtu is applied before the (impossible) txQLen, then rolled back.
    let o = s.run(false, "ADD", &json!({"mtu": 1400, "txQLen": -1}), None);
    o.expect_err(999);
    assert_eq!(link_state(&s.pod)["mtu"], 1500);
    assert_eq!(s.backup(), None);
}
