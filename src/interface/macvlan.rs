//! macvlan: a MAC-addressed child of a node interface, made straight in the container netns
//! (reference §2.4). Without an IPAM type the attachment is L2 only (the link is just set up).
//!
//! Also home of what macvlan, ipvlan and vlan share: the default-route master, the master's
//! MTU check, creating a child under a temporary name in the container and renaming it, and
//! the container-interface part of CHECK.

use super::ipconfig::{self, Dad};
use super::{del_container_link, fmt_mac, ipam_add, join_errors, open_netns, parse_mac, veth};
use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::result::{CniResult, Interface};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::cni::version;
use crate::linux::netlink::route::TABLE_MAIN;
use crate::linux::netlink::{Family, Link, LinkKind, LinkSpec, MacvlanMode};
use crate::linux::{NetNs, Netlink};
use crate::undo::Undo;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

pub static PLUGIN: Plugin = Plugin {
    name: "macvlan",
    kind: Kind::Interface,
    summary: "a macvlan child of a node interface in the container",
    versions: version::ALL,
    add,
    del,
    check: Some(check),
    status: Some(status),
    gc: Some(gc),
};

#[derive(Debug, Deserialize)]
struct MacvlanConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    master: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    mac: String,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
    #[serde(default)]
    bcqueuelen: u32,
}

impl MacvlanConf {
    /// Parse, and resolve the MAC: `mac` < CNI_ARGS `MAC` < `runtimeConfig.mac`.
    fn load(args: &CmdArgs) -> anyhow::Result<MacvlanConf> {
        let mut n: MacvlanConf = config::parse(&args.stdin)?;
        n.mac = super::container_mac(args, &n.net, Some(n.mac.clone()), false)?.unwrap_or_default();
        Ok(n)
    }
}

fn mode_from_str(s: &str) -> anyhow::Result<MacvlanMode> {
    Ok(match s {
        "" | "bridge" => MacvlanMode::Bridge,
        "private" => MacvlanMode::Private,
        "vepa" => MacvlanMode::Vepa,
        "passthru" => MacvlanMode::Passthru,
        _ => return Err(crate::cni::error::CniError::invalid_config(format!("unknown macvlan mode: {s:?}")).into()),
    })
}

fn mode_name(m: Option<MacvlanMode>) -> String {
    match m {
        Some(MacvlanMode::Bridge) => "bridge".into(),
        Some(MacvlanMode::Private) => "private".into(),
        Some(MacvlanMode::Vepa) => "vepa".into(),
        Some(MacvlanMode::Passthru) => "passthru".into(),
        other => format!("{other:?}"),
    }
}

fn add(args: &CmdArgs) -> anyhow::Result<CniResult> {
    let n = MacvlanConf::load(args)?;
    let mode = mode_from_str(&n.mode)?;
    let mac = match n.mac.as_str() {
        "" => None,
        m => Some(parse_mac(m).map_err(|e| anyhow!("invalid args {m} for MAC addr: {}", e.msg))?),
    };
    let cont_ns = open_netns(&args.netns)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&cont_ns)?;
    let parent_nl = if n.link_in_container { &mut cont } else { &mut host };
    let (master, mtu) = master_and_mtu(parent_nl, &n.master, n.mtu)?;

    let mut spec = LinkSpec::new(
        "",
        LinkKind::Macvlan {
            mode,
            bc_queue_len: (n.bcqueuelen > 0).then_some(n.bcqueuelen),
        },
    )
    .parent(master.index);
    spec.mtu = mtu;
    spec.mac = mac;
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
    .context("failed to create macvlan")?;

    let mut result = CniResult::new(n.net.version());
    if let Some(t) = n.net.ipam_type() {
        let ipam = ipam_add(t, args, &mut undo)?;
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        configure_child(&mut cont, &cont_ns, args, &link, &mut result)?;
    } else {
        cont.set_up(link.index)
            .with_context(|| format!("failed to set {:?} UP", args.ifname))?;
        let now = cont.link_by_index(link.index)?.unwrap_or(link);
        result.interfaces = vec![container_iface(&now, args)];
    }
    // The reference replaces the IPAM's DNS with the config's, even an empty one.
    result.dns = n.net.dns.clone().unwrap_or_default();
    undo.commit();
    Ok(result)
}

/// DEL needs no master (it may be gone, §5 item 12): IPAM first, then the link; an empty or
/// vanished netns and a missing link are fine.
fn del(args: &CmdArgs) -> anyhow::Result<()> {
    let n: MacvlanConf = config::parse(&args.stdin)?;
    del_child(&n.net, args)
}

fn check(args: &CmdArgs) -> anyhow::Result<()> {
    let n = MacvlanConf::load(args)?;
    let want = mode_from_str(&n.mode)?;
    check_child(&n.net, args, &n.master, n.link_in_container, |l| {
        if l.kind.as_deref() != Some("macvlan") {
            bail!("Error: Container interface {} not of type macvlan", l.name);
        }
        if l.macvlan_mode != Some(want) {
            bail!(
                "Container macvlan mode {} does not match expected value: {}",
                mode_name(l.macvlan_mode),
                mode_name(Some(want))
            );
        }
        Ok(())
    })
}

