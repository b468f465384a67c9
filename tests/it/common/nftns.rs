//! nftables helpers on top of the rig's throw-away namespaces.

use super::rig::TestNs;
use cni_multi::linux::nft::NftSocket;
use std::ops::Deref;

/// A throw-away namespace (`rig::TestNs`, removed on drop) with nftables helpers.
pub struct NetNs(TestNs);

impl NetNs {
    pub fn new() -> Self {
        NetNs(TestNs::new("nft"))
    }

    /// A netfilter socket bound to this namespace.
    pub fn nft_socket(&self) -> NftSocket {
        NftSocket::open_in_netns_path(self.0.path()).expect("open nft socket in netns")
    }

    /// Runs a command inside the namespace and asserts it succeeded.
    pub fn run(&self, args: &[&str]) -> String {
        self.0.exec_ok(args)
    }

    /// The namespace's whole ruleset as `nft -j list ruleset` prints it.
    pub fn ruleset(&self) -> serde_json::Value {
        serde_json::from_str(&self.run(&["nft", "-j", "list", "ruleset"])).expect("nft -j json")
    }
}

impl Deref for NetNs {
    type Target = TestNs;
    fn deref(&self) -> &TestNs {
        &self.0
    }
}
