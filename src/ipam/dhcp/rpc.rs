//! The plugin <-> daemon protocol: Go net/rpc, as the reference's plugin and daemon speak it,
//! so either of ours pairs with either of theirs. Pure: bytes in, bytes out.
//!
//! On the unix socket the client sends `CONNECT /_goRPC_ HTTP/1.0`, the server answers
//! `HTTP/1.0 200 Connected to Go RPC`, then one gob stream each way: per call a request
//! header (`rpc.Request{ServiceMethod, Seq}`) and the argument, and a response header
//! (`rpc.Response{ServiceMethod, Seq, Error}`) and the reply (an empty struct when Error is
//! set). The argument is the plugin's `skel.CmdArgs`, the config and CNI_ARGS included, so
//! the daemon reads the options itself; the reply is a `current.Result` without
//! cniVersion (the plugin's own stays), or an empty struct.
//!
//! Methods: `DHCP.Allocate` and `DHCP.Release` (the reference's; its CHECK calls Allocate),
//! and ours, which a reference daemon answers with "rpc: can't find method": `DHCP.Check`
//! (the live lease, never a new one), `DHCP.Status`, `DHCP.GC`.

use super::gob::{self, Decoder, Encoder, GobError, SliceType, StructType, Type, Value};
use crate::cni::result::{Dns, IpConfig, Route};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const CONNECT: &[u8] = b"CONNECT /_goRPC_ HTTP/1.0\n\n";
/// The status the Go client insists on, after "HTTP/1.0 ".
pub const CONNECTED_STATUS: &str = "200 Connected to Go RPC";
pub const CONNECTED: &[u8] = b"HTTP/1.0 200 Connected to Go RPC\n\n";

pub const ALLOCATE: &str = "DHCP.Allocate";
pub const RELEASE: &str = "DHCP.Release";
pub const CHECK: &str = "DHCP.Check";
pub const STATUS: &str = "DHCP.Status";
pub const GC: &str = "DHCP.GC";

// ---- the types on the wire, named as Go names them --------------------------------------

static REQUEST: StructType = StructType {
    name: "Request",
    fields: &[("ServiceMethod", Type::String), ("Seq", Type::Uint)],
};

static RESPONSE: StructType = StructType {
    name: "Response",
    fields: &[
        ("ServiceMethod", Type::String),
        ("Seq", Type::Uint),
        ("Error", Type::String),
    ],
};

/// skel.CmdArgs of containernetworking/cni v1.1 (Debian's 1.1.1); v1.3 adds NetnsOverride,
/// which a decoder that lacks it skips and one that has it leaves empty.
static CMD_ARGS: StructType = StructType {
    name: "CmdArgs",
    fields: &[
        ("ContainerID", Type::String),
        ("Netns", Type::String),
        ("IfName", Type::String),
        ("Args", Type::String),
        ("Path", Type::String),
        ("StdinData", Type::Bytes),
    ],
};

/// The reply of Release, and of every call that failed.
static EMPTY: StructType = StructType { name: "", fields: &[] };

static IPNET: StructType = StructType {
    name: "IPNet",
    fields: &[("IP", Type::Bytes), ("Mask", Type::Bytes)],
};

static STRINGS: SliceType = SliceType {
    name: "[]string",
    elem: Type::String,
};

static DNS: StructType = StructType {
    name: "DNS",
    fields: &[
        ("Nameservers", Type::Slice(&STRINGS)),
        ("Domain", Type::String),
        ("Search", Type::Slice(&STRINGS)),
        ("Options", Type::Slice(&STRINGS)),
    ],
};

