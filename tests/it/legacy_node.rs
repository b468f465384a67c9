//! A legacy node (iptables-legacy, x_tables) end to end: the test's node netns gets
//! `iptables-legacy -P FORWARD DROP` (both families) before or after ADD; a podman-like chain
//! bridge (ipMasq, dual-stack host-local) → portmap → firewall runs through `cni-multi net`
//! once with the reference plugins (PATH's `iptables` the legacy one) and once with ours (the
//! same PATH), each on its own identical node. Compared: pod egress, node → pod and host-port
//! traffic; `iptables-legacy-save` (nat and filter, v4 and v6) after ADD; our CHECK on both;
//! nothing of the pod left in x_tables or nf_tables after DEL; rollbacks both ways (our ADD,
//! the reference's DEL; the reference's ADD, our DEL and GC) leaving nothing; `cni-multi
//! inspect` naming the node's kind and each attachment's layout; and the firewall failing ADD,
//! with a message naming the legacy FORWARD policy, where its accepts would land outside
//! x_tables or cannot be written there.

use crate::common::fw_rig::{self, Site, OUTSIDE_IP, OUTSIDE_NODE_IP};
use crate::common::legacy_rig::{self, LegacyPath};
use crate::common::rig::{self, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

const NET: &str = "legnode";
const BRIDGE: &str = "cni-lgn";
const SUBNET4: &str = "10.98.0.0/24";
const SUBNET6: &str = "fd98::/64";

macro_rules! require {
    () => {
        if !legacy_rig::require(module_path!(), &["bridge", "host-local", "portmap", "firewall"])
            || !require_tools(module_path!())
        {
            return;
        }
    };
}

fn require_tools(test: &str) -> bool {
    for t in ["socat", "ping"] {
        if !rig::tool(t).is_file() {
            assert!(
                !rig::in_ci(),
                "{test}: needs {t}, and CI=true: failing instead of skipping"
            );
            eprintln!("{test}: skipped: needs {t}");
            return false;
        }
    }
    true
}

/// Who runs the plugins.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Reference,
    Ours,
}

/// One node (with its outside host), its conf and cache dirs, and the legacy PATH.
struct Node {
    site: Site,
    conf: TempDir,
    cache: TempDir,
    bin: PluginDir,
    path: LegacyPath,
}

impl Node {
    fn new(tag: &str) -> Node {
        let site = Site::new(tag);
        site.node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let n = Node {
            site,
            conf: TempDir::new(&format!("{tag}-conf")),
            cache: TempDir::new(&format!("{tag}-cache")),
            bin: PluginDir::new(),
            path: LegacyPath::new(),
        };
        let conflist = json!({
            "cniVersion": "1.0.0", "name": NET,
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "dataDir": n.site.data.as_str(),
                          "ranges": [[{"subnet": SUBNET4}], [{"subnet": SUBNET6}]],
                          "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}},
                {"type": "firewall"}
            ]
        });
        std::fs::write(n.conf.join("10-legnode.conflist"), conflist.to_string()).unwrap();
        n
    }

    fn cni_path(&self, who: Impl) -> String {
        match who {
            Impl::Reference => rig::REFERENCE_DIR.to_string(),
            Impl::Ours => self.bin.as_str().to_string(),
        }
    }

    /// `cni-multi net VERB legnode POD` with `who`'s plugins, PATH's iptables the legacy one.
    fn net(&self, verb: &str, who: Impl, cid: &str, pod: &TestNs) -> Outcome {
        let caps = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});
        Invocation::cli(&[
            "net",
            verb,
            NET,
            pod.path_str(),
            "--conf-dir",
            self.conf.as_str(),
            "--cache-dir",
            self.cache.as_str(),
            "--container-id",
            cid,
            "--cap-args",
            &caps.to_string(),
        ])
        .in_node(&self.site.node)
        .path_env(&self.path.path())
        .cni_path(&self.cni_path(who))
        .run_cli()
    }

    fn inspect(&self) -> Value {
        self.inspect_with(&self.path.path())
    }

    /// `cni-multi inspect --json` run with `path` as its PATH (which `iptables` it finds).
    fn inspect_with(&self, path: &str) -> Value {
        let o = Invocation::cli(&[
            "inspect",
            "--json",
            "--conf-dir",
            self.conf.as_str(),
            "--cache-dir",
            self.cache.as_str(),
            "--cni-path",
            self.bin.as_str(),
        ])
        .in_node(&self.site.node)
        .path_env(path)
        .run_cli();
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("inspect --json ({e}): {o}"))
    }

    fn x_tables(&self) -> String {
        legacy_rig::all_saved(&self.site.node)
    }

    fn nf_tables(&self) -> String {
        legacy_rig::nft_ruleset(&self.site.node)
    }
}

