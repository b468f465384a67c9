//! `cni-multi inspect`: the node as cni-multi sees it, read-only, and the leaks it finds.
//!
//! Sources, all read in the current network namespace (the node's): the network lists in the
//! conf dir, libcni's result cache, host-local's reservation files, the kernel's links, our
//! nftables tables' rule comments, and the invocation log. Nothing is changed unless `--gc`
//! is given; then exactly the problems marked `gc` are cleaned, with CNI's own mechanisms:
//! DEL from the cached result for an attachment whose netns is gone (and its host link, which
//! a DEL without the netns cannot find), and GC with `cni.dev/valid-attachments` = every
//! attachment seen except the leaked ones, so host-local, portmap and masquerade each drop
//! what they hold for the leaks and nothing else.
//!
//! Safe while pods start and stop: an ADD writes its reservation before libcni writes its
//! cache entry, so a reservation is only called leaked when it is older than `MIN_LEAK_AGE`,
//! and `--gc` reads everything again just before it acts.

use crate::linux::files;
use crate::linux::netlink::LinkType;
use crate::linux::nft::{Family, NftSocket};
use crate::linux::Netlink;
use crate::runtime::{self, cache, NetworkList, RuntimeConf};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A reservation without a cache entry younger than this may belong to an ADD in flight.
pub const MIN_LEAK_AGE: Duration = Duration::from_secs(120);
/// A range is reported when this share of its addresses is taken.
const NEAR_FULL: f64 = 0.9;

#[derive(Serialize, Debug, Default)]
pub struct Report {
    /// What filters packets on this node, and so where cni-multi puts its rules.
    #[serde(rename = "packetFilter")]
    pub packet_filter: PacketFilter,
    pub networks: Vec<Network>,
    pub problems: Vec<Problem>,
    #[serde(rename = "recentErrors")]
    pub recent_errors: Vec<Value>,
}

#[derive(Serialize, Debug, Default)]
pub struct Network {
    pub name: String,
    pub file: String,
    pub plugins: Vec<String>,
    pub bridge: Option<String>,
    #[serde(rename = "ipMasq")]
    pub ip_masq: bool,
    #[serde(rename = "dataDir")]
    pub data_dir: Option<String>,
    pub capacity: Option<u64>,
    pub reserved: usize,
    #[serde(rename = "flannelSubnet")]
    pub flannel_subnet: Option<String>,
    pub status: Option<String>,
    pub attachments: Vec<Attachment>,
}

#[derive(Serialize, Debug, Default, Clone)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    #[serde(rename = "netnsAlive")]
    pub netns_alive: bool,
    pub ips: Vec<String>,
    #[serde(rename = "hostInterface")]
    pub host_interface: Option<String>,
    #[serde(rename = "hostInterfaceExists")]
    pub host_interface_exists: bool,
    pub master: Option<String>,
    #[serde(rename = "portMappings")]
    pub port_mappings: Vec<Value>,
    /// The attachment's chains in the reference's iptables layout (ipMasq `CNI-…`, portmap
    /// `CNI-DN-…`): cni-multi's own on a node that uses iptables, or the reference plugins'
    /// from before a swap.
    #[serde(rename = "referenceChains")]
    pub reference_chains: Vec<String>,
    pub bandwidth: Option<Value>,
    /// Where this attachment's NAT and filter rules are: "nftables" (upstream's nftables
    /// layout, our tables), "iptables" (the reference's rules in iptables-nft's tables),
    /// "iptables-legacy" (the reference's rules in x_tables).
    #[serde(rename = "ruleLayouts")]
    pub rule_layouts: Vec<&'static str>,
    /// "cache" (libcni's result cache) or "reservation" (only host-local knows it).
    pub source: &'static str,
}

