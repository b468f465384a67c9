//! The kernel, typed: no CNI words.
pub mod nft;
