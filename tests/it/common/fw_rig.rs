//! Firewall test rig: a fake node with an "outside" namespace behind it, pods made by the
//! reference bridge + host-local (without ipMasq, so nothing execs iptables), listeners that
//! report who connected, and readers of `nft -j list ruleset` inside the node.
//!
//! Used as `crate::common::fw_rig`.
#![allow(dead_code)]

use crate::common::rig::{self, Invocation, PluginDir, TempDir, TestNs};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The outside network: node side `.1`, outside host `.2`.
pub const OUTSIDE_NODE_IP: &str = "192.168.77.1";
pub const OUTSIDE_IP: &str = "192.168.77.2";
/// The outside network's IPv6 addresses (`Site::new_dual`): node side `::1`, outside host `::2`.
pub const OUTSIDE_NODE_IP6: &str = "fd77::1";
pub const OUTSIDE_IP6: &str = "fd77::2";

/// A node netns with forwarding on and an outside netns linked to it by a veth pair
/// (`out0` in the node, `eth0` outside). The outside host routes everything to the node, so
/// it could answer pod addresses directly: only masquerading makes it see the node's address.
pub struct Site {
    pub node: TestNs,
    pub outside: TestNs,
    pub data: TempDir,
}

impl Site {
    pub fn new(tag: &str) -> Site {
        let node = TestNs::new_node(&format!("{tag}-node"));
        let outside = TestNs::new_node(&format!("{tag}-out"));
        node.veth_to("out0", &outside, "eth0");
        node.ip(&["addr", "add", &format!("{OUTSIDE_NODE_IP}/24"), "dev", "out0"]);
        node.ip(&["link", "set", "out0", "up"]);
        outside.ip(&["addr", "add", &format!("{OUTSIDE_IP}/24"), "dev", "eth0"]);
        outside.ip(&["link", "set", "eth0", "up"]);
        outside.ip(&["route", "add", "default", "via", OUTSIDE_NODE_IP]);
        node.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        Site {
            node,
            outside,
            data: TempDir::new(&format!("{tag}-data")),
        }
    }

    /// `new` plus IPv6 on the uplink (`fd77::1` node, `fd77::2` outside, no DAD) and IPv6
    /// forwarding in the node; the outside host routes all IPv6 to the node too.
    pub fn new_dual(tag: &str) -> Site {
        let site = Site::new(tag);
        site.node
            .ip(&["addr", "add", &format!("{OUTSIDE_NODE_IP6}/64"), "dev", "out0", "nodad"]);
        site.outside
            .ip(&["addr", "add", &format!("{OUTSIDE_IP6}/64"), "dev", "eth0", "nodad"]);
        site.outside
            .ip(&["-6", "route", "add", "default", "via", OUTSIDE_NODE_IP6]);
        site.node.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        site
    }

    /// A dual-stack pod on `bridge` made by *our* bridge + host-local (empty PATH), with one
    /// address from `subnet4` and one from `subnet6` and default routes for both families.
    pub fn pod_dual_ours(&self, dir: &PluginDir, tag: &str, bridge: &str, subnets: [&str; 2], cid: &str) -> Pod {
        let ns = TestNs::new_node(tag);
        let conf = json!({
            "cniVersion": "1.0.0", "name": format!("net-{bridge}"), "type": "bridge",
            "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": self.data.as_str(),
                     "ranges": [[{"subnet": subnets[0]}], [{"subnet": subnets[1]}]],
                     "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}
        });
        let out = Invocation::new("bridge", "ADD")
            .container_id(cid)
            .pod(&ns)
            .config(&conf)
            .in_node(&self.node)
            .env("PATH", "")
            .run_ours_in(dir);
        out.expect_ok();
        Pod::from_result(ns, cid, bridge, out.result().clone())
    }

    /// A pod on `bridge` with an address from `subnet`, made by the reference bridge plugin.
    pub fn pod(&self, tag: &str, bridge: &str, subnet: &str, cid: &str) -> Pod {
        let ns = TestNs::new_node(tag);
        let conf = json!({
            "cniVersion": "1.0.0", "name": format!("net-{bridge}"), "type": "bridge",
            "bridge": bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {"type": "host-local", "subnet": subnet, "dataDir": self.data.as_str(),
                     "routes": [{"dst": "0.0.0.0/0"}]}
        });
        let out = Invocation::new("bridge", "ADD")
            .container_id(cid)
            .pod(&ns)
            .config(&conf)
            .in_node(&self.node)
            .run_reference();
        out.expect_ok();
        Pod::from_result(ns, cid, bridge, out.result().clone())
    }

