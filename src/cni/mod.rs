//! The CNI protocol, pure: no syscalls.
