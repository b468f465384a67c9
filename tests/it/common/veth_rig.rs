//! A rig for the veth plugins (bridge, ptp): a throw-away "node" netns where the plugin runs,
//! pod netns on demand, a temp CNI_PATH of symlinks and a temp IPAM data dir. Everything is
//! removed on drop, also when the test fails.

pub use super::rig::TempDir;
use super::rig::{Invocation, Outcome, TestNs};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// The reference plugins (Debian containernetworking-plugins 1.1.1).
pub const REFERENCE_DIR: &str = "/usr/lib/cni";
/// Our multicall binary (rig::ours_bin).
pub fn ours() -> PathBuf {
    super::rig::ours_bin()
}

/// Which implementation of bridge/ptp a rig runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Ours,
    Reference,
}

/// The outcome of one plugin run: the harness's [`Outcome`] (everything it has, by deref)
/// with the shorthands the veth tests use.
#[derive(Debug, Clone)]
pub struct Out(pub Outcome);

impl std::ops::Deref for Out {
    type Target = Outcome;
    fn deref(&self) -> &Outcome {
        &self.0
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Out {
    /// stdout as JSON; panics (printing the run) when it is not.
    pub fn json(&self) -> Value {
        self.0.result().clone()
    }
    /// The CNI error code of a failed run.
    pub fn code(&self) -> u64 {
        assert!(!self.success(), "expected failure, got {}", self.stdout);
        self.json()["code"].as_u64().unwrap()
    }
    /// The CNI error message; panics when stdout is not JSON.
    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_string()
    }
    #[track_caller]
    pub fn expect_ok(self) -> Self {
        assert!(self.success(), "plugin failed:\n{}", self.0);
        self
    }
}

pub struct Rig {
    pub node: TestNs,
    pub bin: TempDir,
    pub data: TempDir,
    pub imp: Impl,
}

impl Rig {
    pub fn new(prefix: &str, imp: Impl) -> Rig {
        let bin = TempDir::new(&format!("{prefix}-bin"));
        // Each side delegates to its own IPAM: ours in-process, the reference's executed.
        for p in ["bridge", "ptp", "host-local", "static"] {
            let target = match imp {
                Impl::Ours => ours(),
                Impl::Reference => Path::new(REFERENCE_DIR).join(p),
            };
            std::os::unix::fs::symlink(target, bin.join(p)).unwrap();
        }
        Rig {
            node: TestNs::new_node(&format!("{prefix}n")),
            bin,
            data: TempDir::new(&format!("{prefix}-data")),
            imp,
        }
    }

    pub fn pod(&self, prefix: &str) -> TestNs {
        TestNs::new_node(&format!("{prefix}p"))
    }

    /// An "outside" host on a node uplink `up0`: `node_ip`/24 on the node, `outside_ip`/24 on
    /// the host's `eth0`, and, with `route_back`, a default route back to the node (so it could
    /// answer pods' own addresses: only masquerading makes it see the node's).
    pub fn outside(&self, tag: &str, node_ip: &str, outside_ip: &str, route_back: bool) -> TestNs {
        let out = TestNs::new_node(tag);
        self.node.veth_to("up0", &out, "eth0");
        self.node.ip(&["addr", "add", &format!("{node_ip}/24"), "dev", "up0"]);
        self.node.ip(&["link", "set", "up0", "up"]);
        out.ip(&["addr", "add", &format!("{outside_ip}/24"), "dev", "eth0"]);
        out.ip(&["link", "set", "eth0", "up"]);
        if route_back {
            out.ip(&["route", "add", "default", "via", node_ip]);
        }
        out
    }

