//! Traffic control: qdiscs (tbf, ingress) and u32 filters with a mirred redirect action,
//! encoded as vishvananda/netlink (and so the reference plugins) encode them, so that
//! `tc qdisc show` prints the same numbers and a dump decodes either side's objects.

use super::wire::{attrs, get_str, get_u32, Payload};
use super::{Mode, Netlink};
use crate::linux::Result;

const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTFILTER: u16 = 44;
const RTM_GETTFILTER: u16 = 46;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_PRATE64: u16 = 5;

const TCA_U32_CLASSID: u16 = 1;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;

const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
/// `TCA_EGRESS_REDIR`: redirect to the device's egress path.
pub const MIRRED_EGRESS_REDIR: i32 = 1;
/// `TC_ACT_STOLEN`.
pub const ACT_STOLEN: i32 = 4;

/// The root of the egress tree.
pub const HANDLE_ROOT: u32 = 0xffff_ffff;
/// The ingress hook's parent.
pub const HANDLE_INGRESS: u32 = 0xffff_fff1;
/// `ETH_P_ALL`: every protocol.
pub const ETH_P_ALL: u16 = 0x0003;

/// `major:minor` as the kernel packs a handle.
pub const fn handle(major: u16, minor: u16) -> u32 {
    (major as u32) << 16 | minor as u32
}

/// `struct tcmsg` (20 bytes).
fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    h[8..12].copy_from_slice(&handle.to_ne_bytes());
    h[12..16].copy_from_slice(&parent.to_ne_bytes());
    h[16..20].copy_from_slice(&info.to_ne_bytes());
    h
}

/// Token bucket filter parameters as the kernel stores them: rates in bytes/s, limit in
/// bytes, buffer in scheduler ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tbf {
    /// Rate in bytes per second.
    pub rate: u64,
    /// Peak rate in bytes per second (0: none).
    pub peakrate: u64,
    /// Queue limit in bytes.
    pub limit: u32,
    /// Bucket size in ticks.
    pub buffer: u32,
}

impl Tbf {
    fn encode(&self, p: &mut Payload) {
        // struct tc_tbf_qopt: two tc_ratespec (12 bytes each, rate last), limit, buffer, mtu.
        let mut q = [0u8; 36];
        q[8..12].copy_from_slice(&(self.rate.min(u32::MAX as u64) as u32).to_ne_bytes());
        q[20..24].copy_from_slice(&(self.peakrate.min(u32::MAX as u64) as u32).to_ne_bytes());
        q[24..28].copy_from_slice(&self.limit.to_ne_bytes());
        q[28..32].copy_from_slice(&self.buffer.to_ne_bytes());
        p.attr(TCA_TBF_PARMS, &q);
        if self.rate >= 1 << 32 {
            p.attr(TCA_TBF_RATE64, &self.rate.to_ne_bytes());
        }
        if self.peakrate >= 1 << 32 {
            p.attr(TCA_TBF_PRATE64, &self.peakrate.to_ne_bytes());
        }
    }

    pub(crate) fn parse(opts: &[u8]) -> Option<Tbf> {
        let mut t = Tbf::default();
        for (ty, d) in attrs(opts) {
            match ty {
                TCA_TBF_PARMS if d.len() >= 32 => {
                    t.rate = get_u32(&d[8..])? as u64;
                    t.peakrate = get_u32(&d[20..])? as u64;
                    t.limit = get_u32(&d[24..])?;
                    t.buffer = get_u32(&d[28..])?;
                }
                TCA_TBF_RATE64 if d.len() == 8 => t.rate = u64::from_ne_bytes(d.try_into().ok()?),
                TCA_TBF_PRATE64 if d.len() == 8 => t.peakrate = u64::from_ne_bytes(d.try_into().ok()?),
                _ => {}
            }
        }
        Some(t)
    }
}

/// A queueing discipline as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    /// Interface index.
    pub ifindex: u32,
    /// Handle (`1:` is 0x10000).
    pub handle: u32,
    /// Parent handle ([`HANDLE_ROOT`], [`HANDLE_INGRESS`], or a class).
    pub parent: u32,
    /// Kind ("tbf", "ingress", "noqueue", ...).
    pub kind: String,
    /// TBF parameters when kind is "tbf".
    pub tbf: Option<Tbf>,
}

impl Qdisc {
    pub(crate) fn parse(b: &[u8]) -> Option<Qdisc> {
        if b.len() < 20 {
            return None;
        }
        let mut q = Qdisc {
            ifindex: get_u32(&b[4..])?,
            handle: get_u32(&b[8..])?,
            parent: get_u32(&b[12..])?,
            kind: String::new(),
            tbf: None,
        };
        let mut opts: &[u8] = &[];
        for (ty, d) in attrs(&b[20..]) {
            match ty {
                TCA_KIND => q.kind = get_str(d),
                TCA_OPTIONS => opts = d,
                _ => {}
            }
        }
        if q.kind == "tbf" {
            q.tbf = Tbf::parse(opts);
        }
        Some(q)
    }
}

