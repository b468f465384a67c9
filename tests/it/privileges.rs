//! The minimal capability set of each plugin (doc/privileges.md, `src/pkg/caps.rs`): run
//! under `setpriv` with exactly that bounding set (uid 0 then gets exactly those
//! capabilities), the plugin works; with any one of them missing, it fails with a CNI error
//! JSON naming the refused operation and leaves nothing behind. The pod's CNI_NETNS is a
//! `/proc/<pid>/ns/net` of a process with every capability (as runtimes without pinned
//! namespaces pass it), which is what needs CAP_SYS_PTRACE.

use crate::common::dhcp_rig::{DhcpRig, Server};
use crate::common::rig::*;
use crate::common::veth_rig::Impl;
use serde_json::{json, Value};
use std::os::unix::fs::DirBuilderExt;
use std::process::{Child, Command, Stdio};

const IN_POD: &[&str] = &["net_admin", "sys_admin", "sys_ptrace"];
const NODE_ONLY: &[&str] = &["net_admin"];
const NONE: &[&str] = &[];
/// tuning's backup directory has mode 0600, as the reference makes it.
const TUNING: &[&str] = &["net_admin", "sys_admin", "sys_ptrace", "dac_override"];

/// (plugin, its minimal set) as written down in doc/privileges.md.
const MINIMAL: &[(&str, &[&str])] = &[
    ("bridge", IN_POD),
    ("dummy", IN_POD),
    ("host-device", IN_POD),
    ("ipvlan", IN_POD),
    ("loopback", IN_POD),
    ("macvlan", IN_POD),
    ("ptp", IN_POD),
    ("tap", IN_POD),
    ("vlan", IN_POD),
    ("dhcp", NONE),
    ("host-local", NONE),
    ("static", NONE),
    ("bandwidth", IN_POD),
    ("firewall", NODE_ONLY),
    ("flannel", TUNING),
    ("portmap", NODE_ONLY),
    ("sbr", IN_POD),
    ("tuning", TUNING),
    ("vrf", IN_POD),
];

/// The set a plugin keeps.
fn minimal(plugin: &str) -> &'static [&'static str] {
    MINIMAL.iter().find(|(p, _)| *p == plugin).unwrap().1
}

/// What this test's config of `plugin` needs: its set, but for flannel (which keeps the
/// union of every delegate's) the set of its delegate here, bridge.
fn needed(plugin: &str) -> &'static [&'static str] {
    match plugin {
        "flannel" => minimal("bridge"),
        p => minimal(p),
    }
}

fn have_setpriv() -> bool {
    if std::path::Path::new("/usr/bin/setpriv").exists() {
        return true;
    }
    crate::common::rig::skip_or_fail("privileges", "needs setpriv (util-linux)")
}

/// The one wrapper script (written once: exec'ing a file just written races with other
/// test threads' forks, which may still hold its write descriptor: ETXTBSY). It runs the
/// plugin in a node netns through `setpriv` with only the given capabilities in the
/// bounding set and no inheritable or ambient ones: as uid 0 the plugin's permitted set is
/// then exactly those.
fn wrapper_script() -> &'static std::path::Path {
    static W: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let body = "#!/bin/sh\nnode=$CM_NODE set=$CM_SET bin=$CM_BIN extra=$CM_EXTRA\n\
                    unset CM_NODE CM_SET CM_BIN CM_EXTRA\n\
                    [ -n \"$bin\" ] || exit 0\n\
                    exec nsenter --net=\"$node\" -- setpriv --inh-caps=-all --ambient-caps=-all \
                    --bounding-set=\"$set\" $extra -- \"$bin\"\n";
        let w = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("privileges-wrap.sh");
        if std::fs::read_to_string(&w).ok().as_deref() != Some(body) {
            let tmp = w.with_extension(format!("{}", std::process::id()));
            std::fs::write(&tmp, body).unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &w).unwrap();
        }
        // Wait until no forked child still holds a write descriptor of it.
        while let Err(e) = Command::new(&w).env_clear().status() {
            assert_eq!(e.raw_os_error(), Some(26), "{}: {e}", w.display());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        w
    })
}

