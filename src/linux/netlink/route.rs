//! Routes: list, add, replace, append (ECMP), delete.

use std::net::IpAddr;

use ipnet::IpNet;

use super::addr::IpFamily;
use super::wire::{align, attrs, get_i32, get_ip, get_u32, Payload};
use super::{Mode, Netlink};
use crate::linux::Result;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;

/// rtm_flags bit: the gateway is on-link.
const RTNH_F_ONLINK: u32 = 4;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_PREFSRC: u16 = 7;
const RTA_METRICS: u16 = 8;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
const RTAX_ADVMSS: u16 = 8;

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;
/// The local routing table.
pub const TABLE_LOCAL: u32 = 255;
/// Scope: global.
pub const SCOPE_UNIVERSE: u8 = 0;
/// Scope: on-link.
pub const SCOPE_LINK: u8 = 253;
/// Scope: this host.
pub const SCOPE_HOST: u8 = 254;
/// Scope: matches any scope in a delete.
pub const SCOPE_NOWHERE: u8 = 255;
/// Protocol: configured by an administrator/tool.
pub const PROTO_BOOT: u8 = 3;
/// Protocol: added by the kernel.
pub const PROTO_KERNEL: u8 = 2;
/// Protocol: static.
pub const PROTO_STATIC: u8 = 4;

/// Route type (rtm_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteType {
    /// Gateway or direct route.
    Unicast,
    /// Local address.
    Local,
    /// Broadcast address.
    Broadcast,
    /// Drop silently.
    Blackhole,
    /// Drop with host unreachable.
    Unreachable,
    /// Drop with prohibited.
    Prohibit,
    /// Continue lookup in another table.
    Throw,
    /// Anything else.
    Other(u8),
}

impl RouteType {
    fn to_u8(self) -> u8 {
        match self {
            RouteType::Unicast => 1,
            RouteType::Local => 2,
            RouteType::Broadcast => 3,
            RouteType::Blackhole => 6,
            RouteType::Unreachable => 7,
            RouteType::Prohibit => 8,
            RouteType::Throw => 9,
            RouteType::Other(n) => n,
        }
    }
    fn from_u8(v: u8) -> Self {
        match v {
            1 => RouteType::Unicast,
            2 => RouteType::Local,
            3 => RouteType::Broadcast,
            6 => RouteType::Blackhole,
            7 => RouteType::Unreachable,
            8 => RouteType::Prohibit,
            9 => RouteType::Throw,
            n => RouteType::Other(n),
        }
    }
}

/// One path of a multipath route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Weight, 1..=256.
    pub weight: u16,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination (0.0.0.0/0 or ::/0 for default).
    pub dst: IpNet,
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
    /// Preferred source address (RTA_PREFSRC).
    pub src: Option<IpAddr>,
    /// Table id.
    pub table: u32,
    /// Scope.
    pub scope: u8,
    /// Metric.
    pub priority: Option<u32>,
    /// Protocol (who installed it).
    pub protocol: u8,
    /// Path MTU metric.
    pub mtu: Option<u32>,
    /// Advertised MSS metric.
    pub advmss: Option<u32>,
    /// Paths of a multipath route (then `gw`/`oif` are None).
    pub multipath: Vec<NextHop>,
    /// Type.
    pub kind: RouteType,
    /// RTNH_F_ONLINK: the gateway is on the link even without a route to it.
    pub onlink: bool,
}

