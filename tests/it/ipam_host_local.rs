//! host-local through the real binary (a symlink named `host-local`), and side by side with
//! the reference (Debian's /usr/lib/cni/host-local, v1.1.1): same input, separate temp data
//! dirs, then the printed JSON and the directory contents are compared. This is the IPAM
//! conformance evidence. Nothing here touches /var/lib/cni.
//!
//! Known, intended differences from the reference (asserted where they show):
//! - v1.1.1 prints `"dns": {}` in 1.0.0 results; the 1.x spec types omit an empty dns (the
//!   reference's newer releases do too), so an empty dns object is normalised away.
//! - A config value of the wrong JSON type is code 7 from our protocol layer; the reference
//!   answers 999 with Go's decoder text.
//! - Files are 0600 (the reference's are 0644); contents are byte-identical.

use crate::common::rig::{Invocation, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const REFERENCE: &str = "/usr/lib/cni/host-local";

fn tmp(tag: &str) -> TempDir {
    TempDir::new(&format!("hl-{tag}"))
}

/// A symlink named host-local to the built binary, inside `dir`.
fn ours(dir: &Path) -> PathBuf {
    let link = dir.join("host-local");
    if !link.exists() {
        std::os::unix::fs::symlink(crate::common::rig::ours_bin(), &link).unwrap();
    }
    link
}

#[derive(Debug, Clone, PartialEq)]
struct Out {
    ok: bool,
    json: Value,
}

impl Out {
    fn code(&self) -> u64 {
        assert!(!self.ok, "expected an error, got {}", self.json);
        self.json["code"].as_u64().unwrap()
    }
    fn msg(&self) -> &str {
        self.json["msg"].as_str().unwrap_or("")
    }
    fn ips(&self) -> Vec<String> {
        assert!(self.ok, "expected success, got {}", self.json);
        self.json["ips"]
            .as_array()
            .map(|a| a.iter().map(|i| i["address"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

/// Starts one run through the harness's `Invocation`, in the root netns (host-local touches
/// no kernel object; CNI_NETNS points nowhere), with no PATH; an empty `cid`/`ifname` leaves
/// that variable unset.
fn spawn(plugin: &Path, cmd: &str, cid: &str, ifname: &str, cni_args: &str, conf: &str) -> std::process::Child {
    let mut inv = Invocation::new("host-local", cmd)
        .netns("/nonexistent/netns")
        .cni_path("/usr/lib/cni")
        .env("PATH", "")
        .stdin_raw(conf.as_bytes().to_vec())
        .in_root_ns();
    inv = if cid.is_empty() {
        inv.unset("CNI_CONTAINERID")
    } else {
        inv.container_id(cid)
    };
    inv = if ifname.is_empty() {
        inv.unset("CNI_IFNAME")
    } else {
        inv.ifname(ifname)
    };
    if !cni_args.is_empty() {
        inv = inv.args(cni_args);
    }
    inv.spawn_binary(plugin, "/usr/lib/cni")
}

fn finish(child: std::process::Child) -> Out {
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let mut json: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON {text:?}: {e}"))
    };
    // v1.1.1 prints an empty dns object in 1.0.0 results; the 1.x types omit it.
    if json.get("dns") == Some(&json!({})) && json["cniVersion"].as_str().is_some_and(|v| v.starts_with('1')) {
        json.as_object_mut().unwrap().remove("dns");
    }
    Out {
        ok: o.status.success(),
        json,
    }
}

fn run(plugin: &Path, cmd: &str, cid: &str, ifname: &str, cni_args: &str, conf: &str) -> Out {
    finish(spawn(plugin, cmd, cid, ifname, cni_args, conf))
}

/// A config for network `net` with `ipam` (dataDir is added) and extra top-level keys.
fn conf(version: &str, data_dir: &Path, ipam: Value, extra: Value) -> String {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(data_dir.to_str().unwrap());
    let mut c = json!({"cniVersion": version, "name": "net", "type": "bridge", "ipam": ipam});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            c[k] = v;
        }
    }
    c.to_string()
}

fn ranges(subnets: &[&str]) -> Value {
    json!({ "ranges": subnets.iter().map(|s| json!([{"subnet": s}])).collect::<Vec<_>>() })
}

/// File name -> content of a network directory, `lock` left out.
fn dir_state(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name != "lock" {
                m.insert(name, fs::read(e.path()).unwrap());
            }
        }
    }
    m
}

/// One call of a scenario: verb, container ID, ifname, CNI_ARGS, version, ipam, extra keys.
struct Step<'a> {
    cmd: &'a str,
    cid: &'a str,
    ifname: &'a str,
    args: &'a str,
    version: &'a str,
    ipam: Value,
    extra: Value,
}

fn step<'a>(cmd: &'a str, cid: &'a str, ipam: &Value) -> Step<'a> {
    Step {
        cmd,
        cid,
        ifname: "eth0",
        args: "",
        version: "1.0.0",
        ipam: ipam.clone(),
        extra: json!({}),
    }
}

