//! `dhcp daemon`: holds every attachment's lease. One thread, one poll loop over the unix
//! socket, the clients' connections, a signalfd and one packet socket per lease, made inside
//! the container's netns (a socket stays in the netns it was created in); every lease's
//! timers are deadlines the loop sleeps until.
//!
//! Clients speak Go net/rpc (`rpc`), as to the reference's daemon; each connection carries
//! one call, answered when its lease is settled.
//!
//! Leases are saved to a state file (temp file + fsync + rename) on every change, so a
//! restarted daemon goes on renewing them.

use super::lease::{ClientOpts, Lease, Outcome, Timing};
use super::{packet, rpc, LeaseInfo};
use crate::cni::config;
use crate::cni::error::CniError;
use crate::linux::netlink::link::OperState;
use crate::linux::packet::PacketSocket;
use crate::linux::{NetNs, Netlink, NsError};
use ipnet::IpNet;
use nix::libc;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---- flags ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Flags {
    /// As given; the daemon listens on `hostprefix` + this (the reference's daemon.go).
    pub socket_path: String,
    pub pidfile: String,
    pub hostprefix: String,
    pub broadcast: bool,
    pub timing: Timing,
    /// Where leases are kept, under `hostprefix` like the socket; default: the socket path
    /// with `.leases` appended.
    pub statefile: String,
}

impl Flags {
    /// The socket's path on this side of `-hostprefix` (a daemon in a container with the
    /// host's root mounted there).
    pub fn socket(&self) -> String {
        format!("{}{}", self.hostprefix, self.socket_path)
    }

    pub fn statefile(&self) -> String {
        format!("{}{}", self.hostprefix, self.statefile)
    }
}

/// A Go `time.Duration` string: "10s", "1m30s", "250ms", "1.5h", "0".
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration {s:?}");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += num * scale;
    }
    Ok(Duration::from_secs_f64(total))
}

/// Every flag, the reference's and -statefile (`explain dhcp` describes them in this order).
pub const FLAGS: &[&str] = &[
    "socketpath",
    "hostprefix",
    "pidfile",
    "broadcast",
    "timeout",
    "resendmax",
    "resendtimeout",
    "statefile",
];

/// The reference's flags, Go `flag` style: `-name value`, `-name=value`, `--name`.
pub fn parse_flags(args: &[String]) -> Result<Flags, String> {
    let mut f = Flags {
        socket_path: super::DEFAULT_SOCKET.into(),
        pidfile: String::new(),
        hostprefix: String::new(),
        broadcast: false,
        timing: Timing::default(),
        statefile: String::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            return Err(format!("unexpected argument {a:?}"));
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name == "broadcast" {
            f.broadcast = match inline.as_deref() {
                None | Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                Some(v) => return Err(format!("invalid boolean value {v:?} for -broadcast")),
            };
            continue;
        }
        if !FLAGS.contains(&name) {
            return Err(format!("flag provided but not defined: -{name}"));
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args.get(i).ok_or_else(|| format!("flag needs an argument: -{name}"))?;
                i += 1;
                v.clone()
            }
        };
        let dur = |v: &str| parse_go_duration(v).map_err(|e| format!("invalid value {v:?} for flag -{name}: {e}"));
        match name {
            "socketpath" => f.socket_path = value,
            "pidfile" => f.pidfile = value,
            "hostprefix" => f.hostprefix = value,
            "statefile" => f.statefile = value,
            "timeout" => f.timing.timeout = dur(&value)?,
            "resendmax" => f.timing.resend_max = dur(&value)?,
            _ => f.timing.resend_timeout = dur(&value)?,
        }
    }
    if !f.pidfile.is_empty() && !f.pidfile.starts_with('/') {
        return Err(format!("-pidfile must be an absolute path, got {:?}", f.pidfile));
    }
    if f.socket_path.is_empty() {
        return Err("-socketpath must not be empty".into());
    }
    if f.statefile.is_empty() {
        f.statefile = format!("{}.leases", f.socket_path);
    }
    Ok(f)
}

/// `dhcp daemon ARGS…`: runs until SIGTERM/SIGINT. Returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let flags = match parse_flags(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("dhcp daemon: {e}");
            return 2;
        }
    };
    match Daemon::start(flags).and_then(|mut d| d.run()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dhcp daemon: {e:#}");
            1
        }
    }
}

// ---- state file -------------------------------------------------------------

