//! bandwidth: shape a pod's traffic with token bucket filters on the host side of its veth.
//! Chained only (after an interface plugin that made a veth); it prints prevResult back,
//! with the IFB it made appended.
//!
//! - Ingress (into the pod): TBF `1:` at the root of the host veth.
//! - Egress (out of the pod): an IFB `bwp<hash>`; the host veth's `ingress` qdisc `ffff:`
//!   redirects everything (u32 match-all + mirred) to it; TBF `1:` at the IFB's root.
//!
//! The objects are the reference's, byte for byte, so either implementation's DEL and CHECK
//! find the other's. The IFB's alias records its network and attachment for GC (the
//! reference has no GC and sets no alias; its IFBs are left to its DEL).

use crate::cni::config::{self, NetConf};
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::{self, GoKeys, Node};
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Interface};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::link::fmt_mac;
use crate::linux::netlink::tc::{handle, Tbf, HANDLE_INGRESS, HANDLE_ROOT, MIRRED_EGRESS_REDIR};
use crate::linux::netlink::{LinkKind, LinkSpec, LinkType};
use crate::linux::{NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::netns::open_netns;
use crate::pkg::sha512::hex_prefix;
use crate::pkg::undo::Undo;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

pub static PLUGIN: Plugin = entry::<Bandwidth>();

/// The reference's TBF latency.
const LATENCY_MS: u64 = 25;
const IFB_PREFIX: &str = "bwp";
/// IFNAMSIZ - 1.
const MAX_IFNAME: usize = 15;
/// Marks IFB aliases this plugin wrote: `<prefix> <network> <containerID> <ifname>`.
const ALIAS_PREFIX: &str = "cni-bandwidth";
/// The kernel's limit on an interface alias, NUL included.
const IFALIASZ: usize = 256;
const USEC_PER_SEC: f64 = 1_000_000.0;

// ---- config -----------------------------------------------------------------------------

/// Rates in bits per second, bursts in bits; 0 = no limit in that direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub ingress_rate: u64,
    pub ingress_burst: u64,
    pub egress_rate: u64,
    pub egress_burst: u64,
}

impl Limits {
    fn is_zero(&self) -> bool {
        *self == Limits::default()
    }
}

const KEYS: [&str; 4] = ["ingressRate", "ingressBurst", "egressRate", "egressBurst"];

/// Where the limits are, for Go's key matching (cni::gokeys; containerd 1.6 sends
/// `IngressRate`): read as JSON afterwards, since a key given as `null` still counts as given
/// (Go allocates the embedded entry for it).
#[derive(GoKeys)]
#[allow(dead_code)] // only the key lists are used
struct LimitKeys {
    #[serde(rename = "ingressRate")]
    ingress_rate: Option<Value>,
    #[serde(rename = "ingressBurst")]
    ingress_burst: Option<Value>,
    #[serde(rename = "egressRate")]
    egress_rate: Option<Value>,
    #[serde(rename = "egressBurst")]
    egress_burst: Option<Value>,
}

#[derive(GoKeys)]
#[allow(dead_code)]
struct ConfKeys {
    #[serde(flatten)]
    limits: LimitKeys,
    #[serde(rename = "runtimeConfig")]
    runtime_config: Option<RuntimeKeys>,
}

#[derive(GoKeys)]
#[allow(dead_code)]
struct RuntimeKeys {
    bandwidth: Option<LimitKeys>,
}

fn field<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key)
}

/// The limits in `m`, or None when none of the keys is present (Go leaves the embedded
/// struct nil then). A present key with a value that is no uint64 is a config error.
fn limits_in(m: &Map<String, Value>) -> Result<Option<Limits>, CniError> {
    if !KEYS.iter().any(|k| field(m, k).is_some()) {
        return Ok(None);
    }
    let get = |k: &str| -> Result<u64, CniError> {
        match field(m, k) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| {
                CniError::invalid_config(format!(
                    "failed to parse network configuration: {k}: {v} is not an unsigned 64-bit integer"
                ))
            }),
        }
    };
    Ok(Some(Limits {
        ingress_rate: get(KEYS[0])?,
        ingress_burst: get(KEYS[1])?,
        egress_rate: get(KEYS[2])?,
        egress_burst: get(KEYS[3])?,
    }))
}