/// Run the same steps through the reference and through cni-multi, each in its own data dir;
/// every output and the final directory contents must be identical. Returns our outputs.
fn compare(name: &str, steps: &[Step]) -> Vec<Out> {
    let t = tmp(name);
    let ours = ours(t.path());
    let (dref, dours) = (t.path().join("ref"), t.path().join("ours"));
    let mut outs = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let r = run(
            Path::new(REFERENCE),
            s.cmd,
            s.cid,
            s.ifname,
            s.args,
            &conf(s.version, &dref, s.ipam.clone(), s.extra.clone()),
        );
        let o = run(
            &ours,
            s.cmd,
            s.cid,
            s.ifname,
            s.args,
            &conf(s.version, &dours, s.ipam.clone(), s.extra.clone()),
        );
        let norm = |v: &Value| {
            v.to_string()
                .replace(dref.to_str().unwrap(), "@")
                .replace(dours.to_str().unwrap(), "@")
        };
        assert_eq!(
            (r.ok, norm(&r.json)),
            (o.ok, norm(&o.json)),
            "{name}: step {i} ({} {}) differs (left: reference, right: ours)",
            s.cmd,
            s.cid
        );
        outs.push(o);
    }
    assert_eq!(
        dir_state(&dref.join("net")),
        dir_state(&dours.join("net")),
        "{name}: directory contents differ"
    );
    outs
}

// ---- side by side with the reference ----------------------------------------------------

#[test]
fn conformance_fresh_range_gives_dot_two_and_same_files() {
    let ipam = ranges(&["10.1.0.0/24"]);
    let outs = compare("fresh", &[step("ADD", "c1", &ipam)]);
    assert_eq!(outs[0].ips(), ["10.1.0.2/24"]);
    assert_eq!(outs[0].json["ips"][0]["gateway"], "10.1.0.1");
}

#[test]
fn conformance_round_robin_continues_after_last_reserved() {
    let ipam = ranges(&["10.1.0.0/24"]);
    let outs = compare(
        "rr",
        &[
            step("ADD", "c1", &ipam),
            step("ADD", "c2", &ipam),
            step("ADD", "c3", &ipam),
            step("DEL", "c2", &ipam),
            step("ADD", "c4", &ipam),
        ],
    );
    assert_eq!(
        outs[4].ips(),
        ["10.1.0.5/24"],
        "a released address is not reused before the lap ends"
    );
}

#[test]
fn conformance_wrap_around_and_full_range() {
    let ipam = ranges(&["10.1.0.0/29"]);
    let mut steps: Vec<Step> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|c| step("ADD", c, &ipam))
        .collect();
    steps.push(step("ADD", "f", &ipam));
    steps.push(step("DEL", "b", &ipam));
    steps.push(step("ADD", "g", &ipam));
    let outs = compare("wrap", &steps);
    assert_eq!(outs[4].ips(), ["10.1.0.6/29"], "broadcast .7 is never handed out");
    assert_eq!(outs[5].code(), 999);
    assert_eq!(
        outs[5].msg(),
        "failed to allocate for range 0: no IP addresses available in range set: 10.1.0.1-10.1.0.6"
    );
    assert_eq!(outs[7].ips(), ["10.1.0.3/29"], "wraps to the freed address");
}

#[test]
fn conformance_requested_ips_from_each_source() {
    let ipam = ranges(&["10.1.0.0/24"]);
    let mut s1 = step("ADD", "c1", &ipam);
    s1.args = "IP=10.1.0.50";
    let mut s2 = step("ADD", "c2", &ipam);
    s2.extra = json!({"args": {"cni": {"ips": ["10.1.0.51/24"]}}});
    let mut s3 = step("ADD", "c3", &ipam);
    s3.extra = json!({"runtimeConfig": {"ips": ["10.1.0.52"]}});
    let mut s4 = step("ADD", "c4", &ipam);
    s4.args = "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.0.53/24";
    let mut taken = step("ADD", "c5", &ipam);
    taken.args = "IP=10.1.0.50";
    let mut outside = step("ADD", "c6", &ipam);
    outside.extra = json!({"runtimeConfig": {"ips": ["10.9.0.5"]}});
    let mut gateway = step("ADD", "c7", &ipam);
    gateway.args = "IP=10.1.0.1";
    let mut bad = step("ADD", "c8", &ipam);
    bad.args = "IP=10.1.0.x";
    let mut bad_args = step("ADD", "c10", &ipam);
    bad_args.extra = json!({"args": {"cni": {"ips": ["10.1.0.0/33"]}}});
    let mut empty = step("ADD", "c11", &ipam);
    empty.args = "IP=";
    let mut unknown = step("ADD", "c9", &ipam);
    unknown.args = "IP=10.1.0.60;FOO=bar";
    let outs = compare(
        "requested",
        &[s1, s2, s3, s4, taken, outside, gateway, bad, unknown, bad_args, empty],
    );
    assert_eq!(outs[0].ips(), ["10.1.0.50/24"]);
    assert_eq!(outs[1].ips(), ["10.1.0.51/24"]);
    assert_eq!(outs[2].ips(), ["10.1.0.52/24"]);
    assert_eq!(outs[3].ips(), ["10.1.0.53/24"]);
    assert_eq!(
        outs[4].msg(),
        "failed to allocate for range 0: requested IP address 10.1.0.50 is not available in range set 10.1.0.1-10.1.0.254"
    );
    assert!(outs[5]
        .msg()
        .starts_with("failed to allocate all requested IPs: 10.9.0.5"));
    assert_eq!(
        outs[6].msg(),
        "failed to allocate for range 0: requested ip 10.1.0.1 is subnet's gateway"
    );
    assert_eq!(outs[7].code(), 999);
    assert_eq!(outs[8].msg(), "ARGS: unknown args [\"FOO=bar\"]");
    assert_eq!(outs[9].msg(), "invalid IP address 10.1.0.0/33");
    // An empty IP= requests nothing. The failed "outside" ADD above had reserved .54 from the
    // pool (then rolled back) and moved last_reserved_ip, in both implementations.
    assert_eq!(outs[10].ips(), ["10.1.0.55/24"]);
}

