//! One DHCP lease as a state machine (RFC 2131 §4.4): selecting, requesting, bound,
//! renewing at T1, rebinding at T2, starting over at expiry or on a NAK. Pure: it is fed
//! packets and the time, and answers with packets to send, so the timers are unit-tested.

use super::packet::{self, opt, Message, MessageType};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// The reference's lease time when the server sends none.
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// The shortest wait between retransmissions while renewing or rebinding.
const MIN_RENEW_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Selecting,
    Requesting,
    Bound,
    Renewing,
    Rebinding,
}

/// The daemon's timing flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long an ADD waits for a lease (`-timeout`).
    pub timeout: Duration,
    /// Longest wait between two retransmissions (`-resendmax`).
    pub resend_max: Duration,
    /// How long a lease lost in the background keeps being sought before a pause (`-resendtimeout`).
    pub resend_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            timeout: Duration::from_secs(10),
            resend_max: Duration::from_secs(62),
            resend_timeout: Duration::from_secs(208),
        }
    }
}

/// What the client sends besides the defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOpts {
    /// Parameter request list (option 55).
    pub request: Vec<u8>,
    /// Options sent as given (host-name, user-class, ...).
    pub provide: Vec<(u8, Vec<u8>)>,
    /// Ask the server to broadcast its replies.
    pub broadcast: bool,
}

/// A packet to transmit: link-layer destination and the IPv4/UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub mac: [u8; 6],
    pub packet: Vec<u8>,
}

/// What happened after an event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub send: Vec<Send>,
    /// A lease was (re)acknowledged: the daemon saves state and answers waiting ADDs.
    pub bound: bool,
    /// That ACK extended a lease already held (renewing or rebinding).
    pub renewed: bool,
    /// The lease was lost (expired or refused): the address must no longer be used.
    pub lost: bool,
    /// The address of the lost lease.
    pub given_up: Option<Ipv4Net>,
    /// The acquisition an ADD waits for gave up, with the reason.
    pub failed: Option<String>,
}

/// The times of a bound lease, relative to when it was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub t1: Duration,
    pub t2: Duration,
    pub lease: Duration,
}

impl Times {
    /// T1 and T2 as the server sent them, else RFC 2131's 50 % and 87.5 %; kept in order.
    pub fn of(ack: &Message) -> Times {
        let lease = ack
            .lease_time()
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(DEFAULT_LEASE);
        let t2 = ack
            .rebinding_time()
            .map(|s| Duration::from_secs(u64::from(s)))
            .filter(|t| *t < lease)
            .unwrap_or(lease * 7 / 8);
        let t1 = ack
            .renewal_time()
            .map(|s| Duration::from_secs(u64::from(s)))
            .filter(|t| *t < t2)
            .unwrap_or(lease / 2)
            .min(t2);
        Times { t1, t2, lease }
    }
}

pub struct Lease {
    pub client_id: Vec<u8>,
    pub mac: [u8; 6],
    pub opts: ClientOpts,
    pub timing: Timing,
    pub state: State,
    xid: u32,
    /// Next retransmission or state change.
    pub deadline: Instant,
    attempt: u32,
    /// Deadline of the acquisition an ADD waits for (None: acquiring in the background).
    give_up: Option<Instant>,
    offer: Option<Message>,
    /// The last ACK, its sender's MAC and when it came.
    pub ack: Option<Message>,
    pub server_mac: [u8; 6],
    pub bound_at: Instant,
}

/// Delay before retransmission `attempt` (0-based) while acquiring: from 20 ms, doubling up
/// to `max`. A server on the local link answers within milliseconds, and the first DISCOVER
/// on a link that has just come up is often lost: the container end of a veth reports carrier
/// before the bridge has made the host end a forwarding port (both follow the same carrier
/// event, processed one after the other).
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    (Duration::from_millis(20) * (1u32 << attempt.min(20))).min(max)
}

pub fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS: enough for a transaction id.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
}

impl Lease {
    /// A new lease whose DISCOVER goes out at once; `for_add` bounds it by the ADD timeout.
    pub fn new(
        client_id: Vec<u8>,
        mac: [u8; 6],
        opts: ClientOpts,
        timing: Timing,
        now: Instant,
        for_add: bool,
    ) -> Lease {
        Lease {
            client_id,
            mac,
            opts,
            timing,
            state: State::Selecting,
            xid: random_u32(),
            deadline: now,
            attempt: 0,
            give_up: for_add.then(|| now + timing.timeout),
            offer: None,
            ack: None,
            server_mac: crate::linux::packet::BROADCAST,
            bound_at: now,
        }
    }