/// The node's packet filter (`pkg::backend`'s kind and the facts it was read from).
#[derive(Serialize, Debug, Default, Clone)]
pub struct PacketFilter {
    /// "iptables-nft", "iptables-legacy" or "nftables" (nftables only).
    pub kind: &'static str,
    /// The `iptables` executable a plugin would find, and its variant.
    pub iptables: Option<String>,
    /// iptables-nft's tables in nf_tables (IPv4).
    #[serde(rename = "iptablesNftTables")]
    pub nft_tables: Vec<String>,
    /// Legacy x_tables tables holding rules, user chains or a DROP policy (IPv4).
    #[serde(rename = "legacyTablesInUse")]
    pub legacy_tables: Vec<String>,
    /// The families ("ip", "ip6") whose legacy FORWARD policy is DROP.
    #[serde(rename = "legacyForwardDrop")]
    pub legacy_forward_drop: Vec<String>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Problem {
    pub kind: &'static str,
    pub network: String,
    #[serde(rename = "containerID", skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ifname: String,
    pub detail: String,
    /// Whether `--gc` cleans it.
    pub gc: bool,
}

pub struct Options {
    pub conf_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub cni_path: String,
    pub log: Option<PathBuf>,
}

/// Every network list in `dir` (libcni's order: by file name), with its file.
fn network_lists(dir: &Path) -> Vec<(PathBuf, NetworkList)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    let mut out: Vec<(PathBuf, NetworkList)> = Vec::new();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "conflist" | "conf" | "json") || !f.is_file() {
            continue;
        }
        // As `cni-multi net` loads it: plugins from `<dir>/<name>/*.conf` too.
        if let Ok(list) = NetworkList::from_file(&f) {
            if !out.iter().any(|(_, l)| l.name == list.name) {
                out.push((f, list));
            }
        }
    }
    out
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The interface plugin of a list, looking through flannel to its default delegate.
fn main_plugin(list: &NetworkList) -> Option<Value> {
    let first = list.plugins.first()?;
    match s(first, "type") {
        Some("flannel") => {
            let mut d = first.get("delegate").cloned().unwrap_or_else(|| serde_json::json!({}));
            if d.get("type").is_none() {
                d["type"] = "bridge".into();
            }
            Some(d)
        }
        _ => Some(first.clone()),
    }
}

/// host-local's reservation dir of a list, if its IPAM is host-local.
fn data_dir(list: &NetworkList) -> Option<PathBuf> {
    let first = list.plugins.first()?;
    let ipam = match s(first, "type") {
        Some("flannel") => return Some(PathBuf::from("/var/lib/cni/networks").join(&list.name)),
        _ => first.get("ipam")?,
    };
    (s(ipam, "type") == Some("host-local"))
        .then(|| PathBuf::from(s(ipam, "dataDir").unwrap_or("/var/lib/cni/networks")).join(&list.name))
}

/// Addresses a list's host-local ranges can hand out (subnet minus network, broadcast and
/// gateway, or rangeStart..rangeEnd).
fn capacity(list: &NetworkList, flannel_subnet: Option<&str>) -> Option<u64> {
    let first = list.plugins.first()?;
    let subnet_size = |net: ipnet::IpNet| -> u64 {
        let bits = net.max_prefix_len() - net.prefix_len();
        let all = if bits >= 63 { u64::MAX / 2 } else { 1u64 << bits };
        all.saturating_sub(if net.addr().is_ipv4() { 3 } else { 2 })
    };
    if s(first, "type") == Some("flannel") {
        return flannel_subnet.and_then(|n| n.parse().ok()).map(subnet_size);
    }
    let ranges = first.get("ipam")?.get("ranges")?.as_array()?;
    let mut total = 0u64;
    for set in ranges {
        for r in set.as_array()? {
            let net: ipnet::IpNet = s(r, "subnet")?.parse().ok()?;
            let bounded = match (s(r, "rangeStart"), s(r, "rangeEnd")) {
                (Some(a), Some(b)) => match (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
                    (Ok(std::net::IpAddr::V4(a)), Ok(std::net::IpAddr::V4(b))) => {
                        Some(u64::from(u32::from(b).saturating_sub(u32::from(a))) + 1)
                    }
                    _ => None,
                },
                _ => None,
            };
            total = total.saturating_add(bounded.unwrap_or_else(|| subnet_size(net)));
        }
    }
    Some(total)
}

fn flannel_subnet(list: &NetworkList) -> Option<String> {
    let first = list.plugins.first()?;
    if s(first, "type") != Some("flannel") {
        return None;
    }
    let file = s(first, "subnetFile").unwrap_or("/run/flannel/subnet.env");
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
        .map(|v| v.trim().to_string())
}

/// A host-local reservation is a container ID and an ifname.
const RESERVATION: files::Reader = files::Reader::no_follow(4096);

