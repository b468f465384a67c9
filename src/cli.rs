//! The human front door, when the binary runs as `cni-multi`.

use crate::cni::skel::{self, Command};
use crate::plugins;
use argh::FromArgs;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(FromArgs)]
/// cni-multi: every CNI plugin a Linux node needs, in one executable.
///
/// Installed as symlinks named after each plugin it is called exactly like the
/// reference plugins. Under its own name: `cni-multi <plugin> <VERB> [options]` runs
/// one plugin by hand (see `cni-multi <plugin> --help`), or one of the commands below.
struct Top {
    #[argh(subcommand)]
    cmd: TopCmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum TopCmd {
    List(ListCmd),
    Install(InstallCmd),
    Version(VersionCmd),
    Net(Box<NetCmd>),
    Demo(DemoCmd),
    Inspect(InspectCmd),
    Explain(ExplainCmd),
}

#[derive(FromArgs)]
/// List every config key a plugin accepts, with type, default and meaning (also shown by
/// `cni-multi <plugin> --help`).
#[argh(subcommand, name = "explain")]
struct ExplainCmd {
    /// the plugin, e.g. bridge
    #[argh(positional)]
    plugin: String,
}

#[derive(FromArgs)]
/// Show every network, attachment, reservation and port mapping on this node, and the leaks
/// (read-only; exit 1 when a problem is found). Run it in the node's network namespace.
#[argh(subcommand, name = "inspect")]
struct InspectCmd {
    /// the network configuration dir (default /etc/cni/net.d, or $NETCONFPATH)
    #[argh(option)]
    conf_dir: Option<PathBuf>,
    /// libcni's cache dir (default /var/lib/cni)
    #[argh(option, default = "PathBuf::from(\"/var/lib/cni\")")]
    cache_dir: PathBuf,
    /// the plugin path used for STATUS and --gc (default /opt/cni/bin, or $CNI_PATH)
    #[argh(option)]
    cni_path: Option<String>,
    /// the invocation log to show recent errors from (default $CNI_MULTI_LOG)
    #[argh(option)]
    log: Option<PathBuf>,
    /// print JSON instead of the tree
    #[argh(switch)]
    json: bool,
    /// clean exactly the problems marked "--gc cleans it" (CNI DEL from the cache, then GC
    /// with every other attachment valid)
    #[argh(switch)]
    gc: bool,
}

#[derive(FromArgs)]
/// The main job: two pods on a throw-away node, added, pinged and removed (needs root).
#[argh(subcommand, name = "demo")]
struct DemoCmd {}

#[derive(FromArgs)]
/// Run a whole network list like cnitool: add, del, check, gc or status.
#[argh(subcommand, name = "net")]
struct NetCmd {
    /// add, del, check, gc or status
    #[argh(positional)]
    verb: String,
    /// the network name (looked up in --conf-dir) or, with --conf, ignored
    #[argh(positional)]
    name: String,
    /// the container's netns path (not needed for gc and status)
    #[argh(positional)]
    netns: Option<String>,
    /// directory of *.conflist files, and of <name>/*.conf plugin files (default
    /// $NETCONFPATH, else /etc/cni/net.d)
    #[argh(option)]
    conf_dir: Option<PathBuf>,
    /// a conflist (or single .conf) file to use instead of looking the name up; plugins
    /// from <its dir>/<name>/*.conf are added as from --conf-dir
    #[argh(option)]
    conf: Option<PathBuf>,
    /// result cache directory (default /var/lib/cni)
    #[argh(option, default = "PathBuf::from(\"/var/lib/cni\")")]
    cache_dir: PathBuf,
    /// CNI_IFNAME (default $CNI_IFNAME, else eth0)
    #[argh(option)]
    ifname: Option<String>,
    /// CNI_CONTAINERID (default derived from the netns path)
    #[argh(option)]
    container_id: Option<String>,
    /// CNI_PATH (default $CNI_PATH, else /opt/cni/bin)
    #[argh(option)]
    path: Option<String>,
    /// CNI_ARGS, "K=V;K2=V2" (default $CNI_ARGS)
    #[argh(option)]
    args: Option<String>,
    /// capability arguments as a JSON object (default $CAP_ARGS)
    #[argh(option)]
    cap_args: Option<String>,
    /// for gc: a JSON list of {"containerID","ifname"} to keep
    #[argh(option)]
    valid: Option<String>,
}

#[derive(FromArgs)]
/// List every plugin with its kind and summary.
#[argh(subcommand, name = "list")]
struct ListCmd {}

#[derive(FromArgs)]
/// Create a symlink per plugin in a directory (atomically replacing old files).
#[argh(subcommand, name = "install")]
struct InstallCmd {
    /// the plugin directory (default /opt/cni/bin)
    #[argh(option, default = "PathBuf::from(\"/opt/cni/bin\")")]
    dir: PathBuf,
    /// print what would be done, change nothing
    #[argh(switch)]
    dry_run: bool,
    /// copy this executable into the directory as `cni-multi` and point the symlinks at that
    /// copy (relative links): for installing from a container image onto a host directory
    #[argh(switch)]
    copy: bool,
}

#[derive(FromArgs)]
/// Print the version.
#[argh(subcommand, name = "version")]
struct VersionCmd {}

#[derive(FromArgs)]
/// Run one plugin by hand with the env/stdin semantics of a runtime call.
struct PluginCmd {
    /// ADD, DEL, CHECK, STATUS, GC or VERSION
    #[argh(positional)]
    verb: String,
    /// CNI_NETNS: path of the container's network namespace
    #[argh(option)]
    netns: Option<String>,
    /// CNI_IFNAME (default eth0)
    #[argh(option, default = "String::from(\"eth0\")")]
    ifname: String,
    /// CNI_CONTAINERID (default derived from the netns path, like cnitool)
    #[argh(option)]
    container_id: Option<String>,
    /// the network config file, or - for stdin (default -)
    #[argh(option, default = "String::from(\"-\")")]
    config: String,
    /// CNI_ARGS, e.g. "IgnoreUnknown=1;IP=10.0.0.5"
    #[argh(option)]
    args: Option<String>,
    /// CNI_PATH (default $CNI_PATH, else /opt/cni/bin)
    #[argh(option)]
    path: Option<String>,
    /// override the config's cniVersion
    #[argh(option)]
    cni_version: Option<String>,
}

pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    if strs.get(1) == Some(&"dhcp") && strs.get(2) == Some(&"daemon") {
        return crate::ipam::dhcp::daemon::main(&args[3..]);
    }
    if let Some(plugin) = strs.get(1).and_then(|n| plugins::lookup(n)) {
        let cmd_name = format!("cni-multi {}", plugin.name);
        return match PluginCmd::from_args(&[&cmd_name], &strs[2..]) {
            Ok(c) => run_plugin(plugin, c),
            Err(e) => {
                let help = e.status.is_ok();
                let code = early_exit(e);
                if let Some(keys) = crate::explain::lookup(plugin.name).filter(|_| help) {
                    print!("\n{}", crate::explain::render(keys));
                }
                code
            }
        };
    }
    let top = match Top::from_args(&["cni-multi"], strs.get(1..).unwrap_or(&[])) {
        Ok(t) => t,
        Err(e) => return early_exit(e),
    };
    match top.cmd {
        TopCmd::List(_) => {
            for p in plugins::PLUGINS {
                println!("{:<12} {:<9} {}", p.name, p.kind.as_str(), p.summary);
            }
            0
        }
        TopCmd::Version(_) => {
            // What a bug report or a scanner needs: which source, built for what (build.rs).
            println!(
                "cni-multi {} (CNI spec {})\ncommit: {}\ntarget: {} (libc: {})\ncrates: {}",
                env!("CNI_MULTI_VERSION"),
                crate::cni::version::CURRENT,
                env!("CNI_MULTI_GIT_COMMIT"),
                env!("CNI_MULTI_TARGET"),
                env!("CNI_MULTI_LIBC"),
                env!("CNI_MULTI_CRATES"),
            );
            0
        }
        TopCmd::Demo(_) => match crate::demo::run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cni-multi demo: {e:#}");
                1
            }
        },
        TopCmd::Net(n) => match run_net(*n) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cni-multi net: {e}");
                1
            }
        },
        TopCmd::Inspect(i) => run_inspect(i),
        TopCmd::Explain(e) => match crate::explain::lookup(&e.plugin) {
            Some(keys) => {
                print!("{}", crate::explain::render(keys));
                0
            }
            None => {
                eprintln!(
                    "cni-multi explain: no plugin {:?}; plugins: {}",
                    e.plugin,
                    plugins::names().join(", ")
                );
                2
            }
        },
        TopCmd::Install(i) => match install(&i.dir, i.dry_run, i.copy) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cni-multi install: {e:#}");
                1
            }
        },
    }
}