#[test]
fn conformance_requested_ips_merge_across_sources_and_sets() {
    let ipam = ranges(&["10.1.0.0/24", "10.2.0.0/24"]);
    let mut s = step("ADD", "c1", &ipam);
    s.args = "IP=10.2.0.9";
    s.extra = json!({"args": {"cni": {"ips": ["10.1.0.9"]}}});
    let outs = compare("merge", &[s]);
    assert_eq!(outs[0].ips(), ["10.1.0.9/24", "10.2.0.9/24"]);
}

#[test]
fn conformance_validation_errors() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("hostbits", ranges(&["10.1.0.5/24"]), "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.1.0.0"),
        ("small4", ranges(&["10.1.0.0/31"]), "invalid range set 0: Network 10.1.0.0/31 too small to allocate from"),
        ("small6", ranges(&["2001:db8::/127"]), "invalid range set 0: Network 2001:db8::/127 too small to allocate from"),
        ("start", json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}]]}), "invalid range set 0: RangeStart 10.2.0.1 not in network 10.1.0.0/24"),
        ("end", json!({"ranges": [[{"subnet": "10.1.0.0/24", "rangeEnd": "10.1.1.1"}]]}), "invalid range set 0: RangeEnd 10.1.1.1 not in network 10.1.0.0/24"),
        ("overlap-in-set", json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.1.0.0/25"}]]}), "invalid range set 0: subnets 10.1.0.1-10.1.0.254 and 10.1.0.1-10.1.0.126 overlap"),
        ("overlap-sets", ranges(&["10.1.0.0/24", "10.1.0.128/25"]), "range set 0 overlaps with 1"),
        ("mixed", json!({"ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "2001:db8::/64"}]]}), "invalid range set 0: mixed address families"),
        ("empty-set", json!({"ranges": [[]]}), "invalid range set 0: empty range set"),
        ("no-ranges", json!({}), "no IP ranges specified"),
        ("bad-cidr", ranges(&["10.1.0.0/33"]), "invalid CIDR address: 10.1.0.0/33"),
        ("no-subnet", json!({"ranges": [[{"rangeStart": "10.1.0.4"}]]}), "invalid range set 0: IP <nil> not v4 nor v6"),
    ];
    for (name, ipam, msg) in cases {
        let outs = compare(name, &[step("ADD", "c1", &ipam)]);
        assert_eq!(outs[0].code(), 999, "{name}");
        assert_eq!(outs[0].msg(), msg, "{name}");
    }
    let two_v4 = ranges(&["10.1.0.0/24", "10.2.0.0/24"]);
    let mut s = step("ADD", "c1", &two_v4);
    s.version = "0.2.0";
    let outs = compare("two-v4-020", &[s]);
    assert_eq!(
        outs[0].msg(),
        "CNI version 0.2.0 does not support more than 1 address per family"
    );
    let outs = compare(
        "no-ipam",
        &[Step {
            ipam: json!({}),
            ..step("ADD", "c1", &json!({}))
        }],
    );
    assert_eq!(outs[0].code(), 999, "an empty ipam object still has no ranges");
}

#[test]
fn wrong_json_type_is_code_7_not_999() {
    // The one documented difference in error codes: our protocol layer reports a config
    // value of the wrong JSON type as "invalid network config" (7); Go's decoder error is 999.
    let t = tmp("jsontype");
    let ipam = json!({"ranges": [[{"subnet": 5}]]});
    let c = conf("1.0.0", &t.path().join("d"), ipam, json!({}));
    assert_eq!(run(Path::new(REFERENCE), "ADD", "c1", "eth0", "", &c).code(), 999);
    assert_eq!(run(&ours(t.path()), "ADD", "c1", "eth0", "", &c).code(), 7);
    let no_ipam = json!({"cniVersion": "1.0.0", "name": "net", "type": "x"}).to_string();
    let o = run(&ours(t.path()), "ADD", "c1", "eth0", "", &no_ipam);
    assert_eq!((o.code(), o.msg()), (999, "IPAM config missing 'ipam' key"));
}

#[test]
fn conformance_duplicate_allocation_del_second_del_unknown_and_check() {
    let ipam = ranges(&["10.1.0.0/24"]);
    let mut check = step("CHECK", "c1", &ipam);
    check.version = "0.4.0";
    let mut check_unknown = step("CHECK", "nope", &ipam);
    check_unknown.version = "0.4.0";
    let mut other_if = step("ADD", "c1", &ipam);
    other_if.ifname = "eth1";
    let outs = compare(
        "dup",
        &[
            step("ADD", "c1", &ipam),
            step("ADD", "c1", &ipam),
            other_if,
            check,
            check_unknown,
            step("DEL", "c1", &ipam),
            step("DEL", "c1", &ipam),
            step("DEL", "never-added", &ipam),
        ],
    );
    assert_eq!(
        outs[1].msg(),
        "failed to allocate for range 0: 10.1.0.2 has been allocated to c1, duplicate allocation is not allowed"
    );
    assert_eq!(
        outs[2].ips(),
        ["10.1.0.3/24"],
        "another ifname of the same container is another attachment"
    );
    assert!(outs[3].ok && outs[5].ok && outs[6].ok && outs[7].ok);
    assert_eq!(
        outs[4].msg(),
        "host-local: Failed to find address added by container nope"
    );
}

#[test]
fn conformance_result_shape_for_every_version() {
    let ipam = json!({
        "ranges": [[{"subnet": "10.1.0.0/24"}], [{"subnet": "2001:db8::/64"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]
    });
    for v in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let mut s = step("ADD", "c1", &ipam);
        s.version = v;
        let outs = compare(&format!("shape-{v}"), &[s]);
        assert_eq!(outs[0].json["cniVersion"], v);
        assert_eq!(outs[0].ips(), ["10.1.0.2/24", "2001:db8::2/64"]);
        assert_eq!(
            outs[0].json["ips"][1].get("version").is_some(),
            v.starts_with('0'),
            "{v}"
        );
    }
    let single = json!({"subnet": "10.1.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]});
    for v in ["0.1.0", "0.2.0"] {
        let mut s = step("ADD", "c1", &single);
        s.version = v;
        let outs = compare(&format!("shape-{v}"), &[s]);
        assert_eq!(outs[0].json["ip4"]["ip"], "10.1.0.2/24", "{v}");
        assert_eq!(outs[0].json["ip4"]["gateway"], "10.1.0.1");
        assert_eq!(outs[0].json["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
    }
    // 1.1.0 is past the Debian reference: assert the shape directly.
    let t = tmp("shape110");
    let o = run(
        &ours(t.path()),
        "ADD",
        "c1",
        "eth0",
        "",
        &conf("1.1.0", &t.path().join("d"), ipam, json!({})),
    );
    assert_eq!(
        o.json,
        json!({"cniVersion": "1.1.0",
               "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1"},
                       {"address": "2001:db8::2/64", "gateway": "2001:db8::1"}],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.1.0.254"}]})
    );
}

#[test]
fn conformance_legacy_keys_ip_ranges_order_and_resolv_conf() {
    let t = tmp("resolv");
    let resolv = t.path().join("resolv.conf");
    fs::write(
        &resolv,
        "nameserver 10.0.0.53\nsearch a.example b.example\noptions ndots:2\ndomain example\n",
    )
    .unwrap();
    let ipam = json!({
        "subnet": "10.3.0.0/24", "rangeStart": "10.3.0.100", "rangeEnd": "10.3.0.110", "gateway": "10.3.0.254",
        "ranges": [[{"subnet": "10.4.0.0/24"}]],
        "resolvConf": resolv.to_str().unwrap()
    });
    let mut s = step("ADD", "c1", &ipam);
    s.extra = json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.5.0.0/24", "rangeStart": "10.5.0.20"}]]}});
    let outs = compare("legacy", &[s]);
    assert_eq!(outs[0].ips(), ["10.5.0.20/24", "10.3.0.100/24", "10.4.0.2/24"]);
    assert_eq!(outs[0].json["ips"][1]["gateway"], "10.3.0.254");
    assert_eq!(outs[0].json["dns"]["search"], json!(["a.example", "b.example"]));
}

/// Keys in any case, and one key in two spellings, as Go's decoder reads them in the
/// reference: the IPAM's own keys, a range's, a route's, runtimeConfig's and args'. Two
/// spellings of `ranges` are decoded into the same list element by element (the second range
/// set's first range keeps the first one's gateway, and the list is cut to the second's length).
#[test]
fn conformance_keys_in_any_case() {
    let ipam = json!({
        "Ranges": [[{"Subnet": "10.6.0.0/24", "RangeStart": "10.6.0.40", "Gateway": "10.6.0.254"}, {"subnet": "10.7.0.0/24"}]],
        "ROUTES": [{"Dst": "10.90.0.0/16", "GW": "10.6.0.1"}]
    });
    let mut s = step("ADD", "c1", &ipam);
    s.extra = json!({"RuntimeConfig": {"IPRanges": [[{"SUBNET": "10.8.0.0/24", "rangeEnd": "10.8.0.9"}]]}});
    let dup = json!({
        "ranges": [[{"subnet": "10.9.0.0/24", "gateway": "10.9.0.254"}, {"subnet": "10.10.0.0/24"}]],
        "Ranges": [[{"subnet": "10.9.0.0/24", "rangeStart": "10.9.0.50"}]]
    });
    let mut a = step("ADD", "c3", &ranges(&["10.11.0.0/24"]));
    a.extra = json!({"Args": {"CNI": {"IPs": ["10.11.0.77"]}}});
    let outs = compare(
        "any-case",
        &[
            s,
            step("ADD", "c2", &dup),
            a,
            step("DEL", "c1", &ipam),
            step("DEL", "c2", &dup),
        ],
    );
    assert_eq!(outs[0].ips(), ["10.8.0.2/24", "10.6.0.40/24"]);
    assert_eq!(outs[0].json["routes"][0]["dst"], "10.90.0.0/16");
    assert_eq!(outs[1].ips(), ["10.9.0.50/24"]);
    assert_eq!(outs[1].json["ips"][0]["gateway"], "10.9.0.254");
    assert_eq!(outs[2].ips(), ["10.11.0.77/24"]);
}

#[test]
fn conformance_custom_gateway_is_skipped_and_v6_range_end_is_all_ones() {
    let ipam = json!({"ranges": [[{"subnet": "10.1.0.0/29", "gateway": "10.1.0.3"}], [{"subnet": "2001:db8::/126"}]]});
    let steps: Vec<Step> = ["a", "b", "c"].iter().map(|c| step("ADD", c, &ipam)).collect();
    let outs = compare("gw", &steps);
    assert_eq!(outs[0].ips(), ["10.1.0.1/29", "2001:db8::2/126"]);
    assert_eq!(outs[1].ips(), ["10.1.0.2/29", "2001:db8::3/126"], "v6 has no broadcast");
    assert!(!outs[2].ok, "the v6 set is full");
}

// ---- swapping binaries --------------------------------------------------------------------

#[test]
fn swap_reference_reservations_released_by_ours_and_ours_by_reference() {
    let t = tmp("swap");
    let ours = ours(t.path());
    let dir = t.path().join("d");
    let c = conf("1.0.0", &dir, ranges(&["10.1.0.0/24"]), json!({}));
    let net = dir.join("net");
    assert_eq!(
        run(Path::new(REFERENCE), "ADD", "ref1", "eth0", "", &c).ips(),
        ["10.1.0.2/24"]
    );
    assert_eq!(
        run(&ours, "ADD", "ours1", "eth0", "", &c).ips(),
        ["10.1.0.3/24"],
        "ours continues its round robin"
    );
    assert_eq!(fs::read(net.join("10.1.0.3")).unwrap(), b"ours1\r\neth0");
    assert_eq!(
        run(Path::new(REFERENCE), "ADD", "ref2", "eth0", "", &c).ips(),
        ["10.1.0.4/24"]
    );
    assert!(run(&ours, "DEL", "ref1", "eth0", "", &c).ok);
    assert!(
        !net.join("10.1.0.2").exists(),
        "our DEL released the reference's reservation"
    );
    assert!(run(Path::new(REFERENCE), "DEL", "ours1", "eth0", "", &c).ok);
    assert!(!net.join("10.1.0.3").exists(), "the reference's DEL released ours");
    let mut c04 = c.replace("\"1.0.0\"", "\"0.4.0\"");
    assert!(
        run(&ours, "CHECK", "ref2", "eth0", "", &c04).ok,
        "our CHECK finds the reference's reservation"
    );
    c04 = c04.clone();
    assert!(run(Path::new(REFERENCE), "CHECK", "ref2", "eth0", "", &c04).ok);
    // Legacy files (container ID only, as very old releases wrote them) are released too.
    fs::write(net.join("10.1.0.77"), b"old-id").unwrap();
    assert!(run(&ours, "DEL", "old-id", "eth0", "", &c).ok);
    assert!(!net.join("10.1.0.77").exists());
}

// ---- crash safety and concurrency -------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn assert_well_formed(net: &Path) -> usize {
    let mut n = 0;
    // An ADD killed before it made the network's directory leaves nothing at all.
    let Ok(dir) = fs::read_dir(net) else {
        return 0;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<std::net::IpAddr>().is_ok() {
            let content = fs::read_to_string(e.path()).unwrap();
            let (id, ifname) = content
                .split_once("\r\n")
                .unwrap_or_else(|| panic!("{name}: partial or empty reservation {content:?}"));
            assert!(
                id.starts_with('k') && id.len() > 1 && ifname == "eth0",
                "{name}: {content:?}"
            );
            n += 1;
        } else if let Some(rest) = name.strip_prefix("last_reserved_ip.") {
            assert_eq!(rest, "0");
            let ip = fs::read_to_string(e.path()).unwrap();
            assert!(ip.parse::<std::net::IpAddr>().is_ok(), "last_reserved_ip holds {ip:?}");
        } else {
            assert!(name == "lock" || name.starts_with(".tmp-"), "unexpected file {name}");
        }
    }
    n
}

#[test]
fn crash_safety_sigkill_at_random_points_leaves_no_partial_reservation() {
    let t = tmp("crash");
    let ours = ours(t.path());
    let c = conf("1.0.0", &t.path().join("d"), ranges(&["10.7.0.0/24"]), json!({}));
    let net = t.path().join("d").join("net");
    let mut rng = Rng(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1);
    let mut completed = 0;
    for i in 0..200 {
        let mut child = spawn(&ours, "ADD", &format!("k{i}"), "eth0", "", &c);
        std::thread::sleep(std::time::Duration::from_micros(rng.next() % 3000));
        let _ = child.kill();
        // A killed ADD may have printed half its result: only the exit status counts.
        if child.wait_with_output().unwrap().status.success() {
            completed += 1;
        }
        if i % 20 == 0 {
            assert_well_formed(&net);
        }
    }
    let survivors = assert_well_formed(&net);
    assert!(
        survivors >= completed,
        "{survivors} files for {completed} completed ADDs"
    );
    // The rest of the range is still allocatable, up to the last address.
    let mut i = 1000;
    loop {
        let o = run(&ours, "ADD", &format!("k{i}"), "eth0", "", &c);
        if !o.ok {
            assert!(o.msg().contains("no IP addresses available"), "{}", o.msg());
            break;
        }
        i += 1;
    }
    assert_eq!(
        assert_well_formed(&net),
        253,
        "every address .2-.254 is reserved exactly once"
    );
    let temps: Vec<_> = fs::read_dir(&net)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "stale temp files were cleaned under the lock");
}

#[test]
fn empty_reservation_left_by_a_killed_reference_writer_is_reclaimed() {
    let t = tmp("emptyfile");
    let ours = ours(t.path());
    let c = conf("1.0.0", &t.path().join("d"), ranges(&["10.1.0.0/30"]), json!({}));
    let net = t.path().join("d").join("net");
    fs::create_dir_all(&net).unwrap();
    fs::write(net.join("10.1.0.2"), b"").unwrap();
    assert_eq!(run(&ours, "ADD", "c1", "eth0", "", &c).ips(), ["10.1.0.2/30"]);
    assert_eq!(fs::read(net.join("10.1.0.2")).unwrap(), b"c1\r\neth0");
}

#[test]
fn concurrency_fifty_parallel_adds_get_distinct_addresses_and_dels_release_all() {
    let t = tmp("conc");
    let ours = ours(t.path());
    let c = conf("1.0.0", &t.path().join("d"), ranges(&["10.8.0.0/24"]), json!({}));
    let net = t.path().join("d").join("net");
    let children: Vec<_> = (0..50)
        .map(|i| spawn(&ours, "ADD", &format!("p{i}"), "eth0", "", &c))
        .collect();
    let mut ips: Vec<String> = children.into_iter().flat_map(|ch| finish(ch).ips()).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 50, "50 distinct addresses");
    assert_eq!(dir_state(&net).len(), 51, "50 reservations + last_reserved_ip.0");
    let children: Vec<_> = (0..50)
        .map(|i| spawn(&ours, "DEL", &format!("p{i}"), "eth0", "", &c))
        .collect();
    for ch in children {
        assert!(finish(ch).ok);
    }
    assert_eq!(dir_state(&net).keys().collect::<Vec<_>>(), ["last_reserved_ip.0"]);
}

// ---- files, names ---------------------------------------------------------------------------

#[test]
fn state_files_are_0600_dirs_0755_and_bad_network_names_touch_nothing() {
    let t = tmp("modes");
    let ours = ours(t.path());
    let d = t.path().join("d");
    let c = conf("1.0.0", &d, ranges(&["10.1.0.0/24"]), json!({}));
    assert!(run(&ours, "ADD", "c1", "eth0", "", &c).ok);
    let mode = |p: PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.join("net")), 0o755);
    assert_eq!(mode(d.join("net/10.1.0.2")), 0o600);
    assert_eq!(mode(d.join("net/last_reserved_ip.0")), 0o600);
    for bad in ["../x", "/", ".", "..", "a/b"] {
        let d2 = t.path().join("sub").join("d");
        let mut v: Value = serde_json::from_str(&conf("1.0.0", &d2, ranges(&["10.1.0.0/24"]), json!({}))).unwrap();
        v["name"] = json!(bad);
        let o = run(&ours, "ADD", "c1", "eth0", "", &v.to_string());
        assert_eq!(o.code(), 7, "{bad}");
        assert!(!t.path().join("sub").exists(), "{bad}: nothing was created");
    }
}

// ---- GC and STATUS (CNI 1.1) ------------------------------------------------------------------

fn gc_fixture(t: &TempDir) -> (PathBuf, PathBuf, String) {
    let ours = ours(t.path());
    let d = t.path().join("d");
    let c = conf("1.1.0", &d, ranges(&["10.1.0.0/24"]), json!({}));
    assert_eq!(run(&ours, "ADD", "c1", "eth0", "", &c).ips(), ["10.1.0.2/24"]);
    assert_eq!(run(&ours, "ADD", "c2", "eth0", "", &c).ips(), ["10.1.0.3/24"]);
    assert_eq!(run(&ours, "ADD", "c1", "eth1", "", &c).ips(), ["10.1.0.4/24"]);
    let net = d.join("net");
    fs::write(net.join("10.1.0.50"), b"legacy").unwrap();
    fs::write(net.join("10.1.0.51"), b"").unwrap();
    (ours, net, c)
}

fn names(net: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(net)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn gc_conf(c: &str, key: &str, list: Value) -> String {
    let mut v: Value = serde_json::from_str(c).unwrap();
    v[key] = list;
    v.to_string()
}

#[test]
fn gc_empty_list_releases_everything_but_state_files() {
    let t = tmp("gc-empty");
    let (ours, net, c) = gc_fixture(&t);
    let o = run(
        &ours,
        "GC",
        "",
        "",
        "",
        &gc_conf(&c, "cni.dev/valid-attachments", json!([])),
    );
    assert!(o.ok, "{:?}", o.json);
    assert_eq!(names(&net), ["last_reserved_ip.0", "lock"]);
}

#[test]
fn gc_partial_list_keeps_listed_attachments_and_legacy_ids() {
    let t = tmp("gc-partial");
    let (ours, net, c) = gc_fixture(&t);
    let keep = json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "legacy", "ifname": "eth7"}]);
    assert!(run(&ours, "GC", "", "", "", &gc_conf(&c, "cni.dev/valid-attachments", keep)).ok);
    assert_eq!(names(&net), ["10.1.0.2", "10.1.0.50", "last_reserved_ip.0", "lock"]);
}

