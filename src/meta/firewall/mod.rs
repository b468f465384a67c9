//! firewall: allow forwarded traffic to and from the container, optionally isolate its bridge
//! (the reference's `plugins/meta/firewall`). firewalld where it runs, else three layouts,
//! chosen once per verb ([`firewalld_want`], [`backend::choose`], doc/firewall.md):
//!
//! - `iptables.rs`: the reference's iptables backend's own rules (`CNI-FORWARD`, the admin
//!   chain, the `FORWARD` jump, the isolation stages) in iptables' `filter` tables, written over
//!   netlink as iptables-nft writes them and made if missing as the reference makes them.
//!   `backend: "iptables"`, and the default on a node that uses iptables (upstream's default
//!   when firewalld does not run): so a DROP policy that arrives in iptables' FORWARD later
//!   still sees the pod's accepts.
//! - iptables-legacy: the same rules in x_tables, on a node whose iptables is legacy
//!   (`pkg::legacy_iptables`). Elsewhere, a legacy FORWARD policy DROP would still drop what
//!   the other layouts accept: ADD then fails, naming it, rather than leave the pod cut off.
//! - `nftables.rs`: cni-multi's own tables `inet cni_firewall` (and `bridge cni_firewall` for
//!   `isolated`). `backend: "nftables"`, and the default on a node with nftables only.
//! - firewalld (`pkg::firewalld`): `backend: "firewalld"`, and the default while firewalld
//!   runs (upstream's choice): the pod's addresses go into firewalld's `firewalldZone` over
//!   D-Bus instead of any rule of ours (an ingress policy's isolation still takes the layout
//!   the node would get without firewalld, as upstream writes it with iptables whatever the
//!   backend).
//!
//! ADD writes the chosen layout; CHECK checks it (with the backend unset, the other layout's
//! complete rules are healthy too: a pod added while the node decided otherwise); DEL removes
//! the attachment's rules in every layout, whatever the backend, in one batch. The iptables
//! layout's per-address rules carry no comment: DEL finds their addresses in prevResult or,
//! without one, in our own commented rules and in the reference's masquerade and port-mapping
//! rules of the attachment (their DELs run after this one in a chain). The chains and the
//! per-bridge isolation rules stay, as in the reference.

mod iptables;
mod nftables;

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::cni::config::{self, NetConf};
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::nft::{Batch, NftSocket};
use crate::pkg::backend::{self, Requested};
use crate::pkg::caps::{self, Capability};
use crate::pkg::firewalld;
use crate::pkg::legacy_iptables as legacy;
use crate::pkg::nft_records as records;
use crate::pkg::reference_iptables as reference;
use crate::pkg::sha512::hex_prefix;
use crate::pkg::undo::Undo;

pub static PLUGIN: Plugin = entry::<Firewall>();

struct Firewall;

pub const TABLE: &str = "cni_firewall";
pub const FORWARD: &str = "forward";
pub const CNI_FORWARD: &str = "CNI-FORWARD";
pub const STAGE1: &str = "CNI-ISOLATION-STAGE-1";
pub const STAGE2: &str = "CNI-ISOLATION-STAGE-2";
const FORWARD_COMMENT: &str = "CNI firewall plugin rules";
const ADMIN_COMMENT: &str = "CNI firewall plugin admin overrides";

// ---- config ------------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
struct FirewallConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    backend: String,
    #[serde(rename = "iptablesAdminChainName", default)]
    admin_chain: String,
    #[serde(rename = "ingressPolicy", default)]
    ingress_policy: String,
    /// The firewalld backend's zone (default `trusted`).
    #[serde(rename = "firewalldZone", default)]
    firewalld_zone: String,
}

/// The layout one verb writes (ADD) or checks (CHECK): the `backend` key's on this node, unset
/// following the node ([`backend::choose`]); the same enum masquerade and portmap use.
pub use crate::pkg::backend::Layout as Backend;