/// Run `inv` as plugin `bin` in `node` with only `caps` (`["all"]`: the bounding set as it
/// is); `extra` are more setpriv flags (e.g. `--no-new-privs`).
fn run_as(
    inv: &Invocation,
    node: &TestNs,
    caps: &[&str],
    extra: &str,
    bin: &std::path::Path,
    cni_path: &str,
) -> Outcome {
    let mut set = String::from("-all");
    for c in caps {
        set.push_str(&format!(",+{c}"));
    }
    if caps == ["all"] {
        set = "+all".into();
    }
    inv.clone()
        .env("CM_NODE", node.path_str())
        .env("CM_SET", &set)
        .env("CM_BIN", &bin.to_string_lossy())
        .env("CM_EXTRA", extra)
        .cni_path(cni_path)
        .in_root_ns()
        .run_binary(wrapper_script(), cni_path)
}

fn run_with_caps(inv: &Invocation, node: &TestNs, caps: &[&str], plugins: &PluginDir) -> Outcome {
    run_as(
        inv,
        node,
        caps,
        "",
        &plugins.plugin(inv.plugin_name()),
        plugins.as_str(),
    )
}

/// A process with every capability holding `ns`, so that `/proc/<pid>/ns/net` names it.
struct Holder(Child);

impl Holder {
    fn new(ns: &TestNs) -> Holder {
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path_str()))
            .args(["--", "sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let h = Holder(child);
        // nsenter enters the netns before it execs sleep: wait for that, then it stays.
        let want = std::fs::metadata(ns.path())
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        crate::common::rig::wait_until(
            || {
                let now = std::fs::metadata(h.path()).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
                let exe = std::fs::read_link(format!("/proc/{}/exe", h.0.id())).unwrap_or_default();
                now.ok() == Some(want) && exe.to_string_lossy().ends_with("sleep")
            },
            std::time::Duration::from_secs(10),
            "the holder to run sleep in the netns",
        );
        h
    }

    fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.0.id())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    // The lock, the round-robin cursor and host-local's index (a cache of the directory)
    // are no reservation.
    files.retain(|f| !f.ends_with("/lock") && !f.contains("/last_reserved_ip.") && !f.ends_with(".index"));
    files.sort();
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

/// Whether this kernel can make links of `kind` (probed in a throw-away netns).
fn kernel_has(kind: &str) -> bool {
    let ns = TestNs::new_node("caps-probe");
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
    let args: &[&str] = match kind {
        "dummy" => &["link", "add", "x0", "type", "dummy"],
        "vlan" => &["link", "add", "link", "up0", "name", "x0", "type", "vlan", "id", "5"],
        "ipvlan" => &["link", "add", "link", "up0", "name", "x0", "type", "ipvlan"],
        "vrf" => &["link", "add", "x0", "type", "vrf", "table", "10"],
        _ => return true,
    };
    ns.exec(&[&["ip"][..], args].concat()).status.success()
}

struct Case {
    node: TestNs,
    pod: TestNs,
    holder: Holder,
    data: TempDir,
    plugins: PluginDir,
}

