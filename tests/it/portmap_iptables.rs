//! portmap's iptables layout against the reference (Debian's portmap 1.1.1 over iptables-nft
//! 1.8.9), in throw-away node namespaces: with the default backend (this machine has iptables,
//! so unset means iptables, as upstream decides) our ADD leaves `iptables-save` and
//! `ip6tables-save` exactly as the reference's ADD of the same config does, expression for
//! expression (conditions, markMasqBit, externalSetMarkChain, more than 15 ports included);
//! the reference's CHECK and DEL accept and remove ours, ours remove the reference's. Then what
//! the reference cannot show (masqAll, which 1.1.1 ignores) checked with `iptables -C`, the
//! recorded handles and their fallbacks, and the default's other branch: a node without
//! iptables gets the nftables layout.

use std::path::PathBuf;

use crate::common::rig::{self, Invocation, Outcome, PluginDir, TestNs};
use cni_multi::linux::nft::{Expr, Family, NftSocket};
use serde_json::{json, Value};

const NET: &str = "pmnet";

/// `iptables-save -t nat` and `ip6tables-save -t nat`, without the comment lines.
fn save(n: &TestNs) -> String {
    let mut s = String::new();
    for tool in ["iptables-save", "ip6tables-save"] {
        let out = n.exec_ok(&[tool, "-t", "nat"]);
        s += &out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        s += "\n";
    }
    s
}

/// Every rule of both nat tables as the kernel holds it: chain, expressions (counters
/// zeroed), in order; handles left out.
fn exprs(n: &TestNs) -> Vec<(String, String, Vec<Expr>)> {
    let sock = NftSocket::open_in_netns_path(n.path()).unwrap();
    let mut out = Vec::new();
    for fam in [Family::Ip, Family::Ip6] {
        let mut chains: Vec<String> = sock
            .list_chains(fam, "nat")
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.name)
            .collect();
        chains.sort();
        for c in chains {
            for r in sock.list_rules(fam, "nat", &c).unwrap() {
                let e = r
                    .exprs
                    .into_iter()
                    .map(|e| match e {
                        Expr::Counter { .. } => Expr::Counter { packets: 0, bytes: 0 },
                        e => e,
                    })
                    .collect();
                out.push((fam.to_string(), c.clone(), e));
            }
        }
    }
    out
}

fn prev(dual: bool) -> Value {
    let mut ips = vec![json!({"address": "10.88.0.5/24", "interface": 2})];
    if dual {
        ips.push(json!({"address": "fd00:88::5/64", "interface": 2}));
    }
    json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/x"}],
        "ips": ips})
}

fn config(maps: &Value, extra: &Value, dual: bool) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap",
        "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": maps},
        "prevResult": prev(dual)});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn run(node: &TestNs, pod: &TestNs, cmd: &str, cid: &str, conf: &Value, reference: bool) -> Outcome {
    let inv = Invocation::new("portmap", cmd)
        .container_id(cid)
        .pod(pod)
        .config(conf)
        .in_node(node);
    if reference {
        inv.run_reference()
    } else {
        inv.env("PATH", "").run_ours()
    }
}

fn tools_present() -> bool {
    for t in ["iptables", "ip6tables", "iptables-save", "ip6tables-save"] {
        if !rig::tool(t).is_file() {
            assert!(!rig::in_ci(), "needs {t}, and CI=true");
            return false;
        }
    }
    true
}

