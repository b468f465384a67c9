//! `linux::xtables` against the real kernel's legacy x_tables, each test in its own throw-away
//! namespaces, compared with Debian's `iptables-legacy` 1.8.9 (its `-save` tools read back):
//! tables iptables-legacy wrote decode to the rules our builder makes for the same command
//! lines; tables we write print exactly as the same rules written by `iptables-legacy -A`;
//! concurrent iptables-legacy writers (with or without the xtables lock) lose nothing; counters
//! survive our replaces; reading what is not registered registers nothing.

use std::net::IpAddr;

use crate::common::rig::{self, TestNs};
use cni_multi::linux::nft::xt;
use cni_multi::linux::xtables::{self, Family, Policy, Rule, Table};
use cni_multi::linux::NetNs;
use ipnet::IpNet;

/// Root and the legacy tools (the kernel's x_tables are probed by the tests themselves).
fn require(test: &str) -> bool {
    if !rig::require_root(test) {
        return false;
    }
    for t in [
        "iptables-legacy",
        "ip6tables-legacy",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        if !rig::tool(t).is_file() {
            assert!(
                !rig::in_ci(),
                "{test}: needs {t}, and CI=true: failing instead of skipping"
            );
            eprintln!("{test}: skipped: needs {t} (Debian's iptables package)");
            return false;
        }
    }
    true
}