impl Case {
    fn new() -> Case {
        let node = TestNs::new_node("caps-node");
        let pod = TestNs::new("caps-pod");
        let holder = Holder::new(&pod);
        let c = Case {
            node,
            pod,
            holder,
            data: TempDir::new("caps-data"),
            plugins: PluginDir::new(),
        };
        // tuning's backup directory as the reference (and tuning) make it: mode 0600.
        std::fs::DirBuilder::new()
            .mode(0o600)
            .create(c.data.join("tuning"))
            .unwrap();
        for d in ["ipam", "flannel"] {
            std::fs::create_dir(c.data.join(d)).unwrap();
        }
        // A parent for macvlan, ipvlan and vlan; a device for host-device.
        c.node
            .ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0p"]);
        c.node.ip(&["link", "set", "up0", "up"]);
        c.node
            .ip(&["link", "add", "hd0", "type", "veth", "peer", "name", "hd0p"]);
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
            "bridge" => base(
                json!({"bridge": "cmcap0", "isGateway": true, "ipMasq": true, "macspoofchk": true,
                                     "ipam": self.ipam()}),
            ),
            "ptp" => base(json!({"ipMasq": true, "ipam": self.ipam()})),
            "host-local" => base(json!({"ipam": self.ipam()})),
            "static" => base(json!({"ipam": {"type": "static", "addresses": [{"address": "10.85.0.9/24"}]}})),
            "loopback" => base(json!({})),
            "macvlan" => base(json!({"master": "up0", "ipam": self.ipam()})),
            "ipvlan" => base(json!({"master": "up0", "ipam": self.ipam()})),
            "vlan" => base(json!({"master": "up0", "vlanId": 5, "ipam": self.ipam()})),
            "dummy" => base(json!({"ipam": self.ipam()})),
            "host-device" => base(json!({"device": "hd0", "ipam": self.ipam()})),
            "tap" => base(json!({"owner": 1000, "group": 100, "mtu": 1400, "ipam": self.ipam()})),
            "flannel" => {
                std::fs::write(
                    self.data.join("subnet.env"),
                    "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n",
                )
                .unwrap();
                base(
                    json!({"subnetFile": self.data.join("subnet.env"), "dataDir": self.data.join("flannel"),
                            "ipam": {"dataDir": self.data.join("ipam")}, "delegate": {"bridge": "cmfl0"}}),
                )
            }
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
                    "vrf" => json!({"vrfname": "cmvrf0"}),
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
            .netns(self.holder.path())
            .container_id("capsc")
            .config(conf)
    }
}

fn refused(msg: &str) -> bool {
    let m = msg.to_lowercase();
    m.contains("operation not permitted") || m.contains("permission denied")
}

/// With exactly the minimal set ADD and DEL work (where the kernel has the link kind; where
/// it does not, ADD fails for that reason alone, past every permission check, and leaves
/// nothing); with each capability of it missing ADD fails with a CNI error JSON that names
/// the refused operation and leaves nothing.
fn check(plugins: &[&str]) {
    let mut report = Vec::new();
    for plugin in plugins {
        let caps = needed(plugin);
        let kernel = kernel_has(plugin);
        let c = Case::new();
        let conf = c.conf(plugin);
        let before = state(&c.node, &c.pod, &c.data);
        let a = run_with_caps(&c.inv("ADD", &conf), &c.node, caps, &c.plugins);
        if kernel {
            assert!(a.success(), "{plugin} with {caps:?}: ADD failed: {a}");
            let mut checked = conf.clone();
            checked["prevResult"] = a.result().clone();
            let k = run_with_caps(&c.inv("CHECK", &checked), &c.node, caps, &c.plugins);
            assert!(k.success(), "{plugin} with {caps:?}: CHECK failed: {k}");
            let d = run_with_caps(&c.inv("DEL", &conf), &c.node, caps, &c.plugins);
            assert!(d.success(), "{plugin} with {caps:?}: DEL failed: {d}");
            report.push(format!("{plugin} with {caps:?}: ADD, CHECK and DEL succeed"));
        } else {
            let msg = a.msg().unwrap_or("");
            assert!(
                !a.success() && a.code().is_some(),
                "{plugin}: this kernel lacks it: {a}"
            );
            assert!(!refused(msg), "{plugin} with {caps:?}: refused a permission: {a}");
            let diff = json_diff(&before, &state(&c.node, &c.pod, &c.data));
            assert!(diff.is_empty(), "{plugin} (kernel lacks it): left {diff:#?}\n{a}");
            report.push(format!(
                "{plugin} with {caps:?}: NOT RUN to success, this kernel lacks it ({msg})"
            ));
        }
        for missing in caps.iter() {
            let c = Case::new();
            let conf = c.conf(plugin);
            let before = state(&c.node, &c.pod, &c.data);
            let fewer: Vec<&str> = caps.iter().copied().filter(|x| x != missing).collect();
            let a = run_with_caps(&c.inv("ADD", &conf), &c.node, &fewer, &c.plugins);
            assert!(!a.success(), "{plugin} without {missing}: ADD should fail: {a}");
            let msg = a.msg().unwrap_or("");
            assert!(
                a.code().is_some() && refused(msg),
                "{plugin} without {missing}: a CNI error JSON naming the refusal: {a}"
            );
            let after = state(&c.node, &c.pod, &c.data);
            let diff = json_diff(&before, &after);
            assert!(diff.is_empty(), "{plugin} without {missing}: left {diff:#?}\n{a}");
            report.push(format!("{plugin} without {missing}: code {} {msg}", a.code().unwrap()));
        }
    }
    for r in report {
        eprintln!("{r}");
    }
}

