//! Network configurations, loaded the way libcni (v1.3, spec 1.1.0) loads them.
//!
//! - `load(dir, name)` is `LoadNetworkConf`: every `*.conflist` in `dir` in file-name order
//!   (each one read completely, so a malformed one is an error even when it names another
//!   network), the first whose name matches; else the deprecated single `*.conf`/`*.json`
//!   files, upgraded to a one-plugin list (they get no plugins from a directory).
//! - A list read from a file (`from_file`, `NetworkConfFromFile`) gets the inlined `plugins`
//!   and then, unless `loadOnlyInlinedPlugins` is true, one plugin per
//!   `<the file's dir>/<network name>/*.conf` in file-name order, appended. A list that ends
//!   with no plugin at all is an error; so is `loadOnlyInlinedPlugins` without `plugins`.
//!
//! Every error names the file it comes from.

use crate::cni::error::{code, CniError};
use crate::cni::version::{Version, ALL};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<Value>,
    /// The bytes the list was loaded from (the result cache keeps them, as libcni's does: the
    /// list file's, without plugins from its directory).
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
            "error parsing configuration list: invalid value {other} for {key}"
        ))),
    }
}

fn decode(bytes: &[u8], what: &str) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CniError::invalid_config(format!("{what} is not a JSON object"))),
        Err(e) => Err(CniError::new(
            code::DECODING_FAILURE,
            format!("error parsing {what}: {e}"),
        )),
    }
}

/// A plugin configuration object: a JSON object with a `type` (libcni's
/// NetworkPluginConfFromBytes).
fn plugin_conf(v: &Value) -> Result<(), CniError> {
    match v.get("type") {
        Some(Value::String(t)) if !t.is_empty() => Ok(()),
        _ if !v.is_object() => Err(CniError::invalid_config(
            "error parsing configuration: not a JSON object",
        )),
        _ => Err(CniError::invalid_config("error parsing configuration: missing 'type'")),
    }
}

/// `e` with the file it came from in front.
fn in_file(path: &Path, e: CniError) -> CniError {
    CniError {
        msg: format!("{}: {}", path.display(), e.msg),
        ..e
    }
}

