//! The minimal capability set of each plugin (doc/privileges.md): run under `setpriv` with
//! exactly that bounding set (uid 0 then gets exactly those capabilities), the plugin works;
//! with any one of them missing, it fails with a CNI error JSON and leaves nothing behind.

mod common;

use common::rig::*;
use serde_json::{json, Value};

/// (plugin, its minimal set) as written down in doc/privileges.md.
const MINIMAL: &[(&str, &[&str])] = &[
    ("bridge", &["net_admin", "sys_admin"]),
    ("ptp", &["net_admin", "sys_admin"]),
    ("host-local", &[]),
    ("portmap", &["net_admin"]),
    ("firewall", &["net_admin"]),
    ("tuning", &["net_admin", "sys_admin"]),
    ("bandwidth", &["net_admin", "sys_admin"]),
    ("loopback", &["net_admin", "sys_admin"]),
    ("sbr", &["net_admin", "sys_admin"]),
];

fn minimal(plugin: &str) -> &'static [&'static str] {
    MINIMAL.iter().find(|(p, _)| *p == plugin).unwrap().1
}

/// Run `inv` in `node` through `setpriv` with only `caps` in the bounding set (and no
/// inheritable or ambient ones): as uid 0 the plugin's permitted set is then exactly `caps`.
fn run_with_caps(inv: &Invocation, node: &TestNs, caps: &[&str], plugins: &PluginDir) -> Outcome {
    let mut set = String::from("-all");
    for c in caps {
        set.push_str(&format!(",+{c}"));
    }
    let dir = TempDir::new("caps-wrap");
    let body = format!(
        "exec nsenter --net={} -- setpriv --inh-caps=-all --ambient-caps=-all --bounding-set={set} -- {}",
        node.path_str(),
        plugins.plugin(inv.plugin_name()).display()
    );
    let wrapper = script(&dir, "wrap.sh", &body);
    inv.clone()
        .cni_path(plugins.as_str())
        .in_root_ns()
        .run_binary(&wrapper, plugins.as_str())
}

/// Everything on the node and in the pod that a run may have made.
fn state(node: &TestNs, pod: &TestNs, data: &TempDir) -> Value {
    let links = |ns: &TestNs| -> Vec<Value> {
        ns.ip_json(&["-d", "link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| json!([l["ifname"], l["mtu"], l["flags"]]))
            .collect()
    };
    let mut files = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                walk(&e.path(), out);
            } else {
                out.push(e.path().display().to_string());
            }
        }
    }
    walk(data.path(), &mut files);
    // The lock and the allocator's round-robin hint are not state of one attachment.
    // The lock, the round-robin cursor and host-local's index (a cache of the directory)
    // are no reservation.
    files.retain(|f| !f.ends_with("/lock") && !f.contains("/last_reserved_ip.") && !f.ends_with(".index"));
    let qdiscs = node.exec_ok(&["tc", "qdisc", "show"]);
    json!({
        "node_links": links(node),
        "pod_links": links(pod),
        "ruleset": node.exec_ok(&["nft", "list", "ruleset"]),
        "files": files,
        "qdiscs": qdiscs,
        "pod_addrs": pod.ip(&["addr"]),
        "pod_rules": [pod.ip(&["-4", "rule"]), pod.ip(&["-6", "rule"])],
        "pod_routes": pod.ip(&["route", "show", "table", "all"]),
    })
}

struct Case {
    node: TestNs,
    pod: TestNs,
    data: TempDir,
    plugins: PluginDir,
}

impl Case {
    fn new() -> Case {
        let c = Case {
            node: TestNs::new_node("caps-node"),
            pod: TestNs::new("caps-pod"),
            data: TempDir::new("caps-data"),
            plugins: PluginDir::new(),
        };
        std::fs::create_dir(c.data.join("ipam")).unwrap();
        std::fs::create_dir(c.data.join("tuning")).unwrap();
        c
    }

    fn ipam(&self) -> Value {
        json!({"type": "host-local", "subnet": "10.85.0.0/24", "dataDir": self.data.join("ipam")})
    }

