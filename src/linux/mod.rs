//! The kernel, typed: no CNI words.