/// The reference's per-direction rule: both or neither, and the burst in bytes fits u32.
fn validate_direction(rate: u64, burst: u64) -> Result<()> {
    if burst == 0 && rate != 0 {
        bail!("if rate is set, burst must also be set");
    }
    if rate == 0 && burst != 0 {
        bail!("if burst is set, rate must also be set");
    }
    if burst / 8 >= u32::MAX as u64 {
        bail!("burst cannot be more than 4GB");
    }
    Ok(())
}

struct Conf {
    net: NetConf,
    /// None: neither static keys nor runtimeConfig.bandwidth.
    limits: Option<Limits>,
}

/// Parses stdin: the static keys win over `runtimeConfig.bandwidth`; both directions are
/// validated before anything else, as the reference does.
pub fn parse_limits(stdin: &[u8]) -> Result<Option<Limits>> {
    let node: Node = config::parse(stdin)?;
    let v = Value::deserialize(gokeys::canonical(&node, ConfKeys::shape()))?;
    let Some(top) = v.as_object() else {
        return Ok(None);
    };
    let static_limits = limits_in(top)?;
    // Decoded even when the static keys win, so a bad value there fails as Go's does.
    let runtime = match field(top, "runtimeConfig")
        .and_then(Value::as_object)
        .and_then(|rc| field(rc, "bandwidth"))
        .and_then(Value::as_object)
    {
        // Go allocates the entry for `"bandwidth": {}` too; zero limits pass through.
        Some(bw) => Some(limits_in(bw)?.unwrap_or_default()),
        None => None,
    };
    let limits = static_limits.or(runtime);
    if let Some(l) = &limits {
        validate_direction(l.ingress_rate, l.ingress_burst)?;
        validate_direction(l.egress_rate, l.egress_burst)?;
    }
    Ok(limits)
}

fn parse_conf(stdin: &[u8]) -> Result<Conf> {
    let limits = parse_limits(stdin)?;
    let net: NetConf = config::parse(stdin)?;
    net.prev_result()?;
    Ok(Conf { net, limits })
}

struct Bandwidth;