    /// The config for `plugin`; a chained plugin gets the prevResult of a bridge ADD made
    /// here with full privileges.
    fn conf(&self, plugin: &str) -> Value {
        let base = |extra: Value| {
            let mut c = json!({"cniVersion": "1.0.0", "name": "capsnet", "type": plugin});
            for (k, v) in extra.as_object().unwrap() {
                c[k] = v.clone();
            }
            c
        };
        match plugin {
            "bridge" => base(json!({"bridge": "cmcap0", "isGateway": true, "ipMasq": true, "ipam": self.ipam()})),
            "ptp" => base(json!({"ipMasq": true, "ipam": self.ipam()})),
            "host-local" => base(json!({"ipam": self.ipam()})),
            "loopback" => base(json!({})),
            _ => {
                let prev = Invocation::new("bridge", "ADD")
                    .pod(&self.pod)
                    .in_node(&self.node)
                    .container_id("capsc")
                    .config(&self.conf("bridge"))
                    .run_ours_in(&self.plugins);
                prev.expect_ok();
                let extra = match plugin {
                    "portmap" => json!({"runtimeConfig": {"portMappings": [
                        {"hostPort": 18100, "containerPort": 80, "protocol": "tcp"}]}}),
                    "tuning" => json!({"mtu": 1300, "promisc": true, "dataDir": self.data.join("tuning"),
                                       "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}),
                    "bandwidth" => json!({"ingressRate": 8000000, "ingressBurst": 80000,
                                          "egressRate": 8000000, "egressBurst": 80000}),
                    _ => json!({}),
                };
                let mut c = base(extra);
                c["prevResult"] = prev.result().clone();
                c
            }
        }
    }

    fn inv(&self, cmd: &str, conf: &Value) -> Invocation {
        Invocation::new(conf["type"].as_str().unwrap(), cmd)
            .pod(&self.pod)
            .container_id("capsc")
            .config(conf)
    }
}

#[test]
fn each_plugin_works_with_its_minimal_set_and_fails_cleanly_with_less() {
    if !require_root("each_plugin_works_with_its_minimal_set_and_fails_cleanly_with_less") {
        return;
    }
    if !std::path::Path::new("/usr/bin/setpriv").exists() {
        assert!(!in_ci(), "setpriv (util-linux) is needed");
        eprintln!("skipped: no setpriv");
        return;
    }
    let mut report = Vec::new();
    for (plugin, caps) in MINIMAL {
        // Exactly the minimal set: ADD and DEL work.
        let c = Case::new();
        let conf = c.conf(plugin);
        let a = run_with_caps(&c.inv("ADD", &conf), &c.node, caps, &c.plugins);
        assert!(a.success(), "{plugin} with {caps:?}: ADD failed: {a}");
        let d = run_with_caps(&c.inv("DEL", &conf), &c.node, caps, &c.plugins);
        assert!(d.success(), "{plugin} with {caps:?}: DEL failed: {d}");
        // Each one missing: a CNI error and the state exactly as before the ADD.
        for missing in caps.iter() {
            let c = Case::new();
            let conf = c.conf(plugin);
            let before = state(&c.node, &c.pod, &c.data);
            let fewer: Vec<&str> = caps.iter().copied().filter(|x| x != missing).collect();
            let a = run_with_caps(&c.inv("ADD", &conf), &c.node, &fewer, &c.plugins);
            assert!(!a.success(), "{plugin} without {missing}: ADD should fail: {a}");
            assert!(
                a.code().is_some() && !a.msg().unwrap_or("").is_empty(),
                "{plugin} without {missing}: a CNI error JSON: {a}"
            );
            let after = state(&c.node, &c.pod, &c.data);
            let diff = json_diff(&before, &after);
            assert!(diff.is_empty(), "{plugin} without {missing}: left {diff:#?}\n{a}");
            report.push(format!("{plugin} without {missing}: {}", a.msg().unwrap()));
        }
    }
    for r in report {
        eprintln!("{r}");
    }
    assert_eq!(minimal("host-local"), &[] as &[&str]);
}
