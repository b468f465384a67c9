//! dhcp IPAM (plugins/ipam/dhcp): leases from a DHCP server, held and renewed by a node
//! daemon (`dhcp daemon`, see `daemon`) that runs the client inside each container's netns.
//!
//! The plugin and the daemon talk over a unix socket, one request per connection: a JSON
//! line each way. The reference speaks Go net/rpc there instead; each side recognises the
//! other and says so, since after a swap an old daemon may still be running.
//!
//! Beyond the reference: the result carries DNS (options 6, 15, 119, requested by default),
//! DEL succeeds when no daemon is running (nothing can be released then), and STATUS asks
//! the daemon (code 50 when none answers).

pub mod daemon;
pub mod lease;
pub mod packet;

use crate::cni::config::{self, Attachment};
use crate::cni::error::{code, CniError};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Dns, IpConfig, Route};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use anyhow::Result;
use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub static PLUGIN: Plugin = entry::<Dhcp>();

pub const DEFAULT_SOCKET: &str = "/run/cni/dhcp.sock";

/// Options every client asks for unless `skipDefault`: the reference's subnet mask and
/// router, plus what the result reports (DNS, domain, search list, classless routes).
const DEFAULT_REQUEST: &[u8] = &[
    packet::opt::SUBNET_MASK,
    packet::opt::ROUTER,
    packet::opt::DNS,
    packet::opt::DOMAIN_NAME,
    packet::opt::DOMAIN_SEARCH,
    packet::opt::CLASSLESS_ROUTES,
];

// ---- config -----------------------------------------------------------------

#[derive(Deserialize, GoKeys)]
struct NetIn {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ipam: Option<IpamIn>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

#[derive(Deserialize, Default, GoKeys)]
struct IpamIn {
    #[serde(rename = "daemonSocketPath", default)]
    daemon_socket_path: String,
    #[serde(default)]
    request: Vec<RequestIn>,
    #[serde(default)]
    provide: Vec<ProvideIn>,
    #[serde(default)]
    priority: Option<u32>,
}

#[derive(Deserialize, GoKeys)]
struct RequestIn {
    #[serde(default)]
    option: String,
    #[serde(rename = "skipDefault", default)]
    skip_default: bool,
}

#[derive(Deserialize, GoKeys)]
struct ProvideIn {
    #[serde(default)]
    option: String,
    #[serde(default)]
    value: String,
    #[serde(rename = "fromArg", default)]
    from_arg: String,
}

/// An option by the reference's names or by number.
pub fn option_code(name: &str) -> Result<u8, CniError> {
    let code = match name {
        "subnet-mask" => 1,
        "routers" => 3,
        "host-name" => 12,
        "vendor-class-identifier" => 60,
        "dhcp-client-identifier" => 61,
        "user-class" => 77,
        _ => match name.parse::<u8>() {
            Ok(n) if n != 0 && n != 255 => n,
            _ => return Err(CniError::invalid_config(format!("unknown DHCP option {name:?}"))),
        },
    };
    Ok(code)
}

struct Conf {
    version: String,
    name: String,
    socket: String,
    request: Vec<u8>,
    provide: Vec<(u8, String)>,
    priority: Option<u32>,
    valid: Option<Vec<Attachment>>,
}

fn load_conf(args: &CmdArgs) -> Result<Conf, CniError> {
    let n: NetIn = config::parse(&args.stdin)?;
    let ipam = n.ipam.unwrap_or_default();
    let socket = if ipam.daemon_socket_path.is_empty() {
        DEFAULT_SOCKET.to_string()
    } else {
        ipam.daemon_socket_path
    };
    let mut request = Vec::new();
    if !ipam.request.iter().any(|r| r.skip_default) {
        request.extend_from_slice(DEFAULT_REQUEST);
    }
    for r in &ipam.request {
        if r.option.is_empty() {
            continue;
        }
        let c = option_code(&r.option)?;
        if !request.contains(&c) {
            request.push(c);
        }
    }
    let cni_args = args.cni_args().unwrap_or_default();
    let mut provide = Vec::new();
    for p in &ipam.provide {
        let c = option_code(&p.option)?;
        let value = if p.from_arg.is_empty() {
            p.value.clone()
        } else {
            cni_args.get(&p.from_arg).unwrap_or_default().to_string()
        };
        if value.is_empty() {
            continue;
        }
        if value.len() > 255 {
            return Err(CniError::invalid_config(format!(
                "value of DHCP option {:?} is longer than 255 bytes",
                p.option
            )));
        }
        provide.push((c, value));
    }
    Ok(Conf {
        version: if n.cni_version.is_empty() {
            "0.1.0".into()
        } else {
            n.cni_version
        },
        name: n.name,
        socket,
        request,
        provide,
        priority: ipam.priority,
        valid: n.valid_attachments.or(n.attachments),
    })
}

// ---- the plugin <-> daemon protocol -------------------------------------------

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// allocate, release, check, status or gc.
    pub op: String,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub request: Vec<u8>,
    #[serde(default)]
    pub provide: Vec<(u8, String)>,
    /// gc: the attachments of `network` to keep.
    #[serde(default)]
    pub valid: Vec<Attachment>,
}

