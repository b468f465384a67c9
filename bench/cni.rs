//! `make bench`: the same CNI work through the reference plugins (/usr/lib/cni) and
//! through cni-multi, in the same run, alternating A/B, inside throw-away namespaces.
//! Prints a table (median and p10–p90 per side, ratio reference/cni-multi) and writes
//! the figures to target/bench/results.json.
//!
//! The harness runs plugins the way a runtime does: one process per plugin, the config
//! on stdin, prevResult chained, DEL in reverse with the final result. Each side gets its
//! own node netns, so the two never share a bridge, rules or addresses. The harness itself
//! enters that netns before spawning a plugin, so no nsenter/ip process is timed.
//!
//! Environment: CNI_MULTI_BIN (default target/cni-multi), BENCH_ITERS (default 30),
//! BENCH_OURS_DIR (another plugin dir in place of cni-multi, to check the harness),
//! BENCH_CASES (comma-separated label prefixes, e.g. 1,5a,7), BENCH_SCALE (default "0,250,1000"),
//! BENCH_OUT (the JSON file), BENCH_STRICT (exit 1 on any error: make bench-smoke),
//! BENCH_REFERENCE_DIR (another plugin dir in place of /usr/lib/cni, e.g. an older cni-multi),
//! BENCH_SIDES=ours (run only cni-multi's side: the reference's row reads "skipped"; for
//! iterating on case 7 at 1000 pods, where filling the reference's node takes minutes).

use cni_multi::linux::NetNs;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REFERENCE_DIR: &str = "/usr/lib/cni";

// ---- namespaces and temp dirs (removed on drop) -----------------------------------

struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!("bench-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} failed (are you root?)");
        let _ = Command::new("ip")
            .args(["-n", &name, "link", "set", "lo", "up"])
            .status();
        Ns { name }
    }
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
    fn ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("cni-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- running plugins like a runtime ----------------------------------------------

/// One implementation under test: where its plugins are and the node netns it runs in.
struct Side {
    name: &'static str,
    dir: PathBuf,
    node: Ns,
    node_fd: NetNs,
    state: Tmp,
}

impl Side {
    fn new(name: &'static str, dir: PathBuf) -> Side {
        let node = Ns::new(&format!("{name}-node"));
        let node_fd = NetNs::open(node.path()).expect("open node netns");
        let state = Tmp::new(name);
        Side {
            name,
            dir,
            node,
            node_fd,
            state,
        }
    }

    fn has(&self, plugin: &str) -> bool {
        self.dir.join(plugin).exists()
    }
}

#[derive(Clone)]
struct Attach {
    cid: String,
    netns: String,
    ifname: String,
}

/// Run one plugin process inside the side's node netns.
fn exec(side: &Side, ptype: &str, command: &str, config: &[u8], a: &Attach) -> Result<String, String> {
    let child = {
        let _guard = side.node_fd.enter().expect("enter node netns");
        Command::new(side.dir.join(ptype))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &a.cid)
            .env("CNI_NETNS", &a.netns)
            .env("CNI_IFNAME", &a.ifname)
            .env("CNI_PATH", &side.dir)
            .env("CNI_MULTI_STATE_DIR", &side.state.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    let mut child = child.map_err(|e| format!("spawn {ptype}: {e}"))?;
    let _ = child.stdin.take().unwrap().write_all(config);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{ptype} {command} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A network list and the capability arguments the runtime offers.
#[derive(Clone)]
struct Net {
    list: Value,
    caps: Value,
}

fn plugin_conf(net: &Net, plugin: &Value, prev: Option<&Value>) -> Vec<u8> {
    let mut o = plugin.as_object().unwrap().clone();
    o.insert("name".into(), net.list["name"].clone());
    o.insert("cniVersion".into(), net.list["cniVersion"].clone());
    if let Some(p) = prev {
        o.insert("prevResult".into(), p.clone());
    }
    let mut rc = serde_json::Map::new();
    if let Some(caps) = o.get("capabilities").and_then(Value::as_object) {
        for (k, on) in caps {
            if on.as_bool() == Some(true) {
                if let Some(v) = net.caps.get(k) {
                    rc.insert(k.clone(), v.clone());
                }
            }
        }
    }
    if !rc.is_empty() {
        o.insert("runtimeConfig".into(), Value::Object(rc));
    }
    serde_json::to_vec(&o).unwrap()
}

fn chain_add(side: &Side, net: &Net, a: &Attach) -> Result<Value, String> {
    let mut prev: Option<Value> = None;
    for p in net.list["plugins"].as_array().unwrap() {
        let out = exec(
            side,
            p["type"].as_str().unwrap(),
            "ADD",
            &plugin_conf(net, p, prev.as_ref()),
            a,
        )?;
        prev = Some(serde_json::from_str(&out).map_err(|e| format!("bad result {out:?}: {e}"))?);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn chain_del(side: &Side, net: &Net, a: &Attach, result: Option<&Value>) -> Result<(), String> {
    for p in net.list["plugins"].as_array().unwrap().iter().rev() {
        exec(
            side,
            p["type"].as_str().unwrap(),
            "DEL",
            &plugin_conf(net, p, result),
            a,
        )?;
    }
    Ok(())
}

/// Substitute the side's state dir into a network list.
fn net_for(side: &Side, template: &Value, caps: Value) -> Net {
    let s = template.to_string().replace("@STATE@", side.state.0.to_str().unwrap());
    Net {
        list: serde_json::from_str(&s).unwrap(),
        caps,
    }
}

// ---- statistics -------------------------------------------------------------------

#[derive(Default, Clone)]
struct Stats {
    samples: Vec<f64>, // milliseconds
    error: Option<String>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if s.is_empty() {
            return f64::NAN;
        }
        s[((s.len() - 1) as f64 * p).round() as usize]
    }
    fn median(&self) -> f64 {
        self.pct(0.5)
    }
    fn json(&self) -> Value {
        json!({
            "median_ms": self.median(), "p10_ms": self.pct(0.1), "p90_ms": self.pct(0.9),
            "p99_ms": self.pct(0.99), "n": self.samples.len(), "error": self.error,
        })
    }
    fn p50_p99(&self) -> String {
        if self.samples.is_empty() {
            return "-".into();
        }
        format!("{:.1}/{:.1}", self.median(), self.pct(0.99))
    }
}

/// One side's figures for a case: the whole ADD+DEL and each verb alone.
#[derive(Default, Clone)]
struct Timings {
    total: Stats,
    add: Stats,
    del: Stats,
}

impl Timings {
    fn json(&self) -> Value {
        json!({"add_del": self.total.json(), "add": self.add.json(), "del": self.del.json()})
    }
}

struct Row {
    case: String,
    reference: Timings,
    ours: Timings,
    baseline: Option<Stats>,
    /// ADD and DEL of the same kernel objects in one process over netlink.
    floor: Option<Timings>,
    note: String,
}

impl Row {
    fn skipped(case: &str, why: String) -> Row {
        Row {
            case: case.into(),
            reference: Timings::default(),
            ours: Timings::default(),
            baseline: None,
            floor: None,
            note: format!("skipped: {why}"),
        }
    }
    fn new(case: &str, [reference, ours]: [Timings; 2]) -> Row {
        Row {
            case: case.into(),
            reference,
            ours,
            baseline: None,
            floor: None,
            note: String::new(),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Time `f` (ADD, DEL) for each side in turn, alternating which side goes first.
fn ab(
    sides: &[&Side; 2],
    iters: usize,
    warmup: usize,
    mut f: impl FnMut(&Side, usize) -> Result<(Duration, Duration), String>,
) -> [Timings; 2] {
    let mut st = [Timings::default(), Timings::default()];
    if ours_only() {
        st[0].total.error = Some("skipped (BENCH_SIDES=ours)".into());
    }
    for i in 0..warmup + iters {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            if st[k].total.error.is_some() {
                continue;
            }
            match f(sides[k], i) {
                Ok((a, d)) if i >= warmup => {
                    st[k].add.samples.push(ms(a));
                    st[k].del.samples.push(ms(d));
                    st[k].total.samples.push(ms(a + d));
                }
                Ok(_) => {}
                Err(e) => st[k].total.error = Some(e),
            }
        }
    }
    st
}

// ---- the cases --------------------------------------------------------------------

fn bridge_list(ipmasq: bool, subnet: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [{
        "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": ipmasq,
        "ipam": {"type": "host-local", "subnet": subnet, "dataDir": "@STATE@/ipam"}
    }]})
}

fn podman_list() -> Value {
    json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "@STATE@/ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "tuning"}
    ]})
}

fn port_caps() -> Value {
    json!({"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}
    ]})
}

fn plugins_of(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap().to_string())
        .collect();
    if list.to_string().contains("host-local") {
        v.push("host-local".into());
    }
    v
}

fn missing(sides: &[&Side; 2], list: &Value) -> Option<String> {
    for s in sides {
        for p in plugins_of(list) {
            if !s.has(&p) {
                return Some(format!("{} has no {p} plugin", s.name));
            }
        }
    }
    None
}

/// Case 1–4: ADD then DEL of one pod through a list, per iteration.
fn case_add_del(sides: &[&Side; 2], pod: &[Ns; 2], list: &Value, caps: Value, iters: usize) -> [Timings; 2] {
    ab(sides, iters, 3, |side, i| {
        let k = if side.name == "reference" { 0 } else { 1 };
        let net = net_for(side, list, caps.clone());
        let a = Attach {
            cid: format!("bench-{i}"),
            netns: pod[k].path(),
            ifname: "eth0".into(),
        };
        let t = Instant::now();
        let r = chain_add(side, &net, &a)?;
        let add = t.elapsed();
        let t = Instant::now();
        chain_del(side, &net, &a, Some(&r))?;
        Ok((add, t.elapsed()))
    })
}

