//! Results of every spec version, held in one canonical (1.1) form, with the
//! conversions of the Go library and its printing (4-space indent, the same
//! keys and omissions per version).

use super::error::{code, CniError};
use super::gokeys::GoKeys;
use super::json::to_pretty_json;
use super::version::Version;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

fn is_empty(s: &str) -> bool {
    s.is_empty()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, GoKeys)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub sandbox: String,
    #[serde(rename = "socketPath", default, skip_serializing_if = "is_empty")]
    pub socket_path: String,
    #[serde(rename = "pciID", default, skip_serializing_if = "is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, GoKeys)]
pub struct IpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, GoKeys)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, GoKeys)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// The canonical result (1.1.0 shape). `cni_version` is the version it was made or parsed in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

// ---- wire shapes per version -------------------------------------------------

#[derive(Serialize, Deserialize, GoKeys)]
struct Wire1 {
    #[serde(rename = "cniVersion", default, skip_serializing_if = "is_empty")]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    routes: Vec<Route>,
    // Printed even when empty, as the deployed reference plugins print it (Go's
    // encoding/json does not omit an empty struct).
    #[serde(default, deserialize_with = "null_as_default")]
    dns: Dns,
}

#[derive(Serialize, Deserialize, GoKeys)]
struct Interface04 {
    name: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    mac: String,
    #[serde(default, skip_serializing_if = "is_empty")]
    sandbox: String,
}

#[derive(Serialize, Deserialize, GoKeys)]
struct IpConfig04 {
    #[serde(default)]
    version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize, Deserialize, GoKeys)]
struct Wire04 {
    #[serde(rename = "cniVersion", default, skip_serializing_if = "is_empty")]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    interfaces: Vec<Interface04>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    ips: Vec<IpConfig04>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    routes: Vec<Route>,
    // 0.x always prints `"dns": {}` (Go does not omit empty structs).
    #[serde(default, deserialize_with = "null_as_default")]
    dns: Dns,
}

#[derive(Serialize, Deserialize, GoKeys)]
struct Route02 {
    dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

#[derive(Serialize, Deserialize, GoKeys)]
struct IpConfig02 {
    ip: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    routes: Vec<Route02>,
}

#[derive(Serialize, Deserialize, GoKeys)]
struct Wire02 {
    #[serde(rename = "cniVersion", default, skip_serializing_if = "is_empty")]
    cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<IpConfig02>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<IpConfig02>,
    #[serde(default, deserialize_with = "null_as_default")]
    dns: Dns,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A result in one of the wire shapes; serialising it keeps the struct field order.
#[derive(Serialize)]
#[serde(untagged)]
enum Wire {
    V1(Wire1),
    V04(Wire04),
    V02(Wire02),
}

/// The three result families of the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V02,
    V04,
    V1,
}

fn family(version: &str) -> Result<Family, CniError> {
    match version {
        "" | "0.1.0" | "0.2.0" => Ok(Family::V02),
        "0.3.0" | "0.3.1" | "0.4.0" => Ok(Family::V04),
        "1.0.0" | "1.1.0" => Ok(Family::V1),
        other => Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported CNI result version {other:?}"),
        )),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

impl CniResult {
    pub fn new(version: &str) -> CniResult {
        CniResult {
            cni_version: version.to_string(),
            ..Default::default()
        }
    }