impl Route {
    /// A unicast route in the main table, scope universe, protocol boot.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gw: None,
            oif: None,
            src: None,
            table: TABLE_MAIN,
            scope: SCOPE_UNIVERSE,
            priority: None,
            protocol: PROTO_BOOT,
            mtu: None,
            advmss: None,
            multipath: Vec::new(),
            kind: RouteType::Unicast,
            onlink: false,
        }
    }

    /// Sets the gateway.
    pub fn gw(mut self, gw: IpAddr) -> Self {
        self.gw = Some(gw);
        self
    }

    /// Sets the output interface.
    pub fn oif(mut self, oif: u32) -> Self {
        self.oif = Some(oif);
        self
    }

    /// Sets the scope.
    pub fn scope(mut self, scope: u8) -> Self {
        self.scope = scope;
        self
    }

    /// Sets the table.
    pub fn table(mut self, table: u32) -> Self {
        self.table = table;
        self
    }

    fn family(&self) -> u8 {
        IpFamily::of(self.dst.addr()).af()
    }

    fn describe(&self) -> String {
        let mut s = format!("route {}", self.dst);
        if let Some(g) = self.gw {
            s += &format!(" via {g}");
        }
        if let Some(o) = self.oif {
            s += &format!(" dev #{o}");
        }
        if self.table != TABLE_MAIN {
            s += &format!(" table {}", self.table);
        }
        s
    }

    /// The RTM_NEWROUTE / RTM_DELROUTE payload.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let table8 = if self.table < 256 { self.table as u8 } else { 0 };
        let f = if self.onlink { RTNH_F_ONLINK } else { 0u32 }.to_ne_bytes();
        let h = [
            self.family(),
            self.dst.prefix_len(),
            0,
            0,
            table8,
            self.protocol,
            self.scope,
            self.kind.to_u8(),
            f[0],
            f[1],
            f[2],
            f[3],
        ];
        let mut p = Payload::new(&h);
        p.u32(RTA_TABLE, self.table);
        if self.dst.prefix_len() > 0 {
            p.ip(RTA_DST, self.dst.network());
        }
        if let Some(g) = self.gw {
            p.ip(RTA_GATEWAY, g);
        }
        if let Some(o) = self.oif {
            p.u32(RTA_OIF, o);
        }
        if let Some(s) = self.src {
            p.ip(RTA_PREFSRC, s);
        }
        if let Some(m) = self.priority {
            p.u32(RTA_PRIORITY, m);
        }
        if self.mtu.is_some() || self.advmss.is_some() {
            p.nest(RTA_METRICS, |m| {
                if let Some(v) = self.mtu {
                    m.u32(RTAX_MTU, v);
                }
                if let Some(v) = self.advmss {
                    m.u32(RTAX_ADVMSS, v);
                }
            });
        }
        if !self.multipath.is_empty() {
            let mut body = Vec::new();
            for nh in &self.multipath {
                // struct rtnexthop {len u16, flags u8, hops u8, ifindex i32} + attributes
                let mut attrs = Payload::default();
                if let Some(g) = nh.gw {
                    attrs.ip(RTA_GATEWAY, g);
                }
                let len = 8 + attrs.bytes().len();
                body.extend_from_slice(&(len as u16).to_ne_bytes());
                body.push(0);
                body.push(nh.weight.clamp(1, 256).saturating_sub(1) as u8);
                body.extend_from_slice(&(nh.oif.unwrap_or(0) as i32).to_ne_bytes());
                body.extend_from_slice(attrs.bytes());
            }
            p.attr(RTA_MULTIPATH, &body);
        }
        p.into_bytes()
    }

    pub(crate) fn parse(b: &[u8]) -> Option<Route> {
        if b.len() < 12 {
            return None;
        }
        let family = b[0];
        let unspec: IpAddr = if family == nix::libc::AF_INET6 as u8 {
            IpAddr::V6(0.into())
        } else if family == nix::libc::AF_INET as u8 {
            IpAddr::V4(0.into())
        } else {
            return None;
        };
        let mut r = Route::new(IpNet::new(unspec, b[1]).ok()?);
        r.table = b[4] as u32;
        r.protocol = b[5];
        r.scope = b[6];
        r.kind = RouteType::from_u8(b[7]);
        r.onlink = get_u32(&b[8..]).is_some_and(|f| f & RTNH_F_ONLINK != 0);
        for (ty, d) in attrs(&b[12..]) {
            match ty {
                RTA_DST => r.dst = IpNet::new(get_ip(d)?, b[1]).ok()?,
                RTA_GATEWAY => r.gw = get_ip(d),
                RTA_OIF => r.oif = get_u32(d),
                RTA_PREFSRC => r.src = get_ip(d),
                RTA_PRIORITY => r.priority = get_u32(d),
                RTA_TABLE => r.table = get_u32(d)?,
                RTA_METRICS => {
                    for (t, v) in attrs(d) {
                        match t {
                            RTAX_MTU => r.mtu = get_u32(v),
                            RTAX_ADVMSS => r.advmss = get_u32(v),
                            _ => {}
                        }
                    }
                }
                RTA_MULTIPATH => r.multipath = parse_multipath(d),
                _ => {}
            }
        }
        Some(r)
    }
}

