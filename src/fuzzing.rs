//! Entry points of the coverage-guided fuzz targets (`fuzz/`, `make fuzz`): every parser
//! that reads bytes a user, a runtime, a file on disk or the kernel controls, reachable
//! without a kernel call. Each function takes raw fuzzer bytes; an error is a fine answer,
//! a panic is a defect.
//!
//! The plugins whose parsers are private to their file are driven through their verbs:
//! a fuzz build (`--cfg fuzzing`) makes the netlink and nftables sockets refuse to open,
//! so a verb stops at its first kernel call.

use crate::cni::args::CniArgs;
use crate::cni::config::{self, NetConf};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Command};
use crate::cni::version;

/// The plugins [`plugin_config`] knows, in selector order.
pub const PLUGINS: &[&str] = &[
    "bridge",
    "dummy",
    "host-device",
    "ipvlan",
    "loopback",
    "macvlan",
    "ptp",
    "tap",
    "vlan",
    "host-local",
    "static",
    "firewall",
    "flannel",
    "portmap",
    "tuning",
];

fn cmd_args(command: Command, stdin: &[u8], cni_args: &str) -> CmdArgs {
    CmdArgs {
        command,
        container_id: "fuzz-container".into(),
        // Never opened: the parsers run before any netns is.
        netns: "/nonexistent/fuzz-netns".into(),
        ifname: "eth0".into(),
        args: cni_args.into(),
        path: "/nonexistent".into(),
        netns_override: false,
        stdin: stdin.to_vec(),
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Split at the first NUL: (before, after); no NUL means all of it is the second part.
fn split_nul(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[], data),
    }
}

/// One plugin's config parser: `data[0]` picks the plugin (and, for portmap and firewall,
/// the verb), the rest is stdin. The skel's own checks run first, as for a real call.
pub fn plugin_config(data: &[u8]) {
    let Some((&sel, stdin)) = data.split_first() else {
        return;
    };
    let name = PLUGINS[sel as usize % PLUGINS.len()];
    let verb = [Command::Add, Command::Del, Command::Check, Command::Gc][(sel as usize / PLUGINS.len()) % 4];
    plugin_parse(name, verb, stdin, "");
}

/// CNI_ARGS: `data` is `CNI_ARGS NUL stdin`; the parser alone, then the plugins that read
/// CNI_ARGS (host-local, static, tuning, bridge, macvlan, tap) with it.
pub fn cni_args(data: &[u8]) {
    let (args, stdin) = split_nul(data);
    let args = text(args);
    if let Ok(a) = CniArgs::parse(&args) {
        let _ = a.get("IP");
        let _ = a.check_known(&["IP", "MAC", "K8S_POD_NAME"]);
    }
    for name in ["host-local", "static", "tuning", "bridge", "macvlan", "tap"] {
        plugin_parse(name, Command::Add, stdin, &args);
    }
}

fn plugin_parse(name: &str, verb: Command, stdin: &[u8], cni_args: &str) {
    // The skel refuses what is not a JSON object and gates the version before any plugin.
    if version::of_config(stdin).is_err() {
        return;
    }
    let args = cmd_args(verb, stdin, cni_args);
    let _ = match name {
        "bridge" => (crate::interface::bridge::PLUGIN.load)(&args),
        "dummy" => (crate::interface::dummy::PLUGIN.load)(&args),
        "host-device" => (crate::interface::host_device::PLUGIN.load)(&args),
        "ipvlan" => (crate::interface::ipvlan::PLUGIN.load)(&args),
        "loopback" => config::parse::<NetConf>(stdin)
            .and_then(|c| c.prev_result())
            .map(drop)
            .map_err(Into::into),
        "macvlan" => (crate::interface::macvlan::PLUGIN.load)(&args),
        "ptp" => (crate::interface::ptp::PLUGIN.load)(&args),
        "tap" => (crate::interface::tap::PLUGIN.load)(&args),
        "vlan" => (crate::interface::vlan::PLUGIN.load)(&args),
        "host-local" => crate::ipam::host_local::load_conf(stdin, cni_args)
            .map(drop)
            .map_err(Into::into),
        "static" => crate::ipam::static_ipam::load_conf(stdin, cni_args)
            .map(drop)
            .map_err(Into::into),
        "flannel" => crate::meta::flannel::fuzz_parse(stdin, ""),
        "tuning" => crate::meta::tuning::fuzz_parse(&args),
        "firewall" => verb_until_kernel(&crate::meta::firewall::PLUGIN, &args),
        "portmap" => verb_until_kernel(&crate::meta::portmap::PLUGIN, &args),
        _ => Ok(()),
    };
}

