//! The dhcp rig: a throw-away node netns with a bridge `br0` (10.94.0.1/24) served by
//! dnsmasq, or an uplink `up0` to a separate "server" netns running dnsmasq (for macvlan);
//! the dhcp daemon (ours or the reference's) in the node netns with its socket in a temp
//! dir; every process is killed by a guard on drop, also when the test fails.
#![allow(dead_code)]

use super::rig::{tool, TestNs};
use super::veth_rig::{conf, ours, Impl, Rig, TempDir, REFERENCE_DIR};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub what: String,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGTERM and wait for the exit; returns whether it exited by itself within 10 s.
    pub fn terminate(&mut self) -> bool {
        let Some(mut c) = self.child.take() else { return true };
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Where the DHCP server sits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// dnsmasq on the node's bridge br0 (pods via bridge).
    Bridge,
    /// dnsmasq in another netns behind the node's uplink up0 (pods via macvlan on up0).
    Uplink,
}

pub struct DhcpRig {
    pub rig: Rig,
    pub dir: TempDir,
    pub server_ns: Option<TestNs>,
    pub dnsmasq: Option<Proc>,
    pub daemon: Option<Proc>,
    pub server: Server,
    pub dnsmasq_extra: Vec<String>,
}

pub const NET: &str = "dh";

impl DhcpRig {
    /// The rig without dnsmasq or daemon running yet.
    pub fn bare(prefix: &str, imp: Impl, server: Server) -> DhcpRig {
        let rig = Rig::new(prefix, imp);
        for p in ["macvlan", "dhcp"] {
            let target = match imp {
                Impl::Ours => ours(),
                Impl::Reference => Path::new(REFERENCE_DIR).join(p),
            };
            std::os::unix::fs::symlink(target, rig.bin.join(p)).unwrap();
        }
        let dir = TempDir::new(&format!("{prefix}-dhcp"));
        let server_ns = match server {
            Server::Bridge => {
                rig.node.ip(&["link", "add", "br0", "type", "bridge"]);
                rig.node.ip(&["addr", "add", "10.94.0.1/24", "dev", "br0"]);
                rig.node.ip(&["link", "set", "br0", "up"]);
                None
            }
            Server::Uplink => {
                let srv = TestNs::new_node(&format!("{prefix}s"));
                rig.node.veth_to("up0", &srv, "eth0");
                rig.node.ip(&["link", "set", "up0", "up"]);
                srv.ip(&["addr", "add", "10.94.0.1/24", "dev", "eth0"]);
                srv.ip(&["link", "set", "eth0", "up"]);
                Some(srv)
            }
        };
        DhcpRig {
            rig,
            dir,
            server_ns,
            dnsmasq: None,
            daemon: None,
            server,
            dnsmasq_extra: Vec::new(),
        }
    }

    /// The rig with dnsmasq (2-minute leases, DNS options) and the daemon running.
    pub fn new(prefix: &str, imp: Impl, server: Server) -> DhcpRig {
        let mut r = DhcpRig::bare(prefix, imp, server);
        r.start_dnsmasq(&[]);
        r.start_daemon(&[]);
        r
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("dhcp.sock")
    }

