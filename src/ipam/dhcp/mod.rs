//! dhcp IPAM (plugins/ipam/dhcp): leases from a DHCP server, held and renewed by a node
//! daemon (`dhcp daemon`, see `daemon`) that runs the client inside each container's netns.
//!
//! The plugin and the daemon talk the reference's protocol, Go net/rpc on a unix socket
//! (`rpc`, over `gob`), so our plugin works with a reference daemon and the reference's
//! plugin with ours. The plugin sends its invocation (config and CNI_ARGS included); the
//! daemon reads the options from it, as the reference's does.
//!
//! Beyond the reference: the result carries DNS (options 6, 15, 119, requested by default),
//! DEL succeeds when no daemon is running (nothing can be released then), CHECK does not
//! take a new lease for one that was lost, and STATUS asks the daemon (code 50 when none
//! answers). CHECK, STATUS and GC are methods a reference daemon lacks; against one, CHECK
//! asks for the lease as the reference's plugin does, STATUS and GC are satisfied by its
//! answer.

pub mod daemon;
pub mod gob;
pub mod lease;
pub mod packet;
pub mod rpc;

use super::NetIn;
use crate::cni::config::{self, Attachment};
use crate::cni::error::{code, CniError};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Dns, IpConfig, Route};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::pkg::caps::{self, Capability};
use anyhow::Result;
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
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

/// A network's dhcp settings, as the plugin and the daemon both read them from the config.
pub struct Conf {
    version: String,
    pub name: String,
    socket: String,
    /// The parameter request list (option 55).
    pub request: Vec<u8>,
    /// Options sent with every request, one per code.
    pub provide: Vec<(u8, String)>,
    pub priority: Option<u32>,
    pub valid: Option<Vec<Attachment>>,
}

/// CNI_ARGS as the reference's daemon reads them for `fromArg`: `;`-separated `K=V`, the
/// last of a key winning, nothing validated.
fn arg_map(cni_args: &str) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (k, v) in cni_args.split(';').filter_map(|p| p.split_once('=')) {
        match out.iter_mut().find(|(x, _)| *x == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    out
}

/// Reads the config (`stdin`) with CNI_ARGS: what the plugin checks before it calls the
/// daemon, and what the daemon reads from the call.
pub fn read_conf(stdin: &[u8], cni_args: &str) -> Result<Conf, CniError> {
    let mut n: NetIn<IpamIn> = config::parse(stdin)?;
    let valid = n.take_gc_keep();
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
    // As the reference: one value per option code, a later one replacing an earlier one;
    // within an entry `fromArg` replaces `value` when CNI_ARGS has the key (even empty),
    // so `value` is the fallback when the runtime does not send it.
    let args = arg_map(cni_args);
    let mut provide: Vec<(u8, String)> = Vec::new();
    for p in &ipam.provide {
        let c = option_code(&p.option)?;
        let from_arg = args.iter().find(|(k, _)| *k == p.from_arg).map(|(_, v)| *v);
        for (value, source) in [
            (Some(p.value.as_str()).filter(|v| !v.is_empty()), "value"),
            (from_arg, "fromArg"),
        ] {
            let Some(value) = value else { continue };
            if value.len() > 255 {
                return Err(CniError::invalid_config(format!(
                    "the {source} of DHCP option {:?} is longer than 255 bytes",
                    p.option
                )));
            }
            match provide.iter_mut().find(|(x, _)| *x == c) {
                Some(slot) => slot.1 = value.to_string(),
                None => provide.push((c, value.to_string())),
            }
        }
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
        priority: ipam.priority.filter(|&p| p != 0),
        valid,
    })
}

/// Only the network name of a config: what releasing a lease needs.
pub fn network_name(stdin: &[u8]) -> Result<String, CniError> {
    #[derive(Deserialize, GoKeys)]
    struct Named {
        #[serde(default)]
        name: String,
    }
    Ok(config::parse::<Named>(stdin)?.name)
}

fn load_conf(args: &CmdArgs) -> Result<Conf, CniError> {
    read_conf(&args.stdin, &args.args)
}

