//! cni-multi: every CNI plugin a Linux node needs, in one executable.
//!
//! Direction of imports: `interface`, `ipam`, `meta` -> `pkg` -> `cni`, `linux`; `runtime` -> `cni`;
//! `cli` -> everything. `cni` never imports `linux`; `linux` never imports `cni`.

/// Fieldless enums whose discriminants are the numbers of a wire format (the kernel's, DHCP's),
/// each with `from_raw`, the variant a number stands for: every number is written once, in
/// the table, instead of again in a decoding `match`.
macro_rules! numbered_enums {
    ($($(#[$meta:meta])* $vis:vis enum $name:ident: $raw:ty {
        $($(#[$vmeta:meta])* $var:ident = $val:literal),+ $(,)?
    })+) => {$(
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $var = $val),+
        }

        impl $name {
            /// The variant `v` stands for; None for a number the table does not name.
            $vis fn from_raw(v: $raw) -> Option<Self> {
                match v {
                    $($val => Some(Self::$var),)+
                    _ => None,
                }
            }
        }
    )+};
}

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