fn status(args: &CmdArgs) -> anyhow::Result<()> {
    let n: MacvlanConf = config::parse(&args.stdin)?;
    super::ipam_status(&n.net, args)
}

fn gc(args: &CmdArgs) -> anyhow::Result<()> {
    let n: MacvlanConf = config::parse(&args.stdin)?;
    super::ipam_gc(&n.net, args)
}

// ---- shared by macvlan, ipvlan and vlan -------------------------------------------------

/// The interface of the first default route (IPv4 before IPv6, as the kernel dumps them) in
/// the main table of the namespace behind `nl`.
pub(super) fn default_route_iface(nl: &mut Netlink) -> anyhow::Result<String> {
    let routes = nl.routes(Family::All, Some(TABLE_MAIN))?;
    for r in routes.iter().filter(|r| r.dst.prefix_len() == 0) {
        let oif = r.oif.or_else(|| r.multipath.first().and_then(|h| h.oif));
        if let Some(l) = oif.map(|i| nl.link_by_index(i)).transpose()?.flatten() {
            return Ok(l.name);
        }
    }
    bail!("no default route interface found")
}

/// Look up the master (the default-route interface when `name` is empty) and check the
/// `mtu` key against its MTU: 0 means inherit, and it may not be negative or larger.
pub(super) fn master_and_mtu(nl: &mut Netlink, name: &str, mtu: i64) -> anyhow::Result<(Link, Option<u32>)> {
    let name = match name {
        "" => default_route_iface(nl)?,
        n => n.to_string(),
    };
    let master = nl
        .link_by_name(&name)?
        .ok_or_else(|| anyhow!("failed to lookup master {name:?}: Link not found"))?;
    if mtu < 0 || mtu > i64::from(master.mtu) {
        return Err(crate::cni::error::CniError::invalid_config(format!(
            "invalid MTU {mtu}, must be [0, master MTU({})]",
            master.mtu
        ))
        .into());
    }
    Ok((master, (mtu > 0).then_some(mtu as u32)))
}

/// Create a child link (`spec` with its parent index set, name ignored) under a temporary
/// `vethXXXXXXXX` name straight in the container netns, then rename it to `ifname` there:
/// creating it under its final name could collide with a node interface of that name. The
/// parent index is resolved where the request is sent: the node, or with `in_container`
/// the container. A delete of the link is registered in `undo`.
pub(super) fn create_child(
    host: &mut Netlink,
    cont: &mut Netlink,
    cont_ns: &NetNs,
    mut spec: LinkSpec,
    in_container: bool,
    ifname: &str,
    undo: &mut Undo,
) -> anyhow::Result<Link> {
    spec.name = veth::random_veth_name()?;
    if in_container {
        cont.create_link(&spec)?;
    } else {
        spec.netns = Some(cont_ns.raw_fd());
        host.create_link(&spec)?;
    }
    let tmp = cont
        .link_by_name(&spec.name)?
        .ok_or_else(|| anyhow!("link {:?} vanished after creation", spec.name))?;
    if let Err(e) = cont.set_name(tmp.index, ifname) {
        let _ = cont.delete_link(tmp.index);
        return Err(anyhow!(e).context(format!("failed to rename {} to {ifname:?}", spec.kind.name())));
    }
    let (path, idx) = (cont_ns.path().to_path_buf(), tmp.index);
    undo.push(format!("delete {ifname} in the container"), move || {
        let ns = NetNs::open(&path)?;
        match Netlink::in_netns(&ns)?.delete_link(idx) {
            Err(e) if !e.is_not_found() => Err(e.into()),
            _ => Ok(()),
        }
    });
    Ok(cont.link_by_index(tmp.index)?.unwrap_or(tmp))
}

/// The result's interface entry for the container link.
pub(super) fn container_iface(l: &Link, args: &CmdArgs) -> Interface {
    Interface {
        name: l.name.clone(),
        mac: fmt_mac(&l.mac),
        sandbox: args.netns.clone(),
        ..Default::default()
    }
}

