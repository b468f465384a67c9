//! Delegation (CNI SPEC.md, "Plugin Delegation"): find a plugin by type in CNI_PATH and run
//! it. When the file found is this very executable (same device and inode as /proc/self/exe),
//! the plugin runs in-process: no fork/exec on the hot path. Otherwise it is executed
//! with the caller's environment and only CNI_COMMAND changed, so third-party
//! plugins (e.g. whereabouts) keep working.

use super::error::{code, CniError};
use super::result::CniResult;
use super::skel::{self, CmdArgs, Command, Plugin};
use std::path::{Path, PathBuf};
use std::process::{Command as Proc, Stdio};
use std::sync::OnceLock;

/// How to look up a built-in plugin by name; set once by `main`.
static BUILTINS: OnceLock<fn(&str) -> Option<&'static Plugin>> = OnceLock::new();

pub fn set_builtins(lookup: fn(&str) -> Option<&'static Plugin>) {
    let _ = BUILTINS.set(lookup);
}

/// Told of every built-in delegate run (plugin name, its arguments, how long it took, exit
/// status and what it would have printed), so the invocation log sees in-process plugins
/// exactly as it sees executed ones; set once by `main`.
pub type Observer = fn(&str, &CmdArgs, std::time::Duration, i32, &str);
static OBSERVER: OnceLock<Observer> = OnceLock::new();

pub fn set_observer(observer: Observer) {
    let _ = OBSERVER.set(observer);
}

/// Off unless `enable_builtin_fallback` was called (by `inspect --gc`): then the plugin types
/// it had to run that way, in order.
static FALLBACKS: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

/// From now on a plugin type that CNI_PATH does not hold but that is built in runs in-process
/// anyway, and is recorded (`builtin_fallbacks`). For the operator's tools, which must work
/// on a node whatever its plugin path; a runtime's delegation keeps the spec's lookup.
pub fn enable_builtin_fallback() {
    let mut f = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    f.get_or_insert_with(Vec::new);
}

/// The plugin types run in-process because CNI_PATH did not hold them.
pub fn builtin_fallbacks() -> Vec<String> {
    let f = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    f.clone().unwrap_or_default()
}

fn builtin_fallback(plugin_type: &str) -> Option<Target> {
    let mut f = FALLBACKS.lock().unwrap_or_else(|e| e.into_inner());
    let used = f.as_mut()?;
    let p = BUILTINS.get().and_then(|lookup| lookup(plugin_type))?;
    if !used.iter().any(|t| t == plugin_type) {
        used.push(plugin_type.to_string());
    }
    Some(Target::BuiltIn(p))
}

/// Find `plugin_type` in the `:`-separated CNI_PATH: the first regular file.
pub fn find_in_path(plugin_type: &str, cni_path: &str) -> Result<PathBuf, CniError> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return Err(CniError::invalid_config(format!("invalid plugin name {plugin_type:?}")));
    }
    let dirs: Vec<&str> = cni_path.split(':').filter(|d| !d.is_empty()).collect();
    if dirs.is_empty() {
        return Err(CniError::new(code::INVALID_ENV, "no paths provided"));
    }
    for d in &dirs {
        let p = Path::new(d).join(plugin_type);
        if std::fs::metadata(&p).map(|m| m.is_file()).unwrap_or(false) {
            return Ok(p);
        }
    }
    Err(CniError::internal(format!(
        "failed to find plugin {plugin_type:?} in path {dirs:?}"
    )))
}

/// Whether `path` is this executable (symlinks followed).
fn is_self(path: &Path) -> bool {
    crate::fileid::same_path(path, "/proc/self/exe")
}

