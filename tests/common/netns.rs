//! Throw-away network namespaces for tests: unique names, deleted on drop even when the
//! test fails.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A namespace made with `ip netns add`, deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    /// Creates `t-<prefix>-<pid>-<n>`.
    pub fn new(prefix: &str) -> TestNs {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("t-{prefix}-{}-{n}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        let ns = TestNs { name };
        // Loopback up so local traffic works inside.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// /run/netns/<name>.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `cmd` inside the namespace (`ip netns exec`); returns (success, stdout+stderr).
    pub fn exec(&self, cmd: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("run ip netns exec");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s += &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), s)
    }

    /// Runs `ip -n <name> args...` and returns stdout; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip -n {} {:?}: {}",
            self.name,
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ip -n <name> -j args...` and parses the JSON.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-j"];
        a.extend_from_slice(args);
        let s = self.ip(&a);
        if s.trim().is_empty() {
            return serde_json::Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("bad json from ip {args:?}: {e}: {s}"))
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
