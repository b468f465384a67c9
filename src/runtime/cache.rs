//! libcni's result cache: `<cacheDir>/results/<net>-<containerID>-<ifname>`, with the
//! same JSON (`kind: cniCacheV1`) so a node can switch runtimes' tools freely.

use super::{NetworkList, RuntimeConf};
use crate::cni::error::CniError;
use crate::linux::files::{self, Reader, Refused};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

fn path(list: &NetworkList, rt: &RuntimeConf) -> PathBuf {
    rt.cache_dir
        .join("results")
        .join(format!("{}-{}-{}", list.name, rt.container_id, rt.ifname))
}

/// base64 without a crate: the cache stores the config bytes this way.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn write(list: &NetworkList, rt: &RuntimeConf, result: Option<&Value>) -> Result<(), CniError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let p = path(list, rt);
    let dir = p.parent().expect("cache path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| CniError::internal(format!("failed to create cache dir {}: {e}", dir.display())))?;
    let doc = json!({
        "kind": "cniCacheV1",
        "containerId": rt.container_id,
        "config": base64(&list.bytes),
        "ifName": rt.ifname,
        "networkName": list.name,
        "netns": rt.netns,
        "cniArgs": rt.args.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "capabilityArgs": rt.capability_args,
        "result": result.cloned().unwrap_or(Value::Null),
    });
    let tmp = dir.join(format!("{}{}", temp_prefix(&p), std::process::id()));
    // Whatever sits at the temp name (a leftover, or a symlink planted by a local user
    // guessing the pid) is removed, never written through.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&tmp)
        .map_err(|e| CniError::internal(format!("failed to write cache {}: {e}", tmp.display())))?;
    f.write_all(doc.to_string().as_bytes())
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            CniError::internal(format!("failed to write cache {}: {e}", p.display()))
        })
}

/// A cache entry is a result and a config: a few KiB. Anything larger is not libcni's.
const ENTRY_MAX: u64 = 4 << 20;

/// Read a cache entry that is a regular file of bounded size: a symlink is not followed, a
/// FIFO not blocked on, a directory or 10 MB of garbage not trusted.
fn read_entry(p: &Path) -> Option<Vec<u8>> {
    match Reader::no_follow(ENTRY_MAX).read(p) {
        Ok(data) => Some(data),
        // Said once, for what someone planted; a symlink or a failed open passes quietly.
        Err(e) => {
            if matches!(files::refusal(&e), Some(r) if r != Refused::NotRegular("a symlink")) {
                eprintln!(
                    "ignoring cache entry {}: not a regular file of at most {ENTRY_MAX} bytes",
                    p.display()
                );
            }
            None
        }
    }
}

pub fn read_result(list: &NetworkList, rt: &RuntimeConf) -> Option<Value> {
    parse_result(&read_entry(&path(list, rt))?)
}

/// The result held by a cache file's bytes (None when there is none or it is not JSON).
pub fn parse_result(data: &[u8]) -> Option<Value> {
    let v: Value = serde_json::from_slice(data).ok()?;
    // Legacy caches hold the bare result.
    match v.get("kind").and_then(Value::as_str) {
        Some("cniCacheV1") => v.get("result").cloned().filter(|r| !r.is_null()),
        _ => Some(v),
    }
}

/// `.<entry>.tmp-`: a runtime killed while writing the entry leaves a file with this prefix.
fn temp_prefix(p: &Path) -> String {
    format!(
        ".{}.tmp-",
        p.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )
}

pub fn remove(list: &NetworkList, rt: &RuntimeConf) {
    let p = path(list, rt);
    let prefix = temp_prefix(&p);
    if let Some(Ok(rd)) = p.parent().map(std::fs::read_dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // remove_file never follows a symlink; a directory planted there stays (EISDIR).
    let _ = std::fs::remove_file(&p);
}

/// One cached attachment of a network (for GC and `inspect`).
pub struct Cached {
    pub container_id: String,
    pub ifname: String,
    pub netns: String,
    pub args: Vec<(String, String)>,
    pub capability_args: Map<String, Value>,
    /// The cached result, if the entry holds one.
    pub result: Option<Value>,
}

pub fn attachments(list: &NetworkList, cache_dir: &Path) -> Vec<Cached> {
    let Ok(rd) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(data) = read_entry(&e.path()) else { continue };
        out.extend(parse_attachment(&data, &list.name));
    }
    out
}

/// The attachment a cache file's bytes describe, if it is one of `network`'s.
pub fn parse_attachment(data: &[u8], network: &str) -> Option<Cached> {
    let v = serde_json::from_slice::<Value>(data).ok()?;
    if v.get("networkName").and_then(Value::as_str) != Some(network) {
        return None;
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let args = v
        .get("cniArgs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(Cached {
        container_id: s("containerId"),
        ifname: s("ifName"),
        netns: s("netns"),
        args,
        capability_args: v
            .get("capabilityArgs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        result: v.get("result").cloned().filter(|r| !r.is_null()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
