//! portmap options beyond the basic mappings, against the kernel in throw-away namespaces (our
//! binary with an empty PATH), in both layouts (the default, iptables on this node, and
//! `backend: "nftables"`): IPv6 on a dual-stack pod (the node's IPv6 uplink address, `hostIP`
//! v6), `masqAll` (what the pod sees as the client address, ours and the reference), SCTP
//! mappings, and conditions on the input interface and source (nft syntax for nftables,
//! iptables syntax for iptables). The nftables layout's rules are read with `nft -j list
//! ruleset`, the iptables layout's with `iptables -S`.

use crate::common::fw_rig::*;
use crate::common::rig::{self, Invocation, Outcome, PluginDir};
use cni_multi::meta::portmap;
use serde_json::{json, Value};

const NET: &str = "pmx-net";

fn conf(prev: &Value, mappings: Value, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "prevResult": prev,
                       "runtimeConfig": {"portMappings": mappings}});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

fn run(site: &Site, dir: Option<&PluginDir>, cmd: &str, pod: &Pod, conf: &Value) -> Outcome {
    let inv = Invocation::new("portmap", cmd)
        .container_id(&pod.cid)
        .pod(&pod.ns)
        .config(conf)
        .in_node(&site.node);
    match dir {
        Some(d) => inv.env("PATH", "").run_ours_in(d),
        None => inv.run_reference(),
    }
}

/// `iptables -t nat -S` and `ip6tables -t nat -S` of the node.
fn nat(site: &Site) -> String {
    site.node.exec_ok(&["iptables", "-t", "nat", "-S"]) + &site.node.exec_ok(&["ip6tables", "-t", "nat", "-S"])
}

/// `extra` with `"backend"` set when one is given.
fn with_backend(mut extra: Value, backend: Option<&str>) -> Value {
    if let Some(b) = backend {
        extra["backend"] = json!(b);
    }
    extra
}

/// The `matches` of every rule of one chain.
fn chain(rs: &Value, family: &str, name: &str) -> Vec<(Vec<String>, String, Option<String>)> {
    rules(rs, family, portmap::TABLE, name)
        .into_iter()
        .map(|(e, c)| (matches(&e), e.to_string(), c))
        .collect()
}

#[test]
fn ipv6_mapping_on_dual_stack_pod() {
    if !rig::require_root("ipv6_mapping_on_dual_stack_pod") {
        return;
    }
    for backend in [None, Some("nftables")] {
        ipv6_mapping(backend);
    }
}

