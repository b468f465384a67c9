//! ipvlan: an IP-addressed child of a node interface (it shares the master's MAC), made
//! straight in the container netns (the reference's `plugins/main/ipvlan`). In a chain it takes prevResult's single
//! interface as master and may reuse prevResult's IPs instead of running IPAM.

use crate::cni::config::{self, NetConf};
use crate::cni::error::CniError;
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::{IpvlanMode, LinkKind, LinkType};
use crate::pkg::caps::{self, Capability};
use crate::pkg::childlink::{
    add_child, check_child, configure_child, del_child, expect_type_and_mode, ChildMode, ChildSpec, ModeKey, ParentKeys,
};
use crate::pkg::ipam::ipam_add;
use anyhow::bail;
use serde::Deserialize;

pub static PLUGIN: Plugin = entry::<Ipvlan>();

#[derive(Debug, Deserialize, GoKeys)]
struct IpvlanConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(flatten)]
    parent: ParentKeys,
    #[serde(default)]
    mode: ModeKey<IpvlanMode>,
    /// prevResult, when chained.
    #[serde(skip)]
    prev: Option<CniResult>,
}

impl IpvlanConf {
    /// Parse; in a chain without `master`, the master is prevResult's single named interface.
    fn load(stdin: &[u8]) -> anyhow::Result<IpvlanConf> {
        let mut n: IpvlanConf = config::parse(stdin)?;
        n.prev = n.net.prev_result()?;
        if n.parent.master.is_empty() {
            if let Some(prev) = &n.prev {
                match prev.interfaces.as_slice() {
                    [one] if !one.name.is_empty() => n.parent.master = one.name.clone(),
                    _ => bail!("chained master failure. PrevResult lacks a single named interface"),
                }
            }
        }
        Ok(n)
    }
}

impl ChildMode for IpvlanMode {
    const KIND: &'static str = "ipvlan";
    const DEFAULT: Self = IpvlanMode::L2;
}

struct Ipvlan;

impl CniPlugin for Ipvlan {
    const NAME: &'static str = "ipvlan";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "an ipvlan child of a node interface in the container";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = IpvlanConf;
    type Lenient = IpvlanConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        IpvlanConf::load(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }

    fn add(n: IpvlanConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let mode = n.mode.get()?;
        // IPAM may be left out only in a chain whose prevResult has IPs to reuse.
        let reuse = match (n.net.ipam_type(), &n.prev) {
            (Some(_), _) => None,
            (None, Some(prev)) if !prev.ips.is_empty() => Some(prev.clone()),
            (None, Some(_)) => bail!(CniError::invalid_config(
                "ipam must be specified: prevResult has no IPs to reuse"
            )),
            (None, None) => bail!(CniError::invalid_config("ipam must be specified")),
        };
        let mut c = add_child(
            args,
            ChildSpec {
                parent: &n.parent,
                kind: LinkKind::Ipvlan { mode },
                mac: None,
            },
        )?;

        let mut result = match reuse {
            Some(prev) => prev,
            None => ipam_add(n.net.ipam_type().expect("checked"), args, &mut c.undo)?,
        };
        result.cni_version = n.net.version().to_string();
        configure_child(&mut c.cont, &c.cont_ns, args, &c.link, &mut result)?;
        result.dns = n.net.dns();
        c.undo.commit();
        Ok(result)
    }

    /// DEL needs no master (the reference looks up the default-route interface here and fails
    /// without one): IPAM DEL when set, then the link.
    fn del(n: IpvlanConf, args: &CmdArgs) -> anyhow::Result<()> {
        del_child(&n.net, args)
    }

    fn check(n: IpvlanConf, args: &CmdArgs) -> anyhow::Result<()> {
        let want = n.mode.get()?;
        check_child(&n.net, args, &n.parent, |l| {
            expect_type_and_mode(l, LinkType::Ipvlan, "IPVlan", want, l.ipvlan_mode)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let mode = |s: &str| serde_json::from_value::<ModeKey<IpvlanMode>>(s.into()).unwrap().get();
        assert_eq!(mode("").unwrap(), IpvlanMode::L2);
        assert_eq!(mode("l3").unwrap(), IpvlanMode::L3);
        assert_eq!(mode("l3s").unwrap(), IpvlanMode::L3s);
        let e = mode("l4").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "unknown ipvlan mode: \"l4\""));
    }

    #[test]
    fn chained_master() {
        let prev = r#""prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"net1"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}"#;
        let n = IpvlanConf::load(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"ipvlan",{prev}}}"#).as_bytes())
            .unwrap();
        assert_eq!(n.parent.master, "net1");
        assert_eq!(n.prev.unwrap().ips.len(), 1);
        let two = r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"},{"name":"b"}]}}"#;
        let e = IpvlanConf::load(two.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "chained master failure. PrevResult lacks a single named interface"
        );
        // An explicit master wins over prevResult.
        let m = r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","master":"x","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"},{"name":"b"}]}}"#;
        assert_eq!(IpvlanConf::load(m.as_bytes()).unwrap().parent.master, "x");
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(IpvlanConf::shape()).unwrap();
        let c: IpvlanConf = config::parse(br#"{"cniVersion":"1.0.0","name":"n","MASTER":"eth1","Mode":"l3"}"#).unwrap();
        assert_eq!((c.parent.master.as_str(), c.mode.as_str()), ("eth1", "l3"));
    }
}
