//! CNI_NETNS opening with the CNI codes the spec gives: 3 for a netns that does not exist,
//! 4 for a path that is not a network namespace; DEL treats a vanished netns as done.

use crate::cni::error::{code, CniError};
use crate::linux::{NetNs, NsError};

/// Open CNI_NETNS for ADD/CHECK: a path that does not exist is an unknown container
/// (code 3), one that is not a network namespace a bad CNI_NETNS (code 4).
pub fn open_netns(path: &str) -> Result<NetNs, CniError> {
    NetNs::open(path).map_err(|e| match e {
        NsError::NotExist(_) => CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("failed to open netns {path:?}: it does not exist"),
        ),
        NsError::NotNetns(_) => CniError::new(
            code::INVALID_ENV,
            format!("failed to open netns {path:?}: not a network namespace"),
        ),
        NsError::Other(e) => CniError::internal(format!("failed to open netns {path:?}: {e}")),
    })
}

/// Open CNI_NETNS for DEL: empty or vanished means "already gone" (None), which DEL
/// must treat as success.
pub fn open_netns_for_del(path: &str) -> Result<Option<NetNs>, CniError> {
    if path.is_empty() {
        return Ok(None);
    }
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(NsError::NotExist(_)) => Ok(None),
        Err(e) => Err(CniError::internal(format!("failed to open netns {path:?}: {e}"))),
    }
}