fn run_inspect(i: InspectCmd) -> i32 {
    use crate::inspect::{self, Options};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let opts = Options {
        conf_dir: i
            .conf_dir
            .or_else(|| env("NETCONFPATH").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc/cni/net.d")),
        cache_dir: i.cache_dir,
        cni_path: i
            .cni_path
            .or_else(|| env("CNI_PATH"))
            .unwrap_or_else(|| "/opt/cni/bin".into()),
        log: i
            .log
            .or_else(|| env(crate::invocation_log::ENV_PATH).map(PathBuf::from)),
    };
    plugins::wire_delegation();
    if i.gc {
        let done = inspect::gc(&opts);
        if !done.builtin_fallbacks.is_empty() {
            println!(
                "fallback: {} not found in --cni-path {:?}: run in-process as cni-multi's own built-ins",
                done.builtin_fallbacks.join(", "),
                opts.cni_path
            );
        }
        for p in &done.cleaned {
            println!("cleaned {} {} {}: {}", p.kind, p.network, p.container_id, p.detail);
        }
        for p in &done.remaining {
            eprintln!(
                "cni-multi inspect --gc: not cleaned {} {} {}: {}",
                p.kind, p.network, p.container_id, p.detail
            );
        }
        for e in &done.errors {
            eprintln!("cni-multi inspect --gc: {e}");
        }
        return i32::from(!done.errors.is_empty() || !done.remaining.is_empty());
    }
    let report = inspect::inspect(&opts);
    if i.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", inspect::render(&report));
    }
    i32::from(!report.problems.is_empty())
}