#[test]
fn the_table_in_the_binary_is_the_documented_one_and_covers_every_plugin() {
    let mut names: Vec<&str> = cni_multi::plugins::names();
    names.sort();
    let mut documented: Vec<&str> = MINIMAL.iter().map(|(p, _)| *p).collect();
    documented.sort();
    assert_eq!(names, documented);
    for (p, want) in MINIMAL {
        let have: Vec<String> = cni_multi::plugins::lookup(p)
            .unwrap()
            .caps
            .iter()
            .map(|c| c.to_string().to_lowercase().trim_start_matches("cap_").to_string())
            .collect();
        assert_eq!(have, *want, "{p}");
    }
}

#[test]
fn interface_plugins_work_with_their_minimal_set_and_fail_cleanly_with_less() {
    if !require_root("interface_plugins_work_with_their_minimal_set_and_fail_cleanly_with_less") || !have_setpriv() {
        return;
    }
    check(&["bridge", "ptp", "macvlan", "host-device", "tap", "loopback"]);
}

#[test]
fn chained_plugins_work_with_their_minimal_set_and_fail_cleanly_with_less() {
    if !require_root("chained_plugins_work_with_their_minimal_set_and_fail_cleanly_with_less") || !have_setpriv() {
        return;
    }
    check(&["portmap", "firewall", "tuning", "bandwidth", "sbr"]);
}

#[test]
fn ipam_and_flannel_work_with_their_minimal_set_and_fail_cleanly_with_less() {
    if !require_root("ipam_and_flannel_work_with_their_minimal_set_and_fail_cleanly_with_less") || !have_setpriv() {
        return;
    }
    check(&["host-local", "static", "flannel"]);
}

/// dummy, ipvlan, vlan and vrf: this kernel (see doc/privileges.md) has none of them, so
/// only the failure paths are shown here; a kernel that has them runs them to success.
#[test]
fn plugins_of_missing_drivers_fail_cleanly_with_less() {
    if !require_root("plugins_of_missing_drivers_fail_cleanly_with_less") || !have_setpriv() {
        return;
    }
    check(&["dummy", "ipvlan", "vlan", "vrf"]);
}

/// The capability sets in /proc/<pid>/status (hex masks) by name: CapPrm, CapEff, CapBnd.
fn cap_sets(status: &str) -> std::collections::BTreeMap<String, u64> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let v = u64::from_str_radix(v.trim(), 16).ok()?;
            k.starts_with("Cap").then(|| (k.to_string(), v))
        })
        .collect()
}

fn mask(caps: &[&str]) -> u64 {
    caps.iter()
        .map(|c| match *c {
            "net_admin" => 1u64 << 12,
            "sys_ptrace" => 1 << 19,
            "sys_admin" => 1 << 21,
            other => panic!("no bit for {other}"),
        })
        .fold(0, |a, b| a | b)
}

