//! The veth pair of bridge and ptp: the container end is created as CNI_IFNAME straight in
//! the container netns and the host end, `veth` + 8 random hex digits, straight in the host
//! netns, by one RTM_NEWLINK. Nothing half-made is ever left in the wrong namespace.

use crate::linux::netlink::{Link, LinkSpec, VethPeer};
use crate::linux::{sysctl, NetNs, Netlink};
use anyhow::{anyhow, bail, Context};
use std::io::Read;
use std::os::fd::AsFd;

/// Both ends, as the kernel reports them right after creation.
#[derive(Debug, Clone)]
pub struct VethPair {
    pub host: Link,
    pub container: Link,
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct VethOpts {
    /// MTU of both ends (kernel default when None).
    pub mtu: Option<u32>,
    /// MAC of the container end.
    pub container_mac: Option<[u8; 6]>,
    /// Skip IPv6 DAD on the host end (`accept_dad=0`): on a point-to-point link its only
    /// neighbour is the container, and a tentative link-local there makes the node solicit
    /// from `::` and leaves routed traffic unresolved for the first second (ptp).
    pub host_no_dad: bool,
}

/// `veth` + 8 hex digits from 4 random bytes (the reference's `RandomVethName`).
pub fn random_veth_name() -> anyhow::Result<String> {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("failed to generate random veth name")?;
    Ok(format!("veth{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]))
}

/// Create the pair from the container side (`cont_nl` is bound to the container netns,
/// `host_nl` to `host_ns`, where this process runs). The host end is set up with
/// `accept_ra=0` (we own its routes); the container end is left down for the caller to
/// configure. A clash of the random host name is retried up to 10 times; a clash of
/// `ifname` in the container is an error.
pub fn create_pair(
    cont_nl: &mut Netlink,
    host_nl: &mut Netlink,
    host_ns: &NetNs,
    ifname: &str,
    opts: &VethOpts,
) -> anyhow::Result<VethPair> {
    for _ in 0..10 {
        let peer = random_veth_name()?;
        let host_end = VethPeer::new(peer.as_str()).netns(host_ns.as_fd());
        let mut spec = match opts.mtu {
            Some(m) => LinkSpec::veth(ifname, host_end.mtu(m)).mtu(m),
            None => LinkSpec::veth(ifname, host_end),
        };
        if let Some(mac) = opts.container_mac {
            spec = spec.mac(mac);
        }
        // The kernel's echo is the container end: no lookup of it after the create.
        let echoed = match cont_nl.create_link_echo(&spec) {
            Ok(l) => l,
            Err(e) if e.is_exists() => {
                if cont_nl.link_by_name(ifname)?.is_some() {
                    bail!("container veth name provided ({ifname}) already exists");
                }
                continue; // the random host name was taken: try another
            }
            Err(e) => return Err(anyhow!(e).context("failed to make veth pair")),
        };
        let host = host_nl
            .link_by_name(&peer)?
            .ok_or_else(|| anyhow!("failed to lookup {peer:?}: link vanished after creation"))?;
        // From here on, deleting the host end removes the pair; do it if anything fails.
        let mut finish = || -> anyhow::Result<VethPair> {
            let container = match echoed.clone() {
                Some(l) => l,
                None => cont_nl
                    .link_by_name(ifname)?
                    .ok_or_else(|| anyhow!("failed to lookup {ifname:?} in the container"))?,
            };
            if opts.host_no_dad {
                let _ = sysctl::write(&format!("net/ipv6/conf/{peer}/accept_dad"), "0");
            }
            host_nl
                .set_up(host.index)
                .with_context(|| format!("failed to set {peer:?} up"))?;
            // Best effort like the reference: fails harmlessly when IPv6 is disabled.
            let _ = sysctl::write(&format!("net/ipv6/conf/{peer}/accept_ra"), "0");
            // Up is the only change since the lookup: no second one.
            let host = Link {
                up: true,
                ..host.clone()
            };
            Ok(VethPair { host, container })
        };
        let r = finish();
        if r.is_err() {
            let _ = host_nl.delete_link(host.index);
        }
        return r;
    }
    bail!("failed to find a unique veth name")
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_names() {
        let a = super::random_veth_name().unwrap();
        let b = super::random_veth_name().unwrap();
        assert_eq!(a.len(), 12);
        assert!(a.starts_with("veth") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
