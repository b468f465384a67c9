//! The runtime (libcni) side: load a network list, run its plugins in order with
//! prevResult chained, cache the result, and run DEL in reverse, CHECK, GC and
//! STATUS like libcni does. Used by `cni-multi net`, the demo and the benchmarks.

pub mod cache;
pub mod conf;

use crate::cni::config::Attachment;
use crate::cni::delegate;
use crate::cni::error::{CniError, Failures};
use crate::cni::result::CniResult;
use crate::cni::skel::{CmdArgs, Command};
use crate::cni::version::Version;
pub use conf::NetworkList;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// What a runtime knows about one attachment.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `ips`, `mac`, …) offered to plugins.
    pub capability_args: Map<String, Value>,
    pub cni_path: String,
    pub cache_dir: PathBuf,
}

impl RuntimeConf {
    fn cmd_args(&self, command: Command) -> CmdArgs {
        CmdArgs {
            command,
            container_id: self.container_id.clone(),
            netns: self.netns.clone(),
            ifname: self.ifname.clone(),
            args: self
                .args
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";"),
            path: self.cni_path.clone(),
            netns_override: false,
            stdin: Vec::new(),
        }
    }
}

/// The config a plugin of the list receives (libcni's buildOneConfig): the list's name
/// and version override the plugin's, prevResult is added, and runtimeConfig holds the
/// capability arguments the plugin declared (replacing any static runtimeConfig).
pub fn build_plugin_config(
    list: &NetworkList,
    plugin: &Value,
    prev: Option<&Value>,
    rt: &RuntimeConf,
) -> Result<Vec<u8>, CniError> {
    let mut obj = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| CniError::invalid_config("plugin config is not a JSON object"))?;
    obj.insert("name".into(), list.name.clone().into());
    obj.insert("cniVersion".into(), list.cni_version.clone().into());
    if let Some(p) = prev {
        obj.insert("prevResult".into(), p.clone());
    }
    let caps = obj
        .get("capabilities")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut rc = Map::new();
    for (cap, enabled) in caps {
        if enabled.as_bool() == Some(true) {
            if let Some(v) = rt.capability_args.get(&cap) {
                rc.insert(cap, v.clone());
            }
        }
    }
    if !rc.is_empty() {
        obj.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Ok(serde_json::to_vec(&obj).expect("a JSON object serialises"))
}

fn plugin_type(plugin: &Value) -> Result<&str, CniError> {
    plugin
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| CniError::invalid_config("a plugin in the list has no \"type\""))
}

fn wrap(plugin: &Value, list: &NetworkList, verb: &str, e: CniError) -> CniError {
    let t = plugin.get("type").and_then(Value::as_str).unwrap_or("");
    CniError {
        msg: format!("plugin type={t:?} name={:?} failed ({verb}): {}", list.name, e.msg),
        ..e
    }
}

/// ADD every plugin in order; on success cache and return the final result.
pub fn add(list: &NetworkList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
    crate::cni::config::validate_container_id(&rt.container_id)?;
    crate::cni::config::validate_network_name(&list.name)?;
    crate::cni::config::validate_ifname(&rt.ifname)?;
    let mut prev: Option<Value> = None;
    for plugin in &list.plugins {
        let cfg = build_plugin_config(list, plugin, prev.as_ref(), rt)?;
        let r = delegate::run(plugin_type(plugin)?, Command::Add, &cfg, &rt.cmd_args(Command::Add))
            .map_err(|e| wrap(plugin, list, "add", e))?
            .unwrap_or_else(|| CniResult::new(&list.cni_version));
        // The next plugin gets this result as the plugin printed it.
        prev = Some(r.to_value(&list.cni_version)?);
    }
    let result = match &prev {
        Some(v) => CniResult::parse(v, &list.cni_version)?,
        None => CniResult::new(&list.cni_version),
    };
    cache::write(list, rt, prev.as_ref())?;
    Ok(result)
}

/// DEL every plugin in reverse with the cached result (config >= 0.4.0); the cache is
/// removed on success. A missing or unreadable cache means no prevResult.
pub fn del(list: &NetworkList, rt: &RuntimeConf) -> Result<(), CniError> {
    let cached = if Version::at_least(&list.cni_version, "0.4.0")? {
        cache::read_result(list, rt).and_then(|v| {
            CniResult::parse(&v, &list.cni_version)
                .and_then(|r| r.to_value(&list.cni_version))
                .ok()
        })
    } else {
        None
    };
    for plugin in list.plugins.iter().rev() {
        let cfg = build_plugin_config(list, plugin, cached.as_ref(), rt)?;
        delegate::run(plugin_type(plugin)?, Command::Del, &cfg, &rt.cmd_args(Command::Del))
            .map_err(|e| wrap(plugin, list, "delete", e))?;
    }
    cache::remove(list, rt);
    Ok(())
}

/// CHECK every plugin in order with the cached result.
pub fn check(list: &NetworkList, rt: &RuntimeConf) -> Result<(), CniError> {
    if !Version::at_least(&list.cni_version, "0.4.0")? {
        return Err(CniError::new(
            crate::cni::code::INCOMPATIBLE_VERSION,
            format!(
                "configuration version {:?} does not support the CHECK command",
                list.cni_version
            ),
        ));
    }
    if list.disable_check {
        return Ok(());
    }
    let cached = cache::read_result(list, rt)
        .ok_or_else(|| CniError::internal(format!("no cached result for {}/{}", rt.container_id, rt.ifname)))?;
    let cached = CniResult::parse(&cached, &list.cni_version)?.to_value(&list.cni_version)?;
    for plugin in &list.plugins {
        let cfg = build_plugin_config(list, plugin, Some(&cached), rt)?;
        delegate::run(plugin_type(plugin)?, Command::Check, &cfg, &rt.cmd_args(Command::Check))
            .map_err(|e| wrap(plugin, list, "check", e))?;
    }
    Ok(())
}

