//! Keys in any case, per plugin family, through the binaries: what the reference plugins
//! (Debian's 1.1.1, Go's encoding/json) do with `"IPMasq"`, `"RuntimeConfig"`,
//! `"PortMappings"`, `"SysCtl"` or a static IPAM's `"Addresses"`, cni-multi does too, and a
//! misspelt key (not a case variant) is ignored by both. Each run is a fresh node and pod.
//! The table tests of the rule itself are in src/cni/gokeys.rs; bridge, host-local and
//! ptp's dns are compared with the reference in their *_reference.rs files.

use crate::common::rig::require_reference;
use crate::common::veth_rig::{conf, ours, Impl, Rig, REFERENCE_DIR};
use serde_json::{json, Value};
use std::path::Path;

fn rig(tag: &str, imp: Impl) -> Rig {
    let r = Rig::new(&format!("{tag}{}", if imp == Impl::Ours { "o" } else { "r" }), imp);
    for p in ["portmap", "tuning"] {
        let target = match imp {
            Impl::Ours => ours(),
            Impl::Reference => Path::new(REFERENCE_DIR).join(p),
        };
        std::os::unix::fs::symlink(target, r.bin.join(p)).unwrap();
    }
    r
}

fn ptp(rig: &Rig, subnet: &str, extra: Value) -> Value {
    let mut c = conf("0.4.0", "gk", "ptp", extra);
    c["ipam"] = rig.host_local(&[json!(subnet)]);
    c
}

/// The node's whole packet filter (iptables-nft's rules show there too).
fn ruleset(rig: &Rig) -> String {
    rig.node.exec_ok(&["nft", "list", "ruleset"])
}

/// ptp with `extra`: whether the node masquerades the pod's address afterwards.
fn masquerades(imp: Impl, extra: Value) -> bool {
    let rig = rig("gkm", imp);
    let pod = rig.pod("gkm");
    let c = ptp(&rig, "10.67.0.0/24", extra);
    let r = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    let ip = r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let rules = ruleset(&rig);
    assert!(rig.del(&c, "c1", pod.path_str(), "eth0").success());
    rules.contains(&ip) && rules.contains("masquerade")
}

#[test]
fn ipmasq_in_any_case() {
    if !require_reference("go_keys", "ptp") {
        return;
    }
    for imp in [Impl::Reference, Impl::Ours] {
        assert!(masquerades(imp, json!({"ipMasq": true})), "{imp:?}");
        assert!(masquerades(imp, json!({"IPMasq": true})), "{imp:?}");
        assert!(masquerades(imp, json!({"ipmasq": true})), "{imp:?}");
        assert!(
            !masquerades(imp, json!({"ip_masq": true})),
            "{imp:?}: not a spelling of ipMasq"
        );
    }
}

/// ptp then portmap with `runtime` as the portmap config's runtimeConfig (under `key`):
/// whether the host port shows up in the node's rules.
fn maps_port(imp: Impl, key: &str, runtime: Value) -> bool {
    let rig = rig("gkp", imp);
    let pod = rig.pod("gkp");
    let c = ptp(&rig, "10.68.0.0/24", json!({}));
    let r = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    let mut pm = conf(
        "0.4.0",
        "gk",
        "portmap",
        json!({"capabilities": {"portMappings": true}}),
    );
    pm[key] = runtime;
    pm["prevResult"] = r;
    let out = rig.run("portmap", "ADD", &pm, "c1", pod.path_str(), "eth0", "");
    assert!(out.success(), "{imp:?} {key}: {out}");
    let rules = ruleset(&rig);
    assert!(rig
        .run("portmap", "DEL", &pm, "c1", pod.path_str(), "eth0", "")
        .success());
    assert!(rig.del(&c, "c1", pod.path_str(), "eth0").success());
    rules.contains("18080")
}

#[test]
fn portmappings_in_any_case() {
    if !require_reference("go_keys", "portmap") {
        return;
    }
    let lower = json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]});
    let upper = json!({"PortMappings": [{"HostPort": 18080, "ContainerPort": 80, "Protocol": "tcp"}]});
    let odd = json!({"portmappings": [{"HOSTPORT": 18080, "containerport": 80, "protocol": "tcp"}]});
    for imp in [Impl::Reference, Impl::Ours] {
        assert!(maps_port(imp, "runtimeConfig", lower.clone()), "{imp:?}");
        assert!(maps_port(imp, "RuntimeConfig", upper.clone()), "{imp:?}");
        assert!(maps_port(imp, "runtimeconfig", odd.clone()), "{imp:?}");
        assert!(
            !maps_port(imp, "runtime_config", lower.clone()),
            "{imp:?}: not a spelling"
        );
    }
}

