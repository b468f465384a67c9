//! What the "child link" plugins share (macvlan, ipvlan, vlan, and parts of tap, dummy and
//! host-device): the default-route master, the master's MTU check, creating a child under a
//! temporary name in the container and renaming it, configuring it, and its CHECK and DEL.

use crate::cni::config::NetConf;
use crate::cni::delegate;
use crate::cni::error::CniError;
use crate::cni::gokeys::GoKeys;
use crate::cni::result::{CniResult, Interface};
use crate::cni::skel::CmdArgs;
use crate::linux::netlink::route::TABLE_MAIN;
use crate::linux::netlink::{IpFamily, Link, LinkKind, LinkSpec, LinkType};
use crate::linux::{NetNs, Netlink};
use crate::pkg::ipam::ipam_add;
use crate::pkg::ipconfig::{self, Dad};
use crate::pkg::mac::{check_container_mac, fmt_mac};
use crate::pkg::netns::open_netns;
use crate::pkg::undo::Undo;
use crate::pkg::veth;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::os::fd::AsFd;

/// The interface of the first default route (IPv4 before IPv6, as the kernel dumps them) in
/// the main table of the namespace behind `nl`.
pub fn default_route_iface(nl: &mut Netlink) -> anyhow::Result<String> {
    let routes = nl.routes(IpFamily::All, Some(TABLE_MAIN))?;
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
fn master_and_mtu(nl: &mut Netlink, name: &str, mtu: i64) -> anyhow::Result<(Link, Option<u32>)> {
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

/// The config keys of macvlan, ipvlan and vlan that place the child: `master` (the
/// default-route interface when empty), the `mtu` key (0: the master's), and
/// `linkInContainer` (the master is in the container netns).
#[derive(Debug, Default, Deserialize, GoKeys)]
pub struct ParentKeys {
    #[serde(default)]
    pub master: String,
    #[serde(default)]
    pub mtu: i64,
    #[serde(rename = "linkInContainer", default)]
    pub link_in_container: bool,
}

/// A child link's mode as macvlan and ipvlan name it in their `mode` key (iproute2's names).
pub trait ChildMode: std::str::FromStr + Copy {
    /// The kind as the plugin's message names it: "unknown <KIND> mode: …".
    const KIND: &'static str;
    /// What an empty or absent key means.
    const DEFAULT: Self;
    /// Whether the plugin offers `self` (the kernel may know more modes).
    fn offered(self) -> bool {
        true
    }
}

/// The `mode` key, kept as written: DEL never reads it (it must undo an attachment whose
/// mode ADD would now refuse); ADD and CHECK take the mode with [`ModeKey::get`].
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ModeKey<M> {
    text: String,
    #[serde(skip)]
    mode: std::marker::PhantomData<M>,
}

/// A string to Go's decoder (the mode's name).
impl<M> crate::cni::gokeys::GoKeys for ModeKey<M> {
    fn shape() -> crate::cni::gokeys::Shape {
        crate::cni::gokeys::Shape::Scalar
    }
}

impl<M> ModeKey<M> {
    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl<M> Default for ModeKey<M> {
    fn default() -> Self {
        ModeKey {
            text: String::new(),
            mode: std::marker::PhantomData,
        }
    }
}

impl<M: ChildMode> ModeKey<M> {
    /// The mode; one the kernel does not know or the plugin does not offer is code 7.
    pub fn get(&self) -> Result<M, CniError> {
        match self.text.as_str() {
            "" => Ok(M::DEFAULT),
            s => s
                .parse()
                .ok()
                .filter(|m: &M| m.offered())
                .ok_or_else(|| CniError::invalid_config(format!("unknown {} mode: {s:?}", M::KIND))),
        }
    }
}

/// What ADD makes: a child of `parent`, of `kind`, with an optional MAC.
pub struct ChildSpec<'a> {
    pub parent: &'a ParentKeys,
    pub kind: LinkKind<'a>,
    pub mac: Option<[u8; 6]>,
}

/// A child link just made in the container, with the undo list that deletes it (declared
/// first, so that on a drop it runs while the container netns is still open).
pub struct NewChild {
    pub undo: Undo,
    pub cont_ns: NetNs,
    pub cont: Netlink,
    pub link: Link,
}

/// ADD's first half for macvlan, ipvlan and vlan: open CNI_NETNS, look up the master and
/// check the MTU against it, and create the link as CNI_IFNAME in the container.
pub fn add_child(args: &CmdArgs, c: ChildSpec) -> anyhow::Result<NewChild> {
    let cont_ns = open_netns(&args.netns)?;
    let mut host = Netlink::new()?;
    let mut cont = Netlink::in_netns(&cont_ns)?;
    let in_container = c.parent.link_in_container;
    let parent_nl = if in_container { &mut cont } else { &mut host };
    let (master, mtu) = master_and_mtu(parent_nl, &c.parent.master, c.parent.mtu)?;
    let what = c.kind.name();
    let mut spec = LinkSpec::new("", c.kind).parent(master.index);
    spec.mtu = mtu;
    spec.mac = c.mac;
    let mut undo = Undo::new();
    let link = create_child(
        &mut host,
        &mut cont,
        &cont_ns,
        spec,
        in_container,
        &args.ifname,
        &mut undo,
    )
    .with_context(|| format!("failed to create {what}"))?;
    Ok(NewChild {
        undo,
        cont_ns,
        cont,
        link,
    })
}

/// Create a child link (`spec` with its parent index set, name ignored) under a temporary
/// `vethXXXXXXXX` name straight in the container netns, then rename it to `ifname` there:
/// creating it under its final name could collide with a node interface of that name. The
/// parent index is resolved where the request is sent: the node, or with `in_container`
/// the container. A delete of the link is registered in `undo`.
fn create_child<'fd>(
    host: &mut Netlink,
    cont: &mut Netlink,
    cont_ns: &'fd NetNs,
    mut spec: LinkSpec<'fd>,
    in_container: bool,
    ifname: &str,
    undo: &mut Undo,
) -> anyhow::Result<Link> {
    spec.name = veth::random_veth_name()?;
    if in_container {
        cont.create_link(&spec)?;
    } else {
        spec.netns = Some(cont_ns.as_fd());
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
pub fn container_iface(l: &Link, args: &CmdArgs) -> Interface {
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
pub fn configure_child(
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

/// The rest of a child link's ADD: with an IPAM type, its addresses and routes on the link
/// ([`configure_child`]); without, an L2-only attachment (the link is just set up). The
/// result carries the config's DNS, even an empty one, replacing the IPAM's as the reference
/// does.
pub fn ipam_or_l2(
    cont: &mut Netlink,
    cont_ns: &NetNs,
    args: &CmdArgs,
    net: &NetConf,
    link: Link,
    undo: &mut Undo,
) -> anyhow::Result<CniResult> {
    let mut result = CniResult::new(net.version());
    if let Some(t) = net.ipam_type() {
        let ipam = ipam_add(t, args, undo)?;
        result.ips = ipam.ips;
        result.routes = ipam.routes;
        configure_child(cont, cont_ns, args, &link, &mut result)?;
    } else {
        cont.set_up(link.index)
            .with_context(|| format!("failed to set {:?} UP", args.ifname))?;
        let now = cont.link_by_index(link.index)?.unwrap_or(link);
        result.interfaces = vec![container_iface(&now, args)];
    }
    result.dns = net.dns();
    Ok(result)
}

/// DEL of a child link: IPAM DEL when an IPAM type is set, then the link (both tried).
pub fn del_child(net: &NetConf, args: &CmdArgs) -> anyhow::Result<()> {
    crate::pkg::ipam::release_then_del_link(net, args, crate::cni::error::Failures::new())
}

/// CHECK of a child link: IPAM CHECK (when set), prevResult's container interface in this
/// netns, the master still there, the link as `validate` wants it, its MAC, IPs and routes.
pub fn check_child(
    net: &NetConf,
    args: &CmdArgs,
    parent: &ParentKeys,
    validate: impl FnOnce(&Link) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let ns = open_netns(&args.netns)?;
    if let Some(t) = net.ipam_type() {
        delegate::check(t, &args.stdin, args)?;
    }
    let (prev, intf) = ipconfig::prev_sandbox_interface(net, args, "")?;
    let mut cont = Netlink::in_netns(&ns)?;
    let mut host;
    let parent_nl = if parent.link_in_container {
        &mut cont
    } else {
        host = Netlink::new()?;
        &mut host
    };
    let master = match parent.master.as_str() {
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

/// CHECK of a macvlan/ipvlan link's type and mode, with the reference's messages (`label` is
/// how it names the type in the mode message).
pub fn expect_type_and_mode<M: PartialEq + std::fmt::Display>(
    l: &Link,
    ty: LinkType,
    label: &str,
    want: M,
    got: Option<M>,
) -> anyhow::Result<()> {
    if l.kind.as_ref() != Some(&ty) {
        bail!("Error: Container interface {} not of type {ty}", l.name);
    }
    if got.as_ref() != Some(&want) {
        let got = got.map_or("unknown".to_string(), |m| m.to_string());
        bail!("Container {label} mode {got} does not match expected value: {want}");
    }
    Ok(())
}

/// prevResult's container interface exists in the netns, with the MAC it reported.
pub fn check_container_link(cont: &mut Netlink, intf: &Interface) -> anyhow::Result<Link> {
    if intf.name.is_empty() {
        bail!("Container interface name missing in prevResult: ");
    }
    let l = cont
        .link_by_name(&intf.name)?
        .ok_or_else(|| anyhow!("Container Interface name in prevResult: {} not found", intf.name))?;
    if intf.sandbox.is_empty() {
        bail!("Error: Container interface {} should not be in host namespace", l.name);
    }
    check_container_mac("", intf, &l)?;
    Ok(l)
}