/// What the daemon knows of a lease, ready for a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// Destination and router; no router means on-link.
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    pub dns: Dns,
}

impl LeaseInfo {
    pub fn of(ack: &packet::Message) -> Option<LeaseInfo> {
        let mut search = ack.domain_search();
        search.dedup();
        Some(LeaseInfo {
            address: ack.address()?,
            gateway: ack.routers().first().copied(),
            routes: ack.routes(),
            dns: Dns {
                nameservers: ack.dns_servers().iter().map(ToString::to_string).collect(),
                domain: ack.domain_name().unwrap_or_default(),
                search,
                options: Vec::new(),
            },
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CniError>,
}

/// How long the plugin waits for an answer: the daemon gives up on an ADD after its own
/// `-timeout`, so this only guards against a hung daemon.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the daemon could not be asked.
enum CallError {
    /// Nothing listens: no daemon is running.
    NoDaemon(CniError),
    Other(CniError),
}

impl From<CallError> for CniError {
    fn from(e: CallError) -> CniError {
        match e {
            CallError::NoDaemon(e) | CallError::Other(e) => e,
        }
    }
}

fn call(socket: &str, req: &Request) -> Result<Reply, CallError> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        let text = crate::linux::error::io_errno_text(&e);
        let e2 = CniError::internal(format!(
            "cannot reach the DHCP daemon at {socket}: {text} (is `dhcp daemon` running?)"
        ));
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => CallError::NoDaemon(e2),
            _ => CallError::Other(e2),
        }
    })?;
    let io_err = |what: &str, e: std::io::Error| {
        CallError::Other(CniError::internal(format!(
            "DHCP daemon at {socket}: {what}: {}",
            crate::linux::error::io_errno_text(&e)
        )))
    };
    let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    let mut line = serde_json::to_vec(req).map_err(|e| CallError::Other(CniError::internal(e.to_string())))?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| io_err("send request", e))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| io_err("read reply", e))?;
    if buf.starts_with(b"HTTP/") {
        return Err(CallError::Other(CniError::internal(format!(
            "the socket {socket} answers in HTTP: it is the reference's Go net/rpc dhcp daemon (or another \
             program), whose protocol cni-multi's dhcp plugin does not speak; run `dhcp daemon` from cni-multi there"
        ))));
    }
    if buf.is_empty() {
        return Err(CallError::Other(CniError::internal(format!(
            "the DHCP daemon at {socket} closed the connection without an answer"
        ))));
    }
    serde_json::from_slice::<Reply>(&buf).map_err(|_| {
        CallError::Other(CniError::internal(format!(
            "the socket {socket} answered something that is not cni-multi's dhcp daemon protocol: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(80)])
        )))
    })
}

