//! The container link's lifetime: the `mtu` key as the kernel wants it, and DEL of the link.

use crate::cni::error::CniError;
use crate::pkg::netns::open_netns_for_del;
use anyhow::bail;

/// The MTU key as the kernel wants it: unset, zero or negative means the kernel default.
/// The `mtu` key: 0 means the kernel's default. A negative value is refused before anything
/// is created (the reference passes it on and the kernel's answer depends on the driver).
pub fn mtu_of(mtu: i64) -> anyhow::Result<Option<u32>> {
    match mtu {
        0 => Ok(None),
        m => match u32::try_from(m) {
            Ok(m) => Ok(Some(m)),
            Err(_) => bail!(CniError::invalid_config(format!(
                "invalid MTU {m}: must be 0 (the default) or a positive number of bytes"
            ))),
        },
    }
}

/// DEL's container side: delete `ifname` in the netns at `path` and return the global
/// unicast addresses it had. An empty or vanished netns and a missing link are "already
/// gone" (Ok, no addresses).
pub fn del_container_link(path: &str, ifname: &str) -> anyhow::Result<Vec<ipnet::IpNet>> {
    let Some(ns) = open_netns_for_del(path)? else {
        return Ok(Vec::new());
    };
    let mut nl = crate::linux::Netlink::in_netns(&ns)?;
    let Some(link) = nl.link_by_name(ifname)? else {
        return Ok(Vec::new());
    };
    let addrs = nl
        .addrs(Some(link.index), crate::linux::netlink::IpFamily::All)?
        .into_iter()
        .map(|a| a.ip)
        .filter(|ip| is_global_unicast(ip.addr()))
        .collect();
    match nl.delete_link(link.index) {
        Err(e) if !e.is_not_found() => Err(anyhow::anyhow!(e).context(format!("failed to delete {ifname:?}"))),
        _ => Ok(addrs),
    }
}

fn is_global_unicast(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_multicast() || a.is_broadcast() || a.is_unspecified())
        }
        std::net::IpAddr::V6(a) => {
            !(a.is_loopback() || a.is_multicast() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mtu_negative_is_refused_zero_is_default() {
        assert_eq!(super::mtu_of(0).unwrap(), None);
        assert_eq!(super::mtu_of(1400).unwrap(), Some(1400));
        for m in [-1, -1500, i64::MIN, i64::MAX] {
            let e = super::mtu_of(m).unwrap_err();
            let c = e.downcast_ref::<crate::cni::error::CniError>().expect("a CNI error");
            assert_eq!(c.code, crate::cni::error::code::INVALID_CONFIG, "{m}");
            assert!(c.msg.contains(&format!("invalid MTU {m}")), "{}", c.msg);
        }
    }
}
