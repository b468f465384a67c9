//! static IPAM (plugins/ipam/static): the addresses, routes and DNS the config names.
//!
//! Sources, in the reference's precedence: `ipam.addresses`; CNI_ARGS `IP=` appended and
//! `GATEWAY=` assigned (to the CNI_ARGS addresses only, since the config's are not parsed yet
//! at that point in the reference); `args.cni.ips` replaces everything; `runtimeConfig.ips`
//! replaces again. Nothing is stored, so DEL is a no-op.

use super::parse_ip;
use crate::cni::args::CniArgs;
use crate::cni::config;
use crate::cni::error::CniError;
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Dns, IpConfig, Route};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::cni::version;
use crate::pkg::caps::{self, Capability};
use crate::pkg::ip::canon;
use anyhow::Result;
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::net::IpAddr;

pub static PLUGIN: Plugin = entry::<Static>();

#[derive(Deserialize, GoKeys)]
struct NetIn {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    ipam: Option<IpamIn>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<IpsIn>,
    #[serde(default)]
    args: Option<ArgsIn>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
}

#[derive(Deserialize, GoKeys)]
struct IpamIn {
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    addresses: Option<Vec<AddressIn>>,
    #[serde(default)]
    dns: Option<Dns>,
}

#[derive(Deserialize, GoKeys)]
struct AddressIn {
    #[serde(default)]
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize, Default, GoKeys)]
struct IpsIn {
    #[serde(default)]
    ips: Option<Vec<String>>,
}

#[derive(Deserialize, GoKeys)]
struct ArgsIn {
    #[serde(default)]
    cni: Option<IpsIn>,
}

/// One address: the text it came from, its gateway, and (once parsed) the address itself.
struct Address {
    text: String,
    source: Source,
    gateway: Option<IpAddr>,
    parsed: Option<IpNet>,
}

pub struct StaticConf {
    pub cni_version: String,
    pub addresses: Vec<(IpNet, Option<IpAddr>)>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    prev_result: Option<Value>,
}

/// Where an address came from: the reference (v1.1.1) words its CIDR error per source.
#[derive(Clone, Copy)]
enum Source {
    Config,
    CniArgs,
    Ips,
}

fn parse_cidr(s: &str, src: Source) -> Result<IpNet, CniError> {
    s.parse::<IpNet>()
        .map(|n| IpNet::new(canon(n.addr()), n.prefix_len()).unwrap_or(n))
        .map_err(|_| {
            CniError::internal(match src {
                Source::Config => format!("the 'address' field is expected to be in CIDR notation, got: '{s}'"),
                Source::CniArgs => format!("the 'ip' field is expected to be in CIDR notation, got: '{s}'"),
                Source::Ips => format!("an entry in the 'ips' field is NOT in CIDR notation, got: '{s}'"),
            })
        })
}

fn subnet_contains(net: &IpNet, ip: IpAddr) -> bool {
    let ip = canon(ip);
    net.trunc().contains(&ip)
}

