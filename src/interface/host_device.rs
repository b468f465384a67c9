//! host-device: move an existing node device into the container under CNI_IFNAME and give it
//! back under its own name on DEL (the reference's `plugins/main/host-device`). The device's node name is kept in its
//! ifalias. Both moves go through an empty temporary netns, so a rename never collides with a
//! name in the container or the node; every step is undone if a later one fails.
//!
//! Better than the reference: DEL with an empty or vanished netns still releases the IPAM
//! reservation (plugins#1196), and a device renamed inside the container is still found by
//! its alias or MAC (plugins#773).

use crate::cni::config::{self, NetConf};
use crate::cni::delegate;
use crate::cni::error::{CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Interface};
use crate::cni::skel::{CmdArgs, Kind, Plugin};
use crate::linux::netlink::Link;
use crate::linux::{NetNs, Netlink};
use crate::pkg::caps::{self, Capability};
use crate::pkg::childlink::{check_container_link, container_iface};
use crate::pkg::ipam::ipam_add;
use crate::pkg::ipconfig::{self, Dad};
use crate::pkg::mac::parse_mac;
use crate::pkg::netns::{open_netns, open_netns_for_del};
use crate::pkg::undo::Undo;
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::os::fd::AsFd;
use std::path::Path;

pub static PLUGIN: Plugin = entry::<HostDevice>();

/// Where devices are looked up; the decisions below take it as a parameter, so that unit tests
/// can point them at a fake tree (no PCI device is bound to vfio-pci on a test machine).
const SYSFS: &str = "/sys";
const BUS_PCI: &str = "bus/pci/devices";
const BUS_AUX: &str = "bus/auxiliary/devices";
/// Drivers that give a PCI device to userspace (DPDK): such a device has no netdev to move.
const USERSPACE_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio"];

#[derive(Debug, Deserialize, GoKeys)]
struct HostDeviceConf {
    #[serde(flatten)]
    net: NetConf,
    #[serde(default)]
    device: String,
    #[serde(default)]
    hwaddr: String,
    #[serde(default)]
    kernelpath: String,
    #[serde(rename = "pciBusID", default)]
    pci_bus_id: String,
    /// runtimeConfig.deviceID naming an auxiliary device.
    #[serde(skip)]
    aux_device: String,
    #[serde(skip)]
    dpdk: bool,
}

impl HostDeviceConf {
    /// Parse; runtimeConfig.deviceID (a PCI or auxiliary id) overrides pciBusID; one selector
    /// is required; a PCI device bound to a userspace driver is DPDK mode.
    fn load(stdin: &[u8]) -> anyhow::Result<HostDeviceConf> {
        Self::load_in(stdin, Path::new(SYSFS))
    }

    fn load_in(stdin: &[u8], sysfs: &Path) -> anyhow::Result<HostDeviceConf> {
        let mut n: HostDeviceConf = config::parse(stdin)?;
        if let Some(id) = n.net.runtime_config.device_id.clone().filter(|d| !d.is_empty()) {
            if sysfs.join(BUS_PCI).join(&id).exists() {
                n.pci_bus_id = id;
            } else if sysfs.join(BUS_AUX).join(&id).exists() {
                n.aux_device = id;
            } else {
                bail!("runtime config DeviceID {id} not found or unsupported");
            }
        }
        if [&n.device, &n.hwaddr, &n.kernelpath, &n.pci_bus_id, &n.aux_device]
            .iter()
            .all(|s| s.is_empty())
        {
            return Err(CniError::invalid_config(
                "specify either \"device\", \"hwaddr\", \"kernelpath\" or \"pciBusID\"",
            )
            .into());
        }
        if !n.pci_bus_id.is_empty() {
            n.dpdk = has_dpdk_driver(&sysfs.join(BUS_PCI), &n.pci_bus_id)
                .map_err(|e| anyhow!("error with host device: {e}"))?;
        }
        Ok(n)
    }
}

/// A DPDK device's result names the interface the runtime asked for, in the container, with
/// no MAC (there is no netdev); the IPAM's addresses point at it. Upstream since v1.7.0
/// (bd8da200, "host-device: Return interface name in result"); Debian's 1.1.1 listed no
/// interface, which left the addresses' `interface: 0` pointing at nothing.
fn dpdk_interfaces(args: &CmdArgs) -> Vec<Interface> {
    vec![Interface {
        name: args.ifname.clone(),
        sandbox: args.netns.clone(),
        ..Default::default()
    }]
}