    /// The node's nftables ruleset, `nft -j list ruleset` (the nft binary is used by tests only).
    pub fn ruleset(&self) -> Value {
        ruleset(&self.node)
    }
}

pub struct Pod {
    pub ns: TestNs,
    pub cid: String,
    /// `10.x.y.z/nn`
    pub cidr: String,
    pub ip: String,
    /// The IPv6 address, if the pod has one (`pod_dual_ours`).
    pub ip6: Option<String>,
    /// The bridge's ADD result (a prevResult for chained plugins).
    pub result: Value,
    pub host_veth: String,
}

impl Pod {
    fn from_result(ns: TestNs, cid: &str, bridge: &str, result: Value) -> Pod {
        let addrs: Vec<String> = result["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["address"].as_str().unwrap().to_string())
            .collect();
        let ip = addrs.iter().find(|a| !a.contains(':')).unwrap().clone();
        let ip6 = addrs
            .iter()
            .find(|a| a.contains(':'))
            .map(|a| a.split('/').next().unwrap().to_string());
        let host_veth = result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["sandbox"].is_null() && i["name"] != bridge)
            .map(|i| i["name"].as_str().unwrap().to_string())
            .unwrap();
        Pod {
            ns,
            cid: cid.to_string(),
            cidr: ip.clone(),
            ip: ip.split('/').next().unwrap().to_string(),
            ip6,
            result,
            host_veth,
        }
    }
}

pub fn ruleset(ns: &TestNs) -> Value {
    let out = ns.exec_ok(&["nft", "-j", "list", "ruleset"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j output is not JSON ({e}): {out}"))
}

/// `nft list table FAMILY NAME` as text (empty if there is no such table).
pub fn table_text(ns: &TestNs, family: &str, name: &str) -> String {
    let out = ns.exec(&["nft", "list", "table", family, name]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rules of one chain from a `nft -j` ruleset: (expression list, comment).
pub fn rules(ruleset: &Value, family: &str, table: &str, chain: &str) -> Vec<(Value, Option<String>)> {
    ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["family"] == family && r["table"] == table && r["chain"] == chain)
        .map(|r| (r["expr"].clone(), r["comment"].as_str().map(String::from)))
        .collect()
}

/// Whether the ruleset has this chain.
pub fn has_chain(ruleset: &Value, family: &str, table: &str, chain: &str) -> bool {
    ruleset["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("chain"))
        .any(|c| c["family"] == family && c["table"] == table && c["name"] == chain)
}

/// A `match` statement of nft's JSON as (left key path, op, right), e.g.
/// `("payload ip saddr", "==", "10.0.0.5")`, for compact assertions.
pub fn matches(expr: &Value) -> Vec<String> {
    expr.as_array()
        .unwrap()
        .iter()
        .map(|st| {
            if let Some(m) = st.get("match") {
                let left = &m["left"];
                let l = if let Some(p) = left.get("payload") {
                    format!(
                        "{} {}",
                        p["protocol"].as_str().unwrap_or(""),
                        p["field"].as_str().unwrap_or("")
                    )
                } else if let Some(meta) = left.get("meta") {
                    format!("meta {}", meta["key"].as_str().unwrap_or(""))
                } else if let Some(f) = left.get("fib") {
                    format!("fib {}", f["result"].as_str().unwrap_or(""))
                } else if let Some(ct) = left.get("ct") {
                    format!("ct {}", ct["key"].as_str().unwrap_or(""))
                } else {
                    left.to_string()
                };
                let right = &m["right"];
                let r = if let Some(p) = right.get("prefix") {
                    format!("{}/{}", p["addr"].as_str().unwrap(), p["len"])
                } else if let Some(s) = right.as_str() {
                    s.to_string()
                } else {
                    right.to_string()
                };
                format!("{l} {} {r}", m["op"].as_str().unwrap_or("?"))
            } else {
                st.to_string()
            }
        })
        .collect()
}

/// A background process (server) killed on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `argv` in `ns` in the background.
pub fn spawn_in(ns: &TestNs, argv: &[&str]) -> Bg {
    let child = Command::new(rig::tool("nsenter"))
        .arg(format!("--net={}", ns.path_str()))
        .arg("--")
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    Bg(child)
}

/// A TCP server on `port` that answers each connection with `<tag> <peer address>`.
pub fn tcp_whoami(ns: &TestNs, port: u16, tag: &str) -> Bg {
    let bg = spawn_in(
        ns,
        &[
            "socat",
            &format!("TCP-LISTEN:{port},reuseaddr,fork"),
            &format!("SYSTEM:echo {tag} $SOCAT_PEERADDR"),
        ],
    );
    wait_listening(ns, port, "tcp");
    bg
}

/// A UDP server on `port` that answers each datagram with `<tag> <peer address>`.
/// One process answers every datagram itself: socat's fork + `sh` per datagram could take
/// longer than a client waits on a loaded machine, which made UDP checks flaky.
pub fn udp_whoami(ns: &TestNs, port: u16, tag: &str) -> Bg {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port}))\n\
         while True:\n    d, a = s.recvfrom(2048)\n    s.sendto(('{tag} %s\\n' % a[0]).encode(), a)\n"
    );
    let bg = spawn_in(ns, &["/usr/bin/python3", "-c", &script]);
    wait_listening(ns, port, "udp");
    bg
}

