//! The firewall plugin on a firewalld node: firewalld (FirewallBackend=nftables) runs inside
//! the test's node netns on a private D-Bus system bus (`crate::common::firewalld_rig`). Its table
//! rejects forwarded traffic of addresses in no permissive zone, so a pod only has egress when
//! the firewall plugin put its address into zone `trusted`, as the reference does.
//!
//! Whole chains run through `cni-multi net` (our runtime) twice on the same node: once on the
//! reference plugins (`--path /usr/lib/cni`, exec'd, PATH with iptables), once on ours
//! (in-process, empty PATH). Both must give their pods the same traffic and the same sources in
//! the zone. Then DEL, GC, CHECK, and firewalld stopped.

use crate::common::firewalld_rig::{require_firewalld, FirewalldNode};
use crate::common::fw_rig::{tcp_ask, tcp_whoami, Site, OUTSIDE_IP, OUTSIDE_NODE_IP};
use crate::common::rig::{self, first_ip, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

/// podman's network list for `podman network create` (bridge -> portmap -> firewall with
/// `backend: ""` -> tuning), as captured in e2e/configs.
fn podman_list(name: &str, bridge: &str, subnet: &str, data: &str) -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/e2e/configs/podman-generated.conflist"
    ))
    .expect("e2e/configs/podman-generated.conflist");
    let json: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut list: Value = serde_json::from_str(&json).expect("the conflist is JSON");
    list["name"] = json!(name);
    let b = &mut list["plugins"][0];
    assert_eq!(b["type"], "bridge");
    b["bridge"] = json!(bridge);
    b["ipam"]["ranges"] = json!([[{"subnet": subnet}]]);
    b["ipam"]["dataDir"] = json!(data);
    let types: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["bridge", "portmap", "firewall", "tuning"]);
    assert_eq!(list["plugins"][2]["backend"], "");
    list
}

/// bridge (ipMasq) -> firewall with `backend` (`""` = unset).
fn bridge_firewall(name: &str, bridge: &str, subnet: &str, data: &str, backend: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "dataDir": data, "ranges": [[{"subnet": subnet}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "firewall", "backend": backend}
    ]})
}

/// The node: an outside host behind it (routing the pod subnets to the node) and firewalld.
struct Node {
    site: Site,
    fw: FirewalldNode,
    dir: PluginDir,
    tmp: TempDir,
}

/// Which plugins a run uses.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Impl {
    Reference,
    Ours,
}

impl Node {
    fn new(tag: &str) -> Node {
        let site = Site::new(tag);
        site.outside
            .ip(&["route", "add", "10.80.0.0/12", "via", OUTSIDE_NODE_IP]);
        let fw = FirewalldNode::start(&site.node);
        Node {
            site,
            fw,
            dir: PluginDir::new(),
            tmp: TempDir::new(&format!("{tag}-conf")),
        }
    }

