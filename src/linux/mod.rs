//! The kernel, typed: no CNI words.

pub mod privileges;
