//! The netfilter sockets a plugin closes after it has exited (src/linux/late_close.rs):
//! when the plugin's process is gone and its stdout is at EOF, its rules are in effect and
//! the child that closes the sockets holds nothing else: not host-local's lock, not stdout.

use crate::common::rig::{self, Invocation, PluginDir, TempDir, TestNs};
use nix::fcntl::{Flock, FlockArg};
use serde_json::json;

#[test]
fn bridge_ipmasq_add_is_in_effect_and_releases_everything_at_exit() {
    if !rig::require_root("bridge_ipmasq_add_is_in_effect_and_releases_everything_at_exit") {
        return;
    }
    let node = TestNs::new_node("lcnode");
    let pod = TestNs::new("lcpod");
    let data = TempDir::new("lcdata");
    let dir = PluginDir::new();
    let conf = json!({"cniVersion": "1.0.0", "name": "lcnet", "type": "bridge", "bridge": "cnilc0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.93.0.0/24", "dataDir": data.as_str()}});
    for i in 0..5 {
        let cid = format!("lc{i}");
        let add = Invocation::new("bridge", "ADD")
            .container_id(&cid)
            .pod(&pod)
            .in_node(&node)
            .config(&conf)
            .run_ours_in(&dir);
        assert_eq!(add.status, 0, "{}", add.stdout);
        // The process has exited and stdout is at EOF: the rule is committed ...
        // (Whichever layout the node's default picks: nft lists both.)
        let rules = node.exec_ok(&["nft", "list", "ruleset"]);
        assert!(
            rules.contains("10.93.0."),
            "no masquerade rule right after ADD: {rules}"
        );
        // ... and nobody holds host-local's lock any more (the socket-closing child must not
        // have inherited it).
        let lock = std::fs::File::open(data.join("lcnet").join("lock")).unwrap();
        let r = Flock::lock(lock, FlockArg::LockExclusiveNonblock);
        assert!(r.is_ok(), "host-local's lock still held after the plugin exited");
        drop(r);
        let del = Invocation::new("bridge", "DEL")
            .container_id(&cid)
            .pod(&pod)
            .in_node(&node)
            .config(&conf)
            .run_ours_in(&dir);
        assert_eq!(del.status, 0, "{}", del.stdout);
        let rules = node.exec_ok(&["nft", "list", "ruleset"]);
        assert!(!rules.contains("10.93.0."), "masquerade rule left after DEL: {rules}");
    }
}