    /// `cni-multi net VERB` of `list` for the pod `cid` in `pod` (none for gc), through `imp`'s
    /// plugins, firewalld's bus in the environment.
    fn net(&self, imp: Impl, verb: &str, list: &Value, pod: Option<&TestNs>, cid: &str, extra: &[&str]) -> Outcome {
        let conf = self.tmp.join(format!("{}.conflist", list["name"].as_str().unwrap()));
        std::fs::write(&conf, list.to_string()).unwrap();
        let cache = self.tmp.join("cache");
        let (path, path_env) = match imp {
            Impl::Ours => (self.dir.as_str(), ""),
            Impl::Reference => (rig::REFERENCE_DIR, rig::PLUGIN_PATH),
        };
        let mut argv = vec!["net", verb, "x"];
        if let Some(p) = pod {
            argv.push(p.path_str());
        }
        let (conf, cache) = (conf.to_str().unwrap(), cache.to_str().unwrap());
        argv.extend([
            "--conf",
            conf,
            "--cache-dir",
            cache,
            "--path",
            path,
            "--container-id",
            cid,
        ]);
        argv.extend(extra);
        Invocation::cli(&argv)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.fw.address)
            .env("CNI_MULTI_STATE_DIR", rig::state_dir())
            .in_node(&self.site.node)
            .path_env(path_env)
            .run_cli()
    }

    /// ADD of `list` for a fresh pod `cid` (host port `port` when the list has portmap).
    fn add(&self, imp: Impl, list: &Value, cid: &str, port: u16) -> Pod {
        let ns = TestNs::new_node(cid);
        let caps = json!({"portMappings": [{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]});
        let out = self.net(imp, "add", list, Some(&ns), cid, &["--cap-args", &caps.to_string()]);
        out.expect_ok();
        let ip = first_ip(out.json.as_ref().unwrap());
        let srv = tcp_whoami(&ns, 80, cid);
        Pod {
            ns,
            cid: cid.into(),
            ip,
            port,
            _srv: srv,
        }
    }

    /// `cni-multi inspect --json` over the lists and cache of this node's runs.
    fn inspect(&self) -> Value {
        let (conf, cache) = (self.tmp.as_str(), self.tmp.join("cache"));
        let argv = [
            "inspect",
            "--json",
            "--conf-dir",
            conf,
            "--cache-dir",
            cache.to_str().unwrap(),
            "--cni-path",
            self.dir.as_str(),
        ];
        let out = Invocation::cli(&argv)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.fw.address)
            .env("CNI_MULTI_STATE_DIR", rig::state_dir())
            .in_node(&self.site.node)
            .path_env("")
            .run_cli();
        // Exit status 1 says it found problems (the reference's pods' state); the report is
        // what matters here.
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("inspect --json ({e}): {out}"))
    }

    fn del(&self, imp: Impl, list: &Value, pod: &Pod) {
        self.net(imp, "del", list, Some(&pod.ns), &pod.cid, &[]).expect_ok();
    }

    /// What the pod can reach and who reaches it: [egress ping, egress TCP answered and seen
    /// from the node's uplink address (masqueraded), node -> pod, outside -> pod, outside ->
    /// host port].
    fn traffic(&self, pod: &Pod) -> [bool; 5] {
        let node = &self.site.node;
        [
            pod.ns.exec(&["ping", "-c1", "-W1", OUTSIDE_IP]).status.success(),
            tcp_ask(&pod.ns, OUTSIDE_IP, 7070) == format!("out {OUTSIDE_NODE_IP}"),
            tcp_ask(node, &pod.ip, 80).starts_with(&pod.cid),
            tcp_ask(&self.site.outside, &pod.ip, 80).starts_with(&pod.cid),
            pod.port != 0 && tcp_ask(&self.site.outside, OUTSIDE_NODE_IP, pod.port).starts_with(&pod.cid),
        ]
    }
}

struct Pod {
    ns: TestNs,
    cid: String,
    ip: String,
    port: u16,
    _srv: crate::common::fw_rig::Bg,
}

impl Pod {
    fn source(&self) -> String {
        format!("{}/32", self.ip)
    }
}