// current.Result as containernetworking/cni v1.3 (upstream v1.9.1) defines it: a v1.1
// decoder skips the route and interface fields it lacks (Route.Scope among them).
static INTERFACE: StructType = StructType {
    name: "",
    fields: &[
        ("Name", Type::String),
        ("Mac", Type::String),
        ("Mtu", Type::Int),
        ("Sandbox", Type::String),
        ("SocketPath", Type::String),
        ("PciID", Type::String),
    ],
};
static INTERFACES: SliceType = SliceType {
    name: "[]*types100.Interface",
    elem: Type::Struct(&INTERFACE),
};
static IPCONFIG: StructType = StructType {
    name: "",
    fields: &[
        ("Interface", Type::Int),
        ("Address", Type::Struct(&IPNET)),
        ("Gateway", Type::Bytes),
    ],
};
static IPCONFIGS: SliceType = SliceType {
    name: "[]*types100.IPConfig",
    elem: Type::Struct(&IPCONFIG),
};
static ROUTE: StructType = StructType {
    name: "",
    fields: &[
        ("Dst", Type::Struct(&IPNET)),
        ("GW", Type::Bytes),
        ("MTU", Type::Int),
        ("AdvMSS", Type::Int),
        ("Priority", Type::Int),
        ("Table", Type::Int),
        ("Scope", Type::Int),
    ],
};
static ROUTES: SliceType = SliceType {
    name: "[]*types.Route",
    elem: Type::Struct(&ROUTE),
};
static RESULT: StructType = StructType {
    name: "Result",
    fields: &[
        ("CNIVersion", Type::String),
        ("Interfaces", Type::Slice(&INTERFACES)),
        ("IPs", Type::Slice(&IPCONFIGS)),
        ("Routes", Type::Slice(&ROUTES)),
        ("DNS", Type::Struct(&DNS)),
    ],
};

// ---- values ----------------------------------------------------------------------------

/// The argument of every call: the plugin's invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdArgs {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS as the runtime set it.
    pub args: String,
    pub path: String,
    /// The network config the plugin read.
    pub stdin: Vec<u8>,
}

impl CmdArgs {
    fn to_value(&self) -> Value {
        Value::Struct(vec![
            ("ContainerID".into(), Value::str(&self.container_id)),
            ("Netns".into(), Value::str(&self.netns)),
            ("IfName".into(), Value::str(&self.ifname)),
            ("Args".into(), Value::str(&self.args)),
            ("Path".into(), Value::str(&self.path)),
            ("StdinData".into(), Value::Bytes(self.stdin.clone())),
        ])
    }

    fn of(v: &Value) -> Result<CmdArgs, GobError> {
        if !matches!(v, Value::Struct(_)) {
            return Err(GobError("the argument is not a struct".into()));
        }
        Ok(CmdArgs {
            container_id: v.get_str("ContainerID")?,
            netns: v.get_str("Netns")?,
            ifname: v.get_str("IfName")?,
            args: v.get_str("Args")?,
            path: v.get_str("Path")?,
            stdin: v.get_bytes("StdinData")?,
        })
    }
}

/// The part of a CNI result a DHCP lease gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcResult {
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

/// A reply: a result (Allocate, Check), nothing (Release, Status, GC), or the call's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Result(RpcResult),
    Empty,
    Error(String),
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ipnet_value(n: &IpNet) -> Value {
    let mask = match n.netmask() {
        IpAddr::V4(m) => m.octets().to_vec(),
        IpAddr::V6(m) => m.octets().to_vec(),
    };
    Value::Struct(vec![
        ("IP".into(), Value::Bytes(ip_bytes(n.addr()))),
        ("Mask".into(), Value::Bytes(mask)),
    ])
}

/// A Go net.IP: 4 or 16 bytes (an IPv4 address is often in its 16-byte form).
fn ip_of(b: &[u8]) -> Result<Option<IpAddr>, GobError> {
    Ok(match b.len() {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let a = Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default());
            Some(match a.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(a),
            })
        }
        n => return Err(GobError(format!("an IP address of {n} bytes"))),
    })
}

/// A Go net.IPNet; as Go does, a 16-byte mask with an IPv4 address counts by its last 4 bytes.
fn ipnet_of(v: &Value) -> Result<IpNet, GobError> {
    let ip = ip_of(&v.get_bytes("IP")?)?.ok_or_else(|| GobError("a network without an address".into()))?;
    let mut mask = v.get_bytes("Mask")?;
    if ip.is_ipv4() && mask.len() == 16 {
        mask.drain(..12);
    }
    let bits = if ip.is_ipv4() { 4 } else { 16 };
    if mask.len() != bits {
        return Err(GobError(format!("a mask of {} bytes for {ip}", mask.len())));
    }
    let prefix = mask
        .iter()
        .try_fold((0u8, false), |(n, ended), &b| match (ended, b) {
            (false, 0xff) => Some((n + 8, false)),
            (false, b) if b.leading_ones() + b.trailing_zeros() == 8 => Some((n + b.leading_ones() as u8, true)),
            (true, 0) => Some((n, true)),
            _ => None,
        })
        .map(|(n, _)| n)
        .ok_or_else(|| GobError(format!("mask {mask:02x?} is not contiguous")))?;
    IpNet::new(ip, prefix).map_err(|e| GobError(e.to_string()))
}