/// [egress to the outside (answered from the node's address), node → pod, host port from the
/// node, host port from the outside] for the pod at `ip`.
fn traffic(n: &Node, pod: &TestNs, ip: &str) -> [bool; 4] {
    let _out = fw_rig::tcp_whoami(&n.site.outside, 7070, "out");
    let _web = fw_rig::tcp_whoami(pod, 80, "pod");
    [
        fw_rig::tcp_ask(pod, OUTSIDE_IP, 7070) == format!("out {OUTSIDE_NODE_IP}"),
        n.site.node.exec(&["ping", "-c1", "-W2", ip]).status.success(),
        fw_rig::tcp_ask(&n.site.node, OUTSIDE_NODE_IP, 8080).starts_with("pod "),
        fw_rig::tcp_ask(&n.site.outside, OUTSIDE_NODE_IP, 8080).starts_with("pod "),
    ]
}

fn pod_ip(out: &Outcome) -> String {
    rig::first_ip(out.result())
}

/// One node per implementation, the DROP policy set before (or after) ADD: traffic and
/// x_tables after ADD, and what DEL leaves. Returns both nodes' [traffic] for the caller.
fn both(drop_before: bool) -> ([bool; 4], [bool; 4], Node, Node) {
    let tag = if drop_before { "lgb" } else { "lga" };
    let mut seen = Vec::new();
    for who in [Impl::Reference, Impl::Ours] {
        let n = Node::new(&format!("{tag}{}", who as u8));
        let pod = TestNs::new_node(&format!("{tag}-pod"));
        if drop_before {
            legacy_rig::forward_drop(&n.site.node);
        }
        let add = n.net("add", who, "ctr-lg-1", &pod);
        assert!(add.success(), "{who:?} ADD: {add}");
        if !drop_before {
            legacy_rig::forward_drop(&n.site.node);
        }
        let ip = pod_ip(&add);
        let t = traffic(&n, &pod, &ip);
        seen.push((n, pod, t));
    }
    let (ours, ours_pod, ours_t) = seen.pop().unwrap();
    let (theirs, theirs_pod, theirs_t) = seen.pop().unwrap();
    // The same rules in x_tables, nothing more in nf_tables.
    let want = theirs.x_tables();
    assert!(want.contains("-A CNI-FORWARD -s 10.98.0.2/32 -j ACCEPT"), "{want}");
    assert_eq!(ours.x_tables(), want);
    assert_eq!(ours.nf_tables(), theirs.nf_tables());
    // Our CHECK passes on both nodes: the rules are the same, whoever wrote them. (The
    // reference's own CHECK fails on its own dual-stack pod: 1.1.1's portmap looks for the IPv4
    // DNAT rules in the IPv6 table.)
    for (n, pod) in [(&theirs, &theirs_pod), (&ours, &ours_pod)] {
        let check = n.net("check", Impl::Ours, "ctr-lg-1", pod);
        assert!(check.success(), "our CHECK: {check}");
    }
    // DEL, each its own.
    for (n, who, pod) in [(&theirs, Impl::Reference, &theirs_pod), (&ours, Impl::Ours, &ours_pod)] {
        let del = n.net("del", who, "ctr-lg-1", pod);
        assert!(del.success(), "{who:?} DEL: {del}");
        let (x, nf) = (n.x_tables(), n.nf_tables());
        for gone in ["10.98.0.2", "fd98::2", "CNI-DN-", "ctr-lg-1"] {
            assert!(
                !x.contains(gone) && !nf.contains(gone),
                "{who:?}: {gone} left:\n{x}\n{nf}"
            );
        }
    }
    assert_eq!(ours.x_tables(), theirs.x_tables(), "after DEL");
    (theirs_t, ours_t, theirs, ours)
}