/// The firewalld records (under the tests' state dir) that name container `cid`.
fn records_naming(cid: &str) -> Vec<String> {
    let root = std::path::Path::new(rig::state_dir()).join("firewalld");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            if text.lines().any(|l| l == format!("container {cid}")) {
                out.push(f.path().display().to_string());
            }
        }
    }
    out
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// podman's default chain and bridge -> firewall, each through the reference and through ours
/// on the same firewalld node: the same traffic (egress included, which firewalld rejects for
/// a pod in no zone), the same sources in `trusted`; DEL takes each pod's source out.
#[test]
fn pods_get_the_references_traffic_on_a_firewalld_node() {
    if !require_firewalld("pods_get_the_references_traffic_on_a_firewalld_node") {
        return;
    }
    let n = Node::new("fwd-traffic");
    let _out = tcp_whoami(&n.site.outside, 7070, "out");
    let data = n.site.data.as_str();

    // Without the firewall plugin, firewalld rejects the pod's forwarded traffic.
    let bare = json!({"cniVersion": "1.0.0", "name": "bare", "plugins": [
        bridge_firewall("bare", "cni-fw0", "10.80.0.0/24", data, "")["plugins"][0].clone()]});
    let p0 = n.add(Impl::Ours, &bare, "fwd-bare", 0);
    assert_eq!(n.traffic(&p0)[..2], [false, false], "egress of a pod in no zone");

    let podman_ref = podman_list("podman-ref", "cni-fw1", "10.81.0.0/24", data);
    let podman_ours = podman_list("podman-ours", "cni-fw2", "10.82.0.0/24", data);
    let plain_ref = bridge_firewall("plain-ref", "cni-fw3", "10.83.0.0/24", data, "");
    let plain_ours = bridge_firewall("plain-ours", "cni-fw4", "10.84.0.0/24", data, "");
    let a_ref = n.add(Impl::Reference, &podman_ref, "fwd-podman-ref", 18081);
    let a_ours = n.add(Impl::Ours, &podman_ours, "fwd-podman-ours", 18082);
    let b_ref = n.add(Impl::Reference, &plain_ref, "fwd-plain-ref", 0);
    let b_ours = n.add(Impl::Ours, &plain_ours, "fwd-plain-ours", 0);

    let all = [&a_ref, &a_ours, &b_ref, &b_ours];
    assert_eq!(
        n.fw.sources("trusted"),
        sorted(all.iter().map(|p| p.source()).collect()),
        "each pod's address is in zone trusted"
    );
    // inspect names the firewalld node and, per attachment, the zone of its address.
    let report = n.inspect();
    assert_eq!(report["firewalld"], json!(n.fw.address), "{report:#}");
    for p in [&a_ref, &a_ours, &b_ref, &b_ours, &p0] {
        let a = report["networks"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| n["attachments"].as_array().unwrap())
            .find(|a| a["containerID"] == json!(p.cid))
            .unwrap_or_else(|| panic!("{} in {report:#}", p.cid));
        let want = if p.cid == p0.cid { "" } else { "trusted" };
        assert_eq!(a["firewalldZones"], json!([want]), "{}: {a:#}", p.cid);
        let layouts = a["ruleLayouts"].as_array().unwrap();
        assert_eq!(
            layouts.contains(&json!("firewalld")),
            want == "trusted",
            "{}: {a:#}",
            p.cid
        );
    }

    // firewalld lets the pods out (their sources are trusted) and lets replies and DNATed
    // connections in; a new connection from outside straight to a pod address is its call.
    let seen_ref = n.traffic(&a_ref);
    assert_eq!(
        [seen_ref[0], seen_ref[1], seen_ref[4]],
        [true, true, true],
        "podman chain, reference: egress and the host port"
    );
    assert_eq!(n.traffic(&a_ours), seen_ref, "podman chain, ours as the reference");
    let plain_ref_traffic = n.traffic(&b_ref);
    assert_eq!(plain_ref_traffic[..2], [true, true], "bridge -> firewall, reference");
    assert_eq!(
        n.traffic(&b_ours),
        plain_ref_traffic,
        "bridge -> firewall, ours as the reference"
    );
    // Our plugin wrote nothing of its own into the node's tables for these pods: firewalld's
    // zone is what lets them through.
    let rules = n.site.node.exec_ok(&["nft", "list", "ruleset"]);
    assert!(!rules.contains("cni_firewall"), "{rules}");
    let filter = n.site.node.exec_ok(&["iptables-save", "-t", "filter"]);
    for p in [&a_ours, &b_ours] {
        assert!(!filter.contains(&format!("{}/32", p.ip)), "{filter}");
    }

    // CHECK asks firewalld; a source taken out behind our back fails it, naming the address.
    n.net(Impl::Ours, "check", &podman_ours, Some(&a_ours.ns), &a_ours.cid, &[])
        .expect_ok();
    n.fw.cmd_ok(&["--zone=trusted", &format!("--remove-source={}", a_ours.source())]);
    let out = n.net(Impl::Ours, "check", &podman_ours, Some(&a_ours.ns), &a_ours.cid, &[]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr
            .contains(&format!("the address {} is in no zone", a_ours.source())),
        "{out}"
    );
    n.fw.cmd_ok(&["--zone=trusted", &format!("--add-source={}", a_ours.source())]);

    // DEL takes the pod's source out, and only that one, in either implementation.
    n.del(Impl::Ours, &podman_ours, &a_ours);
    n.del(Impl::Reference, &podman_ref, &a_ref);
    assert_eq!(n.fw.sources("trusted"), sorted(vec![b_ref.source(), b_ours.source()]));
    n.del(Impl::Ours, &plain_ours, &b_ours);
    n.del(Impl::Reference, &plain_ref, &b_ref);
    assert!(n.fw.sources("trusted").is_empty());
    // A second DEL is fine.
    n.del(Impl::Ours, &plain_ours, &b_ours);
}

