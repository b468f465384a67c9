//! bridge and ptp with `ipMasq: true` compared with the reference plugins (Debian 1.1.1, which
//! exec iptables-nft inside the node netns), each run in its own node netns with an "outside"
//! netns on an uplink: the same normalised result, the same traffic outcome (the outside host
//! sees the node's address for pod → outside, a pod in the subnet sees the other pod's own
//! address), and DEL leaving no masquerade rule for the container on either side. Our plugins
//! run with an empty PATH.

use crate::common::fw_rig::{tcp_ask, tcp_whoami, udp_ask, udp_whoami};
use crate::common::rig::require_reference;
use crate::common::veth_rig::{addr_of, conf, normalise_result, Impl, Rig};
use serde_json::{json, Value};

const UPLINK_NODE: &str = "10.252.0.1";
const UPLINK_OUTSIDE: &str = "10.252.0.2";

/// What one implementation did with one config.
#[derive(Debug, PartialEq)]
struct Seen {
    results: Vec<Value>,
    /// [pod a → outside tcp, udp; pod a → pod b tcp, udp]
    traffic: Vec<String>,
    /// Masquerade rules for container c1 after ADD, after DEL.
    masq_rules: (usize, usize),
}

/// The masquerade rules of container `cid` in the node: the reference's iptables chain and
/// rules (`iptables-save -t nat`: a `CNI-…` chain, commented `id: "<cid>"`), which both
/// implementations write on this node (it has iptables: cni-multi's default layout is the
/// reference's), and nothing in `inet cni_plugins_masquerade`.
fn masq_rules(rig: &Rig, cid: &str) -> usize {
    let tables = rig.node.exec_ok(&["nft", "list", "tables"]);
    assert!(!tables.contains("cni_plugins_masquerade"), "{:?}: {tables}", rig.imp);
    let save = rig.node.exec_ok(&["iptables-save", "-t", "nat"]);
    let id = format!("id: \\\"{cid}\\\"");
    let lines: Vec<&str> = save.lines().filter(|l| l.contains(&id)).collect();
    // Each rule of the container names its chain; that chain must exist (or not).
    let chains: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).filter(|c| c.starts_with("CNI-")))
        .collect();
    for c in &chains {
        assert!(save.contains(&format!(":{c} ")), "chain {c} declared:\n{save}");
    }
    lines.len()
}

fn run(imp: Impl, plugin: &str, subnet: &str) -> Seen {
    let rig = Rig::new(if imp == Impl::Ours { "mqco" } else { "mqcr" }, imp);
    let out = rig.outside("mqrout", UPLINK_NODE, UPLINK_OUTSIDE, true);
    let (pa, pb) = (rig.pod("mqca"), rig.pod("mqcb"));
    let mut c = conf(
        "1.0.0",
        "masqcmp",
        plugin,
        json!({"ipMasq": true, "isGateway": true, "bridge": "cnimqc0"}),
    );
    c["ipam"] = rig.host_local(&[json!(subnet)]);
    c["ipam"]["routes"] = json!([{"dst": "0.0.0.0/0"}]);
    let ra = rig.add(&c, "c1", &pa, "eth0").expect_ok().json();
    let rb = rig.add(&c, "c2", &pb, "eth0").expect_ok().json();
    let _srv = (tcp_whoami(&out, 8000, "out"), udp_whoami(&out, 8001, "out"));
    let _pod = (tcp_whoami(&pb, 8000, "b"), udp_whoami(&pb, 8001, "b"));
    let ipb = addr_of(&rb, 0);
    let traffic = vec![
        tcp_ask(&pa, UPLINK_OUTSIDE, 8000),
        udp_ask(&pa, UPLINK_OUTSIDE, 8001, None),
        tcp_ask(&pa, &ipb, 8000),
        udp_ask(&pa, &ipb, 8001, None),
    ];
    let before = masq_rules(&rig, "c1");
    rig.del(&c, "c1", pa.path_str(), "eth0").expect_ok();
    let after = masq_rules(&rig, "c1");
    // c2's rule is untouched by c1's DEL.
    assert!(masq_rules(&rig, "c2") > 0, "{imp:?}: c2 keeps its masquerade rule");
    rig.del(&c, "c2", pb.path_str(), "eth0").expect_ok();
    assert_eq!(masq_rules(&rig, "c2"), 0, "{imp:?}");
    Seen {
        results: vec![normalise_result(&ra), normalise_result(&rb)],
        traffic,
        masq_rules: (before, after),
    }
}

fn compare(plugin: &str, subnet: &str, first_pod: &str, second_pod: &str) {
    let ours = run(Impl::Ours, plugin, subnet);
    let reference = run(Impl::Reference, plugin, subnet);
    assert_eq!(
        ours.traffic,
        vec![
            format!("out {UPLINK_NODE}"),
            format!("out {UPLINK_NODE}"),
            format!("b {first_pod}"),
            format!("b {first_pod}"),
        ],
        "{plugin}: pod → outside masqueraded, pod → pod not"
    );
    assert_eq!(ours.results[1]["ips"][0]["address"], json!(second_pod));
    assert_eq!(ours.results, reference.results, "{plugin}: results");
    assert_eq!(ours.traffic, reference.traffic, "{plugin}: traffic");
    assert!(
        ours.masq_rules.0 > 0 && reference.masq_rules.0 > 0,
        "{plugin}: {ours:?} {reference:?}"
    );
    assert_eq!((ours.masq_rules.1, reference.masq_rules.1), (0, 0), "{plugin}: DEL");
    assert_eq!(ours.masq_rules, reference.masq_rules, "{plugin}: the same rules");
}

#[test]
fn bridge_ipmasq_same_as_reference() {
    if !require_reference("bridge_ipmasq_same_as_reference", "bridge") {
        return;
    }
    compare("bridge", "10.78.0.0/24", "10.78.0.2", "10.78.0.3/24");
}

#[test]
fn ptp_ipmasq_same_as_reference() {
    if !require_reference("ptp_ipmasq_same_as_reference", "ptp") {
        return;
    }
    compare("ptp", "10.79.0.0/24", "10.79.0.2", "10.79.0.3/24");
}