/// The files of `dir` whose extension is one of `exts`, sorted by name; directories are
/// skipped (libcni's ConfFiles). A missing `dir` has none.
fn conf_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, std::io::Error> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for e in rd {
        let e = e?;
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let p = e.path();
        if p.extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| exts.contains(&x))
        {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, CniError> {
    std::fs::read(path).map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading {}: {e}", path.display())))
}

impl NetworkList {
    /// A network configuration list (libcni's NetworkConfFromBytes): `plugins` may be absent
    /// (plugins then come from the directory only), but not with `loadOnlyInlinedPlugins`.
    pub fn parse_list(bytes: &[u8]) -> Result<NetworkList, CniError> {
        let obj = decode(bytes, "configuration list")?;
        let name = match obj.get("name") {
            Some(Value::String(n)) if !n.is_empty() => n.clone(),
            Some(Value::String(_)) | None => {
                return Err(CniError::invalid_config("error parsing configuration list: no name"))
            }
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "error parsing configuration list: invalid name type {other}"
                )))
            }
        };
        // The name becomes a directory name (`<dir>/<name>/`) and a cache key.
        crate::cni::config::validate_network_name(&name)?;
        let cni_version = select_version(&obj)?;
        let load_only_inlined_plugins = parse_bool(obj.get("loadOnlyInlinedPlugins"), "loadOnlyInlinedPlugins")?;
        let plugins = match obj.get("plugins") {
            None if load_only_inlined_plugins => {
                return Err(CniError::invalid_config(
                    "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key",
                ))
            }
            None => Vec::new(),
            Some(Value::Array(a)) if a.is_empty() => {
                return Err(CniError::invalid_config(
                    "error parsing configuration list: no plugins in list",
                ))
            }
            Some(Value::Array(a)) => a.clone(),
            Some(_) => {
                return Err(CniError::invalid_config(
                    "error parsing configuration list: invalid 'plugins' type",
                ))
            }
        };
        for (i, p) in plugins.iter().enumerate() {
            plugin_conf(p).map_err(|e| CniError {
                msg: format!("failed to parse plugin config {i}: {}", e.msg),
                ..e
            })?;
        }
        Ok(NetworkList {
            name,
            cni_version,
            disable_check: parse_bool(obj.get("disableCheck"), "disableCheck")?,
            disable_gc: parse_bool(obj.get("disableGC"), "disableGC")?,
            load_only_inlined_plugins,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// A single plugin configuration (a `.conf`), upgraded to a one-plugin list as libcni's
    /// ConfListFromConf does.
    pub fn parse_conf(bytes: &[u8]) -> Result<NetworkList, CniError> {
        let obj = decode(bytes, "configuration")?;
        let v = Value::Object(obj.clone());
        plugin_conf(&v)?;
        // Without a name it matches no network (libcni compares names only), but is no error.
        let name = obj.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        if !name.is_empty() {
            crate::cni::config::validate_network_name(&name)?;
        }
        let cni_version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or("").to_string();
        check_version(&cni_version)?;
        Ok(NetworkList {
            name,
            cni_version,
            disable_check: false,
            disable_gc: false,
            load_only_inlined_plugins: false,
            plugins: vec![v],
            bytes: bytes.to_vec(),
        })
    }

    /// Configuration bytes with no file behind them: a list, or a single plugin
    /// configuration (an object with `type` and no `plugins`). The list must inline its
    /// plugins, since there is no directory to take more from.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkList, CniError> {
        if is_single_conf(bytes) {
            return NetworkList::parse_conf(bytes).and_then(named);
        }
        let list = NetworkList::parse_list(bytes)?;
        if list.plugins.is_empty() {
            return Err(CniError::invalid_config("no plugin configs found"));
        }
        Ok(list)
    }

    /// A network configuration file (libcni's NetworkConfFromFile): the list and, unless it
    /// says `loadOnlyInlinedPlugins`, the plugins in `<its dir>/<name>/*.conf`. A file not
    /// named `.conflist` that holds a single plugin configuration is upgraded to a list instead.
    pub fn from_file(path: &Path) -> Result<NetworkList, CniError> {
        let bytes = read(path)?;
        // libcni tells them apart by extension; a file named otherwise (`--conf`) by content.
        let single = path.extension().is_none_or(|e| e != "conflist") && is_single_conf(&bytes);
        if single {
            return NetworkList::parse_conf(&bytes)
                .and_then(named)
                .map_err(|e| in_file(path, e));
        }
        let mut list = NetworkList::parse_list(&bytes).map_err(|e| in_file(path, e))?;
        if !list.load_only_inlined_plugins {
            let dir = path.parent().unwrap_or(Path::new(".")).join(&list.name);
            let files = conf_files(&dir, &["conf"]).map_err(|e| {
                CniError::new(
                    code::IO_FAILURE,
                    format!("failed to read plugin config files in {}: {e}", dir.display()),
                )
            })?;
            for f in files {
                let bytes = read(&f)?;
                let p: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    CniError::new(
                        code::DECODING_FAILURE,
                        format!("{}: error parsing configuration: {e}", f.display()),
                    )
                })?;
                plugin_conf(&p).map_err(|e| in_file(&f, e))?;
                list.plugins.push(p);
            }
        }
        if list.plugins.is_empty() {
            return Err(in_file(path, CniError::invalid_config("no plugin configs found")));
        }
        Ok(list)
    }

    /// The network `name` in `dir`, as libcni's LoadNetworkConf finds it.
    pub fn load(dir: &Path, name: &str) -> Result<NetworkList, CniError> {
        let io = |e: std::io::Error| {
            CniError::new(
                code::IO_FAILURE,
                format!("cannot read the network configuration dir {}: {e}", dir.display()),
            )
        };
        let lists = conf_files(dir, &["conflist"]).map_err(io)?;
        for f in &lists {
            let list = NetworkList::from_file(f)?;
            if list.name == name {
                return Ok(list);
            }
        }
        // Deprecated single plugin configurations, upgraded.
        let confs = conf_files(dir, &["conf", "json"]).map_err(io)?;
        if lists.is_empty() && confs.is_empty() {
            return Err(CniError::internal(format!(
                "no net configurations found in {}",
                dir.display()
            )));
        }
        for f in &confs {
            let list = NetworkList::parse_conf(&read(f)?).map_err(|e| in_file(f, e))?;
            if list.name == name {
                return Ok(list);
            }
        }
        Err(CniError::internal(format!(
            "no net configuration with name {name:?} in {}",
            dir.display()
        )))
    }
}

/// A single configuration run as a network needs its name.
fn named(list: NetworkList) -> Result<NetworkList, CniError> {
    match list.name.is_empty() {
        true => Err(CniError::invalid_config("error parsing configuration: no name")),
        false => Ok(list),
    }
}

/// An object with `type` and without `plugins`: a single plugin configuration.
fn is_single_conf(bytes: &[u8]) -> bool {
    matches!(serde_json::from_slice::<Value>(bytes), Ok(Value::Object(m)) if m.contains_key("type") && !m.contains_key("plugins"))
}

fn check_version(version: &str) -> Result<(), CniError> {
    if !version.is_empty() && !ALL.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("unsupported cniVersion {version:?}"),
        ));
    }
    Ok(())
}

