//! MAC addresses of the container link: parsing, printing like Go, and which of the config's,
//! CNI_ARGS' and runtimeConfig's MAC wins.

use crate::cni::config::NetConf;
use crate::cni::error::CniError;
use crate::cni::result::Interface;
use crate::cni::skel::CmdArgs;
use crate::linux::netlink::Link;

/// Parse a MAC as Go's `net.ParseMAC` does: `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` (one
/// separator throughout) or `aabb.ccdd.eeff`, two (four) hex digits a group, either case.
/// Go also takes 8- and 20-byte addresses; a link's MAC here is 6 bytes, so those are refused
/// with the same message. The error is Go's `AddrError` text.
pub fn parse_mac(s: &str) -> Result<[u8; 6], CniError> {
    let bad = || CniError::internal(format!("address {s}: invalid MAC address"));
    let b = s.as_bytes();
    // Hex digits of the groups, checked to be separated by one separator byte.
    let (sep, group) = match b {
        [_, _, x @ (b':' | b'-'), ..] => (*x, 2),
        [_, _, _, _, b'.', ..] => (b'.', 4),
        _ => return Err(bad()),
    };
    if b.len() != 6 * 2 / group * (group + 1) - 1 {
        return Err(bad());
    }
    let mut hex = Vec::with_capacity(12);
    for (i, c) in b.iter().enumerate() {
        if (i + 1) % (group + 1) == 0 {
            if *c != sep {
                return Err(bad());
            }
        } else if c.is_ascii_hexdigit() {
            hex.push(*c);
        } else {
            return Err(bad());
        }
    }
    let mut m = [0u8; 6];
    for (i, pair) in hex.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        m[i] = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(m)
}

/// Printing is the kernel layer's, re-exported beside parsing for the plugins.
pub use crate::linux::netlink::link::fmt_mac;

/// CHECK: the container link has the MAC prevResult reported for it (when it reported one).
/// `prefix` is the plugin's message prefix (ptp's "ptp: ").
pub fn check_container_mac(prefix: &str, intf: &Interface, l: &Link) -> anyhow::Result<()> {
    let mac = fmt_mac(&l.mac);
    if !intf.mac.is_empty() && intf.mac != mac {
        anyhow::bail!(
            "{prefix}Interface {} Mac {} doesn't match container Mac: {mac}",
            intf.name,
            intf.mac
        );
    }
    Ok(())
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
    fn macs_as_go_parses_them() {
        use super::parse_mac;
        let want = [0xc2, 0xb0, 0x57, 0x49, 0x47, 0xf1];
        for good in [
            "c2:B0:57:49:47:f1",
            "c2-b0-57-49-47-f1",
            "c2b0.5749.47f1",
            "C2B0.5749.47F1",
        ] {
            assert_eq!(parse_mac(good).unwrap(), want, "{good}");
        }
        for bad in [
            "",
            "zz",
            "c2:b0:57:49:47",
            "c2:b0:57:49:47:fg",
            "c2:b0-57:49:47:f1",
            "c2:b0:57:49:47:f1x",
            "c2:b0:57:49:47:+1",
            "c2b0.5749-47f1",
            "c2:b0:57:49:47:f1:00:01",
            "é2:b0:57:49:47:f1",
        ] {
            let e = parse_mac(bad).unwrap_err();
            assert_eq!(e.msg, format!("address {bad}: invalid MAC address"));
            assert_eq!(e.code, 999);
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