/// One golden case: (what, mappings, extra keys, dual stack, chains to make first).
fn cases() -> Vec<(&'static str, Value, Value, bool, Vec<&'static str>)> {
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"hostPort": 9000 + i, "containerPort": 80, "protocol": "tcp"}))
        .collect();
    vec![
        (
            "dual stack, tcp and udp, host IPs of both families, default backend",
            json!([
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": 8081, "containerPort": 81, "protocol": "tcp"},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "192.168.1.1"},
                {"hostPort": 9090, "containerPort": 90, "protocol": "tcp", "hostIP": "fd00:1::1"},
                {"hostPort": 9091, "containerPort": 91, "protocol": "tcp", "hostIP": "0.0.0.0"}
            ]),
            json!({}),
            true,
            vec![],
        ),
        (
            "conditions on addresses, interfaces, comments",
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                   {"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]),
            json!({"conditionsV4": ["!", "-s", "10.0.0.0/8", "-i", "eth0", "!", "-o", "cni+",
                                    "-d", "192.168.0.1/255.255.0.0", "-m", "comment", "--comment", "only from outside"],
                   "conditionsV6": ["--destination", "fd00::/60", "--in-interface", "eth1",
                                    "-m", "comment", "--comment", "v6"]}),
            true,
            vec![],
        ),
        (
            "a port condition",
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
            json!({"conditionsV4": ["-s", "10.1.0.0/16", "-m", "tcp", "--sport", "1024:65535", "!", "--dport", "22"]}),
            false,
            vec![],
        ),
        (
            "several port conditions",
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                   {"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}]),
            json!({"conditionsV4": ["-m", "tcp", "--sport", "1024:65535", "!", "--dport", "22",
                                    "-m", "tcp", "--sport", "5", "--dport", "6",
                                    "-m", "tcp", "!", "--sport", "7", "!", "--dport", "8",
                                    "-m", "tcp", "--dport", ":100", "-m", "tcp", "!", "--source-port", ":99",
                                    "-m", "tcp", "--destination-port", "100:", "-m", "tcp",
                                    "-m", "comment", "--comment", "x", "-m", "tcp", "--sport", "0", "--dport", "7"]}),
            false,
            vec![],
        ),
        (
            "udp conditions, bare -m udp",
            json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]),
            json!({"conditionsV4": ["-m", "udp", "-m", "udp", "!", "--dport", "5:6"]}),
            false,
            vec![],
        ),
        (
            "markMasqBit 5, more than 15 ports",
            serde_json::Value::Array(many),
            json!({"markMasqBit": 5}),
            true,
            vec![],
        ),
        (
            "externalSetMarkChain",
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
            json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}),
            true,
            vec!["KUBE-MARK-MASQ"],
        ),
        (
            "sctp",
            json!([{"hostPort": 8132, "containerPort": 132, "protocol": "sctp"},
                   {"hostPort": 8133, "containerPort": 133, "protocol": "sctp", "hostIP": "192.168.1.1"}]),
            json!({}),
            true,
            vec![],
        ),
        (
            "snat off, backend iptables",
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
            json!({"snat": false, "backend": "iptables"}),
            true,
            vec![],
        ),
    ]
}

#[test]
fn iptables_layout_equals_the_references() {
    if !rig::require_reference("iptables_layout_equals_the_references", "portmap") || !tools_present() {
        return;
    }
    for (what, maps, extra, dual, chains) in cases() {
        let ours = TestNs::new_node("pmipt-ours");
        let refn = TestNs::new_node("pmipt-ref");
        let pod = TestNs::new("pmipt-pod");
        for n in [&ours, &refn] {
            for c in &chains {
                n.exec_ok(&["iptables", "-t", "nat", "-N", c]);
                n.exec_ok(&["ip6tables", "-t", "nat", "-N", c]);
            }
        }
        let conf = config(&maps, &extra, dual);
        let cid = "ctr-pmipt";
        run(&refn, &pod, "ADD", cid, &conf, true).expect_ok();
        run(&ours, &pod, "ADD", cid, &conf, false).expect_ok();
        let (a, b) = (save(&ours), save(&refn));
        assert_eq!(a, b, "{what}: iptables-save differs from the reference's");
        assert!(a.contains("-j CNI-DN-"), "{what}: {a}");
        assert_eq!(exprs(&ours), exprs(&refn), "{what}: expressions differ");
        // Nothing in nftables tables of our own.
        assert!(
            !ours.exec_ok(&["nft", "list", "tables"]).contains("cni_hostport"),
            "{what}"
        );
        // A second ADD changes nothing (the reference's insertUnique; ours by record).
        run(&ours, &pod, "ADD", cid, &conf, false).expect_ok();
        assert_eq!(save(&ours), b, "{what}: a second ADD changed the rules");

        // CHECK: ours accepts both; the reference judges ours as it judges its own (1.1.1
        // also compares the IPv6 nat table with the IPv4 rules, and fails either way).
        for n in [&ours, &refn] {
            let o = run(n, &pod, "CHECK", cid, &conf, false);
            assert!(o.success(), "{what}: {o}");
        }
        let ref_check = |n: &TestNs| {
            let o = run(n, &pod, "CHECK", cid, &conf, true);
            (o.success(), o.msg().map(str::to_string))
        };
        assert_eq!(ref_check(&ours), ref_check(&refn), "{what}");

        // DEL swapped: the shared chains stay, the attachment's chain and jumps go.
        run(&ours, &pod, "DEL", cid, &conf, true).expect_ok();
        run(&refn, &pod, "DEL", cid, &conf, false).expect_ok();
        for n in [&ours, &refn] {
            let t = save(n);
            assert!(!t.contains("CNI-DN-") && !t.contains("10.88.0.5"), "{what}: {t}");
            assert!(t.contains(":CNI-HOSTPORT-DNAT"), "{what}: {t}");
        }
        assert_eq!(save(&ours), save(&refn), "{what}");
        let e = run(&ours, &pod, "CHECK", cid, &conf, false);
        assert!(!e.success(), "{what}: CHECK passes without rules");
        assert!(
            e.msg()
                .unwrap_or_default()
                .starts_with("could not check dnat chain: chain CNI-DN-"),
            "{e}"
        );
        // DEL again is a no-op.
        run(&ours, &pod, "DEL", cid, &conf, false).expect_ok();
    }
}

