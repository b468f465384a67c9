//! The Kubernetes network model on a simulated three-node flannel cluster (see
//! tests/it/common/cluster.rs): every pod reaches every pod by its own address, a node reaches
//! its pods, and with FLANNEL_IPMASQ=false the delegate's ipMasq hides pods behind the node
//! for the outside. Pods are added and deleted through our flannel plugin.
//!
//! `make cluster-demo` runs this with --nocapture: the report below is the demo.

use crate::common::cluster::{ask_peer, start_peer_echo, Cluster, Node, Pod};
use crate::common::rig::*;

const PORT: u16 = 5000;

#[derive(Default)]
struct Report {
    lines: Vec<String>,
    failures: usize,
}

impl Report {
    fn section(&mut self, title: &str) {
        self.lines.push(String::new());
        self.lines.push(format!("== {title}"));
    }

    fn info(&mut self, s: String) {
        self.lines.push(format!("   {s}"));
    }

    fn check(&mut self, what: &str, ok: bool, detail: String) {
        if !ok {
            self.failures += 1;
        }
        self.lines
            .push(format!("{} {what}: {detail}", if ok { " ✓" } else { " ✗" }));
    }

    /// `from` asks the echo at `to_ip`; it must see `want` (None: no answer expected).
    fn traffic(&mut self, what: &str, from: &TestNs, to_ip: &str, want: Option<&str>) {
        let seen = ask_peer(from, to_ip, PORT);
        let detail = match (&seen, want) {
            (Some(s), _) => format!("{to_ip} saw source {s} (expected {})", want.unwrap_or("no answer")),
            (None, _) => format!("no answer from {to_ip} (expected {})", want.unwrap_or("no answer")),
        };
        self.check(what, seen.as_deref() == want, detail);
    }

    fn print(&self) {
        println!("{}", self.lines.join("\n"));
        println!();
        println!(
            "{}",
            if self.failures == 0 {
                "all checks passed".to_string()
            } else {
                format!("{} check(s) FAILED", self.failures)
            }
        );
    }
}

fn add(c: &Cluster, node: &Node, name: &str, r: &mut Report) -> Option<Pod> {
    match c.add_pod(node, name) {
        Ok(p) => {
            r.check(
                &format!("ADD pod {name} on node{}", node.index),
                p.ip.starts_with(&format!("10.244.{}.", node.index)),
                format!("got {} (node subnet {})", p.ip, node.subnet),
            );
            Some(p)
        }
        Err(o) => {
            r.check(
                &format!("ADD pod {name} on node{}", node.index),
                false,
                format!("\n{o}"),
            );
            None
        }
    }
}