#[derive(Serialize, Deserialize, Default)]
struct StateFile {
    leases: Vec<Saved>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Saved {
    container_id: String,
    network: String,
    ifname: String,
    netns: String,
    mac: String,
    request: Vec<u8>,
    provide: Vec<(u8, String)>,
    /// The last ACK, hex; absent while a lost lease is sought again.
    #[serde(default)]
    ack: String,
    #[serde(default)]
    server_mac: String,
    /// When the ACK came, seconds since the epoch.
    #[serde(default)]
    bound_at: f64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn mac6(s: &str) -> Option<[u8; 6]> {
    unhex(s)?.try_into().ok()
}

/// Writes `data` to `path` so a crash leaves the old or the new file, never a torn one.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---- attachments --------------------------------------------------------------

/// Longest wait for the container's link to come up.
const LINK_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest wait for the server's answer that confirms a RELEASE went out.
const RELEASE_CONFIRM: Duration = Duration::from_millis(250);
/// A client that sends no complete request within this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 64 * 1024;

enum Phase {
    /// Polling the link until it has carrier: from 1 ms, doubling to 50 ms.
    WaitLink {
        nl: Netlink,
        until: Instant,
        delay: Duration,
        next: Instant,
    },
    Active {
        sock: PacketSocket,
        lease: Lease,
    },
    /// RELEASE sent; waiting (until `until`) for the answer to the INFORM that followed it,
    /// before DEL may delete the link. `waiters` are then the DELs.
    Releasing {
        sock: PacketSocket,
        xid: u32,
        until: Instant,
    },
}

struct Attachment {
    key: String,
    container_id: String,
    network: String,
    ifname: String,
    /// The netns path as the plugin sent it (without the host prefix).
    netns: String,
    ns: NetNs,
    ifindex: u32,
    mac: [u8; 6],
    opts: ClientOpts,
    request: Vec<u8>,
    provide: Vec<(u8, String)>,
    phase: Phase,
    /// ADDs waiting for the lease.
    waiters: Vec<Caller>,
    /// The daemon took the address of a lost lease off the interface.
    removed: bool,
}

impl Attachment {
    fn deadline(&self) -> Instant {
        match &self.phase {
            Phase::WaitLink { next, .. } => *next,
            Phase::Active { lease, .. } => lease.deadline,
            Phase::Releasing { until, .. } => *until,
        }
    }

    fn sock_fd(&self) -> Option<RawFd> {
        match &self.phase {
            Phase::Active { sock, .. } | Phase::Releasing { sock, .. } => Some(sock.as_fd().as_raw_fd()),
            Phase::WaitLink { .. } => None,
        }
    }

    fn lease(&self) -> Option<&Lease> {
        match &self.phase {
            Phase::Active { lease, .. } => Some(lease),
            _ => None,
        }
    }

    fn saved(&self) -> Saved {
        let lease = self.lease().filter(|l| l.is_live());
        Saved {
            container_id: self.container_id.clone(),
            network: self.network.clone(),
            ifname: self.ifname.clone(),
            netns: self.netns.clone(),
            mac: hex(&self.mac),
            request: self.request.clone(),
            provide: self.provide.clone(),
            ack: lease
                .and_then(|l| l.ack.as_ref())
                .map(|a| hex(&a.encode()))
                .unwrap_or_default(),
            server_mac: lease.map(|l| hex(&l.server_mac)).unwrap_or_default(),
            bound_at: lease
                .map(|l| unix_now() - Instant::now().saturating_duration_since(l.bound_at).as_secs_f64())
                .unwrap_or(0.0),
        }
    }
}

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    until: Instant,
    /// Where the gob stream starts, once the HTTP CONNECT has been answered.
    rpc_at: Option<usize>,
}

/// What a connection's bytes amount to so far.
enum Incoming {
    More,
    Call(rpc::Call),
    /// Not net/rpc: these bytes are the answer, then the connection is closed.
    Refuse(Vec<u8>),
    Drop(String),
}

/// A client waiting for the answer to its call.
struct Caller {
    stream: UnixStream,
    method: String,
    seq: u64,
    /// The routes' metric, from the caller's config.
    priority: Option<u32>,
}

fn write_all(stream: &mut UnixStream, b: &[u8]) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(b);
}

fn answer(mut c: Caller, a: &rpc::Answer) {
    let b = rpc::response(&c.method, c.seq, a);
    write_all(&mut c.stream, &b);
}

fn answer_ok(c: Caller) {
    answer(c, &rpc::Answer::Empty)
}

fn answer_err(c: Caller, e: CniError) {
    answer(c, &rpc::Answer::Error(e.msg))
}

fn answer_lease(c: Caller, info: &LeaseInfo) {
    let r = info.to_rpc(c.priority);
    answer(c, &rpc::Answer::Result(r))
}

fn err(msg: impl Into<String>) -> CniError {
    CniError::internal(msg)
}

struct Daemon {
    flags: Flags,
    listener: UnixListener,
    /// Socket activation: systemd owns the socket file.
    activated: bool,
    signals: nix::sys::signalfd::SignalFd,
    conns: Vec<Conn>,
    atts: Vec<Attachment>,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("dhcp daemon: {}", msg.as_ref());
}

