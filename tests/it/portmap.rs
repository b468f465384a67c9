//! portmap against the kernel in throw-away namespaces, our binary run with an empty PATH (it
//! runs no program; the iptables executables in the standard dirs still make the default
//! layout iptables, as upstream decides), in both layouts: TCP and UDP services answer on the
//! host port from outside, on 127.0.0.1 from the node and from the pod itself (hairpin); UDP
//! follows a re-mapped host port (conntrack flush); DEL without resent mappings and GC remove
//! exactly the right rules; the reference portmap (iptables) gives the same traffic outcome
//! for the same config.

use crate::common::fw_rig::*;
use crate::common::rig::{self, Invocation, Outcome, PluginDir};
use cni_multi::meta::portmap;
use serde_json::{json, Value};

const NET: &str = "pm-net";

fn conf(prev: &Value, mappings: Option<Value>) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "prevResult": prev});
    if let Some(m) = mappings {
        c["runtimeConfig"] = json!({ "portMappings": m });
    }
    c
}

fn ours(site: &Site, dir: &PluginDir, cmd: &str, pod: &Pod, conf: &Value) -> Outcome {
    Invocation::new("portmap", cmd)
        .container_id(&pod.cid)
        .pod(&pod.ns)
        .config(conf)
        .in_node(&site.node)
        .env("PATH", "")
        .run_ours_in(dir)
}

fn mappings() -> Value {
    json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"HostPort": 8053, "ContainerPort": 5353, "Protocol": "udp"},
        {"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": OUTSIDE_NODE_IP}
    ])
}

/// What each client sees: outside → node, node → localhost, pod → node (hairpin).
fn traffic(site: &Site, pod: &Pod) -> Vec<String> {
    vec![
        tcp_ask(&site.outside, OUTSIDE_NODE_IP, 8080),
        udp_ask(&site.outside, OUTSIDE_NODE_IP, 8053, None),
        tcp_ask(&site.outside, OUTSIDE_NODE_IP, 9090),
        tcp_ask(&site.node, "127.0.0.1", 8080),
        tcp_ask(&pod.ns, OUTSIDE_NODE_IP, 8080),
        udp_ask(&pod.ns, OUTSIDE_NODE_IP, 8053, None),
    ]
}

fn services(pod: &Pod) -> (Bg, Bg) {
    (tcp_whoami(&pod.ns, 80, "tcp"), udp_whoami(&pod.ns, 5353, "udp"))
}

/// `iptables -t nat -S` and `ip6tables -t nat -S` of `node`.
fn nat(node: &rig::TestNs) -> String {
    node.exec_ok(&["iptables", "-t", "nat", "-S"]) + &node.exec_ok(&["ip6tables", "-t", "nat", "-S"])
}