/// Where a delegate will run.
pub enum Target {
    BuiltIn(&'static Plugin),
    Exec(PathBuf),
}

pub fn resolve(plugin_type: &str, cni_path: &str) -> Result<Target, CniError> {
    let path = match find_in_path(plugin_type, cni_path) {
        Ok(p) => p,
        Err(e) => return builtin_fallback(plugin_type).ok_or(e),
    };
    if is_self(&path) {
        if let Some(p) = BUILTINS.get().and_then(|f| f(plugin_type)) {
            return Ok(Target::BuiltIn(p));
        }
    }
    Ok(Target::Exec(path))
}

fn observed(p: &Plugin, dargs: &CmdArgs) -> Result<Option<(CniResult, String)>, CniError> {
    let Some(observer) = OBSERVER.get() else {
        return skel::invoke(p, dargs);
    };
    let started = std::time::Instant::now();
    let r = skel::invoke(p, dargs);
    let (exit, printed) = match &r {
        Ok(Some((res, version))) => (0, res.to_json(version).unwrap_or_default()),
        Ok(None) => (0, String::new()),
        Err(e) => (1, e.to_json()),
    };
    observer(p.name, dargs, started.elapsed(), exit, &printed);
    r
}

/// Run `command` of delegate `plugin_type` with `config` as its stdin. ADD returns the
/// delegate's result, parsed in the config's version.
pub fn run(plugin_type: &str, command: Command, config: &[u8], args: &CmdArgs) -> Result<Option<CniResult>, CniError> {
    let dargs = args.for_delegate(command, config.to_vec());
    match resolve(plugin_type, &args.path)? {
        Target::BuiltIn(p) => match observed(p, &dargs)? {
            // Round-trip through the printed version so a built-in delegate behaves
            // exactly like an executed one (conversion errors included).
            Some((r, version)) => Ok(Some(r.convert(&version)?)),
            None => Ok(None),
        },
        Target::Exec(path) => exec(&path, &dargs),
    }
}

pub fn add(plugin_type: &str, config: &[u8], args: &CmdArgs) -> Result<CniResult, CniError> {
    run(plugin_type, Command::Add, config, args)?
        .ok_or_else(|| CniError::internal(format!("delegate {plugin_type:?} returned no result")))
}

pub fn del(plugin_type: &str, config: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    run(plugin_type, Command::Del, config, args).map(|_| ())
}

pub fn check(plugin_type: &str, config: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    run(plugin_type, Command::Check, config, args).map(|_| ())
}

pub fn status(plugin_type: &str, config: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    run(plugin_type, Command::Status, config, args).map(|_| ())
}

pub fn gc(plugin_type: &str, config: &[u8], args: &CmdArgs) -> Result<(), CniError> {
    run(plugin_type, Command::Gc, config, args).map(|_| ())
}

fn exec(path: &Path, args: &CmdArgs) -> Result<Option<CniResult>, CniError> {
    use std::io::Write;
    let mut attempts = 0;
    let output = loop {
        let child = Proc::new(path)
            .env("CNI_COMMAND", args.command.as_str())
            .env("CNI_CONTAINERID", &args.container_id)
            .env("CNI_NETNS", &args.netns)
            .env("CNI_IFNAME", &args.ifname)
            .env("CNI_ARGS", &args.args)
            .env("CNI_PATH", &args.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match child {
            // libcni retries "text file busy" (the binary is being replaced).
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 5 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                return Err(CniError::internal(format!(
                    "failed to run plugin {}: {e}",
                    path.display()
                )))
            }
            Ok(mut c) => {
                if let Some(mut stdin) = c.stdin.take() {
                    // A plugin may exit without reading stdin (e.g. VERSION): ignore EPIPE.
                    let _ = stdin.write_all(&args.stdin);
                }
                break c
                    .wait_with_output()
                    .map_err(|e| CniError::internal(format!("failed to wait for plugin {}: {e}", path.display())))?;
            }
        }
    };
    // The delegate's stderr belongs to the caller's stderr.
    let _ = std::io::stderr().write_all(&output.stderr);
    if !output.status.success() {
        if output.stdout.is_empty() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(CniError::internal(if stderr.is_empty() {
                "netplugin failed with no error message".to_string()
            } else {
                format!("netplugin failed: {stderr:?}")
            }));
        }
        return Err(
            super::gokeys::from_slice::<CniError>(&output.stdout).unwrap_or_else(|e| {
                CniError::internal(format!(
                    "netplugin failed but error parsing its diagnostic message {:?}: {e}",
                    String::from_utf8_lossy(&output.stdout)
                ))
            }),
        );
    }
    if args.command != Command::Add {
        return Ok(None);
    }
    let conf_version = super::version::of_config(&args.stdin)?;
    CniResult::parse_bytes(&output.stdout, &conf_version).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_rules() {
        assert!(find_in_path("a/b", "/bin").is_err());
        assert_eq!(find_in_path("x", "").unwrap_err().code, 4);
        let e = find_in_path("no-such-plugin-xyz", "/nonexistent:/also-not").unwrap_err();
        assert!(
            e.msg.contains("failed to find plugin \"no-such-plugin-xyz\""),
            "{}",
            e.msg
        );
        // Directories are not plugins; the first regular file wins.
        assert!(find_in_path("bin", "/usr").is_err());
        assert_eq!(
            find_in_path("sh", "/nonexistent:/bin:/usr/bin").unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
