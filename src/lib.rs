//! cni-multi: every CNI plugin a Linux node needs, in one executable.
//!
//! Direction of imports: `interface`, `ipam`, `meta` -> `pkg` -> `cni`, `linux`; `runtime` -> `cni`;
//! `cli` -> everything. `cni` never imports `linux`; `linux` never imports `cni`.

pub mod cli;
pub mod cni;
pub mod demo;
pub mod explain;
pub mod fileid;
#[doc(hidden)]
pub mod fuzzing;
pub mod inspect;
pub mod interface;
pub mod invocation_log;
pub mod ipam;
pub mod linux;
pub mod meta;
pub mod pkg;
pub mod plugins;
pub mod runtime;
