//! dummy: a dummy link named CNI_IFNAME made straight in the container netns, carrying the
//! IPAM's addresses (the reference's `plugins/main/dummy`). IPAM is required; the IPAM's DNS is kept.

use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::{LinkKind, LinkSpec, LinkType};
use crate::linux::{NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::childlink::{check_container_link, configure_child};
use crate::pkg::ipam::ipam_add;
use crate::pkg::ipam::release_then_del_link;
use crate::pkg::netns::open_netns;
use crate::pkg::undo::Undo;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

pub static PLUGIN: Plugin = entry::<Dummy>();

#[derive(Debug, Deserialize, GoKeys)]
struct DummyConf {
    #[serde(flatten)]
    net: NetConf,
}

impl DummyConf {
    fn load(stdin: &[u8]) -> anyhow::Result<(DummyConf, String)> {
        let n: DummyConf = config::parse(stdin)?;
        let t = n
            .net
            .ipam_type()
            .ok_or_else(|| CniError::invalid_config("dummy interface requires an IPAM configuration"))?
            .to_string();
        Ok((n, t))
    }
}

// Why two copies: every plugin declares its name, kind, summary and capabilities in these
// lines of `CniPlugin`, where a reader of the plugin looks; they are alike by the trait's design.
struct Dummy;

impl CniPlugin for Dummy {
    const NAME: &'static str = "dummy";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "a dummy link in the container carrying the IPAM's addresses";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = (DummyConf, String);
    type Lenient = DummyConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        DummyConf::load(&args.stdin)
    }
    /// For DEL: without an IPAM (which ADD requires) there is only the link to remove.
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }

    fn add((n, ipam_type): (DummyConf, String), args: &CmdArgs) -> anyhow::Result<CniResult> {
        let cont_ns = open_netns(&args.netns)?;
        let mut cont = Netlink::in_netns(&cont_ns)?;
        let mut undo = Undo::new();
        // A dummy has no parent, so its name can only clash inside the container: no temp name.
        cont.create_link(&LinkSpec::new(args.ifname.as_str(), LinkKind::Dummy))
            .context("failed to create dummy")?;
        let link = cont
            .link_by_name(&args.ifname)?
            .ok_or_else(|| anyhow!("failed to refetch dummy {:?}", args.ifname))?;
        let (path, idx) = (cont_ns.path().to_path_buf(), link.index);
        undo.push(format!("delete {} in the container", args.ifname), move || {
            Ok(Netlink::in_netns(&NetNs::open(&path)?)?.delete_link(idx)?)
        });

        let mut result = ipam_add(&ipam_type, args, &mut undo)?;
        configure_child(&mut cont, &cont_ns, args, &link, &mut result)?;
        result.cni_version = n.net.version().to_string();
        undo.commit();
        Ok(result)
    }

    /// IPAM DEL (load made sure there is an IPAM type), then the link.
    fn del(n: DummyConf, args: &CmdArgs) -> anyhow::Result<()> {
        release_then_del_link(&n.net, args, Failures::new())
    }

    /// IPAM CHECK, the dummy link with prevResult's MAC, and its IPs (the reference checks no
    /// routes for dummy).
    fn check((n, ipam_type): (DummyConf, String), args: &CmdArgs) -> anyhow::Result<()> {
        let ns = open_netns(&args.netns)?;
        delegate::check(&ipam_type, &args.stdin, args)?;
        let (prev, intf) = crate::pkg::ipconfig::prev_sandbox_interface(&n.net, args, "")?;
        let mut cont = Netlink::in_netns(&ns)?;
        let l = check_container_link(&mut cont, &intf)?;
        if l.kind != Some(LinkType::Dummy) {
            bail!("Error: Container interface {} not of type dummy", l.name);
        }
        crate::pkg::ipconfig::validate_expected_ips(&mut cont, &args.ifname, &prev.ips)
    }

    /// STATUS is always the IPAM's.
    fn status(args: &CmdArgs) -> anyhow::Result<()> {
        let (_, t) = DummyConf::load(&args.stdin)?;
        Ok(delegate::status(&t, &args.stdin, args)?)
    }

    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        let (_, t) = DummyConf::load(&args.stdin)?;
        Ok(delegate::gc(&t, &args.stdin, args)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipam_required() {
        let e = super::DummyConf::load(br#"{"cniVersion":"1.0.0","name":"n","type":"dummy"}"#).unwrap_err();
        assert_eq!(e.to_string(), "dummy interface requires an IPAM configuration");
        let (_, t) =
            super::DummyConf::load(br#"{"cniVersion":"1.0.0","name":"n","type":"dummy","ipam":{"type":"static"}}"#)
                .unwrap();
        assert_eq!(t, "static");
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(DummyConf::shape()).unwrap();
        let c: DummyConf = config::parse(br#"{"CNIVersion":"1.0.0","name":"n","Ipam":{"TYPE":"static"}}"#).unwrap();
        assert_eq!((c.net.version(), c.net.ipam_type()), ("1.0.0", Some("static")));
    }
}
