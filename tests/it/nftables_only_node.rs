//! The nftables-only branch of the default layout (#23, doc/firewall.md "How the layout is
//! chosen"), for real: the plugin runs where no `iptables` executable is visible (the rig's
//! `Invocation::without_iptables`: a private mount namespace with empty sbin and bin
//! directories) and the node netns has no iptables table. Then bridge and ptp `ipMasq` and the firewall with their backend unset write the
//! nftables layout (`inet cni_plugins_masquerade`, `inet cni_firewall`), and CHECK and DEL
//! follow it. The same runs with the tools visible write the iptables layout, and with the
//! tools hidden but iptables-nft's tables already in the netns, too (the kernel's state
//! decides first).

use crate::common::rig::{require_root, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};

struct Node {
    ns: TestNs,
    dir: PluginDir,
    tmp: TempDir,
    hide: bool,
}

impl Node {
    fn new(tag: &str, hide: bool) -> Node {
        let ns = TestNs::new_node(tag);
        ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Node {
            ns,
            dir: PluginDir::new(),
            tmp: TempDir::new(tag),
            hide,
        }
    }

    fn run(&self, inv: Invocation) -> Outcome {
        let inv = inv.in_node(&self.ns).env("PATH", "");
        if self.hide {
            inv.without_iptables().run_ours_in(&self.dir)
        } else {
            inv.run_ours_in(&self.dir)
        }
    }

    fn tables(&self) -> String {
        self.ns.exec_ok(&["nft", "list", "tables"])
    }
}

/// ADD, CHECK and DEL of `plugin` with ipMasq then the firewall, backends unset; returns the
/// tables after ADD.
fn chain(node: &Node, plugin: &str, subnet: &str) -> String {
    let pod = TestNs::new(&format!("{plugin}-nftonly"));
    let mut c = json!({"cniVersion": "1.0.0", "name": "nftonly", "type": plugin, "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": node.tmp.as_str(), "subnet": subnet}});
    if plugin == "bridge" {
        c["bridge"] = json!("cni-nftonly");
        c["isGateway"] = json!(true);
    }
    let inv = |p: &str, cmd: &str, conf: &Value| {
        Invocation::new(p, cmd)
            .container_id("ctr-nftonly")
            .pod(&pod)
            .config(conf)
    };
    let out = node.run(inv(plugin, "ADD", &c));
    out.expect_ok();
    let prev = out.result().clone();
    let fw = json!({"cniVersion": "1.0.0", "name": "nftonly", "type": "firewall", "prevResult": prev});
    node.run(inv("firewall", "ADD", &fw)).expect_ok();
    let tables = node.tables();
    node.run(inv("firewall", "CHECK", &fw)).expect_ok();
    let mut with_prev = c.clone();
    with_prev["prevResult"] = prev.clone();
    node.run(inv(plugin, "CHECK", &with_prev)).expect_ok();
    node.run(inv("firewall", "DEL", &fw)).expect_ok();
    node.run(inv(plugin, "DEL", &with_prev)).expect_ok();
    let ip = prev["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let rules = node.ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(!rules.contains(&ip), "{plugin}: DEL left rules of {ip}:\n{rules}");
    tables
}

#[test]
fn no_iptables_anywhere_means_the_nftables_layout() {
    if !require_root("no_iptables_anywhere_means_the_nftables_layout") {
        return;
    }
    for (plugin, subnet) in [("bridge", "10.66.0.0/24"), ("ptp", "10.67.0.0/24")] {
        let node = Node::new(&format!("nftonly-{plugin}"), true);
        let tables = chain(&node, plugin, subnet);
        assert!(
            tables.contains("table inet cni_plugins_masquerade") && tables.contains("table inet cni_firewall"),
            "{plugin}: {tables}"
        );
        assert!(
            !tables.contains("table ip nat") && !tables.contains("table ip filter"),
            "{plugin}: nothing of iptables' on a node without it:\n{tables}"
        );
    }
}

#[test]
fn visible_iptables_or_its_tables_mean_the_iptables_layout() {
    if !require_root("visible_iptables_or_its_tables_mean_the_iptables_layout") {
        return;
    }
    // The tool visible (this machine has iptables-nft in /usr/sbin), no table yet.
    let node = Node::new("nftonly-tool", false);
    let tables = chain(&node, "bridge", "10.68.0.0/24");
    assert!(
        tables.contains("table ip nat") && tables.contains("table ip filter"),
        "{tables}"
    );
    assert!(
        !tables.contains("cni_plugins_masquerade") && !tables.contains("cni_firewall"),
        "{tables}"
    );
    // The tool hidden, but iptables-nft's tables already in the netns: the kernel's state says
    // the node uses iptables.
    let node = Node::new("nftonly-tables", true);
    node.ns.exec_ok(&["iptables", "-t", "nat", "-N", "SOMEONE-ELSES"]);
    let tables = chain(&node, "bridge", "10.69.0.0/24");
    assert!(
        tables.contains("table ip nat") && tables.contains("table ip filter"),
        "{tables}"
    );
    assert!(
        !tables.contains("cni_plugins_masquerade") && !tables.contains("cni_firewall"),
        "{tables}"
    );
}
