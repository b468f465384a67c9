//! The plugin side of the protocol: read CNI_* and stdin, validate, gate versions,
//! dispatch to the plugin's verb, and print what the Go skel prints.
//!
//! Everything here works on an environment lookup function and byte buffers, so the
//! protocol rules are unit-tested without processes or root.

use super::error::{code, CniError};
use super::result::CniResult;
use super::{config, version};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Whether `var` is required for this verb (the Go skel's table, where CNI_PATH
    /// is required for every verb but VERSION).
    fn requires(self, var: &str) -> bool {
        use Command::*;
        match var {
            "CNI_CONTAINERID" | "CNI_IFNAME" => matches!(self, Add | Del | Check),
            "CNI_NETNS" => matches!(self, Add | Check),
            "CNI_PATH" => !matches!(self, Version),
            _ => false,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One invocation: the CNI_* variables and the config bytes.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
    pub path: String,
    pub netns_override: bool,
    pub stdin: Vec<u8>,
}

impl CmdArgs {
    /// The same invocation with another verb and config, as a delegate receives it.
    pub fn for_delegate(&self, command: Command, stdin: Vec<u8>) -> CmdArgs {
        CmdArgs {
            command,
            stdin,
            ..self.clone()
        }
    }

    /// An ADD with this config and CNI_ARGS, the other variables made up (a netns that does
    /// not exist): for tests of config readers, which open nothing.
    #[doc(hidden)]
    pub fn example(stdin: &[u8], cni_args: &str) -> CmdArgs {
        CmdArgs {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/nonexistent".into(),
            ifname: "eth0".into(),
            args: cni_args.into(),
            path: String::new(),
            netns_override: false,
            stdin: stdin.to_vec(),
        }
    }

    pub fn cni_args(&self) -> Result<super::args::CniArgs, CniError> {
        super::args::CniArgs::parse(&self.args)
    }
}

pub type AddFn = fn(&CmdArgs) -> anyhow::Result<CniResult>;
pub type VerbFn = fn(&CmdArgs) -> anyhow::Result<()>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Interface,
    Ipam,
    Meta,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Interface => "interface",
            Kind::Ipam => "ipam",
            Kind::Meta => "meta",
        }
    }
}

/// A plugin: what the table in `plugins.rs` lists. A verb without a handler succeeds
/// as a no-op (the Go skel's behaviour for a nil callback).
pub struct Plugin {
    pub name: &'static str,
    pub kind: Kind,
    pub summary: &'static str,
    pub versions: &'static [&'static str],
    /// The capabilities it keeps; everything else is dropped before it runs.
    pub caps: &'static [caps::Capability],
    pub add: AddFn,
    pub del: VerbFn,
    pub check: Option<VerbFn>,
    pub status: Option<VerbFn>,
    pub gc: Option<VerbFn>,
    /// ADD's reading of the config alone, nothing else: what the fuzz targets run.
    pub load: VerbFn,
}

impl Plugin {
    pub fn about(&self) -> String {
        format!("CNI {} plugin v{} (cni-multi)", self.name, env!("CNI_MULTI_VERSION"))
    }
}

/// What the process should write and return.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit: i32,
}

impl Outcome {
    fn error(e: &CniError) -> Outcome {
        Outcome {
            stdout: e.to_json(),
            stderr: String::new(),
            exit: 1,
        }
    }
}