/// The listening socket systemd passed (LISTEN_FDS=1), if any.
fn activation_socket() -> anyhow::Result<Option<UnixListener>> {
    let pid_ok = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let Some(n) = std::env::var("LISTEN_FDS").ok().filter(|_| pid_ok) else {
        return Ok(None);
    };
    if n != "1" {
        anyhow::bail!("socket activation: expected exactly one socket from systemd, got LISTEN_FDS={n}");
    }
    // SAFETY: fd 3 is the socket systemd passed us (LISTEN_FDS=1, LISTEN_PID is ours).
    let l = unsafe { UnixListener::from_raw_fd(3) };
    let _ = nix::fcntl::fcntl(3, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    Ok(Some(l))
}

fn bind_socket(path: &str) -> anyhow::Result<UnixListener> {
    if let Some(dir) = Path::new(path).parent() {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("create {}: {e}", dir.display()))?;
    }
    if Path::new(path).exists() {
        if UnixStream::connect(path).is_ok() {
            anyhow::bail!("another daemon already listens on {path}");
        }
        // A stale socket of a daemon that did not exit cleanly.
        let _ = std::fs::remove_file(path);
    }
    // Mode 0600 from the start: bind() creates the file with the umask applied.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let r = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    r.map_err(|e| anyhow::anyhow!("listen on {path}: {e}"))
}

impl Daemon {
    fn start(flags: Flags) -> anyhow::Result<Daemon> {
        use nix::sys::signal::{SigSet, Signal};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block()?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        let (listener, activated) = match activation_socket()? {
            Some(l) => (l, true),
            None => (bind_socket(&flags.socket())?, false),
        };
        listener.set_nonblocking(true)?;
        if !flags.pidfile.is_empty() {
            std::fs::write(&flags.pidfile, format!("{}\n", std::process::id()))
                .map_err(|e| anyhow::anyhow!("write pidfile {}: {e}", flags.pidfile))?;
        }
        let mut d = Daemon {
            flags,
            listener,
            activated,
            signals,
            conns: Vec::new(),
            atts: Vec::new(),
        };
        d.restore();
        log(format!(
            "listening on {}{}, {} lease(s) restored",
            d.flags.socket(),
            if d.activated { " (socket activation)" } else { "" },
            d.atts.len()
        ));
        Ok(d)
    }

    fn cleanup(&self) {
        if !self.activated {
            let _ = std::fs::remove_file(self.flags.socket());
        }
        if !self.flags.pidfile.is_empty() {
            let _ = std::fs::remove_file(&self.flags.pidfile);
        }
    }