    /// Add a fake IPAM script `name` to CNI_PATH (for STATUS/GC delegation tests).
    pub fn add_script(&self, name: &str, body: &str) {
        let p = self.bin.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// host-local IPAM config with our data dir over `ranges` (each a subnet string or a
    /// full range object).
    pub fn host_local(&self, ranges: &[Value]) -> Value {
        let rs: Vec<Value> = ranges
            .iter()
            .map(|r| match r {
                Value::String(s) => json!([{ "subnet": s }]),
                other => json!([other]),
            })
            .collect();
        json!({"type": "host-local", "dataDir": self.data.path(), "ranges": rs})
    }

    /// Run `plugin` with `cmd` inside the node netns, CNI_PATH = the rig's bin dir.
    #[allow(clippy::too_many_arguments)]
    pub fn run(&self, plugin: &str, cmd: &str, conf: &Value, cid: &str, netns: &str, ifname: &str, args: &str) -> Out {
        let mut inv = Invocation::new(plugin, cmd)
            .container_id(cid)
            .netns(netns)
            .ifname(ifname)
            .args(args)
            .config(conf)
            .in_node(&self.node);
        // Our plugins get an empty PATH: they must not need iptables, nft, ip or anything else.
        if matches!(self.imp, Impl::Ours) {
            inv = inv.env("PATH", "");
        }
        Out(inv.run_binary(&self.bin.join(plugin), self.bin.as_str()))
    }

    pub fn add(&self, conf: &Value, cid: &str, pod: &TestNs, ifname: &str) -> Out {
        self.run(plugin_of(conf), "ADD", conf, cid, pod.path_str(), ifname, "")
    }

    pub fn del(&self, conf: &Value, cid: &str, netns: &str, ifname: &str) -> Out {
        self.run(plugin_of(conf), "DEL", conf, cid, netns, ifname, "")
    }

    /// CHECK with `prev` as prevResult.
    pub fn check(&self, conf: &Value, prev: &Value, cid: &str, pod: &TestNs, ifname: &str) -> Out {
        let mut c = conf.clone();
        c["prevResult"] = prev.clone();
        self.run(plugin_of(conf), "CHECK", &c, cid, pod.path_str(), ifname, "")
    }

    /// The IPAM reservations: file name -> content, without host-local's round-robin
    /// cursor (`last_reserved_ip.N`, which a released reservation legitimately moves) and lock.
    pub fn ipam_state(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        walk(self.data.path(), self.data.path(), &mut out);
        // host-local's `.<network>.index` beside the directory is a cache, not state.
        out.retain(|(n, _)| {
            let index = n.starts_with('.') && n.ends_with(".index");
            !(n.contains("last_reserved_ip") || n.ends_with("/lock") || index)
        });
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            let name = p.strip_prefix(root).unwrap().display().to_string();
            out.push((name, std::fs::read_to_string(&p).unwrap_or_default()));
        }
    }
}

pub fn plugin_of(conf: &Value) -> &str {
    conf["type"].as_str().expect("type")
}

/// A config of `plugin` with `extra` keys merged in.
pub fn conf(version: &str, name: &str, plugin: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": version, "name": name, "type": plugin});
    if let (Some(o), Value::Object(e)) = (c.as_object_mut(), extra) {
        o.extend(e);
    }
    c
}

/// Kernel state of a namespace, reduced to what must not change behind our back: links
/// (name, kind, master, flags, mtu, mac), addresses and routes of every table, without IPv6
/// link-local addresses and the link-local and multicast routes that come with them: the
/// kernel adds those to every link that comes up, on its own schedule (after DAD, on a loaded
/// machine seconds later), so they tell nothing of what a plugin made or removed (the links
/// themselves are compared).
/// The kernel state once it has settled: the kernel finishes some work asynchronously after a
/// link goes (carrier flags, addresses and routes), and a loaded machine shows it half done.
/// Two equal readings 50 ms apart with no IPv6 address still tentative count as settled: an
/// address's local route appears only once its duplicate address detection is over.
pub fn kernel_state(ns: &TestNs) -> Value {
    let mut last = kernel_state_once(ns);
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = kernel_state_once(ns);
        if now == last && !has_tentative_address(ns) {
            break;
        }
        last = now;
    }
    last
}

fn has_tentative_address(ns: &TestNs) -> bool {
    ns.ip_json(&["addr", "show"]).as_array().unwrap().iter().any(|l| {
        l["addr_info"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["tentative"] == json!(true)))
    })
}

fn kernel_state_once(ns: &TestNs) -> Value {
    let links: Vec<Value> = ns
        .ip_json(&["-d", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            json!({
                "ifname": l["ifname"], "kind": l["linkinfo"]["info_kind"], "master": l["master"],
                "flags": l["flags"], "mtu": l["mtu"], "address": l["address"],
            })
        })
        .collect();
    let addrs: Vec<Value> = ns
        .ip_json(&["addr", "show"])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            let name = l["ifname"].clone();
            l["addr_info"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|a| !a["local"].as_str().unwrap_or_default().starts_with("fe80:"))
                .map(move |a| json!([name, a["local"], a["prefixlen"], a["scope"]]))
        })
        .collect();
    let mut routes = Vec::new();
    for fam in ["-4", "-6"] {
        for r in ns.ip_json(&[fam, "route", "show", "table", "all"]).as_array().unwrap() {
            let dst = r["dst"].as_str().unwrap_or_default();
            if dst.starts_with("fe80:") || dst == "ff00::/8" || dst == "multicast" {
                continue;
            }
            routes.push(json!([
                r["dst"],
                r["gateway"],
                r["dev"],
                r["table"],
                r["scope"],
                r["prefsrc"]
            ]));
        }
    }
    json!({"links": links, "addrs": addrs, "routes": routes})
}