// ---- the lease as a result ----------------------------------------------------------

/// What the daemon knows of a lease, ready for a result.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// The reply to Allocate and Check: routes with the config's priority, on-link ones
    /// with scope link (as upstream v1.9).
    pub fn to_rpc(&self, priority: Option<u32>) -> rpc::RpcResult {
        let mut r = rpc::RpcResult {
            ips: vec![IpConfig {
                interface: None,
                address: IpNet::V4(self.address),
                gateway: self.gateway.map(IpAddr::V4),
            }],
            routes: Vec::new(),
            dns: self.dns.clone(),
        };
        for (dst, gw) in &self.routes {
            r.routes.push(Route::new(IpNet::V4(*dst), gw.map(IpAddr::V4)));
        }
        normalise_routes(&mut r.routes, priority);
        r
    }
}

/// A route whose gateway is 0.0.0.0 (RFC 3442's on-link router, as a reference daemon
/// sends it) is on-link: no gateway, scope link; every route gets the config's priority.
fn normalise_routes(routes: &mut [Route], priority: Option<u32>) {
    for r in routes {
        if r.gw.is_some_and(|g| g.is_unspecified()) {
            r.gw = None;
        }
        if r.gw.is_none() && r.scope.is_none() {
            r.scope = Some(253);
        }
        if priority.is_some() {
            r.priority = priority;
        }
    }
}

fn to_result(r: rpc::RpcResult, c: &Conf) -> CniResult {
    let mut out = CniResult::new(&c.version);
    out.ips = r.ips;
    out.routes = r.routes;
    normalise_routes(&mut out.routes, c.priority);
    out.dns = r.dns;
    out
}

// ---- calling the daemon --------------------------------------------------------------

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

/// CNI_NETNS as an absolute path (the daemon runs elsewhere).
fn absolute(p: &str) -> String {
    if p.starts_with('/') || p.is_empty() {
        return p.to_string();
    }
    std::env::current_dir()
        .map(|d| d.join(p).to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_string())
}

