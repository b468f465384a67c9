//! Links: query, create (veth, bridge, macvlan, ipvlan, vlan, vxlan, dummy, ifb), modify,
//! delete, and wait for carrier.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::wire::{attrs, get_i32, get_mac, get_str, get_u16, get_u32, Payload};
use super::{Mode, Netlink};
use crate::linux::{Error, Result};

pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
pub(crate) const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_SETLINK: u16 = 19;

pub(crate) const IFLA_ADDRESS: u16 = 1;
pub(crate) const IFLA_IFNAME: u16 = 3;
pub(crate) const IFLA_MTU: u16 = 4;
pub(crate) const IFLA_LINK: u16 = 5;
pub(crate) const IFLA_MASTER: u16 = 10;
pub(crate) const IFLA_PROTINFO: u16 = 12;
pub(crate) const IFLA_TXQLEN: u16 = 13;
pub(crate) const IFLA_OPERSTATE: u16 = 16;
pub(crate) const IFLA_LINKINFO: u16 = 18;
pub(crate) const IFLA_IFALIAS: u16 = 20;
pub(crate) const IFLA_AF_SPEC: u16 = 26;
pub(crate) const IFLA_NET_NS_FD: u16 = 28;
pub(crate) const IFLA_EXT_MASK: u16 = 29;
pub(crate) const IFLA_LINK_NETNSID: u16 = 37;

const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_BR_VLAN_FILTERING: u16 = 7;
const IFLA_MACVLAN_MODE: u16 = 1;
const IFLA_MACVLAN_BC_QUEUE_LEN: u16 = 7;
const IFLA_IPVLAN_MODE: u16 = 1;
const IFLA_VLAN_ID: u16 = 1;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VRF_TABLE: u16 = 1;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_LOCAL6: u16 = 17;

const IFF_UP: u32 = 0x1;
const IFF_PROMISC: u32 = 0x100;
const IFF_ALLMULTI: u32 = 0x200;
const IFF_LOWER_UP: u32 = 0x10000;

/// `struct ifinfomsg` (16 bytes).
pub(crate) fn ifinfomsg(family: u8, index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = family;
    h[4..8].copy_from_slice(&(index as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

/// RFC 2863 operational state (IFLA_OPERSTATE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperState {
    /// 0
    Unknown,
    /// 1
    NotPresent,
    /// 2
    Down,
    /// 3
    LowerLayerDown,
    /// 4
    Testing,
    /// 5
    Dormant,
    /// 6
    Up,
    /// Anything newer.
    Other(u8),
}

impl From<u8> for OperState {
    fn from(v: u8) -> Self {
        match v {
            0 => OperState::Unknown,
            1 => OperState::NotPresent,
            2 => OperState::Down,
            3 => OperState::LowerLayerDown,
            4 => OperState::Testing,
            5 => OperState::Dormant,
            6 => OperState::Up,
            n => OperState::Other(n),
        }
    }
}

/// A link's type: what a dump reports in [`Link::kind`] and what [`LinkKind::link_type`]
/// creates. Parsed once from IFLA_INFO_KIND here; callers compare variants, never strings
/// (`Display` gives the kernel's spelling for messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkType {
    Veth,
    Bridge,
    Macvlan,
    Macvtap,
    Ipvlan,
    Ipvtap,
    Vlan,
    Vxlan,
    Dummy,
    Ifb,
    Vrf,
    /// tun and tap devices (the kernel names both "tun").
    Tun,
    /// Any other kind, as the kernel spells it.
    Other(String),
}

impl LinkType {
    const KNOWN: [(LinkType, &'static str); 12] = [
        (LinkType::Veth, "veth"),
        (LinkType::Bridge, "bridge"),
        (LinkType::Macvlan, "macvlan"),
        (LinkType::Macvtap, "macvtap"),
        (LinkType::Ipvlan, "ipvlan"),
        (LinkType::Ipvtap, "ipvtap"),
        (LinkType::Vlan, "vlan"),
        (LinkType::Vxlan, "vxlan"),
        (LinkType::Dummy, "dummy"),
        (LinkType::Ifb, "ifb"),
        (LinkType::Vrf, "vrf"),
        (LinkType::Tun, "tun"),
    ];

    /// The type an IFLA_INFO_KIND string names.
    pub(crate) fn from_kernel(s: &str) -> LinkType {
        Self::KNOWN
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| LinkType::Other(s.to_string()))
    }

    /// The IFLA_INFO_KIND string.
    fn as_str(&self) -> &str {
        match self {
            LinkType::Other(s) => s,
            t => t.known_name().expect("every named variant is in KNOWN"),
        }
    }

    /// The spelling of a named variant (None for [`LinkType::Other`]).
    fn known_name(&self) -> Option<&'static str> {
        Self::KNOWN.iter().find(|(k, _)| k == self).map(|(_, n)| *n)
    }
}

