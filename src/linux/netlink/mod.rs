//! Typed route netlink: one [`Netlink`] handle per network namespace, with verbs for links,
//! addresses, routes, neighbours, FIB rules and bridge ports. Callers never see wire format.
//!
//! neli provides the socket and the message framing (nlmsghdr, ack and error parsing);
//! payloads are encoded in `wire`. Every request asks for an ACK and waits for it, so each
//! call either took effect or returns an [`Error`] with errno, extended-ack text and the name
//! of the object.

pub mod addr;
pub mod bridge;
pub mod link;
pub mod neigh;
pub mod route;
pub mod rule;
pub mod tc;
pub(crate) mod wire;

pub use addr::{Addr, AddrFlags, IpFamily};
pub use bridge::BridgeVlan;
pub use link::{IpvlanMode, Link, LinkKind, LinkSpec, LinkType, MacvlanMode, OperState, VethPeer};
pub use neigh::Neigh;
pub use route::{NextHop, Route, RouteType};
pub use rule::Rule;

use neli::consts::nl::NlmF;
use neli::consts::socket::NlFamily;
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::socket::synchronous::NlSocketHandle;
use neli::types::Buffer;
use neli::utils::Groups;

use super::{Error, NetNs, Result};

use wire::{NLMSG_DONE, NLMSG_ERROR};

/// Dumps interrupted by concurrent changes are retried this many times.
const DUMP_RETRIES: usize = 5;

/// A route-netlink socket bound to one network namespace.
pub struct Netlink {
    sock: NlSocketHandle,
    seq: u32,
}

/// Flags of a modifying request beyond REQUEST|ACK.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    /// Change an existing object.
    Change,
    /// CREATE|EXCL: fail if it exists.
    Create,
    /// CREATE|EXCL|ECHO: as Create, and the kernel sends the new object back (since 6.1;
    /// older kernels just ack).
    CreateEcho,
    /// CREATE|REPLACE: create or overwrite.
    Replace,
    /// CREATE|APPEND: add beside existing ones (ECMP, FDB).
    Append,
}

impl Mode {
    fn flags(self) -> NlmF {
        match self {
            Mode::Change => NlmF::empty(),
            Mode::Create => NlmF::CREATE | NlmF::EXCL,
            Mode::CreateEcho => NlmF::CREATE | NlmF::EXCL | NlmF::ECHO,
            Mode::Replace => NlmF::CREATE | NlmF::REPLACE,
            Mode::Append => NlmF::CREATE | NlmF::APPEND,
        }
    }
}

impl Netlink {
    /// A socket in the calling thread's current network namespace.
    pub fn new() -> Result<Netlink> {
        // Fuzz builds (fuzz/) drive plugins up to their first kernel call, never past it.
        if cfg!(fuzzing) {
            return Err(Error::other("open netlink socket", "no kernel access in a fuzz build"));
        }
        let sock = NlSocketHandle::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| Error::other("open netlink socket", e.to_string()))?;
        sock.enable_ext_ack(true)
            .map_err(|e| Error::other("enable netlink ext ack", e.to_string()))?;
        // Strict checking makes the kernel honour dump filters and reject malformed
        // requests; kernels before 4.20 lack it, which is fine.
        let _ = sock.enable_strict_checking(true);
        Ok(Netlink { sock, seq: 0 })
    }

    /// A socket in `ns`: the thread enters `ns`, opens the socket and switches back. The
    /// socket stays bound to `ns`, so one thread can drive several namespaces.
    pub fn in_netns(ns: &NetNs) -> Result<Netlink> {
        let _guard = ns.enter()?;
        Netlink::new()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, ty: u16, flags: NlmF, payload: Vec<u8>, what: &dyn Fn() -> String) -> Result<u32> {
        let seq = self.next_seq();
        let msg: Nlmsghdr<u16, Buffer> = NlmsghdrBuilder::default()
            .nl_type(ty)
            .nl_flags(NlmF::REQUEST | flags)
            .nl_seq(seq)
            .nl_payload(NlPayload::Payload(Buffer::from(payload)))
            .build()
            .map_err(|e| Error::other(what(), e.to_string()))?;
        self.sock.send(&msg).map_err(|e| sock_err(what(), e))?;
        Ok(seq)
    }

    /// Sends a request and waits for its ACK; returns the reply payloads seen before the ACK
    /// (e.g. a targeted GET's answer).
    pub(crate) fn request(
        &mut self,
        ty: u16,
        mode: Mode,
        payload: Vec<u8>,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<Vec<u8>>> {
        let seq = self.send(ty, NlmF::ACK | mode.flags(), payload, what)?;
        let mut out = Vec::new();
        loop {
            let (iter, _) = self.sock.recv::<u16, Buffer>().map_err(|e| sock_err(what(), e))?;
            for msg in iter {
                let msg = msg.map_err(|e| sock_err(what(), e))?;
                if *msg.nl_seq() != seq {
                    continue; // stale answer to an earlier, abandoned request
                }
                match msg.nl_payload() {
                    NlPayload::Ack(_) => return Ok(out),
                    NlPayload::Err(e) => return Err(kernel_err(what(), *e.error(), e.ext_ack())),
                    NlPayload::Payload(p) => out.push(p.as_ref().to_vec()),
                    NlPayload::DumpExtAck(_) | NlPayload::Empty => {}
                }
            }
        }
    }

    /// Runs a dump until NLMSG_DONE, retrying when the kernel flags it as interrupted.
    pub(crate) fn dump(&mut self, ty: u16, payload: Vec<u8>, what: &dyn Fn() -> String) -> Result<Vec<Vec<u8>>> {
        for _ in 0..DUMP_RETRIES {
            let (out, intr) = self.dump_once(ty, payload.clone(), what)?;
            if !intr {
                return Ok(out);
            }
        }
        Err(Error::kernel(
            what(),
            nix::libc::EINTR,
            Some("dump interrupted repeatedly".into()),
        ))
    }

    fn dump_once(&mut self, ty: u16, payload: Vec<u8>, what: &dyn Fn() -> String) -> Result<(Vec<Vec<u8>>, bool)> {
        let seq = self.send(ty, NlmF::DUMP | NlmF::ACK, payload, what)?;
        let mut out = Vec::new();
        let mut intr = false;
        loop {
            let (iter, _) = self.sock.recv::<u16, Buffer>().map_err(|e| sock_err(what(), e))?;
            for msg in iter {
                let msg = msg.map_err(|e| sock_err(what(), e))?;
                if *msg.nl_seq() != seq {
                    continue;
                }
                if msg.nl_flags().contains(NlmF::DUMP_INTR) {
                    intr = true;
                }
                let ty = *msg.nl_type();
                match msg.nl_payload() {
                    NlPayload::DumpExtAck(e) => {
                        if *e.error() != 0 {
                            return Err(kernel_err(what(), *e.error(), e.ext_ack()));
                        }
                        return Ok((out, intr));
                    }
                    NlPayload::Err(e) => return Err(kernel_err(what(), *e.error(), e.ext_ack())),
                    NlPayload::Ack(_) => return Ok((out, intr)),
                    NlPayload::Empty if ty == NLMSG_DONE => return Ok((out, intr)),
                    NlPayload::Payload(_) if ty == NLMSG_DONE || ty == NLMSG_ERROR => return Ok((out, intr)),
                    NlPayload::Payload(p) => out.push(p.as_ref().to_vec()),
                    NlPayload::Empty => {}
                }
            }
        }
    }
}