    /// Parse a result JSON. Its own `cniVersion` wins; `default_version` (the config's
    /// version) is used when it has none, as libcni does for prevResult.
    pub fn parse(value: &Value, default_version: &str) -> Result<CniResult, CniError> {
        let decode =
            |e: serde_json::Error| CniError::new(code::DECODING_FAILURE, format!("failed to parse result: {e}"));
        // serde's derive would also read a list positionally into the wire structs.
        if !value.is_object() {
            return Err(CniError::new(
                code::DECODING_FAILURE,
                format!(
                    "failed to parse result: expected a JSON object, got {}",
                    json_kind(value)
                ),
            ));
        }
        // Keys in any case, as Go's decoder reads a result (`"IPs"`, `"CNIVersion"` …).
        #[derive(Deserialize, GoKeys)]
        struct VersionOnly {
            #[serde(rename = "cniVersion", default)]
            v: Option<Value>,
        }
        let version = match super::gokeys::from_value::<VersionOnly>(value).ok().and_then(|o| o.v) {
            Some(Value::String(v)) if !v.is_empty() => v,
            _ => default_version.to_string(),
        };
        match family(&version)? {
            Family::V1 => {
                let w: Wire1 = super::gokeys::from_value(value).map_err(decode)?;
                Ok(CniResult {
                    cni_version: version,
                    interfaces: w.interfaces,
                    ips: w.ips,
                    routes: w.routes,
                    dns: w.dns,
                })
            }
            Family::V04 => {
                let w: Wire04 = super::gokeys::from_value(value).map_err(decode)?;
                Ok(CniResult {
                    cni_version: version,
                    interfaces: w
                        .interfaces
                        .into_iter()
                        .map(|i| Interface {
                            name: i.name,
                            mac: i.mac,
                            sandbox: i.sandbox,
                            ..Default::default()
                        })
                        .collect(),
                    ips: w
                        .ips
                        .into_iter()
                        .map(|i| IpConfig {
                            interface: i.interface,
                            address: i.address,
                            gateway: i.gateway,
                        })
                        .collect(),
                    routes: w.routes,
                    dns: w.dns,
                })
            }
            Family::V02 => {
                let w: Wire02 = super::gokeys::from_value(value).map_err(decode)?;
                let mut r = CniResult {
                    cni_version: version,
                    dns: w.dns,
                    ..Default::default()
                };
                // ip4 first, then ip6; their routes are concatenated in the same order.
                for ipc in [w.ip4, w.ip6].into_iter().flatten() {
                    r.ips.push(IpConfig {
                        interface: None,
                        address: ipc.ip,
                        gateway: ipc.gateway,
                    });
                    r.routes
                        .extend(ipc.routes.into_iter().map(|rt| Route::new(rt.dst, rt.gw)));
                }
                Ok(r)
            }
        }
    }

    pub fn parse_bytes(data: &[u8], default_version: &str) -> Result<CniResult, CniError> {
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| CniError::new(code::DECODING_FAILURE, format!("failed to parse result: {e}")))?;
        Self::parse(&v, default_version)
    }

    /// The JSON value of this result in `version`, applying the library's conversion rules.
    pub fn to_value(&self, version: &str) -> Result<Value, CniError> {
        Ok(serde_json::to_value(self.to_wire(version)?).expect("result types always serialise"))
    }

    fn to_wire(&self, version: &str) -> Result<Wire, CniError> {
        let version = if version.is_empty() { "0.1.0" } else { version };
        family(&self.cni_version)?;
        Ok(match family(version)? {
            Family::V1 => Wire::V1(Wire1 {
                cni_version: version.to_string(),
                interfaces: self.interfaces.clone(),
                ips: self.ips.clone(),
                routes: self.routes.clone(),
                dns: self.dns.clone(),
            }),
            Family::V04 => Wire::V04(Wire04 {
                cni_version: version.to_string(),
                interfaces: self
                    .interfaces
                    .iter()
                    .map(|i| Interface04 {
                        name: i.name.clone(),
                        mac: i.mac.clone(),
                        sandbox: i.sandbox.clone(),
                    })
                    .collect(),
                ips: self
                    .ips
                    .iter()
                    .map(|i| IpConfig04 {
                        version: if i.address.addr().is_ipv4() { "4" } else { "6" }.to_string(),
                        interface: i.interface,
                        address: i.address,
                        gateway: i.gateway,
                    })
                    .collect(),
                routes: self.routes.clone(),
                dns: self.dns.clone(),
            }),
            Family::V02 => Wire::V02(self.to_wire02(version)?),
        })
    }

    fn to_wire02(&self, version: &str) -> Result<Wire02, CniError> {
        // Only the first IP of each family survives; routes follow the family of their
        // destination, and only when that family has an IP.
        let pick = |v4: bool| {
            self.ips
                .iter()
                .find(|i| i.address.addr().is_ipv4() == v4)
                .map(|i| IpConfig02 {
                    ip: i.address,
                    gateway: i.gateway,
                    routes: self
                        .routes
                        .iter()
                        .filter(|r| r.dst.addr().is_ipv4() == v4)
                        .map(|r| Route02 { dst: r.dst, gw: r.gw })
                        .collect(),
                })
        };
        let (ip4, ip6) = (pick(true), pick(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::internal("cannot convert: no valid IP addresses"));
        }
        Ok(Wire02 {
            cni_version: version.to_string(),
            ip4,
            ip6,
            dns: self.dns.clone(),
        })
    }

