//! A pod for the sbr tests, as a main plugin would leave it: interfaces `ethN` (veths whose
//! peers live in an *uplink* namespace each, holding the gateway addresses), addresses and,
//! where asked, default routes in main. Every uplink also has the same far address on `lo`
//! ([`FAR4`], [`FAR6`]), so a ping to it shows which uplink a packet left through.
#![allow(dead_code)]

use super::rig::{Invocation, Outcome, TestNs};
use serde_json::{json, Value};

/// The address every uplink answers on.
pub const FAR4: &str = "198.51.100.1";
pub const FAR6: &str = "2001:db8:ff::1";

/// One pod interface: its addresses (`10.9.0.2/24`) and gateways (on the uplink side).
#[derive(Debug, Clone, Default)]
pub struct Iface {
    pub name: String,
    pub v4: Option<(String, String)>,
    pub v6: Option<(String, String)>,
    /// More addresses (any family) after those, with their gateways.
    pub more: Vec<(String, String)>,
    /// Put a default route via the gateway(s) in the pod's main table, as ptp/bridge do.
    pub default_route: bool,
}

impl Iface {
    pub fn new(name: &str) -> Iface {
        Iface {
            name: name.into(),
            ..Default::default()
        }
    }
    pub fn v4(mut self, addr: &str, gw: &str) -> Iface {
        self.v4 = Some((addr.into(), gw.into()));
        self
    }
    pub fn v6(mut self, addr: &str, gw: &str) -> Iface {
        self.v6 = Some((addr.into(), gw.into()));
        self
    }
    pub fn also(mut self, addr: &str, gw: &str) -> Iface {
        self.more.push((addr.into(), gw.into()));
        self
    }
    pub fn default_route(mut self) -> Iface {
        self.default_route = true;
        self
    }
}

/// eth0 (10.1.0.2/24, fd01::2/64, with the main plugin's default route) and eth1 (10.2.0.2/24,
/// fd02::2/64): two interfaces, each with a gateway per family.
pub fn two_dual_stack_ifaces() -> Vec<Iface> {
    vec![
        Iface::new("eth0")
            .v4("10.1.0.2/24", "10.1.0.1")
            .v6("fd01::2/64", "fd01::1")
            .default_route(),
        Iface::new("eth1")
            .v4("10.2.0.2/24", "10.2.0.1")
            .v6("fd02::2/64", "fd02::1"),
    ]
}

pub struct Pod {
    pub ns: TestNs,
    /// One uplink per interface, same order.
    pub uplinks: Vec<TestNs>,
    pub ifaces: Vec<Iface>,
}

fn prefix(addr: &str) -> &str {
    addr.split('/').nth(1).expect("address has a prefix length")
}

impl Pod {
    pub fn new(ifaces: &[Iface]) -> Pod {
        let ns = TestNs::new_node("sbr-pod");
        let mut uplinks = Vec::new();
        for (i, itf) in ifaces.iter().enumerate() {
            let up = TestNs::new_node("sbr-up");
            let peer = format!("up{i}");
            ns.ip(&[
                "link",
                "add",
                &itf.name,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                up.name(),
            ]);
            up.ip(&["link", "set", &peer, "up"]);
            up.ip(&["addr", "add", &format!("{FAR4}/32"), "dev", "lo"]);
            up.ip(&["addr", "add", &format!("{FAR6}/128"), "dev", "lo"]);
            if let Some((a, gw)) = &itf.v4 {
                up.ip(&["addr", "add", &format!("{gw}/{}", prefix(a)), "dev", &peer]);
                ns.ip(&["addr", "add", a, "dev", &itf.name]);
            }
            if let Some((a, gw)) = &itf.v6 {
                up.ip(&["addr", "add", &format!("{gw}/{}", prefix(a)), "dev", &peer, "nodad"]);
                ns.ip(&["addr", "add", a, "dev", &itf.name, "nodad"]);
            }
            for (a, _) in &itf.more {
                ns.ip(&["addr", "add", a, "dev", &itf.name, "nodad"]);
            }
            ns.ip(&["link", "set", &itf.name, "up"]);
            if itf.default_route {
                if let Some((_, gw)) = &itf.v4 {
                    ns.ip(&["route", "add", "default", "via", gw, "dev", &itf.name]);
                }
                if let Some((_, gw)) = &itf.v6 {
                    ns.ip(&["-6", "route", "add", "default", "via", gw, "dev", &itf.name]);
                }
            }
            uplinks.push(up);
        }
        Pod {
            ns,
            uplinks,
            ifaces: ifaces.to_vec(),
        }
    }