fn ipv6_mapping(backend: Option<&str>) {
    let site = Site::new_dual("pm6");
    let dir = PluginDir::new();
    let pod = site.pod_dual_ours(&dir, "pm6-a", "cni-p6", ["10.95.0.0/24", "fd95::/64"], "ctr-pm6");
    let ip6 = pod.ip6.clone().expect("a v6 address");
    let _s4 = tcp_whoami(&pod.ns, 80, "tcp");
    let _s6 = tcp6_whoami(&pod.ns, 80, "tcp6");
    let m = json!([
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
        {"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": OUTSIDE_NODE_IP6}
    ]);
    let c = conf(&pod.result, m, with_backend(json!({}), backend));
    // Before ADD nothing answers on the host port.
    assert_eq!(tcp_ask(&site.outside, OUTSIDE_NODE_IP6, 8080), "");
    run(&site, Some(&dir), "ADD", &pod, &c).expect_ok();

    let ask = |ns: &rig::TestNs, addr: &str, port: u16| canonical(&tcp_ask(ns, addr, port));
    // Warm-up: the node's first neighbour solicitations for a fresh pod's IPv6 address can go
    // unanswered for 1-2 s (seen with and without multicast snooping), longer than one probe's
    // connect timeout: resolve the neighbour before the probes whose outcome is asserted.
    let t = std::time::Instant::now();
    while !site.node.exec(&["ping", "-6", "-c1", "-W1", &ip6]).status.success() {
        assert!(t.elapsed().as_secs() < 10, "the node cannot reach the pod's {ip6}");
    }
    // Outside → node's IPv6 uplink address: the pod sees the outside host (no masqAll).
    assert_eq!(
        ask(&site.outside, OUTSIDE_NODE_IP6, 8080),
        format!("tcp6 {OUTSIDE_IP6}")
    );
    // hostIP v6: answered on that address, and only in the IPv6 table.
    assert_eq!(
        ask(&site.outside, OUTSIDE_NODE_IP6, 9090),
        format!("tcp6 {OUTSIDE_IP6}")
    );
    assert_eq!(
        ask(&site.outside, OUTSIDE_NODE_IP, 9090),
        "",
        "a v6 hostIP maps no v4 port"
    );
    // The v4 mapping of the same pod works alongside.
    assert_eq!(ask(&site.outside, OUTSIDE_NODE_IP, 8080), format!("tcp {OUTSIDE_IP}"));
    // Hairpin over IPv6: the pod reaches itself through the node's address, masqueraded to
    // the bridge's gateway address (snat defaults to true).
    let gw6 = pod.result["ips"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|i| i["gateway"].as_str().filter(|g| g.contains(':')))
        .unwrap()
        .to_string();
    assert_eq!(ask(&pod.ns, OUTSIDE_NODE_IP6, 8080), format!("tcp6 {gw6}"));
    // No [::1]:hostPort: IPv6 has no route_localnet (documented, not asserted as a success).

    if backend.is_none() {
        let t = nat(&site);
        let dn = portmap::iptables::dnat_chain_name(NET, &pod.cid);
        for want in [
            format!("-A {dn} -p tcp -m tcp --dport 8080 -j DNAT --to-destination [{ip6}]:80"),
            format!("-A {dn} -d {OUTSIDE_NODE_IP6}/128 -p tcp -m tcp --dport 9090 -j DNAT --to-destination [{ip6}]:80"),
            format!("-A {dn} -s fd95::/64 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK"),
        ] {
            assert!(t.contains(&want), "missing {want:?} in:\n{t}");
        }
        assert!(!t.contains("-s ::1"), "no localhost rule in v6: {t}");
    } else {
        // upstream v1.9: the host-IP mapping is in `hostports` too, both with the container ID.
        let rs = site.ruleset();
        let hp = chain(&rs, "ip6", portmap::HOSTPORTS);
        assert_eq!(hp.len(), 2, "{hp:?}");
        assert_eq!(hp[0].0[0], "tcp dport == 8080");
        assert!(
            hp[0].1.contains(&format!("\"addr\":\"{ip6}\"")),
            "dnat to the pod's v6: {}",
            hp[0].1
        );
        assert!(hp.iter().all(|r| r.2.as_deref() == Some(pod.cid.as_str())));
        assert_eq!(
            hp[1].0[..2],
            [format!("ip6 daddr == {OUTSIDE_NODE_IP6}"), "tcp dport == 9090".into()]
        );
        assert!(chain(&rs, "ip6", portmap::HOSTIP_HOSTPORTS).is_empty());
        let masq = chain(&rs, "ip6", portmap::MASQUERADING);
        assert_eq!(masq.len(), 1, "hairpin only, no localhost rule in v6: {masq:?}");
        assert_eq!(
            masq[0].0[..2],
            [format!("ip6 saddr == {ip6}"), format!("ip6 daddr == {ip6}")]
        );
        // The v4 table has the v4 mapping only (the v6 hostIP is not in it).
        let hp4 = chain(&rs, "ip", portmap::HOSTPORTS);
        assert_eq!(hp4.len(), 1);
        assert!(chain(&rs, "ip", portmap::HOSTIP_HOSTPORTS).is_empty());
    }

    run(&site, Some(&dir), "CHECK", &pod, &c).expect_ok();
    // DEL empties both families' chains; the v6 port no longer answers.
    run(&site, Some(&dir), "DEL", &pod, &c).expect_ok();
    let rs = site.ruleset();
    for fam in ["ip", "ip6"] {
        for ch in [portmap::HOSTPORTS, portmap::HOSTIP_HOSTPORTS, portmap::MASQUERADING] {
            assert!(chain(&rs, fam, ch).is_empty(), "{fam} {ch} not empty");
        }
    }
    assert!(!nat(&site).contains("CNI-DN-"));
    assert_eq!(tcp_ask(&site.outside, OUTSIDE_NODE_IP6, 8080), "");
    let e = run(&site, Some(&dir), "CHECK", &pod, &c);
    assert!(!e.success());
    let why = e.msg().unwrap_or_default();
    let want = match backend {
        None => "could not check dnat chain: chain CNI-DN-",
        Some(_) => "missing hostport rule in ip cni_hostport hostports",
    };
    assert!(why.starts_with(want), "{e}");
}

