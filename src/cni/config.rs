//! The network configuration a plugin receives: the keys every plugin shares,
//! runtimeConfig's well-known capabilities, `args`, and name validation.

use super::error::{code, CniError};
use super::gokeys::{self, GoKeys, Node, Shape};
use super::result::{CniResult, Dns};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The keys every plugin config has. Plugins flatten this into their own struct.
#[derive(Debug, Clone, Default, Deserialize, Serialize, GoKeys)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default)]
    pub ipam: Option<IpamRef>,
    #[serde(default)]
    pub dns: Option<DnsConf>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: Option<Args>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    pub attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// The version used for output: absent means 0.1.0.
    pub fn version(&self) -> &str {
        if self.cni_version.is_empty() {
            "0.1.0"
        } else {
            &self.cni_version
        }
    }

    /// prevResult parsed in the config's version (libcni semantics).
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match &self.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::parse(v, self.version())
                .map(Some)
                .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("could not parse prevResult: {}", e.msg))),
        }
    }

    /// The IPAM plugin type, if one is configured (an empty type means "no IPAM").
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|i| i.plugin_type.as_str())
            .filter(|t| !t.is_empty())
    }

    /// GC's list of attachments to keep: `cni.dev/valid-attachments`, or the older key.
    pub fn gc_valid_attachments(&self) -> Option<&[Attachment]> {
        self.valid_attachments.as_deref().or(self.attachments.as_deref())
    }

    /// The config's `dns` as a result's DNS (empty when absent).
    pub fn dns(&self) -> Dns {
        self.dns.as_ref().map(DnsConf::to_dns).unwrap_or_default()
    }

    /// Whether the config's `dns` replaces the IPAM's in bridge's and ptp's result: when any
    /// of its fields is given, even as an empty list (the reference's dnsConfSet: a non-nil
    /// slice or a non-empty domain).
    pub fn dns_set(&self) -> bool {
        self.dns.as_ref().is_some_and(|d| {
            d.nameservers.is_some()
                || d.search.is_some()
                || d.options.is_some()
                || d.domain.as_ref().is_some_and(|s| !s.is_empty())
        })
    }
}

/// A config's `dns`: which lists were given, as Go's nil and empty slices tell apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, GoKeys)]
pub struct DnsConf {
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<Vec<String>>,
}

impl DnsConf {
    pub fn to_dns(&self) -> Dns {
        Dns {
            nameservers: self.nameservers.clone().unwrap_or_default(),
            domain: self.domain.clone().unwrap_or_default(),
            search: self.search.clone().unwrap_or_default(),
            options: self.options.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(try_from = "IpamObject")]
pub struct IpamRef {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

/// `ipam` must be an object: serde's derive would also take a list (`["x"]` as type "x").
#[derive(Deserialize)]
struct IpamObject(serde_json::Map<String, serde_json::Value>);

/// Only `type` is read here (the IPAM plugin reads the rest); Go's `types.IPAM` matches it
/// in any case, as `"Type"`.
impl GoKeys for IpamRef {
    fn shape() -> Shape {
        const FIELDS: &[gokeys::Field] = &[gokeys::Field {
            key: "type",
            shape: <Value as GoKeys>::shape,
            flatten: false,
        }];
        Shape::Struct(FIELDS)
    }
}

impl TryFrom<IpamObject> for IpamRef {
    type Error = String;
    fn try_from(o: IpamObject) -> Result<Self, String> {
        match o.0.get("type") {
            None | Some(serde_json::Value::Null) => Ok(IpamRef::default()),
            Some(serde_json::Value::String(t)) => Ok(IpamRef { plugin_type: t.clone() }),
            Some(other) => Err(format!("ipam.type must be a string, not {other}")),
        }
    }
}

/// An attachment named in GC's valid list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, GoKeys)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The `args` key: `args.cni.ips`, `args.cni.mac`, labels.
#[derive(Debug, Clone, Default, Deserialize, Serialize, GoKeys)]
pub struct Args {
    #[serde(default)]
    pub cni: Option<CniArgsBlock>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, GoKeys)]
pub struct CniArgsBlock {
    #[serde(default)]
    pub ips: Option<Vec<String>>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub labels: Option<Value>,
}

/// runtimeConfig with the well-known capabilities (CONVENTIONS.md). Every key in any case
/// (containerd sends `PortMappings`, `IPs`, `MAC` …): cni::gokeys.
#[derive(Debug, Clone, Default, Deserialize, Serialize, GoKeys)]
pub struct RuntimeConfig {
    #[serde(rename = "portMappings", default)]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(rename = "ipRanges", default)]
    pub ip_ranges: Option<Value>,
    #[serde(default)]
    pub bandwidth: Option<Value>,
    #[serde(default)]
    pub ips: Option<Vec<String>>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(rename = "deviceID", default)]
    pub device_id: Option<String>,
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "cgroupPath", default)]
    pub cgroup_path: Option<String>,
}

/// One port mapping (containerd sends the capitalised Go field names, `HostPort` …).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, GoKeys)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: i64,
    #[serde(rename = "containerPort")]
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

/// Parse a plugin's config from stdin, its keys matched as Go's decoder matches them
/// (cni::gokeys). A type mismatch is an invalid config (code 7) naming the top-level key as
/// the config spells it; the skel already answered code 6 for stdin that is not JSON at all.
pub fn parse<T: DeserializeOwned + GoKeys>(stdin: &[u8]) -> Result<T, CniError> {
    let node: Node = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("failed to load netconf: {e}")))?;
    T::deserialize(gokeys::canonical(&node, T::shape())).map_err(|e| {
        let msg = match culprit_key::<T>(&node) {
            Some(k) => format!("failed to load netconf: key {k:?}: {e}"),
            None => format!("failed to load netconf: {e}"),
        };
        CniError::new(code::INVALID_CONFIG, msg)
    })
}

