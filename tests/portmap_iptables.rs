//! portmap's iptables rules (`pkg::portmap_iptables`, for `backend: "iptables"`): written by
//! the library into a throw-away node, they print in `iptables -t nat -S`/`ip6tables -t nat -S`
//! exactly as the reference portmap's (Debian 1.1.1, iptables-nft) on an identical node; CHECK
//! accepts the reference's; each side's DEL removes the other's, shared chains stay.
//! Driven directly, and through the portmap plugin with `backend: "iptables"` (and with
//! `markMasqBit`, which selects it as upstream does).

mod common;

use cni_multi::linux::nft::{L4Proto, NftSocket};
use cni_multi::pkg::portmap_iptables::{self as pi, Mapping, Params};
use common::rig::{self, Invocation, TestNs};
use serde_json::json;

fn nat(n: &TestNs) -> String {
    let mut s = n.exec_ok(&["iptables", "-t", "nat", "-S"]);
    s += &n.exec_ok(&["ip6tables", "-t", "nat", "-S"]);
    s
}

#[test]
fn portmap_iptables_rules_equal_the_references() {
    if !rig::require_reference("portmap_iptables_rules_equal_the_references", "portmap") {
        return;
    }
    for t in ["iptables", "ip6tables"] {
        if !rig::tool(t).is_file() {
            assert!(!rig::in_ci(), "needs {t}, and CI=true");
            return;
        }
    }
    let ours = TestNs::new_node("pmipt-ours");
    let refn = TestNs::new_node("pmipt-ref");
    let pod = TestNs::new("pmipt-pod");
    let (net, cid) = ("pmnet", "ctr-pmipt");
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 8081, "containerPort": 81, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.168.1.1"},
        {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "fd00:1::1"}
    ]);
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.88.0.5/24", "interface": 2}, {"address": "fd00:88::5/64", "interface": 2}]});
    let conf = json!({"cniVersion": "1.0.0", "name": net, "type": "portmap", "snat": true,
        "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps},
        "prevResult": prev});
    let reference = |node: &TestNs, cmd: &str| {
        Invocation::new("portmap", cmd)
            .container_id(cid)
            .pod(&pod)
            .config(&conf)
            .in_node(node)
            .run_reference()
            .expect_ok();
    };
    reference(&refn, "ADD");

    let mappings: Vec<Mapping> = maps
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Mapping {
            host_port: m["hostPort"].as_u64().unwrap() as u16,
            container_port: m["containerPort"].as_u64().unwrap() as u16,
            proto: if m["protocol"] == "udp" {
                L4Proto::Udp
            } else {
                L4Proto::Tcp
            },
            host_ip: m["hostIP"].as_str().map(|a| a.parse().unwrap()),
        })
        .collect();
    let p = Params {
        network: net,
        container_id: cid,
        snat: true,
        mark_bit: 13,
        external_setmark: None,
    };
    let sock = NftSocket::open_in_netns_path(ours.path()).unwrap();
    for a in ["10.88.0.5/24", "fd00:88::5/64"] {
        pi::setup(&sock, &p, &mappings, a.parse().unwrap()).unwrap();
    }
    let (a, b) = (nat(&ours), nat(&refn));
    assert_eq!(a, b, "iptables -t nat -S differs from the reference's");
    assert!(a.contains("-m multiport --dports 8080,8081,9090 -j CNI-DN-"), "{a}");
    assert!(a.contains("-j DNAT --to-destination [fd00:88::5]:90"), "{a}");
    // A second ADD changes nothing (the reference's insertUnique).
    pi::setup(&sock, &p, &mappings, "10.88.0.5/24".parse().unwrap()).unwrap();
    assert_eq!(nat(&ours), b);

    // CHECK: ours accepts the reference's rules (and its own); the reference accepts ours.
    let ref_sock = NftSocket::open_in_netns_path(refn.path()).unwrap();
    for (s, a) in [
        (&ref_sock, "10.88.0.5/24"),
        (&sock, "10.88.0.5/24"),
        (&ref_sock, "fd00:88::5/64"),
    ] {
        pi::check(s, &p, &mappings, a.parse().unwrap()).unwrap();
    }
    // The reference's CHECK judges ours as it judges its own (1.1.1 compares the IPv6 chain
    // with the IPv4 rules and fails on dual-stack pods either way).
    let ref_check = |node: &TestNs| {
        let o = Invocation::new("portmap", "CHECK")
            .container_id(cid)
            .pod(&pod)
            .config(&conf)
            .in_node(node)
            .run_reference();
        (o.success(), o.msg().map(str::to_string))
    };
    assert_eq!(ref_check(&ours), ref_check(&refn));

    // DEL swapped; the shared chains stay, the attachment's chain and jumps go.
    reference(&ours, "DEL");
    pi::teardown(&ref_sock, net, cid).unwrap();
    for n in [&ours, &refn] {
        let t = nat(n);
        assert!(
            !t.contains("CNI-DN-") && !t.contains("10.88.0.5") && !t.contains("fd00:88::5"),
            "{t}"
        );
        assert!(
            t.contains("-N CNI-HOSTPORT-DNAT") && t.contains("CNI-HOSTPORT-MASQ"),
            "{t}"
        );
    }
    assert_eq!(nat(&ours), nat(&refn));
    assert!(pi::check(&sock, &p, &mappings, "10.88.0.5/24".parse().unwrap()).is_err());
    // DEL again is a no-op.
    pi::teardown(&sock, net, cid).unwrap();
}