/// The client address the pod sees for outside → node:8080 with masqAll false, then true
/// (ADD, probe, DEL for each), through our portmap (`Some(backend)`, `None` the default) or
/// the reference (`None`).
fn masq_all_seen(ours: Option<Option<&str>>) -> Vec<String> {
    let site = Site::new(if ours.is_some() { "pmmo" } else { "pmmr" });
    let dir = PluginDir::new();
    let pod = site.pod("pmm-a", "cni-mm", "10.96.0.0/24", "ctr-pmm");
    let _svc = tcp_whoami(&pod.ns, 80, "tcp");
    let _usvc = udp_whoami(&pod.ns, 5353, "udp");
    let m = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                   {"hostPort": 8053, "containerPort": 5353, "protocol": "udp"}]);
    let backend = ours.flatten();
    let dir = ours.is_some().then_some(&dir);
    let mut seen = Vec::new();
    for masq_all in [false, true] {
        let c = conf(
            &pod.result,
            m.clone(),
            with_backend(json!({"masqAll": masq_all}), backend),
        );
        run(&site, dir, "ADD", &pod, &c).expect_ok();
        seen.push(tcp_ask(&site.outside, OUTSIDE_NODE_IP, 8080));
        seen.push(udp_ask(&site.outside, OUTSIDE_NODE_IP, 8053, None));
        if backend == Some("nftables") {
            // upstream (main since 3d27709f): the masquerade rule matches every source with
            // masqAll (`ip saddr 0.0.0.0/0`), and there is no separate localhost rule then.
            let masq = chain(&site.ruleset(), "ip", portmap::MASQUERADING);
            let firsts: Vec<String> = masq.iter().map(|r| r.0[..2].join(", ")).collect();
            let want = if masq_all {
                vec![format!("ip saddr == 0.0.0.0/0, ip daddr == {}", pod.ip)]
            } else {
                vec![
                    format!("ip saddr == {0}, ip daddr == {0}", pod.ip),
                    format!("ip saddr == 127.0.0.1, ip daddr == {}", pod.ip),
                ]
            };
            assert_eq!(firsts, want, "masqAll {masq_all}: {masq:?}");
        } else if ours.is_some() {
            // upstream v1.9's iptables backend: `-s 0.0.0.0/0` (no match) and no localhost rule.
            let t = nat(&site);
            assert_eq!(t.contains("-s 127.0.0.1/32"), !masq_all, "{t}");
            assert_eq!(t.contains("-s 10.96.0.0/24"), !masq_all, "{t}");
        }
        run(&site, dir, "DEL", &pod, &c).expect_ok();
        assert_eq!(tcp_ask(&site.outside, OUTSIDE_NODE_IP, 8080), "", "DEL unmaps");
    }
    seen
}

#[test]
fn masq_all_hides_the_client_address() {
    if !rig::require_reference("masq_all_hides_the_client_address", "portmap") {
        return;
    }
    // The pod sees the outside host without masqAll, the node's bridge address with it.
    let gw = "10.96.0.1";
    let want = vec![
        format!("tcp {OUTSIDE_IP}"),
        format!("udp {OUTSIDE_IP}"),
        format!("tcp {gw}"),
        format!("udp {gw}"),
    ];
    let ours = masq_all_seen(Some(None));
    assert_eq!(ours, want, "iptables layout");
    assert_eq!(masq_all_seen(Some(Some("nftables"))), want, "nftables layout");
    // The reference 1.1.1 predates masqAll (its binary has no such key): it ignores it, so it
    // agrees with us only without masqAll.
    let reference = masq_all_seen(None);
    assert_eq!(reference[..2], ours[..2], "reference (iptables) vs ours, masqAll false");
    assert_eq!(reference[2..], ours[..2], "reference 1.1.1 ignores masqAll");
}