/// One net/rpc call on a connection of its own, as the reference's plugin makes it.
fn call(socket: &str, method: &str, args: &CmdArgs, expect_result: bool) -> Result<rpc::Answer, CallError> {
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
    let fail = |msg: String| CallError::Other(CniError::internal(format!("DHCP daemon at {socket}: {msg}")));
    let io_err = |what: &str, e: std::io::Error| fail(format!("{what}: {}", crate::linux::error::io_errno_text(&e)));
    let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
    let _ = s.set_write_timeout(Some(Duration::from_secs(10)));
    s.write_all(rpc::CONNECT).map_err(|e| io_err("send request", e))?;
    let mut buf = Vec::new();
    let mut head = None;
    let mut chunk = [0u8; 4096];
    loop {
        if head.is_none() {
            if let Some(end) = rpc::http_head_end(&buf) {
                let line = rpc::first_line(&buf[..end]);
                if line.strip_prefix("HTTP/1.0 ") != Some(rpc::CONNECTED_STATUS) {
                    return Err(fail(if line.contains("cni-multi dhcp daemon") {
                        "it is an older cni-multi daemon, which speaks JSON lines instead of the reference's Go \
                         net/rpc; restart `dhcp daemon` from this cni-multi"
                            .into()
                    } else {
                        format!("it is not a Go net/rpc dhcp daemon: it answered {line:?}")
                    }));
                }
                head = Some(end);
                let req = rpc::request(
                    method,
                    0,
                    &rpc::CmdArgs {
                        container_id: args.container_id.clone(),
                        netns: absolute(&args.netns),
                        ifname: args.ifname.clone(),
                        args: args.args.clone(),
                        path: args.path.clone(),
                        stdin: args.stdin.clone(),
                    },
                );
                s.write_all(&req).map_err(|e| io_err("send request", e))?;
            } else if buf.first().is_some_and(|&b| b == b'{') {
                return Err(fail(
                    "it answered in JSON: an older cni-multi daemon, which speaks JSON lines instead of the \
                     reference's Go net/rpc; restart `dhcp daemon` from this cni-multi"
                        .into(),
                ));
            }
        }
        if let Some(at) = head {
            // The server keeps the connection open for more calls: the answer ends where its
            // second gob value does.
            match rpc::read_answer(&buf[at..], expect_result) {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => {}
                Err(e) => return Err(fail(format!("malformed Go net/rpc answer to {method}: {e}"))),
            }
        }
        if buf.len() > rpc::MAX_MESSAGE as usize {
            return Err(fail("answer too long".into()));
        }
        let n = s.read(&mut chunk).map_err(|e| io_err("read reply", e))?;
        if n == 0 {
            return Err(fail(format!("closed the connection without an answer to {method}")));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A call whose error answer is the verb's error.
fn ask(c: &Conf, method: &str, args: &CmdArgs, expect_result: bool) -> Result<rpc::Answer, CniError> {
    match call(&c.socket, method, args, expect_result)? {
        rpc::Answer::Error(e) => Err(CniError::internal(e)),
        a => Ok(a),
    }
}

// ---- verbs ------------------------------------------------------------------

struct Dhcp;

impl CniPlugin for Dhcp {
    const NAME: &'static str = "dhcp";
    const KIND: Kind = Kind::Ipam;
    const SUMMARY: &'static str = "addresses from a DHCP server, leases kept by `dhcp daemon`";
    const CAPS: &'static [Capability] = caps::NONE;
    type Conf = Conf;
    type Lenient = Conf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        Ok(load_conf(args)?)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(load_conf(args)?)
    }

    fn add(c: Conf, args: &CmdArgs) -> Result<CniResult> {
        match ask(&c, rpc::ALLOCATE, args, true)? {
            rpc::Answer::Result(r) if !r.ips.is_empty() => Ok(to_result(r, &c)),
            _ => Err(CniError::internal(format!("the DHCP daemon at {} sent no lease", c.socket)).into()),
        }
    }

    fn del(c: Conf, args: &CmdArgs) -> Result<()> {
        match call(&c.socket, rpc::RELEASE, args, false) {
            Ok(rpc::Answer::Error(e)) => Err(CniError::internal(e).into()),
            Ok(_) => Ok(()),
            // No daemon holds a lease, so nothing can be released; an ADD that never got one (its
            // rollback DEL) must not fail on that.
            Err(CallError::NoDaemon(_)) => Ok(()),
            Err(CallError::Other(e)) => Err(e.into()),
        }
    }

    fn check(c: Conf, args: &CmdArgs) -> Result<()> {
        let held = match call(&c.socket, rpc::CHECK, args, true).map_err(CniError::from)? {
            // A reference daemon: ask for the lease as its plugin does.
            rpc::Answer::Error(e) if rpc::is_unknown_method(&e) => ask(&c, rpc::ALLOCATE, args, true)?,
            rpc::Answer::Error(e) => return Err(CniError::internal(e).into()),
            a => a,
        };
        // The lease must still be the address the runtime was given.
        let prev: config::NetConf = config::parse(&args.stdin)?;
        if let (Some(prev), rpc::Answer::Result(r)) = (prev.prev_result()?, held) {
            let Some(held) = r.ips.first().map(|ip| ip.address.addr()) else {
                return Ok(());
            };
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
        match call(&c.socket, rpc::STATUS, args, false) {
            Ok(rpc::Answer::Error(e)) if !rpc::is_unknown_method(&e) => {
                Err(CniError::new(code::NOT_AVAILABLE, e).into())
            }
            // Ours answers Status; a reference daemon that answers at all is up.
            Ok(_) => Ok(()),
            Err(e) => Err(CniError::new(code::NOT_AVAILABLE, CniError::from(e).msg).into()),
        }
    }

    fn gc(args: &CmdArgs) -> Result<()> {
        let c = load_conf(args)?;
        match call(&c.socket, rpc::GC, args, false) {
            Ok(rpc::Answer::Error(e)) if !rpc::is_unknown_method(&e) => Err(CniError::internal(e).into()),
            // A reference daemon has no GC: nothing to do there.
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

    /// `value` and `fromArg` in one entry: the argument when CNI_ARGS has it (even empty),
    /// else the value; one option per code, a later entry replacing an earlier one (the
    /// reference's prepareOptions, v1.1.1 and v1.9.1).
    #[test]
    fn provide_value_and_from_arg_as_the_reference() {
        let conf = r#"{"name":"n","ipam":{"provide":[
            {"option":"host-name","value":"fallback","fromArg":"K8S_POD_NAME"},
            {"option":"user-class","value":"first"},{"option":"77","value":"second"}]}}"#;
        let provide = |cni_args: &str| read_conf(conf.as_bytes(), cni_args).unwrap().provide;
        let p = |h: &str| vec![(12u8, h.to_string()), (77, "second".to_string())];
        assert_eq!(provide("K8S_POD_NAME=web-1"), p("web-1"));
        assert_eq!(provide("IgnoreUnknown=1"), p("fallback"));
        assert_eq!(provide(""), p("fallback"));
        assert_eq!(provide("K8S_POD_NAME="), p(""));
        assert_eq!(provide("K8S_POD_NAME=a;K8S_POD_NAME=b"), p("b"));
        let long = "x".repeat(256);
        let e = read_conf(conf.as_bytes(), &format!("K8S_POD_NAME={long}"))
            .err()
            .unwrap();
        assert_eq!(e.code, 7);
        assert!(e.msg.contains("fromArg of DHCP option \"host-name\""), "{}", e.msg);
        assert_eq!(arg_map("a=1;b;c=x=y;a=2"), [("a", "2"), ("c", "x=y")]);
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
        let r = to_result(info.to_rpc(c.priority), &c);
        let v = r.to_value("1.0.0").unwrap();
        assert_eq!(v["ips"][0]["address"], "10.0.0.50/24");
        assert_eq!(v["ips"][0]["gateway"], "10.0.0.1");
        assert_eq!(v["routes"][0]["scope"], 253);
        assert_eq!(v["routes"][1]["gw"], "10.0.0.1");
        assert_eq!(v["routes"][1]["priority"], 5);
        assert_eq!(v["dns"]["nameservers"][0], "10.0.0.1");
        // A reference daemon's on-link route (router 0.0.0.0, no scope) and no priority.
        let mut theirs = info.to_rpc(None);
        theirs.routes[0].gw = Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        theirs.routes[0].scope = None;
        let v = to_result(theirs, &c).to_value("1.0.0").unwrap();
        assert_eq!(
            v["routes"][0],
            serde_json::json!({"dst": "10.1.0.0/16", "scope": 253, "priority": 5})
        );
    }

    #[test]
    fn no_daemon_is_named() {
        let c = load_conf(&args(
            r#"{"cniVersion":"1.1.0","name":"n","ipam":{"daemonSocketPath":"/nonexistent/dhcp.sock"}}"#,
            "",
        ))
        .unwrap();
        let Err(CallError::NoDaemon(e)) = call(&c.socket, rpc::STATUS, &args("{}", ""), false) else {
            panic!("expected NoDaemon");
        };
        assert!(e.msg.contains("/nonexistent/dhcp.sock"), "{}", e.msg);
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(NetIn::<IpamIn>::shape()).unwrap();
        let c = read_conf(
            br#"{"CNIVersion":"1.0.0","NAME":"n","IPAM":{"Type":"dhcp","DaemonSocketPath":"/tmp/x.sock",
                 "Request":[{"Option":"42","SkipDefault":true}],"Provide":[{"OPTION":"host-name","Value":"v","FromArg":"K"}],
                 "Priority":3}}"#,
            "K=pod",
        )
        .unwrap();
        assert_eq!(
            (c.version.as_str(), c.name.as_str(), c.socket.as_str()),
            ("1.0.0", "n", "/tmp/x.sock")
        );
        assert_eq!(c.request, vec![42]);
        assert_eq!(c.provide, vec![(12, "pod".to_string())]);
        assert_eq!(c.priority, Some(3));
        assert_eq!(network_name(br#"{"Name":"n2"}"#).unwrap(), "n2");
    }
}
