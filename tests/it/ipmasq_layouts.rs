//! bridge and ptp `ipMasq` in both layouts (#23), against the kernel in throw-away namespaces:
//!
//! - **iptables** (the default on a node that uses iptables, as upstream's `ipMasqBackend`
//!   unset): after cni-multi's ADD, `iptables-save`, `ip6tables-save` and `nft list ruleset` in
//!   the node print exactly what they print after the reference's ADD (Debian 1.1.1, which
//!   execs iptables-nft) of the same config; the reference's CHECK and DEL accept and remove
//!   ours, ours accept and remove the reference's.
//! - **nftables**: the table upstream v1.9's nftables backend writes
//!   (`pkg/ip/ipmasq_nftables_linux.go`), made here with `nft -f` from the transaction its code
//!   sends through knftables, equals cni-multi's byte for byte (`nft --debug=netlink`), and
//!   cni-multi's DEL and GC remove such rules made by another binary.
//!
//! Our plugins run with an empty PATH: nothing is exec'd.

use crate::common::rig::{
    require_reference, require_root, vanished_netns_path, Invocation, Outcome, PluginDir, TempDir, TestNs,
};
use cni_multi::pkg::masquerade::nftables as nft_layout;
use serde_json::{json, Value};

/// One side of a comparison: a node, a pod, a host-local dir.
struct Side {
    node: TestNs,
    pod: TestNs,
    data: TempDir,
}

impl Side {
    fn new(tag: &str) -> Side {
        let node = TestNs::new_node(&format!("{tag}n"));
        node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Side {
            node,
            pod: TestNs::new(&format!("{tag}p")),
            data: TempDir::new(tag),
        }
    }

    fn conf(&self, plugin: &str, backend: Option<&str>, prev: Option<&Value>) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "masqgold", "type": plugin, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": self.data.as_str(),
                     "ranges": [[{"subnet": "10.71.0.0/24"}], [{"subnet": "fd71::/64"}]]}});
        if plugin == "bridge" {
            c["bridge"] = json!("cni-gold0");
            c["isGateway"] = json!(true);
        }
        if let Some(b) = backend {
            c["ipMasqBackend"] = json!(b);
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        c
    }

    fn run(&self, dir: Option<&PluginDir>, plugin: &str, cmd: &str, netns: &str, conf: &Value) -> Outcome {
        let inv = Invocation::new(plugin, cmd)
            .container_id("ctr-gold")
            .netns(netns)
            .config(conf)
            .in_node(&self.node);
        match dir {
            Some(d) => inv.env("PATH", "").run_ours_in(d),
            None => inv.run_reference(),
        }
    }

    /// iptables-save, ip6tables-save and `nft list ruleset` of the node, without the save
    /// tools' timestamp lines.
    fn rules(&self) -> String {
        let mut s = String::new();
        for argv in [&["iptables-save"][..], &["ip6tables-save"], &["nft", "list", "ruleset"]] {
            for l in self.node.exec_ok(argv).lines().filter(|l| !l.starts_with('#')) {
                s += l;
                s += "\n";
            }
        }
        s
    }
}