impl Backend {
    fn describe(self) -> &'static str {
        match self {
            Backend::Iptables => "iptables-nft's filter tables (the iptables layout)",
            Backend::IptablesLegacy => "x_tables",
            Backend::Nftables => "nftables (inet cni_firewall)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ingress {
    Open,
    SameBridge,
    Isolated,
}

fn parse_conf(stdin: &[u8]) -> Result<(FirewallConf, Ingress, Requested)> {
    let mut c: FirewallConf = config::parse(stdin)?;
    let backend = match c.backend.as_str() {
        // The layout of an ingress policy's isolation rules then.
        "firewalld" => Requested::Auto,
        other => Requested::parse("backend", Some(other))?,
    };
    defaults(&mut c);
    firewalld::check_zone_name(&c.firewalld_zone)?;
    if c.admin_chain.len() > 28 {
        bail!(CniError::invalid_config(
            "iptablesAdminChainName is longer than 28 characters"
        ));
    }
    let ingress = match c.ingress_policy.as_str() {
        "" | "open" => Ingress::Open,
        "same-bridge" => Ingress::SameBridge,
        "isolated" => Ingress::Isolated,
        other => bail!(CniError::invalid_config(format!("unknown ingress policy: {other:?}"))),
    };
    Ok((c, ingress, backend))
}

fn defaults(c: &mut FirewallConf) {
    if c.admin_chain.is_empty() {
        c.admin_chain = "CNI-ADMIN".into();
    }
    if c.firewalld_zone.is_empty() {
        c.firewalld_zone = firewalld::DEFAULT_ZONE.into();
    }
}

fn ingress_comment(i: Ingress) -> &'static str {
    match i {
        Ingress::Isolated => "CNI firewall plugin rules (ingressPolicy: isolated)",
        _ => "CNI firewall plugin rules (ingressPolicy: same-bridge)",
    }
}

/// The bridge of an ingress policy: `prevResult.interfaces[0]`, as in the reference.
fn bridge_name(prev: &CniResult) -> Result<&str> {
    match prev.interfaces.first().map(|i| i.name.as_str()) {
        Some(n) if !n.is_empty() => Ok(n),
        _ => bail!(
            "interface needs to be set for ingress policy, make sure to chain \"firewall\" plugin with \"bridge\""
        ),
    }
}

// ---- the plugin ---------------------------------------------------------------------------