/// GC removes the sources of attachments not in the valid list that cni-multi added, and
/// leaves a live attachment's and one another tool added.
#[test]
fn gc_removes_stale_sources_only() {
    if !require_firewalld("gc_removes_stale_sources_only") {
        return;
    }
    let n = Node::new("fwd-gc");
    let data = n.site.data.as_str();
    let list = bridge_firewall("gcnet", "cni-fg", "10.85.0.0/24", data, "");
    let other = bridge_firewall("gcother", "cni-fh", "10.86.0.0/24", data, "");
    let stale = n.add(Impl::Ours, &list, "fwd-gc-stale", 0);
    let live = n.add(Impl::Ours, &list, "fwd-gc-live", 0);
    let elsewhere = n.add(Impl::Ours, &other, "fwd-gc-other", 0);
    n.fw.cmd_ok(&["--zone=trusted", "--add-source=10.99.9.9/32"]);
    let valid = json!([{"containerID": live.cid, "ifname": "eth0"}]).to_string();
    n.net(Impl::Ours, "gc", &list, None, "x", &["--valid", &valid])
        .expect_ok();
    assert_eq!(
        n.fw.sources("trusted"),
        sorted(vec![live.source(), elsewhere.source(), "10.99.9.9/32".to_string()]),
        "{} was stale",
        stale.source()
    );
    // Once GC'd, its DEL still succeeds.
    n.del(Impl::Ours, &list, &stale);
}