fn parse_multipath(mut d: &[u8]) -> Vec<NextHop> {
    let mut out = Vec::new();
    while d.len() >= 8 {
        let len = u16::from_ne_bytes([d[0], d[1]]) as usize;
        if len < 8 || len > d.len() {
            break;
        }
        let oif = get_i32(&d[4..]).filter(|&i| i > 0).map(|i| i as u32);
        let gw = attrs(&d[8..len]).find(|a| a.0 == RTA_GATEWAY).and_then(|a| get_ip(a.1));
        out.push(NextHop {
            gw,
            oif,
            weight: d[3] as u16 + 1,
        });
        d = &d[align(len).min(d.len())..];
    }
    out
}

impl Netlink {
    /// Routes of `family`; only table `table` when given (all tables otherwise).
    pub fn routes(&mut self, family: IpFamily, table: Option<u32>) -> Result<Vec<Route>> {
        let h = [family.af(), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let msgs = self.dump(RTM_GETROUTE, Payload::new(&h).into_bytes(), &|| {
            "list routes".to_string()
        })?;
        Ok(msgs
            .iter()
            .filter_map(|m| Route::parse(m))
            .filter(|r| table.is_none_or(|t| r.table == t))
            .collect())
    }

    /// The single-path routes of both families whose output interface is `index`; only
    /// table `table` when given (all tables otherwise).
    pub fn link_routes(&mut self, index: u32, table: Option<u32>) -> Result<Vec<Route>> {
        Ok(self
            .routes(IpFamily::All, table)?
            .into_iter()
            .filter(|r| r.oif == Some(index) && r.multipath.is_empty())
            .collect())
    }

    /// Adds a route; EEXIST if an equal one exists.
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        let what = || format!("add {}", r.describe());
        self.request(RTM_NEWROUTE, Mode::Create, r.encode(), &what)?;
        Ok(())
    }

    /// Adds or overwrites a route.
    pub fn replace_route(&mut self, r: &Route) -> Result<()> {
        let what = || format!("replace {}", r.describe());
        self.request(RTM_NEWROUTE, Mode::Replace, r.encode(), &what)?;
        Ok(())
    }

    /// Adds a route beside existing ones with the same destination (NLM_F_APPEND). For IPv6
    /// this grows an ECMP route; for IPv4 use [`Route::multipath`] for real ECMP.
    pub fn append_route(&mut self, r: &Route) -> Result<()> {
        let what = || format!("append {}", r.describe());
        self.request(RTM_NEWROUTE, Mode::Append, r.encode(), &what)?;
        Ok(())
    }

    /// Deletes the route matching `r`: dst, table, type, and gw/oif/metric when set. Like
    /// `ip route del`, any scope and protocol match, so a caller need not know them.
    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        let what = || format!("delete {}", r.describe());
        let mut m = r.clone();
        m.scope = SCOPE_NOWHERE;
        m.protocol = 0;
        self.request(RTM_DELROUTE, Mode::Change, m.encode(), &what)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_default_via_bytes() {
        let r = Route::new("0.0.0.0/0".parse().unwrap())
            .gw("10.0.0.1".parse().unwrap())
            .oif(2);
        let b = r.encode();
        let mut want = vec![2, 0, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0];
        want.extend_from_slice(&[8, 0, 15, 0]);
        want.extend_from_slice(&254u32.to_ne_bytes());
        want.extend_from_slice(&[8, 0, 5, 0, 10, 0, 0, 1]);
        want.extend_from_slice(&[8, 0, 4, 0]);
        want.extend_from_slice(&2u32.to_ne_bytes());
        assert_eq!(b, want);
        assert_eq!(Route::parse(&b).unwrap(), r);
    }

    #[test]
    fn onlink_roundtrip() {
        let mut r = Route::new("10.20.0.0/16".parse().unwrap())
            .gw("10.9.9.9".parse().unwrap())
            .oif(3);
        assert!(!Route::parse(&r.encode()).unwrap().onlink);
        r.onlink = true;
        let b = r.encode();
        assert_eq!(&b[8..12], &4u32.to_ne_bytes());
        assert!(Route::parse(&b).unwrap().onlink);
    }

    #[test]
    fn multipath_roundtrip() {
        let mut r = Route::new("10.9.0.0/16".parse().unwrap()).table(1000);
        r.multipath = vec![
            NextHop {
                gw: Some("10.0.0.1".parse().unwrap()),
                oif: Some(2),
                weight: 1,
            },
            NextHop {
                gw: Some("10.0.0.2".parse().unwrap()),
                oif: Some(3),
                weight: 5,
            },
        ];
        r.mtu = Some(1400);
        let b = r.encode();
        assert_eq!(b[4], 0, "tables >255 only in RTA_TABLE");
        assert_eq!(Route::parse(&b).unwrap(), r);
    }
}