/// A verb of a plugin whose parser is private to its file; it stops at its first kernel
/// call (sockets refuse to open in a fuzz build, see the module comment).
fn verb_until_kernel(p: &crate::cni::skel::Plugin, args: &CmdArgs) -> anyhow::Result<()> {
    if !cfg!(fuzzing) {
        // Outside a fuzz build the verb would really program the kernel.
        return Ok(());
    }
    match args.command {
        Command::Add => (p.add)(args).map(drop),
        Command::Del => (p.del)(args),
        Command::Check => p.check.map_or(Ok(()), |f| f(args)),
        _ => p.gc.map_or(Ok(()), |f| f(args)),
    }
}

/// A result (or prevResult) in any version: `data[0]` picks the version the bytes are read
/// in when they name none; every result that parses is printed in, and converted to, every
/// version, and what is printed must parse again.
pub fn result(data: &[u8]) {
    let Some((&sel, json)) = data.split_first() else { return };
    let default = version::ALL[sel as usize % version::ALL.len()];
    let Ok(r) = CniResult::parse_bytes(json, default) else {
        return;
    };
    let _ = r.version();
    for v in version::ALL.iter().chain(&["", "2.0.0", "0.5.0", "x"]) {
        if let Ok(out) = r.to_json(v) {
            CniResult::parse_bytes(out.as_bytes(), v).expect("a printed result parses again");
        }
        if let Ok(c) = r.convert(v) {
            let _ = c.to_value(v);
        }
    }
    // The same bytes as a config's prevResult.
    let mut conf = serde_json::Map::new();
    conf.insert("cniVersion".into(), default.into());
    conf.insert("name".into(), "n".into());
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) {
        conf.insert("prevResult".into(), v);
        let stdin = serde_json::to_vec(&conf).expect("a JSON object serialises");
        if let Ok(n) = config::parse::<NetConf>(&stdin) {
            let _ = n.prev_result();
        }
    }
}

/// The shared config keys (runtimeConfig, args, GC's attachment lists, ipam, dns) and the
/// runtime's side: a network list, as `cni-multi net` loads it, with `NUL`-separated
/// capability arguments injected into each plugin's config as libcni does.
pub fn runtime_config(data: &[u8]) {
    let (caps, list) = split_nul(data);
    if let Ok(n) = config::parse::<NetConf>(list) {
        let _ = n.prev_result();
        let _ = n.ipam_type();
        let _ = n.gc_valid_attachments();
        let _ = n.version();
    }
    let _ = version::of_config(list);
    let Ok(l) = crate::runtime::NetworkList::from_bytes(list) else {
        return;
    };
    let rt = crate::runtime::RuntimeConf {
        container_id: "c".into(),
        ifname: "eth0".into(),
        capability_args: serde_json::from_slice(caps).unwrap_or_default(),
        ..Default::default()
    };
    for p in &l.plugins {
        if let Ok(b) = crate::runtime::build_plugin_config(&l, p, None, &rt) {
            let _ = config::parse::<NetConf>(&b);
        }
    }
}

/// flannel: `subnet.env text NUL config`.
pub fn subnet_env(data: &[u8]) {
    let (env, stdin) = split_nul(data);
    let env = text(env);
    let _ = crate::meta::flannel::parse_subnet_env(&env, "subnet.env");
    let _ = crate::meta::flannel::fuzz_parse(stdin, &env);
}

