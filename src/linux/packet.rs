//! Link-layer (AF_PACKET, SOCK_DGRAM) sockets for IPv4 on one interface: they send and
//! receive before the interface has an address, which a UDP socket cannot.

use super::{Error, NetNs, Result};
use nix::libc;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

const ETH_P_IP: u16 = 0x0800;

/// The all-ones Ethernet address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// A non-blocking packet socket bound to one interface, receiving the unfragmented IPv4 UDP
/// datagrams to one port (a kernel filter drops the rest, so a busy interface costs nothing).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

fn sockaddr(ifindex: u32, mac: [u8; 6]) -> libc::sockaddr_ll {
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&mac);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_IP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    }
}

/// Classic BPF over the IPv4 header (SOCK_DGRAM sockets see no Ethernet header): `udp and
/// not fragment and dst port PORT`, the program tcpdump compiles for it.
fn udp_filter(port: u16) -> [libc::sock_filter; 9] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        op(0x30, 0, 0, 9),      // ldb [9]            protocol
        op(0x15, 0, 6, 17),     // jeq #17 (UDP)      else drop
        op(0x28, 0, 0, 6),      // ldh [6]            flags + fragment offset
        op(0x45, 4, 0, 0x1fff), // jset #0x1fff       a fragment: drop
        op(0xb1, 0, 0, 0),      // ldxb 4*([0]&0xf)   header length
        op(0x48, 0, 0, 2),      // ldh [x+2]          UDP destination port
        op(0x15, 0, 1, u32::from(port)),
        op(0x06, 0, 0, 0xffff), // accept
        op(0x06, 0, 0, 0),      // drop
    ]
}

fn attach_udp_filter(fd: &OwnedFd, port: u16) -> Result<()> {
    let prog = udp_filter(port);
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if rc < 0 {
        return Err(Error::io("attach packet filter", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl PacketSocket {
    /// Opens the socket inside `ns` (it stays bound to that namespace) on interface `ifindex`,
    /// receiving UDP datagrams to `udp_port`.
    pub fn open(ns: &NetNs, ifindex: u32, udp_port: u16) -> Result<PacketSocket> {
        let fd = {
            let _in = ns.enter()?;
            // Protocol 0 (None) receives nothing until bind() names the protocol and
            // interface, so no packet of another interface is queued in between.
            socket::socket(
                AddressFamily::Packet,
                SockType::Datagram,
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| Error::nix("open packet socket", e))?
        };
        attach_udp_filter(&fd, udp_port)?;
        let sa = sockaddr(ifindex, [0; 6]);
        // SAFETY: sa is a valid sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(Error::io(
                format!("bind packet socket to interface {ifindex}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends one IPv4 packet to `mac` (the kernel adds the Ethernet header).
    pub fn send(&self, mac: [u8; 6], packet: &[u8]) -> Result<()> {
        let sa = sockaddr(self.ifindex, mac);
        // SAFETY: buffer and address are valid for the sizes given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(Error::io(
                format!("send on interface {}", self.ifindex),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Receives one packet: its length and the sender's MAC, or None when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<(usize, [u8; 6])>> {
        // Written by the kernel. (Not nix's recvfrom: it takes only an address of exactly
        // sizeof(sockaddr_ll), and the kernel may report a shorter one, sll_addr cut to
        // sll_halen.)
        let mut sa = sockaddr(0, [0; 6]);
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: buffer and address are valid for the sizes given.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                &mut sa as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(Error::io(format!("receive on interface {}", self.ifindex), e)),
            };
        }
        // Our own transmissions are looped back to packet sockets; they are not replies.
        if sa.sll_pkttype == libc::PACKET_OUTGOING {
            return self.recv(buf);
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&sa.sll_addr[..6]);
        Ok(Some((n as usize, mac)))
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }
}

/// For poll(2): borrowed, so it stays open while polled.
impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