/// The top-level key whose value does not have the documented shape: the one whose removal
/// (in every spelling the config has it) makes the config parse. serde's own error has no path
/// through flattened structs, and a user needs the key named. Runs only on the error path.
fn culprit_key<T: DeserializeOwned + GoKeys>(node: &Node) -> Option<String> {
    let entries = node.entries()?;
    let mut tried = std::collections::HashSet::new();
    entries.iter().find_map(|(k, _)| {
        if !tried.insert(k.as_str()) {
            return None;
        }
        let rest = Node::Object(entries.iter().filter(|(other, _)| other != k).cloned().collect());
        T::deserialize(gokeys::canonical(&rest, T::shape()))
            .ok()
            .map(|_| k.clone())
    })
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

/// Network name: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (code 7). It also becomes a
/// directory name, so this is what keeps `..` and `/` out of the data dirs.
pub fn validate_network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(code::INVALID_CONFIG, "missing network name"));
    }
    if !valid_name(name) {
        return Err(
            CniError::new(code::INVALID_CONFIG, "invalid characters found in network name")
                .with_details(name.to_string()),
        );
    }
    Ok(())
}

/// Container ID: same pattern as the network name (code 4 for bad characters, 3 if empty).
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(code::UNKNOWN_CONTAINER, "missing containerID"));
    }
    if !valid_name(id) {
        return Err(CniError::new(code::INVALID_ENV, "invalid characters in containerID").with_details(id.to_string()));
    }
    Ok(())
}

/// Interface name rules of the Go library (code 4).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::new(code::INVALID_ENV, "interface name is empty"));
    }
    if name.len() > 15 {
        return Err(CniError::new(code::INVALID_ENV, "interface name is too long")
            .with_details("interface name should be less than 16 characters"));
    }
    if name == "." || name == ".." {
        return Err(CniError::new(code::INVALID_ENV, "interface name is . or .."));
    }
    if name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(CniError::new(
            code::INVALID_ENV,
            "interface name contains / or : or whitespace characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "net1", "my_net.v-2", "0"] {
            assert!(validate_network_name(ok).is_ok(), "{ok}");
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["../x", "/", ".", "-a", "a/b", "a b", "é"] {
            assert_eq!(validate_network_name(bad).unwrap_err().code, 7, "{bad}");
            assert_eq!(validate_container_id(bad).unwrap_err().code, 4, "{bad}");
        }
        assert_eq!(validate_network_name("").unwrap_err().code, 7);
        assert_eq!(validate_container_id("").unwrap_err().code, 3);
    }

    #[test]
    fn ifnames() {
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        for bad in ["", "abcdefghijklmnop", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }

    #[test]
    fn port_mappings_both_spellings() {
        let rc: RuntimeConfig = gokeys::from_slice(
            br#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                                {"HostPort":9191,"ContainerPort":81,"Protocol":"udp","HostIP":"127.0.0.1"}]}"#,
        )
        .unwrap();
        let pm = rc.port_mappings.unwrap();
        assert_eq!(pm[0].host_port, 8080);
        assert_eq!(
            pm[1],
            PortMapping {
                host_port: 9191,
                container_port: 81,
                protocol: "udp".into(),
                host_ip: "127.0.0.1".into()
            }
        );
    }

    #[test]
    fn common_keys() {
        let c: NetConf = parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"bridge","ipam":{"type":"host-local"},
                 "args":{"cni":{"ips":["10.0.0.5"]}},"runtimeConfig":{"mac":"aa:bb:cc:dd:ee:ff","ips":["10.0.0.6/24"]},
                 "cni.dev/attachments":[{"containerID":"c","ifname":"eth0"}],
                 "prevResult":{"ips":[{"address":"10.0.0.5/24"}]},"unknownKey":true}"#,
        )
        .unwrap();
        assert_eq!(c.ipam_type(), Some("host-local"));
        assert_eq!(c.args.clone().unwrap().cni.unwrap().ips.unwrap(), vec!["10.0.0.5"]);
        assert_eq!(c.runtime_config.mac.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(c.gc_valid_attachments().unwrap()[0].ifname, "eth0");
        assert_eq!(c.prev_result().unwrap().unwrap().cni_version, "1.1.0");
        let c: NetConf = parse(br#"{"name":"n","ipam":{"type":""}}"#).unwrap();
        assert_eq!(c.version(), "0.1.0");
        assert_eq!(c.ipam_type(), None);
        assert_eq!(parse::<NetConf>(br#"{"name":5}"#).unwrap_err().code, 7);
    }

    #[test]
    fn a_config_of_the_wrong_shape_is_code_7_with_the_key_named() {
        for (conf, key) in [
            (r#"{"name":"n","ipam":["x"]}"#, "ipam"),
            (r#"{"name":"n","ipam":{"type":7}}"#, "ipam"),
            (r#"{"name":"n","ipam":"host-local"}"#, "ipam"),
            (r#"{"name":"n","cniVersion":1}"#, "cniVersion"),
        ] {
            let e = parse::<NetConf>(conf.as_bytes()).unwrap_err();
            assert_eq!(e.code, code::INVALID_CONFIG, "{conf}: {}", e.msg);
            assert!(e.msg.contains(&format!("key \"{key}\"")), "{conf}: {}", e.msg);
        }
        assert_eq!(
            parse::<NetConf>(b"{\"name\":\"n\"").unwrap_err().code,
            code::DECODING_FAILURE
        );
    }
}