/// (ip, containerID, ifname, age) of each reservation file in `dir`.
fn reservations(dir: &Path) -> Vec<(String, String, String, Duration)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<std::net::IpAddr>().is_err() {
            continue; // lock, last_reserved_ip.N
        }
        // Never follow a planted symlink, block on a FIFO or read a huge file: reservations
        // are tiny files.
        let Ok(bytes) = RESERVATION.read(&e.path()) else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        let text = String::from_utf8(bytes).unwrap_or_default();
        let mut lines = text.lines();
        let cid = lines.next().unwrap_or("").trim().to_string();
        let ifname = lines.next().unwrap_or("").trim().to_string();
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        out.push((name, cid, ifname, age));
    }
    out.sort();
    out
}

fn netns_alive(path: &str) -> bool {
    !path.is_empty() && crate::linux::NetNs::open(path).is_ok()
}

/// Container IDs named by our nftables rules (portmap's and masquerade's comments).
fn rule_owners() -> Vec<(String, String)> {
    let Ok(sock) = NftSocket::open() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut scan = |fam: Family, table: &str, parse: &dyn Fn(&str) -> Option<String>| {
        for chain in sock.list_chains(fam, table).unwrap_or_default() {
            for r in sock.list_rule_comments(fam, table, &chain.name).unwrap_or_default() {
                if let Some(cid) = r.comment.as_deref().and_then(parse) {
                    out.push((format!("{fam} {table}"), cid));
                }
            }
        }
    };
    // portmap comments with the container ID (upstream's layout; before it, cni-multi's
    // `<cid>, nethash: …`).
    let portmap = |c: &str| Some(c.split_once(", nethash: ").map_or(c, |(cid, _)| cid).to_string());
    scan(Family::Ip, "cni_hostport", &portmap);
    scan(Family::Ip6, "cni_hostport", &portmap);
    let masq = |c: &str| c.rsplit_once("id: ").map(|(_, cid)| cid.trim_matches('"').to_string());
    scan(Family::Inet, "cni_plugins_masquerade", &masq);
    out.sort();
    out.dedup();
    out
}

