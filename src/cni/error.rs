//! The CNI error object and the spec's well-known codes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Well-known error codes (CNI SPEC.md, "Result Types" > "Error"; 8 and 999 come from the Go
/// library).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const INVALID_NETNS: u32 = 8;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    pub const INTERNAL: u32 = 999;
}

/// `{code, msg, details}` as printed on stdout when a plugin fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, super::gokeys::GoKeys)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }

    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(code::UNSUPPORTED_FIELD, msg)
    }

    /// Turn any error into a CNI error: a `CniError` anywhere in the chain gives the
    /// code; the message keeps every layer of context (`outer: inner`).
    pub fn from_anyhow(err: &anyhow::Error) -> Self {
        if let Some(e) = err.downcast_ref::<CniError>() {
            // The outermost layer is the CniError itself (no extra context).
            if err.chain().count() == 1 {
                return e.clone();
            }
        }
        let code = err
            .chain()
            .find_map(|c| c.downcast_ref::<CniError>().map(|e| e.code))
            .unwrap_or(code::INTERNAL);
        let details = err
            .chain()
            .find_map(|c| c.downcast_ref::<CniError>().map(|e| e.details.clone()))
            .unwrap_or_default();
        CniError {
            code,
            msg: format!("{err:#}"),
            details,
        }
    }

    /// The pretty-printed JSON the reference prints (4-space indent, no newline).
    pub fn to_json(&self) -> String {
        super::json::to_pretty_json(self)
    }
}

/// The failures of a verb that goes on after an error (DEL, GC: remove as much as possible,
/// then report everything), collected in order. Each keeps its code, message and context;
/// [`Failures::finish`] ends them in one CNI error.
#[derive(Debug, Default)]
pub struct Failures {
    prefix: Option<String>,
    list: Vec<anyhow::Error>,
}

impl Failures {
    pub fn new() -> Self {
        Self::default()
    }

    /// Failures whose one error will read `<prefix>: <messages>`.
    pub fn under(prefix: impl Into<String>) -> Self {
        Failures {
            prefix: Some(prefix.into()),
            list: Vec::new(),
        }
    }

    /// Records a failure; context added to it (`.context(…)`) is part of its message.
    pub fn push(&mut self, err: impl Into<anyhow::Error>) {
        self.list.push(err.into());
    }

    /// `r`'s value, or None with its error recorded.
    pub fn keep<T, E: Into<anyhow::Error>>(&mut self, r: Result<T, E>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Ok when nothing failed. One failure stays itself (code, message, details). Several
    /// become one: the first code any of them carries (999 when none does: what Go's
    /// `errors.As` finds in an `errors.Join`), and every message, in order, joined by "; ".
    pub fn finish(self) -> Result<(), CniError> {
        let mut err = match self.list.len() {
            0 => return Ok(()),
            1 => CniError::from_anyhow(&self.list[0]),
            _ => {
                let code = self
                    .list
                    .iter()
                    .find_map(|e| e.chain().find_map(|c| c.downcast_ref::<CniError>().map(|c| c.code)))
                    .unwrap_or(code::INTERNAL);
                let msg = self
                    .list
                    .iter()
                    .map(|e| format!("{e:#}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                CniError::new(code, msg)
            }
        };
        if let Some(p) = self.prefix {
            err.msg = format!("{p}: {}", err.msg);
        }
        Err(err)
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn json_omits_empty_details() {
        let e = CniError::new(7, "missing network name");
        assert_eq!(
            e.to_json(),
            "{\n    \"code\": 7,\n    \"msg\": \"missing network name\"\n}"
        );
        let e = e.with_details("d");
        assert!(e.to_json().contains("\"details\": \"d\""));
    }

    #[test]
    fn failures_end_in_one_error() {
        assert_eq!(Failures::new().finish(), Ok(()));
        // One failure stays itself, details included; context is part of its message.
        let mut f = Failures::new();
        f.push(CniError::new(3, "gone").with_details("d"));
        assert_eq!(f.finish(), Err(CniError::new(3, "gone").with_details("d")));
        let mut f = Failures::new();
        f.push(anyhow::Error::from(CniError::new(3, "gone")).context("outer"));
        assert_eq!(f.finish(), Err(CniError::new(3, "outer: gone")));
        // Several: the first code any of them carries, every message in order.
        let mut f = Failures::under("x GC");
        f.push(anyhow::anyhow!("plain"));
        assert_eq!(f.keep(Ok::<_, CniError>(5)), Some(5));
        assert_eq!(f.keep(Err::<(), _>(CniError::new(11, "later"))), None);
        f.push(CniError::new(7, "last"));
        assert!(!f.is_empty());
        assert_eq!(f.finish(), Err(CniError::new(11, "x GC: plain; later; last")));
        // None carries a code: 999.
        let mut f = Failures::new();
        f.push(anyhow::anyhow!("a"));
        f.push(anyhow::anyhow!("b"));
        assert_eq!(f.finish(), Err(CniError::internal("a; b")));
    }

    #[test]
    fn anyhow_keeps_code_and_context() {
        let inner: anyhow::Result<()> = Err(CniError::new(2, "bad key").into());
        let e = inner.context("outer").unwrap_err();
        let c = CniError::from_anyhow(&e);
        assert_eq!(c.code, 2);
        assert_eq!(c.msg, "outer: bad key");
        let plain = anyhow::anyhow!("boom");
        assert_eq!(CniError::from_anyhow(&plain).code, 999);
        let direct: anyhow::Error = CniError::new(4, "x").with_details("y").into();
        assert_eq!(CniError::from_anyhow(&direct), CniError::new(4, "x").with_details("y"));
    }
}