/// LoadIPAMConfig of the static plugin.
pub fn load_conf(stdin: &[u8], cni_args: &str) -> Result<StaticConf, CniError> {
    let n: NetIn = config::parse(stdin)?;
    let Some(ipam) = n.ipam else {
        return Err(CniError::internal("IPAM config missing 'ipam' key"));
    };
    let mut addrs = Vec::new();
    for a in ipam.addresses.unwrap_or_default() {
        let gateway = a.gateway.as_deref().map(parse_ip).transpose()?.flatten();
        addrs.push(Address {
            text: a.address,
            source: Source::Config,
            gateway,
            parsed: None,
        });
    }
    if !cni_args.is_empty() {
        let env = CniArgs::parse(cni_args).map_err(|e| CniError::internal(e.msg))?;
        env.check_known(&["IP", "GATEWAY"])
            .map_err(|e| CniError::internal(e.msg))?;
        if let Some(ips) = env.get("IP").filter(|v| !v.is_empty()) {
            for item in ips.split(',') {
                let text = item.trim();
                let net = parse_cidr(text, Source::CniArgs)?;
                addrs.push(Address {
                    text: text.to_string(),
                    source: Source::CniArgs,
                    gateway: None,
                    parsed: Some(net),
                });
            }
        }
        if let Some(gws) = env.get("GATEWAY").filter(|v| !v.is_empty()) {
            for item in gws.split(',') {
                let gw: IpAddr = item
                    .trim()
                    .parse()
                    .map_err(|_| CniError::internal(format!("invalid gateway address: {item}")))?;
                for a in addrs.iter_mut() {
                    if a.parsed.is_some_and(|net| subnet_contains(&net, gw)) {
                        a.gateway = Some(canon(gw));
                    }
                }
            }
        }
    }
    let replace = |ips: &[String]| -> Vec<Address> {
        ips.iter()
            .map(|s| Address {
                text: s.clone(),
                source: Source::Ips,
                gateway: None,
                parsed: None,
            })
            .collect()
    };
    if let Some(ips) = n.args.and_then(|a| a.cni).and_then(|c| c.ips).filter(|v| !v.is_empty()) {
        addrs = replace(&ips);
    }
    if let Some(ips) = n.runtime_config.and_then(|r| r.ips).filter(|v| !v.is_empty()) {
        addrs = replace(&ips);
    }
    let mut out = Vec::with_capacity(addrs.len());
    let (mut v4, mut v6) = (0, 0);
    for a in addrs {
        let net = parse_cidr(&a.text, a.source)?;
        if net.addr().is_ipv4() {
            v4 += 1;
        } else {
            v6 += 1;
        }
        out.push((net, a.gateway));
    }
    if (v4 > 1 || v6 > 1) && !version::Version::at_least(&n.cni_version, "0.3.0").unwrap_or(false) {
        return Err(CniError::internal(format!(
            "CNI version {} does not support more than 1 address per family",
            n.cni_version
        )));
    }
    Ok(StaticConf {
        cni_version: n.cni_version,
        addresses: out,
        routes: ipam.routes.unwrap_or_default(),
        dns: ipam.dns.unwrap_or_default(),
        prev_result: n.prev_result,
    })
}

// Why two copies: every plugin declares its name, kind, summary and capabilities in these
// lines of `CniPlugin`, where a reader of the plugin looks; they are alike by the trait's design.
struct Static;

impl CniPlugin for Static {
    const NAME: &'static str = "static";
    const KIND: Kind = Kind::Ipam;
    const SUMMARY: &'static str = "fixed IP addresses, routes and DNS from the config";
    const CAPS: &'static [Capability] = caps::NONE;
    const HAS_STATUS: bool = false;
    const HAS_GC: bool = false;
    type Conf = StaticConf;
    type Lenient = ();

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        Ok(load_conf(&args.stdin, &args.args)?)
    }
    fn parse(_: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        // DEL reads nothing from the config.
        Ok(())
    }

    fn add(conf: StaticConf, _: &CmdArgs) -> Result<CniResult> {
        let mut result = CniResult::new(&conf.cni_version);
        result.ips = conf
            .addresses
            .iter()
            .map(|(address, gateway)| IpConfig {
                interface: None,
                address: *address,
                gateway: *gateway,
            })
            .collect();
        result.routes = conf.routes;
        result.dns = conf.dns;
        Ok(result)
    }

    /// Nothing was allocated, so there is nothing to release.
    fn del(_: (), _: &CmdArgs) -> Result<()> {
        Ok(())
    }

    /// Every configured address found in prevResult must carry the configured gateway.
    /// (Like the reference, an address missing from prevResult is not reported.)
    fn check(conf: StaticConf, args: &CmdArgs) -> Result<()> {
        let Some(prev) = conf.prev_result.as_ref().filter(|v| !v.is_null()) else {
            return Err(CniError::internal("Required prevResult missing").into());
        };
        let version = if conf.cni_version.is_empty() {
            "0.1.0"
        } else {
            &conf.cni_version
        };
        let prev = CniResult::parse(prev, version)?;
        for (addr, gw) in &conf.addresses {
            for ip in &prev.ips {
                if addr.addr() == canon(ip.address.addr()) {
                    if gw.is_none() || *gw == ip.gateway {
                        break;
                    }
                    return Err(CniError::internal(format!(
                        "static: Failed to match addr {} on interface {}",
                        ip.address.addr(),
                        args.ifname
                    ))
                    .into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(NetIn::shape()).unwrap();
        let c = load_conf(
            br#"{"cniVersion":"1.0.0","name":"n","IPAM":{"Type":"static","Addresses":[{"Address":"10.0.0.5/24","Gateway":"10.0.0.1"}],
                 "Routes":[{"Dst":"0.0.0.0/0"}],"DNS":{"Nameservers":["10.0.0.53"]}}}"#,
            "",
        )
        .unwrap();
        assert_eq!(c.addresses.len(), 1);
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.dns.nameservers, vec!["10.0.0.53"]);
    }
}