impl CniPlugin for Bandwidth {
    const NAME: &'static str = "bandwidth";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "limit a pod's ingress and egress rate with token bucket filters (tbf, ifb)";
    const CAPS: &'static [Capability] = caps::IN_POD;
    const VERSIONS: &'static [&'static str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
    const HAS_STATUS: bool = false;
    type Conf = Conf;
    type Lenient = Conf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        parse_conf(&args.stdin)
    }

    fn add(c: Conf, args: &CmdArgs) -> Result<CniResult> {
        let prev = c.net.prev_result()?;
        let limits = match c.limits {
            Some(l) if !l.is_zero() => l,
            _ => return Ok(prev.unwrap_or_else(|| CniResult::new(c.net.version()))),
        };
        let Some(mut result) = prev else {
            bail!("must be called as chained plugin");
        };
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::new()?;
        let host = host_veth(&mut nl, &ns, &result.interfaces, &args.ifname)?;
        let host_link = nl
            .link_by_name(&host)?
            .ok_or_else(|| anyhow!("get host device: Link not found"))?;

        let mut undo = Undo::new();
        if limits.ingress_rate > 0 {
            let tbf = tbf_params(limits.ingress_rate, limits.ingress_burst, tick_in_usec());
            nl.add_tbf(host_link.index, handle(1, 0), HANDLE_ROOT, &tbf)
                .map_err(|e| anyhow!("create qdisc: {}", go_errno(&e)))?;
            let idx = host_link.index;
            undo.push("delete ingress tbf", move || {
                Ok(Netlink::new()?.delete_qdisc(idx, handle(1, 0), HANDLE_ROOT)?)
            });
        }
        if limits.egress_rate > 0 {
            let name = ifb_name(&c.net.name, &args.container_id);
            let mut spec = LinkSpec::new(&name, LinkKind::Ifb).mtu(host_link.mtu).up();
            // vishvananda sends the zero TxQLen of a LinkAttrs literal: qlen 0, as the reference.
            spec.txqlen = Some(0);
            nl.create_link(&spec)
                .map_err(|e| anyhow!("adding link: {}", go_errno(&e)))?;
            let ifb = nl
                .link_by_name(&name)?
                .ok_or_else(|| anyhow!("get ifb device: Link not found"))?;
            let ifb_index = ifb.index;
            undo.push(format!("delete ifb {name:?}"), move || {
                Ok(Netlink::new()?.delete_link(ifb_index)?)
            });
            let alias = format!("{ALIAS_PREFIX} {} {} {}", c.net.name, args.container_id, args.ifname);
            // The kernel takes at most IFALIASZ-1 bytes; an attachment too long to record is
            // still shaped (the reference sets no alias at all), GC just cannot map it back.
            if alias.len() < IFALIASZ {
                nl.set_alias(ifb.index, Some(&alias))?;
            }
            result.interfaces.push(Interface {
                name: name.clone(),
                mac: ifb.mac.map(|m| fmt_mac(&m)).unwrap_or_default(),
                ..Default::default()
            });

            nl.add_ingress_qdisc(host_link.index)
                .map_err(|e| anyhow!("create ingress qdisc: {}", go_errno(&e)))?;
            let idx = host_link.index;
            undo.push("delete ingress qdisc", move || {
                Ok(Netlink::new()?.delete_qdisc(idx, handle(0xffff, 0), HANDLE_INGRESS)?)
            });
            nl.add_u32_redirect(host_link.index, handle(0xffff, 0), 1, ifb.index)
                .map_err(|e| anyhow!("add filter: {}", go_errno(&e)))?;
            let tbf = tbf_params(limits.egress_rate, limits.egress_burst, tick_in_usec());
            nl.add_tbf(ifb.index, handle(1, 0), HANDLE_ROOT, &tbf)
                .map_err(|e| anyhow!("create ifb qdisc: create qdisc: {}", go_errno(&e)))?;
        }
        undo.commit();
        Ok(result)
    }

    /// Removes everything ADD made: on the host veth the root TBF `1:` (ingress shaping) and
    /// the ingress qdisc `ffff:` whose u32 filter redirects to the IFB (its filters go with
    /// it), then the IFB. A DEL of bandwidth alone (a chain edit) so leaves an unshaped pod,
    /// and never a redirect to a vanished device, which drops every packet (the reference
    /// deletes only the IFB). The veth stays for its own plugin's DEL. Nothing found is
    /// success: the netns may be gone (its veth with it), the objects already removed.
    fn del(c: Conf, args: &CmdArgs) -> Result<()> {
        let name = ifb_name(&c.net.name, &args.container_id);
        let mut nl = Netlink::new()?;
        let ifb = nl.link_by_name(&name)?;
        if let Some(host) = host_veth_for_del(&mut nl, &c, args) {
            unshape_host_veth(&mut nl, host, ifb.as_ref().map(|l| l.index))?;
        }
        match ifb.map(|l| nl.delete_link(l.index)) {
            Some(Err(e)) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    }

    fn check(c: Conf, args: &CmdArgs) -> Result<()> {
        let Some(prev) = c.net.prev_result()? else {
            bail!("must be called as a chained plugin");
        };
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::new()?;
        let host = host_veth(&mut nl, &ns, &prev.interfaces, &args.ifname)?;
        let host_link = nl.link_by_name(&host)?.ok_or_else(|| anyhow!("Link not found"))?;
        let Some(l) = c.limits else {
            return Ok(());
        };
        let tick = tick_in_usec();
        if l.ingress_rate > 0 && l.ingress_burst > 0 {
            check_tbf(
                &mut nl,
                host_link.index,
                &tbf_params(l.ingress_rate, l.ingress_burst, tick),
            )?;
        }
        if l.egress_rate > 0 && l.egress_burst > 0 {
            let name = ifb_name(&c.net.name, &args.container_id);
            let ifb = nl
                .link_by_name(&name)?
                .ok_or_else(|| anyhow!("get ifb device: Link not found"))?;
            check_tbf(&mut nl, ifb.index, &tbf_params(l.egress_rate, l.egress_burst, tick))?;
            check_redirect(&mut nl, host_link.index, &host, ifb.index, &name)?;
        }
        Ok(())
    }

    /// Removes this network's IFBs whose attachment is not in `cni.dev/valid-attachments`.
    /// Without that key nothing is removed. IFBs without our alias (the reference's) are kept.
    fn gc(args: &CmdArgs) -> Result<()> {
        let net: NetConf = config::parse(&args.stdin)?;
        let Some(valid) = net.gc_valid_attachments() else {
            return Ok(());
        };
        let mut nl = Netlink::new()?;
        let mut errors = Failures::new();
        for l in nl.links()? {
            if l.kind != Some(LinkType::Ifb) || !l.name.starts_with(IFB_PREFIX) {
                continue;
            }
            let Some((netname, cid, ifname)) = l.alias.as_deref().and_then(parse_alias) else {
                continue;
            };
            if netname != net.name || valid.iter().any(|a| a.container_id == cid && a.ifname == ifname) {
                continue;
            }
            match nl.delete_link(l.index) {
                Err(e) if !e.is_not_found() => {
                    errors.push(anyhow::Error::from(e).context(format!("delete ifb {:?}", l.name)))
                }
                _ => {}
            }
        }
        Ok(errors.finish()?)
    }
}