/// Whether `<root>/<pci>/driver` points at a userspace driver.
fn has_dpdk_driver(root: &Path, pci: &str) -> std::io::Result<bool> {
    let drv = std::fs::canonicalize(root.join(pci).join("driver"))?;
    let name = drv.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    Ok(USERSPACE_DRIVERS.contains(&name))
}

/// The first entry of a sysfs `net` directory that is a link of this netns.
fn first_net_entry(nl: &mut Netlink, dir: &Path) -> anyhow::Result<Option<Link>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read net directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        if let Some(l) = nl.link_by_name(&name)? {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

/// Find the node device by the selector of highest priority: device, hwaddr, kernelpath,
/// pciBusID, auxiliary device.
fn find_host_device(nl: &mut Netlink, n: &HostDeviceConf) -> anyhow::Result<Link> {
    let found = if !n.device.is_empty() {
        nl.link_by_name(&n.device)?
    } else if !n.hwaddr.is_empty() {
        let mac = parse_mac(&n.hwaddr).map_err(|e| anyhow!("failed to parse MAC address {:?}: {}", n.hwaddr, e.msg))?;
        nl.links()?.into_iter().find(|l| l.mac == Some(mac))
    } else if !n.kernelpath.is_empty() {
        let p = Path::new(&n.kernelpath);
        if !p.is_absolute() || !n.kernelpath.starts_with("/sys/devices/") {
            bail!(
                "kernel device path {:?} must be absolute and begin with /sys/devices/",
                n.kernelpath
            );
        }
        first_net_entry(nl, &p.join("net"))?
    } else if !n.pci_bus_id.is_empty() {
        let base = Path::new(SYSFS).join(BUS_PCI).join(&n.pci_bus_id);
        let mut dir = base.join("net");
        if !dir.exists() {
            // virtio devices keep their netdev one level down.
            dir = std::fs::read_dir(&base)
                .ok()
                .and_then(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|e| e.path())
                        .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("virtio")))
                })
                .map(|v| v.join("net"))
                .filter(|d| d.exists())
                .ok_or_else(|| anyhow!("no net directory under pci device {}", n.pci_bus_id))?;
        }
        first_net_entry(nl, &dir)?
    } else {
        first_net_entry(nl, &Path::new(SYSFS).join(BUS_AUX).join(&n.aux_device).join("net"))?
    };
    found.ok_or_else(|| anyhow!("failed to find host device: Link not found"))
}

struct HostDevice;

impl CniPlugin for HostDevice {
    const NAME: &'static str = "host-device";
    const KIND: Kind = Kind::Interface;
    const SUMMARY: &'static str = "move an existing node device into the container";
    const CAPS: &'static [Capability] = caps::IN_POD;
    type Conf = HostDeviceConf;
    type Lenient = HostDeviceConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        HostDeviceConf::load(&args.stdin)
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        HostDeviceConf::load(&args.stdin)
    }

    fn add(n: HostDeviceConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let cont_ns = open_netns(&args.netns)?;
        let mut undo = Undo::new();
        let mut result = CniResult::new(n.net.version());
        let mut cont = Netlink::in_netns(&cont_ns)?;
        let mut moved: Option<Link> = None;
        if n.dpdk {
            // Nothing to move: the device is driven from userspace.
            result.interfaces = dpdk_interfaces(args);
        } else {
            let mut host = Netlink::new()?;
            let dev = find_host_device(&mut host, &n).context("failed to find host device")?;
            let l = move_in(&mut host, &cont_ns, &mut cont, &dev, &args.ifname).context("failed to move link")?;
            let (path, idx, was_up) = (cont_ns.path().to_path_buf(), l.index, dev.up);
            undo.push(format!("give {} back to the node", dev.name), move || {
                let host_idx = move_out(&NetNs::open(&path)?, idx, &NetNs::current()?)?;
                if was_up {
                    Netlink::new()?.set_up(host_idx)?;
                }
                Ok(())
            });
            result.interfaces = vec![container_iface(&l, args)];
            moved = Some(l);
        }

        if let Some(t) = n.net.ipam_type() {
            let ipam = ipam_add(t, args, &mut undo)?;
            result.ips = ipam.ips;
            result.routes = ipam.routes;
            for ipc in &mut result.ips {
                ipc.interface = Some(0);
            }
            if moved.is_some() {
                let v6_gw = result.ips.iter().any(|i| i.gateway.is_some_and(|g| g.is_ipv6()));
                let dad = if v6_gw { Dad::Wait } else { Dad::NoWait };
                let now = ipconfig::configure_iface(&mut cont, &cont_ns, &args.ifname, &result, dad)?;
                result.interfaces = vec![container_iface(&now, args)];
            }
            result.dns = n.net.dns();
        }
        undo.commit();
        Ok(result)
    }

    /// DEL: IPAM first (also with an empty or vanished netns, unlike the reference), then the
    /// device back to the node. A device already gone from the container is fine.
    fn del(n: HostDeviceConf, args: &CmdArgs) -> anyhow::Result<()> {
        let mut errs = Failures::new();
        if let Some(t) = n.net.ipam_type() {
            errs.keep(delegate::del(t, &args.stdin, args));
        }
        if !n.dpdk {
            errs.keep(give_back(&n, args));
        }
        Ok(errs.finish()?)
    }

    fn check(n: HostDeviceConf, args: &CmdArgs) -> anyhow::Result<()> {
        let ns = open_netns(&args.netns)?;
        if let Some(t) = n.net.ipam_type() {
            delegate::check(t, &args.stdin, args)?;
        }
        if n.dpdk {
            // A DPDK device never left the host: only prevResult is required.
            n.net
                .prev_result()?
                .ok_or_else(|| anyhow!("Required prevResult missing"))?;
            return Ok(());
        }
        let (prev, intf) = ipconfig::prev_sandbox_interface(&n.net, args, "")?;
        let mut cont = Netlink::in_netns(&ns)?;
        check_container_link(&mut cont, &intf)?;
        ipconfig::validate_expected_ips(&mut cont, &args.ifname, &prev.ips)?;
        ipconfig::validate_expected_routes(&mut cont, &prev.routes)
    }
}

