//! The CNI protocol, pure: no syscalls, testable without root.
//!
//! `skel` is the plugin's side of the exec protocol; `plugin` the shape every plugin
//! implements; `result` holds every spec version's result; `config` the shared config keys; `gokeys` matches JSON keys as Go's decoder does; `delegate` finds and runs
//! delegated plugins (in-process when they are built in).

pub mod args;
pub mod config;
pub mod delegate;
pub mod error;
pub mod gokeys;
pub mod json;
pub mod plugin;
pub mod result;
pub mod skel;
pub mod version;

pub use error::{code, CniError};
pub use result::CniResult;
pub use skel::{CmdArgs, Command, Plugin};
