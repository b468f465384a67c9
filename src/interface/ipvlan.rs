//! ipvlan: an IP-addressed child of a node interface (it shares the master's MAC), made
//! straight in the container netns (reference §2.5). In a chain it takes prevResult's single
//! interface as master and may reuse prevResult's IPs instead of running IPAM.

use super::macvlan::{check_child, configure_child, create_child, del_child, master_and_mtu};
use super::{ipam_add, open_netns};
use crate::cni::config::{self, NetConf};
use crate::cni::error::CniError;
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::cni::version;
use crate::linux::netlink::{IpvlanMode, LinkKind, LinkSpec};
use crate::linux::Netlink;
use crate::undo::Undo;
use anyhow::{bail, Context};
use serde::Deserialize;

pub static PLUGIN: Plugin = Plugin {
    name: "ipvlan",
    kind: Kind::Interface,
    summary: "an ipvlan child of a node interface in the container",
    versions: version::ALL,
    add,
    del,
    check: Some(check),
    status: Some(status),
    gc: Some(gc),
};

#[derive(Debug, Deserialize)]
struct IpvlanConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    master: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: i64,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
    /// prevResult, when chained.
    #[serde(skip)]
    prev: Option<CniResult>,
}

impl IpvlanConf {
    /// Parse; in a chain without `master`, the master is prevResult's single named interface.
    fn load(stdin: &[u8]) -> anyhow::Result<IpvlanConf> {
        let mut n: IpvlanConf = config::parse(stdin)?;
        n.prev = n.net.prev_result()?;
        if n.master.is_empty() {
            if let Some(prev) = &n.prev {
                match prev.interfaces.as_slice() {
                    [one] if !one.name.is_empty() => n.master = one.name.clone(),
                    _ => bail!("chained master failure. PrevResult lacks a single named interface"),
                }
            }
        }
        Ok(n)
    }
}

fn mode_from_str(s: &str) -> Result<IpvlanMode, CniError> {
    Ok(match s {
        "" | "l2" => IpvlanMode::L2,
        "l3" => IpvlanMode::L3,
        "l3s" => IpvlanMode::L3s,
        _ => return Err(CniError::invalid_config(format!("unknown ipvlan mode: {s:?}"))),
    })
}

fn mode_name(m: Option<IpvlanMode>) -> String {
    match m {
        Some(IpvlanMode::L2) => "l2".into(),
        Some(IpvlanMode::L3) => "l3".into(),
        Some(IpvlanMode::L3s) => "l3s".into(),
        None => "unknown".into(),
    }
}

fn add(args: &CmdArgs) -> anyhow::Result<CniResult> {
    let n = IpvlanConf::load(&args.stdin)?;
    let mode = mode_from_str(&n.mode)?;
    // IPAM may be left out only in a chain whose prevResult has IPs to reuse.
    let reuse = match (n.net.ipam_type(), &n.prev) {
        (Some(_), _) => None,
        (None, Some(prev)) if !prev.ips.is_empty() => Some(prev.clone()),
        (None, Some(_)) => {
            return Err(CniError::invalid_config("ipam must be specified: prevResult has no IPs to reuse").into())
        }
        (None, None) => return Err(CniError::invalid_config("ipam must be specified").into()),
    };
    let cont_ns = open_netns(&args.netns)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&cont_ns)?;
    let parent_nl = if n.link_in_container { &mut cont } else { &mut host };
    let (master, mtu) = master_and_mtu(parent_nl, &n.master, n.mtu)?;

    let mut spec = LinkSpec::new("", LinkKind::Ipvlan { mode }).parent(master.index);
    spec.mtu = mtu;
    let mut undo = Undo::new();
    let link = create_child(
        &mut host,
        &mut cont,
        &cont_ns,
        spec,
        n.link_in_container,
        &args.ifname,
        &mut undo,
    )
    .context("failed to create ipvlan")?;

    let mut result = match reuse {
        Some(prev) => prev,
        None => ipam_add(n.net.ipam_type().expect("checked"), args, &mut undo)?,
    };
    result.cni_version = n.net.version().to_string();
    configure_child(&mut cont, &cont_ns, args, &link, &mut result)?;
    result.dns = n.net.dns.clone().unwrap_or_default();
    undo.commit();
    Ok(result)
}

/// DEL needs no master (the reference looks up the default-route interface here and fails
/// without one): IPAM DEL when set, then the link.
fn del(args: &CmdArgs) -> anyhow::Result<()> {
    let n: IpvlanConf = config::parse(&args.stdin)?;
    del_child(&n.net, args)
}

fn check(args: &CmdArgs) -> anyhow::Result<()> {
    let n = IpvlanConf::load(&args.stdin)?;
    let want = mode_from_str(&n.mode)?;
    check_child(&n.net, args, &n.master, n.link_in_container, |l| {
        if l.kind.as_deref() != Some("ipvlan") {
            bail!("Error: Container interface {} not of type ipvlan", l.name);
        }
        if l.ipvlan_mode != Some(want) {
            bail!(
                "Container IPVlan mode {} does not match expected value: {}",
                mode_name(l.ipvlan_mode),
                mode_name(Some(want))
            );
        }
        Ok(())
    })
}

fn status(args: &CmdArgs) -> anyhow::Result<()> {
    let n: IpvlanConf = config::parse(&args.stdin)?;
    super::ipam_status(&n.net, args)
}

fn gc(args: &CmdArgs) -> anyhow::Result<()> {
    let n: IpvlanConf = config::parse(&args.stdin)?;
    super::ipam_gc(&n.net, args)
}

/// Fuzzing entry (fuzz/): this plugin's config parser alone, as ADD runs it, no kernel.
#[doc(hidden)]
pub fn fuzz_parse(args: &CmdArgs) -> anyhow::Result<()> {
    IpvlanConf::load(&args.stdin).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(mode_from_str("").unwrap(), IpvlanMode::L2);
        assert_eq!(mode_from_str("l3").unwrap(), IpvlanMode::L3);
        assert_eq!(mode_from_str("l3s").unwrap(), IpvlanMode::L3s);
        let e = mode_from_str("l4").unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (7, "unknown ipvlan mode: \"l4\""));
    }

    #[test]
    fn chained_master() {
        let prev = r#""prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"net1"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}"#;
        let n = IpvlanConf::load(format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"ipvlan",{prev}}}"#).as_bytes())
            .unwrap();
        assert_eq!(n.master, "net1");
        assert_eq!(n.prev.unwrap().ips.len(), 1);
        let two = r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"},{"name":"b"}]}}"#;
        let e = IpvlanConf::load(two.as_bytes()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "chained master failure. PrevResult lacks a single named interface"
        );
        // An explicit master wins over prevResult.
        let m = r#"{"cniVersion":"1.0.0","name":"n","type":"ipvlan","master":"x","prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"a"},{"name":"b"}]}}"#;
        assert_eq!(IpvlanConf::load(m.as_bytes()).unwrap().master, "x");
    }
}
