//! tap: a persistent tap device in the container, optionally enslaved to a bridge there
//! (the reference's `plugins/main/tap`). Made with the tun ioctls inside the container netns and configured over
//! netlink: nothing is executed (the reference runs `ip tuntap`).

use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::error::CniError;
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::LinkType;
use crate::linux::selinux;
use crate::linux::tuntap::{self, TunTap};
use crate::linux::{NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::childlink::{check_container_link, del_child, ipam_or_l2};
use crate::pkg::mac::parse_mac;
use crate::pkg::netns::open_netns;
use crate::pkg::undo::Undo;
use crate::pkg::veth;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

pub static PLUGIN: Plugin = entry::<Tap>();

#[derive(Debug, Deserialize, GoKeys)]
struct TapConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(rename = "multiQueue", default)]
    multi_queue: bool,
    #[serde(default)]
    mtu: i64,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    owner: Option<u32>,
    #[serde(default)]
    group: Option<u32>,
    #[serde(rename = "selinuxContext", default)]
    selinux_context: String,
    #[serde(default)]
    bridge: String,
}

impl TapConf {
    /// Parse, and resolve the MAC: `mac` < CNI_ARGS `MAC` < `runtimeConfig.mac`.
    fn load(args: &CmdArgs) -> anyhow::Result<TapConf> {
        let mut n: TapConf = config::parse(&args.stdin)?;
        n.mac = crate::pkg::mac::container_mac(args, &n.net, Some(n.mac.clone()), false)?.unwrap_or_default();
        Ok(n)
    }

    /// The device flags the reference ends up with: with both owner and group (and no
    /// selinuxContext) it uses netlink (a vnet header, the packet-information header kept);
    /// otherwise `ip tuntap` (no packet information). Multi-queue devices never carry the PI
    /// header.
    fn tuntap(&self, name: String) -> TunTap {
        let netlink_path = self.owner.is_some() && self.group.is_some() && self.selinux_context.is_empty();
        TunTap {
            name,
            tun: false,
            multi_queue: self.multi_queue,
            vnet_hdr: netlink_path && !self.multi_queue,
            pi: netlink_path && !self.multi_queue,
            owner: self.owner,
            group: self.group,
        }
    }
}

// Why two copies: every plugin declares its name, kind, summary and capabilities in these
// lines of `CniPlugin`, where a reader of the plugin looks; they are alike by the trait's design.
struct Tap;