/// Put the result's IPs (all on interface 0) and routes on the container link, with
/// `arp_notify`/`ndisc_notify` so the L2 segment learns the new MAC at once, and report the
/// link as it is afterwards as the result's only interface. DAD is waited for only when an
/// IPv6 gateway exists, as the reference's ConfigureIface does.
pub(super) fn configure_child(
    cont: &mut Netlink,
    cont_ns: &NetNs,
    args: &CmdArgs,
    link: &Link,
    result: &mut CniResult,
) -> anyhow::Result<()> {
    let ifname = &args.ifname;
    result.interfaces = vec![container_iface(link, args)];
    for ipc in &mut result.ips {
        ipc.interface = Some(0);
    }
    ipconfig::set_sysctls_best_effort(
        cont_ns,
        &[
            (format!("net/ipv4/conf/{ifname}/arp_notify"), "1"),
            (format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1"),
        ],
    )?;
    let v6_gw = result.ips.iter().any(|i| i.gateway.is_some_and(|g| g.is_ipv6()));
    let dad = if v6_gw { Dad::Wait } else { Dad::NoWait };
    let now = ipconfig::configure_iface(cont, cont_ns, ifname, result, dad)?;
    result.interfaces = vec![container_iface(&now, args)];
    Ok(())
}

/// DEL of a child link: IPAM DEL when an IPAM type is set, then the link (both tried).
pub(super) fn del_child(net: &NetConf, args: &CmdArgs) -> anyhow::Result<()> {
    let mut errs = Vec::new();
    if let Some(t) = net.ipam_type() {
        if let Err(e) = delegate::del(t, &args.stdin, args) {
            errs.push(e.into());
        }
    }
    if let Err(e) = del_container_link(&args.netns, &args.ifname) {
        errs.push(e);
    }
    join_errors(errs)
}

/// CHECK of a child link: IPAM CHECK (when set), prevResult's container interface in this
/// netns, the master still there, the link as `validate` wants it, its MAC, IPs and routes.
pub(super) fn check_child(
    net: &NetConf,
    args: &CmdArgs,
    master: &str,
    in_container: bool,
    validate: impl FnOnce(&Link) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let ns = open_netns(&args.netns)?;
    if let Some(t) = net.ipam_type() {
        delegate::check(t, &args.stdin, args)?;
    }
    let (prev, intf) = super::ipconfig::prev_sandbox_interface(net, args, "")?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut host;
    let parent_nl = if in_container {
        &mut cont
    } else {
        host = Netlink::new()?;
        &mut host
    };
    let master = match master {
        "" => default_route_iface(parent_nl)?,
        m => m.to_string(),
    };
    if parent_nl.link_by_name(&master)?.is_none() {
        bail!("failed to lookup master {master:?}: Link not found");
    }
    let l = check_container_link(&mut cont, &intf)?;
    validate(&l)?;
    ipconfig::validate_expected_ips(&mut cont, &args.ifname, &prev.ips)?;
    ipconfig::validate_expected_routes(&mut cont, &prev.routes)
}

/// prevResult's container interface exists in the netns, with the MAC it reported.
pub(super) fn check_container_link(cont: &mut Netlink, intf: &Interface) -> anyhow::Result<Link> {
    if intf.name.is_empty() {
        bail!("Container interface name missing in prevResult: ");
    }
    let l = cont
        .link_by_name(&intf.name)?
        .ok_or_else(|| anyhow!("Container Interface name in prevResult: {} not found", intf.name))?;
    if intf.sandbox.is_empty() {
        bail!("Error: Container interface {} should not be in host namespace", l.name);
    }
    let mac = fmt_mac(&l.mac);
    if !intf.mac.is_empty() && intf.mac != mac {
        bail!(
            "Interface {} Mac {} doesn't match container Mac: {mac}",
            intf.name,
            intf.mac
        );
    }
    Ok(l)
}

/// Fuzzing entry (fuzz/): this plugin's config parser alone, as ADD runs it, no kernel.
#[doc(hidden)]
pub fn fuzz_parse(args: &CmdArgs) -> anyhow::Result<()> {
    MacvlanConf::load(args).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(stdin: &str, cni_args: &str) -> CmdArgs {
        CmdArgs {
            command: crate::cni::skel::Command::Add,
            container_id: "c".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: cni_args.into(),
            path: String::new(),
            netns_override: false,
            stdin: stdin.as_bytes().to_vec(),
        }
    }

    #[test]
    fn modes() {
        assert_eq!(mode_from_str("").unwrap(), MacvlanMode::Bridge);
        assert_eq!(mode_from_str("passthru").unwrap(), MacvlanMode::Passthru);
        assert_eq!(mode_from_str("vepa").unwrap(), MacvlanMode::Vepa);
        assert_eq!(mode_from_str("private").unwrap(), MacvlanMode::Private);
        let e = mode_from_str("source").unwrap_err();
        assert_eq!(e.to_string(), "unknown macvlan mode: \"source\"");
        assert_eq!(mode_name(Some(MacvlanMode::Vepa)), "vepa");
    }

    #[test]
    fn mac_priority() {
        let c = r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","mac":"02:00:00:00:00:01"}"#;
        assert_eq!(MacvlanConf::load(&args(c, "")).unwrap().mac, "02:00:00:00:00:01");
        let n = MacvlanConf::load(&args(c, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(n.mac, "02:00:00:00:00:02");
        let c = r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","runtimeConfig":{"mac":"02:00:00:00:00:03"}}"#;
        let n = MacvlanConf::load(&args(c, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(n.mac, "02:00:00:00:00:03");
        assert!(MacvlanConf::load(&args(c, "FOO=1")).is_err());
        assert!(MacvlanConf::load(&args(c, "IgnoreUnknown=1;FOO=1")).is_ok());
    }
}
