//! MAC addresses of the container link: parsing, printing like Go, and which of the config's,
//! CNI_ARGS' and runtimeConfig's MAC wins.

use crate::cni::config::NetConf;
use crate::cni::error::CniError;
use crate::cni::skel::CmdArgs;

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

/// The container MAC by the reference's precedence: `base` (the plugin's own `mac` key, if it
/// has one) < CNI_ARGS `MAC` < `args.cni.mac` (only for plugins that read it: bridge) <
/// `runtimeConfig.mac`. Empty values do not count. CNI_ARGS keys other than `MAC` are
/// refused unless `IgnoreUnknown` is set.
pub fn container_mac(
    args: &CmdArgs,
    net: &NetConf,
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