#[test]
fn the_plugin_with_backend_iptables_writes_the_references_rules() {
    if !rig::require_reference(
        "the_plugin_with_backend_iptables_writes_the_references_rules",
        "portmap",
    ) {
        return;
    }
    let ours = TestNs::new_node("pmiptp-ours");
    let refn = TestNs::new_node("pmiptp-ref");
    let pod = TestNs::new("pmiptp-pod");
    let maps = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.168.1.1"}
    ]);
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.88.0.5/24", "interface": 2}, {"address": "fd00:88::5/64", "interface": 2}]});
    for (extra, bit) in [(json!({"backend": "iptables"}), 13), (json!({"markMasqBit": 5}), 5)] {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "pmnet", "type": "portmap",
            "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps},
            "prevResult": prev});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let run = |node: &TestNs, cmd: &str, reference: bool| {
            let inv = Invocation::new("portmap", cmd)
                .container_id("ctr-pmiptp")
                .pod(&pod)
                .config(&conf)
                .in_node(node);
            if reference {
                inv.run_reference()
            } else {
                inv.env("PATH", "").run_ours()
            }
        };
        run(&refn, "ADD", true).expect_ok();
        run(&ours, "ADD", false).expect_ok();
        let (a, b) = (nat(&ours), nat(&refn));
        assert_eq!(
            a, b,
            "markMasqBit {bit}: iptables -t nat -S differs from the reference's"
        );
        assert!(
            a.contains(&format!("--set-xmark 0x{:x}/0x{:x}", 1u32 << bit, 1u32 << bit)),
            "{a}"
        );
        // Nothing of ours in nftables tables of our own.
        assert!(!ours.exec_ok(&["nft", "list", "tables"]).contains("cni_hostport"));
        run(&ours, "CHECK", false).expect_ok();
        run(&ours, "DEL", false).expect_ok();
        run(&refn, "DEL", true).expect_ok();
        for n in [&ours, &refn] {
            let t = nat(n);
            assert!(!t.contains("CNI-DN-") && !t.contains("10.88.0.5"), "{t}");
        }
        run(&ours, "DEL", false).expect_ok();
        // CHECK now fails: the rules are gone.
        assert!(!run(&ours, "CHECK", false).success());
        // Next round starts from fresh nodes' state of the shared chains: flush them.
        for n in [&ours, &refn] {
            n.exec_ok(&["iptables", "-t", "nat", "-F"]);
            n.exec_ok(&["iptables", "-t", "nat", "-X"]);
            n.exec_ok(&["ip6tables", "-t", "nat", "-F"]);
            n.exec_ok(&["ip6tables", "-t", "nat", "-X"]);
        }
    }
}
