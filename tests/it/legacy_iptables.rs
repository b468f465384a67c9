//! `pkg::legacy_iptables` on a legacy node (the node netns has `iptables-legacy -P FORWARD
//! DROP`; the reference plugins run with a PATH whose `iptables` is iptables-legacy): our plans
//! for ipMasq, portmap and the firewall leave x_tables exactly as the reference's ADD does
//! (IPv4 and IPv6, `iptables-legacy-save` compared line for line), our DEL removes the
//! reference's rules, the reference's DEL removes ours, and neither touches nf_tables.

use std::net::IpAddr;

use crate::common::legacy_rig::{self, LegacyPath};
use crate::common::rig::{Invocation, Outcome, TempDir, TestNs};
use cni_multi::linux::NetNs;
use cni_multi::pkg::legacy_iptables as legacy;
use ipnet::IpNet;
use serde_json::{json, Value};

const NET: &str = "legnet";
const CID: &str = "ctr-legacy-1";
const BRIDGE: &str = "cni-lg";

macro_rules! require {
    ($($p:expr),*) => {
        if !legacy_rig::require(module_path!(), &[$($p),*]) {
            return;
        }
    };
}

/// A legacy node with one dual-stack pod made by the reference bridge.
struct Node {
    node: TestNs,
    pod: TestNs,
    data: TempDir,
    result: Value,
}

fn bridge_conf(data: &TempDir, ipmasq: bool) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": BRIDGE,
        "isGateway": true, "ipMasq": ipmasq,
        "ipam": {"type": "host-local", "dataDir": data.as_str(),
                 "ranges": [[{"subnet": "10.97.0.0/24"}], [{"subnet": "fd97::/64"}]],
                 "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
    })
}

fn portmap_conf(prev: &Value) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": NET, "type": "portmap",
        "runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}
        ]},
        "prevResult": prev
    })
}

fn firewall_conf(prev: &Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": NET, "type": "firewall", "backend": "iptables", "prevResult": prev})
}

impl Node {
    fn new(tag: &str, path: &LegacyPath, ipmasq: bool) -> Node {
        let node = TestNs::new_node(&format!("{tag}-node"));
        let pod = TestNs::new_node(&format!("{tag}-pod"));
        let data = TempDir::new(tag);
        legacy_rig::forward_drop(&node);
        let mut n = Node {
            node,
            pod,
            data,
            result: Value::Null,
        };
        let out = n.reference("bridge", "ADD", &bridge_conf(&n.data, ipmasq), path);
        out.expect_ok();
        n.result = out.result().clone();
        n
    }

    fn reference(&self, plugin: &str, cmd: &str, conf: &Value, path: &LegacyPath) -> Outcome {
        Invocation::new(plugin, cmd)
            .container_id(CID)
            .pod(&self.pod)
            .config(conf)
            .in_node(&self.node)
            .path_env(&path.path())
            .run_reference()
    }

    fn ipnets(&self) -> Vec<IpNet> {
        self.result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().parse().unwrap())
            .collect()
    }

    fn ips(&self) -> Vec<IpAddr> {
        self.ipnets().iter().map(|n| n.addr()).collect()
    }

    /// The reference's portmap and firewall ADDs (after its bridge's).
    fn reference_add(&self, path: &LegacyPath) {
        self.reference("portmap", "ADD", &portmap_conf(&self.result), path)
            .expect_ok();
        self.reference("firewall", "ADD", &firewall_conf(&self.result), path)
            .expect_ok();
    }

    /// The reference's DEL of the whole chain, in reverse.
    fn reference_del(&self, path: &LegacyPath) {
        self.reference("firewall", "DEL", &firewall_conf(&self.result), path)
            .expect_ok();
        self.reference("portmap", "DEL", &portmap_conf(&self.result), path)
            .expect_ok();
        self.reference("bridge", "DEL", &bridge_conf(&self.data, true), path)
            .expect_ok();
    }

    /// Our plans, in the order a bridge → portmap → firewall chain runs them.
    fn our_add(&self) {
        let _in = NetNs::open(self.node.path()).unwrap().enter().unwrap();
        legacy::apply(&legacy::masq_add(NET, CID, &self.ipnets())).unwrap();
        let pm = legacy::Portmap {
            network: NET,
            container_id: CID,
            snat: true,
            masq_all: false,
            mark_bit: 13,
            external_setmark: None,
            conditions: None,
        };
        let maps = [
            legacy::HostPort {
                host_port: 8080,
                container_port: 80,
                proto: 6,
                host_ip: None,
            },
            legacy::HostPort {
                host_port: 5353,
                container_port: 53,
                proto: 17,
                host_ip: None,
            },
        ];
        for ip in self.ipnets() {
            legacy::apply(&[legacy::portmap_add(&pm, &maps, ip)]).unwrap();
        }
        legacy::apply(&legacy::firewall_add(&self.ips(), "CNI-ADMIN", None)).unwrap();
    }

    /// Our DELs, in reverse.
    fn our_del(&self) {
        let _in = NetNs::open(self.node.path()).unwrap().enter().unwrap();
        legacy::apply(&legacy::firewall_del(&self.ips())).unwrap();
        legacy::apply(&legacy::portmap_del(NET, CID)).unwrap();
        legacy::apply(&legacy::masq_del(NET, CID)).unwrap();
    }
}

