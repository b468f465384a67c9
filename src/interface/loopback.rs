//! loopback: bring `lo` up in the container (CNI_IFNAME is ignored; it is always `lo`).
//!
//! ADD sets `lo` up and reports its first IPv4 and IPv6 address, or passes a
//! prevResult through. DEL sets it down and succeeds when the netns is gone. CHECK
//! verifies it is up.

use crate::cni::config::{self, NetConf};
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Interface, IpConfig};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::IpFamily;
use crate::linux::Netlink;
use crate::pkg::caps::{self, Capability};
use crate::pkg::netns::{open_netns, open_netns_for_del};
use anyhow::{bail, Context};

pub static PLUGIN: Plugin = entry::<Loopback>();

const LO: &str = "lo";

/// The config without the keys loopback never reads: like the reference (libcni's NetConf
/// has neither), a `runtimeConfig` or `args` of any type (`[]`, `"x"`, 5) is ignored rather
/// than refused, since a runtime may inject either into every plugin of a list.
fn parse_conf(stdin: &[u8]) -> Result<NetConf, crate::cni::error::CniError> {
    let mut v: serde_json::Value = config::parse(stdin)?;
    if let Some(o) = v.as_object_mut() {
        if o.remove("runtimeConfig").is_some() | o.remove("args").is_some() {
            return config::parse(&serde_json::to_vec(&v).unwrap_or_default());
        }
    }
    config::parse(stdin)
}

struct Loopback;

impl CniPlugin for Loopback {
    const NAME: &'static str = "loopback";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "bring up the container's loopback interface";
    const CAPS: &'static [Capability] = caps::IN_POD;
    const HAS_STATUS: bool = false;
    const HAS_GC: bool = false;
    type Conf = NetConf;
    type Lenient = ();

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        Ok(parse_conf(&args.stdin)?)
    }
    fn parse(_: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        // DEL reads nothing from the config.
        Ok(())
    }

    fn add(conf: NetConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::in_netns(&ns)?;
        let lo = nl.link_required(LO)?;
        nl.set_up(lo.index)?;
        let mut first = Vec::new();
        for family in [IpFamily::V4, IpFamily::V6] {
            let addrs = nl.addrs(Some(lo.index), family)?;
            if let Some(bad) = addrs.iter().find(|a| !a.ip.addr().is_loopback()) {
                bail!(
                    "loopback interface found with non-loopback address {:?}",
                    bad.ip.addr().to_string()
                );
            }
            first.extend(addrs.first().map(|a| a.ip));
        }
        if let Some(prev) = conf.prev_result()? {
            return Ok(prev);
        }
        let mut r = CniResult::new(conf.version());
        r.interfaces.push(Interface {
            name: LO.into(),
            mac: "00:00:00:00:00:00".into(),
            sandbox: args.netns.clone(),
            ..Default::default()
        });
        r.ips = first
            .into_iter()
            .map(|address| IpConfig {
                interface: Some(0),
                address,
                gateway: None,
            })
            .collect();
        Ok(r)
    }

    fn del(_: (), args: &CmdArgs) -> anyhow::Result<()> {
        let Some(ns) = open_netns_for_del(&args.netns)? else {
            return Ok(());
        };
        let mut nl = Netlink::in_netns(&ns)?;
        if let Some(lo) = nl.link_by_name(LO)? {
            nl.set_down(lo.index)?;
        }
        Ok(())
    }

    fn check(_: NetConf, args: &CmdArgs) -> anyhow::Result<()> {
        let ns = open_netns(&args.netns)?;
        let mut nl = Netlink::in_netns(&ns)?;
        let lo = nl.link_required(LO).context("loopback interface not found")?;
        if !lo.up {
            bail!("loopback interface is down");
        }
        Ok(())
    }
}