    pub fn leasefile(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn start_dnsmasq(&mut self, extra: &[&str]) {
        let (ns, iface) = match &self.server_ns {
            Some(s) => (s.path_str().to_string(), "eth0"),
            None => (self.rig.node.path_str().to_string(), "br0"),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dnsmasq.log"))
            .unwrap();
        let mut c = Command::new(super::rig::tool("nsenter"));
        c.arg(format!("--net={ns}"))
            .arg("--")
            .arg(super::rig::tool("dnsmasq"))
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--user=root",
                "--group=root",
                &format!("--interface={iface}"),
                "--bind-interfaces",
                "--port=0",
                "--dhcp-range=10.94.0.20,10.94.0.200,255.255.255.0,2m",
                &format!("--dhcp-leasefile={}", self.leasefile().display()),
                &format!("--pid-file={}", self.dir.join("dnsmasq.pid").display()),
                "--dhcp-option=option:router,10.94.0.1",
                "--dhcp-option=option:dns-server,10.94.0.53",
                "--dhcp-option=option:domain-name,example.test",
                "--dhcp-option=option:domain-search,a.example.test",
                "--log-dhcp",
                // dnsmasq pings an address before its first offer and answers only after the
                // ping's 3 s timeout: the server's delay, which would hide the client's.
                "--no-ping",
            ])
            .args(extra)
            .args(&self.dnsmasq_extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = c.spawn().expect("start dnsmasq");
        self.dnsmasq = Some(Proc {
            child: Some(child),
            what: "dnsmasq".into(),
        });
        // dnsmasq creates its lease file once it is set up.
        wait_for(
            || self.leasefile().exists(),
            "dnsmasq lease file",
            Duration::from_secs(10),
        );
    }

    /// The daemon in the node netns: ours called as `dhcp daemon` (argv[0] = dhcp), or the
    /// reference's.
    pub fn start_daemon(&mut self, extra: &[&str]) {
        let bin = self.rig.bin.join("dhcp");
        self.start_daemon_bin(&bin, extra);
    }

    /// The daemon from `bin` (`dhcp daemon` of ours or of the reference).
    pub fn start_daemon_bin(&mut self, bin: &Path, extra: &[&str]) {
        let sock = self.socket();
        self.start_daemon_at(bin, sock.to_str().unwrap(), &sock, extra);
    }

    /// The daemon from `bin` with `-socketpath socketpath`, waiting for its socket to appear
    /// at `appears` (elsewhere with `-hostprefix`).
    pub fn start_daemon_at(&mut self, bin: &Path, socketpath: &str, appears: &Path, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut c = Command::new(super::rig::tool("nsenter"));
        c.arg(format!("--net={}", self.rig.node.path_str()))
            .arg("--")
            .arg(bin)
            .arg("daemon")
            .arg("-socketpath")
            .arg(socketpath)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if bin.canonicalize().ok() == ours().canonicalize().ok() {
            c.env("PATH", "");
        }
        let child = c.spawn().expect("start dhcp daemon");
        self.daemon = Some(Proc {
            child: Some(child),
            what: "dhcp daemon".into(),
        });
        // The socket file appears at bind(), before listen(): wait until a connect succeeds.
        wait_for(
            || std::os::unix::net::UnixStream::connect(appears).is_ok(),
            "dhcp daemon listening on its socket",
            Duration::from_secs(10),
        );
    }

    /// The interface plugin's config with dhcp IPAM: bridge on br0 or macvlan on up0.
    pub fn conf(&self, version: &str, ipam_extra: Value) -> Value {
        let mut ipam = json!({"type": "dhcp", "daemonSocketPath": self.socket()});
        if let (Some(o), Value::Object(e)) = (ipam.as_object_mut(), ipam_extra) {
            o.extend(e);
        }
        match self.server {
            Server::Bridge => conf(version, NET, "bridge", json!({"bridge": "br0", "ipam": ipam})),
            Server::Uplink => conf(version, NET, "macvlan", json!({"master": "up0", "ipam": ipam})),
        }
    }

    /// dnsmasq's leases: (mac, ip, hostname, client id) per line.
    pub fn leases(&self) -> Vec<(String, String, String, String)> {
        std::fs::read_to_string(self.leasefile())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 5).then(|| (f[1].to_string(), f[2].to_string(), f[3].to_string(), f[4].to_string()))
            })
            .collect()
    }

    /// The expiry time dnsmasq records for `ip` (changes when a lease is renewed).
    pub fn expiry_of(&self, ip: &str) -> Option<u64> {
        std::fs::read_to_string(self.leasefile())
            .unwrap_or_default()
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(ip))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
    }

    /// ADD of `cid` on eth0 with a 1.0.0 config, then waits until the daemon has renewed its
    /// lease and dnsmasq has extended it: (config, result, address).
    pub fn add_and_wait_for_renewal(&self, cid: &str, pod: &TestNs) -> (Value, Value, String) {
        let c = self.conf("1.0.0", json!({}));
        let res = self.rig.add(&c, cid, pod, "eth0").expect_ok().json();
        let ip = super::rig::first_ip(&res);
        let first = self.expiry_of(&ip).unwrap();
        wait_for(
            || self.daemon_log().contains(&format!("{cid}/dh/eth0: renewed")),
            "a renewal",
            Duration::from_secs(30),
        );
        wait_for(
            || self.expiry_of(&ip).is_some_and(|e| e > first),
            "dnsmasq to extend the lease",
            Duration::from_secs(10),
        );
        (c, res, ip)
    }

    pub fn lease_of_ip(&self, ip: &str) -> Option<(String, String, String, String)> {
        self.leases().into_iter().find(|l| l.1 == ip)
    }

    /// Runs a verb of the dhcp plugin itself (not via an interface plugin).
    pub fn ipam(&self, cmd: &str, conf: &Value, cid: &str, netns: &str, ifname: &str) -> super::veth_rig::Out {
        let c = json!({"cniVersion": conf["cniVersion"], "name": conf["name"], "type": "dhcp",
            "ipam": conf["ipam"], "cni.dev/valid-attachments": conf["cni.dev/valid-attachments"]});
        self.rig.run("dhcp", cmd, &c, cid, netns, ifname, "")
    }
}

/// Whether a dhcp test can run: `base` (root, and the reference where it is compared) and
/// dnsmasq. Without dnsmasq the test fails under CI=true and says it is skipped otherwise.
pub fn ready(test: &str, base: bool) -> bool {
    if !base {
        return false;
    }
    if !tool("dnsmasq").is_file() {
        return super::rig::skip_or_fail(test, "needs dnsmasq (dnsmasq-base)");
    }
    true
}

/// The client id dnsmasq prints for ours and the reference's: 00 then the text, hex.
pub fn client_id_hex(cid: &str, ifname: &str) -> String {
    std::iter::once(0u8)
        .chain(format!("{cid}/{NET}/{ifname}").bytes())
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The rig's [`wait_until`], with the arguments in the order dhcp tests name them.
pub fn wait_for(cond: impl FnMut() -> bool, what: &str, limit: Duration) {
    super::rig::wait_until(cond, limit, what)
}

impl Drop for DhcpRig {
    fn drop(&mut self) {
        // The logs of a failed test are what explains it.
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.daemon_log());
            let d = std::fs::read_to_string(self.dir.join("dnsmasq.log")).unwrap_or_default();
            eprintln!("--- dnsmasq log ---\n{d}");
        }
    }
}