fn ask(socket: &str, req: &Request) -> Result<Reply, CniError> {
    let r = call(socket, req)?;
    match r.error {
        Some(e) => Err(e),
        None => Ok(r),
    }
}

/// CNI_NETNS as an absolute path (the daemon runs elsewhere).
fn absolute(p: &str) -> String {
    if p.starts_with('/') || p.is_empty() {
        return p.to_string();
    }
    std::env::current_dir()
        .map(|d| d.join(p).to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_string())
}

fn request(op: &str, args: &CmdArgs, c: &Conf) -> Request {
    Request {
        op: op.into(),
        container_id: args.container_id.clone(),
        netns: absolute(&args.netns),
        ifname: args.ifname.clone(),
        network: c.name.clone(),
        request: c.request.clone(),
        provide: c.provide.clone(),
        valid: Vec::new(),
    }
}

fn to_result(info: &LeaseInfo, c: &Conf) -> CniResult {
    let mut r = CniResult::new(&c.version);
    r.ips.push(IpConfig {
        interface: None,
        address: IpNet::V4(info.address),
        gateway: info.gateway.map(IpAddr::V4),
    });
    for (dst, gw) in &info.routes {
        let mut route = Route::new(IpNet::V4(*dst), gw.map(IpAddr::V4));
        route.priority = c.priority;
        if gw.is_none() {
            // On-link (RFC 3442 router 0.0.0.0): the reference marks it scope link.
            route.scope = Some(253);
        }
        r.routes.push(route);
    }
    r.dns = info.dns.clone();
    r
}

// ---- verbs ------------------------------------------------------------------

struct Dhcp;