/// GC: DEL every cached attachment of this network that is not valid, then send GC
/// (1.1.0 lists) with both attachment keys. Errors are collected, not short-circuited.
pub fn gc(list: &NetworkList, rt: &RuntimeConf, valid: Option<&[Attachment]>) -> Result<(), CniError> {
    if list.disable_gc {
        return Ok(());
    }
    let mut errors = Failures::new();
    for cached in cache::attachments(list, &rt.cache_dir) {
        let keep = valid
            .map(|v| {
                v.iter()
                    .any(|a| a.container_id == cached.container_id && a.ifname == cached.ifname)
            })
            .unwrap_or(false);
        if keep {
            continue;
        }
        let crt = RuntimeConf {
            container_id: cached.container_id.clone(),
            netns: cached.netns.clone(),
            ifname: cached.ifname.clone(),
            args: cached.args.clone(),
            capability_args: cached.capability_args.clone(),
            ..rt.clone()
        };
        errors.keep(del(list, &crt));
    }
    if Version::at_least(&list.cni_version, "1.1.0")? {
        for plugin in &list.plugins {
            let mut obj = Map::new();
            obj.extend(plugin.as_object().cloned().unwrap_or_default());
            obj.insert("name".into(), list.name.clone().into());
            obj.insert("cniVersion".into(), list.cni_version.clone().into());
            if let Some(v) = valid {
                let v = serde_json::to_value(v).expect("attachments serialise");
                obj.insert("cni.dev/valid-attachments".into(), v.clone());
                obj.insert("cni.dev/attachments".into(), v);
            }
            let cfg = serde_json::to_vec(&obj).expect("a JSON object serialises");
            let r = delegate::run(plugin_type(plugin)?, Command::Gc, &cfg, &rt.cmd_args(Command::Gc));
            errors.keep(r.map_err(|e| wrap(plugin, list, "gc", e)));
        }
    }
    // libcni joins them (errors.Join): one error whose code is the first any carries.
    errors.finish()
}

/// STATUS to each plugin in order (1.1.0 lists only); the first error is returned as is.
pub fn status(list: &NetworkList, rt: &RuntimeConf) -> Result<(), CniError> {
    if !Version::at_least(&list.cni_version, "1.1.0")? {
        return Ok(());
    }
    for plugin in &list.plugins {
        let mut obj = plugin.as_object().cloned().unwrap_or_default();
        obj.insert("name".into(), list.name.clone().into());
        obj.insert("cniVersion".into(), list.cni_version.clone().into());
        let cfg = serde_json::to_vec(&obj).expect("a JSON object serialises");
        delegate::run(
            plugin_type(plugin)?,
            Command::Status,
            &cfg,
            &rt.cmd_args(Command::Status),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_plugin_config_like_libcni() {
        let list = NetworkList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[
                {"type":"portmap","name":"ignored","cniVersion":"0.3.1","capabilities":{"portMappings":true,"mac":false},
                 "runtimeConfig":{"static":1}},
                {"type":"tuning"}]}"#,
        )
        .unwrap();
        let mut rt = RuntimeConf::default();
        rt.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 80, "containerPort": 8080}]));
        rt.capability_args.insert("mac".into(), json!("aa:bb:cc:dd:ee:ff"));
        let prev = json!({"cniVersion": "1.0.0"});
        let cfg: Value =
            serde_json::from_slice(&build_plugin_config(&list, &list.plugins[0], Some(&prev), &rt).unwrap()).unwrap();
        assert_eq!(cfg["name"], "net");
        assert_eq!(cfg["cniVersion"], "1.0.0");
        assert_eq!(cfg["prevResult"], prev);
        // Only declared-and-provided capabilities; the static runtimeConfig is replaced.
        assert_eq!(
            cfg["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 80, "containerPort": 8080}]})
        );
        assert_eq!(
            cfg["capabilities"]["portMappings"], true,
            "libcni keeps the capabilities key"
        );
        let cfg: Value =
            serde_json::from_slice(&build_plugin_config(&list, &list.plugins[1], None, &rt).unwrap()).unwrap();
        assert!(cfg.get("runtimeConfig").is_none());
        assert!(cfg.get("prevResult").is_none());
    }

    /// A plugin entry's `type` and `capabilities` are read exactly, where libcni's struct
    /// decoding takes any case: the documented difference of the runtime side
    /// (doc/differences.md).
    #[test]
    fn plugin_entry_keys_are_exact() {
        assert!(plugin_type(&json!({"Type": "bridge"})).is_err());
        assert_eq!(plugin_type(&json!({"type": "bridge"})).unwrap(), "bridge");
        let list = NetworkList::from_bytes(
            br#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"portmap","Capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let mut rt = RuntimeConf::default();
        rt.capability_args.insert("portMappings".into(), json!([]));
        let cfg: Value =
            serde_json::from_slice(&build_plugin_config(&list, &list.plugins[0], None, &rt).unwrap()).unwrap();
        assert!(cfg.get("runtimeConfig").is_none());
    }
}