/// The floor: the kernel objects of a bridge ADD (veth pair with its peer made in the pod,
/// host end enslaved and up, pod address, up, default route) and DEL (the pod end deleted),
/// made by this process over netlink sockets it keeps open: no process start, no config.
fn floor(side: &Side, pod: &Ns, bridge: &str, iters: usize) -> Timings {
    use cni_multi::linux::netlink::{LinkKind, LinkSpec, Route, VethPeer};
    use cni_multi::linux::Netlink;
    use std::os::fd::AsFd;
    let mut st = Timings::default();
    let pod_fd = NetNs::open(pod.path()).expect("open pod netns");
    let (mut node, mut inpod) = match (Netlink::in_netns(&side.node_fd), Netlink::in_netns(&pod_fd)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            st.total.error = Some("netlink socket".into());
            return st;
        }
    };
    let made_bridge = match node.link_by_name(bridge) {
        Ok(Some(_)) => false,
        _ => {
            let _ = node.create_link(&LinkSpec::new(bridge, LinkKind::Bridge { vlan_filtering: None }).up());
            true
        }
    };
    let mut run = |i: usize| -> Result<(Duration, Duration), String> {
        let host = format!("vfl{i:07}");
        let e = |e: cni_multi::linux::Error| e.to_string();
        let t = Instant::now();
        let br = node.link_required(bridge).map_err(e)?.index;
        node.create_link(&LinkSpec::veth(&host, VethPeer::new("eth0").netns(pod_fd.as_fd())))
            .map_err(e)?;
        let h = node.link_required(&host).map_err(e)?.index;
        node.set_master(h, br).map_err(e)?;
        node.set_up(h).map_err(e)?;
        let p = inpod.link_required("eth0").map_err(e)?.index;
        inpod.add_addr(p, "10.77.0.5/16".parse().unwrap(), false).map_err(e)?;
        inpod.set_up(p).map_err(e)?;
        inpod
            .add_route(
                &Route::new("0.0.0.0/0".parse().unwrap())
                    .gw("10.77.0.1".parse().unwrap())
                    .oif(p),
            )
            .map_err(e)?;
        let add = t.elapsed();
        let t = Instant::now();
        inpod.delete_link(p).map_err(e)?;
        Ok((add, t.elapsed()))
    };
    for i in 0..iters + 3 {
        match run(i) {
            Ok((a, d)) if i >= 3 => {
                st.add.samples.push(ms(a));
                st.del.samples.push(ms(d));
                st.total.samples.push(ms(a + d));
            }
            Ok(_) => {}
            Err(e) => {
                st.total.error = Some(e);
                break;
            }
        }
    }
    if made_bridge {
        side.node.ip(&["link", "del", bridge]);
    }
    st
}

/// The same kernel objects as a bridge (or ptp) ADD+DEL, made by `ip -batch`: one
/// process per namespace and direction, the floor cni-multi is measured against.
fn baseline(side: &Side, pod: &Ns, ptp: bool, iters: usize) -> Stats {
    let mut st = Stats::default();
    side.node.ip(&["link", "add", "cni0", "type", "bridge"]);
    side.node.ip(&["addr", "add", "10.77.0.1/16", "dev", "cni0"]);
    side.node.ip(&["link", "set", "cni0", "up"]);
    let batch = |ns: &str, script: &str| -> bool {
        let mut c = Command::new("ip");
        if !ns.is_empty() {
            c.args(["-n", ns]);
        }
        let mut ch = c
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ch.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        ch.wait().map(|s| s.success()).unwrap_or(false)
    };
    for i in 0..iters + 3 {
        let host = format!("vethb{i:07}");
        let host_add = if ptp {
            format!(
                "link add {host} type veth peer name eth0 netns {}\nlink set {host} up\naddr add 10.77.0.1/32 dev {host}\nroute add 10.77.0.5/32 dev {host} scope host\n",
                pod.path()
            )
        } else {
            format!(
                "link add {host} type veth peer name eth0 netns {}\nlink set {host} master cni0 up\n",
                pod.path()
            )
        };
        let pod_add = if ptp {
            "addr add 10.77.0.5/16 dev eth0\nlink set eth0 up\nroute del 10.77.0.0/16 dev eth0\nroute add 10.77.0.1/32 dev eth0 scope link src 10.77.0.5\nroute add 10.77.0.0/16 via 10.77.0.1 dev eth0 src 10.77.0.5\n"
        } else {
            "addr add 10.77.0.5/16 dev eth0\nlink set eth0 up\nroute add default via 10.77.0.1 dev eth0\n"
        };
        let t = Instant::now();
        let ok = {
            let _g = side.node_fd.enter().unwrap();
            batch("", &host_add)
        } && batch(&pod.name, pod_add)
            && batch(&pod.name, "link del eth0\n");
        let d = t.elapsed();
        if !ok {
            st.error = Some("ip -batch failed".into());
            break;
        }
        if i >= 3 {
            st.samples.push(ms(d));
        }
    }
    side.node.ip(&["link", "del", "cni0"]);
    st
}

