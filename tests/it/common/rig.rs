//! The test rig: throw-away network namespaces, temp dirs, plugin symlink dirs, and an
//! `Invocation` builder that runs one plugin (ours or the reference) with a clean environment.
//!
//! Safety rules this module enforces:
//! - nothing here ever touches the root network namespace: plugins run inside a fake *node*
//!   netns (`Invocation::in_node`), and when a test names none, a throw-away node netns is made
//!   for that single invocation. Running in the root netns needs an explicit `in_root_ns()`.
//! - every namespace and temp dir is removed by a Drop guard, also when the test panics.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Every plugin name cni-multi answers to (the symlinks `PluginDir` and `symlinks.sh` make).
pub const PLUGINS: &[&str] = &[
    "loopback",
    "bridge",
    "ptp",
    "host-local",
    "static",
    "macvlan",
    "ipvlan",
    "vlan",
    "host-device",
    "dummy",
    "tap",
    "portmap",
    "firewall",
    "tuning",
    "bandwidth",
    "sbr",
    "vrf",
    "flannel",
    "dhcp",
];

/// Where Debian's containernetworking-plugins puts the reference binaries.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// The PATH given to plugins (they may exec iptables, nft, ip...).
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long one plugin run may take before the rig kills it.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `DBUS_SYSTEM_BUS_ADDRESS` of every run unless a test names a bus (its own, see
/// `firewalld_rig`): the firewall plugin and the reference's ask the system bus whether
/// firewalld runs, and a test must never reach the machine's bus or its firewalld.
pub const NO_SYSTEM_BUS: &str = "unix:path=/nonexistent/cni-multi-tests-use-no-system-bus";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique in this process and across concurrent test processes: `cm-<tag>-<pid>-<n>`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let tag: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    format!("cm-{tag}-{}-{n}", std::process::id())
}

/// The cni-multi binary these tests run: CNI_MULTI_TEST_BIN when set (the second kernel's
/// initramfs puts it where no mount hides it: the path cargo built it at may be under a /tmp
/// that the VM mounts afresh), else the one cargo built for this test run.
pub fn ours_bin() -> PathBuf {
    match std::env::var_os("CNI_MULTI_TEST_BIN") {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "CNI_MULTI_TEST_BIN={} is not a file", p.display());
            p
        }
        None => PathBuf::from(env!("CARGO_BIN_EXE_cni-multi")),
    }
}

/// The reference binary of a plugin (it may not exist: flannel, dummy, tap).
pub fn reference_bin(plugin: &str) -> PathBuf {
    Path::new(REFERENCE_DIR).join(plugin)
}