/// libcni's cache file, as `net del` and `net gc` read it.
pub fn cache_file(data: &[u8]) {
    let _ = crate::runtime::cache::parse_result(data);
    let _ = crate::runtime::cache::parse_attachment(data, "n");
    if let Some(r) = crate::runtime::cache::parse_result(data) {
        let _ = CniResult::parse(&r, "1.1.0");
    }
}

/// tuning's sysctl names: `key NUL ifname`; the path must stay under /proc/sys/net.
pub fn sysctl_name(data: &[u8]) {
    let (ifname, key) = split_nul(data);
    let (key, ifname) = (text(key), text(ifname));
    if let Ok(p) = crate::meta::tuning::fuzz_sysctl_path(&key, &ifname) {
        assert!(p.starts_with("/proc/sys/net"), "{key:?} + {ifname:?} escaped: {p:?}");
        assert!(!p.components().any(|c| c == std::path::Component::ParentDir));
    }
}

/// A DHCP packet as a server could send it: decoded, its options read, encoded again.
pub fn dhcp_packet(data: &[u8]) {
    use crate::ipam::dhcp::packet::Message;
    let Ok(m) = Message::decode(data) else { return };
    let _ = m.message_type();
    let _ = m.server_id();
    let again = Message::decode(&m.encode()).expect("an encoded message decodes");
    let _ = again.message_type();
}

/// The dhcp plugin<->daemon protocol (Go net/rpc, gob) as each side reads it: a call as the
/// daemon does, an answer as the plugin does; whatever reads is encoded again and must read
/// back the same.
pub fn dhcp_rpc(data: &[u8]) {
    use crate::ipam::dhcp::rpc;
    if let Ok(Some((call, n))) = rpc::read_call(data) {
        assert!(n <= data.len());
        let again = rpc::request(&call.method, call.seq, &call.args);
        assert_eq!(rpc::read_call(&again), Ok(Some((call, again.len()))));
    }
    for expect_result in [false, true] {
        if let Ok(Some(a)) = rpc::read_answer(data, expect_result) {
            let again = rpc::response(rpc::ALLOCATE, 0, &a);
            assert_eq!(rpc::read_answer(&again, expect_result), Ok(Some(a)));
        }
    }
    if let Some(end) = rpc::http_head_end(data) {
        let _ = rpc::is_connect(&rpc::first_line(&data[..end]));
    }
}

/// The netlink decoders, `data[0]` picks one; and nftables receive buffers.
pub fn netlink(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    crate::linux::netlink::fuzz_decode(sel, payload);
}

pub fn nft(data: &[u8]) {
    crate::linux::nft::fuzz_decode(data);
}

/// host-local against reservation files on disk: `config NUL (name NUL content NUL)*`. The
/// files are written into a private temp data dir (the config's dataDir and name are
/// replaced, resolvConf dropped), then ADD, CHECK, STATUS, GC and DEL run on them.
pub fn host_local(data: &[u8]) {
    use serde_json::Value;
    let (conf, files) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(Value::Object(mut conf)) = serde_json::from_slice::<Value>(conf) else {
        return;
    };
    let root = fuzz_dir().join("host-local");
    let net = root.join("net");
    let _ = std::fs::remove_dir_all(&root);
    if std::fs::create_dir_all(&net).is_err() {
        return;
    }
    conf.insert("name".into(), "net".into());
    if let Some(Value::Object(ipam)) = conf.get_mut("ipam") {
        ipam.insert("dataDir".into(), root.to_string_lossy().into_owned().into());
        ipam.remove("resolvConf");
    }
    let mut parts = files.split(|&b| b == 0);
    while let (Some(name), Some(content)) = (parts.next(), parts.next()) {
        let name = text(name);
        // Only names inside the network's directory.
        if name.is_empty() || name.len() > 200 || name.contains('/') || name == "." || name == ".." {
            continue;
        }
        let _ = std::fs::write(net.join(name), content);
    }
    let stdin = serde_json::to_vec(&conf).expect("a JSON object serialises");
    let p = &crate::ipam::host_local::PLUGIN;
    let args = cmd_args(Command::Add, &stdin, "");
    let _ = (p.add)(&args);
    for f in [p.check, p.status, p.gc].into_iter().flatten() {
        let _ = f(&args);
    }
    let _ = (p.del)(&args);
}

