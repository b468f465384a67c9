//! The opt-in invocation log: when `CNI_MULTI_LOG` names a file, every plugin invocation
//! appends one JSON line (time, plugin, verb, container, netns, ifname, network, duration, and
//! a summary of the result or the CNI error). Runtimes pass their environment to plugins, so
//! setting the variable on containerd's or podman's service turns it on for the whole node.
//!
//! It must never fail or slow a plugin: every error is ignored, the file is opened
//! non-blocking (a FIFO planted at the path cannot hang us) and only a regular file is written,
//! each line is one `write` on an O_APPEND descriptor (concurrent plugins never interleave
//! inside a line), and the file is rotated to `<path>.1` when it passes `CNI_MULTI_LOG_MAX`
//! bytes (default 4 MiB), so it stays bounded.

use serde_json::{json, Map, Value};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ENV_PATH: &str = "CNI_MULTI_LOG";
pub const ENV_MAX: &str = "CNI_MULTI_LOG_MAX";
pub const DEFAULT_MAX: u64 = 4 << 20;

/// What one invocation was and how it ended.
pub struct Entry<'a> {
    pub at: SystemTime,
    pub plugin: &'a str,
    pub getenv: &'a dyn Fn(&str) -> Option<String>,
    pub stdin: &'a [u8],
    pub took: Duration,
    pub exit: i32,
    pub stdout: &'a str,
}

/// The JSON line for `e` (no trailing newline). Pure, so its shape is unit-tested.
pub fn line(e: &Entry) -> String {
    let env = |k: &str| (e.getenv)(k).map(Value::String).unwrap_or(Value::Null);
    let mut m = Map::new();
    m.insert("time".into(), Value::String(rfc3339_millis(e.at)));
    m.insert("plugin".into(), Value::String(e.plugin.to_string()));
    m.insert("verb".into(), env("CNI_COMMAND"));
    m.insert("containerID".into(), env("CNI_CONTAINERID"));
    m.insert("netns".into(), env("CNI_NETNS"));
    m.insert("ifname".into(), env("CNI_IFNAME"));
    let conf: Value = serde_json::from_slice(e.stdin).unwrap_or(Value::Null);
    m.insert("network".into(), conf.get("name").cloned().unwrap_or(Value::Null));
    m.insert("ms".into(), json!((e.took.as_secs_f64() * 1e4).round() / 10.0));
    let out: Value = serde_json::from_str(e.stdout).unwrap_or(Value::Null);
    if e.exit == 0 {
        m.insert("ok".into(), Value::Bool(true));
        let ips: Vec<Value> = out
            .get("ips")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|ip| ip.get("address").cloned()).collect())
            .unwrap_or_default();
        if !ips.is_empty() {
            m.insert("ips".into(), Value::Array(ips));
        }
        // Host-side interfaces are the ones without a sandbox (a veth's host end, an IFB).
        let host: Vec<Value> = out
            .get("interfaces")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|i| i.get("sandbox").and_then(Value::as_str).unwrap_or("").is_empty())
                    .filter_map(|i| i.get("name").cloned())
                    .collect()
            })
            .unwrap_or_default();
        if !host.is_empty() {
            m.insert("hostInterfaces".into(), Value::Array(host));
        }
    } else {
        m.insert("ok".into(), Value::Bool(false));
        m.insert("code".into(), out.get("code").cloned().unwrap_or(Value::Null));
        m.insert("msg".into(), out.get("msg").cloned().unwrap_or(Value::Null));
    }
    Value::Object(m).to_string()
}

/// Append `line` to the log named by the environment, if any. Never fails.
pub fn record(getenv: &dyn Fn(&str) -> Option<String>, line: impl FnOnce() -> String) {
    let Some(path) = getenv(ENV_PATH).filter(|p| !p.is_empty()) else {
        return;
    };
    let max = getenv(ENV_MAX).and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MAX);
    let mut text = line();
    text.push('\n');
    let _ = append(Path::new(&path), text.as_bytes(), max);
}