fn links_of_kind(ns: &TestNs, kind: &str) -> Vec<String> {
    ns.ip_json(&["-d", "link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == kind)
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Reservation files host-local keeps per address (not its lock / last_reserved_ip files).
fn reservations(node: &Node) -> Vec<String> {
    std::fs::read_dir(node.ipam_data_dir().join("cbr0"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

fn saved_configs(node: &Node) -> usize {
    std::fs::read_dir(node.flannel_data_dir())
        .map(|d| d.count())
        .unwrap_or(0)
}

fn scenario(r: &mut Report) {
    r.section("cluster: underlay bridge 10.250.0.0/24, pods 10.244.0.0/16, flannel.1 vxlan (vni 1, port 8472)");
    let c = Cluster::new(3, true);
    r.info("delegates: cni-multi bridge + host-local, in-process".to_string());
    for n in &c.nodes {
        r.info(format!(
            "node{}: underlay {}  subnet {}  flannel.1 {}",
            n.index, n.underlay_ip, n.subnet, n.vtep_mac
        ));
    }
    r.info(format!("outside host: {} (no route to the pod network)", c.outside_ip));

    r.section("FLANNEL_IPMASQ=true (flanneld masquerades; the delegate gets ipMasq:false)");
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let (Some(a1), Some(a2), Some(b1), Some(c1)) = (
        add(&c, n1, "a1", r),
        add(&c, n1, "a2", r),
        add(&c, n2, "b1", r),
        add(&c, n3, "c1", r),
    ) else {
        return;
    };
    let mut echoes = Vec::new();
    for p in [&a1, &a2, &b1, &c1] {
        echoes.push(start_peer_echo(&p.ns, PORT));
    }
    r.traffic("pod a2 -> pod a1, same node", &a2.ns, &a1.ip, Some(&a2.ip));
    r.traffic("pod b1 (node2) -> pod a1 (node1)", &b1.ns, &a1.ip, Some(&b1.ip));
    r.traffic("pod c1 (node3) -> pod b1 (node2)", &c1.ns, &b1.ip, Some(&c1.ip));
    r.traffic("pod a1 (node1) -> pod c1 (node3)", &a1.ns, &c1.ip, Some(&a1.ip));
    r.traffic("node1 -> pod a1 on node1", &n1.ns, &a1.ip, Some(&n1.gateway()));
    r.check(
        "CHECK pod a1",
        c.check_pod(n1, &a1).success(),
        "flannel CHECK succeeds".into(),
    );

    r.section("FLANNEL_IPMASQ=false on node1 (the delegate masquerades: ipMasq:true)");
    n1.write_subnet_env(false);
    let Some(a3) = add(&c, n1, "a3", r) else {
        return;
    };
    let saved = std::fs::read_to_string(n1.flannel_data_dir().join(&a3.container_id)).unwrap_or_default();
    r.check(
        "saved delegate config says ipMasq:true",
        saved.contains("\"ipMasq\":true"),
        saved.clone(),
    );
    echoes.push(start_peer_echo(&a3.ns, PORT));
    let _outside_echo = start_peer_echo(&c.outside, PORT);
    r.traffic(
        "pod a3 -> pod a1, same subnet (not masqueraded)",
        &a3.ns,
        &a1.ip,
        Some(&a3.ip),
    );
    r.traffic(
        "pod a3 -> outside host (masqueraded to node1)",
        &a3.ns,
        &c.outside_ip,
        Some(&n1.underlay_ip),
    );

    r.section("DEL every pod on every node");
    for (node, pod) in [(n1, &a1), (n1, &a2), (n1, &a3), (n2, &b1), (n3, &c1)] {
        let o = c.del_pod(node, pod);
        r.check(
            &format!("DEL pod on node{}", node.index),
            o.success() && pod.ns.link("eth0").is_none(),
            format!("{} removed", pod.ip),
        );
    }
    for n in &c.nodes {
        let veths = links_of_kind(&n.ns, "veth");
        let resv = reservations(n);
        let saved = saved_configs(n);
        // The delegate's masquerade rules, in either layout: upstream's nftables table (every
        // attachment's rule carries "id: <containerID>" in its comment) or, the default on
        // this node, the reference's iptables chains (`CNI-<hash>`, commented `id: "<cid>"`).
        let ruleset = n.ns.exec(&["nft", "list", "ruleset"]);
        let nat = n.ns.exec(&["iptables-save", "-t", "nat"]);
        let masq_rules = String::from_utf8_lossy(&ruleset.stdout)
            .matches("masquerade comment")
            .count()
            + String::from_utf8_lossy(&nat.stdout)
                .lines()
                .filter(|l| l.contains(" id: \\\""))
                .count();
        r.check(
            &format!("node{} clean", n.index),
            veths == ["eth0"] && resv.is_empty() && saved == 0 && masq_rules == 0,
            format!(
                "veths {veths:?} (the underlay link), reservations {resv:?}, saved configs {saved}, masquerade rules {masq_rules}"
            ),
        );
    }
    drop(echoes);
}

#[test]
fn kubernetes_network_model_on_three_nodes() {
    if !require_root("kubernetes_network_model_on_three_nodes") {
        return;
    }
    let mut r = Report::default();
    scenario(&mut r);
    r.print();
    assert_eq!(r.failures, 0, "\n{}", r.lines.join("\n"));
}
