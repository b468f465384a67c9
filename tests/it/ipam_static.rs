//! static IPAM through the real binary (a symlink named `static`), compared with the reference
//! (Debian's /usr/lib/cni/static, v1.1.1) on the same input. v1.1.1 prints `"dns": {}` in 1.x
//! results where the 1.x types omit it; an empty dns object is normalised away.

use crate::common::rig::Invocation;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const REFERENCE: &str = "/usr/lib/cni/static";

/// Marks "run the built binary through a symlink named static" (the harness makes one per run).
fn ours() -> PathBuf {
    PathBuf::from("@ours")
}

/// One run through the harness's `Invocation`, in the root netns: static IPAM touches no
/// kernel object (CNI_NETNS points nowhere).
fn run(plugin: &Path, cmd: &str, cni_args: &str, conf: &Value) -> (bool, Value) {
    let mut inv = Invocation::new("static", cmd)
        .container_id("c1")
        .netns("/nonexistent/netns")
        .cni_path("/usr/lib/cni")
        // As a runtime would leave it for an IPAM that needs no other program.
        .env("PATH", "")
        .config(conf)
        .in_root_ns();
    if !cni_args.is_empty() {
        inv = inv.args(cni_args);
    }
    let o = if plugin == Path::new("@ours") {
        inv.run_ours()
    } else {
        inv.run_binary(plugin, "/usr/lib/cni")
    };
    let mut v: Value = if o.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&o.stdout).unwrap()
    };
    if v.get("dns") == Some(&json!({})) && v["cniVersion"].as_str().is_some_and(|s| s.starts_with('1')) {
        v.as_object_mut().unwrap().remove("dns");
    }
    (o.success(), v)
}

fn conf(version: &str, ipam: Value, extra: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("static");
    let mut c = json!({"cniVersion": version, "name": "net", "type": "macvlan", "ipam": ipam});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            c[k] = v;
        }
    }
    c
}

/// Same input to both; identical success and JSON. Returns ours.
fn same(name: &str, cmd: &str, cni_args: &str, c: &Value) -> (bool, Value) {
    let r = run(Path::new(REFERENCE), cmd, cni_args, c);
    let o = run(&ours(), cmd, cni_args, c);
    assert_eq!(r, o, "{name}: left reference, right ours");
    o
}

fn addrs(v: &Value) -> Vec<(String, String)> {
    v["ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["address"].as_str().unwrap().to_string(),
                i["gateway"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn base_ipam() -> Value {
    json!({
        "addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "3ffe:ffff:0:1::5/64"}],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.20.0.0/16", "gw": "10.10.0.254"}, {"dst": "10.20.0.0/16", "gw": "10.10.0.253"}],
        "dns": {"nameservers": ["10.10.0.53"], "domain": "example.com", "search": ["example.com"], "options": ["ndots:2"]}
    })
}

#[test]
fn static_result_shape_for_every_version_matches_reference() {
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let (ok, out) = same(v, "ADD", "", &conf(v, base_ipam(), json!({})));
        assert!(ok);
        assert_eq!(out["cniVersion"], v);
        assert_eq!(
            addrs(&out),
            [
                ("10.10.0.5/24".into(), "10.10.0.1".into()),
                ("3ffe:ffff:0:1::5/64".into(), String::new())
            ]
        );
        assert_eq!(
            out["routes"].as_array().unwrap().len(),
            3,
            "ECMP routes with the same dst are kept"
        );
        assert_eq!(out["dns"]["domain"], "example.com");
    }
    for v in ["0.1.0", "0.2.0"] {
        let (ok, out) = same(v, "ADD", "", &conf(v, base_ipam(), json!({})));
        assert!(ok);
        assert_eq!(out["ip4"]["ip"], "10.10.0.5/24");
        assert_eq!(out["ip6"]["ip"], "3ffe:ffff:0:1::5/64");
    }
    let (ok, out) = run(&ours(), "ADD", "", &conf("1.1.0", base_ipam(), json!({})));
    assert!(ok);
    assert_eq!(out["cniVersion"], "1.1.0");
    assert_eq!(addrs(&out)[0], ("10.10.0.5/24".into(), "10.10.0.1".into()));
    assert!(out["ips"][0].get("version").is_none());
}

