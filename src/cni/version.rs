//! Spec versions: the supported set, parsing, ordering, and the VERSION reply.

use super::error::{code, CniError};

/// Every spec version cni-multi speaks, oldest first.
pub const ALL: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest version: what VERSION reports as its own `cniVersion`.
pub const CURRENT: &str = "1.1.0";

/// A parsed `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Parse like the Go library: missing minor/patch count as 0, anything else is an error.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        let bad = || CniError::new(code::DECODING_FAILURE, format!("invalid version {s:?}"));
        let s = if s.is_empty() { "0.1.0" } else { s };
        let mut parts = s.split('.');
        let mut next = |required: bool| -> Result<u32, CniError> {
            match parts.next() {
                Some(p) => p.parse::<u32>().map_err(|_| bad()),
                None if required => Err(bad()),
                None => Ok(0),
            }
        };
        let v = Version(next(true)?, next(false)?, next(false)?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }

    pub fn at_least(s: &str, min: &str) -> Result<bool, CniError> {
        Ok(Version::parse(s)? >= Version::parse(min)?)
    }
}

/// The config's version, as the Go skel decodes it (the key in any case): absent or empty
/// means 0.1.0.
pub fn of_config(stdin: &[u8]) -> Result<String, CniError> {
    #[derive(serde::Deserialize, super::gokeys::GoKeys)]
    struct V {
        #[serde(rename = "cniVersion", default)]
        v: Option<String>,
    }
    let v: V = super::gokeys::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODING_FAILURE,
            format!("decoding version from network config: {e}"),
        )
    })?;
    Ok(match v.v {
        Some(s) if !s.is_empty() => s,
        _ => "0.1.0".to_string(),
    })
}

/// Exact string match against the plugin's list, as the reference does.
pub fn check_supported(config: &str, supported: &[&str]) -> Result<(), CniError> {
    if supported.contains(&config) {
        return Ok(());
    }
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Err(CniError::new(code::INCOMPATIBLE_VERSION, "incompatible CNI versions")
        .with_details(format!("config is {config:?}, plugin supports [{}]", list.join(" "))))
}

/// The VERSION reply: compact JSON plus a newline, like Go's json.Encoder.
pub fn version_reply(supported: &[&str]) -> String {
    let v = serde_json::json!({ "cniVersion": CURRENT, "supportedVersions": supported });
    format!("{v}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_order() {
        assert_eq!(Version::parse("0.3.1").unwrap(), Version(0, 3, 1));
        assert_eq!(Version::parse("1.0").unwrap(), Version(1, 0, 0));
        assert_eq!(Version::parse("").unwrap(), Version(0, 1, 0));
        assert!(Version::parse("a.b").is_err());
        assert!(Version::parse("1.2.3.4").is_err());
        assert!(Version::at_least("0.4.0", "0.4.0").unwrap());
        assert!(!Version::at_least("0.3.1", "0.4.0").unwrap());
        assert!(Version::at_least("1.1.0", "1.1.0").unwrap());
    }

    #[test]
    fn config_version_defaults_to_010() {
        assert_eq!(of_config(br#"{"name":"x"}"#).unwrap(), "0.1.0");
        assert_eq!(of_config(br#"{"cniVersion":""}"#).unwrap(), "0.1.0");
        assert_eq!(of_config(br#"{"cniVersion":"1.0.0"}"#).unwrap(), "1.0.0");
    }

    #[test]
    fn exact_match_only() {
        assert!(check_supported("0.4.0", ALL).is_ok());
        let e = check_supported("0.4", ALL).unwrap_err();
        assert_eq!(e.code, 1);
        assert_eq!(e.msg, "incompatible CNI versions");
        assert!(e.details.starts_with("config is \"0.4\", plugin supports [\"0.1.0\" "));
    }

    #[test]
    fn version_reply_shape() {
        assert_eq!(
            version_reply(&["0.4.0", "1.0.0"]),
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}\n"
        );
    }
}
