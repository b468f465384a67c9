//! Network configuration lists (`*.conflist`, and single `*.conf`/`*.json` upgraded to
//! a list), loaded the way libcni loads them.

use crate::cni::error::CniError;
use crate::cni::version::{Version, ALL};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Value>,
    /// The bytes the list was loaded from (the result cache keeps them).
    pub bytes: Vec<u8>,
}

/// libcni accepts a JSON bool or the strings "true"/"false" in any case.
fn parse_bool(v: Option<&Value>, key: &str) -> Result<bool, CniError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(CniError::invalid_config(format!(
            "{key:?} must be a boolean, got {other}"
        ))),
    }
}

impl NetworkList {
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkList, CniError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                crate::cni::code::DECODING_FAILURE,
                format!("error parsing configuration list: {e}"),
            )
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| CniError::invalid_config("configuration list is not a JSON object"))?;
        let name = obj.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if name.is_empty() {
            return Err(CniError::invalid_config("error parsing configuration list: no name"));
        }
        crate::cni::config::validate_network_name(&name)?;
        let mut version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("").to_string();
        // cniVersions (1.1): the highest version we support among those listed.
        if let Some(list) = obj.get("cniVersions").and_then(Value::as_array) {
            let mut best: Option<(Version, String)> = if version.is_empty() {
                None
            } else {
                Some((Version::parse(&version)?, version.clone()))
            };
            for s in list.iter().filter_map(Value::as_str) {
                let v = Version::parse(s)?;
                if v > Version::parse(crate::cni::version::CURRENT)? {
                    continue;
                }
                if best.as_ref().map(|(b, _)| v > *b).unwrap_or(true) {
                    best = Some((v, s.to_string()));
                }
            }
            if let Some((_, s)) = best {
                version = s;
            }
        }
        if !version.is_empty() && !ALL.contains(&version.as_str()) {
            return Err(CniError::new(
                crate::cni::code::INCOMPATIBLE_VERSION,
                format!("unsupported cniVersion {version:?}"),
            ));
        }
        let plugins = match obj.get("plugins") {
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(CniError::invalid_config(
                    "error parsing configuration list: invalid plugins",
                ))
            }
            None if obj.contains_key("type") => vec![v.clone()], // a single .conf
            None => {
                return Err(CniError::invalid_config(
                    "error parsing configuration list: no plugins in list",
                ))
            }
        };
        if plugins.is_empty() {
            return Err(CniError::invalid_config(
                "error parsing configuration list: no plugins in list",
            ));
        }
        Ok(NetworkList {
            name,
            cni_version: version,
            disable_check: parse_bool(obj.get("disableCheck"), "disableCheck")?,
            disable_gc: parse_bool(obj.get("disableGC"), "disableGC")?,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// The first `*.conflist` (by file name) in `dir` whose name matches, else the first
    /// matching `*.conf`/`*.json` upgraded to a one-plugin list.
    pub fn load(dir: &Path, name: &str) -> Result<NetworkList, CniError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| CniError::internal(format!("no net configurations found in {}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for exts in [&["conflist"][..], &["conf", "json"][..]] {
            for f in files
                .iter()
                .filter(|f| f.extension().map(|e| exts.iter().any(|x| e == *x)).unwrap_or(false))
            {
                let Ok(bytes) = std::fs::read(f) else { continue };
                if let Ok(list) = NetworkList::from_bytes(&bytes) {
                    if list.name == name {
                        return Ok(list);
                    }
                }
            }
        }
        Err(CniError::internal(format!(
            "no net configuration with name {name:?} in {}",
            dir.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_single_confs() {
        let l = NetworkList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","disableCheck":"TRUE","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert!(l.disable_check);
        assert!(!l.disable_gc);
        let l = NetworkList::from_bytes(br#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#).unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert!(NetworkList::from_bytes(br#"{"name":"n","plugins":[]}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"name":"n","disableGC":"maybe","plugins":[{"type":"x"}]}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"plugins":[{"type":"x"}]}"#).is_err());
    }

    /// libcni reads a list's own keys from a map, so exactly, and so does cni-multi net; a
    /// single .conf's keys (libcni decodes it into a Go struct, any case) are read exactly
    /// too: the documented difference of the runtime side (doc/differences.md).
    #[test]
    fn list_keys_are_exact_as_in_libcni() {
        let e = NetworkList::from_bytes(br#"{"Name":"n","plugins":[{"type":"x"}]}"#).unwrap_err();
        assert!(e.msg.contains("no name"), "{}", e.msg);
        let e = NetworkList::from_bytes(br#"{"name":"n","Plugins":[{"type":"x"}]}"#).unwrap_err();
        assert!(e.msg.contains("no plugins"), "{}", e.msg);
        let l = NetworkList::from_bytes(br#"{"name":"n","DisableCheck":true,"plugins":[{"type":"x"}]}"#).unwrap();
        assert!(!l.disable_check);
        assert!(NetworkList::from_bytes(br#"{"name":"n","Type":"bridge"}"#).is_err());
    }

    #[test]
    fn cni_versions_picks_highest_supported() {
        let l = NetworkList::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0","2.0.0"],"name":"n","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, "1.1.0");
    }
}