impl std::fmt::Display for LinkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

numbered_enums! {
    /// macvlan/macvtap mode.
    pub enum MacvlanMode: u32 {
        /// No traffic between macvlans of the same parent.
        Private = 1,
        /// Traffic between macvlans goes out through the switch.
        Vepa = 2,
        /// Macvlans of the same parent talk directly.
        Bridge = 4,
        /// One macvlan takes over the parent.
        Passthru = 8,
        /// Receive by source MAC.
        Source = 16,
    }
    /// ipvlan mode.
    pub enum IpvlanMode: u16 {
        /// Layer 2.
        L2 = 0,
        /// Layer 3.
        L3 = 1,
        /// Layer 3 with netfilter on the parent.
        L3s = 2,
    }
}

impl MacvlanMode {
    const NAMES: [(MacvlanMode, &'static str); 5] = [
        (MacvlanMode::Bridge, "bridge"),
        (MacvlanMode::Private, "private"),
        (MacvlanMode::Vepa, "vepa"),
        (MacvlanMode::Passthru, "passthru"),
        (MacvlanMode::Source, "source"),
    ];
}

impl IpvlanMode {
    const NAMES: [(IpvlanMode, &'static str); 3] =
        [(IpvlanMode::L2, "l2"), (IpvlanMode::L3, "l3"), (IpvlanMode::L3s, "l3s")];
}

/// The modes by their names (those of iproute2 and of the CNI plugins' `mode` key): one
/// FromStr and one Display for both enums. FromStr errors with the text it was given.
macro_rules! mode_names {
    ($t:ty) => {
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                Self::NAMES
                    .iter()
                    .find(|(_, n)| *n == s)
                    .map(|(m, _)| *m)
                    .ok_or_else(|| s.to_string())
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let name = Self::NAMES.iter().find(|(m, _)| m == self).map(|(_, n)| *n);
                f.write_str(name.expect("every mode is named"))
            }
        }
    };
}
mode_names!(MacvlanMode);
mode_names!(IpvlanMode);

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// IFLA_INFO_KIND; None for physical devices and loopback.
    pub kind: Option<LinkType>,
    /// Hardware address, when it is a 6-byte MAC.
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Carrier present (IFF_LOWER_UP).
    pub lower_up: bool,
    /// Operational state.
    pub oper_state: OperState,
    /// Master device (bridge) index.
    pub master: Option<u32>,
    /// Parent / peer index (IFLA_LINK); may live in another namespace, see `link_netnsid`.
    pub link: Option<u32>,
    /// Namespace id of `link`'s namespace, when it is another one.
    pub link_netnsid: Option<i32>,
    /// Alias (ifalias).
    pub alias: Option<String>,
    /// IFF_PROMISC.
    pub promisc: bool,
    /// IFF_ALLMULTI.
    pub allmulti: bool,
    /// Transmit queue length.
    pub txqlen: u32,
    /// 802.1Q id of a vlan link.
    pub vlan_id: Option<u16>,
    /// Mode of a macvlan/macvtap link.
    pub macvlan_mode: Option<MacvlanMode>,
    /// Mode of an ipvlan link.
    pub ipvlan_mode: Option<IpvlanMode>,
    /// VNI of a vxlan link.
    pub vxlan_id: Option<u32>,
    /// Routing table of a vrf link.
    pub vrf_table: Option<u32>,
}

impl Link {
    /// Parses an RTM_NEWLINK payload.
    pub(crate) fn parse(b: &[u8]) -> Option<Link> {
        if b.len() < 16 {
            return None;
        }
        let index = get_i32(&b[4..])? as u32;
        let flags = get_u32(&b[8..])?;
        let mut l = Link {
            index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: flags & IFF_UP != 0,
            lower_up: flags & IFF_LOWER_UP != 0,
            oper_state: OperState::Unknown,
            master: None,
            link: None,
            link_netnsid: None,
            alias: None,
            promisc: flags & IFF_PROMISC != 0,
            allmulti: flags & IFF_ALLMULTI != 0,
            txqlen: 0,
            vlan_id: None,
            macvlan_mode: None,
            ipvlan_mode: None,
            vxlan_id: None,
            vrf_table: None,
        };
        for (ty, d) in attrs(&b[16..]) {
            match ty {
                IFLA_IFNAME => l.name = get_str(d),
                IFLA_ADDRESS => l.mac = get_mac(d),
                IFLA_MTU => l.mtu = get_u32(d)?,
                IFLA_TXQLEN => l.txqlen = get_u32(d)?,
                IFLA_OPERSTATE => l.oper_state = OperState::from(*d.first()?),
                IFLA_MASTER => l.master = get_u32(d).filter(|&m| m != 0),
                // The kernel sends IFLA_LINK only when it differs from the own index; a peer in
                // another namespace may still carry the same number.
                IFLA_LINK => l.link = get_u32(d).filter(|&m| m != 0),
                IFLA_LINK_NETNSID => l.link_netnsid = get_i32(d),
                IFLA_IFALIAS => l.alias = Some(get_str(d)).filter(|s| !s.is_empty()),
                IFLA_LINKINFO => l.parse_linkinfo(d),
                _ => {}
            }
        }
        Some(l)
    }