#[test]
fn gc_old_attachments_key_works_and_no_key_does_nothing() {
    let t = tmp("gc-keys");
    let (ours, net, c) = gc_fixture(&t);
    let before = names(&net);
    assert!(run(&ours, "GC", "", "", "", &c).ok);
    assert_eq!(names(&net), before, "GC without a list touches nothing");
    let mut c10: Value = serde_json::from_str(&c).unwrap();
    c10["cniVersion"] = json!("1.0.0");
    assert_eq!(
        run(
            &ours,
            "GC",
            "",
            "",
            "",
            &gc_conf(&c10.to_string(), "cni.dev/attachments", json!([]))
        )
        .code(),
        1
    );
    let keep = json!([{"containerID": "c2", "ifname": "eth0"}]);
    assert!(run(&ours, "GC", "", "", "", &gc_conf(&c, "cni.dev/attachments", keep)).ok);
    assert_eq!(names(&net), ["10.1.0.3", "last_reserved_ip.0", "lock"]);
}

#[test]
fn status_ok_then_exhausted_then_unwritable() {
    let t = tmp("status");
    let ours = ours(t.path());
    let d = t.path().join("d");
    let c = conf(
        "1.1.0",
        &d,
        json!({"ranges": [[{"subnet": "10.1.0.0/29", "rangeStart": "10.1.0.2", "rangeEnd": "10.1.0.3"}], [{"subnet": "10.2.0.0/24"}]]}),
        json!({}),
    );
    assert!(run(&ours, "STATUS", "", "", "", &c).ok);
    assert!(run(&ours, "ADD", "c1", "eth0", "", &c).ok);
    assert!(
        run(&ours, "STATUS", "", "", "", &c).ok,
        "one address left in the first set"
    );
    assert!(run(&ours, "ADD", "c2", "eth0", "", &c).ok);
    let o = run(&ours, "STATUS", "", "", "", &c);
    assert_eq!(o.code(), 50);
    assert_eq!(o.msg(), "no IP addresses available in range set 10.1.0.2-10.1.0.3");
    assert!(run(&ours, "DEL", "c1", "eth0", "", &c).ok);
    assert!(run(&ours, "STATUS", "", "", "", &c).ok, "free again after DEL");
    fs::write(t.path().join("file"), b"").unwrap();
    let bad = conf(
        "1.1.0",
        &t.path().join("file").join("d"),
        ranges(&["10.1.0.0/24"]),
        json!({}),
    );
    assert_eq!(
        run(&ours, "STATUS", "", "", "", &bad).code(),
        50,
        "data dir cannot be created"
    );
    let mut c10: Value = serde_json::from_str(&c).unwrap();
    c10["cniVersion"] = json!("1.0.0");
    assert_eq!(
        run(&ours, "STATUS", "", "", "", &c10.to_string()).code(),
        1,
        "STATUS needs 1.1.0"
    );
}