#[test]
fn masq_all_marks_every_source_as_upstream() {
    if !rig::require_root("masq_all_marks_every_source_as_upstream") || !tools_present() {
        return;
    }
    let node = TestNs::new_node("pmipt-ma");
    let pod = TestNs::new("pmipt-ma-pod");
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let conf = config(&maps, &json!({"masqAll": true}), true);
    run(&node, &pod, "ADD", "ctr-ma", &conf, false).expect_ok();
    let dn = cni_multi::meta::portmap::iptables::dnat_chain_name(NET, "ctr-ma");
    // upstream v1.9 (portmap_iptables.go lines 247-279): `-s 0.0.0.0/0` (`::/0`) and no
    // localhost rule; iptables -C finds ours from upstream's own arguments.
    for (tool, any) in [("iptables", "0.0.0.0/0"), ("ip6tables", "::/0")] {
        node.exec_ok(&[
            tool,
            "-t",
            "nat",
            "-C",
            &dn,
            "-p",
            "tcp",
            "--dport",
            "8080",
            "-s",
            any,
            "-j",
            "CNI-HOSTPORT-SETMARK",
        ]);
    }
    let v4 = node.exec_ok(&["iptables", "-t", "nat", "-S", &dn]);
    assert!(!v4.contains("127.0.0.1") && !v4.contains("10.88.0.0/24"), "{v4}");
    run(&node, &pod, "CHECK", "ctr-ma", &conf, false).expect_ok();
    run(&node, &pod, "DEL", "ctr-ma", &conf, false).expect_ok();
    assert!(!save(&node).contains("CNI-DN-"));
}

fn rec_dir(node: &TestNs, fam: &str) -> PathBuf {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let sock = NftSocket::open_in_netns_path(node.path()).unwrap();
    let cookie = sock.netns_cookie().expect("SO_NETNS_COOKIE (Linux 5.14)");
    PathBuf::from(rig::state_dir())
        .join("nft")
        .join(format!("{}-{cookie}", boot.trim()))
        .join(format!("{fam}-nat-portmap"))
}