/// `cniVersion`, or with `cniVersions` (1.1) the highest version listed there or in
/// `cniVersion` that this implementation supports.
fn select_version(obj: &Map<String, Value>) -> Result<String, CniError> {
    let mut version = match obj.get("cniVersion") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "error parsing configuration list: invalid cniVersion type {other}"
            )))
        }
    };
    if let Some(list) = obj.get("cniVersions") {
        let list = list.as_array().ok_or_else(|| {
            CniError::invalid_config("error parsing configuration list: invalid type for cniVersions")
        })?;
        let current = Version::parse(crate::cni::version::CURRENT)?;
        let mut best: Option<(Version, String)> = match version.is_empty() {
            true => None,
            false => Some((Version::parse(&version)?, version.clone())).filter(|(v, _)| *v <= current),
        };
        for (i, s) in list.iter().enumerate() {
            let s = s.as_str().ok_or_else(|| {
                CniError::invalid_config(format!(
                    "error parsing configuration list: invalid type for cniVersions index {i}"
                ))
            })?;
            let v = Version::parse(s)?;
            if v > current {
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
    check_version(&version)?;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_lists_and_single_confs() {
        let l = NetworkList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"n","disableCheck":"TRUE","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert!(l.disable_check);
        assert!(!l.disable_gc);
        assert!(!l.load_only_inlined_plugins);
        let l = NetworkList::from_bytes(br#"{"cniVersion":"0.4.0","name":"n","type":"bridge"}"#).unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert!(NetworkList::from_bytes(br#"{"name":"n","plugins":[]}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"name":"n","disableGC":"maybe","plugins":[{"type":"x"}]}"#).is_err());
        assert!(NetworkList::from_bytes(br#"{"plugins":[{"type":"x"}]}"#).is_err());
        // Bytes alone cannot take plugins from a directory.
        assert!(NetworkList::from_bytes(br#"{"cniVersion":"1.1.0","name":"n"}"#).is_err());
    }

    /// libcni reads a list's own keys from a map, so exactly, and so does cni-multi net; a
    /// single .conf's keys (libcni decodes it into a Go struct, any case) are read exactly
    /// too: the documented difference of the runtime side (doc/differences.md).
    #[test]
    fn list_keys_are_exact_as_in_libcni() {
        let e = NetworkList::from_bytes(br#"{"Name":"n","plugins":[{"type":"x"}]}"#).unwrap_err();
        assert!(e.msg.contains("no name"), "{}", e.msg);
        // `Plugins` is not `plugins`: a list with no plugin at all (libcni v1.3 allows the key
        // to be absent, the plugins then coming from <conf-dir>/<name>/, of which bytes have none).
        let e = NetworkList::from_bytes(br#"{"name":"n","Plugins":[{"type":"x"}]}"#).unwrap_err();
        assert_eq!(e.msg, "no plugin configs found");
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
        // The spec's example configuration.
        let l = NetworkList::from_bytes(
            br#"{"cniVersion":"1.1.0","cniVersions":["0.3.1","0.4.0","1.0.0","1.1.0"],"name":"dbnet","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        assert_eq!(l.cni_version, "1.1.0");
    }

    /// libcni's conf_test.go cases for NetworkConfFromBytes, with its messages.
    #[test]
    fn list_rules_as_libcni() {
        let err = |v: Value| NetworkList::parse_list(v.to_string().as_bytes()).unwrap_err().msg;
        assert_eq!(
            err(json!({"name": "n", "cniVersion": "0.4.0", "loadOnlyInlinedPlugins": true})),
            "error parsing configuration list: `loadOnlyInlinedPlugins` is true, and no 'plugins' key"
        );
        assert_eq!(
            err(json!({"name": "n", "loadOnlyInlinedPlugins": "maybe", "plugins": [{"type": "x"}]})),
            "error parsing configuration list: invalid value \"maybe\" for loadOnlyInlinedPlugins"
        );
        assert_eq!(
            err(json!({"name": "n", "plugins": [{"type": "x"}, {"subnet": "10.0.0.0/24"}]})),
            "failed to parse plugin config 1: error parsing configuration: missing 'type'"
        );
        let l =
            NetworkList::parse_list(br#"{"name":"n","cniVersion":"0.4.0","loadOnlyInlinedPlugins":false}"#).unwrap();
        assert!(l.plugins.is_empty() && !l.load_only_inlined_plugins);
        let l = NetworkList::parse_list(br#"{"name":"n","loadOnlyInlinedPlugins":"True","plugins":[{"type":"x"}]}"#)
            .unwrap();
        assert!(l.load_only_inlined_plugins);
    }
}