/// (network, container ID, chain) of each rule the reference plugins' iptables backend made
/// (ipMasq and portmap comment their rules with the network and the container).
fn reference_owners() -> Vec<(String, String, String)> {
    use crate::linux::nft::iptables;
    use crate::pkg::reference_iptables::{masq_chain, parse_comment};
    let Ok(sock) = NftSocket::open() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for v6 in [false, true] {
        for r in iptables::list_table(&sock, v6, "nat").unwrap_or_default() {
            let Some(c) = r.comment.as_deref() else { continue };
            let Some((net, cid)) = ["", "dnat ", "snat "].iter().find_map(|k| parse_comment(c, k)) else {
                continue;
            };
            let chain = r
                .jump_target()
                .map(String::from)
                .unwrap_or_else(|| masq_chain(net, cid));
            out.push((net.to_string(), cid.to_string(), chain));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Read everything; change nothing.
pub fn inspect(opts: &Options) -> Report {
    let mut report = Report::default();
    let links = Netlink::new().and_then(|mut nl| nl.links()).unwrap_or_default();
    let link_name = |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
    let mut named_links: BTreeSet<String> = BTreeSet::new();
    let mut bridges: BTreeSet<String> = BTreeSet::new();
    let mut known_ids: BTreeSet<String> = BTreeSet::new();
    let reference = reference_owners();
    for (file, list) in network_lists(&opts.conf_dir) {
        let plugin = main_plugin(&list).unwrap_or_default();
        let mut net = Network {
            name: list.name.clone(),
            file: file.display().to_string(),
            plugins: list
                .plugins
                .iter()
                .filter_map(|p| s(p, "type").map(String::from))
                .collect(),
            ip_masq: plugin.get("ipMasq").and_then(Value::as_bool).unwrap_or(false),
            flannel_subnet: flannel_subnet(&list),
            ..Default::default()
        };
        if s(&plugin, "type") == Some("bridge") {
            let b = s(&plugin, "bridge").unwrap_or("cni0").to_string();
            bridges.insert(b.clone());
            net.bridge = Some(b);
        }
        net.capacity = capacity(&list, net.flannel_subnet.as_deref());
        for c in cache::attachments(&list, &opts.cache_dir) {
            // Read once, by libcni's own reader (a planted symlink, FIFO or huge file is not
            // followed, blocked on or trusted).
            let result = c.result.clone();
            let mut a = Attachment {
                container_id: c.container_id.clone(),
                ifname: c.ifname.clone(),
                netns_alive: netns_alive(&c.netns),
                netns: c.netns.clone(),
                port_mappings: c
                    .capability_args
                    .get("portMappings")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                bandwidth: c.capability_args.get("bandwidth").cloned(),
                reference_chains: reference
                    .iter()
                    .filter(|(n, cid, _)| *n == list.name && *cid == c.container_id)
                    .map(|(_, _, chain)| chain.clone())
                    .collect(),
                source: "cache",
                ..Default::default()
            };
            if let Some(r) = &result {
                let ifs = r
                    .get("interfaces")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                a.ips = r
                    .get("ips")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(|ip| s(ip, "address").map(String::from)).collect())
                    .unwrap_or_default();
                let host = ifs.iter().find(|i| {
                    s(i, "sandbox").unwrap_or("").is_empty()
                        && net.bridge.as_deref() != s(i, "name")
                        && s(i, "mac").is_some()
                });
                a.host_interface = host.and_then(|i| s(i, "name")).map(String::from);
            }
            if let Some(h) = &a.host_interface {
                named_links.insert(h.clone());
                if let Some(l) = links.iter().find(|l| &l.name == h) {
                    a.host_interface_exists = true;
                    a.master = l.master.and_then(link_name);
                }
            }
            known_ids.insert(a.container_id.clone());
            if !a.netns_alive {
                report.problems.push(Problem {
                    kind: "netns-gone",
                    network: list.name.clone(),
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                    detail: format!(
                        "netns {:?} is gone but the attachment was never deleted{}",
                        a.netns,
                        match (&a.host_interface, a.host_interface_exists) {
                            (Some(h), true) => format!("; its host interface {h} still exists"),
                            _ => String::new(),
                        }
                    ),
                    gc: true,
                });
            }
            net.attachments.push(a);
        }
        if let Some(dir) = data_dir(&list) {
            net.data_dir = Some(dir.display().to_string());
            let res = reservations(&dir);
            net.reserved = res.len();
            for (ip, cid, ifname, age) in res {
                known_ids.insert(cid.clone());
                let held = net
                    .attachments
                    .iter_mut()
                    .find(|a| a.container_id == cid && (ifname.is_empty() || a.ifname == ifname));
                match held {
                    Some(a) => {
                        if !a.ips.iter().any(|x| x.split('/').next() == Some(ip.as_str())) {
                            a.ips.push(ip.clone());
                        }
                    }
                    None => {
                        let leak = age >= MIN_LEAK_AGE;
                        report.problems.push(Problem {
                            kind: if leak {
                                "leaked-reservation"
                            } else {
                                "young-reservation"
                            },
                            network: list.name.clone(),
                            container_id: cid.clone(),
                            ifname: ifname.clone(),
                            detail: format!(
                                "{ip} is reserved in {} for a container with no cache entry ({} s old){}",
                                dir.display(),
                                age.as_secs(),
                                if leak {
                                    ""
                                } else {
                                    "; may be an ADD in flight, not cleaned"
                                }
                            ),
                            gc: leak,
                        });
                        net.attachments.push(Attachment {
                            container_id: cid,
                            ifname,
                            ips: vec![ip],
                            source: "reservation",
                            ..Default::default()
                        });
                    }
                }
            }
            if let Some(cap) = net.capacity.filter(|c| *c > 0) {
                if net.reserved as f64 >= cap as f64 * NEAR_FULL {
                    report.problems.push(Problem {
                        kind: "range-near-exhaustion",
                        network: list.name.clone(),
                        container_id: String::new(),
                        ifname: String::new(),
                        detail: format!("{} of {cap} addresses reserved", net.reserved),
                        gc: false,
                    });
                }
            }
        }
        let rt = RuntimeConf {
            cni_path: opts.cni_path.clone(),
            cache_dir: opts.cache_dir.clone(),
            ..Default::default()
        };
        if let Err(e) = runtime::status(&list, &rt) {
            net.status = Some(e.msg.clone());
            report.problems.push(Problem {
                kind: "status-failed",
                network: list.name.clone(),
                container_id: String::new(),
                ifname: String::new(),
                detail: format!("STATUS failed with code {}: {}", e.code, e.msg),
                gc: false,
            });
        }
        report.networks.push(net);
    }
    for l in &links {
        let on_cni_bridge = l.master.and_then(link_name).is_some_and(|m| bridges.contains(&m));
        if l.kind == Some(LinkType::Veth) && on_cni_bridge && !named_links.contains(&l.name) {
            report.problems.push(Problem {
                kind: "orphan-veth",
                network: String::new(),
                container_id: String::new(),
                ifname: l.name.clone(),
                detail: format!(
                    "host veth {} on bridge {} belongs to no attachment in the cache (not cleaned: a pod may be starting)",
                    l.name,
                    l.master.and_then(link_name).unwrap_or_default()
                ),
                gc: false,
            });
        }
    }
    let mut owners: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (table, cid) in rule_owners() {
        owners.entry(cid).or_default().push(table);
    }
    for (_, cid, chain) in &reference {
        owners
            .entry(cid.clone())
            .or_default()
            .push(format!("iptables nat {chain}"));
    }
    for (cid, tables) in owners {
        if !known_ids.contains(&cid) {
            let table = tables.join(", ");
            report.problems.push(Problem {
                kind: "stale-rule",
                network: String::new(),
                container_id: cid.clone(),
                ifname: String::new(),
                detail: format!("rules in {table} name container {cid}, which holds no attachment or reservation"),
                gc: true,
            });
        }
    }
    if let Some(log) = &opts.log {
        report.recent_errors = recent_errors(log, 10);
    }
    packet_filter(&mut report);
    report
}

/// The node's packet-filter kind, where each attachment's rules are, and the attachments a
/// legacy FORWARD policy DROP cuts off (their accepts are not in x_tables, where only they
/// could override it). Reads only: x_tables not registered here are not read (a read would
/// register them).
fn packet_filter(report: &mut Report) {
    use crate::linux::filter_probe::{self, ToolVariant};
    use crate::linux::xtables::{self, Family as XtFamily};
    use crate::pkg::{backend, legacy_iptables as legacy, reference_iptables as reference};
    let Ok(sock) = NftSocket::open() else { return };
    let path = std::env::var("PATH").ok();
    let Ok(probe) = filter_probe::probe(&sock, Family::Ip, path.as_deref()) else {
        return;
    };
    let kind = backend::node_kind_of(&probe);
    let drops: Vec<XtFamily> = [XtFamily::V4, XtFamily::V6]
        .into_iter()
        .filter(|f| legacy::forward_drops(*f).unwrap_or(false))
        .collect();
    report.packet_filter = PacketFilter {
        kind: kind.as_str(),
        iptables: probe.tool.as_ref().map(|(p, v)| {
            let v = match v {
                ToolVariant::Nft => "iptables-nft",
                ToolVariant::Legacy => "iptables-legacy",
                ToolVariant::Unknown => "unknown variant",
            };
            format!("{} ({v})", p.display())
        }),
        nft_tables: probe.nft_tables.clone(),
        legacy_tables: probe.legacy_in_use.clone(),
        legacy_forward_drop: drops.iter().map(|f| f.to_string()).collect(),
    };
    // Who has rules where.
    let nft_owners: BTreeSet<String> = rule_owners()
        .into_iter()
        .map(|(_, cid)| cid)
        .chain(firewall_owners())
        .collect();
    let legacy_owners = legacy::owners().unwrap_or_default();
    let legacy_fwd: Vec<(XtFamily, Vec<crate::linux::xtables::Rule>)> = [XtFamily::V4, XtFamily::V6]
        .into_iter()
        .filter_map(|f| {
            let t = xtables::read_if_registered(f, legacy::FILTER).ok()??;
            Some((f, t.rules(legacy::CNI_FORWARD).to_vec()))
        })
        .collect();
    let legacy_accepts = |ip: std::net::IpAddr| {
        legacy_fwd
            .iter()
            .flat_map(|(_, rules)| rules)
            .any(|r| r.src_host() == Some(ip) && r.matches.is_empty())
    };
    for net in &mut report.networks {
        let has_firewall = net.plugins.iter().any(|p| p == "firewall");
        for a in &mut net.attachments {
            let ips: Vec<std::net::IpAddr> = a.ips.iter().filter_map(|i| i.split('/').next()?.parse().ok()).collect();
            let mut layouts = Vec::new();
            if nft_owners.contains(&a.container_id) {
                layouts.push("nftables");
            }
            if !a.reference_chains.is_empty()
                || ips
                    .iter()
                    .any(|ip| reference::forward_intact(&sock, *ip).unwrap_or(false))
            {
                layouts.push("iptables");
            }
            if legacy_owners
                .iter()
                .any(|(n, cid, _)| *n == net.name && *cid == a.container_id)
                || ips.iter().any(|ip| legacy_accepts(*ip))
            {
                layouts.push("iptables-legacy");
            }
            a.rule_layouts = layouts;
            if !has_firewall || a.source != "cache" {
                continue;
            }
            for f in &drops {
                let cut: Vec<String> = ips
                    .iter()
                    .filter(|ip| ip.is_ipv6() == f.is_v6() && !legacy_accepts(**ip))
                    .map(|ip| ip.to_string())
                    .collect();
                if cut.is_empty() {
                    continue;
                }
                report.problems.push(Problem {
                    kind: "legacy-forward-drop",
                    network: net.name.clone(),
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                    detail: format!(
                        "the legacy {} FORWARD policy is DROP and x_tables has no firewall accept for {} \
                         (its rules are in: {}); its forwarded traffic is dropped (see `{} -S FORWARD`)",
                        f.tool(),
                        cut.join(" "),
                        if a.rule_layouts.is_empty() {
                            "nothing".to_string()
                        } else {
                            a.rule_layouts.join(", ")
                        },
                        f.tool()
                    ),
                    gc: false,
                });
            }
        }
    }
    if !drops.is_empty() && kind != backend::NodeKind::IptablesLegacy {
        report.problems.push(Problem {
            kind: "legacy-forward-drop",
            network: String::new(),
            container_id: String::new(),
            ifname: String::new(),
            detail: format!(
                "legacy iptables' FORWARD policy is DROP ({}), but this node counts as {}: cni-multi \
                 writes its accepts there, where they cannot override a legacy DROP; a firewall ADD \
                 fails rather than leave a pod without traffic",
                drops.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", "),
                kind.as_str()
            ),
            gc: false,
        });
    }
}

/// Container IDs named by the firewall's nftables rules (`inet`/`bridge cni_firewall`).
fn firewall_owners() -> Vec<String> {
    let Ok(sock) = NftSocket::open() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (fam, chain) in [(Family::Inet, "CNI-FORWARD"), (Family::Bridge, "forward")] {
        for r in sock.list_rule_comments(fam, "cni_firewall", chain).unwrap_or_default() {
            if let Some((cid, _)) = r.comment.as_deref().and_then(|c| c.split_once(", nethash: ")) {
                out.push(cid.to_string());
            }
        }
    }
    out
}

/// The last `n` failed invocations in the invocation log.
fn recent_errors(log: &Path, n: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut errs: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("ok") == Some(&Value::Bool(false)))
        .collect();
    let skip = errs.len().saturating_sub(n);
    errs.drain(..skip);
    errs
}