/// A third-party IPAM is executed: it must start with what root normally has (the bounding
/// set), not with the few capabilities bridge kept, with and without no_new_privs (under
/// which exec would cap it at the parent's permitted set: bridge then lowers only its
/// effective set).
#[test]
fn an_executed_delegate_still_gets_roots_capabilities() {
    if !require_root("an_executed_delegate_still_gets_roots_capabilities") || !have_setpriv() {
        return;
    }
    let bounding = cap_sets(&std::fs::read_to_string("/proc/self/status").unwrap())["CapBnd"];
    for nnp in ["", "--no-new-privs"] {
        let c = Case::new();
        let rec = c.data.join("rec");
        let script = c.plugins.path().join("cm-rec-ipam");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n\
                 cat /proc/$PPID/status > {rec}.parent\ncat /proc/$$/status > {rec}.self\n\
                 echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.85.0.5/24\",\"gateway\":\"10.85.0.1\"}}]}}'\n",
                rec = rec.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        // bridge execs it: first wait out other threads' forks holding its write descriptor.
        while let Err(e) = Command::new(&script).env_clear().stdin(Stdio::null()).status() {
            assert_eq!(e.raw_os_error(), Some(26), "{}: {e}", script.display());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let conf = json!({"cniVersion": "1.0.0", "name": "capsnet", "type": "bridge", "bridge": "cmcap0",
                          "ipam": {"type": "cm-rec-ipam"}});
        let bridge = c.plugins.plugin("bridge");
        let a = run_as(
            &c.inv("ADD", &conf),
            &c.node,
            &["all"],
            nnp,
            &bridge,
            c.plugins.as_str(),
        );
        assert!(a.success(), "{nnp}: {a}");
        let parent = cap_sets(&std::fs::read_to_string(format!("{}.parent", rec.display())).unwrap());
        let child = cap_sets(&std::fs::read_to_string(format!("{}.self", rec.display())).unwrap());
        assert_eq!(
            parent["CapEff"],
            mask(IN_POD),
            "{nnp}: bridge's effective set: {parent:x?}"
        );
        let want_prm = if nnp.is_empty() { mask(IN_POD) } else { bounding };
        assert_eq!(parent["CapPrm"], want_prm, "{nnp}: bridge's permitted set: {parent:x?}");
        assert_eq!(child["CapEff"], bounding, "{nnp}: the executed IPAM's set: {child:x?}");
        assert_eq!(parent["CapBnd"], bounding, "{nnp}: the bounding set stays");
        let d = run_as(
            &c.inv("DEL", &conf),
            &c.node,
            &["all"],
            nnp,
            &bridge,
            c.plugins.as_str(),
        );
        assert!(d.success(), "{nnp}: {d}");
        eprintln!(
            "{} bridge CapEff {:x} CapPrm {:x}; executed IPAM CapEff {:x} (bounding {bounding:x})",
            if nnp.is_empty() { "plain:" } else { "no_new_privs:" },
            parent["CapEff"],
            parent["CapPrm"],
            child["CapEff"]
        );
    }
}

/// dhcp's plugin only talks to its daemon over a unix socket: it needs no capability, and
/// bridge's own set covers it as bridge's in-process IPAM delegate.
#[test]
fn dhcp_needs_nothing_and_bridges_set_covers_it_as_a_delegate() {
    if !require_root("dhcp_needs_nothing_and_bridges_set_covers_it_as_a_delegate") || !have_setpriv() {
        return;
    }
    let r = DhcpRig::new("cpdh", Impl::Ours, Server::Bridge);
    let pod = r.rig.pod("cpdh");
    let holder = Holder::new(&pod);
    let bin = r.rig.bin.as_str();
    let run = |plugin: &str, cmd: &str, conf: &Value, caps: &[&str]| {
        let inv = Invocation::new(plugin, cmd)
            .netns(holder.path())
            .container_id("capsdh")
            .config(conf);
        run_as(&inv, &r.rig.node, caps, "", &r.rig.bin.join(plugin), bin)
    };
    let conf = r.conf("1.0.0", json!({}));
    let a = run("bridge", "ADD", &conf, minimal("bridge"));
    assert!(a.success(), "bridge + dhcp with {:?}: {a}", minimal("bridge"));
    let ip = a.result()["ips"][0]["address"].as_str().unwrap().to_string();
    // The dhcp plugin itself on the interface bridge made: release, then a new lease.
    let dconf = json!({"cniVersion": "1.0.0", "name": conf["name"], "type": "dhcp", "ipam": conf["ipam"]});
    let d = run("dhcp", "DEL", &dconf, minimal("dhcp"));
    assert!(d.success(), "dhcp DEL with no capability: {d}");
    let a2 = run("dhcp", "ADD", &dconf, minimal("dhcp"));
    assert!(a2.success(), "dhcp ADD with no capability: {a2}");
    let ip2 = a2.result()["ips"][0]["address"].as_str().unwrap().to_string();
    let d = run("bridge", "DEL", &conf, minimal("bridge"));
    assert!(d.success(), "bridge + dhcp DEL: {d}");
    eprintln!(
        "bridge + dhcp with {:?}: lease {ip}; dhcp alone with []: lease {ip2}",
        minimal("bridge")
    );
}
