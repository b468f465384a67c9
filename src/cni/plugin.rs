//! The one shape of a plugin: [`CniPlugin`], which every plugin file implements, and
//! [`entry`], which turns an implementation into the [`Plugin`] table entry the skel
//! dispatches on (one monomorphised function per verb).
//!
//! The config is read once per verb, before the verb runs: strictly for ADD and CHECK
//! ([`CniPlugin::load`]), leniently for DEL ([`CniPlugin::parse`]), because DEL must undo
//! an attachment whose config ADD would now refuse (an upgrade, an edited file). STATUS and
//! GC are about the network, not one attachment; by default they read only the shared keys
//! and ask the IPAM.

use super::config::{self, NetConf};
use super::result::CniResult;
use super::skel::{CmdArgs, Kind, Plugin};
use super::{delegate, version};

pub trait CniPlugin {
    /// The name runtimes call it by (`type` in the config).
    const NAME: &'static str;
    const KIND: Kind;
    /// One line for `cni-multi list` and the docs.
    const SUMMARY: &'static str;
    const VERSIONS: &'static [&'static str] = version::ALL;
    /// The capabilities it keeps (a set from `pkg::caps`); no default, so that a new plugin
    /// cannot run with a set nobody chose.
    const CAPS: &'static [caps::Capability];
    /// Whether STATUS / GC do anything; when false the verb succeeds without reading the
    /// config (the Go skel's nil callback).
    const HAS_STATUS: bool = true;
    const HAS_GC: bool = true;

    /// The config as ADD and CHECK see it: parsed and validated.
    type Conf;
    /// The config as DEL sees it: what DEL needs to undo an attachment, and no more checks.
    type Lenient;

    /// Strict: every key ADD uses is checked (code 7 with the key named).
    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf>;
    /// Lenient: accepts configs [`CniPlugin::load`] refuses, where DEL can still work.
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient>;

    fn add(conf: Self::Conf, args: &CmdArgs) -> anyhow::Result<CniResult>;
    fn del(conf: Self::Lenient, args: &CmdArgs) -> anyhow::Result<()>;
    fn check(conf: Self::Conf, args: &CmdArgs) -> anyhow::Result<()>;

    /// Default: the IPAM's STATUS when the config names one.
    fn status(args: &CmdArgs) -> anyhow::Result<()> {
        ipam_status(args)
    }

    /// Default: the IPAM's GC when the config names one (links die with their netns, so
    /// the IPAM's reservations are all a plain interface plugin leaves outside it).
    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        ipam_gc(args)
    }
}

/// The table entry of plugin `P`.
pub const fn entry<P: CniPlugin>() -> Plugin {
    Plugin {
        name: P::NAME,
        kind: P::KIND,
        summary: P::SUMMARY,
        versions: P::VERSIONS,
        caps: P::CAPS,
        add: add::<P>,
        del: del::<P>,
        check: Some(check::<P>),
        status: if P::HAS_STATUS { Some(P::status) } else { None },
        gc: if P::HAS_GC { Some(P::gc) } else { None },
        load: load::<P>,
    }
}

fn add<P: CniPlugin>(args: &CmdArgs) -> anyhow::Result<CniResult> {
    P::add(P::load(args)?, args)
}

fn del<P: CniPlugin>(args: &CmdArgs) -> anyhow::Result<()> {
    P::del(P::parse(args)?, args)
}

fn check<P: CniPlugin>(args: &CmdArgs) -> anyhow::Result<()> {
    P::check(P::load(args)?, args)
}

fn load<P: CniPlugin>(args: &CmdArgs) -> anyhow::Result<()> {
    P::load(args).map(drop)
}

/// STATUS of a plugin whose readiness is its IPAM's: delegated when an IPAM type is set.
pub fn ipam_status(args: &CmdArgs) -> anyhow::Result<()> {
    to_ipam(args, delegate::status)
}

/// GC of a plugin whose only state outside the container netns is its IPAM's reservations:
/// delegated when an IPAM type is set.
pub fn ipam_gc(args: &CmdArgs) -> anyhow::Result<()> {
    to_ipam(args, delegate::gc)
}

type Delegated = fn(&str, &[u8], &CmdArgs) -> Result<(), super::CniError>;

fn to_ipam(args: &CmdArgs, verb: Delegated) -> anyhow::Result<()> {
    let net: NetConf = config::parse(&args.stdin)?;
    match net.ipam_type() {
        Some(t) => Ok(verb(t, &args.stdin, args)?),
        None => Ok(()),
    }
}
