//! host-local IPAM (plugins/ipam/host-local): addresses from range sets, reserved as files
//! under `<dataDir>/<network>/`, in the reference's order and on-disk format, plus GC and
//! STATUS (CNI 1.1), which the reference lacks.

pub mod allocator;
pub mod range;
pub mod store;

use super::{parse_cidr, parse_ip, parse_requested_ip, parse_resolv_conf, NetIn};
use crate::cni::config::{self, Attachment};
use crate::cni::error::{code, CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, IpConfig, Route};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::cni::version;
use crate::pkg::caps::{self, Capability};
use allocator::Allocator;
use anyhow::{Context, Result};
use range::{RangeSet, RawRange};
use serde::Deserialize;
use std::net::IpAddr;
use store::{Owner, Store};

pub static PLUGIN: Plugin = entry::<HostLocal>();

struct HostLocal;

impl CniPlugin for HostLocal {
    const NAME: &'static str = "host-local";
    const KIND: Kind = Kind::Ipam;
    const SUMMARY: &'static str = "IP addresses from local ranges, reserved as files (GC and STATUS included)";
    const CAPS: &'static [Capability] = caps::NONE;
    type Conf = IpamConf;
    type Lenient = IpamConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        Ok(load_conf(&args.stdin, &args.args)?)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(load_conf(&args.stdin, &args.args)?)
    }
    fn add(conf: Self::Conf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        cmd_add(conf, args)
    }
    fn del(conf: Self::Lenient, args: &CmdArgs) -> anyhow::Result<()> {
        cmd_del(conf, args)
    }
    fn check(conf: Self::Conf, args: &CmdArgs) -> anyhow::Result<()> {
        cmd_check(conf, args)
    }
    fn status(args: &CmdArgs) -> anyhow::Result<()> {
        cmd_status(args)
    }
    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        cmd_gc(args)
    }
}

// ---- config ---------------------------------------------------------------------------

#[derive(Deserialize, Default, GoKeys)]
struct RangeIn {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<String>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize, GoKeys)]
struct IpamIn {
    // The legacy single range lives at the top of the ipam object.
    #[serde(flatten)]
    legacy: RangeIn,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<String>,
    #[serde(default)]
    ranges: Option<Vec<Vec<RangeIn>>>,
}

#[derive(Deserialize, Default, GoKeys)]
struct RuntimeIn {
    #[serde(rename = "ipRanges", default)]
    ip_ranges: Option<Vec<Vec<RangeIn>>>,
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Deserialize, GoKeys)]
struct ArgsIn {
    #[serde(default)]
    cni: Option<IpamArgsIn>,
}

