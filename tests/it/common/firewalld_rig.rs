//! firewalld inside a test's node netns, on a private D-Bus system bus: a `dbus-daemon` with a
//! minimal system-bus config listening on a socket in a temp dir, and `firewalld --nofork`
//! (FirewallBackend=nftables) in its own mount namespace with private dirs bound over `/run`
//! and `/etc/firewalld`. Plugins find it through `DBUS_SYSTEM_BUS_ADDRESS`
//! ([`FirewalldNode::address`]); nothing touches the machine's own bus or firewall. Both
//! daemons are killed on drop (and, as processes in the node netns, by `TestNs`'s drop too).
//!
//! Include with `mod common;` and `use common::firewalld_rig::*;`.
#![allow(dead_code)]

use crate::common::rig::{self, TempDir, TestNs};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long firewalld may take to come up (about a second on an idle machine; the bound only
/// turns a hang into a failure).
const START_BOUND: Duration = Duration::from_secs(90);

const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=@SOCKET@</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
  </policy>
</busconfig>
"#;

const FIREWALLD_CONF: &str = "DefaultZone=public
CleanupOnExit=yes
CleanupModulesOnExit=no
Lockdown=no
IPv6_rpfilter=yes
IndividualCalls=no
LogDenied=off
FirewallBackend=nftables
FlushAllOnReload=yes
";

/// A killed-on-drop daemon.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// firewalld and its bus, running for one node netns.
pub struct FirewalldNode {
    firewalld: Option<Daemon>,
    dbus: Option<Daemon>,
    node_path: String,
    /// `unix:path=<tmp>/bus`: the value of `DBUS_SYSTEM_BUS_ADDRESS` for plugins.
    pub address: String,
    pub tmp: TempDir,
}

/// Whether the tools are installed: `false` (after printing why) skips, except under CI=true,
/// where it fails.
pub fn require_firewalld(test: &str) -> bool {
    if !rig::require_reference(test, "firewall") {
        return false;
    }
    for t in ["firewalld", "firewall-cmd", "dbus-daemon", "unshare", "nft"] {
        if !rig::tool(t).is_file() {
            assert!(
                !rig::in_ci(),
                "{test}: needs {t} (Debian packages firewalld, dbus), and CI=true: failing instead of skipping"
            );
            eprintln!("{test}: skipped: needs {t} (Debian packages firewalld, dbus)");
            return false;
        }
    }
    true
}

impl FirewalldNode {
    /// Starts the bus and firewalld for `node`; panics (with their logs) if firewalld does not
    /// come up.
    pub fn start(node: &TestNs) -> FirewalldNode {
        let tmp = TempDir::new("firewalld");
        for d in ["run", "etc"] {
            std::fs::create_dir(tmp.join(d)).unwrap();
        }
        let socket = tmp.join("bus");
        let conf = tmp.join("bus.conf");
        std::fs::write(&conf, BUS_CONF.replace("@SOCKET@", socket.to_str().unwrap())).unwrap();
        std::fs::write(tmp.join("etc/firewalld.conf"), FIREWALLD_CONF).unwrap();
        let address = format!("unix:path={}", socket.display());
        let mut me = FirewalldNode {
            firewalld: None,
            dbus: None,
            node_path: node.path_str().to_string(),
            address,
            tmp,
        };
        let log = |name: &str| std::fs::File::create(me.tmp.join(name)).unwrap();
        let dbus = Command::new(rig::tool("nsenter"))
            .arg(format!("--net={}", me.node_path))
            .arg("--")
            .arg(rig::tool("dbus-daemon"))
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdin(Stdio::null())
            .stdout(log("dbus.log"))
            .stderr(log("dbus.log"))
            .spawn()
            .expect("start dbus-daemon");
        me.dbus = Some(Daemon(dbus));
        let deadline = Instant::now() + START_BOUND;
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon made no socket: {}", me.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
        me.start_firewalld();
        me
    }

    /// (Re)starts firewalld on the running bus and waits until `firewall-cmd --state` says
    /// running.
    pub fn start_firewalld(&mut self) {
        let run = self.tmp.join("run");
        let etc = self.tmp.join("etc");
        let script = format!(
            "mount --bind {run} /run && mount --bind {etc} /etc/firewalld && \
             exec firewalld --nofork --nopid --system-config {etc} --log-target console",
            run = run.display(),
            etc = etc.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.join("firewalld.log"))
            .unwrap();
        let child = Command::new(rig::tool("nsenter"))
            .arg(format!("--net={}", self.node_path))
            .arg("--")
            .arg(rig::tool("unshare"))
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start firewalld");
        self.firewalld = Some(Daemon(child));
        let deadline = Instant::now() + START_BOUND;
        loop {
            let out = self.cmd(&["--state"]);
            if String::from_utf8_lossy(&out.stdout).trim() == "running" {
                return;
            }
            if let Some(d) = self.firewalld.as_mut() {
                if let Ok(Some(st)) = d.0.try_wait() {
                    panic!("firewalld exited ({st}): {}", self.logs());
                }
            }
            assert!(Instant::now() < deadline, "firewalld did not come up: {}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops firewalld (SIGTERM: it removes its table, as on a node where it is stopped) and
    /// waits for it; the bus stays.
    pub fn stop_firewalld(&mut self) {
        if let Some(mut d) = self.firewalld.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.0.wait();
        }
    }

    /// `firewall-cmd ARGS` through the private bus.
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(rig::tool("firewall-cmd"))
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .stdin(Stdio::null())
            .output()
            .expect("run firewall-cmd")
    }

    /// `firewall-cmd ARGS`, panicking on failure; stdout.
    pub fn cmd_ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "firewall-cmd {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `firewall-cmd --zone=ZONE --list-sources`, sorted.
    pub fn sources(&self, zone: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .cmd_ok(&[&format!("--zone={zone}"), "--list-sources"])
            .split_whitespace()
            .map(String::from)
            .collect();
        v.sort();
        v
    }

    /// The daemons' output so far, for failure messages.
    pub fn logs(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.tmp.join(n)).unwrap_or_default();
        format!(
            "\n--- dbus-daemon:\n{}\n--- firewalld:\n{}",
            read("dbus.log"),
            read("firewalld.log")
        )
    }
}

impl Drop for FirewalldNode {
    fn drop(&mut self) {
        // firewalld first: it leaves the bus, then the bus goes.
        self.firewalld.take();
        self.dbus.take();
    }
}