/// firewalld stopped: `backend: "firewalld"` fails ADD with code 11 naming the bus, leaving
/// nothing; with `backend` unset ADD falls back to the rules of a node without firewalld;
/// DEL succeeds either way.
#[test]
fn firewalld_stopped() {
    if !require_firewalld("firewalld_stopped") {
        return;
    }
    let mut n = Node::new("fwd-stop");
    let data = n.site.data.as_str().to_string();
    let required = bridge_firewall("stopnet", "cni-fs", "10.87.0.0/24", &data, "firewalld");
    let before = n.add(Impl::Ours, &required, "fwd-stop-a", 0);
    assert_eq!(n.fw.sources("trusted"), vec![before.source()]);
    // The plugin as a runtime execs it, with only its own capabilities (CAP_NET_ADMIN): the
    // bus and firewalld go by the caller's uid, so that is enough. Both families.
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.87.0.98/24"}, {"address": "fd87::98/64"}]});
    let bus = n.fw.address.clone();
    let direct = |cmd: &str, backend: &str| {
        Invocation::new("firewall", cmd)
            .netns("/proc/1/ns/net")
            .env("CNI_NETNS_OVERRIDE", "1")
            .container_id("fwd-stop-direct")
            .config(&json!({"cniVersion": "1.0.0", "name": "stopnet", "type": "firewall",
                            "backend": backend, "prevResult": prev}))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus)
            .in_node(&n.site.node)
            .env("PATH", "")
            .run_ours_in(&n.dir)
    };
    direct("ADD", "firewalld").expect_ok();
    assert_eq!(records_naming("fwd-stop-direct").len(), 1, "ADD keeps what it bound");
    direct("CHECK", "firewalld").expect_ok();
    assert_eq!(
        n.fw.sources("trusted"),
        sorted(vec![before.source(), "10.87.0.98/32".into(), "fd87::98/128".into()])
    );
    direct("DEL", "firewalld").expect_ok();
    assert_eq!(n.fw.sources("trusted"), vec![before.source()]);
    assert_eq!(records_naming("fwd-stop-direct"), Vec::<String>::new());
    n.fw.stop_firewalld();

    // The plugin itself: code 11, naming the bus it tried, and nothing left of the ADD (no
    // record, no rule naming the addresses); DEL succeeds.
    let out = direct("ADD", "firewalld");
    out.expect_err(11);
    let msg = out.msg().unwrap_or_default();
    assert!(
        msg.contains(&n.fw.address) && msg.contains("firewalld is not running") && msg.contains("backend"),
        "{out}"
    );
    assert_eq!(records_naming("fwd-stop-direct"), Vec::<String>::new());
    for dump in [
        n.site.node.exec_ok(&["nft", "list", "ruleset"]),
        n.site.node.exec_ok(&["iptables-save"]),
        n.site.node.exec_ok(&["ip6tables-save"]),
    ] {
        assert!(!dump.contains("10.87.0.98") && !dump.contains("fd87::98"), "{dump}");
    }
    direct("DEL", "firewalld").expect_ok();
    direct("DEL", "").expect_ok();
    // In a chain, the runtime reports it; the chain's DEL then succeeds.
    let ns = TestNs::new_node("fwd-stop-b");
    let out = n.net(Impl::Ours, "add", &required, Some(&ns), "fwd-stop-b", &[]);
    assert!(!out.success() && out.stderr.contains(&n.fw.address), "{out}");
    n.net(Impl::Ours, "del", &required, Some(&ns), "fwd-stop-b", &[])
        .expect_ok();
    n.del(Impl::Ours, &required, &before);

    let auto = bridge_firewall("autonet", "cni-ft", "10.88.0.0/24", &data, "");
    let p = n.add(Impl::Ours, &auto, "fwd-stop-c", 0);
    let rules = n.site.node.exec_ok(&["nft", "list", "ruleset"]);
    assert!(rules.contains(&p.ip), "the fallback's rules name the pod:\n{rules}");
    n.del(Impl::Ours, &auto, &p);

    // firewalld back: it starts with an empty runtime zone, and ADD uses it again.
    n.fw.start_firewalld();
    assert!(n.fw.sources("trusted").is_empty());
    let q = n.add(Impl::Ours, &auto, "fwd-stop-d", 0);
    assert_eq!(n.fw.sources("trusted"), vec![q.source()]);
    n.del(Impl::Ours, &auto, &q);
}