/// A u32 filter's redirect, as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// Interface the filter is on.
    pub ifindex: u32,
    /// Parent qdisc handle.
    pub parent: u32,
    /// Priority.
    pub prio: u16,
    /// Protocol (host order).
    pub protocol: u16,
    /// Classid (TCA_U32_CLASSID), 0 if none.
    pub classid: u32,
    /// The mirred actions: (eaction, target ifindex, verdict).
    pub mirred: Vec<(i32, u32, i32)>,
}

fn mirred_payload(p: &mut Payload, order: u16, action: i32, target: u32) {
    p.nest(order, |t| {
        t.str(TCA_ACT_KIND, "mirred");
        t.nest(TCA_ACT_OPTIONS, |o| {
            // struct tc_mirred: index, capab, action, refcnt, bindcnt, eaction, ifindex.
            let mut m = [0u8; 28];
            m[8..12].copy_from_slice(&action.to_ne_bytes());
            m[20..24].copy_from_slice(&MIRRED_EGRESS_REDIR.to_ne_bytes());
            m[24..28].copy_from_slice(&target.to_ne_bytes());
            o.attr(TCA_MIRRED_PARMS, &m);
        });
    });
}

/// The RTM_NEWTFILTER payload of a u32 match-all filter (one zero key, terminal) on
/// `parent` of `ifindex` that redirects every packet to `target`'s egress. Like the
/// reference it carries classid 1:1 and two mirred actions: the stolen redirect vishvananda
/// adds for `RedirIndex` and the explicit one with verdict 0.
fn u32_redirect_payload(ifindex: u32, parent: u32, prio: u16, target: u32) -> Vec<u8> {
    let info = (prio as u32) << 16 | ETH_P_ALL.to_be() as u32;
    let mut p = Payload::new(&tcmsg(ifindex, 0, parent, info));
    p.str(TCA_KIND, "u32");
    p.nest(TCA_OPTIONS, |o| {
        // struct tc_u32_sel (16 bytes) + one struct tc_u32_key (16 zero bytes).
        let mut sel = [0u8; 32];
        sel[0] = TC_U32_TERMINAL;
        sel[2] = 1;
        o.attr(TCA_U32_SEL, &sel);
        o.u32(TCA_U32_CLASSID, handle(1, 1));
        o.nest(TCA_U32_ACT, |a| {
            mirred_payload(a, 1, ACT_STOLEN, target);
            mirred_payload(a, 2, 0, target);
        });
    });
    p.into_bytes()
}