impl CniPlugin for Firewall {
    const NAME: &'static str = "firewall";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str =
        "allow traffic to and from the container; optional bridge isolation (iptables or nftables)";
    const CAPS: &'static [Capability] = caps::NODE_ONLY;
    const VERSIONS: &'static [&'static str] = &["0.4.0", "1.0.0", "1.1.0"];
    const HAS_STATUS: bool = false;
    type Conf = (FirewallConf, Ingress, Requested);
    type Lenient = FirewallConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        parse_conf(&args.stdin)
    }
    /// For DEL: the keys' types only (DEL removes every layout's rules, whatever `backend`
    /// and `ingressPolicy` say), with the admin chain's default.
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        let mut c: FirewallConf = config::parse(&args.stdin)?;
        defaults(&mut c);
        Ok(c)
    }
    fn add((conf, ingress, requested): Self::Conf, args: &CmdArgs) -> Result<CniResult> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        let bridge = if ingress == Ingress::Open {
            None
        } else {
            Some(bridge_name(&prev)?)
        };
        let mut undo = Undo::new();
        if let Some(want) = firewalld_want(&conf.backend) {
            let ips = addresses(Some(&prev));
            if firewalld::add(want, &fw_attachment(&conf, args), &conf.firewalld_zone, &ips)? {
                if ingress == Ingress::Open {
                    return Ok(prev);
                }
                let (net, cid, ifname, zone) = (
                    conf.net.name.clone(),
                    args.container_id.clone(),
                    args.ifname.clone(),
                    conf.firewalld_zone.clone(),
                );
                undo.push("unbind the firewalld sources", move || {
                    let att = firewalld::Attachment {
                        network: &net,
                        container_id: &cid,
                        ifname: &ifname,
                    };
                    firewalld::del(&att, &zone, &ips, true)
                });
            }
        }
        let sock = NftSocket::open()?;
        let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        let key = record_key(&conf.net, args);
        let backend = backend::choose(requested, &sock)?;
        if backend != Backend::IptablesLegacy {
            let ips: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
            if let Some(why) = legacy::forward_drop_refusal(&ips, backend.describe())? {
                bail!("firewall: {why}");
            }
        }
        match backend {
            Backend::Nftables => {
                let rec = nftables::records(&sock);
                let mut plan = None;
                // Shared rules are added only when missing: pods added in parallel would each
                // add them (seen: three FORWARD jumps from twelve parallel ADDs). So the batch
                // is committed only at the generation its listings saw, and rebuilt when
                // another writer came in between.
                let handles = Batch::build_and_commit_echo(&sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
                    plan = Some(nftables::add(&sock, b, &rec, &key, &conf, &prev, ingress, &comment)?);
                    Ok(())
                })
                .context("failed to set up firewall rules")?;
                if let Some(p) = plan {
                    p.record(&rec, &key, &handles);
                }
            }
            Backend::IptablesLegacy => {
                let ips: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
                let isolation = bridge.map(|b| match ingress {
                    Ingress::Isolated => legacy::Isolation::Isolated(b),
                    _ => legacy::Isolation::SameBridge(b),
                });
                if let Err(e) = legacy::apply(&legacy::firewall_add(&ips, &conf.admin_chain, isolation)) {
                    // Nothing half-made: one family's accepts without the other's go again
                    // (the chains stay, as after the reference's DEL).
                    let _ = legacy::apply(&legacy::firewall_del(&ips));
                    return Err(e.context(legacy::firewall_add_failed(&ips)));
                }
            }
            Backend::Iptables => {
                let families = iptables::families(&prev);
                let mut plans = Vec::new();
                let handles = Batch::build_and_commit_echo(&sock, Batch::BUSY_RETRIES, |b| -> Result<()> {
                    plans.clear();
                    for (f, ips) in &families {
                        plans.push(iptables::add(&sock, b, *f, ips, &conf.admin_chain, ingress, bridge)?);
                    }
                    Ok(())
                })
                .context("failed to set up firewall rules")?;
                for p in plans {
                    p.record(&key, &handles);
                }
            }
        }
        undo.commit();
        Ok(prev)
    }
    /// Unbinds the attachment's firewalld sources (its record's and prevResult's; firewalld
    /// gone, the zone gone or a source already unbound is fine), and removes its rules in every
    /// layout, in one batch (see the module doc).
    fn del(conf: FirewallConf, args: &CmdArgs) -> Result<()> {
        let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        // A prevResult that does not parse must not keep the rules we can find by comment.
        let prev = conf.net.prev_result().ok().flatten();
        let unbound = firewalld::del(
            &fw_attachment(&conf, args),
            &conf.firewalld_zone,
            &addresses(prev.as_ref()),
            firewalld_want(&conf.backend).is_some(),
        );
        let sock = NftSocket::open()?;
        let mut b = Batch::new();
        let mut ips: Vec<IpAddr> = prev
            .iter()
            .flat_map(|p| p.ips.iter().map(|i| i.address.addr()))
            .collect();
        let key = record_key(&conf.net, args);
        let rec = nftables::records(&sock);
        ips.extend(nftables::plan_del(
            &sock,
            &mut b,
            &rec,
            &key,
            &conf.admin_chain,
            &comment,
        )?);
        ips.sort();
        ips.dedup();
        if prev.is_none() && has_nat_chains(&sock, &conf.net.name, &args.container_id)? {
            for ip in reference::attachment_ips(&sock, &conf.net.name, &args.container_id)? {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if prev.is_none() {
            // A legacy node's ipMasq and portmap chains name the addresses too.
            for ip in legacy::attachment_ips(&conf.net.name, &args.container_id)? {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        let removed = iptables::plan_del(&sock, &mut b, &key, &ips)?;
        if !b.is_empty() {
            b.commit(&sock).context("failed to remove firewall rules")?;
        }
        rec.forget(&key);
        for r in &removed {
            r.done(&key);
        }
        // x_tables' accepts (read only where this netns has a legacy filter table).
        let legacy =
            legacy::apply(&legacy::firewall_del(&ips)).context("failed to remove firewall rules (iptables-legacy)");
        let mut errs = Failures::new();
        errs.keep(unbound);
        errs.keep(legacy);
        Ok(errs.finish()?)
    }
    /// The layout ADD chose; with the backend unset, the other layout's rules are healthy
    /// too (a pod added while the node decided otherwise, or by the reference before a swap).
    fn check((conf, _, requested): Self::Conf, args: &CmdArgs) -> Result<()> {
        let Some(prev) = conf.net.prev_result()? else {
            bail!("must be called as chained plugin");
        };
        // firewalld's zone, when firewalld takes the attachment (upstream's `querySource`
        // ignores its answer; `getZoneOfSource` must name the zone here).
        if let Some(want) = firewalld_want(&conf.backend) {
            if firewalld::check(want, &conf.firewalld_zone, &addresses(Some(&prev)))? {
                return Ok(());
            }
        }
        let comment = crate::pkg::comment::rule_comment(&conf.net.name, &args.container_id, &args.ifname);
        let sock = NftSocket::open()?;
        let cid = args.container_id.as_str();
        let ipt = || iptables::check_all(&sock, &prev, &conf.admin_chain, cid);
        let nft = || nftables::check(&sock, &conf, &prev, &comment, cid);
        let xt = || {
            let ips: Vec<IpAddr> = prev.ips.iter().map(|i| i.address.addr()).collect();
            legacy::check(&legacy::firewall_check_plan(&ips, &conf.admin_chain))
        };
        let (first, other): (&dyn Fn() -> Result<()>, &dyn Fn() -> Result<()>) =
            match backend::choose(requested, &sock)? {
                Backend::Iptables => (&ipt, &nft),
                Backend::IptablesLegacy => (&xt, &ipt),
                Backend::Nftables => (&nft, &ipt),
            };
        match first() {
            Err(e) if requested == Requested::Auto && !prev.ips.is_empty() => other().map_err(|_| e),
            r => r,
        }
    }
    /// The firewalld sources of attachments not in `cni.dev/valid-attachments` (those
    /// cni-multi bound itself, `pkg::firewalld`); the rules stay, as the reference has no GC
    /// and they only accept.
    fn gc(args: &CmdArgs) -> Result<()> {
        let conf = Self::parse(args)?;
        let Some(valid) = conf.net.gc_valid_attachments() else {
            return Ok(());
        };
        let valid: Vec<(&str, &str)> = valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
            .collect();
        firewalld::gc(&conf.net.name, &valid)
    }
}

/// Whether firewalld may take the attachment: `backend: "firewalld"` (code 11 naming the bus
/// when firewalld is not there), or `backend` unset while firewalld runs (upstream's choice).
fn firewalld_want(backend: &str) -> Option<firewalld::Want> {
    match backend {
        "firewalld" => Some(firewalld::Want::Required),
        "" => Some(firewalld::Want::IfRunning),
        _ => None,
    }
}

fn fw_attachment<'a>(conf: &'a FirewallConf, args: &'a CmdArgs) -> firewalld::Attachment<'a> {
    firewalld::Attachment {
        network: &conf.net.name,
        container_id: &args.container_id,
        ifname: &args.ifname,
    }
}

fn addresses(prev: Option<&CniResult>) -> Vec<IpAddr> {
    prev.iter()
        .flat_map(|p| p.ips.iter().map(|i| i.address.addr()))
        .collect()
}

/// Whether the attachment has an ipMasq or portmap chain in the reference's iptables layout,
/// whose rules name its addresses (a GETCHAIN each: a second DEL without prevResult, as
/// containerd sends, then lists no shared chain).
fn has_nat_chains(sock: &NftSocket, network: &str, cid: &str) -> Result<bool> {
    use crate::linux::nft::Family;
    let chains = [reference::masq_chain(network, cid), reference::dnat_chain(network, cid)];
    for f in [Family::Ip, Family::Ip6] {
        for c in &chains {
            if sock.chain_exists(f, "nat", c)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The attachment's record name in our table's records (`pkg::nft_records`).
fn record_key(net: &NetConf, args: &CmdArgs) -> String {
    records::key(&hex_prefix(&net.name, 16), &args.ifname, &args.container_id)
}

#[cfg(test)]
mod tests {
    use super::parse_conf;

    #[test]
    fn firewalld_zone_of_the_wrong_type_is_a_config_error() {
        let base = r#""cniVersion": "1.0.0", "name": "n", "type": "firewall""#;
        for bad in ["42", "true", "[\"a\"]", "{\"z\": 1}"] {
            let conf = format!("{{{base}, \"firewalldZone\": {bad}}}");
            let e = parse_conf(conf.as_bytes()).expect_err(bad);
            let c = e.downcast_ref::<crate::cni::error::CniError>().expect("a CNI error");
            assert_eq!(c.code, crate::cni::error::code::INVALID_CONFIG, "{bad}: {}", c.msg);
        }
        let ok = format!("{{{base}, \"firewalldZone\": \"trusted\"}}");
        assert!(parse_conf(ok.as_bytes()).is_ok());
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(FirewallConf::shape()).unwrap();
        let (c, ingress, backend) = parse_conf(
            br#"{"cniVersion":"1.0.0","name":"n","type":"firewall","Backend":"nftables",
                 "IPTablesAdminChainName":"MY-ADMIN","IngressPolicy":"same-bridge"}"#,
        )
        .unwrap();
        assert_eq!(c.admin_chain, "MY-ADMIN");
        assert_eq!(ingress, Ingress::SameBridge);
        assert_eq!(backend, Requested::Nftables);
    }
}
