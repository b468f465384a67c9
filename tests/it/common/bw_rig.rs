//! A rig for bandwidth: a throw-away node netns and a pod netns joined by ptp (ours or the
//! reference's, with host-local in a temp dir), bandwidth chained on ptp's result, and the
//! traffic-control state of the node read back with `tc`/`ip` and normalised.
//!
//! Used as `crate::common::bw_rig`.
#![allow(dead_code)]

use crate::common::rig::TestNs;
use crate::common::veth_rig::{conf, ours, Impl, Out, Rig, REFERENCE_DIR};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

/// The network name every bandwidth config uses (the IFB name hashes it).
pub const NET: &str = "bwnet";

/// One pod on a ptp network, ready for bandwidth.
pub struct Pod {
    pub rig: Rig,
    pub pod: TestNs,
    /// ptp's ADD result (bandwidth's prevResult).
    pub ptp: Value,
    pub cid: String,
    subnet: String,
}

impl Pod {
    /// ptp ADD of `cid` in a fresh pod; `mtu` of the veth (0: the default).
    pub fn new(tag: &str, imp: Impl, cid: &str, mtu: u32) -> Pod {
        let rig = Rig::new(tag, imp);
        for p in ["bandwidth", "portmap"] {
            let target = match imp {
                Impl::Ours => ours(),
                Impl::Reference => Path::new(REFERENCE_DIR).join(p),
            };
            std::os::unix::fs::symlink(target, rig.bin.join(p)).unwrap();
        }
        let pod = rig.pod(&format!("{tag}p"));
        let subnet = "10.71.0.0/24".to_string();
        let mut p = Pod {
            rig,
            pod,
            ptp: Value::Null,
            cid: cid.to_string(),
            subnet,
        };
        let c = p.ptp_conf(mtu);
        p.ptp = p.rig.add(&c, cid, &p.pod, "eth0").expect_ok().json();
        p
    }

    pub fn ptp_conf(&self, mtu: u32) -> Value {
        let mut c = conf("1.0.0", NET, "ptp", json!({}));
        if mtu > 0 {
            c["mtu"] = json!(mtu);
        }
        c["ipam"] = self.rig.host_local(&[json!(self.subnet)]);
        c
    }

    /// The ptp host veth's name.
    pub fn host_veth(&self) -> String {
        self.ptp["interfaces"][0]["name"].as_str().unwrap().to_string()
    }

    /// The pod's address.
    pub fn pod_ip(&self) -> String {
        crate::common::veth_rig::addr_of(&self.ptp, 0)
    }

    /// The node's address on the host veth (ptp's gateway).
    pub fn node_ip(&self) -> String {
        self.ptp["ips"][0]["gateway"].as_str().unwrap().to_string()
    }

    /// A bandwidth config with `extra` keys and ptp's result as prevResult.
    pub fn bw_conf(&self, extra: Value) -> Value {
        let mut c = conf("1.0.0", NET, "bandwidth", extra);
        c["prevResult"] = self.ptp.clone();
        c
    }

    /// Run bandwidth with `cmd` for this pod's container (netns: the pod's).
    pub fn bw(&self, cmd: &str, c: &Value) -> Out {
        self.bw_in(cmd, c, self.pod.path_str(), "eth0")
    }

    pub fn bw_in(&self, cmd: &str, c: &Value, netns: &str, ifname: &str) -> Out {
        self.rig.run("bandwidth", cmd, c, &self.cid, netns, ifname, "")
    }

    /// `tc`/`ip` in the node netns.
    pub fn node_cmd(&self, argv: &[&str]) -> String {
        self.rig.node.exec_ok(argv)
    }

    /// The node's traffic-control state, normalised: qdiscs of every link, the host veth's
    /// ingress filters, the IFB links (`ip -d link`), with the host veth's name replaced and
    /// what the kernel numbers (ifindex, MAC, stats) dropped. The IFB alias is dropped too
    /// (ours records the attachment there; the reference sets none): `ifb_aliases` has them.
    pub fn tc_state(&self) -> Value {
        let veth = self.host_veth();
        let norm = |s: String| -> Value {
            let s = s.replace(&veth, "<host-veth>");
            if s.trim().is_empty() {
                return json!([]);
            }
            serde_json::from_str(&s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
        };
        let qdiscs = norm(self.node_cmd(&["tc", "-j", "-d", "qdisc", "show"]));
        let mut qdiscs: Vec<Value> = qdiscs
            .as_array()
            .unwrap()
            .iter()
            .filter(|q| q["dev"] != "lo")
            .cloned()
            .collect();
        qdiscs.sort_by_key(|q| q.to_string());
        let filters = norm(self.node_cmd(&["tc", "-j", "-d", "filter", "show", "dev", &veth, "ingress"]));
        let ifbs: Vec<Value> = norm(self.node_cmd(&["ip", "-j", "-d", "link", "show", "type", "ifb"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let mut l = l.clone();
                for k in ["ifindex", "address", "ifalias"] {
                    l.as_object_mut().unwrap().remove(k);
                }
                l
            })
            .collect();
        json!({"qdiscs": qdiscs, "ingress_filters": filters, "ifbs": ifbs})
    }

    /// name -> alias of every IFB in the node.
    pub fn ifb_aliases(&self) -> Vec<(String, Option<String>)> {
        let v: Value = serde_json::from_str(&self.node_cmd(&["ip", "-j", "-d", "link", "show", "type", "ifb"]))
            .unwrap_or(json!([]));
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["ifname"].as_str().unwrap().to_string(),
                    l["ifalias"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    /// `tc -j qdisc show dev DEV` of the node.
    pub fn qdiscs(&self, dev: &str) -> Value {
        serde_json::from_str(&self.node_cmd(&["tc", "-j", "qdisc", "show", "dev", dev])).unwrap()
    }
}

/// Runs `f` on a thread inside the netns at `path` (setns is per thread) and returns its value:
/// sockets made there stay in that namespace wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(path: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = path.to_string();
    std::thread::spawn(move || {
        let f0 = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(f0, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// Sends `bytes` over TCP from the netns `from` to `to_ip` in the netns `to` and returns the
/// rate the receiver saw, in bit/s, from its first byte to the end of the stream.
pub fn tcp_rate(from: &str, to: &str, to_ip: &str, bytes: usize) -> f64 {
    tcp_rate_via(from, to, &format!("{to_ip}:0"), None, bytes)
}

/// `tcp_rate` with the listener on `listen` ("ip:port") in `to`, the sender connecting to
/// `connect` (a host port that is DNATed to the listener) or else straight to the listener.
pub fn tcp_rate_via(from: &str, to: &str, listen: &str, connect: Option<&str>, bytes: usize) -> f64 {
    let listen = listen.to_string();
    let listener = in_netns(to, move || TcpListener::bind(&listen).expect("bind"));
    let addr: SocketAddr = match connect {
        Some(c) => c.parse().expect("connect address"),
        None => listener.local_addr().unwrap(),
    };
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut first: Option<Instant> = None;
        loop {
            let n = s.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n;
        }
        let secs = first.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        (total, secs)
    });
    let mut s = in_netns(from, move || TcpStream::connect(addr).expect("connect"));
    let chunk = vec![0x5au8; 16 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (total, secs) = receiver.join().expect("receiver");
    assert_eq!(total, bytes, "every byte arrives");
    total as f64 * 8.0 / secs.max(1e-6)
}