#[test]
fn portmap_traffic_rules_check_del() {
    if !rig::require_reference("portmap_traffic_rules_check_del", "bridge") {
        return;
    }
    // The default (iptables: this node has it) and upstream's nftables layout.
    for backend in [None, Some("nftables")] {
        let site = Site::new("pm");
        let dir = PluginDir::new();
        let pod = site.pod("pm-a", "cni-p0", "10.89.0.0/24", "ctr-pm-a");
        let _svc = services(&pod);
        let gw = "10.89.0.1";
        let conf = |m: Option<Value>| {
            let mut c = conf(&pod.result, m);
            if let Some(b) = backend {
                c["backend"] = json!(b);
            }
            c
        };

        let add = ours(&site, &dir, "ADD", &pod, &conf(Some(mappings())));
        add.expect_ok();
        // The result is prevResult, passed through.
        assert_eq!(add.result()["ips"], pod.result["ips"]);
        assert_eq!(add.result()["interfaces"], pod.result["interfaces"]);

        let t = traffic(&site, &pod);
        assert_eq!(
            t,
            vec![
                format!("tcp {OUTSIDE_IP}"),
                format!("udp {OUTSIDE_IP}"),
                format!("tcp {OUTSIDE_IP}"),
                format!("tcp {gw}"),
                format!("tcp {gw}"),
                format!("udp {gw}"),
            ],
            "{backend:?}"
        );
        assert_eq!(
            site.node
                .exec_ok(&["sysctl", "-n", "net.ipv4.conf.cni-p0.route_localnet"])
                .trim(),
            "1"
        );

        if backend.is_none() {
            // The reference's chains, in iptables' own nat table; nothing of nftables' own.
            let t = nat(&site.node);
            let dn = portmap::iptables::dnat_chain_name(NET, &pod.cid);
            for want in [
                format!("-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment \"dnat name: \\\"{NET}\\\" id: \\\"{}\\\"\" -m multiport --dports 8080,9090 -j {dn}", pod.cid),
                format!("-A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination {}:80", pod.ip),
                format!("-A {dn} -d {OUTSIDE_NODE_IP}/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination {}:80", pod.ip),
                format!("-A {dn} -s 127.0.0.1/32 -p udp -m udp --dport 8053 -j CNI-HOSTPORT-SETMARK"),
            ] {
                assert!(t.contains(&want), "missing {want:?} in:\n{t}");
            }
            assert!(table_text(&site.node, "ip", portmap::TABLE).is_empty());
        } else {
            // upstream v1.9's rules, with the container ID as the comment.
            let rs = site.ruleset();
            let hp = rules(&rs, "ip", portmap::TABLE, portmap::HOSTPORTS);
            assert_eq!(hp.len(), 3, "{hp:?}");
            assert_eq!(matches(&hp[0].0)[0], "tcp dport == 8080");
            assert_eq!(matches(&hp[1].0)[0], "udp dport == 8053");
            assert!(hp.iter().all(|(_, c)| c.as_deref() == Some(pod.cid.as_str())));
            let text = table_text(&site.node, "ip", portmap::TABLE);
            for want in [
                format!("tcp dport 8080 dnat to {}:80 comment \"{}\"", pod.ip, pod.cid),
                format!("udp dport 8053 dnat to {}:5353", pod.ip),
                format!("ip daddr {OUTSIDE_NODE_IP} tcp dport 9090 dnat to {}:80", pod.ip),
                format!("ip saddr {0} ip daddr {0} masquerade", pod.ip),
                format!("ip saddr 127.0.0.1 ip daddr {} masquerade", pod.ip),
                "fib daddr type local jump hostports_all".to_string(),
                "type nat hook prerouting priority dstnat; policy accept;".to_string(),
                // nft names "dstnat" only on the prerouting hook.
                "type nat hook output priority -100; policy accept;".to_string(),
                "type nat hook postrouting priority srcnat; policy accept;".to_string(),
                "jump hostip_hostports".to_string(),
            ] {
                assert!(text.contains(&want), "missing {want:?} in:\n{text}");
            }
            assert!(rules(&rs, "ip", portmap::TABLE, portmap::HOSTIP_HOSTPORTS).is_empty());
            assert!(
                table_text(&site.node, "ip6", portmap::TABLE).is_empty(),
                "no v6 IP, no v6 table"
            );
        }

        // CHECK passes; a second ADD does not duplicate rules.
        let before = (nat(&site.node), table_text(&site.node, "ip", portmap::TABLE));
        ours(&site, &dir, "CHECK", &pod, &conf(Some(mappings()))).expect_ok();
        ours(&site, &dir, "ADD", &pod, &conf(Some(mappings()))).expect_ok();
        let after = (nat(&site.node), table_text(&site.node, "ip", portmap::TABLE));
        assert_eq!(before.0, after.0, "{backend:?}");
        assert_eq!(
            rules(&site.ruleset(), "ip", portmap::TABLE, portmap::HOSTPORTS).len(),
            if backend.is_none() { 0 } else { 3 }
        );

        // DEL without the mappings (containerd's second DEL has neither netns nor prevResult).
        Invocation::new("portmap", "DEL")
            .container_id(&pod.cid)
            .config(&json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap"}))
            .in_node(&site.node)
            .env("PATH", "")
            .run_ours_in(&dir)
            .expect_ok();
        let rs = site.ruleset();
        for chain in [portmap::HOSTPORTS, portmap::HOSTIP_HOSTPORTS, portmap::MASQUERADING] {
            assert!(rules(&rs, "ip", portmap::TABLE, chain).is_empty(), "{chain} not empty");
        }
        assert!(!nat(&site.node).contains("CNI-DN-"));
        assert_eq!(tcp_ask(&site.outside, OUTSIDE_NODE_IP, 8080), "");
        // CHECK now fails; DEL again succeeds.
        let e = ours(&site, &dir, "CHECK", &pod, &conf(Some(mappings())));
        assert!(!e.success());
        let why = e.msg().unwrap_or_default();
        let want = match backend {
            None => "could not check dnat chain: chain CNI-DN-",
            Some(_) => "missing hostport rule in ip cni_hostport hostports",
        };
        assert!(why.starts_with(want), "{e}");
        ours(&site, &dir, "DEL", &pod, &conf(None)).expect_ok();
    }
}

#[test]
fn portmap_errors_and_passthrough() {
    if !rig::require_root("portmap_errors_and_passthrough") {
        return;
    }
    let node = rig::TestNs::new_node("pm-err");
    let run = |c: Value| {
        Invocation::new("portmap", "ADD")
            .netns("/proc/1/ns/net")
            .env("CNI_NETNS_OVERRIDE", "1")
            .config(&c)
            .in_node(&node)
            .env("PATH", "")
            .run_ours()
    };
    let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.2.3/24"}], "custom": 1});
    // No mappings: pass-through, no table made.
    let out = run(conf(&prev, None));
    out.expect_ok();
    assert_eq!(out.result()["ips"][0]["address"], "10.1.2.3/24");
    assert!(table_text(&node, "ip", portmap::TABLE).is_empty());
    // Not chained.
    let mut c = conf(&prev, Some(mappings()));
    c.as_object_mut().unwrap().remove("prevResult");
    let out = run(c);
    assert!(out.msg().unwrap().contains("chained"), "{out}");
    // A key of the other layout, a condition that cannot be translated, an unknown backend,
    // markMasqBit out of range: code 7 naming the key, nothing made.
    for (extra, key) in [
        (
            json!({"backend": "nftables", "externalSetMarkChain": "KUBE-MARK-MASQ"}),
            "externalSetMarkChain",
        ),
        (
            json!({"backend": "iptables", "conditionsV4": ["ip saddr 1.2.3.4"]}),
            "conditionsV4",
        ),
        (json!({"conditionsV4": ["-s", "1.2.3.4", "-j", "DROP"]}), "conditionsV4"),
        (json!({"conditionsV6": ["-p", "tcp"]}), "conditionsV6"),
        (json!({"backend": "pf"}), "backend"),
        (json!({"markMasqBit": 32}), "markMasqBit"),
    ] {
        let mut c = conf(&prev, Some(mappings()));
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let out = run(c);
        out.expect_err(7);
        assert!(out.msg().unwrap().contains(key), "{out}");
    }
    // markMasqBit with nftables is accepted (upstream: a generic key; unused there).
    let mut c = conf(&prev, None);
    c["backend"] = json!("nftables");
    c["markMasqBit"] = json!(13);
    run(c).expect_ok();
    assert!(table_text(&node, "ip", portmap::TABLE).is_empty());
    assert!(!node.exec_ok(&["nft", "list", "tables"]).contains("nat"));
}

#[test]
fn udp_follows_remapped_host_port() {
    if !rig::require_reference("udp_follows_remapped_host_port", "bridge") {
        return;
    }
    let site = Site::new("pmu");
    let dir = PluginDir::new();
    let a = site.pod("pmu-a", "cni-u0", "10.90.0.0/24", "ctr-u-a");
    let b = site.pod("pmu-b", "cni-u0", "10.90.0.0/24", "ctr-u-b");
    let _sa = udp_whoami(&a.ns, 5353, "a");
    let _sb = udp_whoami(&b.ns, 5353, "b");
    let m = json!([{"hostPort": 8053, "containerPort": 5353, "protocol": "udp"}]);
    ours(&site, &dir, "ADD", &a, &conf(&a.result, Some(m.clone()))).expect_ok();
    // The same client flow (fixed source port) keeps one conntrack entry.
    assert!(udp_ask(&site.outside, OUTSIDE_NODE_IP, 8053, Some(40000)).starts_with("a "));
    assert!(udp_ask(&site.outside, OUTSIDE_NODE_IP, 8053, Some(40000)).starts_with("a "));
    ours(&site, &dir, "DEL", &a, &conf(&a.result, None)).expect_ok();
    ours(&site, &dir, "ADD", &b, &conf(&b.result, Some(m))).expect_ok();
    // Without the flush this would still reach pod a (whose server is still up).
    assert!(udp_ask(&site.outside, OUTSIDE_NODE_IP, 8053, Some(40000)).starts_with("b "));
}

#[test]
fn gc_removes_only_invalid_attachments() {
    if !rig::require_root("gc_removes_only_invalid_attachments") {
        return;
    }
    for backend in ["nftables", "iptables"] {
        let node = rig::TestNs::new_node("pm-gc");
        let dir = PluginDir::new();
        let pod_ns = rig::TestNs::new("pm-gc-pod");
        // ADD needs a route to the container (for route_localnet); pods are not needed for GC.
        node.ip(&["link", "add", "gc0", "type", "veth", "peer", "name", "gc1"]);
        node.ip(&["addr", "add", "10.0.0.1/8", "dev", "gc0"]);
        node.ip(&["link", "set", "gc0", "up"]);
        let add = |cid: &str, net: &str, ip: &str, port: u16| {
            let prev = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0", "sandbox": pod_ns.path_str()}],
                              "ips": [{"address": ip, "interface": 0}]});
            let mut c = conf(
                &prev,
                Some(json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}])),
            );
            c["name"] = json!(net);
            c["cniVersion"] = json!("1.1.0");
            c["backend"] = json!(backend);
            Invocation::new("portmap", "ADD")
                .container_id(cid)
                .pod(&pod_ns)
                .config(&c)
                .in_node(&node)
                .env("PATH", "")
                .run_ours_in(&dir)
                .expect_ok();
        };
        add("c1", NET, "10.5.0.2/24", 1001);
        add("c2", NET, "10.5.0.3/24", 1002);
        add("c3", "other", "10.6.0.2/24", 1003);
        // Who has rules: the comments (nftables: the container IDs), or the attachments'
        // chains (iptables).
        let owners = || -> Vec<String> {
            if backend == "nftables" {
                return rules(&ruleset(&node), "ip", portmap::TABLE, portmap::HOSTPORTS)
                    .into_iter()
                    .map(|(_, c)| c.unwrap())
                    .collect();
            }
            let t = nat(&node);
            [(NET, "c1"), (NET, "c2"), ("other", "c3")]
                .into_iter()
                .filter(|(n, c)| t.contains(&format!("-N {}", portmap::iptables::dnat_chain_name(n, c))))
                .map(|(_, c)| c.to_string())
                .collect()
        };
        assert_eq!(owners(), ["c1", "c2", "c3"], "{backend}");
        // Without the valid-attachments key GC has nothing to go by and changes nothing.
        let before = (ruleset(&node), nat(&node));
        Invocation::new("portmap", "GC")
            .config(&json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap"}))
            .in_node(&node)
            .env("PATH", "")
            .run_ours_in(&dir)
            .expect_ok();
        assert_eq!(
            before,
            (ruleset(&node), nat(&node)),
            "GC without valid-attachments removed rules"
        );
        Invocation::new("portmap", "GC")
            .config(&json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap",
                            "cni.dev/valid-attachments": [{"containerID": "c2", "ifname": "eth0"}]}))
            .in_node(&node)
            .env("PATH", "")
            .run_ours_in(&dir)
            .expect_ok();
        assert_eq!(owners(), ["c2", "c3"], "{backend}");
        if backend == "nftables" {
            // Masquerade rules of c1 went too.
            let masq = rules(&ruleset(&node), "ip", portmap::TABLE, portmap::MASQUERADING);
            assert!(masq.iter().all(|(_, c)| c.as_deref() != Some("c1")));
            assert_eq!(masq.len(), 4);
        } else {
            assert!(!nat(&node).contains("id: \\\"c1\\\""), "{}", nat(&node));
        }
    }
}