/// The D-Bus conversation starts no thread: a whole podman chain ADD and DEL through our
/// runtime (every plugin in-process, tuning entering the pod's netns after the firewall's
/// calls) makes no clone() at all.
#[test]
fn dbus_calls_start_no_thread() {
    if !require_firewalld("dbus_calls_start_no_thread") {
        return;
    }
    assert!(
        rig::tool("strace").is_file() || !rig::in_ci(),
        "needs strace, and CI=true"
    );
    if !rig::tool("strace").is_file() {
        eprintln!("dbus_calls_start_no_thread: skipped: needs strace");
        return;
    }
    let n = Node::new("fwd-thr");
    let list = podman_list("thr", "cni-fw9", "10.89.0.0/24", n.site.data.as_str());
    let trace = n.tmp.join("trace");
    let wrapper = n.tmp.join("cni-multi");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} -f -qq -o {} -e trace=clone,clone3,fork,vfork {} \"$@\"\n",
            rig::tool("strace").display(),
            trace.display(),
            rig::ours_bin().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ns = TestNs::new_node("fwd-thr-pod");
    for verb in ["add", "del"] {
        let conf = n.tmp.join("thr.conflist");
        std::fs::write(&conf, list.to_string()).unwrap();
        let cache = n.tmp.join("cache");
        let argv = [
            "net",
            verb,
            "x",
            ns.path_str(),
            "--conf",
            conf.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--path",
            n.dir.as_str(),
            "--container-id",
            "fwd-thr",
        ];
        let out = Invocation::cli(&argv)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &n.fw.address)
            .env("CNI_MULTI_STATE_DIR", rig::state_dir())
            .in_node(&n.site.node)
            .path_env("")
            .run_binary(&wrapper, "");
        out.expect_ok();
        let t = std::fs::read_to_string(&trace).expect("strace wrote its trace");
        assert!(t.trim().is_empty(), "{verb}: the process cloned:\n{t}");
        if verb == "add" {
            assert_eq!(n.fw.sources("trusted").len(), 1, "the ADD went through firewalld");
        }
    }
    assert!(n.fw.sources("trusted").is_empty());
}

/// `firewalldZone`: a zone the node defines takes the pod; one firewalld does not know fails
/// ADD with code 7 naming the key, leaving nothing bound or recorded; DEL succeeds once the
/// zone is gone (deleted and firewalld reloaded).
#[test]
fn zones_unknown_and_gone() {
    if !require_firewalld("zones_unknown_and_gone") {
        return;
    }
    let n = Node::new("fwd-zone");
    n.fw.cmd_ok(&["--permanent", "--new-zone=cnipods"]);
    n.fw.cmd_ok(&["--reload"]);
    let data = n.site.data.as_str();
    let mut list = bridge_firewall("zonenet", "cni-fz", "10.90.0.0/24", data, "firewalld");
    list["plugins"][1]["firewalldZone"] = json!("cnipods");
    let p = n.add(Impl::Ours, &list, "fwd-zone-a", 0);
    assert_eq!(n.fw.sources("cnipods"), vec![p.source()]);
    assert!(n.fw.sources("trusted").is_empty());
    n.net(Impl::Ours, "check", &list, Some(&p.ns), &p.cid, &[]).expect_ok();

    // A zone firewalld does not know: code 7 naming firewalldZone; nothing of it stays.
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.90.0.77/24"}]});
    let out = Invocation::new("firewall", "ADD")
        .netns("/proc/1/ns/net")
        .env("CNI_NETNS_OVERRIDE", "1")
        .container_id("fwd-zone-bogus")
        .config(&json!({"cniVersion": "1.0.0", "name": "zonenet", "type": "firewall",
                        "backend": "firewalld", "firewalldZone": "nosuchzone", "prevResult": prev}))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &n.fw.address)
        .in_node(&n.site.node)
        .env("PATH", "")
        .run_ours_in(&n.dir);
    out.expect_err(7);
    assert!(
        out.msg().unwrap_or_default().contains("firewalldZone \"nosuchzone\""),
        "{out}"
    );
    assert_eq!(records_naming("fwd-zone-bogus"), Vec::<String>::new());
    let zone = n.fw.cmd(&["--get-zone-of-source=10.90.0.77/32"]);
    assert!(!zone.status.success(), "10.90.0.77/32 is in a zone: {zone:?}");

    // The zone deleted (a reload drops its runtime sources too): DEL still succeeds.
    n.fw.cmd_ok(&["--permanent", "--delete-zone=cnipods"]);
    n.fw.cmd_ok(&["--reload"]);
    n.del(Impl::Ours, &list, &p);
    assert_eq!(records_naming(&p.cid), Vec::<String>::new());
}