    /// The printed form, pretty-printed with a 4-space indent in Go's key order.
    pub fn to_json(&self, version: &str) -> Result<String, CniError> {
        Ok(to_pretty_json(&self.to_wire(version)?))
    }

    /// Convert through the wire format, as a round trip through another process would.
    pub fn convert(&self, version: &str) -> Result<CniResult, CniError> {
        CniResult::parse(&self.to_value(version)?, version)
    }

    pub fn version(&self) -> Result<Version, CniError> {
        Version::parse(&self.cni_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.1.0".into(),
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:02".into(),
                    mtu: Some(1400),
                    sandbox: "/run/netns/x".into(),
                    socket_path: "/s".into(),
                    pci_id: "0000:00:01.0".into(),
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.2.0.5/24".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(1),
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                },
            ],
            routes: vec![
                Route::new("0.0.0.0/0".parse().unwrap(), Some("10.1.0.1".parse().unwrap())),
                Route {
                    table: Some(100),
                    scope: Some(253),
                    mtu: Some(1300),
                    ..Route::new("::/0".parse().unwrap(), None)
                },
            ],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn prints_1x_with_omissions() {
        let mut r = CniResult::new("1.0.0");
        r.ips.push(IpConfig {
            interface: Some(0),
            address: "127.0.0.1/8".parse().unwrap(),
            gateway: None,
        });
        assert_eq!(
            r.to_json("1.0.0").unwrap(),
            "{\n    \"cniVersion\": \"1.0.0\",\n    \"ips\": [\n        {\n            \"interface\": 0,\n            \"address\": \"127.0.0.1/8\"\n        }\n    ],\n    \"dns\": {}\n}"
        );
    }

    #[test]
    fn v04_adds_version_and_drops_1_1_interface_fields() {
        let v = sample().to_value("0.4.0").unwrap();
        assert_eq!(v["ips"][0]["version"], "4");
        assert_eq!(v["ips"][2]["version"], "6");
        assert_eq!(
            v["interfaces"][1],
            json!({"name":"eth0","mac":"aa:bb:cc:dd:ee:02","sandbox":"/run/netns/x"})
        );
        // The route extras survive (Go shares the route type across versions).
        assert_eq!(v["routes"][1]["table"], 100);
        assert_eq!(v["dns"]["nameservers"][0], "10.1.0.1");
        // Key order as Go prints it.
        let s = sample().to_json("0.3.1").unwrap();
        let ver = s.find("\"version\"").unwrap();
        assert!(ver < s.find("\"interface\"").unwrap() && ver < s.find("\"address\"").unwrap());
    }

    #[test]
    fn always_prints_dns() {
        let mut r = CniResult::new("0.4.0");
        r.ips.push(IpConfig {
            interface: None,
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: None,
        });
        assert_eq!(r.to_value("0.4.0").unwrap()["dns"], json!({}));
        assert_eq!(r.to_value("1.0.0").unwrap()["dns"], json!({}));
        assert_eq!(r.to_value("0.2.0").unwrap()["dns"], json!({}));
    }