pub fn reference_available(plugin: &str) -> bool {
    reference_bin(plugin).is_file()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True when running under CI (`CI=true`): there, missing prerequisites fail instead of skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Skip (return `false`) or, under CI, fail, with a reason. A skip is counted: when the
/// test executable exits it prints how many tests did not run and why (no silent green).
pub fn skip_or_fail(test: &str, reason: &str) -> bool {
    if in_ci() {
        panic!("{test}: {reason}, and CI=true: failing instead of skipping");
    }
    eprintln!("{test}: skipped: {reason}");
    let mut skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    if skipped.is_empty() {
        // SAFETY: registers a plain `extern "C" fn()` that takes no arguments, once (under
        // the lock); it runs after libtest has returned or called exit.
        unsafe { nix::libc::atexit(report_skipped) };
    }
    skipped.push(format!("{test} ({reason})"));
    false
}

/// The tests `skip_or_fail` skipped in this process.
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// At exit: the count of tests that did not run, so that a run without root is not read as
/// all green.
extern "C" fn report_skipped() {
    let skipped = SKIPPED.lock().unwrap_or_else(|e| e.into_inner());
    eprintln!(
        "\nNOT RUN: {} test(s) returned early without testing anything (root, a tool or the \
         reference plugins missing; CI=true makes each a failure):",
        skipped.len()
    );
    for t in skipped.iter() {
        eprintln!("  {t}");
    }
}

/// Waits until `cond` holds, checking every 10 ms; panics naming `what` once `deadline` has
/// passed. The deadline is a safety net against a hang, not a timing assertion: make it
/// generous.
pub fn wait_until(mut cond: impl FnMut() -> bool, deadline: Duration, what: &str) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "gave up waiting for {what} after {deadline:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `if !rig::require_root("my_test") { return; }`: prints "skipped: needs root" when not root;
/// fails instead when CI=true.
pub fn require_root(test: &str) -> bool {
    is_root() || skip_or_fail(test, "needs root")
}

/// Like `require_root`, and also needs the reference plugin binary.
pub fn require_reference(test: &str, plugin: &str) -> bool {
    require_root(test)
        && (reference_available(plugin)
            || skip_or_fail(
                test,
                &format!("needs the reference plugin {}", reference_bin(plugin).display()),
            ))
}

/// The full path of a system tool (searched in `PLUGIN_PATH`).
pub fn tool(name: &str) -> PathBuf {
    for dir in PLUGIN_PATH.split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

/// Run a command to completion, capturing output. Panics only if it cannot be started.
pub fn run_cmd(argv: &[&str]) -> Output {
    assert!(!argv.is_empty(), "run_cmd: empty argv");
    Command::new(tool(argv[0]))
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

/// Run a command and panic (with its stderr) unless it exits 0. Returns stdout.
pub fn run_ok(argv: &[&str]) -> String {
    let out = run_cmd(argv);
    if !out.status.success() {
        panic!(
            "{argv:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// TempDir
// ---------------------------------------------------------------------------------------------

/// `CNI_MULTI_STATE_DIR` of every plugin run (and of this process, for in-process calls):
/// under cargo's target tmp dir, never /run. Shared by all tests: what is kept there is
/// keyed by boot and network namespace, and each test has its own namespaces.
pub fn state_dir() -> &'static str {
    static DIR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("state");
        std::fs::create_dir_all(&d).expect("state dir");
        let d = d.to_str().expect("UTF-8 state dir").to_string();
        std::env::set_var("CNI_MULTI_STATE_DIR", &d);
        d
    })
}

/// A fresh directory under `std::env::temp_dir()`, removed (recursively) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        loop {
            let path = std::env::temp_dir().join(unique_name(tag));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create temp dir {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// The path as a `&str` (temp paths made here are always UTF-8).
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("temp path is UTF-8")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// TestNs
// ---------------------------------------------------------------------------------------------

/// A named network namespace `cm-<tag>-<pid>-<n>` (made with `ip netns add`), deleted on drop
/// after killing any process still running inside it.
#[derive(Debug)]
pub struct TestNs {
    name: String,
    path: PathBuf,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        // In-process plugin code run against this namespace keeps its state in the temp dir.
        state_dir();
        let name = unique_name(tag);
        run_ok(&["ip", "netns", "add", &name]);
        let path = Path::new("/run/netns").join(&name);
        TestNs { name, path }
    }

    /// A namespace with `lo` up, as a node would have it.
    pub fn new_node(tag: &str) -> TestNs {
        let ns = TestNs::new(tag);
        ns.lo_up();
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("netns path is UTF-8")
    }

    /// Run a command inside the namespace (`nsenter --net=PATH`; keeps the mount namespace).
    pub fn exec(&self, argv: &[&str]) -> Output {
        assert!(!argv.is_empty(), "exec: empty argv");
        let net = format!("--net={}", self.path_str());
        Command::new(tool("nsenter"))
            .arg(net)
            .arg("--")
            .arg(tool(argv[0]))
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {argv:?} in {}: {e}", self.name))
    }

    /// `exec` that panics unless the command succeeds; returns stdout.
    pub fn exec_ok(&self, argv: &[&str]) -> String {
        let out = self.exec(argv);
        if !out.status.success() {
            panic!(
                "{argv:?} in netns {} failed ({}):\nstdout: {}\nstderr: {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n NAME -j ARGS...` parsed as JSON (an empty output gives `[]`).
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut argv = vec!["ip", "-n", &self.name, "-j"];
        argv.extend_from_slice(args);
        let out = run_ok(&argv);
        if out.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{argv:?}: output is not JSON ({e}): {out}"))
    }

    /// `ip -n NAME ARGS...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        run_ok(&argv)
    }

    /// Every link's name, in the kernel's order.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// A veth `name` here whose peer is `peer` in `other` (both down, no address).
    pub fn veth_to(&self, name: &str, other: &TestNs, peer: &str) {
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            other.name(),
        ]);
    }

    pub fn lo_up(&self) {
        self.ip(&["link", "set", "lo", "up"]);
    }

    /// One link as `ip -j link show dev NAME` gives it, or `None` if absent.
    pub fn link(&self, ifname: &str) -> Option<Value> {
        let out = run_cmd(&["ip", "-n", &self.name, "-j", "link", "show", "dev", ifname]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?.first().cloned()
    }

    /// The normalised kernel state of this namespace (see `normalize_kernel`).
    pub fn kernel_state(&self, ctx: &Placeholders) -> Value {
        // Read once no IPv6 address is tentative: a link-local address's local route appears
        // only after duplicate address detection (~1 s, longer under load), so two sides read
        // at different moments would differ by it.
        let tentative = |addrs: &Value| {
            addrs.as_array().is_some_and(|links| {
                links.iter().any(|l| {
                    l["addr_info"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|a| a["tentative"] == Value::Bool(true)))
                })
            })
        };
        let mut addrs = self.ip_json(&["addr", "show"]);
        for _ in 0..100 {
            if !tentative(&addrs) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            addrs = self.ip_json(&["addr", "show"]);
        }
        let routes4 = self.ip_json(&["-4", "route", "show", "table", "all"]);
        let routes6 = self.ip_json(&["-6", "route", "show", "table", "all"]);
        normalize_kernel(&addrs, &routes4, &routes6, ctx)
    }

    /// Pids of the processes whose netns is this one.
    pub fn pids(&self) -> Vec<i32> {
        let out = run_cmd(&["ip", "netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl TestNs {
    /// `nft list ruleset` with its tables sorted and nft's `#` warnings left out: nft prints
    /// tables in creation order, and whether iptables or ip6tables (the reference's, ours)
    /// made its table first varies run by run, so two nodes compare equal only this way.
    pub fn nft_tables_sorted(&self) -> String {
        let mut tables: Vec<String> = Vec::new();
        for l in self
            .exec_ok(&["nft", "list", "ruleset"])
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            if l.starts_with("table ") || tables.is_empty() {
                tables.push(String::new());
            }
            let t = tables.last_mut().expect("pushed above");
            *t += l;
            *t += "\n";
        }
        tables.sort();
        tables.concat()
    }

    /// Deletes the netns as a runtime does when a sandbox dies: its name goes, and processes
    /// inside it (a plugin in the middle of an ADD) are left running, unlike on drop.
    pub fn delete_leaving_processes(self) {
        let out = run_cmd(&["ip", "netns", "del", &self.name]);
        assert!(
            out.status.success(),
            "ip netns del {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        std::mem::forget(self);
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Processes a test left inside (daemons, listeners) would keep the netns alive.
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let out = run_cmd(&["ip", "netns", "del", &self.name]);
        if !out.status.success() && self.path.exists() {
            eprintln!(
                "warning: could not delete netns {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A path where a netns used to be: made, then deleted (for "vanished netns" DEL cases).
pub fn vanished_netns_path() -> String {
    let ns = TestNs::new("gone");
    let p = ns.path_str().to_string();
    drop(ns);
    p
}

// ---------------------------------------------------------------------------------------------
// PluginDir
// ---------------------------------------------------------------------------------------------

/// A temp dir with one symlink per plugin name (`PLUGINS`), each pointing at `ours_bin()`:
/// what `/opt/cni/bin` looks like after an install. Removed on drop.
#[derive(Debug)]
pub struct PluginDir {
    dir: TempDir,
}

impl PluginDir {
    pub fn new() -> PluginDir {
        Self::with_binary(&ours_bin())
    }

    pub fn with_binary(bin: &Path) -> PluginDir {
        let dir = TempDir::new("plugins");
        for name in PLUGINS {
            std::os::unix::fs::symlink(bin, dir.join(name)).unwrap_or_else(|e| panic!("symlink {name}: {e}"));
        }
        PluginDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn as_str(&self) -> &str {
        self.dir.as_str()
    }

    pub fn plugin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Default for PluginDir {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Invocation / Outcome
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Stdin {
    None,
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Where {
    /// A fresh throw-away node netns for this one run (the default).
    AutoNode,
    Node(PathBuf),
    RootNs,
}

/// One plugin execution, as a runtime would do it: `CNI_*` env + config on stdin.
///
/// Defaults: `CNI_CONTAINERID=cm-test-container`, `CNI_IFNAME=eth0`, `CNI_PATH` = the plugin
/// dir (ours) or `/usr/lib/cni` (reference); `CNI_NETNS` is unset unless given. The process
/// environment is cleared: only `PATH` and the variables set here are passed.
#[derive(Debug, Clone)]
pub struct Invocation {
    plugin: String,
    env: BTreeMap<String, Option<String>>,
    /// Arguments after the binary (only `cli` runs have any).
    argv: Vec<String>,
    /// `PATH` of the process.
    path: String,
    stdin: Stdin,
    place: Where,
    timeout: Duration,
    /// Run where no iptables is visible (see [`Invocation::without_iptables`]).
    hide_iptables: bool,
}

impl Invocation {
    /// `command` is the `CNI_COMMAND` value; pass `""` to leave it unset.
    pub fn new(plugin: &str, command: &str) -> Invocation {
        let mut env = BTreeMap::new();
        env.insert("CNI_COMMAND".to_string(), Some(command.to_string()));
        if command.is_empty() {
            env.insert("CNI_COMMAND".to_string(), None);
        }
        env.insert("CNI_CONTAINERID".to_string(), Some("cm-test-container".to_string()));
        env.insert("CNI_IFNAME".to_string(), Some("eth0".to_string()));
        env.insert("CNI_MULTI_STATE_DIR".to_string(), Some(state_dir().to_string()));
        env.insert("DBUS_SYSTEM_BUS_ADDRESS".to_string(), Some(NO_SYSTEM_BUS.to_string()));
        Invocation {
            plugin: plugin.to_string(),
            env,
            argv: Vec::new(),
            path: PLUGIN_PATH.to_string(),
            stdin: Stdin::None,
            place: Where::AutoNode,
            timeout: PLUGIN_TIMEOUT,
            hide_iptables: false,
        }
    }

    /// `cni-multi ARGV` as a command (`net`, `inspect`...), not as a plugin: no `CNI_*`
    /// variable is set unless given (not even `CNI_PATH`), only `CNI_MULTI_STATE_DIR`. Run it
    /// with `run_cli`.
    pub fn cli(argv: &[&str]) -> Invocation {
        let mut env = BTreeMap::new();
        env.insert("CNI_PATH".to_string(), None);
        env.insert("DBUS_SYSTEM_BUS_ADDRESS".to_string(), Some(NO_SYSTEM_BUS.to_string()));
        // Its in-process plugins keep their records in the tests' state dir, never in /run.
        env.insert("CNI_MULTI_STATE_DIR".to_string(), Some(state_dir().to_string()));
        Invocation {
            plugin: "cni-multi".to_string(),
            env,
            argv: argv.iter().map(|a| a.to_string()).collect(),
            path: PLUGIN_PATH.to_string(),
            stdin: Stdin::None,
            place: Where::AutoNode,
            timeout: PLUGIN_TIMEOUT,
            hide_iptables: false,
        }
    }

    /// More arguments for a `cli` run.
    pub fn argv(mut self, more: &[&str]) -> Self {
        self.argv.extend(more.iter().map(|a| a.to_string()));
        self
    }

    /// The process's `PATH` (default `PLUGIN_PATH`; `""` for runs that must need no tool).
    pub fn path_env(mut self, p: &str) -> Self {
        self.path = p.to_string();
        self
    }

    /// Run the built cni-multi binary itself with this invocation's arguments.
    pub fn run_cli(&self) -> Outcome {
        self.run_binary(&ours_bin(), "")
    }

    pub fn plugin_name(&self) -> &str {
        &self.plugin
    }

    pub fn command(mut self, c: &str) -> Self {
        self.env.insert("CNI_COMMAND".into(), Some(c.into()));
        self
    }

    pub fn container_id(mut self, id: &str) -> Self {
        self.env.insert("CNI_CONTAINERID".into(), Some(id.into()));
        self
    }

    pub fn netns(mut self, path: impl AsRef<Path>) -> Self {
        let p = path.as_ref().to_string_lossy().into_owned();
        self.env.insert("CNI_NETNS".into(), Some(p));
        self
    }

    /// `CNI_NETNS` = this namespace's path.
    pub fn pod(self, ns: &TestNs) -> Self {
        self.netns(ns.path())
    }

    pub fn ifname(mut self, n: &str) -> Self {
        self.env.insert("CNI_IFNAME".into(), Some(n.into()));
        self
    }

    /// Overrides the default `CNI_PATH`.
    pub fn cni_path(mut self, p: &str) -> Self {
        self.env.insert("CNI_PATH".into(), Some(p.into()));
        self
    }

    pub fn args(mut self, a: &str) -> Self {
        self.env.insert("CNI_ARGS".into(), Some(a.into()));
        self
    }

    /// Any extra variable (e.g. `CNI_NETNS_OVERRIDE`).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), Some(v.into()));
        self
    }

    /// Make sure a variable is not set at all (also the defaults, e.g. `CNI_PATH`).
    pub fn unset(mut self, k: &str) -> Self {
        self.env.insert(k.into(), None);
        self
    }

    pub fn config(mut self, v: &Value) -> Self {
        self.stdin = Stdin::Bytes(serde_json::to_vec(v).expect("config serialises"));
        self
    }

    pub fn stdin_raw(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Stdin::Bytes(bytes.into());
        self
    }

    /// Run the plugin inside this (node) namespace: host-side objects land there.
    pub fn in_node(mut self, node: &TestNs) -> Self {
        self.place = Where::Node(node.path().to_path_buf());
        self
    }

    /// Run the plugin in the root netns. Only for runs that cannot touch the kernel (VERSION).
    pub fn in_root_ns(mut self) -> Self {
        self.place = Where::RootNs;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Run the plugin as on a node without iptables: in a private mount namespace with an
    /// empty tmpfs over every directory an `iptables` executable is looked for in
    /// ([`IPTABLES_DIRS`], the plugins' probe's standard dirs), and with `PATH` empty, entered
    /// into the node netns directly (nsenter itself would be hidden). With a fresh node netns
    /// (no iptables tables) this is the "nftables only" branch of the default backend. Needs a
    /// node netns (`in_node`, or the default throw-away one); the binary must live outside
    /// those directories (ours and the reference's do).
    pub fn without_iptables(mut self) -> Self {
        self.hide_iptables = true;
        self.path = String::new();
        self
    }

    /// Run cni-multi through a fresh `PluginDir` symlink named after the plugin.
    pub fn run_ours(&self) -> Outcome {
        let dir = PluginDir::new();
        self.run_ours_in(&dir)
    }

    /// Run cni-multi through the symlink in `dir` (CNI_PATH defaults to `dir`).
    pub fn run_ours_in(&self, dir: &PluginDir) -> Outcome {
        self.run_binary(&dir.plugin(&self.plugin), dir.as_str())
    }

    /// Run the reference plugin `/usr/lib/cni/<name>` with `CNI_PATH=/usr/lib/cni`.
    pub fn run_reference(&self) -> Outcome {
        self.run_binary(&reference_bin(&self.plugin), REFERENCE_DIR)
    }

    /// The command for `bin` as this invocation (env, netns), stdio piped, not yet started.
    fn build_command(&self, bin: &Path, node_path: Option<&Path>, default_cni_path: &str) -> Command {
        let mut cmd = match node_path {
            Some(p) if self.hide_iptables => hidden_iptables_command(bin, p),
            None if self.hide_iptables => panic!("without_iptables needs a node netns"),
            Some(p) => {
                let mut c = Command::new(tool("nsenter"));
                c.arg(format!("--net={}", p.display())).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(&self.argv).env_clear().env("PATH", &self.path);
        if !self.env.contains_key("CNI_PATH") {
            cmd.env("CNI_PATH", default_cni_path);
        }
        for (k, v) in &self.env {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    fn stdin_bytes(&self) -> Vec<u8> {
        match &self.stdin {
            Stdin::None => Vec::new(),
            Stdin::Bytes(b) => b.clone(),
        }
    }

    /// Starts `bin` as this invocation and returns at once (its stdin already written and
    /// closed), for tests that run plugins concurrently or kill them. Not for the default
    /// throw-away node, which would vanish before the plugin ran: use `in_node` or
    /// `in_root_ns`.
    pub fn spawn_binary(&self, bin: &Path, default_cni_path: &str) -> Child {
        let node_path = match &self.place {
            Where::AutoNode => panic!("spawn_binary needs in_node or in_root_ns"),
            Where::Node(p) => Some(p.as_path()),
            Where::RootNs => None,
        };
        let mut child = self
            .build_command(bin, node_path, default_cni_path)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // A plugin may exit without reading stdin: EPIPE is fine.
        let _ = child.stdin.take().expect("stdin piped").write_all(&self.stdin_bytes());
        child
    }

    /// Run any binary as this plugin invocation (`default_cni_path` unless overridden).
    pub fn run_binary(&self, bin: &Path, default_cni_path: &str) -> Outcome {
        let auto_node;
        let node_path = match &self.place {
            Where::AutoNode => {
                auto_node = TestNs::new_node("autonode");
                Some(auto_node.path().to_path_buf())
            }
            Where::Node(p) => Some(p.clone()),
            Where::RootNs => None,
        };
        let mut child = self
            .build_command(bin, node_path.as_deref(), default_cni_path)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));

        let mut stdin = child.stdin.take().expect("stdin piped");
        let bytes = self.stdin_bytes();
        // A plugin may exit without reading stdin: EPIPE is fine.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let mut out_pipe = child.stdout.take().expect("stdout piped");
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let out_reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out_pipe.read_to_end(&mut b);
            b
        });
        let err_reader = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err_pipe.read_to_end(&mut b);
            b
        });

        let start = Instant::now();
        let mut timed_out = false;
        let status = loop {
            match child.try_wait().expect("wait for plugin") {
                Some(s) => break s,
                None if start.elapsed() > self.timeout => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().expect("wait for killed plugin");
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        let elapsed = start.elapsed();
        let _ = writer.join();
        let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
        let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        use std::os::unix::process::ExitStatusExt;
        let status_code = status.code().unwrap_or_else(|| -status.signal().unwrap_or(0));
        let json = serde_json::from_str(&stdout).ok();
        Outcome {
            label: match self.env.contains_key("CNI_PATH") {
                true => format!("{} {}", bin.display(), self.describe()),
                false => format!("{} {} CNI_PATH={default_cni_path}", bin.display(), self.describe()),
            },
            status: status_code,
            stdout,
            stderr,
            json,
            timed_out,
            elapsed,
        }
    }

    /// The arguments and env as a one-line summary for failure messages.
    pub fn describe(&self) -> String {
        self.argv
            .iter()
            .cloned()
            .chain(self.env.iter().map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => format!("-{k}"),
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Where a plugin looks for an `iptables` executable besides `$PATH` (the plugins' probe's
/// own list).
pub const IPTABLES_DIRS: &[&str] = cni_multi::linux::filter_probe::STANDARD_DIRS;

/// `bin` started in its own mount namespace with an empty tmpfs over each of
/// [`IPTABLES_DIRS`] (the test's own namespace is untouched), in the netns at `node`.
fn hidden_iptables_command(bin: &Path, node: &Path) -> Command {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{setns, unshare, CloneFlags};
    use std::os::unix::process::CommandExt;
    let ns = std::fs::File::open(node).unwrap_or_else(|e| panic!("open netns {}: {e}", node.display()));
    let dirs: Vec<&'static str> = IPTABLES_DIRS
        .iter()
        .copied()
        .filter(|d| Path::new(d).is_dir())
        .collect();
    let mut cmd = Command::new(bin);
    // SAFETY: runs in the forked child before exec; only system calls, no allocation (the
    // paths are short, so nix builds them on the stack).
    unsafe {
        cmd.pre_exec(move || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            for d in &dirs {
                mount(Some("none"), *d, Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))?;
            }
            setns(&ns, CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    cmd
}

/// What one plugin run gave back.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Binary and env, for messages.
    pub label: String,
    /// Exit status; `-N` if killed by signal N.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// stdout parsed as JSON, if it is JSON.
    pub json: Option<Value>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    /// The CNI error code, if stdout is an error object.
    pub fn code(&self) -> Option<i64> {
        self.json.as_ref()?.get("code")?.as_i64()
    }

    pub fn msg(&self) -> Option<&str> {
        self.json.as_ref()?.get("msg")?.as_str()
    }

    /// The parsed result; panics if stdout was not JSON.
    pub fn result(&self) -> &Value {
        self.json
            .as_ref()
            .unwrap_or_else(|| panic!("stdout is not JSON:\n{self}"))
    }

    /// Panics (printing everything) unless the run exited 0.
    pub fn expect_ok(&self) -> &Self {
        if self.status != 0 || self.timed_out {
            panic!("expected success:\n{self}");
        }
        self
    }

    /// Panics unless the run exited 1 with a CNI error of this code on stdout.
    pub fn expect_err(&self, code: i64) -> &Self {
        if self.status != 1 || self.code() != Some(code) {
            panic!("expected CNI error code {code} with exit status 1:\n{self}");
        }
        self
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  run:    {}", self.label)?;
        writeln!(
            f,
            "  status: {}{} ({:?})",
            self.status,
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.elapsed
        )?;
        writeln!(f, "  stdout: {}", self.stdout.trim_end())?;
        write!(f, "  stderr: {}", self.stderr.trim_end())
    }
}

/// An executable `#!/bin/sh` script `name` in `dir` running `body`.
pub fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The first address of a CNI result, without its prefix length.
pub fn first_ip(r: &Value) -> String {
    r["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Normalisation and diffs
// ---------------------------------------------------------------------------------------------

/// Exact strings to replace with placeholders (netns paths, temp dirs...), so that two runs in
/// different namespaces compare equal.
#[derive(Debug, Clone, Default)]
pub struct Placeholders {
    pairs: Vec<(String, String)>,
}

impl Placeholders {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, actual: &str, placeholder: &str) -> &mut Self {
        if !actual.is_empty() {
            self.pairs.push((actual.to_string(), placeholder.to_string()));
            // Longest first, so that a prefix never shadows a longer path.
            self.pairs.sort_by_key(|(a, _)| std::cmp::Reverse(a.len()));
        }
        self
    }

    /// Replace known strings, then MAC addresses and random veth names.
    pub fn apply_str(&self, s: &str) -> String {
        let mut s = s.to_string();
        for (a, p) in &self.pairs {
            s = s.replace(a.as_str(), p);
        }
        normalize_tokens(&s)
    }

    pub fn apply(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.apply_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.apply(x)).collect()),
            Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (k.clone(), self.apply(x))).collect()),
            other => other.clone(),
        }
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Is `s` at `i` a MAC address `xx:xx:xx:xx:xx:xx` (not followed by more hex/colon)?
fn mac_at(s: &[u8], i: usize) -> bool {
    if i + 17 > s.len() {
        return false;
    }
    for k in 0..17 {
        let ok = if k % 3 == 2 { s[i + k] == b':' } else { is_hex(s[i + k]) };
        if !ok {
            return false;
        }
    }
    let before_ok = i == 0 || !(is_hex(s[i - 1]) || s[i - 1] == b':');
    let after_ok = i + 17 == s.len() || !(is_hex(s[i + 17]) || s[i + 17] == b':');
    before_ok && after_ok
}

/// Replace MACs (except the all-zero one) with `<mac>` and `vethXXXXXXXX` (8 hex) with `<veth>`.
pub fn normalize_tokens(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if mac_at(b, i) {
            let m = &s[i..i + 17];
            if m == "00:00:00:00:00:00" {
                out.push_str(m);
            } else {
                out.push_str("<mac>");
            }
            i += 17;
            continue;
        }
        if b[i..].starts_with(b"veth")
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && i + 12 <= b.len()
            && b[i + 4..i + 12].iter().all(|c| is_hex(*c))
            && (i + 12 == b.len() || !b[i + 12].is_ascii_alphanumeric())
        {
            out.push_str("<veth>");
            i += 12;
            continue;
        }
        let ch = s[i..].chars().next().expect("char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

fn pick(o: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| o.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

fn sort_values(v: &mut [Value]) {
    v.sort_by_key(|x| x.to_string());
}

/// Normalised kernel state from `ip -j addr`, `ip -j -4/-6 route show table all`: keeps what a
/// plugin decides (names, flags, mtu, kind, master, addresses, routes) and drops what the kernel
/// picks (ifindex, MACs, timers, link-local v6 suffixes, statistics).
pub fn normalize_kernel(addrs: &Value, routes4: &Value, routes6: &Value, ctx: &Placeholders) -> Value {
    let mut links = Vec::new();
    for l in addrs.as_array().into_iter().flatten() {
        let Some(o) = l.as_object() else { continue };
        let mut n = pick(o, &["ifname", "mtu", "operstate", "link_type", "master", "link"]);
        if let Some(Value::Array(flags)) = o.get("flags") {
            let mut f = flags.clone();
            sort_values(&mut f);
            n.insert("flags".into(), Value::Array(f));
        }
        let mut ais = Vec::new();
        for a in o.get("addr_info").and_then(Value::as_array).into_iter().flatten() {
            let Some(ao) = a.as_object() else { continue };
            let mut an = pick(ao, &["family", "local", "address", "prefixlen", "scope", "broadcast"]);
            if let Some(Value::String(local)) = an.get("local") {
                if local.starts_with("fe80:") {
                    an.insert("local".into(), json!("fe80::<link-local>"));
                }
            }
            for flag in ["noprefixroute", "nodad", "permanent", "secondary"] {
                if ao.get(flag) == Some(&Value::Bool(true)) {
                    an.insert(flag.into(), Value::Bool(true));
                }
            }
            ais.push(Value::Object(an));
        }
        sort_values(&mut ais);
        n.insert("addr_info".into(), Value::Array(ais));
        links.push(Value::Object(n));
    }
    sort_values(&mut links);

    let mut routes = Vec::new();
    for (fam, rs) in [("inet", routes4), ("inet6", routes6)] {
        for r in rs.as_array().into_iter().flatten() {
            let Some(o) = r.as_object() else { continue };
            let mut n = pick(
                o,
                &[
                    "type", "dst", "gateway", "via", "dev", "protocol", "scope", "prefsrc", "table", "metric", "pref",
                    "mtu", "advmss",
                ],
            );
            if let Some(Value::String(dst)) = n.get("dst") {
                if dst.starts_with("fe80::") && dst != "fe80::/64" {
                    n.insert("dst".into(), json!("fe80::<link-local>"));
                }
            }
            if let Some(Value::Array(flags)) = o.get("flags") {
                let mut f = flags.clone();
                sort_values(&mut f);
                if !f.is_empty() {
                    n.insert("flags".into(), Value::Array(f));
                }
            }
            n.insert("family".into(), json!(fam));
            routes.push(Value::Object(n));
        }
    }
    sort_values(&mut routes);
    ctx.apply(&json!({"links": links, "routes": routes}))
}

/// Human-readable differences between two JSON values (`path: expected X, got Y`).
pub fn json_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("$", expected, actual, &mut out);
    out
}

fn diff_into(path: &str, e: &Value, a: &Value, out: &mut Vec<String>) {
    match (e, a) {
        (Value::Object(eo), Value::Object(ao)) => {
            for (k, ev) in eo {
                match ao.get(k) {
                    Some(av) => diff_into(&format!("{path}.{k}"), ev, av, out),
                    None => out.push(format!("{path}.{k}: expected {ev}, missing")),
                }
            }
            for (k, av) in ao {
                if !eo.contains_key(k) {
                    out.push(format!("{path}.{k}: unexpected {av}"));
                }
            }
        }
        (Value::Array(ea), Value::Array(aa)) => {
            for i in 0..ea.len().max(aa.len()) {
                match (ea.get(i), aa.get(i)) {
                    (Some(ev), Some(av)) => diff_into(&format!("{path}[{i}]"), ev, av, out),
                    (Some(ev), None) => out.push(format!("{path}[{i}]: expected {ev}, missing")),
                    (None, Some(av)) => out.push(format!("{path}[{i}]: unexpected {av}")),
                    (None, None) => {}
                }
            }
        }
        _ if e != a => out.push(format!("{path}: expected {e}, got {a}")),
        _ => {}
    }
}

/// Like `json_diff`, but only keys present in `expected` are checked (objects, recursively).
pub fn json_subset_diff(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    subset_into("$", expected, actual, &mut out);
    out
}

fn subset_into(path: &str, e: &Value, a: &Value, out: &mut Vec<String>) {
    match (e, a) {
        (Value::Object(eo), Value::Object(ao)) => {
            for (k, ev) in eo {
                match ao.get(k) {
                    Some(av) => subset_into(&format!("{path}.{k}"), ev, av, out),
                    None => out.push(format!("{path}.{k}: expected {ev}, missing")),
                }
            }
        }
        (Value::Array(ea), Value::Array(aa)) if ea.len() == aa.len() => {
            for (i, (ev, av)) in ea.iter().zip(aa).enumerate() {
                subset_into(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        _ if e != a => out.push(format!("{path}: expected {e}, got {a}")),
        _ => {}
    }
}
