//! The info structs of the matches legacy iptables uses where iptables-nft writes native
//! nftables expressions instead (so `nft::xt` has no encoder for them): the implicit protocol
//! match of `-p tcp|udp|sctp --dport`, and `-m mark`. Every other extension's layout is
//! `nft::xt`'s, shared by both.

use crate::linux::nft::xt::{Xt, XtKind};

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// `sizeof(struct xt_tcp)` (12) and `xt_udp` (9), XT_ALIGNed.
const TCPUDP_INFO_LEN: usize = 16;
/// `sizeof(struct xt_sctp_info)` (292), XT_ALIGNed.
const SCTP_INFO_LEN: usize = 296;
/// `XT_SCTP_DEST_PORTS`.
const SCTP_DEST_PORTS: u32 = 0x02;
const SCTP_FLAG_INFO: usize = 268;
const SCTP_FLAGS: usize = 284;

/// The match `-p PROTO --dport PORT` loads: `tcp`/`udp` (rev 0: source ports 0–65535,
/// destination PORT–PORT, host order) or `sctp` (destination PORT–PORT, flagged as the only
/// ports given; its four chunk-flag slots empty, chunk type 255, as libxt_sctp leaves them).
/// Any other protocol has no ports; its match is named after the number and never valid.
pub fn dport_match(proto: u8, port: u16) -> Xt {
    let ports = |info: &mut [u8]| {
        info[2..4].copy_from_slice(&u16::MAX.to_ne_bytes());
        info[4..6].copy_from_slice(&port.to_ne_bytes());
        info[6..8].copy_from_slice(&port.to_ne_bytes());
    };
    match proto {
        SCTP => {
            // struct xt_sctp_info begins with the destination ports, then the source ones.
            let mut info = vec![0u8; SCTP_INFO_LEN];
            info[0..2].copy_from_slice(&port.to_ne_bytes());
            info[2..4].copy_from_slice(&port.to_ne_bytes());
            for slot in 0..4 {
                info[SCTP_FLAG_INFO + 3 * slot] = 0xff;
            }
            info[SCTP_FLAGS..SCTP_FLAGS + 4].copy_from_slice(&SCTP_DEST_PORTS.to_ne_bytes());
            Xt::new(XtKind::Match, "sctp", 0, info)
        }
        _ => {
            let mut info = vec![0u8; TCPUDP_INFO_LEN];
            ports(&mut info);
            let name = match proto {
                TCP => "tcp".to_string(),
                UDP => "udp".to_string(),
                p => p.to_string(),
            };
            Xt::new(XtKind::Match, &name, 0, info)
        }
    }
}

/// `-m tcp|udp [[!] --sport LO[:HI]] [[!] --dport LO[:HI]]` (rev 0); an absent side is
/// 0–65535 uninverted, as iptables leaves it. `None` for another protocol.
pub fn ports_match(proto: u8, sport: (u16, u16), sport_inv: bool, dport: (u16, u16), dport_inv: bool) -> Option<Xt> {
    let (name, inv_at) = match proto {
        TCP => ("tcp", 11),
        UDP => ("udp", 8),
        _ => return None,
    };
    let mut info = vec![0u8; TCPUDP_INFO_LEN];
    for (at, v) in [(0, sport.0), (2, sport.1), (4, dport.0), (6, dport.1)] {
        info[at..at + 2].copy_from_slice(&v.to_ne_bytes());
    }
    // XT_TCP_INV_SRCPT / XT_UDP_INV_SRCPT = 1, …_DSTPT = 2.
    info[inv_at] = sport_inv as u8 | (dport_inv as u8) << 1;
    Some(Xt::new(XtKind::Match, name, 0, info))
}

/// The single destination port of a `tcp`/`udp`/`sctp` match made by [`dport_match`].
pub fn dport_of(m: &Xt) -> Option<u16> {
    let u = |at: usize| Some(u16::from_ne_bytes(m.info.get(at..at + 2)?.try_into().ok()?));
    let (lo, hi) = match m.name.as_str() {
        "tcp" | "udp" => (u(4)?, u(6)?),
        "sctp" => (u(0)?, u(2)?),
        _ => return None,
    };
    (m.kind == XtKind::Match && lo == hi).then_some(lo)
}

/// `-m mark [!] --mark VALUE/MASK` (rev 1, `struct xt_mark_mtinfo1`).
pub fn mark_match(value: u32, mask: u32, invert: bool) -> Xt {
    let mut info = vec![0u8; 16];
    info[..4].copy_from_slice(&value.to_ne_bytes());
    info[4..8].copy_from_slice(&mask.to_ne_bytes());
    info[8] = invert as u8;
    Xt::new(XtKind::Match, "mark", 1, info)
}

/// A NUL-terminated string field.
pub fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_matches() {
        let t = dport_match(TCP, 8080);
        assert_eq!((t.name.as_str(), t.rev, t.info.len()), ("tcp", 0, 16));
        assert_eq!(&t.info[..8], &[0, 0, 0xff, 0xff, 0x90, 0x1f, 0x90, 0x1f]);
        assert_eq!(dport_of(&t), Some(8080));
        assert_eq!(dport_match(UDP, 53).name, "udp");
        assert_eq!(ports_match(TCP, (0, u16::MAX), false, (8080, 8080), false), Some(t));
        let r = ports_match(UDP, (1000, 2000), false, (5, 5), true).unwrap();
        assert_eq!(&r.info[..9], &[0xe8, 0x03, 0xd0, 0x07, 5, 0, 5, 0, 2]);
        assert_eq!(ports_match(SCTP, (0, 0), false, (1, 1), false), None);
        let s = dport_match(SCTP, 9);
        assert_eq!((s.info.len(), dport_of(&s)), (296, Some(9)));
        assert_eq!(
            mark_match(0x2000, 0x2000, false).info[..9],
            [0, 0x20, 0, 0, 0, 0x20, 0, 0, 0]
        );
        assert_eq!(cstr(b"abc\0\0x"), "abc");
    }
}