/// A private scratch directory of this fuzzing process (tmpfs when there is one).
fn fuzz_dir() -> std::path::PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    static SWEEP: std::sync::Once = std::sync::Once::new();
    // Earlier fuzzing processes cannot clean up after themselves (libFuzzer exits): their
    // directories go once their process is gone.
    SWEEP.call_once(|| {
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("cni-multi-fuzz-") {
                if !std::path::Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    });
    std::path::PathBuf::from(base).join(format!("cni-multi-fuzz-{}", std::process::id()))
}

/// The kernel-dump seeds of the `netlink` and `nft` targets, captured from this kernel in a
/// throw-away netns (root): `cargo test --lib fuzzing::seeds -- --ignored`; writes
/// `fuzz/seeds/{netlink,nft}/kernel-*`. `ip`, `bridge`, `tc` and `nft` set the objects up.
#[cfg(test)]
mod seeds {
    use crate::linux::netns::NetNs;
    use std::process::Command;

    struct Ns(String);
    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    const SETUP: &str = r#"
# Not every kernel has every kind (no dummy, vlan or ipvlan here): a failing line is skipped.
ip link add d0 type veth peer name d0p
ip link add br0 type bridge
ip link set br0 type bridge vlan_filtering 1
ip link add v0 type veth peer name v1
ip link set v0 master br0
bridge vlan add dev v0 vid 10 pvid untagged
bridge vlan add dev v0 vid 20-30
ip link add link d0 name d0.5 type vlan id 5
ip link add link d0 name mv0 type macvlan mode bridge
ip link add link d0 name ipv0 type ipvlan mode l3s
ip link add vx0 type vxlan id 42 dstport 4789 dev d0 local 10.1.0.1
ip tuntap add tap0 mode tap
ip link add ifb0 type ifb
for l in d0 d0p br0 v0 v1 d0.5 mv0 ipv0 vx0 ifb0; do ip link set $l up; done
ip link set d0 mtu 1400 address 0a:58:0a:01:00:01 txqueuelen 500 promisc on allmulticast on
ip addr add 10.1.0.1/24 dev d0
ip addr add 10.1.0.200/32 dev d0 label d0:lbl
ip addr add fd00::1/64 dev d0 nodad
ip addr add 192.168.7.1/24 dev br0
ip route add 10.2.0.0/16 via 10.1.0.2
ip route add 10.3.0.0/16 nexthop via 10.1.0.2 weight 1 nexthop via 10.1.0.3 weight 2
ip route add 10.4.0.0/16 dev d0 scope link mtu 1300 advmss 1260 metric 50 table 100
ip route add blackhole 10.5.0.0/16
ip -6 route add fd01::/64 via fd00::2 metric 1024
ip -6 route add fd02::/64 nexthop via fd00::2 nexthop via fd00::3
ip neigh add 10.1.0.9 lladdr aa:bb:cc:dd:ee:01 dev d0 nud permanent
ip -6 neigh add fd00::9 lladdr aa:bb:cc:dd:ee:02 dev d0
bridge fdb append 00:00:00:00:00:00 dev vx0 dst 10.1.0.50
bridge fdb add aa:bb:cc:dd:ee:03 dev vx0 dst 10.1.0.51
ip rule add from 10.1.0.0/24 table 100 priority 100
ip rule add fwmark 0x10/0xff table 101 priority 101
ip -6 rule add to fd00::/64 iif d0 table 102 priority 102
tc qdisc add dev d0 root tbf rate 1mbit burst 32kbit latency 400ms
tc qdisc add dev mv0 ingress
tc filter add dev mv0 parent ffff: protocol all prio 1 u32 match u32 0 0 action mirred egress redirect dev ifb0
tc qdisc add dev ifb0 root handle 1: tbf rate 10mbit burst 64kbit limit 100000
nft -f - <<'NFT'
table inet fz {
  set s4 { type ipv4_addr; flags interval; elements = { 10.0.0.0/8 } }
  set p { type inet_service; elements = { 80, 443 } }
  chain pre { type nat hook prerouting priority -100; policy accept;
    fib daddr type local jump dn comment "hostports"
  }
  chain dn {
    ip saddr 10.1.0.5 tcp dport 8080 dnat ip to 10.1.0.5:80 comment "dnat-a"
    ip6 daddr fd00::5 udp dport 53 dnat ip6 to [fd00::6]:5353
    tcp dport @p counter redirect to :8443
  }
  chain post { type nat hook postrouting priority 100; policy accept;
    ip saddr @s4 ip daddr != 224.0.0.0/4 masquerade fully-random comment "masq"
    oifname "d0" snat ip to 10.1.0.1
    meta mark & 0x2000 == 0x2000 meta mark set meta mark ^ 0x2000 masquerade
  }
  chain fw { type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "br0" oifname != "br0" ip saddr 192.168.7.0/24 accept
    iif "d0" ether saddr aa:bb:cc:dd:ee:ff drop
    ip protocol icmp return
    meta l4proto udp notrack
    jump x
    goto x
  }
  chain x {
    ip daddr @s4 reject
  }
}
table bridge fzb {
  chain f { type filter hook forward priority -300; policy accept;
    iifname "v0" ether saddr != 0a:58:0a:01:00:05 drop comment "spoof"
  }
}
table ip fz4 {
  chain c { type filter hook output priority 0; policy accept;
    meta mark set 0x10
  }
}
NFT
true
"#;