/// Node -> temporary netns (renamed to `ifname` there, alias = node name) -> container, up.
/// Any failure puts the device back on the node as it was (up again if it was up).
fn move_in(host: &mut Netlink, cont_ns: &NetNs, cont: &mut Netlink, dev: &Link, ifname: &str) -> anyhow::Result<Link> {
    let tmp_ns = NetNs::new_anonymous()?;
    let mut tmp = Netlink::in_netns(&tmp_ns)?;
    let restore_up = |host: &mut Netlink, idx: u32| {
        if dev.up {
            let _ = host.set_up(idx);
        }
    };
    if let Err(e) = host.set_netns(dev.index, tmp_ns.as_fd()) {
        restore_up(host, dev.index);
        return Err(e.into());
    }
    let host_ns = NetNs::current()?;
    let in_tmp = (|| -> anyhow::Result<()> {
        let l = tmp
            .link_by_name(&dev.name)?
            .ok_or_else(|| anyhow!("failed to find {:?} after moving it", dev.name))?;
        // Devices can be renamed only when down (a move already took it down).
        tmp.set_down(l.index)?;
        tmp.set_alias(l.index, Some(&dev.name))
            .with_context(|| format!("failed to set alias to {:?}", dev.name))?;
        tmp.set_name(l.index, ifname)
            .with_context(|| format!("failed to rename device {:?} to {ifname:?}", dev.name))?;
        tmp.set_netns(l.index, cont_ns.as_fd())
            .with_context(|| format!("failed to move {ifname:?} into the container"))?;
        Ok(())
    })();
    if let Err(e) = in_tmp {
        {
            // Still in the temporary netns: its node name and no alias, back to the node.
            if let Some(l) = tmp.links()?.into_iter().find(|l| l.name != "lo") {
                let _ = tmp.set_name(l.index, &dev.name);
                let _ = tmp.set_alias(l.index, None);
                if tmp.set_netns(l.index, host_ns.as_fd()).is_ok() {
                    if let Some(h) = host.link_by_name(&dev.name)? {
                        restore_up(host, h.index);
                    }
                }
            }
            return Err(e);
        }
    }
    let up = (|| -> anyhow::Result<Link> {
        let c = cont
            .link_by_name(ifname)?
            .ok_or_else(|| anyhow!("failed to find {ifname:?} in the container"))?;
        cont.set_up(c.index)
            .with_context(|| format!("failed to set {ifname:?} up"))?;
        Ok(cont.link_by_index(c.index)?.unwrap_or(c))
    })();
    if up.is_err() {
        if let Some(c) = cont.link_by_name(ifname)? {
            if let Ok(h) = move_out(cont_ns, c.index, &host_ns) {
                restore_up(host, h);
            }
        }
    }
    up
}