#[test]
fn same_traffic_as_reference_portmap() {
    if !rig::require_reference("same_traffic_as_reference_portmap", "portmap") {
        return;
    }
    let mut seen = Vec::new();
    // Ours with the default (iptables here) and with nftables, then the reference.
    for (reference, backend) in [(false, None), (false, Some("nftables")), (true, None)] {
        let site = Site::new(if reference { "pmr" } else { "pmo" });
        let pod = site.pod("pmc", "cni-c0", "10.91.0.0/24", "ctr-cmp");
        let _svc = services(&pod);
        let mut c = conf(&pod.result, Some(mappings()));
        if let Some(b) = backend {
            c["backend"] = json!(b);
        }
        let inv = Invocation::new("portmap", "ADD")
            .container_id(&pod.cid)
            .pod(&pod.ns)
            .config(&c)
            .in_node(&site.node);
        let out = if reference {
            inv.run_reference()
        } else {
            inv.env("PATH", "").run_ours()
        };
        out.expect_ok();
        seen.push(traffic(&site, &pod));
    }
    assert_eq!(seen[0], seen[2], "ours (iptables) vs reference");
    assert_eq!(seen[1], seen[2], "ours (nftables) vs reference");
    assert!(seen[0].iter().all(|s| !s.is_empty()), "{:?}", seen[0]);
}