    fn parse_linkinfo(&mut self, d: &[u8]) {
        let mut data: &[u8] = &[];
        for (ty, v) in attrs(d) {
            match ty {
                IFLA_INFO_KIND => self.kind = Some(LinkType::from_kernel(&get_str(v))),
                IFLA_INFO_DATA => data = v,
                _ => {}
            }
        }
        for (ty, v) in attrs(data) {
            match (&self.kind, ty) {
                (Some(LinkType::Vlan), IFLA_VLAN_ID) => self.vlan_id = get_u16(v),
                (Some(LinkType::Macvlan | LinkType::Macvtap), IFLA_MACVLAN_MODE) => {
                    self.macvlan_mode = get_u32(v).and_then(MacvlanMode::from_raw)
                }
                (Some(LinkType::Ipvlan | LinkType::Ipvtap), IFLA_IPVLAN_MODE) => {
                    self.ipvlan_mode = get_u16(v).and_then(IpvlanMode::from_raw)
                }
                (Some(LinkType::Vxlan), IFLA_VXLAN_ID) => self.vxlan_id = get_u32(v),
                (Some(LinkType::Vrf), IFLA_VRF_TABLE) => self.vrf_table = get_u32(v),
                _ => {}
            }
        }
    }
}

/// Kind-specific part of a link to create; `'fd` is the life of the namespace fd a veth peer
/// is created in.
#[derive(Debug, Clone)]
pub enum LinkKind<'fd> {
    /// A veth pair; the peer may be created straight in another namespace.
    Veth(VethPeer<'fd>),
    /// A bridge.
    Bridge {
        /// Set IFLA_BR_VLAN_FILTERING.
        vlan_filtering: Option<bool>,
    },
    /// A macvlan on the parent given by [`LinkSpec::parent`].
    Macvlan {
        /// Mode.
        mode: MacvlanMode,
        /// Broadcast queue length (IFLA_MACVLAN_BC_QUEUE_LEN).
        bc_queue_len: Option<u32>,
    },
    /// An ipvlan on the parent given by [`LinkSpec::parent`].
    Ipvlan {
        /// Mode.
        mode: IpvlanMode,
    },
    /// An 802.1Q vlan on the parent given by [`LinkSpec::parent`].
    Vlan {
        /// VLAN id.
        id: u16,
    },
    /// A vxlan device.
    Vxlan {
        /// VNI.
        vni: u32,
        /// Local source address.
        local: Option<IpAddr>,
        /// Underlay device index.
        dev: Option<u32>,
        /// UDP destination port.
        port: Option<u16>,
        /// Source-address learning.
        learning: bool,
    },
    /// A dummy device.
    Dummy,
    /// An intermediate functional block device.
    Ifb,
    /// A VRF master device bound to a routing table.
    Vrf {
        /// Routing table (IFLA_VRF_TABLE).
        table: u32,
    },
}

impl LinkKind<'_> {
    /// The type of link this creates (what a dump reports back in [`Link::kind`]).
    pub fn link_type(&self) -> LinkType {
        match self {
            LinkKind::Veth(_) => LinkType::Veth,
            LinkKind::Bridge { .. } => LinkType::Bridge,
            LinkKind::Macvlan { .. } => LinkType::Macvlan,
            LinkKind::Ipvlan { .. } => LinkType::Ipvlan,
            LinkKind::Vlan { .. } => LinkType::Vlan,
            LinkKind::Vxlan { .. } => LinkType::Vxlan,
            LinkKind::Dummy => LinkType::Dummy,
            LinkKind::Ifb => LinkType::Ifb,
            LinkKind::Vrf { .. } => LinkType::Vrf,
        }
    }

    /// IFLA_INFO_KIND string.
    pub fn name(&self) -> &'static str {
        self.link_type()
            .known_name()
            .expect("every created kind is a named type")
    }
}