    #[test]
    #[ignore = "needs root and a throw-away netns; writes fuzz/seeds (run by hand)"]
    fn capture_kernel_dumps() {
        let name = format!("cni-fuzz-seeds-{}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success());
        let _ns = Ns(name.clone());
        let ok = Command::new("ip")
            .args(["netns", "exec", &name, "sh", "-c", SETUP])
            .status()
            .unwrap()
            .success();
        assert!(ok, "setting up the objects failed");
        let ns = NetNs::open(format!("/run/netns/{name}")).unwrap();
        let mut nl = crate::linux::netlink::Netlink::in_netns(&ns).unwrap();
        let links = nl.links().unwrap();
        let filtered: Vec<u32> = links.iter().filter(|l| l.name == "mv0").map(|l| l.index).collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let dir = root.join("netlink");
        std::fs::create_dir_all(&dir).unwrap();
        let msgs = crate::linux::netlink::fuzz_seeds(&mut nl, &filtered).unwrap();
        for (i, (sel, m)) in msgs.iter().enumerate() {
            std::fs::write(dir.join(format!("kernel-{sel}-{i:03}")), [&[*sel][..], m].concat()).unwrap();
        }
        let dir = root.join("nft");
        std::fs::create_dir_all(&dir).unwrap();
        let sock = crate::linux::nft::NftSocket::open_in_netns_path(ns.path()).unwrap();
        use crate::linux::nft::Family;
        let mut n = 0;
        for fam in [Family::Inet, Family::Ip, Family::Ip6, Family::Bridge] {
            let msgs = crate::linux::nft::fuzz_seeds(&sock, fam).unwrap();
            for m in &msgs {
                std::fs::write(dir.join(format!("kernel-{fam}-{n:03}")), m).unwrap();
                n += 1;
            }
            // The whole dump as one receive buffer, as the socket reads it.
            std::fs::write(dir.join(format!("kernel-{fam}-all")), msgs.concat()).unwrap();
        }
        assert!(msgs.len() > 20 && n > 10, "{} netlink, {n} nft seeds", msgs.len());
    }
}
