//! Throw-away network namespaces for nftables tests. Every namespace is removed on drop, also
//! when the test panics, so nothing outlives a test (and the root netns is never touched).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use cni_multi::linux::nft::NftSocket;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// True when running as root (namespaces need it); tests print a skip note otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A network namespace `nft-<pid>-<n>`, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("nft-{}-{n}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NetNs { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// A netfilter socket bound to this namespace.
    pub fn nft_socket(&self) -> NftSocket {
        NftSocket::open_in_netns_path(&self.path()).expect("open nft socket in netns")
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("run ip netns exec")
    }

    /// Runs a command inside the namespace and asserts it succeeded.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{:?} in {}: {}",
            args,
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME ARGS…` (iproute2 acting inside the namespace).
    pub fn ip(&self, args: &[&str]) {
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
    }

    /// The namespace's whole ruleset as `nft -j list ruleset` prints it.
    pub fn ruleset(&self) -> serde_json::Value {
        serde_json::from_str(&self.run(&["nft", "-j", "list", "ruleset"])).expect("nft -j json")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