impl CniPlugin for Dhcp {
    const NAME: &'static str = "dhcp";
    const KIND: Kind = Kind::Ipam;
    const SUMMARY: &'static str = "addresses from a DHCP server, leases kept by `dhcp daemon`";
    type Conf = Conf;
    type Lenient = Conf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        Ok(load_conf(args)?)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(load_conf(args)?)
    }

    fn add(c: Conf, args: &CmdArgs) -> Result<CniResult> {
        let reply = ask(&c.socket, &request("allocate", args, &c))?;
        let info = reply
            .lease
            .ok_or_else(|| CniError::internal(format!("the DHCP daemon at {} sent no lease", c.socket)))?;
        Ok(to_result(&info, &c))
    }

    fn del(c: Conf, args: &CmdArgs) -> Result<()> {
        match call(&c.socket, &request("release", args, &c)) {
            Ok(Reply { error: Some(e), .. }) => Err(e.into()),
            Ok(_) => Ok(()),
            // No daemon holds a lease, so nothing can be released; an ADD that never got one (its
            // rollback DEL) must not fail on that.
            Err(CallError::NoDaemon(_)) => Ok(()),
            Err(CallError::Other(e)) => Err(e.into()),
        }
    }

    fn check(c: Conf, args: &CmdArgs) -> Result<()> {
        let reply = ask(&c.socket, &request("check", args, &c))?;
        // The lease must still be the address the runtime was given.
        let prev: config::NetConf = config::parse(&args.stdin)?;
        if let (Some(prev), Some(info)) = (prev.prev_result()?, reply.lease) {
            let held = IpAddr::V4(info.address.addr());
            if !prev.ips.is_empty() && !prev.ips.iter().any(|ip| ip.address.addr() == held) {
                return Err(CniError::internal(format!(
                    "the DHCP lease of {}/{}/{} is {held}, not an address of prevResult",
                    args.container_id, c.name, args.ifname
                ))
                .into());
            }
        }
        Ok(())
    }

    fn status(args: &CmdArgs) -> Result<()> {
        let c = load_conf(args)?;
        match call(&c.socket, &request("status", args, &c)) {
            Ok(Reply { error: None, .. }) => Ok(()),
            Ok(Reply { error: Some(e), .. }) => Err(CniError::new(code::NOT_AVAILABLE, e.msg).into()),
            Err(e) => Err(CniError::new(code::NOT_AVAILABLE, CniError::from(e).msg).into()),
        }
    }

    fn gc(args: &CmdArgs) -> Result<()> {
        let c = load_conf(args)?;
        let mut req = request("gc", args, &c);
        req.valid = c.valid.clone().unwrap_or_default();
        match call(&c.socket, &req) {
            Ok(Reply { error: Some(e), .. }) => Err(e.into()),
            Ok(_) | Err(CallError::NoDaemon(_)) => Ok(()),
            Err(CallError::Other(e)) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(stdin: &str, cni_args: &str) -> CmdArgs {
        CmdArgs::example(stdin.as_bytes(), cni_args)
    }

    #[test]
    fn request_and_provide_options() {
        let c = load_conf(&args(
            r#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"dhcp","request":[{"option":"42"}],
               "provide":[{"option":"host-name","fromArg":"K8S_POD_NAME"},{"option":"user-class","value":"u"}]}}"#,
            "IgnoreUnknown=1;K8S_POD_NAME=web-1",
        ))
        .unwrap();
        assert_eq!(c.socket, DEFAULT_SOCKET);
        assert_eq!(c.request, [1, 3, 6, 15, 119, 121, 42]);
        assert_eq!(c.provide, [(12, "web-1".to_string()), (77, "u".to_string())]);
        let c = load_conf(&args(
            r#"{"name":"n","ipam":{"type":"dhcp","daemonSocketPath":"/tmp/s","request":[{"option":"routers","skipDefault":true}]}}"#,
            "",
        ))
        .unwrap();
        assert_eq!((c.socket.as_str(), c.request.as_slice()), ("/tmp/s", &[3u8][..]));
        let e = load_conf(&args(r#"{"name":"n","ipam":{"request":[{"option":"bogus"}]}}"#, ""))
            .err()
            .unwrap();
        assert_eq!((e.code, e.msg.as_str()), (7, "unknown DHCP option \"bogus\""));
    }

    #[test]
    fn result_routes_and_dns() {
        let info = LeaseInfo {
            address: "10.0.0.50/24".parse().unwrap(),
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            routes: vec![
                ("10.1.0.0/16".parse().unwrap(), None),
                ("0.0.0.0/0".parse().unwrap(), Some(Ipv4Addr::new(10, 0, 0, 1))),
            ],
            dns: Dns {
                nameservers: vec!["10.0.0.1".into()],
                ..Default::default()
            },
        };
        let c = load_conf(&args(r#"{"cniVersion":"1.0.0","name":"n","ipam":{"priority":5}}"#, "")).unwrap();
        let r = to_result(&info, &c);
        let v = r.to_value("1.0.0").unwrap();
        assert_eq!(v["ips"][0]["address"], "10.0.0.50/24");
        assert_eq!(v["ips"][0]["gateway"], "10.0.0.1");
        assert_eq!(v["routes"][0]["scope"], 253);
        assert_eq!(v["routes"][1]["gw"], "10.0.0.1");
        assert_eq!(v["routes"][1]["priority"], 5);
        assert_eq!(v["dns"]["nameservers"][0], "10.0.0.1");
    }

    #[test]
    fn no_daemon_is_named() {
        let c = load_conf(&args(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"daemonSocketPath":"/nonexistent/dhcp.sock"}}"#,
            "",
        ))
        .unwrap();
        let Err(CallError::NoDaemon(e)) = call(&c.socket, &request("status", &args("{}", ""), &c)) else {
            panic!("expected NoDaemon");
        };
        assert!(e.msg.contains("/nonexistent/dhcp.sock"), "{}", e.msg);
    }
}