/// What `--gc` did, told only after a fresh reading of the node.
#[derive(Debug, Default)]
pub struct GcOutcome {
    /// The problems marked `gc` that are gone now.
    pub cleaned: Vec<Problem>,
    /// The problems marked `gc` that are still there.
    pub remaining: Vec<Problem>,
    /// What failed on the way (a plugin not found, a DEL or GC that failed …).
    pub errors: Vec<String>,
    /// Plugin types the plugin path did not hold, run as cni-multi's own built-ins.
    pub builtin_fallbacks: Vec<String>,
}

/// Clean exactly the problems marked `gc` in a fresh reading, then read the node again: a
/// problem is reported cleaned only when it is gone. Plugin types cni-multi is itself run
/// in-process when the plugin path lacks them (as delegation to a built-in does), so that
/// `--gc` works whatever `--cni-path` says; a type that is not built in stays an error.
pub fn gc(opts: &Options) -> GcOutcome {
    crate::cni::delegate::enable_builtin_fallback();
    let report = inspect(opts);
    let mut errors = Vec::new();
    let leaks: Vec<Problem> = report.problems.iter().filter(|p| p.gc).cloned().collect();
    let is_leak = |net: &str, cid: &str, ifname: &str| {
        leaks.iter().any(|p| {
            (p.network == net || p.network.is_empty())
                && p.container_id == cid
                && (p.ifname.is_empty() || ifname.is_empty() || p.ifname == ifname)
        })
    };
    for (_, list) in network_lists(&opts.conf_dir) {
        let Some(net) = report.networks.iter().find(|n| n.name == list.name) else {
            continue;
        };
        let valid: Vec<crate::cni::config::Attachment> = net
            .attachments
            .iter()
            .filter(|a| !is_leak(&net.name, &a.container_id, &a.ifname))
            .map(|a| crate::cni::config::Attachment {
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })
            .collect();
        let rt = RuntimeConf {
            cni_path: opts.cni_path.clone(),
            cache_dir: opts.cache_dir.clone(),
            ..Default::default()
        };
        // GC is a 1.1.0 verb: older lists get it too, since every plugin here speaks 1.1.0.
        let mut l11 = list.clone();
        l11.cni_version = "1.1.0".into();
        if let Err(e) = runtime::gc(&l11, &rt, Some(&valid)) {
            errors.push(format!("{}: {}", list.name, e.msg));
        }
        // A DEL without the netns cannot find the host end of the pod's veth: remove it, once
        // the attachment's DEL went through (its cache entry is gone).
        let still_cached = cache::attachments(&list, &opts.cache_dir);
        for a in net
            .attachments
            .iter()
            .filter(|a| a.host_interface_exists && !a.netns_alive)
            .filter(|a| {
                !still_cached
                    .iter()
                    .any(|c| c.container_id == a.container_id && c.ifname == a.ifname)
            })
        {
            let Some(h) = &a.host_interface else { continue };
            let r = Netlink::new().and_then(|mut nl| match nl.link_by_name(h)? {
                Some(link) => nl.delete_link(link.index),
                None => Ok(()),
            });
            if let Err(e) = r {
                errors.push(format!("cannot delete {h}: {e}"));
            }
        }
    }
    let after = inspect(opts);
    let same = |a: &Problem, b: &Problem| {
        a.kind == b.kind && a.network == b.network && a.container_id == b.container_id && a.ifname == b.ifname
    };
    let (remaining, cleaned) = leaks
        .into_iter()
        .partition(|p| after.problems.iter().any(|q| same(p, q)));
    GcOutcome {
        cleaned,
        remaining,
        errors,
        builtin_fallbacks: crate::cni::delegate::builtin_fallbacks(),
    }
}