macro_rules! require {
    () => {
        if !require(module_path!()) {
            return;
        }
    };
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One step, as an iptables-legacy command line and as our model's operation.
enum Op {
    /// `-N CHAIN`
    New(&'static str),
    /// `-A CHAIN ARGS` (or `-I CHAIN 1 ARGS` when `prepend`), and the same rule built by us.
    Add(&'static str, bool, Vec<String>, Box<Rule>),
    /// `-P CHAIN DROP`
    Drop(&'static str),
}

fn add(chain: &'static str, args: &str, r: Rule) -> Op {
    Op::Add(chain, false, shell_words(args), Box::new(r))
}

fn ins(chain: &'static str, args: &str, r: Rule) -> Op {
    Op::Add(chain, true, shell_words(args), Box::new(r))
}

/// Splits on spaces, keeping `'…'` together (the comments below).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The reference's ipMasq and portmap rules (and a few more shapes) in `nat`.
fn nat_ops(f: Family) -> Vec<Op> {
    let v6 = f.is_v6();
    let (pod, subnet, mc, host) = if v6 {
        ("fd10::5", "fd10::/64", "ff00::/8", "fd99::1")
    } else {
        ("10.1.0.5", "10.1.0.0/24", "224.0.0.0/4", "192.168.1.1")
    };
    let c = r#"name: "n" id: "c""#;
    let dn = r#"dnat name: "n" id: "c""#;
    let r = || Rule::new(f);
    let pod_port = |p: u16| {
        if v6 {
            format!("[{pod}]:{p}")
        } else {
            format!("{pod}:{p}")
        }
    };
    let mut ops = vec![
        Op::New("CNI-abc"),
        add(
            "CNI-abc",
            &format!("-d {subnet} -j ACCEPT -m comment --comment '{c}'"),
            r().dst(net(subnet), false).comment(c).jump("ACCEPT"),
        ),
        add(
            "CNI-abc",
            &format!("! -d {mc} -j MASQUERADE -m comment --comment '{c}'"),
            r().dst(net(mc), true).comment(c).target(xt::masquerade_target(v6)),
        ),
        add(
            "POSTROUTING",
            &format!("-s {pod} -j CNI-abc -m comment --comment '{c}'"),
            r().src(ip(pod), false).comment(c).jump("CNI-abc"),
        ),
        Op::New("CNI-HOSTPORT-SETMARK"),
        add(
            "CNI-HOSTPORT-SETMARK",
            "-m comment --comment 'CNI portfwd masquerade mark' -j MARK --set-xmark 0x2000/0x2000",
            r().comment("CNI portfwd masquerade mark")
                .target(xt::mark_target(0x2000, 0x2000)),
        ),
        Op::New("CNI-HOSTPORT-MASQ"),
        add(
            "CNI-HOSTPORT-MASQ",
            "-m mark --mark 0x2000/0x2000 -j MASQUERADE",
            r().mark(0x2000, 0x2000).target(xt::masquerade_target(v6)),
        ),
        ins(
            "POSTROUTING",
            "-m comment --comment 'CNI portfwd requiring masquerade' -j CNI-HOSTPORT-MASQ",
            r().comment("CNI portfwd requiring masquerade")
                .jump("CNI-HOSTPORT-MASQ"),
        ),
        Op::New("CNI-HOSTPORT-DNAT"),
        add(
            "PREROUTING",
            "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            r().addrtype_dst(1 << 2).jump("CNI-HOSTPORT-DNAT"),
        ),
        add(
            "OUTPUT",
            "-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            r().addrtype_dst(1 << 2).jump("CNI-HOSTPORT-DNAT"),
        ),
        Op::New("CNI-DN-x"),
        add(
            "CNI-HOSTPORT-DNAT",
            &format!("-m comment --comment '{dn}' -m multiport -p tcp --destination-ports 8080,8081 -j CNI-DN-x"),
            r().proto(6)
                .comment(dn)
                .multiport_dports(&[8080, 8081])
                .jump("CNI-DN-x"),
        ),
        add(
            "CNI-DN-x",
            &format!("-p tcp --dport 8080 -s {subnet} -j CNI-HOSTPORT-SETMARK"),
            r().proto(6)
                .dport(8080)
                .src(net(subnet), false)
                .jump("CNI-HOSTPORT-SETMARK"),
        ),
        add(
            "CNI-DN-x",
            &format!("-p tcp --dport 8080 -j DNAT --to-destination {}", pod_port(80)),
            r().proto(6).dport(8080).target(xt::dnat_target(ip(pod), Some(80))),
        ),
        add(
            "CNI-DN-x",
            &format!("-p udp --dport 53 -d {host} -j DNAT --to-destination {}", pod_port(53)),
            r().proto(17)
                .dport(53)
                .dst(ip(host), false)
                .target(xt::dnat_target(ip(pod), Some(53))),
        ),
        add(
            "CNI-DN-x",
            "-i eth0 -p tcp -m tcp --sport 1000:2000 ! --dport 5 -m comment --comment x -j ACCEPT",
            r().in_iface("eth0", false)
                .proto(6)
                .with(xtables::ext::ports_match(6, (1000, 2000), false, (5, 5), true).unwrap())
                .comment("x")
                .jump("ACCEPT"),
        ),
        add(
            "CNI-DN-x",
            "! -o eth0 -p udp -m udp ! --sport 53 -j ACCEPT",
            r().out_iface("eth0", true)
                .proto(17)
                .with(xtables::ext::ports_match(17, (53, 53), true, (0, u16::MAX), false).unwrap())
                .jump("ACCEPT"),
        ),
        add(
            "CNI-DN-x",
            &format!("-p sctp --dport 9 -j DNAT --to-destination {}", pod_port(9)),
            r().proto(132).dport(9).target(xt::dnat_target(ip(pod), Some(9))),
        ),
    ];
    if !v6 {
        ops.push(add(
            "CNI-DN-x",
            "-p tcp --dport 8080 -s 127.0.0.1 -j CNI-HOSTPORT-SETMARK",
            r().proto(6)
                .dport(8080)
                .src(ip("127.0.0.1"), false)
                .jump("CNI-HOSTPORT-SETMARK"),
        ));
    }
    ops
}

/// The reference firewall's rules and its isolation stages in `filter`, a DROP policy, and a
/// few shapes Docker and admins use (interface prefixes, goto, counting rules).
fn filter_ops(f: Family) -> Vec<Op> {
    let pod = if f.is_v6() { "fd10::5" } else { "10.1.0.5" };
    let r = || Rule::new(f);
    let iso = "CNI firewall plugin rules (ingressPolicy: same-bridge)";
    vec![
        Op::Drop("FORWARD"),
        Op::New("CNI-FORWARD"),
        Op::New("CNI-ADMIN"),
        ins(
            "FORWARD",
            "-m comment --comment 'CNI firewall plugin rules' -j CNI-FORWARD",
            r().comment("CNI firewall plugin rules").jump("CNI-FORWARD"),
        ),
        ins(
            "CNI-FORWARD",
            "-m comment --comment 'CNI firewall plugin admin overrides' -j CNI-ADMIN",
            r().comment("CNI firewall plugin admin overrides").jump("CNI-ADMIN"),
        ),
        add(
            "CNI-FORWARD",
            &format!("-d {pod} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            r().dst(ip(pod), false)
                .ctstate(xt::ctstate::RELATED | xt::ctstate::ESTABLISHED)
                .jump("ACCEPT"),
        ),
        add(
            "CNI-FORWARD",
            &format!("-s {pod} -j ACCEPT"),
            r().src(ip(pod), false).jump("ACCEPT"),
        ),
        Op::New("CNI-ISOLATION-STAGE-1"),
        Op::New("CNI-ISOLATION-STAGE-2"),
        ins(
            "FORWARD",
            &format!("-m comment --comment '{iso}' -j CNI-ISOLATION-STAGE-1"),
            r().comment(iso).jump("CNI-ISOLATION-STAGE-1"),
        ),
        add(
            "CNI-ISOLATION-STAGE-1",
            &format!("-i br0 ! -o br0 -m comment --comment '{iso}' -j CNI-ISOLATION-STAGE-2"),
            r().in_iface("br0", false)
                .out_iface("br0", true)
                .comment(iso)
                .jump("CNI-ISOLATION-STAGE-2"),
        ),
        add(
            "CNI-ISOLATION-STAGE-1",
            &format!("-m comment --comment '{iso}' -j RETURN"),
            r().comment(iso).jump("RETURN"),
        ),
        add(
            "CNI-ISOLATION-STAGE-2",
            &format!("-o br0 -m comment --comment '{iso}' -j DROP"),
            r().out_iface("br0", false).comment(iso).jump("DROP"),
        ),
        add(
            "INPUT",
            "-i veth+ -g CNI-ADMIN",
            r().in_iface("veth+", false).goto("CNI-ADMIN"),
        ),
        add("OUTPUT", &format!("-d {pod}"), r().dst(ip(pod), false)),
        add(
            "OUTPUT",
            "-p udp --dport 53 -j DROP",
            r().proto(17).dport(53).jump("DROP"),
        ),
    ]
}

fn tool(f: Family) -> &'static str {
    f.tool()
}

fn save_tool(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables-legacy-save",
        Family::V6 => "ip6tables-legacy-save",
    }
}

/// Runs the ops with iptables-legacy in `ns`.
fn apply_with_iptables(ns: &TestNs, f: Family, table: &str, ops: &[Op]) {
    for op in ops {
        let mut argv: Vec<String> = vec![tool(f).into(), "-w".into(), "-t".into(), table.into()];
        match op {
            Op::New(c) => argv.extend(["-N".into(), c.to_string()]),
            Op::Drop(c) => argv.extend(["-P".into(), c.to_string(), "DROP".into()]),
            Op::Add(c, prepend, args, _) => {
                if *prepend {
                    argv.extend(["-I".into(), c.to_string(), "1".into()]);
                } else {
                    argv.extend(["-A".into(), c.to_string()]);
                }
                argv.extend(args.iter().cloned());
            }
        }
        let a: Vec<&str> = argv.iter().map(String::as_str).collect();
        ns.exec_ok(&a);
    }
}

/// The ops on a model table.
fn apply_to_model(t: &mut Table, ops: &[Op]) {
    for op in ops {
        match op {
            Op::New(c) => assert!(t.ensure_chain(c).unwrap()),
            Op::Drop(c) => t.set_policy(c, Policy::Drop).unwrap(),
            Op::Add(c, prepend, _, r) => assert!(t.insert_unique(c, (**r).clone(), *prepend).unwrap(), "{c}"),
        }
    }
}

/// The calling thread inside `ns` until dropped.
fn inside(ns: &TestNs) -> cni_multi::linux::NetNsGuard {
    NetNs::open(ns.path()).unwrap().enter().unwrap()
}

/// `*-save` output without its timestamp comments.
fn saved(ns: &TestNs, f: Family, extra: &[&str]) -> String {
    let mut argv = vec![save_tool(f)];
    argv.extend_from_slice(extra);
    ns.exec_ok(&argv)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn decodes_what_iptables_legacy_wrote() {
    require!();
    for f in [Family::V4, Family::V6] {
        for (table, ops) in [("nat", nat_ops(f)), ("filter", filter_ops(f))] {
            let ns = TestNs::new("xt-read");
            apply_with_iptables(&ns, f, table, &ops);
            let got = {
                let _in = inside(&ns);
                xtables::read(f, table).unwrap()
            };
            let mut want = xtables::blob::empty_table(f, table, got.valid_hooks);
            apply_to_model(&mut want, &ops);
            for (w, g) in want.chains.iter().zip(&got.chains) {
                for (a, b) in w.rules.iter().zip(&g.rules) {
                    assert_eq!(a, b, "{f} {table} chain {}", w.name);
                }
                assert_eq!(w, g, "{f} {table} chain {}", w.name);
            }
            assert_eq!(want, got, "{f} {table}");
        }
    }
}

#[test]
fn writes_what_iptables_legacy_writes() {
    require!();
    for f in [Family::V4, Family::V6] {
        for (table, ops) in [("nat", nat_ops(f)), ("filter", filter_ops(f))] {
            let theirs = TestNs::new("xt-theirs");
            let ours = TestNs::new("xt-ours");
            apply_with_iptables(&theirs, f, table, &ops);
            {
                let _in = inside(&ours);
                let changed = xtables::modify(f, table, |t| {
                    apply_to_model(t, &ops);
                    Ok(true)
                })
                .unwrap();
                assert!(changed);
            }
            let want = saved(&theirs, f, &["-t", table]);
            assert!(want.contains("-A "), "{want}");
            assert_eq!(saved(&ours, f, &["-t", table]), want, "{f} {table}");
            // iptables-legacy takes our rules for its own: it finds and deletes them.
            for op in &ops {
                if let Op::Add(c, _, args, _) = op {
                    let mut argv = vec![tool(f), "-w", "-t", table, "-D", c];
                    argv.extend(args.iter().map(String::as_str));
                    ours.exec_ok(&argv);
                }
            }
        }
    }
}

#[test]
fn unchanged_tables_are_not_written_and_unregistered_ones_not_made() {
    require!();
    let ns = TestNs::new("xt-reg");
    let _in = inside(&ns);
    assert!(xtables::registered(Family::V4).is_empty());
    assert_eq!(xtables::read_if_registered(Family::V4, "nat").unwrap(), None);
    assert!(xtables::registered(Family::V4).is_empty(), "a probe registered a table");
    assert!(!xtables::modify(Family::V4, "filter", |_| Ok(false)).unwrap());
    // `read` (like `iptables-legacy -L`) does register the table.
    assert!(!xtables::read(Family::V6, "filter").unwrap().in_use());
    assert_eq!(xtables::registered(Family::V6), ["filter"]);
    let e = xtables::modify(Family::V4, "filter", |t| {
        t.insert_unique("NOPE", Rule::new(Family::V4), false)
    })
    .unwrap_err();
    assert!(e.to_string().contains("NOPE"), "{e}");
}

#[test]
fn counters_survive_our_replace() {
    require!();
    let ns = TestNs::new("xt-cnt");
    let rules = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [5:500]\n:OUTPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n\
                 [7:700] -A FORWARD -s 10.9.0.1/32 -j DOCKER-USER\n[3:300] -A DOCKER-USER -j RETURN\nCOMMIT\n";
    let tmp = rig::TempDir::new("xt-cnt");
    let file = tmp.join("rules");
    std::fs::write(&file, rules).unwrap();
    ns.exec_ok(&["iptables-legacy-restore", "-w", "-c", file.to_str().unwrap()]);
    {
        let _in = inside(&ns);
        xtables::modify(Family::V4, "filter", |t| {
            t.ensure_chain("CNI-FORWARD")?;
            // Ahead of the counted rule: every entry after it moves.
            t.insert_unique("FORWARD", Rule::new(Family::V4).jump("CNI-FORWARD"), true)
        })
        .unwrap();
    }
    let s = saved(&ns, Family::V4, &["-c", "-t", "filter"]);
    for want in [
        ":FORWARD DROP [5:500]",
        "[0:0] -A FORWARD -j CNI-FORWARD",
        "[7:700] -A FORWARD -s 10.9.0.1/32 -j DOCKER-USER",
        "[3:300] -A DOCKER-USER -j RETURN",
    ] {
        assert!(s.contains(want), "missing {want:?} in\n{s}");
    }
}

/// Our inserts (40, and on until the loop is done) race a shell loop of 40
/// `iptables-legacy -A`; `lock_file` is the
/// loop's `XTABLES_LOCKFILE` (ours is always /run/xtables.lock): the same file, or a private one
/// (a writer that does not share our lock: the kernel's EAGAIN makes us redo a lost race).
fn race(lock_file: Option<&str>) -> (usize, usize, String) {
    let ns = TestNs::new("xt-race");
    ns.exec_ok(&["iptables-legacy", "-w", "-N", "THEIRS"]);
    let n = 40;
    let script = format!(
        "ok=0; for i in $(seq 1 {n}); do iptables-legacy -w -A FORWARD -s 10.9.$i.1 -j THEIRS && ok=$((ok+1)); done; echo $ok"
    );
    let mut cmd = std::process::Command::new(rig::tool("nsenter"));
    cmd.arg(format!("--net={}", ns.path_str()))
        .args(["--", "sh", "-c", &script]);
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    match lock_file {
        Some(l) => cmd.env("XTABLES_LOCKFILE", l),
        None => cmd.env_remove("XTABLES_LOCKFILE"),
    };
    let mut child = cmd.spawn().unwrap();
    let mut ours = 0;
    {
        let _in = inside(&ns);
        while ours < n || child.try_wait().unwrap().is_none() {
            ours += 1;
            let (a, b) = (ours / 250, ours % 250);
            xtables::modify(Family::V4, "filter", |t| {
                t.insert_unique(
                    "FORWARD",
                    Rule::new(Family::V4)
                        .src(ip(&format!("10.8.{a}.{b}")), false)
                        .jump("ACCEPT"),
                    false,
                )
            })
            .unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let theirs_ok: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let s = saved(&ns, Family::V4, &["-t", "filter"]);
    for i in 1..=ours {
        let (a, b) = (i / 250, i % 250);
        assert!(
            s.contains(&format!("-A FORWARD -s 10.8.{a}.{b}/32 -j ACCEPT")),
            "ours #{i} lost:\n{s}"
        );
    }
    let theirs_kept = s.lines().filter(|l| l.ends_with("-j THEIRS")).count();
    (
        theirs_ok,
        theirs_kept,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn concurrent_iptables_legacy_writers_lose_nothing() {
    require!();
    // Sharing the lock: every command of both sides lands.
    let (ok, kept, err) = race(None);
    assert_eq!((ok, kept), (40, 40), "{err}");
    // Not sharing it: the kernel refuses whichever replace comes second (EAGAIN). Ours are
    // redone (all of them checked by `race`); iptables-legacy reports its refusals (exit 4,
    // "Resource temporarily unavailable"), and every command it reported done is there. (It
    // may also report a failure whose rule landed: its SET_ADD_COUNTERS after its replace
    // fails with EINVAL when our replace came in between, seen here.)
    let tmp = rig::TempDir::new("xt-lock");
    let (ok, kept, err) = race(Some(tmp.join("other.lock").to_str().unwrap()));
    eprintln!("unlocked iptables-legacy: {ok} of 40 commands reported done, {kept} kept");
    assert!(kept >= ok && kept <= 40, "{ok} reported, {kept} kept: {err}");
}

#[test]
fn a_change_between_our_read_and_replace_is_redone_not_lost() {
    require!();
    let ns = TestNs::new("xt-again");
    let tmp = rig::TempDir::new("xt-again");
    let other_lock = tmp.join("other.lock");
    let mut calls = 0;
    {
        let _in = inside(&ns);
        xtables::modify(Family::V4, "filter", |t| {
            calls += 1;
            if calls == 1 {
                // A writer that does not share our lock lands between our read and replace.
                let out = std::process::Command::new(rig::tool("nsenter"))
                    .arg(format!("--net={}", ns.path_str()))
                    .args(["--", "iptables-legacy", "-A", "INPUT", "-s", "10.7.0.1", "-j", "DROP"])
                    .env("XTABLES_LOCKFILE", &other_lock)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            t.insert_unique(
                "INPUT",
                Rule::new(Family::V4).src(ip("10.7.0.2"), false).jump("ACCEPT"),
                false,
            )
        })
        .unwrap();
    }
    assert_eq!(calls, 2, "the kernel's EAGAIN made us read again");
    let s = saved(&ns, Family::V4, &["-t", "filter"]);
    assert!(
        s.contains("-A INPUT -s 10.7.0.1/32 -j DROP\n-A INPUT -s 10.7.0.2/32 -j ACCEPT\n"),
        "{s}"
    );
}

#[test]
fn the_probe_counts_only_legacy_tables_in_use() {
    require!();
    use cni_multi::linux::filter_probe;
    use cni_multi::linux::nft::{Family as NftFamily, NftSocket};
    let ns = TestNs::new("xt-probe");
    let probe = || {
        let _in = inside(&ns);
        filter_probe::probe(&NftSocket::open().unwrap(), NftFamily::Ip, Some("")).unwrap()
    };
    let p = probe();
    assert!(p.legacy_tables.is_empty() && p.legacy_in_use.is_empty(), "{p:?}");
    ns.exec_ok(&["iptables-legacy-save"]); // registers every table it reads
    ns.exec_ok(&["iptables-legacy", "-w", "-t", "nat", "-L"]);
    let p = probe();
    assert!(p.legacy_tables.contains(&"nat".to_string()), "{p:?}");
    assert!(p.legacy_in_use.is_empty(), "{p:?}");
    ns.exec_ok(&["iptables-legacy", "-w", "-P", "FORWARD", "DROP"]);
    assert_eq!(probe().legacy_in_use, ["filter"]);
    ns.exec_ok(&["iptables-legacy", "-w", "-P", "FORWARD", "ACCEPT"]);
    ns.exec_ok(&["iptables-legacy", "-w", "-t", "nat", "-N", "DOCKER"]);
    assert_eq!(probe().legacy_in_use, ["nat"]);
}
