//! macvlan: a MAC-addressed child of a node interface, made straight in the container netns
//! (the reference's `plugins/main/macvlan`). Without an IPAM type the attachment is L2 only (the link is just set up).
//! What it shares with ipvlan, vlan, tap and dummy is in `pkg::childlink`.

use crate::cni::config::{self, NetConf};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::{LinkKind, LinkType, MacvlanMode};
use crate::pkg::caps::{self, Capability};
use crate::pkg::childlink::{
    add_child, check_child, del_child, expect_type_and_mode, ipam_or_l2, ChildMode, ChildSpec, ModeKey, ParentKeys,
};
use crate::pkg::mac::parse_mac;
use anyhow::anyhow;
use serde::Deserialize;

pub static PLUGIN: Plugin = entry::<Macvlan>();

#[derive(Debug, Deserialize, GoKeys)]
struct MacvlanConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(flatten)]
    parent: ParentKeys,
    #[serde(default)]
    mode: ModeKey<MacvlanMode>,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    bcqueuelen: u32,
}

impl MacvlanConf {
    /// Parse, and resolve the MAC: `mac` < CNI_ARGS `MAC` < `runtimeConfig.mac`.
    fn load(args: &CmdArgs) -> anyhow::Result<MacvlanConf> {
        let mut n: MacvlanConf = config::parse(&args.stdin)?;
        n.mac = crate::pkg::mac::container_mac(args, &n.net, Some(n.mac.clone()), false)?.unwrap_or_default();
        Ok(n)
    }
}

impl ChildMode for MacvlanMode {
    const KIND: &'static str = "macvlan";
    const DEFAULT: Self = MacvlanMode::Bridge;
    /// `source` is a kernel mode the reference does not offer.
    fn offered(self) -> bool {
        self != MacvlanMode::Source
    }
}

struct Macvlan;

impl CniPlugin for Macvlan {
    const NAME: &'static str = "macvlan";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "a macvlan child of a node interface in the container";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = MacvlanConf;
    type Lenient = MacvlanConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        MacvlanConf::load(args)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }

    fn add(n: MacvlanConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let mode = n.mode.get()?;
        let mac = match n.mac.as_str() {
            "" => None,
            m => Some(parse_mac(m).map_err(|e| anyhow!("invalid args {m} for MAC addr: {}", e.msg))?),
        };
        let mut c = add_child(
            args,
            ChildSpec {
                parent: &n.parent,
                kind: LinkKind::Macvlan {
                    mode,
                    bc_queue_len: (n.bcqueuelen > 0).then_some(n.bcqueuelen),
                },
                mac,
            },
        )?;

        let result = ipam_or_l2(&mut c.cont, &c.cont_ns, args, &n.net, c.link, &mut c.undo)?;
        c.undo.commit();
        Ok(result)
    }

    /// DEL needs no master (it may be gone already: the reference's DEL then fails with "Link not
    /// found" and blocks teardown, plugins#953, #830): IPAM first, then the link; an empty or
    /// vanished netns and a missing link are fine.
    fn del(n: MacvlanConf, args: &CmdArgs) -> anyhow::Result<()> {
        del_child(&n.net, args)
    }

    fn check(n: MacvlanConf, args: &CmdArgs) -> anyhow::Result<()> {
        let want = n.mode.get()?;
        check_child(&n.net, args, &n.parent, |l| {
            expect_type_and_mode(l, LinkType::Macvlan, "macvlan", want, l.macvlan_mode)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(stdin: &str, cni_args: &str) -> CmdArgs {
        CmdArgs::example(stdin.as_bytes(), cni_args)
    }

    #[test]
    fn modes() {
        let mode = |s: &str| serde_json::from_value::<ModeKey<MacvlanMode>>(s.into()).unwrap().get();
        assert_eq!(mode("").unwrap(), MacvlanMode::Bridge);
        assert_eq!(mode("passthru").unwrap(), MacvlanMode::Passthru);
        assert_eq!(mode("vepa").unwrap(), MacvlanMode::Vepa);
        assert_eq!(mode("private").unwrap(), MacvlanMode::Private);
        let e = mode("source").unwrap_err();
        assert_eq!(e.to_string(), "unknown macvlan mode: \"source\"");
        assert_eq!(mode("bridge").unwrap(), MacvlanMode::Bridge);
        assert_eq!(mode("nope").unwrap_err().code, 7);
    }

    #[test]
    fn mac_priority() {
        let c = r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","mac":"02:00:00:00:00:01"}"#;
        assert_eq!(MacvlanConf::load(&args(c, "")).unwrap().mac, "02:00:00:00:00:01");
        let n = MacvlanConf::load(&args(c, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(n.mac, "02:00:00:00:00:02");
        let c = r#"{"cniVersion":"1.0.0","name":"n","type":"macvlan","runtimeConfig":{"mac":"02:00:00:00:00:03"}}"#;
        let n = MacvlanConf::load(&args(c, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(n.mac, "02:00:00:00:00:03");
        assert!(MacvlanConf::load(&args(c, "FOO=1")).is_err());
        assert!(MacvlanConf::load(&args(c, "IgnoreUnknown=1;FOO=1")).is_ok());
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(MacvlanConf::shape()).unwrap();
        let c: MacvlanConf = config::parse(
            br#"{"cniVersion":"1.0.0","name":"n","Master":"eth1","MODE":"private","Mac":"0a:58:00:00:00:02",
                 "BCQueueLen":100,"LinkInContainer":true,"MTU":1400}"#,
        )
        .unwrap();
        assert_eq!(
            (c.parent.master.as_str(), c.mode.as_str(), c.mac.as_str()),
            ("eth1", "private", "0a:58:00:00:00:02")
        );
        assert_eq!(
            (c.bcqueuelen, c.parent.mtu, c.parent.link_in_container),
            (100, 1400, true)
        );
    }
}