/// Logs one run of `plugin` that began at `started` (the wall clock for its time, the
/// monotonic clock for its length), as the runtime's view of it: the entry points' one way.
pub fn record_run(
    plugin: &str,
    getenv: &dyn Fn(&str) -> Option<String>,
    started: (SystemTime, Instant),
    stdin: &[u8],
    exit: i32,
    stdout: &str,
) {
    record(getenv, || {
        line(&Entry {
            at: started.0,
            plugin,
            getenv,
            stdin,
            took: started.1.elapsed(),
            exit,
            stdout,
        })
    });
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc_flags::O_NONBLOCK | libc_flags::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

fn append(path: &Path, bytes: &[u8], max: u64) -> std::io::Result<()> {
    let mut f = open(path)?;
    if f.metadata()?.len() + bytes.len() as u64 > max {
        // Whoever rotates first wins; a racing writer's line lands in one file or the other.
        let mut old = path.as_os_str().to_owned();
        old.push(".1");
        std::fs::rename(path, &old)?;
        f = open(path)?;
    }
    f.write_all(bytes)
}

/// The O_* flags std does not name (from nix, which re-exports libc's values).
mod libc_flags {
    use nix::fcntl::OFlag;
    pub const O_NONBLOCK: i32 = OFlag::O_NONBLOCK.bits();
    pub const O_CLOEXEC: i32 = OFlag::O_CLOEXEC.bits();
}

/// `2026-12-02T13:20:01.123Z` without a date crate (civil-from-days, proleptic Gregorian).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/run/netns/p".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        }
    }

    #[test]
    fn dates_are_civil() {
        let at = |s| UNIX_EPOCH + Duration::from_millis(s);
        assert_eq!(rfc3339_millis(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(at(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(at(1_796_217_601_123)), "2026-12-02T13:20:01.123Z");
    }

    #[test]
    fn a_success_line_names_the_attachment_and_summarises_the_result() {
        let stdout = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1","mac":"x"},{"name":"eth0","sandbox":"/run/netns/p"}],"ips":[{"address":"10.1.0.2/24","interface":2}]}"#;
        let e = Entry {
            at: UNIX_EPOCH,
            plugin: "bridge",
            getenv: &env,
            stdin: br#"{"cniVersion":"1.0.0","name":"net1","type":"bridge"}"#,
            took: Duration::from_micros(12_345),
            exit: 0,
            stdout,
        };
        let v: Value = serde_json::from_str(&line(&e)).unwrap();
        assert_eq!(v["plugin"], "bridge");
        assert_eq!(v["verb"], "ADD");
        assert_eq!(v["containerID"], "c1");
        assert_eq!(v["netns"], "/run/netns/p");
        assert_eq!(v["ifname"], "eth0");
        assert_eq!(v["network"], "net1");
        assert_eq!(v["ms"], 12.3);
        assert_eq!(v["ok"], true);
        assert_eq!(v["ips"], json!(["10.1.0.2/24"]));
        assert_eq!(v["hostInterfaces"], json!(["cni0", "veth1"]));
    }

    #[test]
    fn an_error_line_carries_the_code_and_message_even_for_garbage_stdin() {
        let e = Entry {
            at: UNIX_EPOCH,
            plugin: "ptp",
            getenv: &env,
            stdin: b"\xff not json",
            took: Duration::ZERO,
            exit: 1,
            stdout: r#"{"code":7,"msg":"invalid MTU -1"}"#,
        };
        let v: Value = serde_json::from_str(&line(&e)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "invalid MTU -1");
        assert_eq!(v["network"], Value::Null);
    }

    #[test]
    fn the_log_rotates_at_its_bound_and_ignores_what_it_cannot_write() {
        let dir = std::env::temp_dir().join(format!("cni-multi-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        for _ in 0..10 {
            append(&path, &[b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<_>>(), 450).unwrap();
        }
        let cur = std::fs::read(&path).unwrap().len();
        let old = std::fs::read(dir.join("log.1")).unwrap().len();
        assert!(cur <= 450 && old <= 450, "{cur} {old}");
        assert_eq!((cur + old) % 100, 0);
        // A directory (or FIFO) at the path is refused quietly, never blocked on.
        let sub = dir.join("d");
        std::fs::create_dir_all(&sub).unwrap();
        assert!(append(&sub, b"x\n", 100).is_err());
        nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(append(&dir.join("fifo"), b"x\n", 100).is_err());
        record(&|k| (k == ENV_PATH).then(|| sub.to_string_lossy().into_owned()), || {
            "x".into()
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