/// The readable tree: networks -> bridge -> pods, then the problems.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let pf = &r.packet_filter;
    if !pf.kind.is_empty() {
        let none = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(" ") };
        let _ = writeln!(
            o,
            "packet filter: {}  (iptables: {}; iptables-nft tables: {}; legacy tables in use: {}{})",
            pf.kind,
            pf.iptables.as_deref().unwrap_or("none"),
            none(&pf.nft_tables),
            none(&pf.legacy_tables),
            if pf.legacy_forward_drop.is_empty() {
                String::new()
            } else {
                format!("; legacy FORWARD DROP: {}", pf.legacy_forward_drop.join(" "))
            }
        );
    }
    for n in &r.networks {
        let _ = writeln!(o, "network {} ({})  [{}]", n.name, n.file, n.plugins.join(" -> "));
        if let Some(b) = &n.bridge {
            let _ = writeln!(o, "  bridge {b}{}", if n.ip_masq { "  ipMasq" } else { "" });
        }
        if let Some(f) = &n.flannel_subnet {
            let _ = writeln!(o, "  flannel subnet {f}");
        }
        if let Some(d) = &n.data_dir {
            let cap = n.capacity.map(|c| format!(" of {c}")).unwrap_or_default();
            let _ = writeln!(o, "  reservations {}{cap} in {d}", n.reserved);
        }
        if let Some(s) = &n.status {
            let _ = writeln!(o, "  ! STATUS: {s}");
        }
        for a in &n.attachments {
            let mark = if a.source == "reservation" || !a.netns_alive {
                "!"
            } else {
                "-"
            };
            let host = match (&a.host_interface, a.host_interface_exists) {
                (Some(h), true) => format!(
                    "  host {h}{}",
                    a.master.as_ref().map(|m| format!("@{m}")).unwrap_or_default()
                ),
                (Some(h), false) => format!("  host {h} (gone)"),
                _ => String::new(),
            };
            let ns = match (a.source, a.netns_alive) {
                ("reservation", _) => "  (no cache entry)".to_string(),
                (_, true) => format!("  netns {}", a.netns),
                (_, false) => format!("  netns {} (gone)", a.netns),
            };
            let _ = writeln!(
                o,
                "  {mark} {} {}  {}{host}{ns}",
                short(&a.container_id),
                a.ifname,
                a.ips.join(" ")
            );
            for p in &a.port_mappings {
                let _ = writeln!(
                    o,
                    "      port {}{}/{} -> {}",
                    s(p, "hostIP").map(|h| format!("{h}:")).unwrap_or_default(),
                    p.get("hostPort").cloned().unwrap_or_default(),
                    s(p, "protocol").unwrap_or("tcp"),
                    p.get("containerPort").cloned().unwrap_or_default()
                );
            }
            if let Some(b) = &a.bandwidth {
                let _ = writeln!(o, "      bandwidth {b}");
            }
            if !a.reference_chains.is_empty() {
                let _ = writeln!(o, "      reference iptables chains {}", a.reference_chains.join(" "));
            }
            if !a.rule_layouts.is_empty() {
                let _ = writeln!(o, "      rules in {}", a.rule_layouts.join(", "));
            }
        }
    }
    if r.problems.is_empty() {
        let _ = writeln!(o, "no problems found");
    } else {
        let _ = writeln!(o, "problems ({}):", r.problems.len());
        for p in &r.problems {
            let what = if p.gc { "--gc cleans it" } else { "report only" };
            let _ = writeln!(o, "  ! {} {}: {} [{what}]", p.kind, p.network, p.detail);
        }
    }
    for e in &r.recent_errors {
        let _ = writeln!(
            o,
            "recent error: {} {} {} {}: code {} {}",
            s(e, "time").unwrap_or(""),
            s(e, "plugin").unwrap_or(""),
            s(e, "verb").unwrap_or(""),
            short(s(e, "containerID").unwrap_or("")),
            e.get("code").cloned().unwrap_or_default(),
            s(e, "msg").unwrap_or("")
        );
    }
    o
}