#[test]
fn recorded_handles_and_their_fallbacks() {
    if !rig::require_root("recorded_handles_and_their_fallbacks") || !tools_present() {
        return;
    }
    let node = TestNs::new_node("pmipt-rec");
    let pod = TestNs::new("pmipt-rec-pod");
    let dir = PluginDir::new();
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let conf = config(&maps, &json!({}), true);
    let go = |cmd: &str, cid: &str| {
        Invocation::new("portmap", cmd)
            .container_id(cid)
            .pod(&pod)
            .config(&conf)
            .in_node(&node)
            .run_ours_in(&dir)
            .expect_ok();
    };
    let dn = |cid: &str| cni_multi::meta::portmap::iptables::dnat_chain_name(NET, cid);
    let key = |cid: &str| cni_multi::meta::portmap::attachment_key(NET, "eth0", cid);
    for cid in ["ctr-a", "ctr-b", "ctr-c"] {
        go("ADD", cid);
    }
    // The records: the shared rules' handles (SETMARK, MASQ, POSTROUTING, PREROUTING, OUTPUT)
    // and per attachment its entry jumps, labelled with its chain.
    for fam in ["ip", "ip6"] {
        let d = rec_dir(&node, fam);
        let stamp = std::fs::read_to_string(d.join("stamp")).unwrap();
        assert_eq!(stamp.lines().nth(1).unwrap().split(' ').count(), 5, "{stamp}");
        let rec = std::fs::read_to_string(d.join(key("ctr-a"))).unwrap();
        assert!(rec.contains(&format!("label={}\n", dn("ctr-a"))), "{rec}");
        assert_eq!(
            rec.lines().filter(|l| l.starts_with("CNI-HOSTPORT-DNAT ")).count(),
            1,
            "{rec}"
        );
    }
    // A jump the record does not know: the chain's deletion is refused, DEL finds it by listing.
    node.exec_ok(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "CNI-HOSTPORT-DNAT",
        "-p",
        "udp",
        "-j",
        &dn("ctr-a"),
    ]);
    go("DEL", "ctr-a");
    // A corrupt record: found by listing.
    std::fs::write(rec_dir(&node, "ip").join(key("ctr-b")), "nonsense").unwrap();
    go("DEL", "ctr-b");
    let t = save(&node);
    assert!(!t.contains(&dn("ctr-a")) && !t.contains(&dn("ctr-b")), "{t}");
    assert!(t.contains(&dn("ctr-c")), "{t}");
    // Shared rules gone behind our back (an operator's flush): the next ADD sees the stamp fail
    // and makes them again, as the reference's insertUnique would.
    node.exec_ok(&["iptables", "-t", "nat", "-F", "CNI-HOSTPORT-SETMARK"]);
    node.exec_ok(&[
        "iptables",
        "-t",
        "nat",
        "-D",
        "OUTPUT",
        "-m",
        "addrtype",
        "--dst-type",
        "LOCAL",
        "-j",
        "CNI-HOSTPORT-DNAT",
    ]);
    go("ADD", "ctr-d");
    let t = save(&node);
    assert!(t.contains("-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000"), "{t}");
    assert!(
        t.contains("-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT"),
        "{t}"
    );
    let v4 = node.exec_ok(&["iptables", "-t", "nat", "-S", "PREROUTING"]);
    assert_eq!(v4.matches("-j CNI-HOSTPORT-DNAT").count(), 1, "{v4}");
    for cid in ["ctr-c", "ctr-d"] {
        go("CHECK", cid);
        go("DEL", cid);
        assert!(!rec_dir(&node, "ip").join(key(cid)).exists(), "DEL forgets the record");
    }
    assert!(!save(&node).contains("CNI-DN-"));
}

#[test]
fn the_default_follows_the_node() {
    if !rig::require_root("the_default_follows_the_node") || !tools_present() {
        return;
    }
    let maps = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    let conf = config(&maps, &json!({}), true);
    let pod = TestNs::new("pmdef-pod");
    // iptables visible (this machine): the iptables layout.
    let node = TestNs::new_node("pmdef-ipt");
    run(&node, &pod, "ADD", "ctr-def", &conf, false).expect_ok();
    assert!(save(&node).contains("-j CNI-DN-"));
    assert!(!node.exec_ok(&["nft", "list", "tables"]).contains("cni_hostport"));
    run(&node, &pod, "DEL", "ctr-def", &conf, false).expect_ok();
    // No iptables executable anywhere a plugin looks and no iptables table: nftables only.
    let node = TestNs::new_node("pmdef-nft");
    let hidden = |cmd: &str| {
        Invocation::new("portmap", cmd)
            .container_id("ctr-def")
            .pod(&pod)
            .config(&conf)
            .in_node(&node)
            .without_iptables()
            .run_ours()
    };
    hidden("ADD").expect_ok();
    let tables = node.exec_ok(&["nft", "list", "tables"]);
    assert!(
        tables.contains("table ip cni_hostport") && tables.contains("table ip6 cni_hostport"),
        "{tables}"
    );
    assert!(!tables.contains(" nat"), "no iptables table made: {tables}");
    hidden("CHECK").expect_ok();
    // The same pod CHECKed where iptables is visible finds its rules where they are.
    run(&node, &pod, "CHECK", "ctr-def", &conf, false).expect_ok();
    hidden("DEL").expect_ok();
    let left = node.exec_ok(&["nft", "list", "table", "ip", "cni_hostport"]);
    assert!(!left.contains("ctr-def"), "{left}");
    // The helper hides iptables from the plugin only.
    assert!(rig::tool("iptables").is_file());
}
