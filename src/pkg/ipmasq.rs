//! The plugin side of ipMasq for bridge and ptp: set up with its rollback, CHECK, and GC of
//! the attachments not in the valid list. The rules themselves are [`super::masquerade`]'s.

use crate::cni::config::NetConf;
use crate::cni::result::CniResult;
use crate::cni::skel::CmdArgs;
use crate::linux::nft::NftSocket;
use crate::pkg::masq_iptables::{self, MasqBackend};
use crate::pkg::masquerade;
use crate::pkg::undo::Undo;
use ipnet::IpNet;

/// ipMasq: masquerade what leaves each pod address's subnet.
/// Returns the socket so that the caller decides when it is closed (see `add`).
pub fn setup_masquerade(
    network: &str,
    backend: MasqBackend,
    args: &CmdArgs,
    result: &CniResult,
    undo: &mut Undo,
) -> anyhow::Result<NftSocket> {
    let ips: Vec<IpNet> = result.ips.iter().map(|i| i.address).collect();
    let sock = NftSocket::open()?;
    if backend == MasqBackend::Iptables {
        masq_iptables::setup(&sock, network, &args.container_id, &ips)?;
        let (net, cid) = (network.to_string(), args.container_id.clone());
        undo.push(format!("remove IP masquerading (iptables) of {cid}"), move || {
            masq_iptables::teardown(&NftSocket::open()?, &net, &cid)
        });
        return Ok(sock);
    }
    masquerade::setup(&sock, network, &args.ifname, &args.container_id, &ips)?;
    let (net, cid, ifname) = (network.to_string(), args.container_id.clone(), args.ifname.clone());
    undo.push(format!("remove IP masquerading of {cid}/{ifname}"), move || {
        masquerade::teardown(&NftSocket::open()?, &net, &ifname, &cid)
    });
    Ok(sock)
}

/// GC of the masquerade rules: those of attachments not in the valid list go.
pub fn gc_masquerade(net: &NetConf) -> anyhow::Result<()> {
    let Some(valid) = net.gc_valid_attachments() else {
        return Ok(());
    };
    let valid: Vec<(&str, &str)> = valid
        .iter()
        .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
        .collect();
    masquerade::gc(&NftSocket::open()?, &net.name, &valid)
}

/// CHECK of ipMasq: each of the attachment's addresses has its rule.
pub fn check_masquerade(network: &str, backend: MasqBackend, args: &CmdArgs, prev: &CniResult) -> anyhow::Result<()> {
    let ips: Vec<IpNet> = prev.ips.iter().map(|i| i.address).collect();
    if backend == MasqBackend::Iptables {
        return masq_iptables::check(&NftSocket::open()?, network, &args.container_id, &ips);
    }
    masquerade::check(&NftSocket::open()?, network, &args.ifname, &args.container_id, &ips)
}