/// Builder setters for [`VethPeer`] and [`LinkSpec`]: `field(value)` stores `Some(value)`.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, $field: $ty) -> Self {
            self.$field = Some($field);
            self
        }
    )*};
}

/// The peer end of a veth pair to create. Its attributes can be set only here, so only on a
/// veth: `LinkSpec::veth("eth0", VethPeer::new("veth1").netns(host.as_fd()).mtu(1400))`.
#[derive(Debug, Clone)]
pub struct VethPeer<'fd> {
    name: String,
    netns: Option<BorrowedFd<'fd>>,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
}

impl<'fd> VethPeer<'fd> {
    /// A peer called `name`, in the link's namespace, with the kernel's defaults.
    pub fn new(name: impl Into<String>) -> Self {
        VethPeer {
            name: name.into(),
            netns: None,
            mtu: None,
            mac: None,
        }
    }

    setters! {
        /// Creates the peer in the namespace behind the fd.
        netns: BorrowedFd<'fd>,
        /// The peer's MTU.
        mtu: u32,
        /// The peer's MAC.
        mac: [u8; 6],
    }
}

impl From<&str> for VethPeer<'_> {
    fn from(name: &str) -> Self {
        VethPeer::new(name)
    }
}

impl From<String> for VethPeer<'_> {
    fn from(name: String) -> Self {
        VethPeer::new(name)
    }
}

/// A link to create; `'fd` is the life of the namespace fds it names, which the borrow keeps
/// open until [`Netlink::create_link`] has sent it.
#[derive(Debug, Clone)]
pub struct LinkSpec<'fd> {
    /// Interface name.
    pub name: String,
    /// Kind and its options.
    pub kind: LinkKind<'fd>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC address.
    pub mac: Option<[u8; 6]>,
    /// Transmit queue length.
    pub txqlen: Option<u32>,
    /// Namespace to create the link in (None: the socket's namespace).
    pub netns: Option<BorrowedFd<'fd>>,
    /// Parent index (IFLA_LINK), resolved in the socket's namespace.
    pub parent: Option<u32>,
    /// Bring the link up on creation.
    pub up: bool,
}

impl<'fd> LinkSpec<'fd> {
    /// A spec with no options.
    pub fn new(name: impl Into<String>, kind: LinkKind<'fd>) -> Self {
        LinkSpec {
            name: name.into(),
            kind,
            mtu: None,
            mac: None,
            txqlen: None,
            netns: None,
            parent: None,
            up: false,
        }
    }

    /// A veth pair `name` <-> `peer` (a name, or a [`VethPeer`] with its own attributes).
    pub fn veth(name: impl Into<String>, peer: impl Into<VethPeer<'fd>>) -> Self {
        Self::new(name, LinkKind::Veth(peer.into()))
    }

    setters! {
        /// Sets the MTU.
        mtu: u32,
        /// Sets the MAC.
        mac: [u8; 6],
        /// Sets the transmit queue length.
        txqlen: u32,
        /// Creates the link in the namespace behind the fd.
        netns: BorrowedFd<'fd>,
        /// Sets the parent link index.
        parent: u32,
    }

    /// Brings the link up on creation.
    pub fn up(mut self) -> Self {
        self.up = true;
        self
    }

    /// The RTM_NEWLINK payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let up = if self.up { IFF_UP } else { 0 };
        let mut p = Payload::new(&ifinfomsg(0, 0, up, up));
        p.str(IFLA_IFNAME, &self.name);
        if let Some(m) = self.mtu {
            p.u32(IFLA_MTU, m);
        }
        if let Some(m) = self.mac {
            p.attr(IFLA_ADDRESS, &m);
        }
        if let Some(q) = self.txqlen {
            p.u32(IFLA_TXQLEN, q);
        }
        if let Some(i) = self.parent {
            p.u32(IFLA_LINK, i);
        }
        if let Some(ns) = self.netns {
            p.u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
        }
        p.nest(IFLA_LINKINFO, |li| {
            li.str(IFLA_INFO_KIND, self.kind.name());
            encode_kind(li, &self.kind);
        });
        p.into_bytes()
    }
}

