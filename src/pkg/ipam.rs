//! The IPAM glue of interface plugins: ADD with its rollback and the required IPAM type. (STATUS and GC delegated to the IPAM are
//! the defaults of `cni::plugin::CniPlugin`.)

use crate::cni::config::NetConf;
use crate::cni::error::{CniError, Failures};
use crate::cni::result::CniResult;
use crate::cni::skel::CmdArgs;
use crate::pkg::undo::Undo;

/// Run the IPAM ADD, register its DEL for rollback, and require at least one address. The
/// IPAM's error is returned as is (its code and message are what the reference prints).
pub fn ipam_add(ipam_type: &str, args: &CmdArgs, undo: &mut Undo) -> anyhow::Result<CniResult> {
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

/// The IPAM type of a plugin that cannot work without addresses (code 7 when there is none).
pub fn required_ipam<'a>(net: &'a NetConf, plugin: &str) -> Result<&'a str, CniError> {
    net.ipam_type()
        .ok_or_else(|| CniError::invalid_config(format!("{plugin} requires an IPAM plugin: ipam.type is empty")))
}

/// The end of an interface plugin's DEL: IPAM DEL when an IPAM type is set (first, as the
/// reference does: a DHCP lease is released by a packet sent on the container's link), then
/// the container link. Both are tried; their failures join `errs`, the earlier steps' ones.
pub fn release_then_del_link(net: &NetConf, args: &CmdArgs, mut errs: Failures) -> anyhow::Result<()> {
    if let Some(t) = net.ipam_type() {
        errs.keep(crate::cni::delegate::del(t, &args.stdin, args));
    }
    errs.keep(crate::pkg::link::del_container_link(&args.netns, &args.ifname));
    Ok(errs.finish()?)
}
