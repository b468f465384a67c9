//! `cni-multi demo`: the main job, end to end, with nothing but this binary. A throw-away
//! node namespace, two pod namespaces, the default network (a bridge with host-local)
//! added to both, their addresses and routes shown, pings between them, then DEL and
//! every trace removed.

use crate::cni::result::CniResult;
use crate::linux::netlink::IpFamily;
use crate::linux::{netns, ping, NetNs, Netlink};
use crate::runtime::{self, NetworkList, RuntimeConf};
use anyhow::{bail, Context};
use serde_json::json;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const NETNS_DIR: &str = "/run/netns";
const BRIDGE: &str = "cni-demo0";
const SUBNET: &str = "10.99.0.0/24";

/// Everything the demo made, removed on drop (also after a failure).
struct Scratch {
    dir: PathBuf,
    namespaces: Vec<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = netns::delete_named(ns);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, what: &str, r: anyhow::Result<String>) {
        match r {
            Ok(detail) => println!(
                "  ✓ {what}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            ),
            Err(e) => {
                self.failed += 1;
                println!("  ✗ {what}: {e:#}");
            }
        }
    }
}

fn first_ipv4(r: &CniResult) -> anyhow::Result<IpAddr> {
    r.ips
        .iter()
        .map(|i| i.address.addr())
        .find(IpAddr::is_ipv4)
        .context("the result has no IPv4 address")
}

fn show_pod(name: &str, ns: &NetNs) -> anyhow::Result<()> {
    let mut nl = Netlink::in_netns(ns)?;
    for l in nl.links()? {
        let addrs: Vec<String> = nl
            .addrs(Some(l.index), IpFamily::V4)?
            .iter()
            .map(|a| a.ip.to_string())
            .collect();
        println!(
            "    {name} {:<6} {:<8} {}",
            l.name,
            if l.up { "up" } else { "down" },
            if addrs.is_empty() { "-".into() } else { addrs.join(", ") }
        );
    }
    for r in nl.routes(IpFamily::V4, Some(254))? {
        let via = r.gw.map(|g| format!(" via {g}")).unwrap_or_default();
        println!("    {name} route {}{via}", r.dst);
    }
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo needs root: it creates network namespaces (run: sudo cni-multi demo)");
    }
    let tag = format!("cni-multi-demo-{}", std::process::id());
    let mut scratch = Scratch {
        dir: std::env::temp_dir().join(&tag),
        namespaces: Vec::new(),
    };
    std::fs::create_dir_all(scratch.dir.join("bin"))?;
    let exe = std::fs::canonicalize("/proc/self/exe")?;
    for p in ["bridge", "host-local", "loopback"] {
        if crate::plugins::lookup(p).is_none() {
            bail!("this build has no {p} plugin, which the demo needs");
        }
        std::os::unix::fs::symlink(&exe, scratch.dir.join("bin").join(p))?;
    }
    let mk = |s: &mut Scratch, name: &str| -> anyhow::Result<NetNs> {
        let ns = netns::create_named(Path::new(NETNS_DIR), &format!("{tag}-{name}"))?;
        s.namespaces.push(ns.path().to_path_buf());
        Ok(ns)
    };
    let node = mk(&mut scratch, "node")?;
    let pods = [mk(&mut scratch, "pod1")?, mk(&mut scratch, "pod2")?];
    println!("cni-multi demo: a throw-away node with two pods on the default network");
    println!("  node netns {}", node.path().display());

    let list = NetworkList::from_bytes(
        json!({
            "cniVersion": "1.1.0",
            "name": "demo",
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": true, "hairpinMode": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}],
                         "dataDir": scratch.dir.join("ipam")}
            }]
        })
        .to_string()
        .as_bytes(),
    )?;
    let lo = NetworkList::from_bytes(br#"{"cniVersion":"1.1.0","name":"lo","plugins":[{"type":"loopback"}]}"#)?;
    println!("  network {:?}: bridge {BRIDGE} + host-local {SUBNET}\n", list.name);
    crate::plugins::wire_delegation();
    let rt = |i: usize| RuntimeConf {
        container_id: format!("demo-pod{}", i + 1),
        netns: pods[i].path().display().to_string(),
        ifname: "eth0".into(),
        cni_path: scratch.dir.join("bin").display().to_string(),
        cache_dir: scratch.dir.join("cache"),
        ..Default::default()
    };

    // Plugins act on the namespace they run in: the node's.
    let in_node = node.enter()?;
    let mut report = Report { failed: 0 };
    runtime::status(&list, &rt(0)).context("STATUS before ADD")?;
    let mut results = Vec::new();
    for i in 0..2 {
        runtime::add(&lo, &rt(i))?;
        let t = std::time::Instant::now();
        let r = runtime::add(&list, &rt(i)).with_context(|| format!("ADD pod{}", i + 1))?;
        println!(
            "  ADD pod{} in {:.1} ms → {}",
            i + 1,
            t.elapsed().as_secs_f64() * 1000.0,
            first_ipv4(&r)?
        );
        results.push(r);
    }
    println!();
    for (i, ns) in pods.iter().enumerate() {
        show_pod(&format!("pod{}", i + 1), ns)?;
    }
    println!();
    let ip = [first_ipv4(&results[0])?, first_ipv4(&results[1])?];
    let gw = results[0].ips[0].gateway.context("no gateway in the result")?;
    let timeout = Duration::from_secs(3);
    let rtt = |r: crate::linux::Result<Duration>| -> anyhow::Result<String> {
        Ok(format!("{:.2} ms", r?.as_secs_f64() * 1000.0))
    };
    report.check(
        &format!("pod1 → pod2 ({})", ip[1]),
        rtt(ping::ping(&pods[0], ip[1], timeout)),
    );
    report.check(
        &format!("pod2 → pod1 ({})", ip[0]),
        rtt(ping::ping(&pods[1], ip[0], timeout)),
    );
    report.check(
        &format!("pod1 → gateway ({gw})"),
        rtt(ping::ping(&pods[0], gw, timeout)),
    );
    report.check(
        &format!("node → pod2 ({})", ip[1]),
        rtt(ping::ping(&node, ip[1], timeout)),
    );
    report.check(
        "CHECK pod1",
        runtime::check(&list, &rt(0)).map(|_| String::new()).map_err(Into::into),
    );

    println!();
    for i in 0..2 {
        let t = std::time::Instant::now();
        runtime::del(&list, &rt(i)).with_context(|| format!("DEL pod{}", i + 1))?;
        runtime::del(&lo, &rt(i))?;
        println!("  DEL pod{} in {:.1} ms", i + 1, t.elapsed().as_secs_f64() * 1000.0);
    }
    report.check(
        "pods have no eth0 left",
        (|| {
            for ns in &pods {
                if Netlink::in_netns(ns)?.link_by_name("eth0")?.is_some() {
                    bail!("eth0 still in {}", ns.path().display());
                }
            }
            Ok(String::new())
        })(),
    );
    report.check(
        "no IP reservation left",
        (|| {
            let dir = scratch.dir.join("ipam").join("demo");
            let left: Vec<String> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect();
            if left.is_empty() {
                Ok(String::new())
            } else {
                bail!("{left:?}")
            }
        })(),
    );
    drop(in_node);
    drop(pods);
    drop(node);
    drop(scratch);
    println!("  namespaces and state removed\n");
    if report.failed > 0 {
        bail!("{} check(s) failed", report.failed);
    }
    println!("demo passed");
    Ok(())
}