fn encode_kind(li: &mut Payload, kind: &LinkKind<'_>) {
    match kind {
        LinkKind::Veth(peer) => {
            li.nest(IFLA_INFO_DATA, |d| {
                // The peer is described by a whole ifinfomsg plus link attributes.
                d.nest(VETH_INFO_PEER, |pp| {
                    pp.raw(&ifinfomsg(0, 0, 0, 0));
                    pp.str(IFLA_IFNAME, &peer.name);
                    if let Some(m) = peer.mtu {
                        pp.u32(IFLA_MTU, m);
                    }
                    if let Some(m) = &peer.mac {
                        pp.attr(IFLA_ADDRESS, m);
                    }
                    if let Some(ns) = peer.netns {
                        pp.u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
                    }
                });
            });
        }
        LinkKind::Bridge { vlan_filtering } => {
            if let Some(v) = vlan_filtering {
                li.nest(IFLA_INFO_DATA, |d| {
                    d.u8(IFLA_BR_VLAN_FILTERING, *v as u8);
                });
            }
        }
        LinkKind::Macvlan { mode, bc_queue_len } => {
            li.nest(IFLA_INFO_DATA, |d| {
                d.u32(IFLA_MACVLAN_MODE, *mode as u32);
                if let Some(q) = bc_queue_len {
                    d.u32(IFLA_MACVLAN_BC_QUEUE_LEN, *q);
                }
            });
        }
        LinkKind::Ipvlan { mode } => {
            li.nest(IFLA_INFO_DATA, |d| {
                d.u16(IFLA_IPVLAN_MODE, *mode as u16);
            });
        }
        LinkKind::Vlan { id } => {
            li.nest(IFLA_INFO_DATA, |d| {
                d.u16(IFLA_VLAN_ID, *id);
            });
        }
        LinkKind::Vxlan {
            vni,
            local,
            dev,
            port,
            learning,
        } => {
            li.nest(IFLA_INFO_DATA, |d| {
                d.u32(IFLA_VXLAN_ID, *vni);
                match local {
                    Some(ip @ IpAddr::V4(_)) => {
                        d.ip(IFLA_VXLAN_LOCAL, *ip);
                    }
                    Some(ip @ IpAddr::V6(_)) => {
                        d.ip(IFLA_VXLAN_LOCAL6, *ip);
                    }
                    None => {}
                }
                if let Some(i) = dev {
                    d.u32(IFLA_VXLAN_LINK, *i);
                }
                if let Some(pt) = port {
                    // The only big-endian attribute here: it is copied into UDP headers.
                    d.attr(IFLA_VXLAN_PORT, &pt.to_be_bytes());
                }
                d.u8(IFLA_VXLAN_LEARNING, *learning as u8);
            });
        }
        LinkKind::Vrf { table } => {
            li.nest(IFLA_INFO_DATA, |d| {
                d.u32(IFLA_VRF_TABLE, *table);
            });
        }
        LinkKind::Dummy | LinkKind::Ifb => {}
    }
}

fn by_index(index: u32) -> String {
    format!("link #{index}")
}

impl Netlink {
    /// Makes an error about `link #N` name the link, `link "eth0" (#N)`, when it still exists:
    /// a caller holding only the index still learns which device failed. Looked up only on
    /// failure, so the success path costs no extra request.
    pub(crate) fn name_link(&mut self, index: u32, e: Error) -> Error {
        let Ok(Some(link)) = self.link_by_index(index) else {
            return e;
        };
        let named = format!("link {:?} (#{index})", link.name);
        e.map_context(|c| c.replace(&by_index(index), &named))
    }

    /// Creates a link; fails with EEXIST if the name is taken.
    pub fn create_link(&mut self, spec: &LinkSpec<'_>) -> Result<()> {
        let what = || format!("create {} {:?}", spec.kind.name(), spec.name);
        self.request(RTM_NEWLINK, Mode::Create, spec.encode(), &what)?;
        Ok(())
    }

    /// As [`Netlink::create_link`], and the link as the kernel echoes it back (NLM_F_ECHO),
    /// which saves the lookup that would follow; None from a kernel that does not echo.
    pub fn create_link_echo(&mut self, spec: &LinkSpec<'_>) -> Result<Option<Link>> {
        let what = || format!("create {} {:?}", spec.kind.name(), spec.name);
        let replies = self.request(RTM_NEWLINK, Mode::CreateEcho, spec.encode(), &what)?;
        Ok(replies
            .iter()
            .filter_map(|b| Link::parse(b))
            .find(|l| l.name == spec.name))
    }