#[test]
fn legacy_forward_drop_before_add() {
    require!();
    let (theirs, ours, _, ours_node) = both(true);
    assert_eq!(
        ours, theirs,
        "[egress, node→pod, hostport from node, hostport from outside]"
    );
    assert!(
        theirs[0] && theirs[1] && theirs[2],
        "the reference's traffic: {theirs:?}"
    );

    // Rollback to the reference: our ADD, the reference's DEL, nothing left.
    let before = (ours_node.x_tables(), ours_node.nf_tables());
    let pod = TestNs::new_node("lgb-rb");
    let add = ours_node.net("add", Impl::Ours, "ctr-lg-2", &pod);
    assert!(add.success(), "{add}");
    let del = ours_node.net("del", Impl::Reference, "ctr-lg-2", &pod);
    assert!(del.success(), "{del}");
    assert_eq!((ours_node.x_tables(), ours_node.nf_tables()), before);
}

#[test]
fn legacy_forward_drop_after_add() {
    require!();
    let (theirs, ours, _, _) = both(false);
    assert_eq!(
        ours, theirs,
        "[egress, node→pod, hostport from node, hostport from outside]"
    );
    assert!(
        theirs[0] && theirs[1] && theirs[2],
        "the reference's traffic: {theirs:?}"
    );
}

#[test]
fn inspect_names_the_legacy_node_and_each_attachments_layout() {
    require!();
    for who in [Impl::Reference, Impl::Ours] {
        let n = Node::new(&format!("lgi{}", who as u8));
        legacy_rig::forward_drop(&n.site.node);
        let pod = TestNs::new_node("lgi-pod");
        let add = n.net("add", who, "ctr-lg-i", &pod);
        assert!(add.success(), "{who:?}: {add}");
        let r = n.inspect();
        assert_eq!(r["packetFilter"]["kind"], "iptables-legacy", "{who:?}: {r:#}");
        assert_eq!(r["packetFilter"]["legacyForwardDrop"], json!(["ip", "ip6"]), "{r:#}");
        let a = &r["networks"][0]["attachments"][0];
        assert_eq!(a["containerID"], "ctr-lg-i");
        assert_eq!(a["ruleLayouts"], json!(["iptables-legacy"]), "{who:?}: {r:#}");
        let kinds: Vec<&str> = r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["kind"].as_str())
            .collect();
        assert!(!kinds.contains(&"legacy-forward-drop"), "{who:?}: {r:#}");
    }
}

