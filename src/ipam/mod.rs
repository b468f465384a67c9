//! IPAM plugins: host-local (file-backed ranges) and static (addresses from the config).
//!
//! Helpers shared by both decode addresses the way Go's `net` package and the reference's
//! `pkg/ip` do, with their error texts, since the reference prints those to the runtime.

pub mod dhcp;
pub mod host_local;
pub mod static_ipam;

use crate::cni::config::Attachment;
use crate::cni::error::CniError;
use crate::cni::gokeys::{Field, GoKeys, Shape};
use crate::cni::result::Dns;
use crate::pkg::ip::canon;
use ipnet::IpNet;
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::net::IpAddr;

/// The top-level keys host-local and dhcp read beside their `ipam` object `I` (and, where
/// they use them, runtimeConfig `R` and args `A`). They read the network config themselves,
/// as the reference's IPAM plugins do: `NetConf`'s checks (of prevResult, runtimeConfig's
/// capabilities, the `ipam` object) are the delegating plugin's business.
#[derive(Deserialize)]
#[serde(bound(deserialize = "I: Deserialize<'de>, R: Deserialize<'de>, A: Deserialize<'de>"))]
pub struct NetIn<I, R = IgnoredAny, A = IgnoredAny> {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ipam: Option<I>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: Option<R>,
    #[serde(default)]
    pub args: Option<A>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

/// A key a plugin does not read: any JSON.
impl GoKeys for IgnoredAny {
    fn shape() -> Shape {
        Shape::Any
    }
}

/// By hand: the derive makes no generic impls. The keys as serde names them above.
impl<I: GoKeys, R: GoKeys, A: GoKeys> GoKeys for NetIn<I, R, A> {
    fn shape() -> Shape {
        Shape::Struct(
            const {
                &[
                    Field {
                        key: "cniVersion",
                        shape: <String as GoKeys>::shape,
                        flatten: false,
                    },
                    Field {
                        key: "name",
                        shape: <String as GoKeys>::shape,
                        flatten: false,
                    },
                    Field {
                        key: "ipam",
                        shape: <Option<I> as GoKeys>::shape,
                        flatten: false,
                    },
                    Field {
                        key: "runtimeConfig",
                        shape: <Option<R> as GoKeys>::shape,
                        flatten: false,
                    },
                    Field {
                        key: "args",
                        shape: <Option<A> as GoKeys>::shape,
                        flatten: false,
                    },
                    Field {
                        key: "cni.dev/valid-attachments",
                        shape: <Option<Vec<Attachment>> as GoKeys>::shape,
                        flatten: false,
                    },
                    Field {
                        key: "cni.dev/attachments",
                        shape: <Option<Vec<Attachment>> as GoKeys>::shape,
                        flatten: false,
                    },
                ]
            },
        )
    }
}

impl<I, R, A> NetIn<I, R, A> {
    /// GC's attachments to keep: `cni.dev/valid-attachments`, else the older spelling.
    pub fn take_gc_keep(&mut self) -> Option<Vec<Attachment>> {
        self.valid_attachments.take().or(self.attachments.take())
    }
}

/// A `types.IPNet` value: "addr/prefix", the address kept as written.
pub fn parse_cidr(s: &str) -> Result<IpNet, CniError> {
    s.parse::<IpNet>()
        .map_err(|_| CniError::internal(format!("invalid CIDR address: {s}")))
}

/// A `net.IP` value from JSON: empty means absent.
pub fn parse_ip(s: &str) -> Result<Option<IpAddr>, CniError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<IpAddr>()
        .map(|ip| Some(canon(ip)))
        .map_err(|_| CniError::internal(format!("invalid IP address: {s}")))
}

/// A requested address (`pkg/ip.IP`): "ip" or "ip/prefix", the prefix ignored; the error
/// text is the reference's (no colon).
pub fn parse_requested_ip(s: &str) -> Result<IpAddr, String> {
    let ip = if s.contains('/') {
        s.parse::<IpNet>().map(|n| n.addr()).ok()
    } else {
        s.parse::<IpAddr>().ok()
    };
    ip.map(canon).ok_or_else(|| format!("invalid IP address {s}"))
}

/// resolv.conf into a result's DNS (host-local dns.go): nameserver, domain, search, options;
/// `#` and `;` start comments; lines with fewer than two fields are skipped.
pub fn parse_resolv_conf(path: &str) -> Result<Dns, CniError> {
    let text = read_resolv_conf(path)?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| s.to_string());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_string()),
            "domain" => dns.domain = fields[1].to_string(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    Ok(dns)
}

/// The largest resolv.conf read (glibc reads far less of one).
const RESOLV_CONF_MAX: u64 = 64 * 1024;

/// The text of the file the config's `resolvConf` names: a regular file of sane size only
/// (a FIFO used to block the ADD forever, /dev/zero to fill the memory).
fn read_resolv_conf(path: &str) -> Result<String, CniError> {
    let reader = crate::linux::files::Reader::following(RESOLV_CONF_MAX);
    let buf = reader.read(std::path::Path::new(path)).map_err(|e| {
        if e.raw_os_error().is_some() {
            CniError::internal(format!("open {path}: {}", crate::linux::error::io_errno_text(&e)))
        } else {
            CniError::internal(format!("read {path}: {e}"))
        }
    })?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_ip_forms() {
        assert_eq!(parse_requested_ip("10.0.0.5").unwrap().to_string(), "10.0.0.5");
        assert_eq!(parse_requested_ip("10.0.0.5/24").unwrap().to_string(), "10.0.0.5");
        assert_eq!(parse_requested_ip("::ffff:10.0.0.5").unwrap().to_string(), "10.0.0.5");
        assert_eq!(parse_requested_ip("nope").unwrap_err(), "invalid IP address nope");
    }

    #[test]
    fn resolv_conf_parsing() {
        let p = std::env::temp_dir().join(format!("cni-multi-resolv-{}", std::process::id()));
        std::fs::write(
            &p,
            "# c\n; c\nnameserver 1.1.1.1\nnameserver 8.8.8.8 extra\ndomain example.com\nsearch a.b c.d\noptions ndots:5 rotate\nbogus\n",
        )
        .unwrap();
        let d = parse_resolv_conf(p.to_str().unwrap()).unwrap();
        std::fs::remove_file(&p).unwrap();
        assert_eq!(d.nameservers, ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(d.domain, "example.com");
        assert_eq!(d.search, ["a.b", "c.d"]);
        assert_eq!(d.options, ["ndots:5", "rotate"]);
        let e = parse_resolv_conf("/nonexistent/resolv.conf").unwrap_err();
        assert_eq!(e.msg, "open /nonexistent/resolv.conf: no such file or directory");
        assert_eq!(e.code, 999);
    }

    /// resolvConf naming a FIFO, a device, a directory or a huge file: a clear error at once
    /// (a FIFO used to block the ADD forever, /dev/zero to read until memory ran out).
    #[test]
    fn resolv_conf_that_is_no_regular_file() {
        let dir = std::env::temp_dir().join(format!("cni-multi-resolv-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.join("big");
        std::fs::write(&big, vec![b'#'; 100_000]).unwrap();
        for (p, want) in [
            (fifo.to_str().unwrap(), "not a regular file"),
            ("/dev/zero", "not a regular file"),
            (dir.to_str().unwrap(), "not a regular file"),
            (big.to_str().unwrap(), "larger than 65536 bytes"),
        ] {
            let e = parse_resolv_conf(p).unwrap_err();
            assert!(e.msg.contains(want), "{p}: {}", e.msg);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