/// Case 5: host-local alone, on an empty range and on a 99% full one.
fn case_host_local(sides: &[&Side; 2], iters: usize, fill: usize) -> [Timings; 2] {
    let list = json!({"cniVersion": "1.0.0", "name": "hl", "plugins": [{"type": "host-local",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.90.0.0/22"}]], "dataDir": "@STATE@/hl"}}]});
    for s in sides {
        let _ = std::fs::remove_dir_all(s.state.0.join("hl"));
        let net = net_for(s, &list, json!({}));
        for j in 0..fill {
            let a = Attach {
                cid: format!("fill-{j}"),
                netns: "/nonexistent".into(),
                ifname: "eth0".into(),
            };
            chain_add(s, &net, &a).expect("pre-fill host-local");
        }
    }
    ab(sides, iters, 3, |side, i| {
        let net = net_for(side, &list, json!({}));
        let a = Attach {
            cid: format!("hl-{i}"),
            netns: "/nonexistent".into(),
            ifname: "eth0".into(),
        };
        let t = Instant::now();
        let r = chain_add(side, &net, &a)?;
        let add = t.elapsed();
        let t = Instant::now();
        chain_del(side, &net, &a, Some(&r))?;
        Ok((add, t.elapsed()))
    })
}

/// Case 6: 100 ADDs started at once, then 100 DELs: wall time, failures, duplicates.
fn case_concurrent(side: &Side, n: usize) -> (Timings, String) {
    let pods: Vec<Ns> = (0..n).map(|i| Ns::new(&format!("{}-c{i}", side.name))).collect();
    // Its own bridge: cni0 already carries the other cases' gateway address.
    let mut list = bridge_list(false, "10.91.0.0/16");
    list["plugins"][0]["bridge"] = json!("cni6");
    let net = net_for(side, &list, json!({}));
    let p = &net.list["plugins"][0];
    let spawn_all = |command: &str, results: Option<&[Option<Value>]>| -> Vec<std::process::Output> {
        let _g = side.node_fd.enter().unwrap();
        let children: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let conf = plugin_conf(&net, p, results.and_then(|r| r[i].as_ref()));
                let mut c = Command::new(side.dir.join("bridge"))
                    .env_clear()
                    .env("CNI_COMMAND", command)
                    .env("CNI_CONTAINERID", format!("conc-{i}"))
                    .env("CNI_NETNS", pod.path())
                    .env("CNI_IFNAME", "eth0")
                    .env("CNI_PATH", &side.dir)
                    .env("CNI_MULTI_STATE_DIR", &side.state.0)
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(&conf).unwrap();
                c
            })
            .collect();
        children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
    };
    let t = Instant::now();
    let adds = spawn_all("ADD", None);
    let add_time = t.elapsed();
    let results: Vec<Option<Value>> = adds.iter().map(|o| serde_json::from_slice(&o.stdout).ok()).collect();
    let failures = adds.iter().filter(|o| !o.status.success()).count();
    let first_error = adds
        .iter()
        .find(|o| !o.status.success())
        .map(|o| format!(" (first: {})", String::from_utf8_lossy(&o.stdout).replace('\n', " ")))
        .unwrap_or_default();
    let mut addrs: Vec<String> = results
        .iter()
        .flatten()
        .filter_map(|r| r["ips"][0]["address"].as_str().map(String::from))
        .collect();
    let total = addrs.len();
    addrs.sort();
    addrs.dedup();
    let t = Instant::now();
    let dels = spawn_all("DEL", Some(&results));
    let del_time = t.elapsed();
    let del_failures = dels.iter().filter(|o| !o.status.success()).count();
    let one = |d: Duration| Stats {
        samples: vec![ms(d)],
        error: None,
    };
    let st = Timings {
        total: one(add_time + del_time),
        add: one(add_time),
        del: one(del_time),
    };
    (
        st,
        format!(
            "{}: ADD {:.0} ms, DEL {:.0} ms, {failures} ADD / {del_failures} DEL failures, {} distinct of {total} addresses{first_error}",
            side.name,
            ms(add_time),
            ms(del_time),
            addrs.len()
        ),
    )
}

/// BENCH_SIDES=ours: the reference's side is not run.
fn ours_only() -> bool {
    std::env::var("BENCH_SIDES").is_ok_and(|s| s == "ours")
}

/// Case 7: ADD+DEL latency of one more pod when `n` pods are already attached.
fn case_scale(sides: &[&Side; 2], list: &Value, caps: Value, n: usize, iters: usize) -> ([Timings; 2], Timings) {
    // 50 interfaces per pod netns keeps namespace creation out of the way.
    let per = 50;
    let mut holders = Vec::new();
    let mut attached: Vec<(usize, Attach, Value)> = Vec::new();
    for (k, s) in sides.iter().enumerate() {
        if k == 0 && ours_only() {
            continue;
        }
        let net = net_for(s, list, caps.clone());
        for j in 0..n {
            if j % per == 0 {
                holders.push(Ns::new(&format!("{}-s{j}", s.name)));
            }
            let a = Attach {
                cid: format!("scale-{j}"),
                netns: holders.last().unwrap().path(),
                ifname: format!("e{}", j % per),
            };
            // Each pod maps different host ports, so rules accumulate as on a busy node.
            let mut net_j = net.clone();
            if let Some(pm) = net_j.caps.get_mut("portMappings").and_then(Value::as_array_mut) {
                for (m, e) in pm.iter_mut().enumerate() {
                    e["hostPort"] = json!(20000 + j * 2 + m);
                }
            }
            let r = chain_add(s, &net_j, &a).expect("attach background pod");
            attached.push((k, a, r));
        }
    }
    let pods = [Ns::new("ref-scale-pod"), Ns::new("ours-scale-pod")];
    let st = case_add_del(sides, &pods, list, caps.clone(), iters);
    // The kernel's own growth: the floor on our node, next to the n attached pods.
    let fl = floor(sides[1], &pods[1], "cni0", iters);
    for (k, a, r) in &attached {
        let net = net_for(sides[*k], list, caps.clone());
        let _ = chain_del(sides[*k], &net, a, Some(r));
    }
    (st, fl)
}

/// A child process killed on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Case 9: bridge + dhcp ADD+DEL against dnsmasq on the node's bridge `dh0`, each side with
/// its own `dhcp daemon` in its node netns (dnsmasq without its 3 s ping check, which is the
/// server's delay).
fn case_dhcp(sides: &[&Side; 2], pod: &[Ns; 2], iters: usize) -> Result<[Timings; 2], String> {
    let mut procs = Vec::new();
    for side in sides {
        side.node.ip(&["link", "add", "dh0", "type", "bridge"]);
        side.node.ip(&["addr", "add", "10.95.0.1/24", "dev", "dh0"]);
        side.node.ip(&["link", "set", "dh0", "up"]);
        let st = side.state.0.display().to_string();
        let _ = std::fs::remove_file(format!("{st}/dhcp.sock"));
        let spawn = |prog: &Path, args: &[String]| {
            let _guard = side.node_fd.enter().expect("enter node netns");
            Command::new(prog)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map(Kill)
                .map_err(|e| format!("start {}: {e}", prog.display()))
        };
        procs.push(spawn(
            Path::new("/usr/sbin/dnsmasq"),
            &[
                "--no-daemon".into(),
                "--conf-file=/dev/null".into(),
                "--user=root".into(),
                "--group=root".into(),
                "--interface=dh0".into(),
                "--bind-interfaces".into(),
                "--port=0".into(),
                "--no-ping".into(),
                "--dhcp-range=10.95.0.20,10.95.0.250,255.255.255.0,2m".into(),
                format!("--dhcp-leasefile={st}/dnsmasq.leases"),
            ],
        )?);
        procs.push(spawn(
            &side.dir.join("dhcp"),
            &["daemon".into(), "-socketpath".into(), format!("{st}/dhcp.sock")],
        )?);
        let end = Instant::now() + Duration::from_secs(10);
        while !Path::new(&format!("{st}/dhcp.sock")).exists() {
            if Instant::now() > end {
                return Err(format!("{}: dhcp daemon did not start", side.name));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let list = json!({"cniVersion": "1.0.0", "name": "benchdh", "plugins": [{
        "type": "bridge", "bridge": "dh0",
        "ipam": {"type": "dhcp", "daemonSocketPath": "@STATE@/dhcp.sock"}
    }]});
    let st = case_add_del(sides, pod, &list, json!({}), iters);
    drop(procs);
    for side in sides {
        side.node.ip(&["link", "del", "dh0"]);
    }
    Ok(st)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// A process's label and its peak RSS (KiB) on the reference side and on ours.
type RssPair = (String, [Option<u64>; 2]);

/// Peak RSS (KiB) of one loopback ADD, measured by /usr/bin/time.
fn peak_rss(side: &Side, plugin: &str, config: &Value, pod: &Ns) -> Option<u64> {
    peak_rss_as(side, plugin, "ADD", "rss", config.to_string().as_bytes(), pod).0
}

/// Peak RSS (KiB) of one plugin run under /usr/bin/time (ru_maxrss of the plugin process:
/// its anonymous memory and the pages of its binary it has mapped), and what it printed.
fn peak_rss_as(side: &Side, plugin: &str, cmd: &str, cid: &str, config: &[u8], pod: &Ns) -> (Option<u64>, String) {
    let run = || -> Option<std::process::Output> {
        let _g = side.node_fd.enter().unwrap();
        let mut c = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(side.dir.join(plugin))
            .env_clear()
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &side.dir)
            .env("CNI_MULTI_STATE_DIR", &side.state.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        c.stdin.take().unwrap().write_all(config).ok()?;
        c.wait_with_output().ok()
    };
    let Some(out) = run() else {
        return (None, String::new());
    };
    let rss = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok());
    (rss, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Peak RSS (KiB) of each plugin process of one chain ADD and of its DEL (each measured run
/// is the real one: an ADD's result feeds the next plugin and the DEL), labelled
/// "<plugin> ADD"/"<plugin> DEL"; then host-local alone (cni-multi's bridge runs it
/// in-process, the reference's as a process of its own).
fn chain_peak_rss(side: &Side, list: &Value, caps: Value, pod: &Ns) -> Vec<(String, Option<u64>)> {
    let net = net_for(side, list, caps);
    let cid = "rss-chain";
    let plugins = net.list["plugins"].as_array().unwrap();
    let mut out = Vec::new();
    let mut prev: Option<Value> = None;
    for p in plugins {
        let ptype = p["type"].as_str().unwrap();
        let conf = plugin_conf(&net, p, prev.as_ref());
        let (rss, stdout) = peak_rss_as(side, ptype, "ADD", cid, &conf, pod);
        out.push((format!("{ptype} ADD"), rss));
        prev = serde_json::from_str(&stdout).ok().or(prev);
    }
    for p in plugins.iter().rev() {
        let ptype = p["type"].as_str().unwrap();
        let conf = plugin_conf(&net, p, prev.as_ref());
        out.push((
            format!("{ptype} DEL"),
            peak_rss_as(side, ptype, "DEL", cid, &conf, pod).0,
        ));
    }
    let hl = json!({"cniVersion": "1.0.0", "name": "rss-hl", "type": "host-local",
        "ipam": {"type": "host-local", "subnet": "10.93.0.0/24",
                 "dataDir": side.state.0.join("rss-hl").to_str().unwrap()}});
    for cmd in ["ADD", "DEL"] {
        let rss = peak_rss_as(side, "host-local", cmd, "rss-hl", hl.to_string().as_bytes(), pod).0;
        out.push((format!("host-local {cmd}"), rss));
    }
    out
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("make bench needs root: it creates throw-away network namespaces");
        std::process::exit(1);
    }
    let bin = std::env::var("CNI_MULTI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/cni-multi"));
    let bin = std::fs::canonicalize(&bin).unwrap_or_else(|_| panic!("{} not found: run make build", bin.display()));
    let iters: usize = std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let only: Option<Vec<String>> = std::env::var("BENCH_CASES")
        .ok()
        .map(|s| s.split(',').map(String::from).collect());
    // A case is selected by a prefix of its label: BENCH_CASES=1,5a,7
    let want = |c: &str| {
        only.as_ref()
            .map(|o| o.iter().any(|x| c.starts_with(x.as_str())))
            .unwrap_or(true)
    };
    let scale: Vec<usize> = std::env::var("BENCH_SCALE")
        .unwrap_or_else(|_| "0,250,1000".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();

    let ours_dir = Tmp::new("plugins");
    let listed = Command::new(&bin).arg("list").output().expect("cni-multi list");
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if let Some(name) = line.split_whitespace().next() {
            std::os::unix::fs::symlink(&bin, ours_dir.0.join(name)).unwrap();
        }
    }
    // BENCH_OURS_DIR=/usr/lib/cni checks the harness itself (reference against itself).
    let ours_path = std::env::var("BENCH_OURS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| ours_dir.0.clone());
    // BENCH_REFERENCE_DIR: another plugin dir on the reference's side (e.g. an older
    // cni-multi, for an A/B of two builds in one run under the same load).
    let ref_dir = std::env::var("BENCH_REFERENCE_DIR").unwrap_or_else(|_| REFERENCE_DIR.into());
    let reference = Side::new("reference", PathBuf::from(ref_dir));
    let ours = Side::new("cni-multi", ours_path);
    let sides = [&reference, &ours];
    let pods = [Ns::new("ref-pod"), Ns::new("ours-pod")];
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    let run_list = |name: &str, list: Value, caps: Value, base: Option<bool>, rows: &mut Vec<Row>| {
        if !want(name) {
            return;
        }
        eprintln!("running {name} …");
        if let Some(why) = missing(&sides, &list) {
            rows.push(Row::skipped(name, why));
            return;
        }
        let mut row = Row::new(name, case_add_del(&sides, &pods, &list, caps, iters));
        row.baseline = base.map(|ptp| baseline(&ours, &pods[1], ptp, iters));
        if base == Some(false) {
            row.floor = Some(floor(&ours, &pods[1], "flr0", iters));
        }
        rows.push(row);
    };
    run_list(
        "1 bridge+host-local ADD+DEL",
        bridge_list(false, "10.88.0.0/16"),
        json!({}),
        Some(false),
        &mut rows,
    );
    run_list(
        "2 bridge ipMasq ADD+DEL",
        bridge_list(true, "10.88.0.0/16"),
        json!({}),
        None,
        &mut rows,
    );
    // Case 2 with the layout named: since the default follows the node (the iptables layout
    // where iptables is installed, as here), this keeps the nftables layout measured too. The
    // Debian 1.1.1 reference predates the key and ignores it (its iptables rules either way).
    let mut nft = bridge_list(true, "10.88.0.0/16");
    nft["plugins"][0]["ipMasqBackend"] = json!("nftables");
    run_list("2n bridge ipMasq, nftables layout", nft, json!({}), None, &mut rows);
    run_list(
        "3 ptp+host-local ADD+DEL",
        json!({"cniVersion": "1.0.0", "name": "bench", "plugins": [{"type": "ptp",
            "ipam": {"type": "host-local", "subnet": "10.89.0.0/16", "dataDir": "@STATE@/ipam"}}]}),
        json!({}),
        Some(true),
        &mut rows,
    );
    run_list(
        "4 bridge→portmap→tuning chain",
        podman_list(),
        port_caps(),
        None,
        &mut rows,
    );
    // portmap's other layout (the default is iptables on a node that has it); the reference
    // (1.1.1) has no backend key and stays on iptables.
    let mut nft = podman_list();
    nft["plugins"][1]["backend"] = json!("nftables");
    run_list(
        "4n bridge→portmap(nftables)→tuning chain",
        nft,
        port_caps(),
        None,
        &mut rows,
    );

    for (label, fill) in [
        ("5a host-local, empty range", 0),
        ("5b host-local, 99% full range", 1010),
    ] {
        if !want(label) {
            continue;
        }
        eprintln!("running {label} …");
        let hl = json!({"plugins": [{"type": "host-local"}]});
        if let Some(why) = missing(&sides, &hl) {
            rows.push(Row::skipped(label, why));
            continue;
        }
        rows.push(Row::new(label, case_host_local(&sides, iters, fill)));
    }

    let label = "6 100 concurrent ADDs + 100 DELs (wall)";
    if want(label) {
        eprintln!("running {label} …");
        match missing(&sides, &bridge_list(false, "x")) {
            Some(why) => rows.push(Row::skipped(label, why)),
            None => {
                let (r, rn) = case_concurrent(&reference, 100);
                let (o, on) = case_concurrent(&ours, 100);
                notes.push(rn);
                notes.push(on);
                rows.push(Row::new(label, [r, o]));
            }
        }
    }

    for n in &scale {
        let label = format!("7 one more pod with {n} attached");
        if !want(&label) {
            continue;
        }
        eprintln!("running {label} …");
        // With the firewall plugins built in, the background pods carry masquerade and
        // port-mapping rules, as on a busy node.
        let (list, caps) = if missing(&sides, &podman_list()).is_none() {
            (podman_list(), port_caps())
        } else {
            (bridge_list(false, "10.88.0.0/16"), json!({}))
        };
        match missing(&sides, &list) {
            Some(why) => rows.push(Row::skipped(&label, why)),
            None => {
                let (st, fl) = case_scale(&sides, &list, caps, *n, iters.min(10));
                let mut row = Row::new(&label, st);
                row.floor = Some(fl);
                rows.push(row);
            }
        }
    }

    let label = "9 bridge+dhcp ADD+DEL (dnsmasq, own daemon)";
    if want(label) {
        eprintln!("running {label} …");
        let why = if !Path::new("/usr/sbin/dnsmasq").exists() {
            Some("needs dnsmasq (dnsmasq-base)".to_string())
        } else {
            sides
                .iter()
                .find(|s| !s.has("dhcp"))
                .map(|s| format!("{} has no dhcp plugin", s.name))
        };
        let row = match why.map(Err).unwrap_or_else(|| case_dhcp(&sides, &pods, iters.min(10))) {
            Ok(st) => Row::new(label, st),
            Err(why) => Row::skipped(label, why),
        };
        rows.push(row);
    }

    // Case 8: footprint, and the peak RSS of every plugin of case 4's chain.
    let ref_total: u64 = std::fs::read_dir(REFERENCE_DIR)
        .map(|d| d.flatten().map(|e| file_size(&e.path())).sum())
        .unwrap_or(0);
    let ours_size = file_size(&bin);
    let lo = json!({"cniVersion": "1.0.0", "name": "rss", "type": "loopback"});
    let rss_ref = peak_rss(&reference, "loopback", &lo, &pods[0]);
    let rss_ours = peak_rss(&ours, "loopback", &lo, &pods[1]);
    // Case 8 also gives the peak RSS of every plugin process of case 4's chain and case 1's.
    let chains = [
        ("case 4's chain", podman_list(), port_caps()),
        ("case 1's", bridge_list(false, "10.88.0.0/16"), json!({})),
    ];
    let mut chain_rss: Vec<(&str, Vec<RssPair>)> = Vec::new();
    for (what, list, caps) in chains {
        if missing(&sides, &list).is_some() {
            continue;
        }
        let r = chain_peak_rss(&reference, &list, caps.clone(), &pods[0]);
        let o = chain_peak_rss(&ours, &list, caps, &pods[1]);
        let both = r
            .into_iter()
            .zip(o)
            .map(|((label, a), (_, b))| (label, [a, b]))
            .collect();
        chain_rss.push((what, both));
    }

    // ---- report ----
    println!(
        "\ncni-multi benchmark — {} iterations per side after 3 warm-up runs, A/B alternating",
        iters
    );
    println!("machine: {}", machine());
    println!(
        "{:<42} {:>20} {:>20} {:>6} {:>13} {:>13} {:>13} {:>14}",
        "case (ADD+DEL, median ms, p10–p90)",
        "reference",
        "cni-multi",
        "ratio",
        "ours ADD p50/99",
        "ours DEL p50/99",
        "floor ADD/DEL",
        "ip -batch"
    );
    let mut out_rows = Vec::new();
    for r in &rows {
        let fmt = |s: &Stats| match (&s.error, s.samples.is_empty()) {
            (Some(e), _) => format!("error: {}", e.chars().take(40).collect::<String>()),
            (None, true) => "-".to_string(),
            (None, false) => format!("{:.1} ({:.1}–{:.1})", s.median(), s.pct(0.1), s.pct(0.9)),
        };
        let ratio = r.reference.total.median() / r.ours.total.median();
        let base = r
            .baseline
            .as_ref()
            .map(|b| format!("{:.1} ({:.2}×)", b.median(), r.ours.total.median() / b.median()))
            .unwrap_or_default();
        let fl = r
            .floor
            .as_ref()
            .map(|f| format!("{:.1}/{:.1}", f.add.median(), f.del.median()))
            .unwrap_or_default();
        if r.note.is_empty() {
            println!(
                "{:<42} {:>20} {:>20} {:>5.1}× {:>13} {:>13} {:>13} {:>14}",
                r.case,
                fmt(&r.reference.total),
                fmt(&r.ours.total),
                ratio,
                r.ours.add.p50_p99(),
                r.ours.del.p50_p99(),
                fl,
                base
            );
        } else {
            println!("{:<42} {}", r.case, r.note);
        }
        out_rows.push(json!({
            "case": r.case, "reference": r.reference.json(), "cni_multi": r.ours.json(),
            "ratio": if ratio.is_finite() { json!(ratio) } else { Value::Null },
            "ip_batch": r.baseline.as_ref().map(|b| b.json()),
            "floor": r.floor.as_ref().map(|f| f.json()), "note": r.note,
        }));
    }
    // Case 7's growth: 0 pods against the largest scale, ours, the reference's and the floor's.
    let sc: Vec<&Row> = rows
        .iter()
        .filter(|r| r.case.starts_with("7 ") && r.note.is_empty())
        .collect();
    if let (Some(first), Some(last)) = (sc.first(), sc.last()) {
        if sc.len() > 1 {
            let g = |f: &dyn Fn(&Row) -> f64| f(last) / f(first);
            let line = format!(
                "7 growth {} → {}: reference ×{:.2}, cni-multi ×{:.2} (ADD ×{:.2}, DEL ×{:.2}), kernel floor ×{:.2}",
                first.case.trim_start_matches("7 one more pod with "),
                last.case.trim_start_matches("7 one more pod with "),
                g(&|r: &Row| r.reference.total.median()),
                g(&|r: &Row| r.ours.total.median()),
                g(&|r: &Row| r.ours.add.median()),
                g(&|r: &Row| r.ours.del.median()),
                g(&|r: &Row| r.floor.as_ref().map(|f| f.total.median()).unwrap_or(f64::NAN)),
            );
            println!("{line}");
            notes.push(line);
        }
    }
    for n in &notes {
        println!("  {n}");
    }
    let kib = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("?".into());
    println!(
        "8 footprint: cni-multi {:.2} MB vs {:.1} MB of reference binaries ({}); peak RSS of one loopback ADD: reference {} KiB, cni-multi {} KiB",
        ours_size as f64 / 1e6,
        ref_total as f64 / 1e6,
        REFERENCE_DIR,
        kib(rss_ref),
        kib(rss_ours)
    );
    for (what, rss) in &chain_rss {
        let parts: Vec<String> = rss
            .iter()
            .map(|(n, [r, o])| format!("{n} {}/{}", kib(*r), kib(*o)))
            .collect();
        println!(
            "  peak RSS of {what} processes, KiB reference/cni-multi: {}",
            parts.join(", ")
        );
    }
    let mut doc = BTreeMap::new();
    doc.insert("machine", json!(machine()));
    doc.insert("iterations", json!(iters));
    doc.insert("cases", json!(out_rows));
    doc.insert("notes", json!(notes));
    doc.insert(
        "footprint",
        json!({"cni_multi_bytes": ours_size, "reference_total_bytes": ref_total,
               "peak_rss_kib": {"reference": rss_ref, "cni_multi": rss_ours},
               "chain_peak_rss_kib": chain_rss.iter().map(|(what, rss)| json!({
                   "chain": what,
                   "processes": rss.iter()
                       .map(|(n, [r, o])| json!({"process": n, "reference": r, "cni_multi": o}))
                       .collect::<Vec<_>>()}))
                   .collect::<Vec<_>>()}),
    );
    let out = std::env::var("BENCH_OUT").unwrap_or_else(|_| "target/bench/results.json".into());
    let out = Path::new(&out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    println!("figures written to {}", out.display());
    // BENCH_STRICT (make bench-smoke): any error, any failed concurrent ADD/DEL, fails the run.
    if std::env::var_os("BENCH_STRICT").is_some() {
        let mut bad: Vec<String> = Vec::new();
        for r in &rows {
            let errs = [&r.reference.total, &r.ours.total]
                .into_iter()
                .chain(r.floor.as_ref().map(|f| &f.total))
                .chain(r.baseline.as_ref());
            for e in errs.filter_map(|s| s.error.as_ref()) {
                bad.push(format!("{}: {e}", r.case));
            }
        }
        bad.extend(
            notes
                .iter()
                .filter(|n| n.contains(" failures") && !n.contains(" 0 ADD / 0 DEL failures"))
                .cloned(),
        );
        if !bad.is_empty() {
            eprintln!("bench-smoke: {} problem(s):\n  {}", bad.len(), bad.join("\n  "));
            std::process::exit(1);
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{} × {cpu}, kernel {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        kernel.trim()
    )
}