/// DEL with prevResult releases the named files directly (no scan of every reservation), but
/// only files that really belong to the attachment; anything unexpected falls back to the
/// reference's scan, so the outcome is always the reference's.
#[test]
fn del_with_prev_result_releases_only_the_attachments_own_files() {
    let d = tmp("delfast");
    let bin = ours(d.path());
    let data = d.join("data");
    let c = |extra: Value| conf("1.0.0", &data, ranges(&["10.77.0.0/24", "fd77::/64"]), extra);
    let a = run(&bin, "ADD", "c1", "eth0", "", &c(json!({})));
    let b = run(&bin, "ADD", "c2", "eth0", "", &c(json!({})));
    let (ips_a, ips_b) = (a.ips(), b.ips());
    let files = || -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(data.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
            .collect();
        v.sort();
        v
    };
    assert_eq!(files().len(), 4);
    // A prevResult naming c2's addresses for c1's DEL: c2's files stay, c1's go (by scan).
    let wrong = c(json!({"prevResult": b.json}));
    assert!(run(&bin, "DEL", "c1", "eth0", "", &wrong).ok);
    let left = files();
    assert_eq!(left.len(), 2, "{left:?}");
    for ip in &ips_b {
        assert!(
            left.contains(&ip.split('/').next().unwrap().to_string()),
            "{ip} kept: {left:?}"
        );
    }
    // c2's own prevResult: released directly.
    assert!(run(&bin, "DEL", "c2", "eth0", "", &c(json!({"prevResult": b.json}))).ok);
    assert!(files().is_empty());
    // A prevResult whose files are gone already: DEL still succeeds.
    assert!(run(&bin, "DEL", "c2", "eth0", "", &c(json!({"prevResult": b.json}))).ok);
    let _ = ips_a;
}