fn int_field(v: &Value, name: &str) -> Result<Option<u32>, GobError> {
    match v.get_int(name)? {
        0 => Ok(None),
        n => u32::try_from(n)
            .map(Some)
            .map_err(|_| GobError(format!("field {name}: {n} out of range"))),
    }
}

impl RpcResult {
    fn to_value(&self) -> Value {
        let ips = self
            .ips
            .iter()
            .map(|ip| {
                let mut f = vec![("Address".to_string(), ipnet_value(&ip.address))];
                if let Some(i) = ip.interface {
                    f.push(("Interface".into(), Value::Int(i as i64)));
                }
                if let Some(g) = ip.gateway {
                    f.push(("Gateway".into(), Value::Bytes(ip_bytes(g))));
                }
                Value::Struct(f)
            })
            .collect();
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let mut f = vec![("Dst".to_string(), ipnet_value(&r.dst))];
                if let Some(g) = r.gw {
                    f.push(("GW".into(), Value::Bytes(ip_bytes(g))));
                }
                for (name, x) in [
                    ("MTU", r.mtu),
                    ("AdvMSS", r.advmss),
                    ("Priority", r.priority),
                    ("Table", r.table),
                    ("Scope", r.scope.map(u32::from)),
                ] {
                    if let Some(x) = x {
                        f.push((name.into(), Value::Int(x as i64)));
                    }
                }
                Value::Struct(f)
            })
            .collect();
        let strs = |l: &[String]| Value::List(l.iter().map(|s| Value::str(s)).collect());
        Value::Struct(vec![
            ("IPs".into(), Value::List(ips)),
            ("Routes".into(), Value::List(routes)),
            (
                "DNS".into(),
                Value::Struct(vec![
                    ("Nameservers".into(), strs(&self.dns.nameservers)),
                    ("Domain".into(), Value::str(&self.dns.domain)),
                    ("Search".into(), strs(&self.dns.search)),
                    ("Options".into(), strs(&self.dns.options)),
                ]),
            ),
        ])
    }

    fn of(v: &Value) -> Result<RpcResult, GobError> {
        let mut out = RpcResult::default();
        for ip in v.get_list("IPs")? {
            let interface = match ip.field("Interface") {
                None => None,
                Some(_) => Some(
                    usize::try_from(ip.get_int("Interface")?)
                        .map_err(|_| GobError("a negative interface index".into()))?,
                ),
            };
            out.ips.push(IpConfig {
                interface,
                address: ipnet_of(&ip.get_struct("Address")?)?,
                gateway: ip_of(&ip.get_bytes("Gateway")?)?,
            });
        }
        for r in v.get_list("Routes")? {
            let mut route = Route::new(ipnet_of(&r.get_struct("Dst")?)?, ip_of(&r.get_bytes("GW")?)?);
            route.mtu = int_field(r, "MTU")?;
            route.advmss = int_field(r, "AdvMSS")?;
            route.priority = int_field(r, "Priority")?;
            route.table = int_field(r, "Table")?;
            route.scope = match int_field(r, "Scope")? {
                None => None,
                Some(s) => Some(u8::try_from(s).map_err(|_| GobError(format!("route scope {s}")))?),
            };
            out.routes.push(route);
        }
        let dns = v.get_struct("DNS")?;
        out.dns = Dns {
            nameservers: dns.get_strings("Nameservers")?,
            domain: dns.get_str("Domain")?,
            search: dns.get_strings("Search")?,
            options: dns.get_strings("Options")?,
        };
        Ok(out)
    }
}

// ---- HTTP ------------------------------------------------------------------------------

/// The end of an HTTP head (request or status line and headers) in `buf`, if it is all there.
pub fn http_head_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first line of an HTTP head, without its line end.
pub fn first_line(head: &[u8]) -> String {
    let end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    String::from_utf8_lossy(&head[..end]).trim_end_matches('\r').to_string()
}

/// Whether a request line is the net/rpc client's CONNECT (any path, as Go's server serves
/// /_goRPC_ only but a client names it).
pub fn is_connect(line: &str) -> bool {
    let mut w = line.split(' ');
    w.next() == Some("CONNECT") && w.next().is_some() && w.next().is_some_and(|v| v.starts_with("HTTP/1."))
}