    /// The prevResult a main plugin would have printed for interface `i`.
    pub fn prev_result(&self, i: usize) -> Value {
        let itf = &self.ifaces[i];
        let mut ips = Vec::new();
        for (a, gw) in itf.v4.iter().chain(itf.v6.iter()).chain(itf.more.iter()) {
            ips.push(json!({"address": a, "gateway": gw, "interface": 0}));
        }
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": itf.name, "sandbox": self.ns.path_str()}],
            "ips": ips,
            "dns": {}
        })
    }

    /// A full sbr config for interface `i` with `extra` keys merged in.
    pub fn conf(&self, i: usize, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "sbrnet",
            "type": "sbr",
            "prevResult": self.prev_result(i),
        });
        for (k, v) in extra.as_object().expect("extra is an object") {
            c[k] = v.clone();
        }
        c
    }

    pub fn invocation(&self, node: &TestNs, cmd: &str, i: usize, conf: &Value) -> Invocation {
        // An empty PATH: neither implementation may need a binary.
        Invocation::new("sbr", cmd)
            .env("PATH", "")
            .pod(&self.ns)
            .in_node(node)
            .ifname(&self.ifaces[i].name)
            .config(conf)
    }

    pub fn run(&self, node: &TestNs, reference: bool, cmd: &str, i: usize, conf: &Value) -> Outcome {
        let inv = self.invocation(node, cmd, i, conf);
        if reference {
            inv.run_reference()
        } else {
            inv.run_ours()
        }
    }

    /// The rules and the non-local routes of all tables, as `ip` prints them.
    pub fn layout(&self) -> Layout {
        layout(&self.ns)
    }

    /// Ping `dst` from the pod (from `src` when given); whether an answer came back.
    pub fn ping(&self, src: Option<&str>, dst: &str) -> bool {
        let mut argv = vec!["ping", "-n", "-c", "1", "-W", "5"];
        if let Some(s) = src {
            argv.extend_from_slice(&["-I", s]);
        }
        argv.push(dst);
        self.ns.exec(&argv).status.success()
    }
}

/// ICMP echo requests a namespace has received so far (v4, v6).
pub fn echo_requests(ns: &TestNs) -> (u64, u64) {
    let snmp = ns.exec_ok(&["cat", "/proc/net/snmp"]);
    let icmp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Icmp:")).collect();
    let names: Vec<&str> = icmp[0].split_whitespace().collect();
    let vals: Vec<&str> = icmp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "InEchos").expect("InEchos counter");
    let v4 = vals[i].parse().unwrap();
    let snmp6 = ns.exec_ok(&["cat", "/proc/net/snmp6"]);
    let v6 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Icmp6InEchos"))
        .map(|v| v.trim().parse().unwrap())
        .expect("Icmp6InEchos counter");
    (v4, v6)
}

/// What `ip rule` and `ip route show table all` print, minus the kernel's local-table and
/// multicast routes (they never move).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub rules: Vec<String>,
    pub routes: Vec<String>,
}

impl Layout {
    pub fn has_rule(&self, s: &str) -> bool {
        self.rules.iter().any(|r| r == s)
    }
    pub fn has_route(&self, s: &str) -> bool {
        self.routes.iter().any(|r| r == s)
    }
    /// The table numbers of the source rules (priority < 32766, not `local`).
    pub fn rule_tables(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter(|r| r.contains(" from ") && !r.contains("from all"))
            .filter_map(|r| r.rsplit(' ').next().map(str::to_string))
            .collect()
    }
    pub fn routes_in(&self, table: &str) -> Vec<&String> {
        let t = format!(" table {table}");
        self.routes
            .iter()
            .filter(|r| r.contains(&format!("{t} ")) || r.ends_with(&t))
            .collect()
    }
    pub fn main_routes(&self) -> Vec<&String> {
        self.routes.iter().filter(|r| !r.contains(" table ")).collect()
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.rules {
            writeln!(f, "  rule  {r}")?;
        }
        for r in &self.routes {
            writeln!(f, "  route {r}")?;
        }
        Ok(())
    }
}

pub fn layout(ns: &TestNs) -> Layout {
    let mut rules = Vec::new();
    for fam in ["-4", "-6"] {
        for l in ns.ip(&[fam, "rule", "show"]).lines() {
            rules.push(format!("{fam} {}", l.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }
    let mut routes = Vec::new();
    for fam in ["-4", "-6"] {
        for l in ns.ip(&[fam, "route", "show", "table", "all"]).lines() {
            let l = l.split_whitespace().collect::<Vec<_>>().join(" ");
            let skip = ["local ", "broadcast ", "multicast ", "anycast "];
            if skip.iter().any(|s| l.starts_with(s)) || l.contains("table local") {
                continue;
            }
            routes.push(format!("{fam} {l}"));
        }
    }
    routes.sort();
    Layout { rules, routes }
}