// ---- check ------------------------------------------------------------------------------

/// The reference's comparison (rate, then limit, then buffer, with its texts), on the root
/// TBF `1:`. Stricter than the reference, whose loop stops at the first qdisc that is no
/// TBF and so passes when the TBF was removed and `noqueue` came back.
fn check_tbf(nl: &mut Netlink, ifindex: u32, want: &Tbf) -> Result<()> {
    // pfifo_fast is skipped as the reference does (old kernels do not report it).
    let qdiscs: Vec<_> = nl
        .qdiscs(ifindex)?
        .into_iter()
        .filter(|q| q.kind != "pfifo_fast")
        .collect();
    if qdiscs.is_empty() {
        bail!("Failed to find qdisc");
    }
    let Some(t) = qdiscs
        .iter()
        .find(|q| q.parent == HANDLE_ROOT && q.handle == handle(1, 0))
        .and_then(|q| q.tbf)
    else {
        bail!("Failed to find tbf qdisc 1: on link #{ifindex}");
    };
    if t.rate != want.rate {
        bail!("Rate doesn't match");
    }
    if t.limit != want.limit {
        bail!("Limit doesn't match");
    }
    if t.buffer != want.buffer {
        bail!("Buffer doesn't match");
    }
    Ok(())
}

/// Egress also needs the host veth's ingress qdisc and its redirect to the IFB (the
/// reference does not look: without them nothing reaches the IFB's TBF).
fn check_redirect(nl: &mut Netlink, host: u32, host_name: &str, ifb: u32, ifb_name: &str) -> Result<()> {
    let ingress = handle(0xffff, 0);
    if !nl
        .qdiscs(host)?
        .iter()
        .any(|q| q.kind == "ingress" && q.handle == ingress && q.parent == HANDLE_INGRESS)
    {
        bail!("Failed to find ingress qdisc on {host_name}");
    }
    let redirected = nl.u32_redirects(host, ingress)?.iter().any(|r| {
        r.mirred
            .iter()
            .any(|&(eaction, target, _)| eaction == MIRRED_EGRESS_REDIR && target == ifb)
    });
    if !redirected {
        bail!("Failed to find the redirect from {host_name} to {ifb_name}");
    }
    Ok(())
}

// ---- helpers ----------------------------------------------------------------------------

/// `bwp` + the first 12 hex digits of sha512(network name + container ID).
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let id = format!("{network}{container_id}");
    format!("{IFB_PREFIX}{}", hex_prefix(&id, MAX_IFNAME - IFB_PREFIX.len()))
}

/// The host veth of the attachment for DEL, if it still exists: the peer of the container
/// interface (checked against prevResult when there is one). None when the netns or the
/// interface is gone, which takes the veth with it.
fn host_veth_for_del(nl: &mut Netlink, c: &Conf, args: &CmdArgs) -> Option<u32> {
    let ns = NetNs::open(&args.netns).ok()?;
    let name = match c.net.prev_result().ok().flatten() {
        Some(prev) if !prev.interfaces.is_empty() => host_veth(nl, &ns, &prev.interfaces, &args.ifname).ok()?,
        _ => {
            let peer = Netlink::in_netns(&ns).ok()?.link_by_name(&args.ifname).ok()??;
            if peer.kind != Some(LinkType::Veth) {
                return None;
            }
            // Without prevResult to name it, the peer index must at least find a veth here.
            let host = nl.link_by_index(peer.link?).ok()??;
            return (host.kind == Some(LinkType::Veth)).then_some(host.index);
        }
    };
    nl.link_by_name(&name).ok()?.map(|l| l.index)
}

