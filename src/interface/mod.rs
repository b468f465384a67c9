//! Interface plugins: they create or configure a link in the container's netns.
//! Shared here: opening the container netns with the right CNI errors.

pub mod bridge;
pub mod dummy;
pub mod host_device;
pub mod ipconfig;
pub mod ipvlan;
pub mod loopback;
pub mod macvlan;
pub mod ptp;
pub mod tap;
pub mod veth;
pub mod vlan;

use crate::cni::error::{code, CniError};
use crate::linux::{NetNs, NsError};

/// Open CNI_NETNS for ADD/CHECK: a path that does not exist is an unknown container
/// (code 3), one that is not a network namespace a bad CNI_NETNS (code 4).
pub fn open_netns(path: &str) -> Result<NetNs, CniError> {
    NetNs::open(path).map_err(|e| match e {
        NsError::NotExist(_) => CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("failed to open netns {path:?}: it does not exist"),
        ),
        NsError::NotNetns(_) => CniError::new(
            code::INVALID_ENV,
            format!("failed to open netns {path:?}: not a network namespace"),
        ),
        NsError::Other(e) => CniError::internal(format!("failed to open netns {path:?}: {e}")),
    })
}

/// Open CNI_NETNS for DEL: empty or vanished means "already gone" (None), which DEL
/// must treat as success.
pub fn open_netns_for_del(path: &str) -> Result<Option<NetNs>, CniError> {
    if path.is_empty() {
        return Ok(None);
    }
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(NsError::NotExist(_)) => Ok(None),
        Err(e) => Err(CniError::internal(format!("failed to open netns {path:?}: {e}"))),
    }
}

/// Parse a MAC written `aa:bb:cc:dd:ee:ff` (or with `-`), as Go's `net.ParseMAC` does for
/// 6-byte addresses.
pub fn parse_mac(s: &str) -> Result<[u8; 6], CniError> {
    let bad = || CniError::internal(format!("address {s}: invalid MAC address"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return Err(bad());
        }
        m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// Format a MAC like Go's `net.HardwareAddr.String()` (lower-case, colons).
pub fn fmt_mac(m: &Option<[u8; 6]>) -> String {
    m.as_ref().map(crate::linux::netlink::link::fmt_mac).unwrap_or_default()
}

/// Whether a `dns` block of a plugin config has any field set (only then it replaces the
/// IPAM's DNS in the result).
pub fn dns_set(d: &Option<crate::cni::result::Dns>) -> bool {
    d.as_ref().is_some_and(|d| !d.is_empty())
}

/// A key whose engine has not landed yet must fail loudly (code 2), never be ignored.
pub fn reject_unsupported(key: &str, set: bool, why: &str) -> Result<(), CniError> {
    if set {
        return Err(CniError::unsupported_field(format!(
            "{key} is not supported yet: {why}"
        )));
    }
    Ok(())
}

/// Run the IPAM ADD, register its DEL for rollback, and require at least one address. The
/// IPAM's error is returned as is (its code and message are what the reference prints).
pub fn ipam_add(
    ipam_type: &str,
    args: &crate::cni::skel::CmdArgs,
    undo: &mut crate::undo::Undo,
) -> anyhow::Result<crate::cni::result::CniResult> {
    let r = crate::cni::delegate::add(ipam_type, &args.stdin, args)?;
    let (t, a) = (ipam_type.to_string(), args.clone());
    undo.push(format!("release IPAM {t}"), move || {
        crate::cni::delegate::del(&t, &a.stdin, &a).map_err(Into::into)
    });
    // Every interface plugin needs at least one address from its IPAM.
    if r.ips.is_empty() {
        anyhow::bail!("IPAM plugin returned missing IP config");
    }
    Ok(r)
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
        .addrs(Some(link.index), crate::linux::netlink::Family::All)?
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

/// Collect several failures of a best-effort DEL into one error naming all of them.
pub fn join_errors(errs: Vec<anyhow::Error>) -> anyhow::Result<()> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.into_iter().next().expect("one error")),
        _ => {
            // Keep the first CNI code (e.g. from IPAM) and list every message.
            let code = errs
                .iter()
                .find_map(|e| e.chain().find_map(|c| c.downcast_ref::<CniError>().map(|c| c.code)))
                .unwrap_or(code::INTERNAL);
            let msg = errs.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>().join("; ");
            Err(CniError::new(code, msg).into())
        }
    }
}

