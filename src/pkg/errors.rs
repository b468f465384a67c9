//! Errors of a best-effort DEL, joined into one.

use crate::cni::error::{code, CniError};

/// Collect several failures of a best-effort DEL into one error naming all of them.
pub fn join_errors(errs: Vec<anyhow::Error>) -> anyhow::Result<()> {
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.into_iter().next().expect("one error")),
        _ => {
            // Keep the first CNI code (e.g. from IPAM) and list every message.
            let code = errs
                .iter()
                .find_map(|e| e.chain().find_map(|c| c.downcast_ref::<CniError>().map(|c| c.code)))
                .unwrap_or(code::INTERNAL);
            let msg = errs.iter().map(|e| format!("{e:#}")).collect::<Vec<_>>().join("; ");
            Err(CniError::new(code, msg).into())
        }
    }
}