impl CniPlugin for Tap {
    const NAME: &'static str = "tap";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "a tap device in the container, optionally on a bridge there";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = TapConf;
    type Lenient = TapConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        TapConf::load(args)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(config::parse(&args.stdin)?)
    }

    fn add(n: TapConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        if !n.selinux_context.is_empty() && !selinux::enabled() {
            // The reference fails too (its label write is refused), after the netns is open.
            return Err(CniError::unsupported_field(format!(
                "selinuxContext {:?}: this host has no SELinux (no selinuxfs mounted), so the tap device cannot be \
                 labelled; remove the key",
                n.selinux_context
            ))
            .into());
        }
        let mtu = crate::pkg::link::mtu_of(n.mtu)?;
        let mac = match n.mac.as_str() {
            "" => None,
            m => Some(parse_mac(m).map_err(|e| anyhow!("invalid args {m} for MAC addr: {}", e.msg))?),
        };
        let cont_ns = open_netns(&args.netns)?;
        let mut cont = Netlink::in_netns(&cont_ns)?;
        let mut undo = Undo::new();

        // tun devices are made in the calling thread's netns: enter the container for this call.
        let tmp = veth::random_veth_name()?;
        let made = {
            let _in_container = cont_ns.enter()?;
            if n.selinux_context.is_empty() {
                tuntap::create(&n.tuntap(tmp.clone()))
            } else {
                // A tun device takes its creator's SELinux context: made by a child that runs
                // in the given one, as the reference runs `ip tuntap` after SetExecLabel.
                let exe = std::path::Path::new("/proc/self/exe");
                tuntap::create_in_child(exe, &n.tuntap(tmp.clone()), Some(&n.selinux_context))
            }
        };
        made.context("failed to create tap")?;
        let link = cont
            .link_by_name(&tmp)?
            .ok_or_else(|| anyhow!("tap {tmp:?} vanished after creation"))?;
        let (path, idx) = (cont_ns.path().to_path_buf(), link.index);
        undo.push(format!("delete {} in the container", args.ifname), move || {
            Ok(Netlink::in_netns(&NetNs::open(&path)?)?.delete_link(idx)?)
        });
        if let Some(m) = mtu {
            cont.set_mtu(idx, m)
                .with_context(|| format!("failed to set tap mtu {m}"))?;
        }
        if let Some(m) = mac {
            cont.set_mac(idx, m).context("failed to set tap mac")?;
        }
        cont.set_name(idx, &args.ifname)
            .with_context(|| format!("failed to rename tap to {:?}", args.ifname))?;
        if !n.bridge.is_empty() {
            let br = cont
                .link_by_name(&n.bridge)?
                .filter(|l| l.kind == Some(LinkType::Bridge))
                .ok_or_else(|| anyhow!("failed to lookup bridge {:?} in the container", n.bridge))?;
            cont.set_master(idx, br.index)
                .with_context(|| format!("failed to set master {:?} for {:?}", n.bridge, args.ifname))?;
        }

        // Looked up again: joining the bridge may have changed it.
        let link = cont.link_by_index(idx)?.unwrap_or(link);
        let result = ipam_or_l2(&mut cont, &cont_ns, args, &n.net, link, &mut undo)?;
        undo.commit();
        Ok(result)
    }

    fn del(n: TapConf, args: &CmdArgs) -> anyhow::Result<()> {
        del_child(&n.net, args)
    }

    fn check(n: TapConf, args: &CmdArgs) -> anyhow::Result<()> {
        let ns = open_netns(&args.netns)?;
        if let Some(t) = n.net.ipam_type() {
            delegate::check(t, &args.stdin, args)?;
        }
        let (prev, intf) = crate::pkg::ipconfig::prev_sandbox_interface(&n.net, args, "")?;
        let mut cont = Netlink::in_netns(&ns)?;
        let l = check_container_link(&mut cont, &intf)?;
        if l.kind != Some(LinkType::Tun) {
            bail!("Error: Container interface {} not of type tap", l.name);
        }
        crate::pkg::ipconfig::validate_expected(&mut cont, &args.ifname, &prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(extra: &str) -> TapConf {
        serde_json::from_str(&format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"tap"{extra}}}"#)).unwrap()
    }

    #[test]
    fn flags_follow_the_reference_paths() {
        let t = conf("").tuntap("x".into());
        assert!(!t.vnet_hdr && !t.pi && !t.multi_queue);
        let t = conf(r#","owner":1000,"group":100"#).tuntap("x".into());
        assert!(t.vnet_hdr && t.pi);
        assert_eq!((t.owner, t.group), (Some(1000), Some(100)));
        let t = conf(r#","owner":1000,"group":100,"multiQueue":true"#).tuntap("x".into());
        assert!(t.multi_queue && !t.vnet_hdr && !t.pi);
        // With selinuxContext the reference always takes the `ip tuntap` path.
        let t = conf(r#","owner":1000,"group":100,"selinuxContext":"system_u:object_r:x_t:s0""#).tuntap("x".into());
        assert!(!t.vnet_hdr && !t.pi);
        assert_eq!((t.owner, t.group), (Some(1000), Some(100)));
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(TapConf::shape()).unwrap();
        let c: TapConf = config::parse(
            br#"{"cniVersion":"1.0.0","name":"n","MultiQueue":true,"Owner":1000,"GROUP":100,"SELinuxContext":"x","Bridge":"br0"}"#,
        )
        .unwrap();
        assert!(c.multi_queue);
        assert_eq!((c.owner, c.group), (Some(1000), Some(100)));
        assert_eq!((c.selinux_context.as_str(), c.bridge.as_str()), ("x", "br0"));
    }
}