fn early_exit(e: argh::EarlyExit) -> i32 {
    if e.status.is_ok() {
        println!("{}", e.output);
        0
    } else {
        eprintln!("{}", e.output);
        if e.output.contains("Unrecognized argument") || e.output.contains("Required positional") {
            eprintln!("Run `cni-multi --help`; plugins: {}", plugins::names().join(", "));
        }
        2
    }
}

/// cnitool's container ID: a stable one derived from the netns path.
fn default_container_id(netns: &str) -> String {
    // FNV-1a: no hashing crate needed for a label.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in netns.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    format!("cni-multi-{h:016x}")
}

fn run_plugin(plugin: &'static crate::cni::Plugin, c: PluginCmd) -> i32 {
    let Some(command) = Command::parse(&c.verb.to_ascii_uppercase()) else {
        eprintln!(
            "cni-multi {}: unknown verb {:?} (ADD, DEL, CHECK, STATUS, GC, VERSION)",
            plugin.name, c.verb
        );
        return 2;
    };
    let mut config = Vec::new();
    let read = if c.config == "-" {
        std::io::stdin().read_to_end(&mut config).map(|_| ())
    } else {
        std::fs::read(&c.config).map(|d| config = d)
    };
    if let Err(e) = read {
        eprintln!("cni-multi {}: cannot read config {}: {e}", plugin.name, c.config);
        return 2;
    }
    if let Some(v) = &c.cni_version {
        match serde_json::from_slice::<serde_json::Value>(&config) {
            Ok(serde_json::Value::Object(mut m)) => {
                m.insert("cniVersion".into(), v.clone().into());
                config = serde_json::to_vec(&m).expect("a JSON object serialises");
            }
            _ => {
                eprintln!("cni-multi {}: --cni-version needs a JSON object config", plugin.name);
                return 2;
            }
        }
    }
    let netns = c.netns.clone().unwrap_or_default();
    let vars = [
        ("CNI_COMMAND", command.as_str().to_string()),
        ("CNI_NETNS", netns.clone()),
        ("CNI_IFNAME", c.ifname.clone()),
        (
            "CNI_CONTAINERID",
            c.container_id.clone().unwrap_or_else(|| default_container_id(&netns)),
        ),
        ("CNI_ARGS", c.args.clone().unwrap_or_default()),
        (
            "CNI_PATH",
            c.path
                .clone()
                .or_else(|| std::env::var("CNI_PATH").ok())
                .unwrap_or_else(|| "/opt/cni/bin".into()),
        ),
    ];
    // Executed delegates inherit these, exactly as under a runtime. The process is
    // single-threaded, so changing the environment is safe.
    for (k, v) in &vars {
        std::env::set_var(k, v);
    }
    plugins::wire_delegation();
    let getenv = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let data = config.clone();
    let mut read_stdin = || Ok(data.clone());
    let started = (std::time::SystemTime::now(), std::time::Instant::now());
    let out = skel::run(plugin, &getenv, &mut read_stdin, &|_| false);
    // Logged as a runtime's run of the plugin would be (after its in-process delegates).
    crate::invocation_log::record_run(plugin.name, &getenv, started, &config, out.exit, &out.stdout);
    if out.exit != 0 {
        if let Ok(e) = serde_json::from_str::<crate::cni::CniError>(&out.stdout) {
            eprintln!("cni-multi {} {}: error code {}: {}", plugin.name, command, e.code, e);
        }
    }
    let code = plugins::emit(&out);
    if !out.stdout.is_empty() && !out.stdout.ends_with('\n') {
        println!();
    }
    code
}