/// Container -> temporary netns (renamed back to its alias, alias cleared) -> node. Returns
/// the device's index on the node. If the node name is taken, the device is put back in the
/// container as it was and the error returned (the state stays intact for a retry).
fn move_out(cont_ns: &NetNs, index: u32, host_ns: &NetNs) -> anyhow::Result<u32> {
    let mut cont = Netlink::in_netns(cont_ns)?;
    let dev = cont
        .link_by_index(index)?
        .ok_or_else(|| anyhow!("failed to find link #{index} in the container"))?;
    let alias = dev
        .alias
        .clone()
        .ok_or_else(|| anyhow!("failed to find the node name of {:?}: it has no alias", dev.name))?;
    cont.set_down(dev.index)
        .with_context(|| format!("failed to set {:?} down", dev.name))?;
    let tmp_ns = NetNs::new_anonymous()?;
    let mut tmp = Netlink::in_netns(&tmp_ns)?;
    let back = |cont: &mut Netlink| {
        if dev.up {
            let _ = cont.set_up(dev.index);
        }
    };
    if let Err(e) = cont.set_netns(dev.index, tmp_ns.as_fd()) {
        back(&mut cont);
        return Err(anyhow!(e).context(format!("failed to move {:?} out of the container", dev.name)));
    }
    let t = tmp
        .link_by_name(&dev.name)?
        .ok_or_else(|| anyhow!("failed to find {:?} after moving it", dev.name))?;
    let out = (|| -> anyhow::Result<()> {
        tmp.set_name(t.index, &alias)
            .with_context(|| format!("failed to restore {:?} to original name {alias:?}", dev.name))?;
        tmp.set_alias(t.index, None)?;
        tmp.set_netns(t.index, host_ns.as_fd())
            .with_context(|| format!("failed to move {alias:?} to host netns"))?;
        Ok(())
    })();
    if let Err(e) = out {
        // Undo: the container name and alias again, back into the container.
        let _ = tmp.set_name(t.index, &dev.name);
        let _ = tmp.set_alias(t.index, Some(&alias));
        if tmp.set_netns(t.index, cont_ns.as_fd()).is_ok() {
            if let Some(c) = cont.link_by_name(&dev.name)? {
                if dev.up {
                    let _ = cont.set_up(c.index);
                }
            }
        }
        return Err(e);
    }
    let mut host = Netlink::in_netns(host_ns)?;
    Ok(host
        .link_by_name(&alias)?
        .ok_or_else(|| anyhow!("failed to find {alias:?} on the node after moving it"))?
        .index)
}

fn give_back(n: &HostDeviceConf, args: &CmdArgs) -> anyhow::Result<()> {
    let Some(cont_ns) = open_netns_for_del(&args.netns)? else {
        return Ok(());
    };
    let mut cont = Netlink::in_netns(&cont_ns)?;
    let Some(dev) = find_in_container(&mut cont, n, args)? else {
        return Ok(());
    };
    move_out(&cont_ns, dev.index, &NetNs::current()?)?;
    Ok(())
}

