//! A simulated flannel cluster: an "underlay" netns with a bridge, N node netns joined to
//! it by veths, and on each node what flanneld's vxlan backend makes (flannel.1, routes,
//! neighbour and FDB entries for the other nodes, subnet.env). Pods are then added through
//! our flannel plugin. Everything lives in throw-away namespaces and temp dirs.
#![allow(dead_code)]

use crate::common::rig::*;
use serde_json::{json, Value};
use std::path::PathBuf;

/// A CNI_PATH dir: every plugin name -> cni-multi, so flannel's delegates (bridge,
/// host-local) run in-process.
pub fn flannel_plugin_dir() -> PluginDir {
    PluginDir::new()
}

pub const UNDERLAY_NET: &str = "10.250.0";
pub const POD_NET: &str = "10.244.0.0/16";
pub const VNI: &str = "1";
pub const VXLAN_PORT: &str = "8472";

/// One node: its netns, underlay address, pod subnet and flannel.1 MAC.
pub struct Node {
    pub ns: TestNs,
    pub index: u8,
    pub underlay_ip: String,
    pub subnet: String,
    pub vtep_mac: String,
    pub state: TempDir,
}

impl Node {
    /// `10.244.<index>.0/24`'s gateway, as host-local picks it (.1 on cni0).
    pub fn gateway(&self) -> String {
        format!("10.244.{}.1", self.index)
    }

    pub fn subnet_file(&self) -> PathBuf {
        self.state.join("subnet.env")
    }

    pub fn flannel_data_dir(&self) -> PathBuf {
        self.state.join("flannel")
    }

    pub fn ipam_data_dir(&self) -> PathBuf {
        self.state.join("networks")
    }

    /// The flannel network config a kubelet would have in /etc/cni/net.d (paths in temp dirs).
    pub fn flannel_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "cbr0",
            "type": "flannel",
            "subnetFile": self.subnet_file(),
            "dataDir": self.flannel_data_dir(),
            "ipam": {"dataDir": self.ipam_data_dir()},
            // kube-flannel's cni-conf.json: without isDefaultGateway pods only reach 10.244/16.
            "delegate": {"hairpinMode": true, "isDefaultGateway": true}
        })
    }

    /// Write subnet.env the way flanneld does.
    pub fn write_subnet_env(&self, ipmasq: bool) {
        let text = format!(
            "FLANNEL_NETWORK={POD_NET}\nFLANNEL_SUBNET=10.244.{}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ={ipmasq}\n",
            self.index
        );
        std::fs::write(self.subnet_file(), text).expect("write subnet.env");
    }
}

/// A pod made through flannel: its netns and the address the plugin gave it.
pub struct Pod {
    pub ns: TestNs,
    pub container_id: String,
    pub ip: String,
    pub result: Value,
}

pub struct Cluster {
    pub underlay: TestNs,
    pub nodes: Vec<Node>,
    /// A host on the underlay outside the cluster (for the masquerade check).
    pub outside: TestNs,
    pub outside_ip: String,
    pub plugins: PluginDir,
}

fn mac_of(ns: &TestNs, dev: &str) -> String {
    ns.link(dev).expect("link exists")["address"]
        .as_str()
        .expect("mac")
        .to_string()
}

