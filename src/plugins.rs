//! THE table: every plugin cni-multi is, with its kind and a one-line summary.
//! Only plugins that really work are listed.

use crate::cni::error::CniError;
use crate::cni::skel::{self, Plugin};
use std::io::{Read, Write};

pub static PLUGINS: &[&Plugin] = &[
    // interface
    &crate::interface::bridge::PLUGIN,
    &crate::interface::dummy::PLUGIN,
    &crate::interface::host_device::PLUGIN,
    &crate::interface::ipvlan::PLUGIN,
    &crate::interface::loopback::PLUGIN,
    &crate::interface::macvlan::PLUGIN,
    &crate::interface::ptp::PLUGIN,
    &crate::interface::tap::PLUGIN,
    &crate::interface::vlan::PLUGIN,
    // ipam
    &crate::ipam::dhcp::PLUGIN,
    &crate::ipam::host_local::PLUGIN,
    &crate::ipam::static_ipam::PLUGIN,
    // meta
    &crate::meta::bandwidth::PLUGIN,
    &crate::meta::firewall::PLUGIN,
    &crate::meta::flannel::PLUGIN,
    &crate::meta::portmap::PLUGIN,
    &crate::meta::sbr::PLUGIN,
    &crate::meta::tuning::PLUGIN,
    &crate::meta::vrf::PLUGIN,
];

pub fn lookup(name: &str) -> Option<&'static Plugin> {
    PLUGINS.iter().copied().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PLUGINS.iter().map(|p| p.name).collect()
}

/// Run `plugin` exactly as a runtime calls it: CNI_* from the environment, config on
/// stdin, result or error JSON on stdout. Returns the exit status.
pub fn run_as_plugin(plugin: &'static Plugin) -> i32 {
    // `dhcp daemon …`: the one plugin that is also a long-running program (the reference's
    // command line, which nodes' unit files use).
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if plugin.name == "dhcp" && argv.first().map(String::as_str) == Some("daemon") {
        return crate::ipam::dhcp::daemon::main(&argv[1..]);
    }
    wire_delegation();
    crate::linux::privileges::keep_only(plugin.caps);
    crate::linux::late_close::enable();
    let started = (std::time::SystemTime::now(), std::time::Instant::now());
    let getenv = |k: &str| std::env::var(k).ok();
    let mut stdin = Vec::new();
    let mut read_stdin = || {
        let mut buf = Vec::with_capacity(4096);
        let r = std::io::stdin().lock().read_to_end(&mut buf).map(|_| buf);
        if let Ok(b) = &r {
            stdin.clone_from(b);
        }
        r
    };
    let out = skel::run(plugin, &getenv, &mut read_stdin, &is_own_netns);
    let exit = emit(&out);
    crate::invocation_log::record_run(plugin.name, &getenv, started, &stdin, exit, &out.stdout);
    // Last: the runtime has our whole output; netfilter sockets are closed by a child.
    crate::linux::late_close::finish();
    exit
}

/// Delegation as every entry point needs it: built-in plugins run in-process, and each such
/// run goes to the invocation log, so a log shows the same lines whether a plugin was
/// executed by a runtime, by `cni-multi net` or delegated to in-process.
pub fn wire_delegation() {
    crate::cni::delegate::set_builtins(lookup);
    crate::cni::delegate::set_observer(log_delegate);
}

/// A built-in delegate's run, in the invocation log like an executed plugin's.
fn log_delegate(name: &str, args: &skel::CmdArgs, took: std::time::Duration, exit: i32, printed: &str) {
    let env = |k: &str| std::env::var(k).ok();
    crate::invocation_log::record(&env, || {
        let getenv = |k: &str| match k {
            "CNI_COMMAND" => Some(args.command.as_str().to_string()),
            "CNI_CONTAINERID" => Some(args.container_id.clone()),
            "CNI_NETNS" => Some(args.netns.clone()),
            "CNI_IFNAME" => Some(args.ifname.clone()),
            _ => None,
        };
        crate::invocation_log::line(&crate::invocation_log::Entry {
            at: std::time::SystemTime::now() - took,
            plugin: name,
            getenv: &getenv,
            stdin: &args.stdin,
            took,
            exit,
            stdout: printed,
        })
    });
}

/// Write an outcome to the real stdout/stderr and return its exit status.
pub fn emit(out: &skel::Outcome) -> i32 {
    if !out.stderr.is_empty() {
        let _ = std::io::stderr().write_all(out.stderr.as_bytes());
    }
    if !out.stdout.is_empty() {
        let mut so = std::io::stdout().lock();
        let _ = so.write_all(out.stdout.as_bytes());
        let _ = so.flush();
    }
    out.exit
}

/// Called under a name that is no plugin: a runtime gets a CNI error, a person the list.
pub fn unknown_name(name: &str) -> i32 {
    let e = CniError::internal(format!(
        "cni-multi was called as {name:?}, which is not a plugin it provides"
    ))
    .with_details(format!("known plugins: {}", names().join(", ")));
    println!("{}", e.to_json());
    1
}

/// A panic still answers with a CNI error JSON on stdout and exit status 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.payload().downcast_ref::<&str>() {
            Some(s) => s.to_string(),
            None => info.payload().downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        let loc = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let e = CniError::internal(format!("cni-multi panicked: {msg}{loc}"));
        let _ = std::io::stdout().write_all(e.to_json().as_bytes());
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }));
}

/// Whether `path` is the network namespace this thread is in (false if it cannot be read).
fn is_own_netns(path: &str) -> bool {
    crate::fileid::same_path(path, "/proc/thread-self/ns/net")
}