    /// The link called `name`, or None.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut p = Payload::new(&ifinfomsg(0, 0, 0, 0));
        p.str(IFLA_IFNAME, name);
        self.get_link(p.into_bytes(), &|| format!("get link {name:?}"))
    }

    /// The link with index `index`, or None.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let p = Payload::new(&ifinfomsg(0, index, 0, 0));
        self.get_link(p.into_bytes(), &|| format!("get {}", by_index(index)))
    }

    fn get_link(&mut self, req: Vec<u8>, what: &dyn Fn() -> String) -> Result<Option<Link>> {
        match self.request(RTM_GETLINK, Mode::Change, req, what) {
            Ok(replies) => match replies.first() {
                Some(b) => Link::parse(b)
                    .map(Some)
                    .ok_or_else(|| Error::other(what(), "malformed reply")),
                None => Ok(None),
            },
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`; ENODEV if absent.
    pub fn link_required(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| Error::kernel(format!("get link {name:?}"), nix::libc::ENODEV, None))
    }

    /// All links.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let p = Payload::new(&ifinfomsg(0, 0, 0, 0));
        let msgs = self.dump(RTM_GETLINK, p.into_bytes(), &|| "list links".to_string())?;
        Ok(msgs.iter().filter_map(|m| Link::parse(m)).collect())
    }

    fn set_link(
        &mut self,
        index: u32,
        flags: u32,
        change: u32,
        what: &dyn Fn() -> String,
        f: impl FnOnce(&mut Payload),
    ) -> Result<()> {
        let mut p = Payload::new(&ifinfomsg(0, index, flags, change));
        f(&mut p);
        match self.request(RTM_SETLINK, Mode::Change, p.into_bytes(), what) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.name_link(index, e)),
        }
    }

    /// Sets IFF_UP.
    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(index, IFF_UP, IFF_UP, &|| format!("set {} up", by_index(index)), |_| {})
    }

    /// Clears IFF_UP.
    pub fn set_down(&mut self, index: u32) -> Result<()> {
        self.set_link(index, 0, IFF_UP, &|| format!("set {} down", by_index(index)), |_| {})
    }

    /// Sets IFF_PROMISC on or off.
    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        let f = if on { IFF_PROMISC } else { 0 };
        self.set_link(
            index,
            f,
            IFF_PROMISC,
            &|| format!("set {} promisc {on}", by_index(index)),
            |_| {},
        )
    }

    /// Sets IFF_ALLMULTI on or off.
    pub fn set_allmulti(&mut self, index: u32, on: bool) -> Result<()> {
        let f = if on { IFF_ALLMULTI } else { 0 };
        self.set_link(
            index,
            f,
            IFF_ALLMULTI,
            &|| format!("set {} allmulti {on}", by_index(index)),
            |_| {},
        )
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        self.set_link(index, 0, 0, &|| format!("set {} mtu {mtu}", by_index(index)), |p| {
            p.u32(IFLA_MTU, mtu);
        })
    }

    /// Sets the MAC address.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set_link(
            index,
            0,
            0,
            &|| format!("set {} address {}", by_index(index), fmt_mac(&mac)),
            |p| {
                p.attr(IFLA_ADDRESS, &mac);
            },
        )
    }

    /// Sets the transmit queue length.
    pub fn set_txqlen(&mut self, index: u32, q: u32) -> Result<()> {
        self.set_link(index, 0, 0, &|| format!("set {} txqlen {q}", by_index(index)), |p| {
            p.u32(IFLA_TXQLEN, q);
        })
    }

    /// Enslaves `index` to `master` (e.g. a bridge).
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<()> {
        self.set_link(
            index,
            0,
            0,
            &|| format!("set {} master {}", by_index(index), by_index(master)),
            |p| {
                p.u32(IFLA_MASTER, master);
            },
        )
    }

    /// Releases `index` from its master.
    pub fn set_nomaster(&mut self, index: u32) -> Result<()> {
        self.set_link(index, 0, 0, &|| format!("set {} nomaster", by_index(index)), |p| {
            p.u32(IFLA_MASTER, 0);
        })
    }

    /// Renames a link (it must be down).
    pub fn set_name(&mut self, index: u32, name: &str) -> Result<()> {
        self.set_link(
            index,
            0,
            0,
            &|| format!("rename {} to {name:?}", by_index(index)),
            |p| {
                p.str(IFLA_IFNAME, name);
            },
        )
    }

    /// Moves a link into the namespace behind `ns`.
    pub fn set_netns(&mut self, index: u32, ns: BorrowedFd<'_>) -> Result<()> {
        self.set_link(index, 0, 0, &|| format!("move {} to netns", by_index(index)), |p| {
            p.u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
        })
    }

    /// Sets the alias; `None` clears it.
    pub fn set_alias(&mut self, index: u32, alias: Option<&str>) -> Result<()> {
        self.set_link(
            index,
            0,
            0,
            &|| format!("set {} alias {alias:?}", by_index(index)),
            |p| {
                // An empty payload is the kernel's way to clear the alias.
                match alias {
                    Some(a) => p.attr(IFLA_IFALIAS, a.as_bytes()),
                    None => p.attr(IFLA_IFALIAS, &[]),
                };
            },
        )
    }

    /// Deletes a link (a veth takes its peer with it).
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let p = Payload::new(&ifinfomsg(0, index, 0, 0));
        match self.request(RTM_DELLINK, Mode::Change, p.into_bytes(), &|| {
            format!("delete {}", by_index(index))
        }) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.name_link(index, e)),
        }
    }

    /// Waits until the link has carrier (oper state up, or unknown with IFF_LOWER_UP, as for
    /// devices that do not report it). Polls with a short backoff: 1 ms doubling to 50 ms.
    pub fn wait_oper_up(&mut self, index: u32, timeout: Duration) -> Result<Link> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(1);
        loop {
            let l = self
                .link_by_index(index)?
                .ok_or_else(|| Error::kernel(format!("wait for {} up", by_index(index)), nix::libc::ENODEV, None))?;
            let ready = l.oper_state == OperState::Up || (l.oper_state == OperState::Unknown && l.lower_up);
            if ready {
                return Ok(l);
            }
            if start.elapsed() >= timeout {
                return Err(Error::kernel(
                    format!(
                        "wait for {} {:?} up (state {:?})",
                        by_index(index),
                        l.name,
                        l.oper_state
                    ),
                    nix::libc::ETIMEDOUT,
                    None,
                ));
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff` (as Go's `net.HardwareAddr.String()` does). Takes a
/// MAC (`&mac`) or a link's optional one (`&link.mac`); no MAC gives an empty string.
pub fn fmt_mac<'a>(m: impl Into<Option<&'a [u8; 6]>>) -> String {
    let Some(m) = m.into() else {
        return String::new();
    };
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn link_types_and_modes_by_name() {
        for (t, n) in LinkType::KNOWN {
            assert_eq!(LinkType::from_kernel(n), t);
            assert_eq!(t.to_string(), n);
        }
        assert_eq!(LinkType::from_kernel("wireguard"), LinkType::Other("wireguard".into()));
        assert_eq!(LinkType::from_kernel("wireguard").as_str(), "wireguard");
        assert_eq!(LinkKind::Dummy.name(), "dummy");
        assert_eq!(LinkKind::Vrf { table: 1 }.link_type(), LinkType::Vrf);
        for (m, n) in MacvlanMode::NAMES {
            assert_eq!((n.parse::<MacvlanMode>(), m.to_string().as_str()), (Ok(m), n));
        }
        for (m, n) in IpvlanMode::NAMES {
            assert_eq!((n.parse::<IpvlanMode>(), m.to_string().as_str()), (Ok(m), n));
        }
        assert_eq!("l4".parse::<IpvlanMode>(), Err("l4".to_string()));
    }

    #[test]
    fn veth_create_bytes() {
        let ns = std::fs::File::open("/dev/null").unwrap();
        let spec = LinkSpec::veth("eth0", VethPeer::new("p1").netns(ns.as_fd()))
            .mtu(1400)
            .up();
        let b = spec.encode();
        let mut want = Vec::new();
        want.extend_from_slice(&ifinfomsg(0, 0, 1, 1));
        want.extend_from_slice(&[9, 0, 3, 0, b'e', b't', b'h', b'0', 0, 0, 0, 0]); // IFNAME
        want.extend_from_slice(&[8, 0, 4, 0]);
        want.extend_from_slice(&1400u32.to_ne_bytes()); // MTU
                                                        // LINKINFO { KIND "veth", DATA { PEER { ifinfomsg, IFNAME "p1", NET_NS_FD ns } } }
        want.extend_from_slice(&[56, 0, 18, 0]);
        want.extend_from_slice(&[9, 0, 1, 0, b'v', b'e', b't', b'h', 0, 0, 0, 0]);
        want.extend_from_slice(&[40, 0, 2, 0]);
        want.extend_from_slice(&[36, 0, 1, 0]);
        want.extend_from_slice(&ifinfomsg(0, 0, 0, 0));
        want.extend_from_slice(&[7, 0, 3, 0, b'p', b'1', 0, 0]);
        want.extend_from_slice(&[8, 0, 28, 0]);
        want.extend_from_slice(&(ns.as_raw_fd() as u32).to_ne_bytes());
        assert_eq!(b, want);

        // The peer's own MTU and MAC go inside its nest, not on the link.
        let b = LinkSpec::veth("eth0", VethPeer::new("p1").mtu(1300).mac([2, 0, 0, 0, 0, 9])).encode();
        let info = attrs(&b[16..]).find(|a| a.0 == IFLA_LINKINFO).unwrap().1;
        let data = attrs(info).find(|a| a.0 == IFLA_INFO_DATA).unwrap().1;
        let peer = attrs(data).find(|a| a.0 == VETH_INFO_PEER).unwrap().1;
        let peer: Vec<_> = attrs(&peer[16..]).collect();
        assert_eq!(peer[1], (IFLA_MTU, &1300u32.to_ne_bytes()[..]));
        assert_eq!(peer[2], (IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9][..]));
        assert!(attrs(&b[16..]).all(|a| a.0 != IFLA_MTU && a.0 != IFLA_ADDRESS));
    }

    #[test]
    fn vrf_create_and_decode() {
        let b = LinkSpec::new("vrf-blue", LinkKind::Vrf { table: 1001 }).encode();
        let l = Link::parse(&b).unwrap();
        assert_eq!(l.name, "vrf-blue");
        assert_eq!(l.kind, Some(LinkType::Vrf));
        assert_eq!(l.vrf_table, Some(1001));
    }

    #[test]
    fn kind_payloads() {
        let m = LinkSpec::new(
            "m0",
            LinkKind::Macvlan {
                mode: MacvlanMode::Bridge,
                bc_queue_len: Some(100),
            },
        )
        .parent(3);
        let b = m.encode();
        let info = attrs(&b[16..]).find(|a| a.0 == IFLA_LINKINFO).unwrap().1;
        let data = attrs(info).find(|a| a.0 == IFLA_INFO_DATA).unwrap().1;
        let v: Vec<_> = attrs(data).map(|(t, d)| (t, get_u32(d).unwrap())).collect();
        assert_eq!(v, vec![(IFLA_MACVLAN_MODE, 4), (IFLA_MACVLAN_BC_QUEUE_LEN, 100)]);
        assert_eq!(
            attrs(&b[16..]).find(|a| a.0 == IFLA_LINK).map(|a| get_u32(a.1)),
            Some(Some(3))
        );

        let v = LinkSpec::new("v0", LinkKind::Vlan { id: 100 }).encode();
        let info = attrs(&v[16..]).find(|a| a.0 == IFLA_LINKINFO).unwrap().1;
        let data = attrs(info).find(|a| a.0 == IFLA_INFO_DATA).unwrap().1;
        assert_eq!(data, &[6, 0, 1, 0, 100, 0, 0, 0]);

        let x = LinkSpec::new(
            "x0",
            LinkKind::Vxlan {
                vni: 1,
                local: Some("10.0.0.1".parse().unwrap()),
                dev: Some(2),
                port: Some(8472),
                learning: false,
            },
        )
        .encode();
        let info = attrs(&x[16..]).find(|a| a.0 == IFLA_LINKINFO).unwrap().1;
        let data = attrs(info).find(|a| a.0 == IFLA_INFO_DATA).unwrap().1;
        let port = attrs(data).find(|a| a.0 == IFLA_VXLAN_PORT).unwrap().1;
        assert_eq!(port, &[0x21, 0x18]);
        assert_eq!(attrs(data).find(|a| a.0 == IFLA_VXLAN_LOCAL).unwrap().1, &[10, 0, 0, 1]);
    }

    #[test]
    fn parse_link() {
        let mut p = Payload::new(&ifinfomsg(0, 5, IFF_UP | IFF_PROMISC, 0));
        p.str(IFLA_IFNAME, "m0")
            .u32(IFLA_MTU, 1500)
            .u8(IFLA_OPERSTATE, 6)
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
        p.nest(IFLA_LINKINFO, |li| {
            li.str(IFLA_INFO_KIND, "macvlan");
            li.nest(IFLA_INFO_DATA, |d| {
                d.u32(IFLA_MACVLAN_MODE, 4);
            });
        });
        let l = Link::parse(p.bytes()).unwrap();
        assert_eq!(l.index, 5);
        assert_eq!(l.name, "m0");
        assert!(l.up && l.promisc && !l.allmulti);
        assert_eq!(l.oper_state, OperState::Up);
        assert_eq!(l.mac, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(l.kind, Some(LinkType::Macvlan));
        assert_eq!(l.macvlan_mode, Some(MacvlanMode::Bridge));
    }

    #[test]
    fn mac_text() {
        let m = [0x02, 0xab, 0, 0, 0x0c, 0xff];
        assert_eq!(fmt_mac(&m), "02:ab:00:00:0c:ff");
        assert_eq!(fmt_mac(&Some(m)), "02:ab:00:00:0c:ff");
        assert_eq!(fmt_mac(&None), "");
    }
}