pub(crate) fn parse_filter(b: &[u8]) -> Option<Redirect> {
    if b.len() < 20 {
        return None;
    }
    let info = get_u32(&b[16..])?;
    let mut r = Redirect {
        ifindex: get_u32(&b[4..])?,
        parent: get_u32(&b[12..])?,
        prio: (info >> 16) as u16,
        protocol: u16::from_be(info as u16),
        classid: 0,
        mirred: Vec::new(),
    };
    let mut kind = String::new();
    for (ty, d) in attrs(&b[20..]) {
        match ty {
            TCA_KIND => kind = get_str(d),
            TCA_OPTIONS => {
                for (oty, od) in attrs(d) {
                    match oty {
                        TCA_U32_CLASSID => r.classid = get_u32(od)?,
                        TCA_U32_ACT => {
                            for (_, table) in attrs(od) {
                                let mut akind = String::new();
                                let mut parms = None;
                                for (aty, ad) in attrs(table) {
                                    match aty {
                                        TCA_ACT_KIND => akind = get_str(ad),
                                        TCA_ACT_OPTIONS => {
                                            parms = attrs(ad).find(|a| a.0 == TCA_MIRRED_PARMS).map(|a| a.1)
                                        }
                                        _ => {}
                                    }
                                }
                                if let (true, Some(m)) = (akind == "mirred", parms) {
                                    if m.len() >= 28 {
                                        let verdict = get_u32(&m[8..])? as i32;
                                        let eaction = get_u32(&m[20..])? as i32;
                                        r.mirred.push((eaction, get_u32(&m[24..])?, verdict));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (kind == "u32").then_some(r)
}

impl Netlink {
    /// Adds a TBF qdisc with `handle` under `parent` (e.g. `1:` under root).
    pub fn add_tbf(&mut self, ifindex: u32, handle: u32, parent: u32, tbf: &Tbf) -> Result<()> {
        let mut p = Payload::new(&tcmsg(ifindex, handle, parent, 0));
        p.str(TCA_KIND, "tbf");
        p.nest(TCA_OPTIONS, |o| tbf.encode(o));
        let what = || format!("add tbf qdisc on link #{ifindex}");
        self.request(RTM_NEWQDISC, Mode::Create, p.into_bytes(), &what)?;
        Ok(())
    }

    /// Adds the ingress qdisc `ffff:`.
    pub fn add_ingress_qdisc(&mut self, ifindex: u32) -> Result<()> {
        let mut p = Payload::new(&tcmsg(ifindex, handle(0xffff, 0), HANDLE_INGRESS, 0));
        p.str(TCA_KIND, "ingress");
        let what = || format!("add ingress qdisc on link #{ifindex}");
        self.request(RTM_NEWQDISC, Mode::Create, p.into_bytes(), &what)?;
        Ok(())
    }

    /// Deletes the qdisc `handle` under `parent` on `ifindex`.
    pub fn delete_qdisc(&mut self, ifindex: u32, handle: u32, parent: u32) -> Result<()> {
        let p = Payload::new(&tcmsg(ifindex, handle, parent, 0));
        let what = || format!("delete qdisc {:x}: on link #{ifindex}", handle >> 16);
        self.request(RTM_DELQDISC, Mode::Change, p.into_bytes(), &what)?;
        Ok(())
    }

    /// The qdiscs of `ifindex`, in the kernel's order.
    pub fn qdiscs(&mut self, ifindex: u32) -> Result<Vec<Qdisc>> {
        let p = Payload::new(&tcmsg(ifindex, 0, 0, 0));
        let msgs = self.dump(RTM_GETQDISC, p.into_bytes(), &|| {
            format!("list qdiscs of link #{ifindex}")
        })?;
        Ok(msgs
            .iter()
            .filter_map(|m| Qdisc::parse(m))
            .filter(|q| q.ifindex == ifindex)
            .collect())
    }

    /// Adds a u32 match-all filter (all protocols, priority `prio`) under `parent` of
    /// `ifindex` that redirects every packet to the egress of `target`.
    pub fn add_u32_redirect(&mut self, ifindex: u32, parent: u32, prio: u16, target: u32) -> Result<()> {
        let what = || format!("add u32 redirect filter on link #{ifindex} to link #{target}");
        self.request(
            RTM_NEWTFILTER,
            Mode::Create,
            u32_redirect_payload(ifindex, parent, prio, target),
            &what,
        )?;
        Ok(())
    }

    /// The u32 filters under `parent` of `ifindex` that carry actions.
    pub fn u32_redirects(&mut self, ifindex: u32, parent: u32) -> Result<Vec<Redirect>> {
        let p = Payload::new(&tcmsg(ifindex, 0, parent, 0));
        let msgs = self.dump(RTM_GETTFILTER, p.into_bytes(), &|| {
            format!("list filters of link #{ifindex}")
        })?;
        Ok(msgs
            .iter()
            .filter_map(|m| parse_filter(m))
            .filter(|r| !r.mirred.is_empty())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_roundtrip() {
        let t = Tbf {
            rate: 125_000,
            peakrate: 0,
            limit: 3125 + 16384,
            buffer: 2_048_000,
        };
        let mut p = Payload::new(&tcmsg(7, handle(1, 0), HANDLE_ROOT, 0));
        p.str(TCA_KIND, "tbf");
        p.nest(TCA_OPTIONS, |o| t.encode(o));
        let q = Qdisc::parse(p.bytes()).unwrap();
        assert_eq!((q.ifindex, q.handle, q.parent), (7, 0x10000, HANDLE_ROOT));
        assert_eq!(q.tbf, Some(t));
        // 32-bit rates carry no RATE64 attribute; bigger ones do.
        let mut small = Payload::new(&[]);
        t.encode(&mut small);
        assert_eq!(small.bytes().len(), 40);
        let big = Tbf { rate: 1 << 33, ..t };
        let mut p = Payload::new(&[]);
        big.encode(&mut p);
        assert_eq!(Tbf::parse(p.bytes()).unwrap().rate, 1 << 33);
    }

    #[test]
    fn u32_redirect_roundtrip() {
        let b = u32_redirect_payload(3, handle(0xffff, 0), 1, 9);
        // tcm_info: prio 1, protocol ETH_P_ALL in network order.
        assert_eq!(&b[16..20], &(0x0001_0000u32 | 0x0300).to_ne_bytes());
        let r = parse_filter(&b).unwrap();
        assert_eq!(r.prio, 1);
        assert_eq!(r.protocol, ETH_P_ALL);
        assert_eq!(r.classid, handle(1, 1));
        assert_eq!(
            r.mirred,
            vec![(MIRRED_EGRESS_REDIR, 9, ACT_STOLEN), (MIRRED_EGRESS_REDIR, 9, 0)]
        );
    }
}
