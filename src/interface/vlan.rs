//! vlan: an 802.1Q child of a node interface, made straight in the container netns
//! (the reference's `plugins/main/vlan`). IPAM is required; the config's `dns` always replaces the IPAM's.

use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::error::CniError;
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::{LinkKind, LinkType};
use crate::pkg::caps::{self, Capability};
use crate::pkg::childlink::{add_child, check_child, configure_child, del_child, ChildSpec, ParentKeys};
use crate::pkg::ipam::{self, ipam_add};
use anyhow::bail;
use serde::Deserialize;

pub static PLUGIN: Plugin = entry::<Vlan>();

#[derive(Debug, Deserialize, GoKeys)]
struct VlanConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(flatten)]
    parent: ParentKeys,
    #[serde(rename = "vlanId", default)]
    vlan_id: i64,
}

impl VlanConf {
    /// Parse and check what needs no kernel: master set, VLAN id in range. (The MTU is
    /// checked against the master in ADD; DEL does not need the master at all.)
    fn load(stdin: &[u8]) -> anyhow::Result<VlanConf> {
        let n: VlanConf = config::parse(stdin)?;
        if n.parent.master.is_empty() {
            bail!(CniError::invalid_config(
                "\"master\" field is required. It specifies the host interface name to create the VLAN for",
            ));
        }
        if !(0..=4094).contains(&n.vlan_id) {
            bail!(CniError::invalid_config(format!(
                "invalid VLAN ID {} (must be between 0 and 4095 inclusive)",
                n.vlan_id
            )));
        }
        Ok(n)
    }

    fn ipam(&self) -> Result<&str, CniError> {
        ipam::required_ipam(&self.net, "vlan")
    }
}

struct Vlan;

impl CniPlugin for Vlan {
    const NAME: &'static str = "vlan";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "an 802.1Q vlan child of a node interface in the container";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = VlanConf;
    type Lenient = VlanConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        VlanConf::load(&args.stdin)
    }
    /// For DEL: no master and no VLAN id are needed to remove the child link.
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }

    fn add(n: VlanConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let ipam_type = n.ipam()?;
        let mut c = add_child(
            args,
            ChildSpec {
                parent: &n.parent,
                kind: LinkKind::Vlan { id: n.vlan_id as u16 },
                mac: None,
            },
        )?;

        let mut result = ipam_add(ipam_type, args, &mut c.undo)?;
        configure_child(&mut c.cont, &c.cont_ns, args, &c.link, &mut result)?;
        result.dns = n.net.dns();
        c.undo.commit();
        Ok(result)
    }

    /// Unlike the reference, DEL does not look at the master: it succeeds when the master is
    /// already gone (plugins#953, #830), which also took the vlan link with it.
    fn del(n: VlanConf, args: &CmdArgs) -> anyhow::Result<()> {
        del_child(&n.net, args)
    }

    fn check(n: VlanConf, args: &CmdArgs) -> anyhow::Result<()> {
        check_child(&n.net, args, &n.parent, |l| {
            if l.kind != Some(LinkType::Vlan) {
                bail!("Error: Container interface {} not of type vlan", l.name);
            }
            if l.vlan_id != Some(n.vlan_id as u16) {
                bail!(
                    "Error: Container interface {} has VLAN ID {}, configured {}",
                    l.name,
                    l.vlan_id.map(|v| v.to_string()).unwrap_or_default(),
                    n.vlan_id
                );
            }
            if n.parent.mtu != 0 && i64::from(l.mtu) != n.parent.mtu {
                bail!(
                    "Error: Tuning configured MTU of {} is {}, current value is {}",
                    l.name,
                    n.parent.mtu,
                    l.mtu
                );
            }
            Ok(())
        })
    }

    /// STATUS is always the IPAM's, as in the reference.
    fn status(args: &CmdArgs) -> anyhow::Result<()> {
        let n: VlanConf = config::parse(&args.stdin)?;
        Ok(delegate::status(n.ipam()?, &args.stdin, args)?)
    }

    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        let n: VlanConf = config::parse(&args.stdin)?;
        Ok(delegate::gc(n.ipam()?, &args.stdin, args)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> anyhow::Result<VlanConf> {
        VlanConf::load(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"vlan"{extra}}}"#).as_bytes())
    }

    #[test]
    fn validation() {
        let e = load("").unwrap_err();
        assert!(e.to_string().starts_with("\"master\" field is required."));
        assert_eq!(e.downcast_ref::<CniError>().unwrap().code, 7);
        for id in [-1, 4095] {
            let e = load(&format!(r#","master":"eth0","vlanId":{id}"#)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid VLAN ID {id} (must be between 0 and 4095 inclusive)")
            );
        }
        let n = load(r#","master":"eth0","vlanId":4094,"mtu":1400,"linkInContainer":true"#).unwrap();
        assert_eq!(
            (n.vlan_id, n.parent.mtu, n.parent.link_in_container),
            (4094, 1400, true)
        );
        assert!(n.ipam().is_err());
        assert!(load(r#","master":"eth0","vlanId":"x""#).is_err());
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(VlanConf::shape()).unwrap();
        let c: VlanConf =
            config::parse(br#"{"cniVersion":"1.0.0","name":"n","Master":"eth1","VlanID":7,"mtu":1400}"#).unwrap();
        assert_eq!((c.parent.master.as_str(), c.vlan_id, c.parent.mtu), ("eth1", 7, 1400));
    }
}