#[derive(Deserialize, GoKeys)]
struct IpamArgsIn {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

/// The validated configuration (the reference's IPAMConfig after LoadIPAMConfig).
#[derive(Debug, Clone)]
pub struct IpamConf {
    pub name: String,
    pub cni_version: String,
    pub data_dir: String,
    pub resolv_conf: String,
    pub routes: Vec<Route>,
    /// In order: runtimeConfig.ipRanges, the legacy range, `ranges`.
    pub sets: Vec<RangeSet>,
    /// CNI_ARGS IP, then args.cni.ips, then runtimeConfig.ips; duplicates dropped.
    pub requested: Vec<IpAddr>,
    pub gc_keep: Option<Vec<Attachment>>,
}

fn decode_range(r: &RangeIn) -> Result<RawRange, CniError> {
    Ok(RawRange {
        subnet: r.subnet.as_deref().map(parse_cidr).transpose()?,
        range_start: r.range_start.as_deref().map(parse_ip).transpose()?.flatten(),
        range_end: r.range_end.as_deref().map(parse_ip).transpose()?.flatten(),
        gateway: r.gateway.as_deref().map(parse_ip).transpose()?.flatten(),
    })
}

fn decode_sets(sets: &Option<Vec<Vec<RangeIn>>>) -> Result<Vec<Vec<RawRange>>, CniError> {
    sets.iter()
        .flatten()
        .map(|set| set.iter().map(decode_range).collect())
        .collect()
}

/// LoadIPAMConfig: decode, merge the sources, validate, with the reference's messages.
pub fn load_conf(stdin: &[u8], cni_args: &str) -> Result<IpamConf, CniError> {
    let mut n: NetIn<IpamIn, RuntimeIn, ArgsIn> = config::parse(stdin)?;
    let gc_keep = n.take_gc_keep();
    let rc = n.runtime_config.unwrap_or_default();
    let rc_sets = decode_sets(&rc.ip_ranges)?;
    let rc_ips = rc.ips.unwrap_or_default();
    let args_ips = n.args.and_then(|a| a.cni).and_then(|c| c.ips).unwrap_or_default();
    let Some(ipam) = n.ipam else {
        return Err(CniError::internal("IPAM config missing 'ipam' key"));
    };
    let legacy = decode_range(&ipam.legacy)?;
    let ranges = decode_sets(&ipam.ranges)?;

    let mut requested: Vec<IpAddr> = Vec::new();
    let env = crate::cni::args::CniArgs::parse(cni_args).map_err(|e| CniError::internal(e.msg))?;
    env.check_known(&["IP"]).map_err(|e| CniError::internal(e.msg))?;
    if let Some(v) = env.get("IP").filter(|v| !v.is_empty()) {
        let ip = parse_requested_ip(v).map_err(|e| {
            CniError::internal(format!(
                "ARGS: error parsing value of pair {:?}: {e}",
                format!("IP={v}")
            ))
        })?;
        requested.push(ip);
    }
    for s in args_ips.iter().chain(rc_ips.iter()) {
        requested.push(parse_requested_ip(s).map_err(CniError::internal)?);
    }
    let mut seen = std::collections::HashSet::new();
    requested.retain(|ip| seen.insert(*ip));

    let mut raw_sets = rc_sets;
    if legacy.subnet.is_some() {
        raw_sets.push(vec![legacy]);
    }
    raw_sets.extend(ranges);
    if raw_sets.is_empty() {
        return Err(CniError::internal("no IP ranges specified"));
    }
    let mut sets = Vec::with_capacity(raw_sets.len());
    for (i, raw) in raw_sets.iter().enumerate() {
        sets.push(RangeSet::canonicalize(raw).map_err(|e| CniError::internal(format!("invalid range set {i}: {e}")))?);
    }
    let v4 = sets.iter().filter(|s| s.is_v4()).count();
    if (v4 > 1 || sets.len() - v4 > 1) && !version::Version::at_least(&n.cni_version, "0.3.0").unwrap_or(false) {
        return Err(CniError::internal(format!(
            "CNI version {} does not support more than 1 address per family",
            n.cni_version
        )));
    }
    for i in 0..sets.len() {
        for j in i + 1..sets.len() {
            if sets[i].overlaps(&sets[j]) {
                return Err(CniError::internal(format!("range set {i} overlaps with {j}")));
            }
        }
    }
    Ok(IpamConf {
        name: n.name,
        cni_version: n.cni_version,
        data_dir: ipam.data_dir.unwrap_or_default(),
        resolv_conf: ipam.resolv_conf.unwrap_or_default(),
        routes: ipam.routes.unwrap_or_default(),
        sets,
        requested,
        gc_keep,
    })
}

fn open_store(conf: &IpamConf) -> Result<Store, CniError> {
    let data_dir = if conf.data_dir.is_empty() {
        store::DEFAULT_DATA_DIR
    } else {
        &conf.data_dir
    };
    Store::open(data_dir, &conf.name)
        .map_err(|e| CniError::internal(format!("host-local: cannot use data dir {data_dir}/{}: {e}", conf.name)))
}

/// `open_store` for an ADD: one reservation file per range set is made before the lock.
fn open_store_for_add(conf: &IpamConf, args: &CmdArgs) -> Result<Store, CniError> {
    let data_dir = if conf.data_dir.is_empty() {
        store::DEFAULT_DATA_DIR
    } else {
        &conf.data_dir
    };
    Store::open_for_add(data_dir, &conf.name, &args.container_id, &args.ifname, conf.sets.len())
        .map_err(|e| CniError::internal(format!("host-local: cannot use data dir {data_dir}/{}: {e}", conf.name)))
}

// ---- verbs ----------------------------------------------------------------------------

fn cmd_add(conf: IpamConf, args: &CmdArgs) -> Result<CniResult> {
    let mut result = CniResult::new(&conf.cni_version);
    if !conf.resolv_conf.is_empty() {
        result.dns = parse_resolv_conf(&conf.resolv_conf)?;
    }
    let store = open_store_for_add(&conf, args)?;
    let mut remaining = conf.requested.clone();
    let mut reserved: Vec<IpAddr> = Vec::new();
    // Undo this ADD's reservations (only these: an earlier ADD's stay untouched).
    let rollback = |reserved: &[IpAddr]| {
        for ip in reserved {
            let _ = store.release_ip(*ip);
        }
    };
    for (idx, set) in conf.sets.iter().enumerate() {
        let requested = remaining
            .iter()
            .position(|ip| set.contains(*ip))
            .map(|i| remaining.remove(i));
        let alloc = Allocator {
            set,
            store: &store,
            id: idx,
        };
        match alloc.get(&args.container_id, &args.ifname, requested) {
            Ok(a) => {
                reserved.push(a.address.addr());
                result.ips.push(IpConfig {
                    interface: None,
                    address: a.address,
                    gateway: Some(a.gateway),
                });
            }
            Err(e) => {
                rollback(&reserved);
                return Err(CniError::internal(format!("failed to allocate for range {idx}: {e}")).into());
            }
        }
    }
    if !remaining.is_empty() {
        rollback(&reserved);
        let list: Vec<String> = remaining.iter().map(|ip| ip.to_string()).collect();
        return Err(CniError::internal(format!("failed to allocate all requested IPs: {}", list.join(" "))).into());
    }
    result.routes = conf.routes;
    Ok(result)
}

fn cmd_del(conf: IpamConf, args: &CmdArgs) -> Result<()> {
    let store = open_store(&conf)?;
    if release_from_prev_result(args, &conf, &store) {
        return Ok(());
    }
    // One release per range set, as the reference does: a second pass finds no (id, ifname)
    // file any more and so also releases legacy id-only files.
    let mut errors = Failures::new();
    for _ in &conf.sets {
        errors.keep(store.release_by_id(&args.container_id, &args.ifname));
    }
    Ok(errors.finish()?)
}

fn cmd_check(conf: IpamConf, args: &CmdArgs) -> Result<()> {
    let store = open_store(&conf)?;
    if !store
        .find_by_id(&args.container_id, &args.ifname)
        .map_err(|e| CniError::internal(e.to_string()))?
    {
        return Err(CniError::internal(format!(
            "host-local: Failed to find address added by container {}",
            args.container_id
        ))
        .into());
    }
    Ok(())
}

/// GC: release every reservation whose attachment is not in the valid list. Legacy files
/// (container ID only) are kept when the ID appears with any ifname; empty files (abandoned
/// by a killed writer) have no owner and go. Without a list, nothing is touched.
fn cmd_gc(args: &CmdArgs) -> Result<()> {
    let conf = load_conf(&args.stdin, &args.args)?;
    let Some(keep) = &conf.gc_keep else {
        return Ok(());
    };
    let store = open_store(&conf)?;
    let entries = store
        .entries()
        .map_err(|e| CniError::internal(format!("host-local: GC: {e}")))?;
    let mut errors = Failures::under("host-local: GC");
    for e in entries {
        let valid = match Owner::parse(&e.content) {
            None => false,
            Some(Owner {
                container_id,
                ifname: Some(ifname),
            }) => keep
                .iter()
                .any(|a| a.container_id == container_id && a.ifname == ifname),
            Some(Owner {
                container_id,
                ifname: None,
            }) => keep.iter().any(|a| a.container_id == container_id),
        };
        if !valid {
            errors.keep(store.release_ip(e.ip).with_context(|| format!("release {}", e.name)));
        }
    }
    Ok(errors.finish()?)
}

/// STATUS: ready when the data dir is writable and every range set (ADD takes one address
/// from each) still has a free address. Otherwise code 50.
fn cmd_status(args: &CmdArgs) -> Result<()> {
    let conf = load_conf(&args.stdin, &args.args)?;
    let unavailable = |msg: String| CniError::new(code::NOT_AVAILABLE, msg);
    let store = open_store(&conf).map_err(|e| unavailable(e.msg))?;
    store.probe_writable().map_err(|e| {
        unavailable(format!(
            "host-local: data dir {} is not writable: {e}",
            store.dir().display()
        ))
    })?;
    let entries = store
        .entries()
        .map_err(|e| unavailable(format!("host-local: cannot read {}: {e}", store.dir().display())))?;
    let mut exhausted = Vec::new();
    for set in &conf.sets {
        let capacity: u128 = set.0.iter().map(|r| r.capacity()).sum();
        let used = entries
            .iter()
            .filter(|e| !e.content.is_empty())
            .filter(|e| set.range_for(e.ip).is_some_and(|r| r.gateway != range::canon(e.ip)))
            .count() as u128;
        if used >= capacity {
            exhausted.push(format!("no IP addresses available in range set {set}"));
        }
    }
    if !exhausted.is_empty() {
        return Err(unavailable(exhausted.join("; ")).into());
    }
    Ok(())
}

/// DEL's fast path: prevResult (sent with DEL since 0.4.0) names the addresses of this
/// attachment, so their files are checked directly instead of reading every reservation of
/// the network (the reference's scan, O(pods)). It applies only when every range set had
/// its address released this way; otherwise the caller scans as the reference does.
fn release_from_prev_result(args: &CmdArgs, conf: &IpamConf, store: &Store) -> bool {
    #[derive(Deserialize, GoKeys)]
    struct Prev {
        #[serde(rename = "cniVersion", default)]
        cni_version: String,
        #[serde(rename = "prevResult", default)]
        prev_result: Option<serde_json::Value>,
    }
    let Ok(p) = crate::cni::gokeys::from_slice::<Prev>(&args.stdin) else {
        return false;
    };
    let Some(prev) = p
        .prev_result
        .and_then(|v| crate::cni::result::CniResult::parse(&v, &p.cni_version).ok())
    else {
        return false;
    };
    let key = format!("{}\r\n{}", args.container_id.trim(), args.ifname);
    let mine: Vec<IpAddr> = prev
        .ips
        .iter()
        .map(|i| i.address.addr())
        .filter(|ip| store.owner_of(*ip).as_deref() == Some(key.as_str()))
        .collect();
    let covered = conf
        .sets
        .iter()
        .all(|set| mine.iter().filter(|ip| set.contains(**ip)).count() == 1);
    if !covered || mine.len() != conf.sets.len() {
        return false;
    }
    mine.iter().all(|ip| store.release_ip(*ip).is_ok())
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(NetIn::<IpamIn, RuntimeIn, ArgsIn>::shape()).unwrap();
    }
}