/// ping from `ns` to `dst` (v4 or v6), once, one second timeout.
pub fn ping(ns: &TestNs, dst: &str) -> bool {
    let mut cmd = vec!["ping", "-c1", "-W1"];
    if dst.contains(':') {
        cmd.push("-6");
    }
    cmd.push(dst);
    ns.exec(&cmd).status.success()
}

/// The address part of a result IP (`10.0.0.2/24` -> `10.0.0.2`).
pub fn addr_of(result: &Value, i: usize) -> String {
    let a = result["ips"][i]["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// A result with the random parts replaced: MACs, `vethXXXXXXXX` names, the netns path.
/// The Debian 1.1.1 reference prints `"dns": {}` in 1.x results, where the newer reference
/// and we omit an empty dns: that difference is removed too.
pub fn normalise_result(r: &Value) -> Value {
    let mut r = r.clone();
    if let Some(ifs) = r["interfaces"].as_array_mut() {
        for i in ifs {
            if i.get("mac").is_some() {
                i["mac"] = json!("MAC");
            }
            if i.get("sandbox").is_some() {
                i["sandbox"] = json!("NETNS");
            }
            let name = i["name"].as_str().unwrap_or_default().to_string();
            if name.len() == 12 && name.starts_with("veth") {
                i["name"] = json!("VETH");
            }
        }
    }
    if r["dns"] == json!({}) && !r["cniVersion"].as_str().unwrap_or_default().starts_with('0') {
        r.as_object_mut().unwrap().remove("dns");
    }
    r
}

fn veth_name(s: &Value) -> Value {
    match s.as_str() {
        Some(n) if n.len() == 12 && n.starts_with("veth") => json!("VETH"),
        _ => s.clone(),
    }
}

/// Addresses and routes of a namespace without the random parts (link-local addresses and
/// their routes, MACs, veth names) and without DAD flags (we skip DAD where the reference
/// runs it; after its wait the state is the same).
pub fn normalised_l3(ns: &TestNs) -> Value {
    let mut addrs = Vec::new();
    for l in ns.ip_json(&["addr", "show"]).as_array().unwrap() {
        for a in l["addr_info"].as_array().cloned().unwrap_or_default() {
            let local = a["local"].as_str().unwrap_or_default();
            if !local.starts_with("fe80") {
                addrs.push(json!([veth_name(&l["ifname"]), local, a["prefixlen"], a["scope"]]));
            }
        }
    }
    let mut routes = Vec::new();
    for fam in ["-4", "-6"] {
        for r in ns.ip_json(&[fam, "route", "show", "table", "all"]).as_array().unwrap() {
            let dst = r["dst"].as_str().unwrap_or_default();
            // IPv6 local/anycast routes appear when DAD ends: we add gateway addresses
            // without DAD, the reference's are still tentative right after its ADD.
            let v6_local = fam == "-6" && r["table"] == "local";
            if dst.starts_with("fe80") || dst.starts_with("ff00") || v6_local {
                continue;
            }
            routes.push(json!([
                dst,
                r["gateway"],
                veth_name(&r["dev"]),
                r["table"],
                r["scope"],
                r["prefsrc"],
                r["protocol"],
                r["metric"],
                r["type"]
            ]));
        }
    }
    addrs.sort_by_key(|v| v.to_string());
    routes.sort_by_key(|v| v.to_string());
    json!({"addrs": addrs, "routes": routes})
}

/// Links of a namespace: name (veths normalised), kind, master, flags, mtu, and the bridge
/// port flags that the plugins set.
pub fn normalised_links(ns: &TestNs) -> Value {
    let mut out: Vec<Value> = ns
        .ip_json(&["-d", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let slave = &l["linkinfo"]["info_slave_data"];
            json!([
                veth_name(&l["ifname"]),
                l["linkinfo"]["info_kind"],
                l["master"],
                l["flags"],
                l["mtu"],
                slave["hairpin"],
                slave["isolated"]
            ])
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    json!(out)
}
