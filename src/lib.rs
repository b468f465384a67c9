//! cni-multi: every CNI plugin a Linux node needs, in one executable.
//!
//! Direction of imports: `interface`, `ipam`, `meta` -> `cni`, `linux`; `runtime` -> `cni`;
//! `cli` -> everything. `cni` never imports `linux`; `linux` never imports `cni`.

pub mod cli;
pub mod cni;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod interface;
pub mod ipam;
pub mod linux;
pub mod meta;
pub mod plugins;
pub mod runtime;
pub mod undo;