#[test]
fn static_address_sources_precedence_matches_reference() {
    let ipam = json!({"addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]});
    // CNI_ARGS IP= is appended; GATEWAY= goes to the CNI_ARGS addresses in its subnet.
    let (_, out) = same(
        "cni_args",
        "ADD",
        "IP=10.11.0.5/24,10.12.0.5/24;GATEWAY=10.11.0.1",
        &conf("1.0.0", ipam.clone(), json!({})),
    );
    assert_eq!(
        addrs(&out),
        [
            ("10.10.0.5/24".into(), "10.10.0.1".into()),
            ("10.11.0.5/24".into(), "10.11.0.1".into()),
            ("10.12.0.5/24".into(), String::new())
        ]
    );
    // args.cni.ips replaces the addresses, CNI_ARGS included.
    let args = json!({"args": {"cni": {"ips": ["10.20.0.5/24"]}}});
    let (_, out) = same("args", "ADD", "IP=10.11.0.5/24", &conf("1.0.0", ipam.clone(), args));
    assert_eq!(addrs(&out), [("10.20.0.5/24".into(), String::new())]);
    // runtimeConfig.ips replaces again.
    let both = json!({"args": {"cni": {"ips": ["10.20.0.5/24"]}}, "runtimeConfig": {"ips": ["10.30.0.5/24"]}});
    let (_, out) = same("runtimeConfig", "ADD", "", &conf("1.0.0", ipam, both));
    assert_eq!(addrs(&out), [("10.30.0.5/24".into(), String::new())]);
}

#[test]
fn static_validation_errors_match_reference() {
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "bad-config-cidr",
            "",
            conf("1.0.0", json!({"addresses": [{"address": "10.10.0.5"}]}), json!({})),
        ),
        ("bad-cni-args-cidr", "IP=10.10.0.7", conf("1.0.0", json!({}), json!({}))),
        (
            "bad-args-cidr",
            "",
            conf("1.0.0", json!({}), json!({"args": {"cni": {"ips": ["nope"]}}})),
        ),
        (
            "bad-rc-cidr",
            "",
            conf("1.0.0", json!({}), json!({"runtimeConfig": {"ips": ["10.1.1.1"]}})),
        ),
        (
            "bad-gateway",
            "IP=10.10.0.7/24;GATEWAY=10.10.0.x",
            conf("1.0.0", json!({}), json!({})),
        ),
        ("unknown-arg", "FOO=1", conf("1.0.0", json!({}), json!({}))),
        (
            "two-v4-at-020",
            "",
            conf(
                "0.2.0",
                json!({"addresses": [{"address": "10.10.0.5/24"}, {"address": "10.10.1.5/24"}]}),
                json!({}),
            ),
        ),
    ];
    for (name, a, c) in cases {
        let (ok, out) = same(name, "ADD", a, &c);
        assert!(!ok, "{name}");
        assert_eq!(out["code"], 999, "{name}");
    }
    let (_, out) = same(
        "msg",
        "ADD",
        "",
        &conf("1.0.0", json!({"addresses": [{"address": "10.10.0.5"}]}), json!({})),
    );
    // v1.1.1's wording (newer releases say "invalid CIDR <s>: ..."; the Debian one is the yardstick).
    assert_eq!(
        out["msg"],
        "the 'address' field is expected to be in CIDR notation, got: '10.10.0.5'"
    );
    let (_, out) = same(
        "msg-ips",
        "ADD",
        "",
        &conf("1.0.0", json!({}), json!({"runtimeConfig": {"ips": ["10.1.1.1"]}})),
    );
    assert_eq!(
        out["msg"],
        "an entry in the 'ips' field is NOT in CIDR notation, got: '10.1.1.1'"
    );
    let (ok, _) = same(
        "no-ipam",
        "ADD",
        "",
        &json!({"cniVersion": "1.0.0", "name": "net", "type": "x"}),
    );
    assert!(!ok);
}

#[test]
fn static_check_against_prev_result_and_del_is_a_no_op() {
    let ipam = json!({"addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]});
    let good =
        json!({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}]}});
    assert!(same("check-ok", "CHECK", "", &conf("1.0.0", ipam.clone(), good)).0);
    let wrong_gw =
        json!({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.10.0.5/24", "gateway": "10.10.0.9"}]}});
    let (ok, out) = same("check-gw", "CHECK", "", &conf("1.0.0", ipam.clone(), wrong_gw));
    assert!(!ok);
    assert_eq!(out["msg"], "static: Failed to match addr 10.10.0.5 on interface eth0");
    let absent = json!({"prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "10.99.0.5/24"}]}});
    assert!(
        same("check-absent", "CHECK", "", &conf("1.0.0", ipam.clone(), absent)).0,
        "absent is not reported"
    );
    let (ok, out) = same("check-missing", "CHECK", "", &conf("1.0.0", ipam.clone(), json!({})));
    assert!(!ok);
    assert_eq!(out["msg"], "Required prevResult missing");
    assert!(same("del", "DEL", "", &conf("1.0.0", ipam.clone(), json!({}))).0);
    assert!(same("del-again", "DEL", "", &conf("1.0.0", ipam, json!({}))).0);
}