/// A node with a legacy FORWARD DROP whose iptables is iptables-nft (its tables exist, its
/// tool is the nft one): the firewall's accepts would go to iptables-nft's tables, where they
/// cannot override the legacy DROP; ours refuses the ADD naming the legacy FORWARD policy,
/// and inspect reports the node.
#[test]
fn firewall_refuses_accepts_that_a_legacy_drop_would_override() {
    require!();
    let n = Node::new("lgx");
    legacy_rig::forward_drop(&n.site.node);
    n.site.node.exec_ok(&["iptables-nft", "-t", "filter", "-L", "-n"]);
    n.site.node.exec_ok(&["iptables-nft", "-t", "nat", "-N", "OTHER"]);
    let pod = TestNs::new_node("lgx-pod");
    // Not the legacy PATH: the node's `iptables` is iptables-nft.
    let run = |verb: &str, who: Impl| {
        Invocation::cli(&[
            "net",
            verb,
            NET,
            pod.path_str(),
            "--conf-dir",
            n.conf.as_str(),
            "--cache-dir",
            n.cache.as_str(),
            "--container-id",
            "ctr-lg-x",
        ])
        .in_node(&n.site.node)
        .path_env(rig::PLUGIN_PATH)
        .cni_path(&n.cni_path(who))
        .run_cli()
    };
    let add = run("add", Impl::Ours);
    assert!(!add.success(), "{add}");
    let msg = add.stdout.clone() + &add.stderr;
    for w in ["legacy", "FORWARD", "DROP"] {
        assert!(
            msg.contains(w),
            "the error names the legacy FORWARD policy ({w}): {msg}"
        );
    }
    let r = n.inspect_with(rig::PLUGIN_PATH);
    assert_eq!(r["packetFilter"]["kind"], "iptables-nft", "{r:#}");
    assert!(
        r["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "legacy-forward-drop" && p["network"] == ""),
        "{r:#}"
    );
    let _ = run("del", Impl::Ours);
}

/// portmap alone (pods from the reference bridge without ipMasq), v4 and v6, with masqAll and
/// iptables-syntax conditions: ours writes into x_tables what the reference writes; CHECK
/// passes; each DEL removes the other's; GC removes a dead attachment's chain.
#[test]
fn portmap_on_a_legacy_node() {
    require!();
    let path = LegacyPath::new();
    let conf = |prev: &Value, extra: Value| {
        let mut c = json!({
            "cniVersion": "1.0.0", "name": NET, "type": "portmap",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
                {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "fd98::1"}
            ]},
            "prevResult": prev
        });
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // Debian's 1.1.1 predates masqAll: compared with it only without.
    let extras = [
        json!({"conditionsV4": ["-i", "out0", "-m", "comment", "--comment", "x"]}),
        json!({"masqAll": true}),
    ];
    for (i, extra) in extras.iter().enumerate() {
        let mut states = Vec::new();
        for who in [Impl::Reference, Impl::Ours] {
            let n = Node::new(&format!("lgp{i}{}", who as u8));
            legacy_rig::forward_drop(&n.site.node);
            let pod = TestNs::new_node("lgp-pod");
            let bridge = json!({
                "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": BRIDGE, "isGateway": true,
                "ipam": {"type": "host-local", "dataDir": n.site.data.as_str(),
                         "ranges": [[{"subnet": SUBNET4}], [{"subnet": SUBNET6}]]}
            });
            let run = |plugin: &str, verb: &str, c: &Value, who: Impl| {
                let inv = Invocation::new(plugin, verb)
                    .container_id("ctr-lg-p")
                    .pod(&pod)
                    .config(c)
                    .in_node(&n.site.node)
                    .path_env(&path.path());
                match who {
                    Impl::Reference => inv.run_reference(),
                    Impl::Ours => inv.run_ours_in(&n.bin),
                }
            };
            let prev = run("bridge", "ADD", &bridge, Impl::Reference);
            prev.expect_ok();
            let c = conf(prev.result(), extra.clone());
            if who == Impl::Reference && i == 1 {
                states.push(None);
                continue;
            }
            run("portmap", "ADD", &c, who).expect_ok();
            if who == Impl::Ours {
                run("portmap", "CHECK", &c, who).expect_ok();
            }
            states.push(Some((n.x_tables(), n.nf_tables(), c, n, pod)));
        }
        let ours = states.pop().unwrap().unwrap();
        let x = &ours.0;
        assert!(x.contains("-A CNI-HOSTPORT-DNAT -p tcp -m comment"), "{x}");
        assert!(x.contains("--to-destination [fd98::2]:90"), "{x}");
        assert!(!ours.1.contains("cni_hostport"), "nothing in nf_tables: {}", ours.1);
        if let Some(theirs) = states.pop().unwrap() {
            assert_eq!(ours.0, theirs.0, "x_tables with {extra}");
            // Each DEL on the other's rules.
            let del = |n: &Node, pod: &TestNs, c: &Value, who: Impl| {
                let inv = Invocation::new("portmap", "DEL")
                    .container_id("ctr-lg-p")
                    .pod(pod)
                    .config(c)
                    .in_node(&n.site.node)
                    .path_env(&path.path());
                match who {
                    Impl::Reference => inv.run_reference(),
                    Impl::Ours => inv.run_ours_in(&n.bin),
                }
                .expect_ok();
            };
            del(&theirs.3, &theirs.4, &theirs.2, Impl::Ours);
            del(&ours.3, &ours.4, &ours.2, Impl::Reference);
            let (a, b) = (theirs.3.x_tables(), ours.3.x_tables());
            assert_eq!(a, b, "after DEL");
            assert!(!a.contains("CNI-DN-") && !a.contains("ctr-lg-p"), "{a}");
        } else {
            // GC with no valid attachment removes ours (masqAll's), and only portmap's.
            let gc = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap",
                            "cni.dev/valid-attachments": [{"containerID": "other", "ifname": "eth0"}]});
            Invocation::new("portmap", "GC")
                .config(&gc)
                .in_node(&ours.3.site.node)
                .path_env("")
                .run_ours_in(&ours.3.bin)
                .expect_ok();
            let x = ours.3.x_tables();
            assert!(!x.contains("CNI-DN-") && x.contains(":CNI-HOSTPORT-DNAT"), "{x}");
        }
    }
}