/// Read the CNI_* variables for `command`; every missing one is named in one code-4 error.
pub fn cmd_args_from_env(
    getenv: &dyn Fn(&str) -> Option<String>,
    read_stdin: &mut dyn FnMut() -> std::io::Result<Vec<u8>>,
) -> Result<CmdArgs, CniError> {
    let get = |k: &str| getenv(k).unwrap_or_default();
    let cmd_str = get("CNI_COMMAND");
    let command = Command::parse(&cmd_str);
    let mut missing = Vec::new();
    if cmd_str.is_empty() {
        missing.push("CNI_COMMAND");
    }
    for var in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"] {
        if get(var).is_empty() && command.map(|c| c.requires(var)).unwrap_or(false) {
            missing.push(var);
        }
    }
    if !missing.is_empty() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("required env variables [{}] missing", missing.join(",")),
        ));
    }
    let Some(command) = command else {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND: {cmd_str}"),
        ));
    };
    let stdin = if command == Command::Version {
        Vec::new()
    } else {
        read_stdin().map_err(|e| CniError::new(code::IO_FAILURE, format!("error reading from stdin: {e}")))?
    };
    let over = get("CNI_NETNS_OVERRIDE");
    Ok(CmdArgs {
        command,
        container_id: get("CNI_CONTAINERID"),
        netns: get("CNI_NETNS"),
        ifname: get("CNI_IFNAME"),
        args: get("CNI_ARGS"),
        path: get("CNI_PATH"),
        netns_override: over == "1" || over.eq_ignore_ascii_case("true"),
        stdin,
    })
}

/// The whole plugin main: env and stdin in, an Outcome out.
/// `is_own_netns` answers whether a path is the plugin's own network namespace
/// (false when it cannot be opened); it is the one kernel question the skel asks.
pub fn run(
    plugin: &Plugin,
    getenv: &dyn Fn(&str) -> Option<String>,
    read_stdin: &mut dyn FnMut() -> std::io::Result<Vec<u8>>,
    is_own_netns: &dyn Fn(&str) -> bool,
) -> Outcome {
    let args = match cmd_args_from_env(getenv, read_stdin) {
        Ok(a) => a,
        Err(e) => {
            if getenv("CNI_COMMAND").unwrap_or_default().is_empty() {
                let versions = plugin.versions.join(", ");
                return Outcome {
                    stdout: String::new(),
                    stderr: format!("{}\nCNI protocol versions supported: {versions}\n", plugin.about()),
                    exit: 0,
                };
            }
            return Outcome::error(&e);
        }
    };
    if args.command == Command::Version {
        return Outcome {
            stdout: version::version_reply(plugin.versions),
            ..Default::default()
        };
    }
    match dispatch(plugin, &args, is_own_netns) {
        Ok(out) => Outcome {
            stdout: out.unwrap_or_default(),
            ..Default::default()
        },
        Err(e) => Outcome::error(&e),
    }
}

/// Validate and run one verb; ADD's printed result is returned.
pub fn dispatch(
    plugin: &Plugin,
    args: &CmdArgs,
    is_own_netns: &dyn Fn(&str) -> bool,
) -> Result<Option<String>, CniError> {
    match invoke_guarded(plugin, args, is_own_netns)? {
        Some((result, version)) => Ok(Some(result.to_json(&version)?)),
        None => Ok(None),
    }
}

/// Validate, gate and call; ADD gives its result and the version to print it in.
/// This is also the in-process delegation entry point.
pub fn invoke(plugin: &Plugin, args: &CmdArgs) -> Result<Option<(CniResult, String)>, CniError> {
    invoke_guarded(plugin, args, &|_| false)
}

