//! `cni-multi inspect` on a throw-away node with pods made by cni-multi and by the reference
//! plugins: every attachment reported as created, the leaks made on purpose found (a
//! reservation whose container crashed before its cache entry, a pod whose netns vanished
//! while its veth lived on), `--gc` cleaning exactly those, and nothing changed without it.

use crate::common::rig::{self, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

struct Node {
    ns: TestNs,
    bin: PluginDir,
    conf: TempDir,
    cache: TempDir,
    data: TempDir,
}

impl Node {
    fn cni_multi(&self, args: &[&str], cni_path: &str) -> Outcome {
        // Ours need nothing on PATH; the reference's ipMasq runs iptables.
        let path = if cni_path == rig::REFERENCE_DIR {
            rig::PLUGIN_PATH
        } else {
            ""
        };
        Invocation::cli(args)
            .in_node(&self.ns)
            .path_env(path)
            .cni_path(cni_path)
            .run_cli()
    }

    fn net_add(&self, cid: &str, pod: &TestNs, cni_path: &str, cap: Value) {
        let o = self.cni_multi(
            &[
                "net",
                "add",
                "insnet",
                pod.path_str(),
                "--conf-dir",
                self.conf.as_str(),
                "--cache-dir",
                self.cache.as_str(),
                "--container-id",
                cid,
                "--cap-args",
                &cap.to_string(),
            ],
            cni_path,
        );
        assert!(o.success(), "net add {cid}: {o}");
    }

    fn inspect(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec![
            "inspect",
            "--conf-dir",
            self.conf.as_str(),
            "--cache-dir",
            self.cache.as_str(),
            "--cni-path",
            self.bin.as_str(),
        ];
        args.extend_from_slice(extra);
        let o = self.cni_multi(&args, self.bin.as_str());
        (o.status, o.stdout)
    }

    fn reservations(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.data.join("insnet"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("10."))
            .collect();
        v.sort();
        v
    }

    /// Everything inspect must not change: files, links, rules.
    fn snapshot(&self) -> String {
        let files = rig::run_ok(&[
            "find",
            self.cache.as_str(),
            self.data.as_str(),
            "-printf",
            "%p %s %T@\n",
        ]);
        format!(
            "{files}\n{}\n{}",
            self.ns.ip(&["-o", "link"]),
            self.ns.exec_ok(&["nft", "list", "ruleset"])
        )
    }
}

/// A pod's netns goes, and with it its veth: the node's end is deleted here rather than left
/// to the kernel, which removes it asynchronously (under load, after inspect has looked).
fn pod_dies(node: &TestNs, pod: TestNs) {
    let tag = format!("link-netns {} ", pod.name());
    for l in node
        .ip(&["-o", "link"])
        .lines()
        .filter(|l| l.contains(&tag) || l.ends_with(&tag[..tag.len() - 1]))
    {
        let name = l.split(": ").nth(1).unwrap().split('@').next().unwrap();
        node.ip(&["link", "del", name]);
    }
    drop(pod);
    settle_links(node);
}

/// The kernel removes a dead netns's veth ends asynchronously: wait until it has (else a
/// half-gone veth shows up as an orphan).
fn settle_links(ns: &TestNs) {
    rig::wait_until(
        || !ns.ip(&["-o", "link"]).contains("link-netnsid unknown"),
        std::time::Duration::from_secs(10),
        "the dead netns's veth ends to go",
    );
}

/// Keeps a namespace alive; killed also when the test fails.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn backdate(p: &Path) {
    rig::run_ok(&["touch", "-d", "10 minutes ago", p.to_str().unwrap()]);
}

