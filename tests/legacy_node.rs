//! A legacy node (iptables-legacy, x_tables) end to end: the test's node netns gets
//! `iptables-legacy -P FORWARD DROP`, and the reference plugins run with a PATH whose
//! `iptables` is the legacy one; ours run with the same PATH, each on its own identical node.

mod common;

use common::fw_rig::Site;
use common::legacy_rig::{self, LegacyPath};
use common::rig::{self, Invocation, PluginDir, TempDir, TestNs};
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
    bin: PluginDir,
}

impl Node {
    fn new(tag: &str) -> Node {
        let site = Site::new(tag);
        site.node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let n = Node {
            site,
            conf: TempDir::new(&format!("{tag}-conf")),
            bin: PluginDir::new(),
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

    fn x_tables(&self) -> String {
        legacy_rig::all_saved(&self.site.node)
    }

    fn nf_tables(&self) -> String {
        legacy_rig::nft_ruleset(&self.site.node)
    }
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