fn short(cid: &str) -> &str {
    cid.get(..12).unwrap_or(cid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: Value) -> NetworkList {
        NetworkList::from_bytes(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn capacity_counts_what_host_local_can_hand_out() {
        let l = list(serde_json::json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
            {"type": "bridge", "ipam": {"type": "host-local", "ranges": [
                [{"subnet": "10.1.0.0/24"}],
                [{"subnet": "10.2.0.0/16", "rangeStart": "10.2.0.10", "rangeEnd": "10.2.0.19"}]]}}]}));
        assert_eq!(capacity(&l, None), Some(253 + 10));
        let f = list(serde_json::json!({"cniVersion": "1.0.0", "name": "f", "plugins": [{"type": "flannel"}]}));
        assert_eq!(capacity(&f, Some("10.244.1.1/24")), Some(253));
        assert_eq!(data_dir(&f), Some(PathBuf::from("/var/lib/cni/networks/f")));
    }

    #[test]
    fn only_failed_invocations_are_recent_errors() {
        let dir = std::env::temp_dir().join(format!("cm-inspect-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let mut text = String::new();
        for i in 0..15 {
            text.push_str(&format!("{{\"ok\":{},\"n\":{i}}}\nnot json\n", i % 2 == 0));
        }
        std::fs::write(&log, text).unwrap();
        let errs = recent_errors(&log, 3);
        let ns: Vec<i64> = errs.iter().map(|e| e["n"].as_i64().unwrap()).collect();
        assert_eq!(ns, [9, 11, 13]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn render_names_the_packet_filter_and_each_layout() {
        let r = Report {
            packet_filter: PacketFilter {
                kind: "iptables-legacy",
                iptables: Some("/usr/sbin/iptables (iptables-legacy)".into()),
                nft_tables: vec![],
                legacy_tables: vec!["filter".into(), "nat".into()],
                legacy_forward_drop: vec!["ip".into()],
            },
            networks: vec![Network {
                name: "n".into(),
                attachments: vec![Attachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into(),
                    netns_alive: true,
                    rule_layouts: vec!["iptables-legacy"],
                    source: "cache",
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&r);
        assert!(
            text.starts_with(
                "packet filter: iptables-legacy  (iptables: /usr/sbin/iptables (iptables-legacy); \
                 iptables-nft tables: none; legacy tables in use: filter nat; legacy FORWARD DROP: ip)\n"
            ),
            "{text}"
        );
        assert!(text.contains("      rules in iptables-legacy\n"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["packetFilter"]["legacyTablesInUse"],
            serde_json::json!(["filter", "nat"])
        );
        assert_eq!(
            json["networks"][0]["attachments"][0]["ruleLayouts"],
            serde_json::json!(["iptables-legacy"])
        );
    }
}