/// A node switched between the reference and cni-multi, back and forth: our index beside
/// the directory never hides what the reference wrote or removed, and the reference never
/// trips over anything of ours.
#[test]
fn swapped_node_sees_each_others_reservations_both_ways() {
    let t = tmp("swap");
    let ours = ours(t.path());
    let reference = Path::new(REFERENCE);
    let data = t.join("data");
    let c = conf("1.0.0", &data, ranges(&["10.1.0.0/29"]), json!({}));
    let add = |bin: &Path, cid: &str| run(bin, "ADD", cid, "eth0", "", &c);
    let del = |bin: &Path, cid: &str| run(bin, "DEL", cid, "eth0", "", &c);
    assert_eq!(add(&ours, "k1").ips(), ["10.1.0.2/29"]);
    assert_eq!(add(reference, "k2").ips(), ["10.1.0.3/29"]);
    // The reference's reservation is seen by our duplicate check and our allocator.
    let dup = add(&ours, "k2");
    assert!(
        !dup.ok && dup.json.to_string().contains("duplicate allocation"),
        "{}",
        dup.json
    );
    assert_eq!(add(&ours, "k3").ips(), ["10.1.0.4/29"]);
    // Ours are seen by the reference the same way.
    let dup = add(reference, "k3");
    assert!(
        !dup.ok,
        "reference accepted a duplicate of our reservation: {}",
        dup.json
    );
    // A release by the reference (a scan, no prevResult) frees it for us.
    assert!(del(reference, "k1").ok);
    assert!(!data.join("net").join("10.1.0.2").exists());
    assert!(
        del(&ours, "k2").ok,
        "our DEL without prevResult finds the reference's file"
    );
    assert!(!data.join("net").join("10.1.0.3").exists());
    assert_eq!(add(&ours, "k1").ips(), ["10.1.0.5/29"]);
    assert_eq!(add(reference, "k4").ips(), ["10.1.0.6/29"]);
    // Range full: both wrap to the freed addresses, ours first.
    assert_eq!(add(&ours, "k5").ips(), ["10.1.0.2/29"]);
    assert_eq!(add(reference, "k6").ips(), ["10.1.0.3/29"]);
    let full = add(&ours, "k7");
    assert!(!full.ok && full.json.to_string().contains("no IP addresses available"));
    assert_well_formed(&data.join("net"));
}