/// ptp then tuning with `keys`: the pod's eth0 MTU, promisc flag and arp_notify sysctl.
fn tuned(imp: Impl, keys: Value) -> (u64, bool, String) {
    let rig = rig("gkt", imp);
    let pod = rig.pod("gkt");
    let c = ptp(&rig, "10.69.0.0/24", json!({}));
    let r = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    let mut t = conf("0.4.0", "gk", "tuning", keys);
    t["dataDir"] = json!(rig.data.join("tuning"));
    t["prevResult"] = r;
    let out = rig.run("tuning", "ADD", &t, "c1", pod.path_str(), "eth0", "");
    assert!(out.success(), "{imp:?}: {out}");
    let l = pod.link("eth0").unwrap();
    let promisc = pod.ip(&["-d", "link", "show", "eth0"]).contains("promiscuity 1");
    let arp = pod
        .exec_ok(&["sysctl", "-n", "net.ipv4.conf.eth0.arp_notify"])
        .trim()
        .to_string();
    assert!(rig.run("tuning", "DEL", &t, "c1", pod.path_str(), "eth0", "").success());
    assert!(rig.del(&c, "c1", pod.path_str(), "eth0").success());
    (l["mtu"].as_u64().unwrap(), promisc, arp)
}

#[test]
fn tuning_keys_in_any_case() {
    if !require_reference("go_keys", "tuning") {
        return;
    }
    let want = (1400, true, "1".to_string());
    for imp in [Impl::Reference, Impl::Ours] {
        let canonical = json!({"mtu": 1400, "promisc": true, "sysctl": {"net.ipv4.conf.eth0.arp_notify": "1"}});
        assert_eq!(tuned(imp, canonical), want, "{imp:?}");
        let odd = json!({"MTU": 1400, "Promisc": true, "SysCtl": {"net.ipv4.conf.eth0.arp_notify": "1"}});
        assert_eq!(tuned(imp, odd), want, "{imp:?}");
    }
}

/// ptp over the static IPAM with `ipam`'s keys: the pod's address.
fn static_address(imp: Impl, ipam: Value) -> String {
    let rig = rig("gks", imp);
    let pod = rig.pod("gks");
    let mut c = conf("0.4.0", "gk", "ptp", json!({}));
    c["ipam"] = ipam;
    let r = rig.add(&c, "c1", &pod, "eth0").expect_ok().json();
    assert!(rig.del(&c, "c1", pod.path_str(), "eth0").success());
    r["ips"][0]["address"].as_str().unwrap().to_string()
}

#[test]
fn static_ipam_keys_in_any_case() {
    if !require_reference("go_keys", "static") {
        return;
    }
    let odd = json!({"TYPE": "static", "Addresses": [{"ADDRESS": "10.70.0.9/24", "GATEWAY": "10.70.0.1"}],
                     "Routes": [{"Dst": "0.0.0.0/0"}]});
    for imp in [Impl::Reference, Impl::Ours] {
        assert_eq!(static_address(imp, odd.clone()), "10.70.0.9/24", "{imp:?}");
    }
    // A documented difference: the reference's Address struct also has an untagged field
    // `Address net.IPNet`, whose JSON name is exactly "Address", so that spelling (and only
    // it) goes there and fails to decode; cni-multi has no such hidden field.
    let hidden = json!({"type": "static", "addresses": [{"Address": "10.70.0.9/24", "gateway": "10.70.0.1"}]});
    assert_eq!(static_address(Impl::Ours, hidden.clone()), "10.70.0.9/24");
    let rig = rig("gkx", Impl::Reference);
    let pod = rig.pod("gkx");
    let mut c = conf("0.4.0", "gk", "ptp", json!({}));
    c["ipam"] = hidden;
    let out = rig.add(&c, "c1", &pod, "eth0");
    assert!(
        out.msg().contains("cannot unmarshal string into Go struct field"),
        "{out}"
    );
}