// ---- calls -----------------------------------------------------------------------------

/// The client's bytes after the HTTP exchange: header and argument of one call.
pub fn request(method: &str, seq: u64, args: &CmdArgs) -> Vec<u8> {
    let mut e = Encoder::new();
    let mut out = Vec::new();
    let header = Value::Struct(vec![
        ("ServiceMethod".into(), Value::str(method)),
        ("Seq".into(), Value::Uint(seq)),
    ]);
    // Both values match their types: encoding cannot fail.
    let _ = e.encode(&REQUEST, &header, &mut out);
    let _ = e.encode(&CMD_ARGS, &args.to_value(), &mut out);
    out
}

/// A call as the server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub seq: u64,
    pub args: CmdArgs,
}

/// The server side: the first call in `buf` (the bytes after the HTTP head), or None while
/// it is not complete.
pub fn read_call(buf: &[u8]) -> Result<Option<(Call, usize)>, GobError> {
    let mut d = Decoder::new();
    let Some((header, n)) = d.value(buf)? else {
        return Ok(None);
    };
    let Some((body, m)) = d.value(&buf[n..])? else {
        return Ok(None);
    };
    let call = Call {
        method: header.get_str("ServiceMethod")?,
        seq: header.get_uint("Seq")?,
        args: CmdArgs::of(&body)?,
    };
    Ok(Some((call, n + m)))
}

/// The server's bytes for the answer to a call.
pub fn response(method: &str, seq: u64, answer: &Answer) -> Vec<u8> {
    response_as(&RESULT, method, seq, answer)
}

fn response_as(result: &'static StructType, method: &str, seq: u64, answer: &Answer) -> Vec<u8> {
    let mut e = Encoder::new();
    let mut out = Vec::new();
    let mut header = vec![
        ("ServiceMethod".to_string(), Value::str(method)),
        ("Seq".into(), Value::Uint(seq)),
    ];
    if let Answer::Error(msg) = answer {
        header.push(("Error".into(), Value::str(msg)));
    }
    let _ = e.encode(&RESPONSE, &Value::Struct(header), &mut out);
    let _ = match answer {
        Answer::Result(r) => e.encode(result, &r.to_value(), &mut out),
        Answer::Empty | Answer::Error(_) => e.encode(&EMPTY, &Value::Struct(Vec::new()), &mut out),
    };
    out
}

/// The client side: the answer in `buf` (the bytes after the HTTP head) to a call that
/// expects a result or not; None while it is not complete.
pub fn read_answer(buf: &[u8], expect_result: bool) -> Result<Option<Answer>, GobError> {
    let mut d = Decoder::new();
    let Some((header, n)) = d.value(buf)? else {
        return Ok(None);
    };
    let Some((body, _)) = d.value(&buf[n..])? else {
        return Ok(None);
    };
    let err = header.get_str("Error")?;
    Ok(Some(if !err.is_empty() {
        Answer::Error(err)
    } else if expect_result {
        Answer::Result(RpcResult::of(&body)?)
    } else {
        Answer::Empty
    }))
}

/// Go's rpc server's answer to a method it does not have.
pub fn is_unknown_method(err: &str) -> bool {
    err.starts_with("rpc: can't find method ") || err.starts_with("rpc: can't find service ")
}

/// What Go's server says of a method it has not (net/rpc's readRequestHeader), so a client
/// tells it apart from the method's own errors.
pub fn unknown_method(method: &str) -> String {
    match method.rsplit_once('.') {
        None => format!("rpc: service/method request ill-formed: {method}"),
        Some(("DHCP", _)) => format!("rpc: can't find method {method}"),
        Some(_) => format!("rpc: can't find service {method}"),
    }
}

pub use gob::MAX_MESSAGE;

#[cfg(test)]
mod tests {
    use super::*;

    const GO_PLUGIN_ALLOCATE: &[u8] = include_bytes!("testdata/go_plugin_allocate.bin");
    const GO_PLUGIN_RELEASE: &[u8] = include_bytes!("testdata/go_plugin_release.bin");
    const GO_DAEMON_ALLOCATE: &[u8] = include_bytes!("testdata/go_daemon_allocate.bin");
    const GO_DAEMON_RELEASE: &[u8] = include_bytes!("testdata/go_daemon_release.bin");
    const GO_DAEMON_ERROR: &[u8] = include_bytes!("testdata/go_daemon_error.bin");
    const GO_DAEMON_UNKNOWN: &[u8] = include_bytes!("testdata/go_daemon_unknown_method.bin");