    #[allow(clippy::too_many_arguments)]
    /// A lease restored from saved state: bound at `bound_at`, with its timers due as the
    /// times say (a T1 already past renews at once).
    pub fn restored(
        client_id: Vec<u8>,
        mac: [u8; 6],
        opts: ClientOpts,
        timing: Timing,
        ack: Message,
        server_mac: [u8; 6],
        bound_at: Instant,
        now: Instant,
    ) -> Lease {
        let mut l = Lease::new(client_id, mac, opts, timing, now, false);
        l.ack = Some(ack);
        l.server_mac = server_mac;
        l.bound_at = bound_at;
        l.state = State::Bound;
        // A daemon that was down past T1 renews at once; the timer then also sees T2 or expiry.
        l.deadline = (bound_at + l.times().map(|t| t.t1).unwrap_or_default()).max(now);
        l
    }

    pub fn times(&self) -> Option<Times> {
        self.ack.as_ref().map(Times::of)
    }

    /// The leased address with its prefix.
    pub fn address(&self) -> Option<Ipv4Net> {
        self.ack.as_ref().and_then(Message::address)
    }

    /// Bound, renewing or rebinding: the address is ours to use.
    pub fn is_live(&self) -> bool {
        matches!(self.state, State::Bound | State::Renewing | State::Rebinding) && self.ack.is_some()
    }

    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.ack.as_ref().and_then(Message::server_id)
    }

    fn base(&self, kind: MessageType) -> Message {
        let mut m = Message::request(kind, self.xid, self.mac);
        m.broadcast = self.opts.broadcast;
        m.set(opt::CLIENT_ID, self.client_id.clone());
        if kind != MessageType::Release {
            m.set(opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec());
            if !self.opts.request.is_empty() {
                m.set(opt::PARAMS, self.opts.request.clone());
            }
            for (code, v) in &self.opts.provide {
                m.set(*code, v.clone());
            }
        }
        m
    }

    fn broadcast(&self, m: &Message) -> Send {
        Send {
            mac: crate::linux::packet::BROADCAST,
            packet: packet::frame_udp(
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                packet::CLIENT_PORT,
                packet::SERVER_PORT,
                &m.encode(),
            ),
        }
    }

    fn with_address(&self, m: &Message, dst: Ipv4Addr, mac: [u8; 6]) -> Send {
        Send {
            mac,
            packet: packet::frame_udp(m.ciaddr, dst, packet::CLIENT_PORT, packet::SERVER_PORT, &m.encode()),
        }
    }

    fn discover(&self) -> Send {
        self.broadcast(&self.base(MessageType::Discover))
    }

    fn select_request(&self) -> Option<Send> {
        let offer = self.offer.as_ref()?;
        let mut m = self.base(MessageType::Request);
        m.set(opt::REQUESTED_IP, offer.yiaddr.octets().to_vec());
        m.set(opt::SERVER_ID, offer.server_id()?.octets().to_vec());
        Some(self.broadcast(&m))
    }

    /// A renewing REQUEST goes to the server that granted the lease, a rebinding one to all.
    fn renew_request(&self) -> Option<Send> {
        let addr = self.address()?.addr();
        let mut m = self.base(MessageType::Request);
        m.ciaddr = addr;
        // A client with an address receives unicast replies itself.
        m.broadcast = false;
        Some(match self.state {
            // The server's MAC may be stale (a bridge's changes with its ports): retries go in
            // a broadcast frame, still to the server's address.
            State::Renewing if self.attempt == 0 => self.with_address(&m, self.server_id()?, self.server_mac),
            State::Renewing => self.with_address(&m, self.server_id()?, crate::linux::packet::BROADCAST),
            _ => self.with_address(&m, Ipv4Addr::BROADCAST, crate::linux::packet::BROADCAST),
        })
    }

    /// The DHCPRELEASE for the current lease, if there is one.
    pub fn release(&self) -> Option<Send> {
        if !self.is_live() {
            return None;
        }
        let server = self.server_id()?;
        let mut m = self.base(MessageType::Release);
        m.xid = random_u32();
        m.ciaddr = self.address()?.addr();
        m.broadcast = false;
        m.set(opt::SERVER_ID, server.octets().to_vec());
        Some(self.with_address(&m, server, self.server_mac))
    }

    /// A DHCPINFORM from the leased address, sent right after the RELEASE along the same path:
    /// its answer shows the RELEASE got through (it has none of its own). On a veth the packets
    /// wait in the peer's backlog, which deleting the link right after would flush. It goes to
    /// the Ethernet broadcast address, like the RELEASE's second copy (see the daemon).
    pub fn inform(&self, xid: u32, addr: Ipv4Addr, server: Ipv4Addr) -> Send {
        let mut m = Message::request(MessageType::Inform, xid, self.mac);
        m.ciaddr = addr;
        m.set(opt::CLIENT_ID, self.client_id.clone());
        self.with_address(&m, server, crate::linux::packet::BROADCAST)
    }

    /// Start over with a DISCOVER (new transaction).
    fn restart(&mut self, now: Instant, out: &mut Outcome) {
        self.state = State::Selecting;
        self.xid = random_u32();
        self.offer = None;
        self.attempt = 0;
        out.send.push(self.discover());
        self.deadline = now + backoff(0, self.timing.resend_max);
    }

    fn lose(&mut self, now: Instant, out: &mut Outcome) {
        out.given_up = self.address();
        self.ack = None;
        out.lost = true;
        self.restart(now, out);
        // Sought in the background; a lease that stays lost is retried with the longest backoff.
        self.give_up = None;
        self.bound_at = now;
    }

    /// A timer fired (the caller calls this once `now >= deadline`).
    pub fn timer(&mut self, now: Instant, out: &mut Outcome) {
        match self.state {
            State::Selecting | State::Requesting => {
                if let Some(g) = self.give_up {
                    if now >= g {
                        out.failed = Some(match self.state {
                            State::Selecting => format!("no DHCP offer within {:?}", self.timing.timeout),
                            _ => format!("no DHCP acknowledgement within {:?}", self.timing.timeout),
                        });
                        return;
                    }
                }
                let pkt = match self.state {
                    State::Selecting => Some(self.discover()),
                    _ => self.select_request(),
                };
                out.send.extend(pkt);
                // Background acquisition past resendtimeout keeps the longest interval.
                let lost_for = now.saturating_duration_since(self.bound_at);
                let delay = if self.give_up.is_none() && lost_for > self.timing.resend_timeout {
                    self.timing.resend_max
                } else {
                    backoff(self.attempt, self.timing.resend_max)
                };
                self.attempt += 1;
                self.deadline = now + delay;
                if let Some(g) = self.give_up {
                    self.deadline = self.deadline.min(g);
                }
            }
            State::Bound | State::Renewing | State::Rebinding => {
                let Some(t) = self.times() else {
                    return self.lose(now, out);
                };
                let (t2, end) = (self.bound_at + t.t2, self.bound_at + t.lease);
                if now >= end {
                    return self.lose(now, out);
                }
                if now >= t2 {
                    self.state = State::Rebinding;
                } else if self.state == State::Bound {
                    self.state = State::Renewing;
                    self.xid = random_u32();
                    self.attempt = 0;
                } else {
                    self.attempt += 1;
                }
                let limit = if self.state == State::Rebinding { end } else { t2 };
                out.send.extend(self.renew_request());
                // RFC 2131 §4.4.5: wait half the time left before the next step, at least a
                // little, never past it.
                let wait = (limit.saturating_duration_since(now) / 2)
                    .max(MIN_RENEW_RETRY)
                    .min(self.timing.resend_max);
                self.deadline = (now + wait).min(limit);
            }
        }
    }

    /// A packet arrived on the interface from `src_mac`.
    pub fn packet(&mut self, datagram: &[u8], src_mac: [u8; 6], now: Instant, out: &mut Outcome) {
        let Some((_, payload)) = packet::unframe_udp(datagram, packet::CLIENT_PORT) else {
            return;
        };
        let Ok(m) = Message::decode(payload) else {
            return;
        };
        if m.xid != self.xid || m.chaddr != self.mac {
            return;
        }
        match (self.state, m.message_type()) {
            (State::Selecting, Some(MessageType::Offer)) if m.server_id().is_some() && !m.yiaddr.is_unspecified() => {
                self.offer = Some(m);
                self.state = State::Requesting;
                self.attempt = 0;
                out.send.extend(self.select_request());
                self.deadline = now + backoff(0, self.timing.resend_max);
                if let Some(g) = self.give_up {
                    self.deadline = self.deadline.min(g);
                }
            }
            (State::Requesting | State::Renewing | State::Rebinding, Some(MessageType::Ack)) => {
                if m.address().is_none() {
                    return;
                }
                if self.state != State::Requesting && Some(m.yiaddr) != self.address().map(|a| a.addr()) {
                    // A server that moves a bound client to another address: start over cleanly.
                    return self.lose(now, out);
                }
                out.renewed = self.state != State::Requesting;
                self.ack = Some(m);
                self.server_mac = src_mac;
                self.bound_at = now;
                self.state = State::Bound;
                self.give_up = None;
                self.offer = None;
                self.deadline = now + self.times().map(|t| t.t1).unwrap_or_default();
                out.bound = true;
            }
            (State::Requesting, Some(MessageType::Nak)) => {
                // The offer was taken meanwhile: try again, still within the ADD's time.
                let g = self.give_up;
                self.restart(now, out);
                self.give_up = g;
            }
            (State::Renewing | State::Rebinding, Some(MessageType::Nak)) => self.lose(now, out),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const SMAC: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];

    fn reply(l: &Lease, kind: MessageType, lease_secs: Option<u32>) -> Vec<u8> {
        let mut m = Message::request(kind, l.xid, MAC);
        m.op = 2;
        m.yiaddr = Ipv4Addr::new(10, 0, 0, 50);
        m.set(opt::SERVER_ID, vec![10, 0, 0, 1]);
        m.set(opt::SUBNET_MASK, vec![255, 255, 255, 0]);
        if let Some(s) = lease_secs {
            m.set(opt::LEASE_TIME, s.to_be_bytes().to_vec());
        }
        packet::frame_udp(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            packet::SERVER_PORT,
            packet::CLIENT_PORT,
            &m.encode(),
        )
    }

    fn sent(s: &Send) -> Message {
        let (_, p) = packet::unframe_udp(&s.packet, packet::SERVER_PORT).unwrap();
        let mut b = p.to_vec();
        b[0] = 2; // decode wants a reply
        Message::decode(&b).unwrap()
    }

    fn bound(now: Instant, secs: u32) -> Lease {
        let mut l = Lease::new(vec![0, b'x'], MAC, ClientOpts::default(), Timing::default(), now, true);
        let mut o = Outcome::default();
        l.timer(now, &mut o);
        assert_eq!(sent(&o.send[0]).message_type(), Some(MessageType::Discover));
        let mut o = Outcome::default();
        l.packet(&reply(&l, MessageType::Offer, Some(secs)), SMAC, now, &mut o);
        let req = sent(&o.send[0]);
        assert_eq!(req.message_type(), Some(MessageType::Request));
        assert_eq!(req.get(opt::REQUESTED_IP), Some(&[10, 0, 0, 50][..]));
        assert_eq!(req.get(opt::SERVER_ID), Some(&[10, 0, 0, 1][..]));
        let mut o = Outcome::default();
        l.packet(&reply(&l, MessageType::Ack, Some(secs)), SMAC, now, &mut o);
        assert!(o.bound);
        l
    }

    #[test]
    fn times_defaults_and_server_values() {
        let mut m = Message::request(MessageType::Ack, 1, MAC);
        assert_eq!(Times::of(&m).lease, DEFAULT_LEASE);
        m.set(opt::LEASE_TIME, 120u32.to_be_bytes().to_vec());
        assert_eq!(
            Times::of(&m),
            Times {
                t1: Duration::from_secs(60),
                t2: Duration::from_secs(105),
                lease: Duration::from_secs(120)
            }
        );
        m.set(opt::RENEWAL_TIME, 30u32.to_be_bytes().to_vec());
        m.set(opt::REBINDING_TIME, 200u32.to_be_bytes().to_vec());
        let t = Times::of(&m);
        assert_eq!((t.t1.as_secs(), t.t2.as_secs()), (30, 105));
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let max = Duration::from_secs(62);
        let v: Vec<u64> = (0..10).map(|a| backoff(a, max).as_millis() as u64).collect();
        assert_eq!(v, [20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240]);
        assert_eq!(backoff(40, max), max);
    }

    #[test]
    fn acquire_then_renew_rebind_expire() {
        let t0 = Instant::now();
        let mut l = bound(t0, 120);
        assert!(l.is_live());
        assert_eq!(l.address().unwrap().to_string(), "10.0.0.50/24");
        assert_eq!(l.deadline, t0 + Duration::from_secs(60));
        // T1: unicast REQUEST with ciaddr to the server's MAC.
        let mut o = Outcome::default();
        l.timer(t0 + Duration::from_secs(60), &mut o);
        assert_eq!(l.state, State::Renewing);
        assert_eq!(o.send[0].mac, SMAC);
        let r = sent(&o.send[0]);
        assert_eq!(r.ciaddr, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(r.get(opt::SERVER_ID), None);
        assert_eq!(
            l.deadline,
            t0 + Duration::from_secs(60 + 22) + Duration::from_millis(500)
        );
        // T2: broadcast.
        let mut o = Outcome::default();
        l.timer(t0 + Duration::from_secs(105), &mut o);
        assert_eq!(l.state, State::Rebinding);
        assert_eq!(o.send[0].mac, [0xff; 6]);
        // An ACK renews.
        let mut o = Outcome::default();
        let t = t0 + Duration::from_secs(110);
        l.packet(&reply(&l, MessageType::Ack, Some(120)), SMAC, t, &mut o);
        assert!(o.bound && o.renewed);
        assert_eq!(l.state, State::Bound);
        assert_eq!(l.deadline, t + Duration::from_secs(60));
        // Expiry without answers: lost, DISCOVER again.
        let mut o = Outcome::default();
        l.timer(t + Duration::from_secs(120), &mut o);
        assert!(o.lost);
        assert_eq!(o.given_up, Some("10.0.0.50/24".parse().unwrap()));
        assert!(!l.is_live());
        assert_eq!(sent(&o.send[0]).message_type(), Some(MessageType::Discover));
    }

    #[test]
    fn nak_while_renewing_loses_the_lease() {
        let t0 = Instant::now();
        let mut l = bound(t0, 120);
        let mut o = Outcome::default();
        l.timer(t0 + Duration::from_secs(60), &mut o);
        let mut o = Outcome::default();
        l.packet(
            &reply(&l, MessageType::Nak, None),
            SMAC,
            t0 + Duration::from_secs(61),
            &mut o,
        );
        assert!(o.lost);
        assert_eq!(l.state, State::Selecting);
    }

    #[test]
    fn add_gives_up_at_the_timeout() {
        let t0 = Instant::now();
        let mut l = Lease::new(vec![0], MAC, ClientOpts::default(), Timing::default(), t0, true);
        let mut n = 0;
        loop {
            let mut o = Outcome::default();
            let at = l.deadline;
            l.timer(at, &mut o);
            if let Some(e) = o.failed {
                assert_eq!(e, "no DHCP offer within 10s");
                assert_eq!(at, t0 + Duration::from_secs(10));
                break;
            }
            n += 1;
        }
        // DISCOVERs at 0, 0.02, 0.06, 0.14, 0.3, 0.62, 1.26, 2.54 and 5.1 s
        assert_eq!(n, 9);
    }

    #[test]
    fn foreign_replies_are_ignored() {
        let t0 = Instant::now();
        let mut l = Lease::new(vec![0], MAC, ClientOpts::default(), Timing::default(), t0, true);
        let mut o = Outcome::default();
        l.timer(t0, &mut o);
        let mut pkt = reply(&l, MessageType::Offer, Some(120));
        // another transaction id
        pkt[28 + 4] ^= 0xff;
        let mut o = Outcome::default();
        l.packet(&pkt, SMAC, t0, &mut o);
        assert_eq!(l.state, State::Selecting);
        assert!(o.send.is_empty());
    }

    #[test]
    fn restored_lease_past_t1_renews_at_once() {
        let t0 = Instant::now();
        let l = bound(t0, 120);
        let ack = l.ack.clone().unwrap();
        let now = t0 + Duration::from_secs(70);
        let mut r = Lease::restored(
            vec![0],
            MAC,
            ClientOpts::default(),
            Timing::default(),
            ack,
            SMAC,
            t0,
            now,
        );
        assert!(r.is_live());
        assert_eq!(r.deadline, now);
        let mut o = Outcome::default();
        r.timer(now, &mut o);
        assert_eq!(r.state, State::Renewing);
        assert_eq!(o.send.len(), 1);
    }

    #[test]
    fn release_is_unicast_with_server_id() {
        let t0 = Instant::now();
        let l = bound(t0, 120);
        let s = l.release().unwrap();
        assert_eq!(s.mac, SMAC);
        let m = sent(&s);
        assert_eq!(m.message_type(), Some(MessageType::Release));
        assert_eq!(m.ciaddr, Ipv4Addr::new(10, 0, 0, 50));
        assert_eq!(m.get(opt::SERVER_ID), Some(&[10, 0, 0, 1][..]));
    }
}