#[test]
fn our_rules_are_the_references_and_each_del_removes_the_others() {
    require!("bridge", "portmap", "firewall");
    let path = LegacyPath::new();
    let theirs = Node::new("lg-ref", &path, true);
    theirs.reference_add(&path);
    // Our side: the same pod (the same addresses, from its own host-local), no ipMasq from
    // the reference bridge, then our plans.
    let ours = Node::new("lg-our", &path, false);
    assert_eq!(ours.ips(), theirs.ips());
    ours.our_add();
    let want = legacy_rig::all_saved(&theirs.node);
    for w in [
        "-j MASQUERADE",
        "-j DNAT --to-destination [fd97::2]:80",
        "-A CNI-FORWARD -s 10.97.0.2/32 -j ACCEPT",
    ] {
        assert!(want.contains(w), "the reference wrote no {w:?}:\n{want}");
    }
    assert_eq!(legacy_rig::all_saved(&ours.node), want);
    assert_eq!(legacy_rig::nft_ruleset(&ours.node).trim(), "", "nothing in nf_tables");
    // ADD again changes nothing.
    ours.our_add();
    assert_eq!(legacy_rig::all_saved(&ours.node), want);
    {
        let _in = NetNs::open(ours.node.path()).unwrap().enter().unwrap();
        legacy::check(&legacy::firewall_check_plan(&ours.ips(), "CNI-ADMIN")).unwrap();
    }

    // Each side's DEL on the other's rules.
    theirs.our_del();
    ours.reference_del(&path);
    let after = legacy_rig::all_saved(&theirs.node);
    assert_eq!(legacy_rig::all_saved(&ours.node), after);
    for gone in ["10.97.0.2", "fd97::2", "CNI-DN-", "name: \\\"legnet\\\""] {
        assert!(!after.contains(gone), "{gone:?} left after DEL:\n{after}");
    }
    // A firewall whose accepts went elsewhere is refused on such a node, by family.
    {
        let _in = NetNs::open(ours.node.path()).unwrap().enter().unwrap();
        let why = legacy::forward_drop_refusal(&ours.ips()[1..], "iptables-nft's tables")
            .unwrap()
            .unwrap();
        assert!(
            why.contains("legacy FORWARD policy is DROP") && why.contains("ip6tables-legacy -S"),
            "{why}"
        );
    }
    // The shared chains and the DROP policy stay, as with the reference.
    assert!(
        after.contains(":FORWARD DROP") && after.contains(":CNI-HOSTPORT-DNAT"),
        "{after}"
    );
    {
        let _in = NetNs::open(theirs.node.path()).unwrap().enter().unwrap();
        let e = legacy::check(&legacy::firewall_check_plan(&theirs.ips(), "CNI-ADMIN")).unwrap_err();
        assert!(e.to_string().contains("-d 10.97.0.2/32"), "{e}");
    }
}

#[test]
fn del_on_a_node_without_legacy_tables_registers_none() {
    require!();
    let ns = TestNs::new("lg-none");
    let _in = NetNs::open(ns.path()).unwrap().enter().unwrap();
    let ips: Vec<IpAddr> = vec!["10.97.0.2".parse().unwrap()];
    legacy::apply(&legacy::firewall_del(&ips)).unwrap();
    legacy::apply(&legacy::portmap_del(NET, CID)).unwrap();
    legacy::apply(&legacy::masq_del(NET, CID)).unwrap();
    assert!(legacy::attachment_ips(NET, CID).unwrap().is_empty());
    assert!(!legacy::forward_drops(cni_multi::linux::xtables::Family::V4).unwrap());
    assert_eq!(legacy::forward_drop_refusal(&ips, "nftables").unwrap(), None);
    for f in [
        cni_multi::linux::xtables::Family::V4,
        cni_multi::linux::xtables::Family::V6,
    ] {
        assert!(cni_multi::linux::xtables::registered(f).is_empty());
    }
}