    fn captured_args() -> CmdArgs {
        CmdArgs {
            container_id: "c1".into(),
            netns: "/run/netns/cm-dhcapp-17573".into(),
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1".into(),
            path: "/usr/lib/cni".into(),
            stdin: br#"{"cniVersion":"1.0.0","name":"dh","type":"bridge","ipam":{"type":"dhcp","daemonSocketPath":"/tmp/dhcap/run/dhcp.sock"}}
"#
            .to_vec(),
        }
    }

    /// Debian's 1.1.1 plugin's calls (strace of /usr/lib/cni/dhcp) read, and ours are the
    /// same bytes.
    #[test]
    fn calls_as_the_reference_plugin_sends_them() {
        for (bytes, method) in [(GO_PLUGIN_ALLOCATE, ALLOCATE), (GO_PLUGIN_RELEASE, RELEASE)] {
            let (call, n) = read_call(bytes).unwrap().unwrap();
            assert_eq!(n, bytes.len());
            assert_eq!(
                call,
                Call {
                    method: method.into(),
                    seq: 0,
                    args: captured_args()
                }
            );
            assert_eq!(request(method, 0, &captured_args()), bytes);
            for cut in 0..bytes.len() {
                assert_eq!(read_call(&bytes[..cut]), Ok(None), "cut at {cut}");
            }
        }
    }

    fn lease_result() -> RpcResult {
        RpcResult {
            ips: vec![IpConfig {
                interface: None,
                address: "10.94.0.78/24".parse().unwrap(),
                gateway: Some("10.94.0.1".parse().unwrap()),
            }],
            routes: vec![Route::new(
                "0.0.0.0/0".parse().unwrap(),
                Some("10.94.0.1".parse().unwrap()),
            )],
            dns: Dns::default(),
        }
    }

    /// Debian's 1.1.1 daemon's answers read.
    #[test]
    fn answers_as_the_reference_daemon_sends_them() {
        assert_eq!(
            read_answer(GO_DAEMON_ALLOCATE, true),
            Ok(Some(Answer::Result(lease_result())))
        );
        assert_eq!(read_answer(GO_DAEMON_RELEASE, false), Ok(Some(Answer::Empty)));
        assert_eq!(
            read_answer(GO_DAEMON_ERROR, true),
            Ok(Some(Answer::Error("error looking up \"eth9\": Link not found".into())))
        );
        let Ok(Some(Answer::Error(e))) = read_answer(GO_DAEMON_UNKNOWN, false) else {
            panic!()
        };
        assert_eq!(e, "rpc: can't find method DHCP.Status");
        assert!(is_unknown_method(&e));
        assert_eq!(unknown_method("DHCP.Status"), e);
        for cut in 0..GO_DAEMON_ALLOCATE.len() {
            assert_eq!(read_answer(&GO_DAEMON_ALLOCATE[..cut], true), Ok(None), "cut at {cut}");
        }
    }

    // current.Result as containernetworking/cni v1.1 defines it (Debian's 1.1.1).
    static INTERFACE_1_1: StructType = StructType {
        name: "",
        fields: &[("Name", Type::String), ("Mac", Type::String), ("Sandbox", Type::String)],
    };
    static INTERFACES_1_1: SliceType = SliceType {
        name: "[]*types100.Interface",
        elem: Type::Struct(&INTERFACE_1_1),
    };
    static ROUTE_1_1: StructType = StructType {
        name: "",
        fields: &[("Dst", Type::Struct(&IPNET)), ("GW", Type::Bytes)],
    };
    static ROUTES_1_1: SliceType = SliceType {
        name: "[]*types.Route",
        elem: Type::Struct(&ROUTE_1_1),
    };
    static RESULT_1_1: StructType = StructType {
        name: "Result",
        fields: &[
            ("CNIVersion", Type::String),
            ("Interfaces", Type::Slice(&INTERFACES_1_1)),
            ("IPs", Type::Slice(&IPCONFIGS)),
            ("Routes", Type::Slice(&ROUTES_1_1)),
            ("DNS", Type::Struct(&DNS)),
        ],
    };