/// Deletes bandwidth's qdiscs on the host veth: the root TBF `1:`, and the ingress qdisc when
/// its u32 filters redirect to our IFB or, the IFB being gone already, to no device at all.
fn unshape_host_veth(nl: &mut Netlink, veth: u32, ifb: Option<u32>) -> Result<()> {
    let qdiscs = match nl.qdiscs(veth) {
        Ok(q) => q,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let ignore_gone = |r: crate::linux::Result<()>| match r {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    };
    if qdiscs
        .iter()
        .any(|q| q.kind == "tbf" && q.parent == HANDLE_ROOT && q.handle == handle(1, 0))
    {
        ignore_gone(nl.delete_qdisc(veth, handle(1, 0), HANDLE_ROOT))?;
    }
    let ingress = handle(0xffff, 0);
    if !qdiscs
        .iter()
        .any(|q| q.kind == "ingress" && q.handle == ingress && q.parent == HANDLE_INGRESS)
    {
        return Ok(());
    }
    let redirects = nl.u32_redirects(veth, ingress).unwrap_or_default();
    let targets: Vec<u32> = redirects
        .iter()
        .flat_map(|r| r.mirred.iter().filter(|m| m.0 == MIRRED_EGRESS_REDIR).map(|m| m.1))
        .collect();
    let ours = match ifb {
        Some(i) => targets.contains(&i),
        // The kernel reports a redirect whose device was unregistered as ifindex 0.
        None => {
            !targets.is_empty()
                && targets
                    .iter()
                    .all(|&t| t == 0 || matches!(nl.link_by_index(t), Ok(None)))
        }
    };
    if ours {
        ignore_gone(nl.delete_qdisc(veth, ingress, HANDLE_INGRESS))?;
    }
    Ok(())
}

fn parse_alias(a: &str) -> Option<(&str, &str, &str)> {
    let mut it = a.split(' ');
    if it.next()? != ALIAS_PREFIX {
        return None;
    }
    let r = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some(r)
}

/// The host end of the container interface: its veth peer's index, looked up in the host
/// namespace, must name a host interface (no sandbox) of prevResult.
fn host_veth(nl: &mut Netlink, ns: &NetNs, ifaces: &[Interface], ifname: &str) -> Result<String> {
    if ifaces.is_empty() {
        bail!("no interfaces provided");
    }
    let mut cnl = Netlink::in_netns(ns)?;
    let peer = match cnl.link_by_name(ifname)? {
        None => bail!("container interface {ifname} has no veth peer: could not look up {ifname:?}: Link not found"),
        Some(l) if l.kind != Some(LinkType::Veth) => {
            bail!("container interface {ifname} has no veth peer: interface {ifname:?} was not a veth interface")
        }
        Some(l) => l.link.unwrap_or(0),
    };
    if peer == 0 {
        bail!("container interface {ifname} has no veth peer: <nil>");
    }
    let link = nl
        .link_by_index(peer)?
        .ok_or_else(|| anyhow!("veth peer with index {peer} is not in host ns"))?;
    ifaces
        .iter()
        .find(|i| i.sandbox.is_empty() && i.name == link.name)
        .map(|i| i.name.clone())
        .ok_or_else(|| anyhow!("no veth peer of container interface found in host ns"))
}

/// Scheduler ticks per microsecond, from /proc/net/psched as vishvananda/netlink reads it
/// (15.625 on every current kernel).
fn tick_in_usec() -> f64 {
    let parse = || -> Option<f64> {
        let s = std::fs::read_to_string("/proc/net/psched").ok()?;
        let f: Vec<u32> = s
            .split_whitespace()
            .take(3)
            .map(|p| u32::from_str_radix(p, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        let (mut t2us, us2t, res) = (*f.first()?, *f.get(1)?, *f.get(2)?);
        if res == 1_000_000_000 {
            t2us = us2t;
        }
        Some(t2us as f64 / us2t as f64 * (res as f64 / USEC_PER_SEC))
    };
    parse().unwrap_or(15.625)
}

/// TBF parameters the reference's way: bytes per second, limit = rate·latency + burst,
/// buffer = burst/rate seconds in ticks; integer maths and truncating conversions where Go
/// has them, so that even absurd values give the reference's numbers.
pub fn tbf_params(rate_bits: u64, burst_bits: u64, tick_in_usec: f64) -> Tbf {
    let rate = rate_bits / 8;
    let burst = (burst_bits / 8) as u32;
    let time = go_f64_to_u32(burst as f64 * USEC_PER_SEC / rate as f64);
    let buffer = go_f64_to_u32(time as f64 * tick_in_usec);
    let latency_us = LATENCY_MS * 1000;
    let limit = (rate.wrapping_mul(latency_us) / USEC_PER_SEC as u64).wrapping_add(burst as u64) as u32;
    Tbf {
        rate,
        peakrate: 0,
        limit,
        buffer,
    }
}

/// Go's `uint32(f)` on amd64: through int64, where NaN, infinities and out-of-range values
/// become 0x8000_0000_0000_0000 (so 0 in 32 bits); Rust's `as` would saturate instead.
fn go_f64_to_u32(f: f64) -> u32 {
    if f.is_finite() && f >= -(2f64.powi(63)) && f < 2f64.powi(63) {
        (f as i64) as u32
    } else {
        0
    }
}

/// A kernel error as Go prints a bare errno ("file exists").
fn go_errno(e: &crate::linux::Error) -> String {
    match e.errno() {
        Some(n) => crate::linux::error::errno_text(n),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_maths() {
        // 8 Mbit/s, 80 kbit burst: 1 MB/s, 10 kB bucket = 10 ms = 156250 ticks.
        let t = tbf_params(8_000_000, 80_000, 15.625);
        assert_eq!(t.rate, 1_000_000);
        assert_eq!(t.limit, 25_000 + 10_000);
        assert_eq!(t.buffer, 156_250);
        // The reference's own unit-test figures: rate 8 bit/s, burst 8 bit.
        let t = tbf_params(8, 8, 15.625);
        assert_eq!((t.rate, t.limit, t.buffer), (1, 1, 15_625_000));
        // Below 8 bit/s the rate is 0 bytes: Go's conversion of +Inf gives a 0 buffer.
        assert_eq!(tbf_params(7, 8, 15.625).buffer, 0);
        // 1 byte/s with a 1 GB bucket: 1e15 µs wraps in 32 bits as Go's int64 path does.
        assert_eq!(tbf_params(8, 8_000_000_000, 15.625).buffer, {
            let time = (1e15f64 as i64) as u32;
            (time as f64 * 15.625) as i64 as u32
        });
    }

    #[test]
    fn keys_and_precedence() {
        let l = parse_limits(br#"{"ingressRate":8,"ingressBurst":16}"#)
            .unwrap()
            .unwrap();
        assert_eq!((l.ingress_rate, l.ingress_burst, l.egress_rate), (8, 16, 0));
        // containerd 1.6's capitalised runtimeConfig.
        let l = parse_limits(
            br#"{"runtimeConfig":{"bandwidth":{"IngressRate":1000000,"IngressBurst":4294967295,"EgressRate":1000000,"EgressBurst":4294967295}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.egress_burst, 4_294_967_295);
        // Static wins.
        let l = parse_limits(
            br#"{"egressRate":8,"egressBurst":8,"runtimeConfig":{"bandwidth":{"ingressRate":1,"ingressBurst":1}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((l.ingress_rate, l.egress_rate), (0, 8));
        assert_eq!(parse_limits(br#"{"name":"x"}"#).unwrap(), None);
    }

    #[test]
    fn validation_texts() {
        let e = |s: &[u8]| parse_limits(s).unwrap_err().to_string();
        assert_eq!(e(br#"{"ingressRate":8}"#), "if rate is set, burst must also be set");
        assert_eq!(e(br#"{"egressBurst":8}"#), "if burst is set, rate must also be set");
        assert_eq!(
            e(br#"{"ingressRate":8,"ingressBurst":34359738360}"#),
            "burst cannot be more than 4GB"
        );
        assert!(parse_limits(br#"{"ingressRate":8,"ingressBurst":34359738352}"#).is_ok());
    }

    #[test]
    fn names_and_aliases() {
        let n = ifb_name("net", "cid");
        assert_eq!(n.len(), 15);
        assert_eq!(n, format!("bwp{}", &crate::pkg::sha512::hex(b"netcid")[..12]));
        assert_eq!(parse_alias("cni-bandwidth n c eth0"), Some(("n", "c", "eth0")));
        assert_eq!(parse_alias("other n c eth0"), None);
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(ConfKeys::shape()).unwrap();
        let l = parse_limits(
            br#"{"cniVersion":"1.0.0","name":"n","RuntimeConfig":{"Bandwidth":{"IngressRate":8000,"INGRESSBURST":16000}}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((l.ingress_rate, l.ingress_burst), (8000, 16000));
        // Two spellings: the last one wins; a key given as null still counts as given.
        let l = parse_limits(br#"{"ingressRate":1000,"IngressRate":2000,"ingressBurst":4000}"#)
            .unwrap()
            .unwrap();
        assert_eq!(l.ingress_rate, 2000);
        assert!(parse_limits(br#"{"egressRate":null}"#).unwrap().is_some());
    }
}