fn invoke_guarded(
    plugin: &Plugin,
    args: &CmdArgs,
    is_own_netns: &dyn Fn(&str) -> bool,
) -> Result<Option<(CniResult, String)>, CniError> {
    validate_config(&args.stdin)?;
    if matches!(args.command, Command::Add | Command::Del | Command::Check) {
        config::validate_container_id(&args.container_id)?;
        config::validate_ifname(&args.ifname)?;
    }
    let conf_version = version::of_config(&args.stdin)?;
    let min = match args.command {
        Command::Check => Some("0.4.0"),
        Command::Gc | Command::Status => Some("1.1.0"),
        _ => None,
    };
    if let Some(min) = min {
        if !version::Version::at_least(&conf_version, min)? {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("config version does not allow {}", args.command),
            ));
        }
        let plugin_can = plugin
            .versions
            .iter()
            .any(|v| version::Version::at_least(v, &conf_version).unwrap_or(false));
        if !plugin_can {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("plugin version does not allow {}", args.command),
            ));
        }
    }
    version::check_supported(&conf_version, plugin.versions)?;
    // The Go skel checks this after the plugin ran, when a stale DEL may already have
    // taken the node's `lo` down (plugins#714); checking first gives the same answer
    // without the damage.
    if matches!(args.command, Command::Add | Command::Del) && !args.netns_override && is_own_netns(&args.netns) {
        return Err(CniError::new(
            code::INVALID_NETNS,
            "plugin's netns and netns from CNI_NETNS should not be the same",
        ));
    }
    let call = |f: Option<VerbFn>| match f {
        Some(f) => f(args).map_err(|e| CniError::from_anyhow(&e)),
        None => Ok(()),
    };
    match args.command {
        Command::Add => {
            let result = (plugin.add)(args).map_err(|e| CniError::from_anyhow(&e))?;
            Ok(Some((result, conf_version)))
        }
        Command::Del => call(Some(plugin.del)).map(|_| None),
        Command::Check => call(plugin.check).map(|_| None),
        Command::Status => call(plugin.status).map(|_| None),
        Command::Gc => call(plugin.gc).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// The skel's first look at the config: JSON (code 6) with a valid `name` (code 7), the key
/// in any case as Go's decoder finds it.
fn validate_config(stdin: &[u8]) -> Result<(), CniError> {
    use super::gokeys::{self, GoKeys, Node};
    use serde::Deserialize;
    #[derive(GoKeys)]
    #[allow(dead_code)] // only its key list is used
    struct NameOnly {
        name: Option<serde_json::Value>,
    }
    let decode = |m: String| CniError::new(code::DECODING_FAILURE, format!("error unmarshall network config: {m}"));
    let node: Node = serde_json::from_slice(stdin).map_err(|e| decode(e.to_string()))?;
    let v = serde_json::Value::deserialize(gokeys::canonical(&node, NameOnly::shape()))
        .map_err(|e| decode(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| decode(format!("expected a JSON object, got {v}")))?;
    match obj.get("name") {
        None | Some(serde_json::Value::Null) => config::validate_network_name(""),
        Some(serde_json::Value::String(s)) => config::validate_network_name(s),
        Some(other) => Err(decode(format!("name must be a string, not {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ok_add(a: &CmdArgs) -> anyhow::Result<CniResult> {
        let mut r = CniResult::new("1.1.0");
        r.ips.push(super::super::result::IpConfig {
            interface: None,
            address: "10.0.0.2/24".parse().unwrap(),
            gateway: None,
        });
        if a.ifname == "fail0" {
            return Err(CniError::new(2, "unsupported thing").into());
        }
        if a.ifname == "boom0" {
            anyhow::bail!("plain failure");
        }
        Ok(r)
    }
    fn ok_verb(_: &CmdArgs) -> anyhow::Result<()> {
        Ok(())
    }
    fn failing_status(_: &CmdArgs) -> anyhow::Result<()> {
        Err(CniError::new(50, "pool exhausted").into())
    }

    static ALL: Plugin = Plugin {
        name: "test",
        kind: Kind::Interface,
        summary: "t",
        versions: version::ALL,
        caps: &[],
        add: ok_add,
        del: ok_verb,
        check: None,
        status: Some(failing_status),
        gc: None,
        load: ok_verb,
    };
    static OLD: Plugin = Plugin {
        versions: &["0.3.0", "0.3.1", "0.4.0", "1.0.0"],
        status: None,
        ..ALL
    };

    type EnvOverrides<'a> = &'a [(&'a str, &'a str)];

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"net","type":"test"}"#;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            if v.is_empty() {
                m.remove(*k);
            } else {
                m.insert(k.to_string(), v.to_string());
            }
        }
        m
    }

    fn run_with(p: &Plugin, e: &[(&str, &str)], stdin: &str) -> Outcome {
        let m = env(e);
        let data = stdin.as_bytes().to_vec();
        run(p, &|k| m.get(k).cloned(), &mut || Ok(data.clone()), &|ns| {
            ns == "/proc/self/ns/net"
        })
    }

    fn code_of(o: &Outcome) -> u32 {
        assert_eq!(o.exit, 1, "expected failure, got {o:?}");
        serde_json::from_str::<CniError>(&o.stdout).unwrap().code
    }

    #[test]
    fn add_prints_result_in_config_version() {
        let o = run_with(&ALL, &[], CONF);
        assert_eq!(o.exit, 0);
        assert!(o.stdout.starts_with("{\n    \"cniVersion\": \"1.0.0\""));
        let o = run_with(&ALL, &[], r#"{"cniVersion":"0.3.1","name":"net"}"#);
        assert!(o.stdout.contains("\"version\": \"4\""));
        let o = run_with(&ALL, &[], r#"{"name":"net"}"#);
        assert!(o.stdout.contains("\"ip4\""), "no cniVersion means 0.1.0: {}", o.stdout);
    }

    #[test]
    fn missing_env_vars_named_together() {
        let table: &[(&str, EnvOverrides, &str)] = &[
            ("ADD", &[("CNI_CONTAINERID", "")], "[CNI_CONTAINERID]"),
            ("ADD", &[("CNI_NETNS", "")], "[CNI_NETNS]"),
            ("ADD", &[("CNI_IFNAME", "")], "[CNI_IFNAME]"),
            ("ADD", &[("CNI_PATH", "")], "[CNI_PATH]"),
            (
                "ADD",
                &[
                    ("CNI_CONTAINERID", ""),
                    ("CNI_NETNS", ""),
                    ("CNI_IFNAME", ""),
                    ("CNI_PATH", ""),
                ],
                "[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH]",
            ),
            ("CHECK", &[("CNI_NETNS", "")], "[CNI_NETNS]"),
            ("DEL", &[("CNI_IFNAME", ""), ("CNI_PATH", "")], "[CNI_IFNAME,CNI_PATH]"),
            ("GC", &[("CNI_PATH", "")], "[CNI_PATH]"),
            ("STATUS", &[("CNI_PATH", "")], "[CNI_PATH]"),
        ];
        for (cmd, unset, names) in table {
            let mut e = vec![("CNI_COMMAND", *cmd)];
            e.extend_from_slice(unset);
            let o = run_with(&ALL, &e, CONF);
            assert_eq!(code_of(&o), 4, "{cmd} {unset:?}");
            let err: CniError = serde_json::from_str(&o.stdout).unwrap();
            assert_eq!(err.msg, format!("required env variables {names} missing"));
        }
    }

    #[test]
    fn optional_env_vars() {
        let o = run_with(&ALL, &[("CNI_COMMAND", "DEL"), ("CNI_NETNS", "")], CONF);
        assert_eq!(o, Outcome::default(), "DEL without CNI_NETNS is accepted");
        let conf11 = r#"{"cniVersion":"1.1.0","name":"net"}"#;
        let bare = [("CNI_CONTAINERID", ""), ("CNI_NETNS", ""), ("CNI_IFNAME", "")];
        let mut e = vec![("CNI_COMMAND", "GC")];
        e.extend_from_slice(&bare);
        assert_eq!(run_with(&ALL, &e, conf11).exit, 0, "GC needs only COMMAND and PATH");
        let mut e = vec![("CNI_COMMAND", "STATUS")];
        e.extend_from_slice(&bare);
        assert_eq!(code_of(&run_with(&ALL, &e, conf11)), 50, "STATUS error code survives");
    }

    #[test]
    fn unknown_command() {
        let o = run_with(&ALL, &[("CNI_COMMAND", "FROB")], CONF);
        assert_eq!(code_of(&o), 4);
        assert!(o.stdout.contains("unknown CNI_COMMAND: FROB"));
    }

    #[test]
    fn about_text_without_command() {
        let o = run_with(&ALL, &[("CNI_COMMAND", "")], CONF);
        assert_eq!(o.exit, 0);
        assert!(o.stdout.is_empty());
        assert!(o
            .stderr
            .contains("CNI protocol versions supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
    }

    #[test]
    fn version_ignores_stdin() {
        let o = run_with(&OLD, &[("CNI_COMMAND", "VERSION")], "not json at all");
        assert_eq!(
            o.stdout,
            "{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}\n"
        );
    }

    #[test]
    fn validation_codes() {
        let cases: &[(EnvOverrides, &str, u32)] = &[
            (&[("CNI_CONTAINERID", "bad/id")], CONF, 4),
            (&[("CNI_CONTAINERID", "-x")], CONF, 4),
            (&[("CNI_IFNAME", "abcdefghijklmnop")], CONF, 4),
            (&[("CNI_IFNAME", ".")], CONF, 4),
            (&[("CNI_IFNAME", "..")], CONF, 4),
            (&[("CNI_IFNAME", "a/b")], CONF, 4),
            (&[("CNI_IFNAME", "a:b")], CONF, 4),
            (&[("CNI_IFNAME", "a b")], CONF, 4),
            (&[], r#"{"cniVersion":"1.0.0","name":"bad name"}"#, 7),
            (&[], r#"{"cniVersion":"1.0.0","name":"../x"}"#, 7),
            (&[], r#"{"cniVersion":"1.0.0"}"#, 7),
            (&[], "this is not json", 6),
            (&[], "", 6),
            (&[], "[1, 2]", 6),
            (&[], r#""just a string""#, 6),
            (&[], r#"{"cniVersion":"0.9.9","name":"n"}"#, 1),
            (&[], r#"{"cniVersion":"1.0","name":"n"}"#, 1),
            (&[("CNI_COMMAND", "CHECK")], r#"{"cniVersion":"0.3.1","name":"n"}"#, 1),
            (&[("CNI_COMMAND", "STATUS")], r#"{"cniVersion":"1.0.0","name":"n"}"#, 1),
            (&[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.0.0","name":"n"}"#, 1),
            (&[("CNI_IFNAME", "fail0")], CONF, 2),
            (&[("CNI_IFNAME", "boom0")], CONF, 999),
        ];
        for (e, conf, want) in cases {
            assert_eq!(code_of(&run_with(&ALL, e, conf)), *want, "{e:?} {conf}");
        }
        // A plugin that stops at 1.0.0 cannot do GC for a 1.1.0 config.
        let o = run_with(&OLD, &[("CNI_COMMAND", "GC")], r#"{"cniVersion":"1.1.0","name":"n"}"#);
        assert_eq!(code_of(&o), 1);
    }

    #[test]
    fn stdin_read_failure_is_code_5() {
        let m = env(&[]);
        let o = run(
            &ALL,
            &|k| m.get(k).cloned(),
            &mut || Err(std::io::Error::other("broken pipe")),
            &|_| false,
        );
        assert_eq!(code_of(&o), 5);
    }

    #[test]
    fn own_netns_guard() {
        let own = [("CNI_NETNS", "/proc/self/ns/net")];
        assert_eq!(code_of(&run_with(&ALL, &own, CONF)), 8);
        let mut d = own.to_vec();
        d.push(("CNI_COMMAND", "DEL"));
        assert_eq!(code_of(&run_with(&ALL, &d, CONF)), 8);
        // Checked before the plugin runs: the failing plugin is never called.
        let mut e = own.to_vec();
        e.push(("CNI_IFNAME", "boom0"));
        assert_eq!(code_of(&run_with(&ALL, &e, CONF)), 8);
        for v in ["1", "true", "TRUE"] {
            let mut e = own.to_vec();
            e.push(("CNI_NETNS_OVERRIDE", v));
            assert_eq!(run_with(&ALL, &e, CONF).exit, 0, "override {v}");
        }
    }

    #[test]
    fn nil_handlers_succeed() {
        let o = run_with(
            &ALL,
            &[("CNI_COMMAND", "CHECK")],
            r#"{"cniVersion":"1.0.0","name":"n"}"#,
        );
        assert_eq!(o, Outcome::default());
    }
}