    fn run(&mut self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            // fds: listener, signals, connections, then the packet sockets of active leases.
            let mut fds = vec![
                libc::pollfd {
                    fd: self.listener.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.signals.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            for c in &self.conns {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            for a in &self.atts {
                if let Some(fd) = a.sock_fd() {
                    fds.push(libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
            let now = Instant::now();
            let next = self
                .atts
                .iter()
                .map(Attachment::deadline)
                .chain(self.conns.iter().map(|c| c.until))
                .min();
            let timeout = match next {
                None => -1,
                Some(t) => {
                    let d = t.saturating_duration_since(now);
                    // Round up so a deadline is not polled for again just before it.
                    (d.as_micros().div_ceil(1000)).min(i32::MAX as u128) as i32
                }
            };
            // SAFETY: fds is a valid array of pollfd of the length given.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e.into());
            }
            if fds[1].revents != 0 {
                if let Ok(Some(s)) = self.signals.read_signal() {
                    log(format!("signal {}: exiting", s.ssi_signo));
                }
                self.cleanup();
                return Ok(());
            }
            // Packets first: a reply can settle a lease before its timer fires.
            let nconn = self.conns.len();
            let ready_socks: Vec<RawFd> = fds[2 + nconn..]
                .iter()
                .filter(|p| p.revents != 0)
                .map(|p| p.fd)
                .collect();
            for fd in ready_socks {
                // Looked up again each time: draining one can remove another attachment's slot.
                if let Some(i) = self.atts.iter().position(|a| a.sock_fd() == Some(fd)) {
                    self.drain(i, &mut buf);
                }
            }
            let ready_conns: Vec<RawFd> = fds[2..2 + nconn]
                .iter()
                .filter(|p| p.revents != 0)
                .map(|p| p.fd)
                .collect();
            self.read_conns(&ready_conns);
            if fds[0].revents != 0 {
                self.accept();
            }
            self.timers();
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    let _ = s.set_nonblocking(true);
                    self.conns.push(Conn {
                        stream: s,
                        buf: Vec::new(),
                        until: Instant::now() + REQUEST_TIMEOUT,
                        rpc_at: None,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log(format!("accept: {e}"));
                    return;
                }
            }
        }
    }

    fn read_conns(&mut self, ready: &[RawFd]) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.conns.len() {
            let c = &mut self.conns[i];
            let mut state = if now >= c.until {
                Incoming::Drop("no complete call within 5s".into())
            } else {
                Incoming::More
            };
            if ready.contains(&c.stream.as_raw_fd()) {
                let mut chunk = [0u8; 4096];
                loop {
                    match c.stream.read(&mut chunk) {
                        Ok(0) => {
                            state = Incoming::Drop(String::new());
                            break;
                        }
                        Ok(n) => {
                            c.buf.extend_from_slice(&chunk[..n]);
                            state = parse_conn(c);
                            if !matches!(state, Incoming::More) {
                                break;
                            }
                            if c.buf.len() > MAX_REQUEST {
                                state = Incoming::Drop("call too long".into());
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(_) => {
                            state = Incoming::Drop(String::new());
                            break;
                        }
                    }
                }
            }
            match state {
                Incoming::More => i += 1,
                Incoming::Call(call) => {
                    let c = self.conns.swap_remove(i);
                    self.handle(c.stream, call);
                }
                Incoming::Refuse(bytes) => {
                    let mut c = self.conns.swap_remove(i);
                    write_all(&mut c.stream, &bytes);
                }
                Incoming::Drop(why) => {
                    if !why.is_empty() {
                        log(format!("client dropped: {why}"));
                    }
                    self.conns.swap_remove(i);
                }
            }
        }
    }

    fn handle(&mut self, stream: UnixStream, call: rpc::Call) {
        let mut caller = Caller {
            stream,
            method: call.method.clone(),
            seq: call.seq,
            priority: None,
        };
        let args = call.args;
        match call.method.as_str() {
            rpc::STATUS => answer_ok(caller),
            rpc::ALLOCATE | rpc::CHECK => {
                let job = match Job::read(&args) {
                    Ok(j) => j,
                    Err(e) => return answer_err(caller, e),
                };
                caller.priority = job.priority;
                if call.method == rpc::ALLOCATE {
                    return self.allocate(job, caller);
                }
                match key_of(&job) {
                    Err(e) => answer_err(caller, e),
                    Ok(key) => match self.atts.iter().find(|a| a.key == key).and_then(Attachment::lease) {
                        Some(l) if l.is_live() => match l.ack.as_ref().and_then(LeaseInfo::of) {
                            Some(info) => answer_lease(caller, &info),
                            None => answer_err(caller, err(format!("the lease of {key} has no address"))),
                        },
                        _ => answer_err(caller, err(format!("the DHCP daemon holds no live lease for {key}"))),
                    },
                }
            }
            // As the reference: only the network name is read, so a DEL with a config that
            // no longer validates still releases.
            rpc::RELEASE => match super::network_name(&args.stdin).and_then(|network| {
                key_of(&Job {
                    network,
                    container_id: args.container_id.clone(),
                    ifname: args.ifname.clone(),
                    ..Default::default()
                })
            }) {
                Err(e) => answer_err(caller, e),
                Ok(key) => self.release(&key, Some(caller)),
            },
            rpc::GC => {
                let job = match Job::read(&args) {
                    Ok(j) => j,
                    Err(e) => return answer_err(caller, e),
                };
                let stale: Vec<String> = self
                    .atts
                    .iter()
                    .filter(|a| a.network == job.network)
                    .filter(|a| {
                        !job.valid
                            .iter()
                            .any(|v| v.container_id == a.container_id && v.ifname == a.ifname)
                    })
                    .map(|a| a.key.clone())
                    .collect();
                for k in stale {
                    log(format!("{k}: not a valid attachment, releasing"));
                    self.release(&k, None);
                }
                answer_ok(caller);
            }
            m => {
                let e = rpc::unknown_method(m);
                answer(caller, &rpc::Answer::Error(e))
            }
        }
    }

    fn allocate(&mut self, job: Job, caller: Caller) {
        let key = match validate(&job) {
            Ok(k) => k,
            Err(e) => return answer_err(caller, e),
        };
        if let Some(a) = self.atts.iter_mut().find(|a| a.key == key) {
            if let Phase::Releasing { .. } = a.phase {
                return answer_err(caller, err(format!("the lease for {key} is being released, try again")));
            }
            // A second ADD for the same attachment shares its lease (the reference does too).
            match a
                .lease()
                .filter(|l| l.is_live())
                .and_then(|l| l.ack.as_ref())
                .and_then(LeaseInfo::of)
            {
                Some(info) => answer_lease(caller, &info),
                None => a.waiters.push(caller),
            }
            return;
        }
        match self.attach(&job, key, None) {
            Ok(mut a) => {
                a.waiters.push(caller);
                self.atts.push(a);
                // Its first step (link check, DISCOVER) runs in this iteration's timers.
            }
            Err(e) => answer_err(caller, e),
        }
    }

    /// Opens the attachment's netns and link, and sets the link up. `saved` restores a lease.
    fn attach(&self, req: &Job, key: String, saved: Option<&Saved>) -> Result<Attachment, CniError> {
        let path = format!("{}{}", self.flags.hostprefix, req.netns);
        let ns = NetNs::open(&path).map_err(|e| match e {
            NsError::NotExist(_) => err(format!("netns {path:?} does not exist")),
            NsError::NotNetns(_) => err(format!("{path:?} is not a network namespace")),
            NsError::Other(e) => err(format!("open netns {path:?}: {e}")),
        })?;
        let mut nl = Netlink::in_netns(&ns).map_err(|e| err(e.to_string()))?;
        let link = nl
            .link_by_name(&req.ifname)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err(format!("interface {:?} not found in netns {path:?}", req.ifname)))?;
        let mac = link
            .mac
            .ok_or_else(|| err(format!("interface {:?} has no MAC address", req.ifname)))?;
        if let Some(s) = saved {
            if mac6(&s.mac) != Some(mac) {
                return Err(err(format!(
                    "interface {:?} has another MAC than the saved lease",
                    req.ifname
                )));
            }
        }
        if !link.up {
            nl.set_up(link.index)
                .map_err(|e| err(format!("set {:?} up: {e}", req.ifname)))?;
        }
        let now = Instant::now();
        Ok(Attachment {
            key,
            container_id: req.container_id.clone(),
            network: req.network.clone(),
            ifname: req.ifname.clone(),
            netns: req.netns.clone(),
            ns,
            ifindex: link.index,
            mac,
            opts: ClientOpts {
                request: req.request.clone(),
                provide: req.provide.iter().map(|(c, v)| (*c, v.as_bytes().to_vec())).collect(),
                broadcast: self.flags.broadcast,
            },
            request: req.request.clone(),
            provide: req.provide.clone(),
            phase: Phase::WaitLink {
                nl,
                until: now + LINK_WAIT_MAX.min(self.flags.timing.timeout.max(Duration::from_secs(1))),
                delay: Duration::from_millis(1),
                next: now,
            },
            waiters: Vec::new(),
            removed: false,
        })
    }

    /// Sends a DHCPRELEASE (while the interface still exists) and forgets the attachment;
    /// `waiter` (a DEL) is answered once the release is known to have left.
    fn release(&mut self, key: &str, waiter: Option<Caller>) {
        let Some(i) = self.atts.iter().position(|a| a.key == key) else {
            if let Some(w) = waiter {
                answer_ok(w);
            }
            return;
        };
        if let Phase::Releasing { .. } = self.atts[i].phase {
            self.atts[i].waiters.extend(waiter);
            return;
        }
        let mut a = self.atts.swap_remove(i);
        for w in a.waiters.drain(..) {
            answer_err(w, err(format!("the lease for {key} was released while being acquired")));
        }
        let mut confirm = None;
        if let Phase::Active { sock, lease } = a.phase {
            let addr = lease.address();
            if let (Some(rel), Some(addr), Some(server)) = (lease.release(), addr, lease.server_id()) {
                // The server's MAC is the one its last ACK came from, which can be stale: a
                // bridge without a fixed MAC takes its lowest port's, and ports come and go.
                // A copy to the Ethernet broadcast address reaches it regardless; Linux and
                // most stacks accept a unicast IP datagram in a broadcast frame.
                let copy = (rel.mac != crate::linux::packet::BROADCAST)
                    .then(|| sock.send(crate::linux::packet::BROADCAST, &rel.packet));
                match sock.send(rel.mac, &rel.packet).or_else(|e| copy.unwrap_or(Err(e))) {
                    Ok(()) => {
                        log(format!("{key}: released {addr}"));
                        let xid = super::lease::random_u32();
                        let inf = lease.inform(xid, addr.addr(), server);
                        if sock.send(inf.mac, &inf.packet).is_ok() {
                            confirm = Some((sock, xid));
                        }
                    }
                    Err(e) => log(format!("{key}: send DHCPRELEASE: {e}")),
                }
            }
            if let Some((sock, xid)) = confirm {
                a.phase = Phase::Releasing {
                    sock,
                    xid,
                    until: Instant::now() + RELEASE_CONFIRM,
                };
                a.waiters.extend(waiter);
                self.atts.push(a);
                self.save();
                return;
            }
        }
        if let Some(w) = waiter {
            answer_ok(w);
        }
        self.save();
    }

    /// The end of a release: the DELs waiting for it are answered.
    fn released(&mut self, i: usize) {
        let a = self.atts.swap_remove(i);
        for w in a.waiters {
            answer_ok(w);
        }
    }

    fn drain(&mut self, i: usize, buf: &mut [u8]) {
        let now = Instant::now();
        let mut out = Outcome::default();
        if let Phase::Releasing { sock, xid, .. } = &self.atts[i].phase {
            let mut confirmed = false;
            while let Ok(Some((n, _))) = sock.recv(buf) {
                confirmed |= packet::unframe_udp(&buf[..n], packet::CLIENT_PORT)
                    .and_then(|(_, p)| packet::Message::decode(p).ok())
                    .is_some_and(|m| m.xid == *xid);
            }
            if confirmed {
                self.released(i);
            }
            return;
        }
        {
            let a = &mut self.atts[i];
            let Phase::Active { sock, lease } = &mut a.phase else {
                return;
            };
            loop {
                match sock.recv(buf) {
                    Ok(Some((n, mac))) => lease.packet(&buf[..n], mac, now, &mut out),
                    Ok(None) => break,
                    Err(e) => {
                        log(format!("{}: {e}", a.key));
                        break;
                    }
                }
            }
        }
        self.apply(i, out);
    }

    /// Runs every due timer. Attachments may be removed, so indexes are re-checked.
    fn timers(&mut self) {
        let now = Instant::now();
        // Slow clients.
        self.conns.retain(|c| c.until > now);
        let mut i = 0;
        while i < self.atts.len() {
            if self.atts[i].deadline() > now {
                i += 1;
                continue;
            }
            let before = self.atts.len();
            self.step(i, now);
            if self.atts.len() == before {
                i += 1;
            }
        }
    }

    fn step(&mut self, i: usize, now: Instant) {
        let a = &mut self.atts[i];
        match &mut a.phase {
            Phase::WaitLink { nl, until, delay, next } => {
                let link = match nl.link_by_index(a.ifindex) {
                    Ok(Some(l)) => l,
                    Ok(None) => {
                        let msg = format!("interface {:?} disappeared", a.ifname);
                        return self.fail(i, msg);
                    }
                    Err(e) => return self.fail(i, e.to_string()),
                };
                let ready =
                    link.oper_state == OperState::Up || (link.oper_state == OperState::Unknown && link.lower_up);
                if !ready {
                    if now >= *until {
                        let msg = format!("interface {:?} did not come up (no carrier)", a.ifname);
                        return self.fail(i, msg);
                    }
                    *next = now + *delay;
                    *delay = (*delay * 2).min(Duration::from_millis(50));
                    return;
                }
                let sock = match PacketSocket::open(&a.ns, a.ifindex, packet::CLIENT_PORT) {
                    Ok(s) => s,
                    Err(e) => {
                        let msg = format!("interface {:?}: {e}", a.ifname);
                        return self.fail(i, msg);
                    }
                };
                let cid = packet::client_id(&a.container_id, &a.network, &a.ifname);
                let lease = Lease::new(
                    cid,
                    a.mac,
                    a.opts.clone(),
                    self.flags.timing,
                    now,
                    !a.waiters.is_empty(),
                );
                a.phase = Phase::Active { sock, lease };
                self.step(i, now);
            }
            Phase::Active { lease, .. } => {
                let mut out = Outcome::default();
                lease.timer(now, &mut out);
                self.apply(i, out);
            }
            // The server did not answer the INFORM: the release went out as far as we can tell.
            Phase::Releasing { .. } => self.released(i),
        }
    }

    fn fail(&mut self, i: usize, why: String) {
        let a = self.atts.swap_remove(i);
        let msg = format!("{}: {why}", a.key);
        log(&msg);
        for w in a.waiters {
            answer_err(w, err(format!("DHCP on {:?} (netns {}): {why}", a.ifname, a.netns)));
        }
        self.save();
    }

    fn apply(&mut self, i: usize, out: Outcome) {
        if let Some(why) = out.failed {
            return self.fail(i, why);
        }
        let a = &mut self.atts[i];
        let Phase::Active { sock, lease } = &mut a.phase else {
            return;
        };
        for s in &out.send {
            if let Err(e) = sock.send(s.mac, &s.packet) {
                log(format!("{}: {e}", a.key));
            }
        }
        if out.lost {
            log(format!("{}: lease lost, looking for a new one", a.key));
            // RFC 2131 §4.4.5: the address must no longer be used.
            if let Some(addr) = out.given_up {
                match Netlink::in_netns(&a.ns).and_then(|mut nl| nl.del_addr(a.ifindex, IpNet::V4(addr))) {
                    Ok(()) => {
                        log(format!("{}: removed {addr} from {:?}", a.key, a.ifname));
                        a.removed = true;
                    }
                    Err(e) => log(format!("{}: remove {addr} from {:?}: {e}", a.key, a.ifname)),
                }
            }
        }
        if out.bound && a.removed && a.waiters.is_empty() {
            // A lease found again after a loss: put its address and routes back.
            if let Some(info) = lease.ack.as_ref().and_then(LeaseInfo::of) {
                match configure(&a.ns, a.ifindex, &info) {
                    Ok(()) => {
                        log(format!("{}: configured {} on {:?}", a.key, info.address, a.ifname));
                        a.removed = false;
                    }
                    Err(e) => log(format!("{}: configure {}: {e}", a.key, info.address)),
                }
            }
        }
        if out.bound {
            let info = lease.ack.as_ref().and_then(LeaseInfo::of);
            let secs = lease.times().map(|t| t.lease.as_secs()).unwrap_or(0);
            log(format!(
                "{}: {} {} from {} for {secs}s",
                a.key,
                if out.renewed { "renewed" } else { "bound" },
                lease.address().map(|x| x.to_string()).unwrap_or_default(),
                lease.server_id().map(|x| x.to_string()).unwrap_or_default()
            ));
            for w in a.waiters.drain(..) {
                match &info {
                    Some(info) => answer_lease(w, info),
                    None => answer_err(w, err("the server's ACK has no usable address")),
                }
            }
        }
        if out.bound || out.lost {
            self.save();
        }
    }

    fn save(&self) {
        let st = StateFile {
            leases: self
                .atts
                .iter()
                .filter(|a| a.lease().is_some())
                .map(Attachment::saved)
                .collect(),
        };
        let data = serde_json::to_vec_pretty(&st).unwrap_or_default();
        let path = self.flags.statefile();
        if let Err(e) = write_atomic(Path::new(&path), &data) {
            log(format!("save leases to {path}: {e}"));
        }
    }

    /// Takes up the leases a previous daemon saved; those whose netns or link is gone are dropped.
    fn restore(&mut self) {
        let path = PathBuf::from(self.flags.statefile());
        let Ok(data) = std::fs::read(&path) else {
            return;
        };
        let st: StateFile = match serde_json::from_slice(&data) {
            Ok(s) => s,
            Err(e) => {
                log(format!("ignoring unreadable state file {}: {e}", path.display()));
                return;
            }
        };
        let now = Instant::now();
        for s in st.leases {
            let req = Job {
                container_id: s.container_id.clone(),
                netns: s.netns.clone(),
                ifname: s.ifname.clone(),
                network: s.network.clone(),
                request: s.request.clone(),
                provide: s.provide.clone(),
                ..Default::default()
            };
            let key = match validate(&req) {
                Ok(k) => k,
                Err(_) => continue,
            };
            let mut a = match self.attach(&req, key.clone(), Some(&s)) {
                Ok(a) => a,
                Err(e) => {
                    log(format!("{key}: not restored: {}", e.msg));
                    continue;
                }
            };
            let ack = unhex(&s.ack).and_then(|b| packet::Message::decode(&b).ok());
            if let Some(ack) = ack {
                let sock = match PacketSocket::open(&a.ns, a.ifindex, packet::CLIENT_PORT) {
                    Ok(s) => s,
                    Err(e) => {
                        log(format!("{key}: not restored: {e}"));
                        continue;
                    }
                };
                let age = Duration::from_secs_f64((unix_now() - s.bound_at).max(0.0));
                let bound_at = now.checked_sub(age).unwrap_or(now);
                let cid = packet::client_id(&a.container_id, &a.network, &a.ifname);
                let smac = mac6(&s.server_mac).unwrap_or(crate::linux::packet::BROADCAST);
                let lease = Lease::restored(cid, a.mac, a.opts.clone(), self.flags.timing, ack, smac, bound_at, now);
                a.phase = Phase::Active { sock, lease };
            }
            log(format!("{key}: restored"));
            self.atts.push(a);
        }
    }
}

/// The address and routes of `info` on the link, as the interface plugin set them at ADD.
fn configure(ns: &NetNs, ifindex: u32, info: &LeaseInfo) -> crate::linux::Result<()> {
    use crate::linux::netlink::route::Route;
    let mut nl = Netlink::in_netns(ns)?;
    match nl.add_addr(ifindex, IpNet::V4(info.address), true) {
        Err(e) if e.is_exists() => {}
        r => r?,
    }
    for (dst, gw) in &info.routes {
        let r = Route::new(IpNet::V4(*dst)).oif(ifindex);
        let r = match gw {
            Some(g) => r.gw(std::net::IpAddr::V4(*g)),
            None => r.scope(253),
        };
        nl.replace_route(&r)?;
    }
    Ok(())
}

/// One call's attachment and the options its config asks for.
#[derive(Debug, Clone, Default)]
struct Job {
    container_id: String,
    netns: String,
    ifname: String,
    network: String,
    request: Vec<u8>,
    provide: Vec<(u8, String)>,
    priority: Option<u32>,
    /// gc: the attachments of `network` to keep.
    valid: Vec<config::Attachment>,
}

impl Job {
    fn read(args: &rpc::CmdArgs) -> Result<Job, CniError> {
        let c = super::read_conf(&args.stdin, &args.args)?;
        Ok(Job {
            container_id: args.container_id.clone(),
            netns: args.netns.clone(),
            ifname: args.ifname.clone(),
            network: c.name,
            request: c.request,
            provide: c.provide,
            priority: c.priority,
            valid: c.valid.unwrap_or_default(),
        })
    }
}

/// The state of a connection after new bytes: the HTTP CONNECT is answered as Go's rpc
/// server does, then the call is read.
fn parse_conn(c: &mut Conn) -> Incoming {
    let at = match c.rpc_at {
        Some(at) => at,
        None => {
            if c.buf.first() == Some(&b'{') {
                // An older cni-multi plugin (JSON lines): an error it prints.
                if !c.buf.contains(&b'\n') {
                    return Incoming::More;
                }
                let msg = "this dhcp daemon speaks Go net/rpc, as the reference's does; the dhcp plugin that called \
                           is an older cni-multi: install the cni-multi of this daemon";
                let mut line =
                    serde_json::to_vec(&serde_json::json!({"error": {"code": 999, "msg": msg}})).unwrap_or_default();
                line.push(b'\n');
                return Incoming::Refuse(line);
            }
            let Some(end) = rpc::http_head_end(&c.buf) else {
                return Incoming::More;
            };
            if !rpc::is_connect(&rpc::first_line(&c.buf[..end])) {
                return Incoming::Refuse(
                    b"HTTP/1.0 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n405 must CONNECT\n"
                        .to_vec(),
                );
            }
            write_all(&mut c.stream, rpc::CONNECTED);
            let _ = c.stream.set_nonblocking(true);
            c.rpc_at = Some(end);
            end
        }
    };
    match rpc::read_call(&c.buf[at..]) {
        Ok(None) => Incoming::More,
        Ok(Some((call, _))) => Incoming::Call(call),
        Err(e) => Incoming::Drop(format!("malformed Go net/rpc call: {e}")),
    }
}

/// Checks the names of an allocation request (its netns too) and returns the attachment key.
fn validate(req: &Job) -> Result<String, CniError> {
    if !req.netns.starts_with('/') {
        return Err(err(format!("netns path {:?} is not absolute", req.netns)));
    }
    key_of(req)
}

/// The attachment key (the reference's client id text) after checking the names; release
/// and check need no netns (a runtime's second DEL comes without one).
fn key_of(req: &Job) -> Result<String, CniError> {
    config::validate_container_id(&req.container_id)?;
    config::validate_ifname(&req.ifname)?;
    config::validate_network_name(&req.network)?;
    let id = packet::client_id(&req.container_id, &req.network, &req.ifname);
    Ok(String::from_utf8_lossy(&id[1..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_go_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("5x").is_err());
    }

    #[test]
    fn flags_like_go() {
        let f = parse_flags(&[]).unwrap();
        assert_eq!(f.socket_path, "/run/cni/dhcp.sock");
        assert_eq!(f.statefile, "/run/cni/dhcp.sock.leases");
        assert_eq!(f.timing, Timing::default());
        let f = parse_flags(&s(&[
            "-socketpath",
            "/tmp/x.sock",
            "--broadcast",
            "-timeout=3s",
            "-resendmax",
            "5s",
            "-pidfile",
            "/tmp/p",
            "-hostprefix=/host",
        ]))
        .unwrap();
        assert_eq!(f.socket_path, "/tmp/x.sock");
        assert!(f.broadcast);
        assert_eq!(f.timing.timeout, Duration::from_secs(3));
        assert_eq!(f.timing.resend_max, Duration::from_secs(5));
        assert_eq!((f.pidfile.as_str(), f.hostprefix.as_str()), ("/tmp/p", "/host"));
        // The socket and the state file are under the host prefix (upstream's daemon.go
        // listens on hostPrefix + socketPath); the pidfile is not.
        assert_eq!(f.socket(), "/host/tmp/x.sock");
        assert_eq!(f.statefile(), "/host/tmp/x.sock.leases");
        assert_eq!(
            parse_flags(&s(&["-nope"])).unwrap_err(),
            "flag provided but not defined: -nope"
        );
        assert!(parse_flags(&s(&["-pidfile", "rel"])).is_err());
        assert!(parse_flags(&s(&["-timeout"])).is_err());
    }

    #[test]
    fn requests_are_validated() {
        let mut r = Job {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            network: "dh".into(),
            ..Default::default()
        };
        assert_eq!(validate(&r).unwrap(), "c1/dh/eth0");
        r.ifname = "a/b".into();
        assert!(validate(&r).is_err());
        r.ifname = "eth0".into();
        r.netns = "relative".into();
        assert!(validate(&r).is_err());
        r.netns = String::new();
        assert_eq!(key_of(&r).unwrap(), "c1/dh/eth0");
        r.netns = "/x".into();
        r.container_id = "../x".into();
        assert!(validate(&r).is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex(&[0, 1, 0xab])).unwrap(), [0, 1, 0xab]);
        assert_eq!(mac6("020000000001"), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(unhex("abc"), None);
    }
}