/// STATUS of a plugin whose readiness is its IPAM's: delegated when an IPAM type is set.
pub fn ipam_status(net: &crate::cni::config::NetConf, args: &crate::cni::skel::CmdArgs) -> anyhow::Result<()> {
    match net.ipam_type() {
        Some(t) => Ok(crate::cni::delegate::status(t, &args.stdin, args)?),
        None => Ok(()),
    }
}

/// GC of a plugin whose only state outside the container netns is its IPAM's reservations
/// (links die with their netns): delegated when an IPAM type is set.
pub fn ipam_gc(net: &crate::cni::config::NetConf, args: &crate::cni::skel::CmdArgs) -> anyhow::Result<()> {
    match net.ipam_type() {
        Some(t) => Ok(crate::cni::delegate::gc(t, &args.stdin, args)?),
        None => Ok(()),
    }
}

/// The container MAC by the reference's precedence: `base` (the plugin's own `mac` key, if it
/// has one) < CNI_ARGS `MAC` < `args.cni.mac` (only for plugins that read it: bridge) <
/// `runtimeConfig.mac`. Empty values do not count. CNI_ARGS keys other than `MAC` are
/// refused unless `IgnoreUnknown` is set.
pub fn container_mac(
    args: &crate::cni::skel::CmdArgs,
    net: &crate::cni::config::NetConf,
    base: Option<String>,
    read_args_block: bool,
) -> Result<Option<String>, CniError> {
    let env = crate::cni::args::CniArgs::parse(&args.args)?;
    env.check_known(&["MAC"])?;
    let from_args_block = || net.args.as_ref()?.cni.as_ref()?.mac.clone();
    let layers = [
        env.get("MAC").map(str::to_string),
        if read_args_block { from_args_block() } else { None },
        net.runtime_config.mac.clone(),
    ];
    Ok(layers
        .into_iter()
        .flatten()
        .rfind(|m| !m.is_empty())
        .or(base.filter(|m| !m.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::container_mac;
    use crate::cni::config::{self, NetConf};
    use crate::cni::skel::{CmdArgs, Command};

    fn args(cni_args: &str) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: "c".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            args: cni_args.into(),
            path: String::new(),
            netns_override: false,
            stdin: Vec::new(),
        }
    }

    #[test]
    fn mac_precedence() {
        let net: NetConf = config::parse(br#"{"name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}}}"#).unwrap();
        let base = Some("02:00:00:00:00:00".to_string());
        assert_eq!(container_mac(&args(""), &net, base.clone(), false).unwrap(), base);
        let a = args("MAC=02:00:00:00:00:01");
        assert_eq!(
            container_mac(&a, &net, base.clone(), false).unwrap().unwrap(),
            "02:00:00:00:00:01"
        );
        assert_eq!(
            container_mac(&a, &net, None, true).unwrap().unwrap(),
            "02:00:00:00:00:02"
        );
        let rc: NetConf =
            config::parse(br#"{"name":"n","runtimeConfig":{"mac":"02:00:00:00:00:03"},"args":{"cni":{"mac":""}}}"#)
                .unwrap();
        assert_eq!(
            container_mac(&a, &rc, None, true).unwrap().unwrap(),
            "02:00:00:00:00:03"
        );
        assert_eq!(container_mac(&args(""), &NetConf::default(), None, true).unwrap(), None);
        assert_eq!(
            container_mac(&args("K8S_POD_NAME=x"), &net, None, true)
                .unwrap_err()
                .code,
            4
        );
    }
}