#[test]
fn sctp_mapping() {
    if !rig::require_reference("sctp_mapping", "bridge") {
        return;
    }
    for backend in [None, Some("nftables")] {
        sctp_mapping_in(backend);
    }
}

fn sctp_mapping_in(backend: Option<&str>) {
    let site = Site::new("pms");
    let dir = PluginDir::new();
    let pod = site.pod("pms-a", "cni-ps", "10.97.0.0/24", "ctr-pms");
    let m = json!([{"hostPort": 8132, "containerPort": 132, "protocol": "SCTP"},
                   {"hostPort": 8133, "containerPort": 133, "protocol": "sctp", "hostIP": OUTSIDE_NODE_IP}]);
    let c = conf(&pod.result, m, with_backend(json!({}), backend));
    run(&site, Some(&dir), "ADD", &pod, &c).expect_ok();
    if backend.is_none() {
        let t = nat(&site);
        let dn = portmap::iptables::dnat_chain_name(NET, &pod.cid);
        for want in [
            format!("-m multiport --dports 8132,8133 -j {dn}"),
            format!(
                "-A {dn} -p sctp -m sctp --dport 8132 -j DNAT --to-destination {}:132",
                pod.ip
            ),
            format!(
                "-A {dn} -d {OUTSIDE_NODE_IP}/32 -p sctp -m sctp --dport 8133 -j DNAT --to-destination {}:133",
                pod.ip
            ),
        ] {
            assert!(t.contains(&want), "missing {want:?} in:\n{t}");
        }
    } else {
        let rs = site.ruleset();
        let hp = chain(&rs, "ip", portmap::HOSTPORTS);
        assert_eq!(hp.len(), 2, "{hp:?}");
        assert_eq!(hp[0].0[0], "sctp dport == 8132");
        assert!(
            hp[0].1.contains(&format!(r#""dnat":{{"addr":"{}","port":132"#, pod.ip)),
            "{}",
            hp[0].1
        );
        assert_eq!(
            hp[1].0[..2],
            [format!("ip daddr == {OUTSIDE_NODE_IP}"), "sctp dport == 8133".into()]
        );
    }
    run(&site, Some(&dir), "CHECK", &pod, &c).expect_ok();

    // Traffic needs SCTP sockets (CONFIG_IP_SCTP), which this machine's kernel lacks ("Protocol
    // not supported"; socat itself is built WITH_SCTP): then only the rules are asserted.
    let probe = pod.ns.exec(&["timeout", "1", "socat", "SCTP-LISTEN:132", "-"]);
    if String::from_utf8_lossy(&probe.stderr).contains("Protocol not supported") {
        eprintln!("sctp_mapping: no SCTP sockets in this kernel: rules checked, traffic not");
    } else {
        let _srv = spawn_in(
            &pod.ns,
            &[
                "socat",
                "SCTP-LISTEN:132,reuseaddr,fork",
                "SYSTEM:echo sctp $SOCAT_PEERADDR",
            ],
        );
        rig::wait_until(
            || {
                !String::from_utf8_lossy(&pod.ns.exec(&["ss", "-HlS", "sport = :132"]).stdout)
                    .trim()
                    .is_empty()
            },
            std::time::Duration::from_secs(10),
            "the SCTP listener on port 132",
        );
        let out = site.outside.exec(&[
            "timeout",
            "5",
            "socat",
            "-T2",
            "-",
            &format!("SCTP:{OUTSIDE_NODE_IP}:8132,connect-timeout=2"),
        ]);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(answer, format!("sctp {OUTSIDE_IP}"));
    }
    run(&site, Some(&dir), "DEL", &pod, &c).expect_ok();
    assert!(chain(&site.ruleset(), "ip", portmap::HOSTPORTS).is_empty());
    assert!(!nat(&site).contains("CNI-DN-"));
}

#[test]
fn conditions_v4_on_input_interface() {
    if !rig::require_reference("conditions_v4_on_input_interface", "bridge") {
        return;
    }
    let site = Site::new("pmc4");
    let dir = PluginDir::new();
    let pod = site.pod("pmc4-a", "cni-pc", "10.98.0.0/24", "ctr-pmc4");
    let _svc = tcp_whoami(&pod.ns, 80, "tcp");
    let m = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
    // [outside → node's uplink address, node → its own uplink address, node → 127.0.0.1]
    let probe = || {
        vec![
            !tcp_ask(&site.outside, OUTSIDE_NODE_IP, 8080).is_empty(),
            !tcp_ask(&site.node, OUTSIDE_NODE_IP, 8080).is_empty(),
            !tcp_ask(&site.node, "127.0.0.1", 8080).is_empty(),
        ]
    };
    // nftables: the conditions prefix the jump in both prerouting and output (as in upstream's
    // nftables backend); locally made packets have no input interface (iifname "").
    for (conds, want_match, reach) in [
        (json!([]), None, vec![true, true, true]),
        // Excludes the outside's interface: only the node itself still reaches the port.
        (
            json!(["iifname", "!=", "out0"]),
            Some("meta iifname != out0"),
            vec![false, true, true],
        ),
        // Matches the outside's interface: reachable from outside (and, since the output
        // hook has no input interface, no longer from the node).
        (
            json!(["iifname \"out0\""]),
            Some("meta iifname == out0"),
            vec![true, false, false],
        ),
        // Address conditions in the same syntax: the outside network is excluded.
        (
            json!(["ip saddr != 192.168.77.0/24"]),
            Some("ip saddr != 192.168.77.0/24"),
            vec![false, false, true],
        ),
    ] {
        // nft-syntax conditions alone would choose nftables; the empty list needs it said.
        let c = conf(
            &pod.result,
            m.clone(),
            json!({"conditionsV4": conds, "backend": "nftables"}),
        );
        // Each ADD rebuilds the shared prerouting/output chains with the new conditions.
        run(&site, Some(&dir), "ADD", &pod, &c).expect_ok();
        let rs = site.ruleset();
        for hook in ["prerouting", "output"] {
            let r = chain(&rs, "ip", hook);
            assert_eq!(r.len(), 1, "{hook}: {r:?}");
            let want: Vec<String> = want_match
                .iter()
                .map(|s| s.to_string())
                .chain(["fib type == local".to_string()])
                .collect();
            assert_eq!(r[0].0[..want.len()], want[..], "{hook} with {conds}: {r:?}");
        }
        assert_eq!(probe(), reach, "conditionsV4 {conds}");
    }
    run(&site, Some(&dir), "DEL", &pod, &conf(&pod.result, m.clone(), json!({}))).expect_ok();
    // iptables: the same conditions in iptables syntax (which alone chooses the iptables
    // layout) land on the attachment's entry rule in CNI-HOSTPORT-DNAT, with the same effect.
    let dn = portmap::iptables::dnat_chain_name(NET, &pod.cid);
    for (conds, want_rule, reach) in [
        (
            json!(["!", "-i", "out0"]),
            "-A CNI-HOSTPORT-DNAT ! -i out0 -p tcp -m comment".to_string(),
            vec![false, true, true],
        ),
        (
            json!(["-i", "out0"]),
            "-A CNI-HOSTPORT-DNAT -i out0 -p tcp -m comment".to_string(),
            vec![true, false, false],
        ),
        (
            json!([
                "!",
                "-s",
                "192.168.77.0/24",
                "-m",
                "comment",
                "--comment",
                "not the outside"
            ]),
            "-A CNI-HOSTPORT-DNAT ! -s 192.168.77.0/24 -p tcp -m comment".to_string(),
            vec![false, false, true],
        ),
        (
            json!(["-m", "tcp", "!", "--sport", "1:1023"]),
            format!("-m multiport --dports 8080 -m tcp ! --sport 1:1023 -j {dn}"),
            vec![true, true, true],
        ),
    ] {
        let c = conf(&pod.result, m.clone(), json!({"conditionsV4": conds}));
        run(&site, Some(&dir), "ADD", &pod, &c).expect_ok();
        let t = nat(&site);
        assert!(t.contains(&want_rule), "missing {want_rule:?} in:\n{t}");
        assert_eq!(probe(), reach, "conditionsV4 {conds}");
        run(&site, Some(&dir), "CHECK", &pod, &c).expect_ok();
        run(&site, Some(&dir), "DEL", &pod, &c).expect_ok();
        assert!(!nat(&site).contains("CNI-DN-"));
    }
}