    #[test]
    fn down_to_020_keeps_first_ip_per_family() {
        let v = sample().to_value("0.2.0").unwrap();
        assert_eq!(
            v,
            json!({
                "cniVersion": "0.2.0",
                "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]},
                "ip6": {"ip": "fd00::5/64", "gateway": "fd00::1", "routes": [{"dst": "::/0"}]},
                "dns": {"nameservers": ["10.1.0.1"]}
            })
        );
        // Routes of a family with no IP are dropped.
        let mut r = sample();
        r.ips.retain(|i| i.address.addr().is_ipv4());
        let v = r.to_value("0.1.0").unwrap();
        assert!(v.get("ip6").is_none());
        assert_eq!(v["ip4"]["routes"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn down_to_020_without_ips_fails() {
        let r = CniResult::new("1.0.0");
        let e = r.to_value("0.2.0").unwrap_err();
        assert_eq!(e.msg, "cannot convert: no valid IP addresses");
        // An empty version means 0.1.0.
        assert!(r.to_value("").is_err());
    }

    #[test]
    fn up_from_020() {
        let v = json!({
            "cniVersion": "0.2.0",
            "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
            "ip6": {"ip": "fd00::5/64", "routes": [{"dst": "::/0", "gw": "fd00::1"}]},
            "dns": {}
        });
        let r = CniResult::parse(&v, "0.2.0").unwrap();
        let out = r.to_value("0.3.1").unwrap();
        assert_eq!(
            out,
            json!({
                "cniVersion": "0.3.1",
                "ips": [
                    {"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
                    {"version": "6", "address": "fd00::5/64"}
                ],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}],
                "dns": {}
            })
        );
        assert!(out.get("interfaces").is_none());
    }

    #[test]
    fn v1_round_trip_and_relabel() {
        let r = sample();
        let v = r.to_value("1.1.0").unwrap();
        assert_eq!(v["interfaces"][1]["mtu"], 1400);
        assert_eq!(v["interfaces"][1]["socketPath"], "/s");
        assert_eq!(v["interfaces"][1]["pciID"], "0000:00:01.0");
        let back = CniResult::parse(&v, "1.1.0").unwrap();
        assert_eq!(back, r);
        let v10 = r.to_value("1.0.0").unwrap();
        assert_eq!(v10["cniVersion"], "1.0.0");
        assert!(v10["ips"][0].get("version").is_none());
        // 0.4 -> 1.0 drops `version` and keeps name/mac/sandbox.
        let from04 = CniResult::parse(&r.to_value("0.4.0").unwrap(), "0.4.0").unwrap();
        let v = from04.to_value("1.0.0").unwrap();
        assert!(v["interfaces"][1].get("mtu").is_none());
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/x");
    }

    #[test]
    fn a_result_that_is_not_an_object_or_has_wrong_types_is_refused() {
        for bad in [
            json!([]),
            json!(["1.0.0", [], []]),
            json!("x"),
            json!(7),
            json!({"cniVersion": "1.0.0", "ips": "10.0.0.2/24"}),
            json!({"cniVersion": "1.0.0", "ips": [{"address": 5}]}),
            json!({"cniVersion": "1.0.0", "interfaces": [{"name": ["eth0"]}]}),
            json!({"cniVersion": "0.4.0", "routes": {"dst": "0.0.0.0/0"}}),
        ] {
            let e = CniResult::parse(&bad, "1.0.0").expect_err(&bad.to_string());
            assert_eq!(e.code, code::DECODING_FAILURE, "{bad}");
        }
    }

    #[test]
    fn prev_result_without_version_uses_config_version() {
        let v = json!({"ips": [{"version": "4", "address": "10.0.0.2/24"}]});
        let r = CniResult::parse(&v, "0.4.0").unwrap();
        assert_eq!(r.cni_version, "0.4.0");
        assert_eq!(r.ips.len(), 1);
        let v = json!({"ip4": {"ip": "10.0.0.2/24"}});
        assert_eq!(CniResult::parse(&v, "").unwrap().ips.len(), 1);
    }

    #[test]
    fn unknown_versions_rejected() {
        assert!(CniResult::parse(&json!({"cniVersion": "9.9.9"}), "").is_err());
        assert!(sample().to_value("0.9.0").is_err());
        assert!(CniResult::parse(&json!({"cniVersion": "1.0.0", "ips": [{"address": "nope"}]}), "").is_err());
    }

    /// A result (a prevResult, a delegate's answer) is read as Go's decoder reads it: keys in
    /// any case, in every wire shape.
    #[test]
    fn result_keys_in_any_case() {
        use crate::cni::gokeys::{check_keys, GoKeys};
        for shape in [Wire1::shape(), Wire04::shape(), Wire02::shape()] {
            check_keys(shape).unwrap();
        }
        let r = CniResult::parse(
            &json!({"CNIVersion": "1.0.0",
                    "Interfaces": [{"Name": "eth0", "MAC": "aa:bb:cc:dd:ee:01", "Sandbox": "/run/netns/p"}],
                    "IPs": [{"Interface": 0, "Address": "10.0.0.2/24", "Gateway": "10.0.0.1"}],
                    "Routes": [{"Dst": "0.0.0.0/0", "GW": "10.0.0.1"}],
                    "DNS": {"Nameservers": ["10.0.0.53"]}}),
            "",
        )
        .unwrap();
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces[0].mac, "aa:bb:cc:dd:ee:01");
        assert_eq!(r.interfaces[0].sandbox, "/run/netns/p");
        assert_eq!(r.ips[0].interface, Some(0));
        assert_eq!(r.ips[0].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.routes[0].gw, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(r.dns.nameservers, vec!["10.0.0.53".to_string()]);
        let old = CniResult::parse(&json!({"CNIVersion": "0.2.0", "IP4": {"IP": "10.0.0.2/24"}}), "").unwrap();
        assert_eq!(old.ips.len(), 1);
    }
}