/// The rules of a table as `nft --debug=netlink` prints what the kernel holds (the header
/// lines cut to the chain name: they end in handles and positions).
fn netlink(node: &TestNs, family: &str, table: &str) -> String {
    node.exec_ok(&["nft", "--debug=netlink", "list", "table", family, table])
        .lines()
        .filter(|l| l.starts_with("  [") || l.starts_with(&format!("{family} {table} ")))
        .map(|l| match l.strip_prefix(&format!("{family} {table} ")) {
            Some(rest) => rest.split(' ').next().unwrap_or_default().to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// iptables golden for one plugin: our default-backend ADD against the reference's ADD.
fn iptables_golden(plugin: &str) {
    let dir = PluginDir::new();
    let (ours, theirs) = (Side::new("mqgo"), Side::new("mqgr"));
    let r1 = ours.run(
        Some(&dir),
        plugin,
        "ADD",
        ours.pod.path_str(),
        &ours.conf(plugin, None, None),
    );
    r1.expect_ok();
    let r2 = theirs.run(
        None,
        plugin,
        "ADD",
        theirs.pod.path_str(),
        &theirs.conf(plugin, None, None),
    );
    r2.expect_ok();
    let (a, b) = (ours.rules(), theirs.rules());
    assert_eq!(
        a, b,
        "{plugin}: the node's rules after our ADD differ from the reference's"
    );
    for want in [
        "-A POSTROUTING -s 10.71.0.2/32 -m comment --comment \"name: \\\"masqgold\\\" id: \\\"ctr-gold\\\"\" -j CNI-",
        "-A POSTROUTING -s fd71::2/128 -m comment",
        "! -d 224.0.0.0/4 -m comment",
        "! -d ff00::/8 -m comment",
    ] {
        assert!(a.contains(want), "{plugin}: {want:?} missing in\n{a}");
    }
    assert!(
        !a.contains("cni_plugins_masquerade"),
        "{plugin}: no nftables layout\n{a}"
    );
    // The same bytes too (what the listings cannot show: expression order, lengths).
    for fam in ["ip", "ip6"] {
        assert_eq!(
            netlink(&ours.node, fam, "nat"),
            netlink(&theirs.node, fam, "nat"),
            "{plugin}: {fam} nat expressions differ"
        );
    }

    // CHECK, each on the other's rules: the reference's on ours, ours on the reference's.
    let (p1, p2) = (r1.result().clone(), r2.result().clone());
    let check_ours = Invocation::new(plugin, "CHECK")
        .container_id("ctr-gold")
        .pod(&theirs.pod)
        .config(&theirs.conf(plugin, None, Some(&p2)))
        .in_node(&theirs.node)
        .env("PATH", "")
        .run_ours_in(&dir);
    check_ours.expect_ok();
    let ref_check_in_ours = Invocation::new(plugin, "CHECK")
        .container_id("ctr-gold")
        .pod(&ours.pod)
        .config(&ours.conf(plugin, None, Some(&p1)))
        .in_node(&ours.node)
        .run_reference();
    ref_check_in_ours.expect_ok();

    // DEL swapped: the reference's removes ours, ours removes the reference's.
    Invocation::new(plugin, "DEL")
        .container_id("ctr-gold")
        .pod(&ours.pod)
        .config(&ours.conf(plugin, None, Some(&p1)))
        .in_node(&ours.node)
        .run_reference()
        .expect_ok();
    theirs
        .run(
            Some(&dir),
            plugin,
            "DEL",
            theirs.pod.path_str(),
            &theirs.conf(plugin, None, Some(&p2)),
        )
        .expect_ok();
    for s in [&ours, &theirs] {
        let t = s.rules();
        assert!(
            !t.contains("CNI-") && !t.contains("10.71.0.2") && !t.contains("fd71::2"),
            "{plugin}: left after the swapped DEL:\n{t}"
        );
    }
}

#[test]
fn bridge_iptables_layout_is_the_references() {
    if !require_reference("bridge_iptables_layout_is_the_references", "bridge") {
        return;
    }
    iptables_golden("bridge");
}

#[test]
fn ptp_iptables_layout_is_the_references() {
    if !require_reference("ptp_iptables_layout_is_the_references", "ptp") {
        return;
    }
    iptables_golden("ptp");
}

// ---- the nftables layout against upstream v1.9.1's ------------------------------------------

/// What upstream's `setupIPMasqNFTablesWithInterface` (v1.9.1 `pkg/ip/ipmasq_nftables_linux.go`
/// lines 84-151) hands to `nft -f` through knftables v0.0.18 (`objects.go`: tables and chains
/// as `add … { comment %q ; }`, a base chain as `{ type … hook … priority <number> ; }` with
/// `srcnat` parsed to 100, rules as `add rule <family> <table> <chain> <rule> comment %q`), for
/// an attachment with no earlier rules: the table (line 93), `masq_checks` with its comment
/// (96-99), `postrouting` (103-108) flushed and refilled with its three rules (109-125), then
/// one rule per address (131-149) commented by `commentForInstance` (62-73).
fn upstream_setup(network: &str, ifname: &str, cid: &str, ips: &[&str]) -> String {
    let t = "inet cni_plugins_masquerade";
    let mut tx = format!(
        "add table {t} {{ comment \"Masquerading for plugins from github.com/containernetworking/plugins\" ; }}\n\
         add chain {t} masq_checks {{ comment \"Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet\" ; }}\n\
         add chain {t} postrouting {{ type nat hook postrouting priority 100 ; }}\n\
         flush chain {t} postrouting\n\
         add rule {t} postrouting ip daddr == 224.0.0.0/4  return\n\
         add rule {t} postrouting ip6 daddr == ff00::/8  return\n\
         add rule {t} postrouting goto masq_checks\n"
    );
    let comment = nft_layout::comment_for_instance(network, ifname, cid);
    for ip in ips {
        let net: ipnet::IpNet = ip.parse().unwrap();
        let fam = if net.addr().is_ipv4() { "ip" } else { "ip6" };
        tx += &format!(
            "add rule {t} masq_checks {fam} saddr == {} {fam} daddr != {} masquerade comment \"{comment}\"\n",
            net.addr(),
            net.trunc()
        );
    }
    tx
}

fn nft_f(node: &TestNs, tmp: &TempDir, tx: &str) {
    let f = tmp.join("tx.nft");
    std::fs::write(&f, tx).unwrap();
    node.exec_ok(&["nft", "-f", f.to_str().unwrap()]);
}

fn masq_comments(node: &TestNs) -> Vec<String> {
    let rs: Value = serde_json::from_str(&node.exec_ok(&["nft", "-j", "list", "ruleset"])).unwrap();
    rs["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["table"] == "cni_plugins_masquerade")
        .filter_map(|r| r["comment"].as_str().map(String::from))
        .collect()
}

#[test]
fn nftables_layout_is_upstreams() {
    if !require_root("nftables_layout_is_upstreams") {
        return;
    }
    let tmp = TempDir::new("mqnft");
    let (upstream, ours) = (TestNs::new_node("mqnftu"), TestNs::new_node("mqnfto"));
    let sock = cni_multi::linux::nft::NftSocket::open_in_netns_path(ours.path()).unwrap();
    let a = ["10.72.0.2/24", "fd72::2/64"];
    let b = ["10.72.0.3/24"];
    nft_f(&upstream, &tmp, &upstream_setup("masqnft", "eth0", "ctr-a", &a));
    nft_f(&upstream, &tmp, &upstream_setup("masqnft", "eth1", "ctr-b", &b));
    for (ifname, cid, ips) in [("eth0", "ctr-a", &a[..]), ("eth1", "ctr-b", &b[..])] {
        let ips: Vec<ipnet::IpNet> = ips.iter().map(|i| i.parse().unwrap()).collect();
        nft_layout::setup(&sock, "masqnft", ifname, cid, &ips).unwrap();
    }
    let text = |n: &TestNs| n.exec_ok(&["nft", "list", "table", "inet", "cni_plugins_masquerade"]);
    assert_eq!(text(&ours), text(&upstream), "nft list differs from upstream's");
    let t = text(&ours);
    for want in [
        "comment \"Masquerading for plugins from github.com/containernetworking/plugins\"",
        "chain masq_checks {\n\t\tcomment \"Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet\"",
        "type nat hook postrouting priority srcnat; policy accept;",
        "ip6 saddr fd72::2 ip6 daddr != fd72::/64 masquerade comment",
    ] {
        assert!(t.contains(want), "{want:?} missing in\n{t}");
    }
    assert_eq!(
        netlink(&ours, "inet", "cni_plugins_masquerade"),
        netlink(&upstream, "inet", "cni_plugins_masquerade"),
        "expressions differ from upstream's"
    );
    // CHECK in the nftables layout accepts rules upstream made.
    let up = cni_multi::linux::nft::NftSocket::open_in_netns_path(upstream.path()).unwrap();
    nft_layout::check(&up, "masqnft", "eth0", "ctr-a", &a.map(|i| i.parse().unwrap())).unwrap();
}

/// Rules another binary wrote in upstream's nftables layout (a runtime that ran upstream's
/// plugins before cni-multi replaced them) go with cni-multi's DEL, whatever `ipMasqBackend`
/// says (upstream's teardown removes both backends' rules), and with its GC.
#[test]
fn del_and_gc_remove_upstreams_nftables_rules() {
    if !require_root("del_and_gc_remove_upstreams_nftables_rules") {
        return;
    }
    let dir = PluginDir::new();
    let tmp = TempDir::new("mqnftd");
    let node = TestNs::new_node("mqnftd");
    for (cid, ip) in [("ctr-up1", "10.73.0.2/24"), ("ctr-up2", "10.73.0.3/24")] {
        nft_f(&node, &tmp, &upstream_setup("masqdel", "eth0", cid, &[ip]));
    }
    nft_f(
        &node,
        &tmp,
        &upstream_setup("othernet", "eth0", "ctr-up1", &["10.74.0.2/24"]),
    );
    assert_eq!(masq_comments(&node).len(), 3);
    for (plugin, backend) in [("bridge", None), ("ptp", Some("iptables"))] {
        let mut conf = json!({"cniVersion": "1.1.0", "name": "masqdel", "type": plugin, "ipMasq": true,
            "ipam": {"type": "host-local", "dataDir": tmp.as_str(), "subnet": "10.73.0.0/24"}});
        if let Some(b) = backend {
            conf["ipMasqBackend"] = json!(b);
        }
        Invocation::new(plugin, "DEL")
            .container_id("ctr-up1")
            .netns(vanished_netns_path())
            .config(&conf)
            .in_node(&node)
            .env("PATH", "")
            .run_ours_in(&dir)
            .expect_ok();
        let left = masq_comments(&node);
        assert!(
            !left.contains(&nft_layout::comment_for_instance("masqdel", "eth0", "ctr-up1")),
            "{plugin}: {left:?}"
        );
    }
    let left = masq_comments(&node);
    assert_eq!(
        left,
        vec![
            nft_layout::comment_for_instance("masqdel", "eth0", "ctr-up2"),
            nft_layout::comment_for_instance("othernet", "eth0", "ctr-up1"),
        ]
    );
    // GC of the network with no valid attachment: its last rule goes, the other network's stays.
    let mut gc = json!({"cniVersion": "1.1.0", "name": "masqdel", "type": "bridge", "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": tmp.as_str(), "subnet": "10.73.0.0/24"}});
    gc["cni.dev/valid-attachments"] = json!([]);
    Invocation::new("bridge", "GC")
        .config(&gc)
        .in_node(&node)
        .env("PATH", "")
        .run_ours_in(&dir)
        .expect_ok();
    assert_eq!(
        masq_comments(&node),
        vec![nft_layout::comment_for_instance("othernet", "eth0", "ctr-up1")]
    );
}

// ---- the iptables layout's records ----------------------------------------------------------

/// The records dir of the iptables layout's jumps in `node` (`pkg::nft_records`).
fn ipt_records(node: &TestNs, family: &str) -> std::path::PathBuf {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let sock = cni_multi::linux::nft::NftSocket::open_in_netns_path(node.path()).unwrap();
    let cookie = sock.netns_cookie().expect("SO_NETNS_COOKIE (Linux 5.14)");
    std::path::PathBuf::from(crate::common::rig::state_dir())
        .join("nft")
        .join(format!("{}-{cookie}", boot.trim()))
        .join(format!("{family}-nat-ipmasq"))
}

/// The iptables layout's ADD records its POSTROUTING jumps; DEL removes exactly the
/// attachment's chain and jumps whether the record is right, stale or lost, and whether or not
/// something else also jumps into the chain (then POSTROUTING is listed, as the reference would).
#[test]
fn iptables_layout_records_and_their_failures() {
    if !require_root("iptables_layout_records_and_their_failures") {
        return;
    }
    use cni_multi::pkg::masquerade::{self, iptables as ipt_layout};
    let ips = |a: &str| -> Vec<ipnet::IpNet> { a.split(',').map(|i| i.parse().unwrap()).collect() };
    let node = TestNs::new_node("mqrec");
    let sock = cni_multi::linux::nft::NftSocket::open_in_netns_path(node.path()).unwrap();
    // Someone else's POSTROUTING rule, which must survive every DEL.
    node.exec_ok(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        "eth9",
        "-j",
        "MASQUERADE",
    ]);
    let nat = |n: &TestNs| {
        format!(
            "{}{}",
            n.exec_ok(&["iptables", "-t", "nat", "-S"]),
            n.exec_ok(&["ip6tables", "-t", "nat", "-S"])
        )
    };
    let key = |cid: &str| nft_layout::hash_for_instance("recnet", "eth0", cid);
    type Spoil<'a> = Box<dyn Fn(&str) + 'a>;
    let mut cases: Vec<(&str, Spoil)> = vec![
        ("right", Box::new(|_: &str| {})),
        (
            "stale",
            Box::new(|cid: &str| {
                std::fs::write(
                    ipt_records(&node, "ip").join(key(cid)),
                    "cni-multi nft record 1\nPOSTROUTING 999999\n",
                )
                .unwrap()
            }),
        ),
        (
            "lost",
            Box::new(|cid: &str| std::fs::remove_file(ipt_records(&node, "ip").join(key(cid))).unwrap()),
        ),
        (
            "another jump into the chain",
            Box::new(|cid: &str| {
                let chain = ipt_layout::chain_name("recnet", cid);
                node.exec_ok(&[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    "10.9.9.9",
                    "-j",
                    &chain,
                ]);
            }),
        ),
    ];
    for (i, (what, spoil)) in cases.drain(..).enumerate() {
        let cid = format!("ctr-rec{i}");
        let before = nat(&node);
        ipt_layout::setup(
            &sock,
            "recnet",
            "eth0",
            &cid,
            &ips(&format!("10.75.0.{}/24,fd75::{}/64", i + 2, i + 2)),
        )
        .unwrap();
        // The record names the jumps the kernel made, one per family.
        let post = |fam: &str| {
            let f = if fam == "ip" {
                cni_multi::linux::nft::Family::Ip
            } else {
                cni_multi::linux::nft::Family::Ip6
            };
            sock.list_rules(f, "nat", "POSTROUTING")
                .unwrap()
                .last()
                .unwrap()
                .handle
                .unwrap()
        };
        for fam in ["ip", "ip6"] {
            let text = std::fs::read_to_string(ipt_records(&node, fam).join(key(&cid))).unwrap();
            assert_eq!(
                text,
                format!("cni-multi nft record 1\nPOSTROUTING {}\n", post(fam)),
                "{what} {fam}"
            );
        }
        assert!(nat(&node).contains(&ipt_layout::chain_name("recnet", &cid)));
        spoil(&cid);
        masquerade::teardown(&sock, "recnet", "eth0", &cid).unwrap();
        assert_eq!(nat(&node), before, "{what}: DEL left something or took too much");
        assert!(
            !ipt_records(&node, "ip").join(key(&cid)).exists(),
            "{what}: record kept"
        );
        // Idempotent.
        masquerade::teardown(&sock, "recnet", "eth0", &cid).unwrap();
    }
}

/// The other way round: rules of the iptables layout (the default here) go with a DEL whose
/// config now says `"nftables"` (or a value ADD would refuse), and CHECK with an explicit
/// backend looks only in that layout.
#[test]
fn del_removes_the_iptables_layout_whatever_the_key_says() {
    if !require_root("del_removes_the_iptables_layout_whatever_the_key_says") {
        return;
    }
    let dir = PluginDir::new();
    let side = Side::new("mqx");
    for del in ["nftables", "bogus"] {
        let out = side.run(
            Some(&dir),
            "bridge",
            "ADD",
            side.pod.path_str(),
            &side.conf("bridge", None, None),
        );
        out.expect_ok();
        let prev = out.result().clone();
        let ip = prev["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let t = side.rules();
        assert!(t.contains(&format!("-A POSTROUTING -s {ip}/32")), "{t}");
        side.run(
            Some(&dir),
            "bridge",
            "CHECK",
            side.pod.path_str(),
            &side.conf("bridge", Some("iptables"), Some(&prev)),
        )
        .expect_ok();
        let wrong = side.run(
            Some(&dir),
            "bridge",
            "CHECK",
            side.pod.path_str(),
            &side.conf("bridge", Some("nftables"), Some(&prev)),
        );
        assert!(
            !wrong.success() && wrong.msg().unwrap_or("").contains("masquerad"),
            "{wrong}"
        );
        side.run(
            Some(&dir),
            "bridge",
            "DEL",
            side.pod.path_str(),
            &side.conf("bridge", Some(del), Some(&prev)),
        )
        .expect_ok();
        let t = side.rules();
        assert!(!t.contains("CNI-") && !t.contains(&ip), "DEL with {del:?} left:\n{t}");
    }
}