/// One symlink per plugin, each made under a temporary name and renamed over the
/// old file so that a runtime never sees a missing or half-written plugin. Other files in
/// the directory are left alone, and running it again changes nothing.
///
/// With `copy`, the executable itself is first copied to `<dir>/cni-multi` the same way
/// (written and synced under a temporary name, then renamed: a plugin executing the old copy
/// at that moment keeps its inode and is never torn), and the links are relative
/// (`bridge -> cni-multi`), so they stay right when the directory is seen under another
/// path, as a host's /opt/cni/bin is from an installer container's /host/opt/cni/bin.
pub fn install(dir: &Path, dry_run: bool, copy: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let exe = std::fs::canonicalize("/proc/self/exe").context("cannot resolve this executable's path")?;
    if !dry_run {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let target = if copy {
        let dst = dir.join("cni-multi");
        println!("{} <- {}", dst.display(), exe.display());
        if !dry_run && !same_content(&exe, &dst) {
            copy_atomically(&exe, &dst)?;
        }
        PathBuf::from("cni-multi")
    } else {
        exe
    };
    for name in plugins::names() {
        let dst = dir.join(name);
        println!("{} -> {}", dst.display(), target.display());
        if dry_run || std::fs::read_link(&dst).is_ok_and(|t| t == target) {
            continue;
        }
        let tmp = dir.join(format!(".{name}.cni-multi-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        if let Err(e) = std::fs::rename(&tmp, &dst) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot replace {}", dst.display()));
        }
    }
    Ok(())
}

fn same_content(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(ma), Ok(mb)) if mb.file_type().is_file() && ma.len() == mb.len() => {
            matches!((std::fs::read(a), std::fs::read(b)), (Ok(x), Ok(y)) if x == y)
        }
        _ => false,
    }
}

fn copy_atomically(src: &Path, dst: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dst.with_file_name(format!(".cni-multi.copy-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let bytes = std::fs::read(src)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dst)
    };
    let _ = std::fs::remove_file(&tmp);
    write()
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            anyhow::Error::new(e)
        })
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))
}

fn run_net(n: NetCmd) -> anyhow::Result<()> {
    use crate::runtime::{self, NetworkList, RuntimeConf};
    use anyhow::Context;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let list = match &n.conf {
        Some(f) => NetworkList::from_file(f)?,
        None => {
            let dir = n.conf_dir.clone().or_else(|| env("NETCONFPATH").map(PathBuf::from));
            NetworkList::load(&dir.unwrap_or_else(|| PathBuf::from("/etc/cni/net.d")), &n.name)?
        }
    };
    let netns = n.netns.clone().unwrap_or_default();
    let args = n.args.clone().or_else(|| env("CNI_ARGS")).unwrap_or_default();
    let args = crate::cni::args::CniArgs::parse(&args)?.pairs().to_vec();
    let cap_args = match n.cap_args.clone().or_else(|| env("CAP_ARGS")) {
        Some(s) => serde_json::from_str(&s).context("capability args must be a JSON object")?,
        None => serde_json::Map::new(),
    };
    plugins::wire_delegation();
    let rt = RuntimeConf {
        container_id: n.container_id.clone().unwrap_or_else(|| default_container_id(&netns)),
        netns,
        ifname: n
            .ifname
            .clone()
            .or_else(|| env("CNI_IFNAME"))
            .unwrap_or_else(|| "eth0".into()),
        args,
        capability_args: cap_args,
        cni_path: n
            .path
            .clone()
            .or_else(|| env("CNI_PATH"))
            .unwrap_or_else(|| "/opt/cni/bin".into()),
        cache_dir: n.cache_dir.clone(),
    };
    match n.verb.as_str() {
        "add" => {
            let r = runtime::add(&list, &rt)?;
            println!("{}", r.to_json(&list.cni_version)?);
        }
        "del" => runtime::del(&list, &rt)?,
        "check" => runtime::check(&list, &rt)?,
        "status" => runtime::status(&list, &rt)?,
        "gc" => {
            let valid: Option<Vec<crate::cni::config::Attachment>> = match &n.valid {
                Some(s) => Some(serde_json::from_str(s).context("--valid must be a JSON list of attachments")?),
                None => None,
            };
            runtime::gc(&list, &rt, valid.as_deref())?
        }
        other => anyhow::bail!("unknown verb {other:?} (add, del, check, gc, status)"),
    }
    Ok(())
}
