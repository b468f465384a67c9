//! ICMP echo from inside a network namespace, without a `ping` binary.

use super::{Error, NetNs, Result};
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ping `dst` from `ns`: an echo request every 200 ms until one is answered or `timeout`
/// passes (a fresh link may drop the first ones while neighbour discovery settles).
/// Returns the time until the first reply.
pub fn ping(ns: &NetNs, dst: IpAddr, timeout: Duration) -> Result<Duration> {
    let v6 = dst.is_ipv6();
    // The socket belongs to the namespace it is created in.
    let fd = {
        let _in = ns.enter()?;
        let (dom, proto) = if v6 {
            (AddressFamily::Inet6, SockProtocol::IcmpV6)
        } else {
            (AddressFamily::Inet, SockProtocol::Icmp)
        };
        nix::sys::socket::socket(dom, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto)
            .map_err(|e| Error::nix("open ICMP socket", e))?
    };
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&1u16.to_be_bytes());
    pkt.extend_from_slice(b"cni-multi ping");
    if !v6 {
        // The kernel fills in the ICMPv6 checksum; ICMPv4's is ours.
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let addr: nix::sys::socket::SockaddrStorage = std::net::SocketAddr::new(dst, 0).into();
    let start = Instant::now();
    let mut next_send = start;
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= next_send {
            // Sending can fail while there is no route yet; keep trying until the timeout.
            let _ = nix::sys::socket::sendto(fd.as_raw_fd(), &pkt, &addr, nix::sys::socket::MsgFlags::empty());
            next_send = now + Duration::from_millis(200);
        }
        let left = timeout.checked_sub(start.elapsed()).unwrap_or_default();
        if left.is_zero() {
            return Err(Error::other(format!("ping {dst}"), "no reply"));
        }
        let left = left
            .min(next_send.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let tv = nix::sys::time::TimeVal::new(left.as_secs() as i64, left.subsec_micros() as i64);
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
            .map_err(|e| Error::nix("set receive timeout", e))?;
        let (n, from) = match nix::sys::socket::recvfrom::<nix::sys::socket::SockaddrStorage>(fd.as_raw_fd(), &mut buf)
        {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::nix(format!("receive echo reply from {dst}"), e)),
        };
        // Raw ICMPv4 sockets deliver the IP header too; ICMPv6 ones do not.
        let icmp = if v6 {
            &buf[..n]
        } else {
            &buf[((buf[0] & 0x0f) as usize * 4).min(n)..n]
        };
        let from_ip = from.and_then(|f| {
            f.as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| f.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        });
        let is_reply = icmp.len() >= 8 && icmp[0] == if v6 { 129 } else { 0 } && icmp[4..6] == id.to_be_bytes();
        if is_reply && from_ip == Some(dst) {
            return Ok(start.elapsed());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc1071_checksum() {
        // An echo request with zero id/seq and no payload: 0x0800 -> checksum 0xf7ff.
        assert_eq!(super::checksum(&[8, 0, 0, 0, 0, 0, 0, 0]), 0xf7ff);
        let mut p = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c'];
        let c = super::checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(super::checksum(&p), 0, "a packet with its checksum sums to zero");
    }
}