fn kinds(report: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["containerID"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn inspect_reports_attachments_finds_the_leaks_and_gc_cleans_exactly_them() {
    if !rig::require_root("inspect") || !rig::require_reference("inspect", "bridge") {
        return;
    }
    let node = Node {
        ns: TestNs::new_node("ins-node"),
        bin: PluginDir::new(),
        conf: TempDir::new("ins-conf"),
        cache: TempDir::new("ins-cache"),
        data: TempDir::new("ins-data"),
    };
    let conflist = json!({
        "cniVersion": "1.0.0", "name": "insnet",
        "plugins": [
            {"type": "bridge", "bridge": "cniins0", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "dataDir": node.data.path(),
                      "ranges": [[{"subnet": "10.66.0.0/24"}]]}},
            // nftables: our own table's leaks (G) beside the reference's iptables chains (H);
            // in the iptables layout (the default here) ours are the reference's chains.
            {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(node.conf.join("10-insnet.conflist"), conflist.to_string()).unwrap();
    let ports = |p: u16| json!({"portMappings": [{"hostPort": p, "containerPort": 80, "protocol": "tcp"}]});
    let (pa, pb, pd, pe) = (
        TestNs::new("ins-a"),
        TestNs::new("ins-b"),
        TestNs::new("ins-d"),
        TestNs::new("ins-e"),
    );
    let ours = node.bin.as_str().to_string();
    node.net_add("ctr-a", &pa, &ours, ports(8081));
    // A pod made by the reference plugins (their bridge and host-local; same files).
    node.net_add("ctr-b", &pb, rig::REFERENCE_DIR, json!({}));
    // D crashes before libcni wrote its cache entry: reservation and rules stay, netns goes.
    node.net_add("ctr-d", &pd, &ours, ports(8084));
    std::fs::remove_file(node.cache.join("results/insnet-ctr-d-eth0")).unwrap();
    let d_ip = node.reservations().into_iter().find(|ip| {
        std::fs::read_to_string(node.data.join("insnet").join(ip))
            .unwrap()
            .starts_with("ctr-d")
    });
    let d_ip = d_ip.expect("D's reservation");
    backdate(&node.data.join("insnet").join(&d_ip));
    pod_dies(&node.ns, pd);
    // E's netns file vanished while a process kept the namespace (and so its veth) alive.
    node.net_add("ctr-e", &pe, &ours, json!({}));
    let holder = Holder(
        Command::new(rig::tool("nsenter"))
            .arg(format!("--net={}", pe.path_str()))
            .args(["sleep", "300"])
            .spawn()
            .unwrap(),
    );
    // The namespace stays alive only once the process is in it.
    rig::wait_until(
        || !pe.pids().is_empty(),
        std::time::Duration::from_secs(10),
        "sleep to run in ctr-e's netns",
    );
    let e_path = pe.path_str().to_string();
    rig::run_ok(&["ip", "netns", "del", pe.name()]);
    // G's rules outlived both its cache entry and its reservation.
    let pg = TestNs::new("ins-g");
    node.net_add("ctr-g", &pg, &ours, ports(8087));
    std::fs::remove_file(node.cache.join("results/insnet-ctr-g-eth0")).unwrap();
    for ip in node.reservations() {
        let p = node.data.join("insnet").join(&ip);
        if std::fs::read_to_string(&p).unwrap().starts_with("ctr-g") {
            std::fs::remove_file(p).unwrap();
        }
    }
    pod_dies(&node.ns, pg);
    // H was made by the reference and lost its cache entry and reservation: its iptables
    // chain is all that is left.
    let ph = TestNs::new("ins-h");
    node.net_add("ctr-h", &ph, rig::REFERENCE_DIR, json!({}));
    std::fs::remove_file(node.cache.join("results/insnet-ctr-h-eth0")).unwrap();
    for ip in node.reservations() {
        let p = node.data.join("insnet").join(&ip);
        if std::fs::read_to_string(&p).unwrap().starts_with("ctr-h") {
            std::fs::remove_file(p).unwrap();
        }
    }
    pod_dies(&node.ns, ph);
    // F: a fresh reservation with no cache entry, as an ADD in flight has.
    std::fs::write(node.data.join("insnet/10.66.0.200"), "ctr-f\r\neth0").unwrap();

    // A failed ADD in the invocation log shows up as a recent error.
    let log = node.conf.join("invocations.log");
    let bad = Invocation::new("bridge", "ADD")
        .container_id("ctr-bad")
        .pod(&pa)
        .ifname("eth1")
        .env("CNI_MULTI_LOG", log.to_str().unwrap())
        .in_node(&node.ns)
        .path_env("")
        .stdin_raw(&br#"{"cniVersion":"1.0.0","name":"insnet","type":"bridge","mtu":-1}"#[..])
        .run_ours_in(&node.bin);
    assert!(!bad.success(), "{bad}");

    let before = node.snapshot();
    let (code, out) = node.inspect(&["--json", "--log", log.to_str().unwrap()]);
    assert_eq!(code, 1, "problems found means exit 1:\n{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(node.snapshot(), before, "inspect changed something");
    assert_eq!(r["recentErrors"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(r["recentErrors"][0]["containerID"], "ctr-bad");
    assert_eq!(r["recentErrors"][0]["code"], 7);
    let net = &r["networks"][0];
    assert_eq!(net["name"], "insnet");
    assert_eq!(net["bridge"], "cniins0");
    assert_eq!(net["ipMasq"], true);
    assert_eq!(net["capacity"], 253);
    assert_eq!(net["reserved"], 5, "A, B, D, E, F");
    let att = |cid: &str| {
        net["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["containerID"] == cid)
            .unwrap_or_else(|| panic!("{cid} missing: {out}"))
            .clone()
    };
    let a = att("ctr-a");
    assert_eq!(a["netnsAlive"], true);
    assert_eq!(a["netns"], pa.path_str());
    assert_eq!(a["hostInterfaceExists"], true);
    assert_eq!(a["master"], "cniins0");
    assert_eq!(a["portMappings"][0]["hostPort"], 8081);
    let a_if = a["hostInterface"].as_str().unwrap().to_string();
    assert!(node.ns.link(&a_if).is_some());
    let a_ip = a["ips"][0].as_str().unwrap().to_string();
    assert!(pa.ip(&["-4", "addr", "show", "eth0"]).contains(&a_ip), "{a_ip}");
    let b = att("ctr-b");
    assert_eq!(b["netnsAlive"], true);
    let b_chain = cni_multi::pkg::reference_iptables::masq_chain("insnet", "ctr-b");
    assert_eq!(b["referenceChains"], json!([b_chain]), "{b}");
    // Ours too: ipMasq's default layout on a node with iptables is the reference's (#23).
    let a_chain = cni_multi::pkg::reference_iptables::masq_chain("insnet", "ctr-a");
    assert_eq!(a["referenceChains"], json!([a_chain]), "{a}");
    assert_eq!(b["master"], "cniins0");
    assert!(pb
        .ip(&["-4", "addr", "show", "eth0"])
        .contains(b["ips"][0].as_str().unwrap()));
    assert_eq!(att("ctr-d")["source"], "reservation");
    assert_eq!(att("ctr-e")["netnsAlive"], false);
    assert_eq!(att("ctr-e")["hostInterfaceExists"], true);
    assert_eq!(att("ctr-e")["netns"], e_path.as_str());
    let e_if = att("ctr-e")["hostInterface"].as_str().unwrap().to_string();
    assert_eq!(
        kinds(&r),
        [
            ("leaked-reservation".to_string(), "ctr-d".to_string()),
            ("netns-gone".to_string(), "ctr-e".to_string()),
            ("stale-rule".to_string(), "ctr-g".to_string()),
            ("stale-rule".to_string(), "ctr-h".to_string()),
            ("young-reservation".to_string(), "ctr-f".to_string()),
        ]
    );
    // The tree says the same for people.
    let (code, tree) = node.inspect(&["--log", log.to_str().unwrap()]);
    println!("{tree}");
    assert_eq!(code, 1);
    assert!(tree.contains("network insnet"), "{tree}");
    assert!(tree.contains("bridge cniins0  ipMasq"), "{tree}");
    assert!(
        tree.contains(&format!("ctr-a eth0  {a_ip}  host {a_if}@cniins0")),
        "{tree}"
    );
    assert!(tree.contains("port 8081/tcp -> 80"), "{tree}");
    assert!(tree.contains("! leaked-reservation insnet"), "{tree}");
    assert!(
        tree.contains("recent error: ") && tree.contains("bridge ADD ctr-bad: code 7"),
        "{tree}"
    );

    let rules_before = node.ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(rules_before.contains("ctr-d"), "D's rules are there to be leaked");
    assert!(rules_before.contains("ctr-g"), "G's rules are there to be leaked");
    let h_chain = cni_multi::pkg::reference_iptables::masq_chain("insnet", "ctr-h");
    assert!(rules_before.contains(&h_chain), "H's chain is there to be leaked");
    let (code, cleaned) = node.inspect(&["--gc"]);
    assert_eq!(code, 0, "{cleaned}");
    assert!(
        cleaned.contains("leaked-reservation") && cleaned.contains("netns-gone"),
        "{cleaned}"
    );
    // Exactly the leaks went: D's reservation and rules, E's veth, reservation and cache.
    let left = node.reservations();
    assert!(!left.contains(&d_ip), "{left:?}");
    assert_eq!(left.len(), 3, "A, B and the young F stay: {left:?}");
    assert!(left.contains(&"10.66.0.200".to_string()));
    let rules = node.ns.exec_ok(&["nft", "list", "ruleset"]);
    assert!(!rules.contains("ctr-d"), "{rules}");
    assert!(!rules.contains("ctr-g"), "{rules}");
    assert!(!rules.contains(&h_chain), "{rules}");
    assert!(rules.contains(&b_chain), "B's reference chain stays: {rules}");
    assert!(rules.contains("ctr-a"), "A's rules stay: {rules}");
    assert!(node.ns.link(&e_if).is_none(), "E's veth is gone");
    assert!(node.ns.link(&a_if).is_some(), "A's veth stays");
    assert!(!node.cache.join("results/insnet-ctr-e-eth0").exists());
    assert!(node.cache.join("results/insnet-ctr-a-eth0").exists());
    assert!(node.cache.join("results/insnet-ctr-b-eth0").exists());
    drop(holder);
    // With F's ADD "finished", the node is clean: exit 0.
    std::fs::remove_file(node.data.join("insnet/10.66.0.200")).unwrap();
    let (code, tree) = node.inspect(&[]);
    assert_eq!(code, 0, "{tree}");
    assert!(tree.contains("no problems found"), "{tree}");
}

fn gc_node(tag: &str, plugins: Value) -> Node {
    let node = Node {
        ns: TestNs::new_node(tag),
        bin: PluginDir::new(),
        conf: TempDir::new(&format!("{tag}-conf")),
        cache: TempDir::new(&format!("{tag}-cache")),
        data: TempDir::new(&format!("{tag}-data")),
    };
    let mut plugins = plugins;
    plugins[0]["ipam"] = json!({"type": "host-local", "dataDir": node.data.path(),
        "ranges": [[{"subnet": "10.67.0.0/24"}]]});
    let conflist = json!({"cniVersion": "1.0.0", "name": "insnet", "plugins": plugins});
    std::fs::write(node.conf.join("10-insnet.conflist"), conflist.to_string()).unwrap();
    node
}

/// `inspect --gc` with a plugin path that holds none of the network's plugins: they are
/// cni-multi's own, so they run in-process (and the output says so), and the planted leak (a
/// reservation and port-mapping rules of a pod that died before its cache entry was written)
/// is cleaned and only then reported.
#[test]
fn gc_with_a_wrong_cni_path_runs_the_built_in_plugins_and_says_so() {
    if !rig::require_root("inspect gc_with_a_wrong_cni_path") {
        return;
    }
    let node = gc_node(
        "ins-fb",
        json!([{"type": "bridge", "bridge": "cniinsfb0", "isGateway": true},
               // nftables: its rules name the container in their comments.
               {"type": "portmap", "backend": "nftables", "capabilities": {"portMappings": true}}]),
    );
    let pd = TestNs::new("ins-fbd");
    node.net_add(
        "ctr-fb",
        &pd,
        node.bin.as_str(),
        json!({"portMappings": [{"hostPort": 8090, "containerPort": 80, "protocol": "tcp"}]}),
    );
    std::fs::remove_file(node.cache.join("results/insnet-ctr-fb-eth0")).unwrap();
    let leaked = node.reservations();
    assert_eq!(leaked.len(), 1);
    backdate(&node.data.join("insnet").join(&leaked[0]));
    pod_dies(&node.ns, pd);
    assert!(node.ns.exec_ok(&["nft", "list", "ruleset"]).contains("ctr-fb"));

    let wrong = "/nonexistent/cni/bin";
    let args = [
        "inspect",
        "--gc",
        "--conf-dir",
        node.conf.as_str(),
        "--cache-dir",
        node.cache.as_str(),
        "--cni-path",
        wrong,
    ];
    let o = node.cni_multi(&args, wrong);
    assert_eq!(o.status, 0, "{o}");
    let fallback = o.stdout.lines().next().unwrap_or("");
    assert!(
        fallback.starts_with("fallback: ") && fallback.contains(&format!("not found in --cni-path {wrong:?}")),
        "{o}"
    );
    for t in ["bridge", "host-local", "portmap"] {
        assert!(fallback.contains(t), "{t} named in {fallback:?}");
    }
    assert!(o.stdout.contains("cleaned leaked-reservation insnet ctr-fb"), "{o}");
    assert!(node.reservations().is_empty(), "the reservation is gone");
    assert!(!node.ns.exec_ok(&["nft", "list", "ruleset"]).contains("ctr-fb"));
}

/// A plugin type that is not built in and not in the plugin path stays an honest error:
/// nothing is reported cleaned, the leak is named as not cleaned, exit 1.
#[test]
fn gc_with_a_missing_third_party_plugin_cleans_nothing_and_says_so() {
    if !rig::require_root("inspect gc_with_a_missing_third_party_plugin") {
        return;
    }
    let node = gc_node("ins-tp", json!([{"type": "cm-no-such-plugin"}]));
    let dir = node.data.join("insnet");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("10.67.0.9"), "ctr-tp\r\neth0").unwrap();
    backdate(&dir.join("10.67.0.9"));
    let args = [
        "inspect",
        "--gc",
        "--conf-dir",
        node.conf.as_str(),
        "--cache-dir",
        node.cache.as_str(),
        "--cni-path",
        node.bin.as_str(),
    ];
    let o = node.cni_multi(&args, node.bin.as_str());
    assert_eq!(o.status, 1, "{o}");
    assert!(!o.stdout.contains("cleaned"), "{o}");
    assert!(o.stderr.contains("failed to find plugin \"cm-no-such-plugin\""), "{o}");
    assert!(o.stderr.contains("not cleaned leaked-reservation insnet ctr-tp"), "{o}");
    assert_eq!(node.reservations(), ["10.67.0.9"]);
}