    /// With the reference's types, our daemon's answer is its bytes; with v1.9's (what it
    /// sends), the same answer reads back.
    #[test]
    fn our_answers_are_the_reference_daemons() {
        let ok = Answer::Result(lease_result());
        assert_eq!(response_as(&RESULT_1_1, ALLOCATE, 0, &ok), GO_DAEMON_ALLOCATE);
        assert_eq!(read_answer(&response(ALLOCATE, 0, &ok), true), Ok(Some(ok)));
        // The empty reply's type id differs (Go's ids are per process), the rest is the same.
        let err = Answer::Error("error looking up \"eth9\": Link not found".into());
        let ours = response(ALLOCATE, 0, &err);
        assert_eq!(ours[..120], GO_DAEMON_ERROR[..120]);
        assert_eq!(read_answer(&ours, true), Ok(Some(err)));
        let ours = response(RELEASE, 0, &Answer::Empty);
        assert_eq!(ours[..78], GO_DAEMON_RELEASE[..78]);
        assert_eq!(read_answer(&ours, false), Ok(Some(Answer::Empty)));
    }

    #[test]
    fn every_field_of_a_result_round_trips() {
        let mut r = lease_result();
        r.ips.push(IpConfig {
            interface: Some(2),
            address: "2001:db8::5/64".parse().unwrap(),
            gateway: None,
        });
        let mut on_link = Route::new("10.1.0.0/16".parse().unwrap(), None);
        on_link.scope = Some(253);
        on_link.priority = Some(5);
        on_link.mtu = Some(1400);
        on_link.advmss = Some(1360);
        on_link.table = Some(100);
        r.routes.push(on_link);
        r.dns = Dns {
            nameservers: vec!["10.94.0.53".into()],
            domain: "example.test".into(),
            search: vec!["a.example.test".into(), "b".into()],
            options: vec!["ndots:2".into()],
        };
        let a = Answer::Result(r);
        assert_eq!(read_answer(&response(CHECK, 7, &a), true), Ok(Some(a)));
    }

    #[test]
    fn go_addresses() {
        let v4 = |b: &[u8], m: &[u8]| {
            ipnet_of(&Value::Struct(vec![
                ("IP".into(), Value::Bytes(b.to_vec())),
                ("Mask".into(), Value::Bytes(m.to_vec())),
            ]))
        };
        let mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1];
        let mask16 = [0xff; 12]
            .iter()
            .chain(&[0xff, 0xff, 0xf0, 0])
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(v4(&mapped, &[255, 255, 0, 0]).unwrap().to_string(), "10.0.0.1/16");
        assert_eq!(v4(&mapped, &mask16).unwrap().to_string(), "10.0.0.1/20");
        assert!(v4(&[10, 0, 0, 1], &[255, 0, 255, 0]).is_err());
        assert!(v4(&[10, 0, 0], &[255, 0, 0, 0]).is_err());
        assert!(v4(&[], &[255, 0, 0, 0]).is_err());
    }

    /// The fuzz target's checks on every truncation and byte flip of the captures.
    #[test]
    fn mutated_captures_do_not_panic() {
        for c in [
            GO_PLUGIN_ALLOCATE,
            GO_PLUGIN_RELEASE,
            GO_DAEMON_ALLOCATE,
            GO_DAEMON_RELEASE,
            GO_DAEMON_ERROR,
            GO_DAEMON_UNKNOWN,
        ] {
            crate::fuzzing::dhcp_rpc(c);
            for i in 0..c.len() {
                crate::fuzzing::dhcp_rpc(&c[..i]);
                for x in [0x01, 0x80, 0xff] {
                    let mut m = c.to_vec();
                    m[i] ^= x;
                    crate::fuzzing::dhcp_rpc(&m);
                }
            }
        }
    }

    #[test]
    fn http_heads() {
        assert_eq!(http_head_end(CONNECT), Some(CONNECT.len()));
        assert_eq!(http_head_end(b"CONNECT /_goRPC_ HTTP/1.0\n"), None);
        assert_eq!(http_head_end(b"HTTP/1.0 200 x\r\n\r\nrest"), Some(18));
        assert!(is_connect(&first_line(CONNECT)));
        assert!(!is_connect("GET / HTTP/1.1"));
        assert_eq!(first_line(CONNECTED), format!("HTTP/1.0 {CONNECTED_STATUS}"));
    }
}