impl Cluster {
    /// Build the underlay, `n` nodes with flannel.1 and full mesh routes/neigh/fdb, an
    /// outside host, and subnet.env on every node.
    pub fn new(n: u8, ipmasq: bool) -> Cluster {
        let underlay = TestNs::new_node("ul");
        underlay.ip(&["link", "add", "ulbr", "type", "bridge"]);
        underlay.ip(&["link", "set", "ulbr", "up"]);
        let attach = |ns: &TestNs, host_ip: &str, tag: &str| {
            // Both ends made in the underlay, then one end moved into the node.
            let (a, b) = (format!("ul-{tag}"), format!("ulp-{tag}"));
            underlay.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
            underlay.ip(&["link", "set", &a, "master", "ulbr", "up"]);
            underlay.ip(&["link", "set", &b, "netns", ns.name()]);
            ns.ip(&["link", "set", &b, "name", "eth0"]);
            ns.ip(&["addr", "add", &format!("{host_ip}/24"), "dev", "eth0"]);
            ns.ip(&["link", "set", "eth0", "up"]);
        };
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = TestNs::new_node(&format!("node{i}"));
            let underlay_ip = format!("{UNDERLAY_NET}.{}", 10 + i);
            attach(&ns, &underlay_ip, &format!("n{i}"));
            // flanneld's vxlan backend: VNI 1, port 8472, local = the node's address, no learning.
            ns.ip(&[
                "link",
                "add",
                "flannel.1",
                "type",
                "vxlan",
                "id",
                VNI,
                "local",
                &underlay_ip,
                "dev",
                "eth0",
                "dstport",
                VXLAN_PORT,
                "nolearning",
            ]);
            ns.ip(&["link", "set", "flannel.1", "mtu", "1450"]);
            // flanneld gives flannel.1 the subnet's network address as a /32.
            ns.ip(&["addr", "add", &format!("10.244.{i}.0/32"), "dev", "flannel.1"]);
            ns.ip(&["link", "set", "flannel.1", "up"]);
            ns.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
            let vtep_mac = mac_of(&ns, "flannel.1");
            nodes.push(Node {
                ns,
                index: i,
                underlay_ip,
                subnet: format!("10.244.{i}.0/24"),
                vtep_mac,
                state: TempDir::new(&format!("node{i}-state")),
            });
        }
        for a in &nodes {
            for b in nodes.iter().filter(|b| b.index != a.index) {
                let gw = format!("10.244.{}.0", b.index);
                a.ns.ip(&["route", "add", &b.subnet, "via", &gw, "dev", "flannel.1", "onlink"]);
                a.ns.ip(&[
                    "neigh",
                    "replace",
                    &gw,
                    "lladdr",
                    &b.vtep_mac,
                    "dev",
                    "flannel.1",
                    "nud",
                    "permanent",
                ]);
                a.ns.exec_ok(&[
                    "bridge",
                    "fdb",
                    "append",
                    &b.vtep_mac,
                    "dev",
                    "flannel.1",
                    "dst",
                    &b.underlay_ip,
                    "self",
                    "permanent",
                ]);
            }
            a.write_subnet_env(ipmasq);
        }
        let outside = TestNs::new_node("outside");
        let outside_ip = format!("{UNDERLAY_NET}.100");
        attach(&outside, &outside_ip, "out");
        // The outside host knows no route to the pod network: it can only answer a
        // masqueraded (node) source address.
        Cluster {
            underlay,
            nodes,
            outside,
            outside_ip,
            plugins: flannel_plugin_dir(),
        }
    }

    /// Rewrite every node's subnet.env (flanneld restarted with another --ip-masq).
    pub fn set_ipmasq(&self, ipmasq: bool) {
        for n in &self.nodes {
            n.write_subnet_env(ipmasq);
        }
    }

    fn invocation(&self, node: &Node, cmd: &str, pod_ns: Option<&TestNs>, cid: &str) -> Invocation {
        let mut inv = Invocation::new("flannel", cmd)
            .in_node(&node.ns)
            .container_id(cid)
            .config(&node.flannel_conf());
        if let Some(p) = pod_ns {
            inv = inv.pod(p);
        }
        inv
    }

    /// ADD a pod on `node` through our flannel plugin.
    pub fn add_pod(&self, node: &Node, name: &str) -> Result<Pod, Box<Outcome>> {
        let ns = TestNs::new(&format!("pod-{name}"));
        let cid = format!("cid-{name}-{}", std::process::id());
        let out = self.invocation(node, "ADD", Some(&ns), &cid).run_ours_in(&self.plugins);
        if !out.success() {
            return Err(Box::new(out));
        }
        let result = out.result().clone();
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string();
        Ok(Pod {
            ns,
            container_id: cid,
            ip,
            result,
        })
    }

    pub fn del_pod(&self, node: &Node, pod: &Pod) -> Outcome {
        self.invocation(node, "DEL", Some(&pod.ns), &pod.container_id)
            .run_ours_in(&self.plugins)
    }

    pub fn check_pod(&self, node: &Node, pod: &Pod) -> Outcome {
        let mut conf = node.flannel_conf();
        conf["prevResult"] = pod.result.clone();
        Invocation::new("flannel", "CHECK")
            .in_node(&node.ns)
            .pod(&pod.ns)
            .container_id(&pod.container_id)
            .config(&conf)
            .run_ours_in(&self.plugins)
    }
}

/// A running echo server; killed and reaped on drop.
pub struct Echo(std::process::Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A UDP echo of the peer's address: whoever sends a datagram gets back the source address
/// the server saw (socat's SOCAT_PEERADDR), so a check sees whether anything rewrote it.
pub fn start_peer_echo(ns: &TestNs, port: u16) -> Echo {
    let child = std::process::Command::new(tool("nsenter"))
        .arg(format!("--net={}", ns.path_str()))
        .arg("--")
        .arg(tool("socat"))
        .arg(format!("UDP4-RECVFROM:{port},fork,reuseaddr"))
        .arg("SYSTEM:echo $SOCAT_PEERADDR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start socat");
    // Wait until it listens.
    super::rig::wait_until(
        || {
            let out = ns.exec(&["ss", "-Hlun", &format!("sport = :{port}")]);
            !String::from_utf8_lossy(&out.stdout).trim().is_empty()
        },
        std::time::Duration::from_secs(10),
        "the echo to listen",
    );
    Echo(child)
}

/// Ask the echo at `ip:port` from `ns`; the address it saw, or None (timeout / unreachable).
pub fn ask_peer(ns: &TestNs, ip: &str, port: u16) -> Option<String> {
    // A few tries: the first datagram may race a fresh bridge port or ARP on a busy machine.
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let o = std::process::Command::new(tool("nsenter"))
            .arg(format!("--net={}", ns.path_str()))
            .arg("--")
            .arg(tool("sh"))
            .arg("-c")
            .arg(format!("echo hi | {} -T2 - UDP4:{ip}:{port}", tool("socat").display()))
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !s.is_empty() {
            return Some(s);
        }
    }
    None
}