fn sock_err(what: String, e: neli::err::SocketError) -> Error {
    match e {
        neli::err::SocketError::Io(io) => match io.raw_os_error() {
            Some(n) => Error::kernel(what, n, None),
            None => Error::other(what, io.to_string()),
        },
        other => Error::other(what, other.to_string()),
    }
}

fn kernel_err(what: String, code: i32, ext: &neli::types::GenlBuffer<neli::consts::nl::NlmsgerrAttr, Buffer>) -> Error {
    let msg = ext
        .iter()
        .find(|a| *a.nla_type().nla_type() == neli::consts::nl::NlmsgerrAttr::Msg)
        .map(|a| wire::get_str(a.nla_payload().as_ref()));
    Error::kernel(what, -code, msg)
}

/// Fuzzing entry (fuzz/): one dump payload as the kernel could send it, through the decoder
/// `selector` picks (links, addresses, routes, neighbours, rules, qdiscs, filters, VLANs).
/// Decoding untrusted bytes may fail; it must never panic.
#[doc(hidden)]
pub fn fuzz_decode(selector: u8, payload: &[u8]) {
    match selector % 8 {
        0 => {
            let _ = link::Link::parse(payload);
        }
        1 => {
            let _ = addr::Addr::parse(payload);
        }
        2 => {
            let _ = route::Route::parse(payload);
        }
        3 => {
            let _ = neigh::Neigh::parse(payload);
        }
        4 => {
            let _ = rule::Rule::parse(payload);
        }
        5 => {
            let _ = tc::Qdisc::parse(payload);
        }
        6 => {
            let _ = tc::parse_filter(payload);
        }
        _ => {
            let _ = bridge::parse_vlans(payload);
        }
    }
}

/// Every link, address, route, neighbour, FIB rule, qdisc, filter (of `filter_links`'
/// ingress) and bridge VLAN as this kernel dumps them, each with the [`fuzz_decode`]
/// selector of its decoder: the seeds of the `netlink` fuzz target (`fuzz/seeds/netlink`).
#[doc(hidden)]
pub fn fuzz_seeds(nl: &mut Netlink, filter_links: &[u32]) -> Result<Vec<(u8, Vec<u8>)>> {
    const AF_BRIDGE: u8 = 7;
    let tcmsg = |ifindex: u32, parent: u32| {
        let mut h = vec![0u8; 20];
        h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        h[12..16].copy_from_slice(&parent.to_ne_bytes());
        h
    };
    let mut vlans = wire::Payload::new(&link::ifinfomsg(AF_BRIDGE, 0, 0, 0));
    vlans.u32(link::IFLA_EXT_MASK, 2); // RTEXT_FILTER_BRVLAN
    let mut reqs: Vec<(u8, u16, Vec<u8>)> = vec![
        (0, link::RTM_GETLINK, link::ifinfomsg(0, 0, 0, 0).to_vec()),
        (1, 22, vec![0; 8]),
        (2, 26, vec![0; 12]),
        (3, 30, vec![0; 12]),
        (3, 30, [vec![AF_BRIDGE], vec![0; 11]].concat()),
        (4, 34, vec![0; 12]),
        (5, 38, tcmsg(0, 0)),
        (7, link::RTM_GETLINK, vlans.into_bytes()),
    ];
    for &i in filter_links {
        reqs.push((6, 46, tcmsg(i, 0xffff_fff1)));
        reqs.push((6, 46, tcmsg(i, 0xffff_0000)));
    }
    let mut out = Vec::new();
    for (sel, ty, req) in reqs {
        for m in nl.dump(ty, req, &|| format!("fuzz seed dump {ty}"))? {
            out.push((sel, m));
        }
    }
    Ok(out)
}