/// The device in the container: CNI_IFNAME with an alias, else (renamed inside) a link
/// whose alias is the configured `device`, or whose MAC is `hwaddr` or prevResult's.
fn find_in_container(cont: &mut Netlink, n: &HostDeviceConf, args: &CmdArgs) -> anyhow::Result<Option<Link>> {
    if let Some(l) = cont.link_by_name(&args.ifname)? {
        if l.alias.is_some() {
            return Ok(Some(l));
        }
    }
    let mut macs = Vec::new();
    if let Ok(m) = parse_mac(&n.hwaddr) {
        macs.push(m);
    }
    if let Ok(Some(prev)) = n.net.prev_result() {
        for i in prev.interfaces.iter().filter(|i| i.name == args.ifname) {
            if let Ok(m) = parse_mac(&i.mac) {
                macs.push(m);
            }
        }
    }
    Ok(cont.links()?.into_iter().find(|l| {
        let alias = l.alias.as_deref();
        alias.is_some()
            && ((!n.device.is_empty() && alias == Some(n.device.as_str())) || l.mac.is_some_and(|m| macs.contains(&m)))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_is_required() {
        let e = HostDeviceConf::load(br#"{"cniVersion":"1.0.0","name":"n","type":"host-device"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "specify either \"device\", \"hwaddr\", \"kernelpath\" or \"pciBusID\""
        );
        let e = HostDeviceConf::load(
            br#"{"cniVersion":"1.0.0","name":"n","type":"host-device","runtimeConfig":{"deviceID":"nope:00"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "runtime config DeviceID nope:00 not found or unsupported"
        );
    }

    /// A fake sysfs: PCI devices bound to the named drivers.
    fn fake_sysfs(tag: &str, devices: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("cm-hd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pci = root.join(BUS_PCI);
        for (dev, drv) in devices {
            let driver = root.join("bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&driver).unwrap();
            std::fs::create_dir_all(pci.join(dev)).unwrap();
            std::os::unix::fs::symlink(&driver, pci.join(dev).join("driver")).unwrap();
        }
        root
    }

    /// pciBusID or runtimeConfig.deviceID naming a device bound to vfio-pci is DPDK mode (no
    /// netdev is looked for); another driver is not; a device without a driver link is an
    /// error, as in the reference (hasDpdkDriver).
    #[test]
    fn dpdk_mode_is_decided_from_sysfs() {
        let root = fake_sysfs("dpdk", &[("0000:af:00.1", "vfio-pci"), ("0000:af:00.2", "ixgbe")]);
        let conf = |keys: &str| format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"host-device",{keys}}}"#);
        let load = |keys: &str| HostDeviceConf::load_in(conf(keys).as_bytes(), &root);
        let n = load(r#""pciBusID":"0000:af:00.1""#).unwrap();
        assert!(n.dpdk);
        let n = load(r#""runtimeConfig":{"deviceID":"0000:af:00.1"}"#).unwrap();
        assert!(n.dpdk && n.pci_bus_id == "0000:af:00.1");
        // Keys in any case, as Go reads them.
        let n = load(r#""PCIBusID":"0000:af:00.1""#).unwrap();
        assert!(n.dpdk);
        let n = load(r#""RuntimeConfig":{"DeviceID":"0000:af:00.1"}"#).unwrap();
        assert!(n.dpdk);
        assert!(!load(r#""pciBusID":"0000:af:00.2""#).unwrap().dpdk);
        let e = load(r#""pciBusID":"0000:af:00.3""#).unwrap_err().to_string();
        assert!(e.starts_with("error with host device: "), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The DPDK result: the one interface, by the name asked for, in the container, no MAC.
    #[test]
    fn dpdk_result_names_the_interface_without_a_mac() {
        let mut args = CmdArgs::example(b"{}", "");
        args.ifname = "net1".into();
        args.netns = "/run/netns/pod".into();
        let mut r = CniResult::new("1.0.0");
        r.interfaces = dpdk_interfaces(&args);
        let v = r.to_value("1.0.0").unwrap();
        assert_eq!(
            v["interfaces"],
            serde_json::json!([{"name": "net1", "sandbox": "/run/netns/pod"}])
        );
    }

    #[test]
    fn dpdk_driver_detection() {
        let root = std::env::temp_dir().join(format!("cm-hd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (dev, drv) in [("0000:00:01.0", "vfio-pci"), ("0000:00:02.0", "e1000e")] {
            std::fs::create_dir_all(root.join("drivers").join(drv)).unwrap();
            std::fs::create_dir_all(root.join(dev)).unwrap();
            std::os::unix::fs::symlink(root.join("drivers").join(drv), root.join(dev).join("driver")).unwrap();
        }
        assert!(has_dpdk_driver(&root, "0000:00:01.0").unwrap());
        assert!(!has_dpdk_driver(&root, "0000:00:02.0").unwrap());
        assert!(has_dpdk_driver(&root, "0000:00:03.0").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(HostDeviceConf::shape()).unwrap();
        let n = HostDeviceConf::load(
            br#"{"cniVersion":"1.0.0","name":"n","type":"host-device","Device":"eth9","HWAddr":"0a:58:00:00:00:01",
                 "KernelPath":"/sys/x","IPAM":{"Type":"host-local"}}"#,
        )
        .unwrap();
        assert_eq!(
            (n.device.as_str(), n.hwaddr.as_str(), n.kernelpath.as_str()),
            ("eth9", "0a:58:00:00:00:01", "/sys/x")
        );
        assert_eq!(n.net.ipam_type(), Some("host-local"));
    }
}