/// The rollback the other way (the reference made the pods, cni-multi takes over): our DEL of
/// the reference's ADD leaves x_tables and nf_tables as the reference's own DEL would, and our
/// GC removes a dead pod's ipMasq and portmap chains (the firewall has no GC, as upstream's).
#[test]
fn our_del_and_gc_remove_the_references_pods() {
    require!();
    let n = Node::new("lgr");
    legacy_rig::forward_drop(&n.site.node);
    // The reference's own ADD and DEL first: the shared chains it leaves are the baseline.
    let pod = TestNs::new_node("lgr-pod");
    for (who, verb) in [(Impl::Reference, "add"), (Impl::Reference, "del")] {
        let o = n.net(verb, who, "ctr-lg-r0", &pod);
        assert!(o.success(), "{who:?} {verb}: {o}");
    }
    let before = (n.x_tables(), n.nf_tables());
    let add = n.net("add", Impl::Reference, "ctr-lg-r1", &pod);
    assert!(add.success(), "{add}");
    let ip = pod_ip(&add);
    let x = n.x_tables();
    assert!(
        x.contains("ctr-lg-r1") && x.contains("CNI-DN-") && x.contains(&ip),
        "{x}"
    );
    let del = n.net("del", Impl::Ours, "ctr-lg-r1", &pod);
    assert!(del.success(), "{del}");
    assert_eq!((n.x_tables(), n.nf_tables()), before, "our DEL of the reference's ADD");

    // GC: a pod the reference made, then lost by the runtime.
    let pod2 = TestNs::new_node("lgr-pod2");
    let add = n.net("add", Impl::Reference, "ctr-lg-r2", &pod2);
    assert!(add.success(), "{add}");
    let gc = |valid: Value| {
        for (plugin, extra) in [
            (
                "bridge",
                json!({"bridge": BRIDGE, "isGateway": true, "ipMasq": true,
                       "ipam": {"type": "host-local", "dataDir": n.site.data.as_str(),
                                "ranges": [[{"subnet": SUBNET4}], [{"subnet": SUBNET6}]]}}),
            ),
            ("portmap", json!({})),
        ] {
            let mut conf = json!({"cniVersion": "1.1.0", "name": NET, "type": plugin,
                                  "cni.dev/valid-attachments": valid.clone()});
            for (k, v) in extra.as_object().unwrap() {
                conf[k] = v.clone();
            }
            Invocation::new(plugin, "GC")
                .config(&conf)
                .unset("CNI_CONTAINERID")
                .unset("CNI_IFNAME")
                .in_node(&n.site.node)
                .path_env("")
                .run_ours_in(&n.bin)
                .expect_ok();
        }
    };
    let with_pod = n.x_tables();
    gc(json!([{"containerID": "ctr-lg-r2", "ifname": "eth0"}]));
    assert_eq!(n.x_tables(), with_pod, "GC with the pod valid");
    gc(json!([]));
    let x = n.x_tables();
    assert!(
        !x.contains("ctr-lg-r2") && !x.contains("CNI-DN-"),
        "GC left the pod's chains:\n{x}"
    );
    // What stays is the firewall's accepts, which its DEL (ours, without prevResult's help
    // from the gone chains: by the addresses) removes.
    let del = n.net("del", Impl::Ours, "ctr-lg-r2", &pod2);
    assert!(del.success(), "{del}");
    assert_eq!((n.x_tables(), n.nf_tables()), before, "after GC and DEL");
}

/// A firewall ADD on a legacy node whose accepts cannot be written into x_tables (here: the
/// xtables lock cannot be taken) fails with a message that names the legacy FORWARD policy,
/// and leaves no accept behind.
#[test]
fn firewall_add_that_cannot_write_x_tables_names_the_legacy_forward_policy() {
    require!();
    let n = Node::new("lgf");
    legacy_rig::forward_drop(&n.site.node);
    let before = n.x_tables();
    let conf = json!({
        "cniVersion": "1.0.0", "name": NET, "type": "firewall",
        "prevResult": {"cniVersion": "1.0.0",
                       "ips": [{"address": "10.98.0.9/24"}, {"address": "fd98::9/64"}]}
    });
    let pod = TestNs::new_node("lgf-pod");
    let add = Invocation::new("firewall", "ADD")
        .container_id("ctr-lg-f")
        .pod(&pod)
        .config(&conf)
        .in_node(&n.site.node)
        .path_env(&n.path.path())
        .env("XTABLES_LOCKFILE", "/nonexistent-cni-multi-test/xtables.lock")
        .run_ours_in(&n.bin);
    let msg = add.stdout.clone() + &add.stderr;
    assert!(!add.success(), "{add}");
    for w in [
        "legacy FORWARD policy is DROP",
        "iptables-legacy -S FORWARD",
        "ip6tables-legacy -S FORWARD",
        "xtables lock",
    ] {
        assert!(msg.contains(w), "the error names {w:?}: {add}");
    }
    assert_eq!(n.x_tables(), before, "nothing half-made");
}
