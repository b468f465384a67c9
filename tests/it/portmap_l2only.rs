//! portmap after an L2-only bridge (no `isGateway`: the node has no address in the pod's
//! subnet, so no route to the pod), the CNI spec's "dbnet" shape: like the reference, ADD
//! installs the mappings and succeeds, CHECK passes, DEL removes them. Only what needs a
//! route (`route_localnet` on the interface towards the pod) is skipped.

use crate::common::fw_rig::*;
use crate::common::rig::{self, Invocation, Outcome, PluginDir, TestNs};
use cni_multi::meta::portmap;
use serde_json::{json, Value};

const NET: &str = "pml2-net";

fn run(node: &TestNs, dir: Option<&PluginDir>, plugin: &str, cmd: &str, pod: &TestNs, conf: &Value) -> Outcome {
    let inv = Invocation::new(plugin, cmd)
        .container_id("ctr-pml2")
        .pod(pod)
        .config(conf)
        .in_node(node);
    match dir {
        Some(d) => inv.env("PATH", "").run_ours_in(d),
        None => inv.run_reference(),
    }
}

#[test]
fn portmap_on_pod_without_route() {
    if !rig::require_reference("portmap_on_pod_without_route", "portmap") {
        return;
    }
    for (ours, backend) in [(true, None), (true, Some("nftables")), (false, None)] {
        let site = Site::new(if ours { "pml2o" } else { "pml2r" });
        let dir = PluginDir::new();
        let d = ours.then_some(&dir);
        let pod = TestNs::new_node("pml2-pod");
        let bridge = json!({
            "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni-l2",
            "ipam": {"type": "host-local", "subnet": "10.93.0.0/24", "dataDir": site.data.as_str()}
        });
        let out = run(&site.node, d, "bridge", "ADD", &pod, &bridge);
        out.expect_ok();
        let prev = out.result().clone();
        let route = site.node.exec(&["ip", "-4", "route", "get", "10.93.0.2"]);
        let route = String::from_utf8_lossy(&route.stdout).into_owned();
        assert!(!route.contains("cni-l2"), "the node has no route to the pod: {route}");
        let mut pm = json!({"cniVersion": "1.0.0", "name": NET, "type": "portmap", "prevResult": prev,
                        "runtimeConfig": {"portMappings": [
                            {"hostPort": 8093, "containerPort": 80, "protocol": "tcp"}]}});
        if let Some(b) = backend {
            pm["backend"] = json!(b);
        }
        run(&site.node, d, "portmap", "ADD", &pod, &pm).expect_ok();
        let save = || site.node.exec_ok(&["iptables-save", "-t", "nat"]);
        if !ours || backend.is_none() {
            // The reference (iptables) installs its DNAT all the same, and so do we.
            assert!(save().contains("--to-destination 10.93.0.2:80"), "{}", save());
            if !ours {
                continue;
            }
        } else {
            let rs = site.ruleset();
            let hp = rules(&rs, "ip", portmap::TABLE, portmap::HOSTPORTS);
            assert_eq!(hp.len(), 1, "{hp:?}");
            assert_eq!(hp[0].1.as_deref(), Some("ctr-pml2"));
            assert_eq!(rules(&rs, "ip", portmap::TABLE, portmap::MASQUERADING).len(), 2);
        }
        run(&site.node, d, "portmap", "CHECK", &pod, &pm).expect_ok();
        run(&site.node, d, "portmap", "DEL", &pod, &pm).expect_ok();
        let rs = site.ruleset();
        assert!(rules(&rs, "ip", portmap::TABLE, portmap::HOSTPORTS).is_empty());
        assert!(rules(&rs, "ip", portmap::TABLE, portmap::MASQUERADING).is_empty());
        assert!(!save().contains("10.93.0.2"), "{}", save());
        run(&site.node, d, "bridge", "DEL", &pod, &bridge).expect_ok();
    }
}