/// An IPv6-only TCP server on `port` (it may share the port with an IPv4 `tcp_whoami`),
/// answering `<tag> <peer address>`; socat prints IPv6 peers as `[0000:…:0002]`, so compare
/// answers through `canonical`.
pub fn tcp6_whoami(ns: &TestNs, port: u16, tag: &str) -> Bg {
    let bg = spawn_in(
        ns,
        &[
            "socat",
            &format!("TCP6-LISTEN:{port},reuseaddr,fork,ipv6only=1"),
            &format!("SYSTEM:echo {tag} $SOCAT_PEERADDR"),
        ],
    );
    wait_listening(ns, port, "tcp6");
    bg
}

/// A whoami answer with a bracketed, expanded IPv6 peer (`tag [fd77:0:…:2]`) rewritten to the
/// address's usual form (`tag fd77::2`); IPv4 answers are unchanged.
pub fn canonical(answer: &str) -> String {
    answer
        .split(' ')
        .map(|w| {
            w.strip_prefix('[')
                .and_then(|w| w.strip_suffix(']'))
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok())
                .map_or_else(|| w.to_string(), |a| a.to_string())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn wait_listening(ns: &TestNs, port: u16, proto: &str) {
    let flag = match proto {
        "tcp" => "-ltnH",
        "tcp6" => "-ltnH6",
        _ => "-lunH",
    };
    super::rig::wait_until(
        || {
            let out = ns.exec(&["ss", flag, &format!("sport = :{port}")]);
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        },
        Duration::from_secs(10),
        &format!("a {proto} listener on port {port} in {}", ns.name()),
    );
}

/// Connect over TCP from `ns` to `addr:port`; the server's line, or "" when nothing answered.
pub fn tcp_ask(ns: &TestNs, addr: &str, port: u16) -> String {
    let target = if addr.contains(':') {
        format!("TCP:[{addr}]:{port}")
    } else {
        format!("TCP:{addr}:{port}")
    };
    let out = ns.exec(&[
        "timeout",
        "5",
        "socat",
        "-T2",
        "-",
        &format!("{target},connect-timeout=2"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Send one UDP datagram from `ns` (from `sport` if given) to `addr:port`; the reply or "".
pub fn udp_ask(ns: &TestNs, addr: &str, port: u16, sport: Option<u16>) -> String {
    let mut target = if addr.contains(':') {
        format!("UDP:[{addr}]:{port}")
    } else {
        format!("UDP:{addr}:{port}")
    };
    if let Some(s) = sport {
        target += &format!(",sourceport={s},reuseaddr");
    }
    // UDP may lose a datagram (e.g. while a fresh neighbour entry resolves on a loaded
    // machine): ask up to three times before calling the service unreachable.
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // After stdin's EOF socat waits `-t` seconds for the reply, then exits even when it
        // came at once: 0.5 s first (socat's default), longer on retries, since the server's
        // fork + `sh` per datagram can take more than that on a loaded machine.
        let wait = ["0.5", "1", "2"][attempt];
        let out = ns.exec(&[
            "sh",
            "-c",
            &format!("echo hi | timeout 4 socat -t{wait} -T2 - {target}"),
        ]);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !answer.is_empty() {
            return answer;
        }
    }
    String::new()
}
