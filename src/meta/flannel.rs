//! flannel: connect pods across nodes. flanneld leases this node a subnet and writes it to
//! `subnetFile`; this plugin turns that into a delegate config (bridge + host-local by
//! default), saves it to `<dataDir>/<containerID>` and runs the delegate. DEL replays the
//! saved config, so a node can swap from the reference plugin with pods running: the
//! saved file, its name and its bytes are the reference's.

use crate::cni::config::{self, Attachment};
use crate::cni::delegate;
use crate::cni::error::{code, CniError, Failures};
use crate::cni::gokeys::GoKeys;
use crate::cni::plugin::{entry, CniPlugin};
use crate::cni::result::{CniResult, Route};
use crate::cni::skel::{CmdArgs, Command, Kind, Plugin};
use crate::linux::statefile;
use crate::pkg::caps::{self, Capability};
use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

pub static PLUGIN: Plugin = entry::<Flannel>();

const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

// ---- config -----------------------------------------------------------------------------

#[derive(Debug, Deserialize, GoKeys)]
struct FlannelConf {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    #[serde(rename = "subnetFile", default)]
    subnet_file: Option<String>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(default)]
    delegate: Option<Map<String, Value>>,
    #[serde(default)]
    ipam: Option<Map<String, Value>>,
    #[serde(rename = "runtimeConfig", default)]
    runtime_config: Option<Map<String, Value>>,
    #[serde(rename = "prevResult", default)]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "cni.dev/attachments", default)]
    attachments: Option<Vec<Attachment>>,
}

impl FlannelConf {
    fn subnet_file(&self) -> &str {
        self.subnet_file
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_SUBNET_FILE)
    }

    fn data_dir(&self) -> &Path {
        Path::new(
            self.data_dir
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(DEFAULT_DATA_DIR),
        )
    }
}

fn load_conf(stdin: &[u8]) -> Result<FlannelConf, CniError> {
    config::parse(stdin)
}

/// What flanneld wrote: the cluster networks, this node's subnet, the MTU of the overlay and
/// whether flanneld masquerades itself.
#[derive(Debug, Default, PartialEq)]
pub struct SubnetEnv {
    pub networks: Vec<IpNet>,
    pub subnet: Option<IpNet>,
    pub ip6_networks: Vec<IpNet>,
    pub ip6_subnet: Option<IpNet>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
}

impl SubnetEnv {
    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.networks.is_empty() && self.ip6_networks.is_empty() {
            m.extend(["FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"]);
        }
        if self.subnet.is_none() && self.ip6_subnet.is_none() {
            m.extend(["FLANNEL_SUBNET", "FLANNEL_IPV6_SUBNET"]);
        }
        if self.mtu.is_none() {
            m.push("FLANNEL_MTU");
        }
        if self.ipmasq.is_none() {
            m.push("FLANNEL_IPMASQ");
        }
        m
    }
}

/// Go's net.ParseCIDR, keeping only the network (`10.1.17.1/24` -> `10.1.17.0/24`).
fn parse_cidr(s: &str) -> anyhow::Result<IpNet> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .map_err(|_| anyhow!("invalid CIDR address: {s}"))
}

fn parse_cidr_list(s: &str) -> anyhow::Result<Vec<IpNet>> {
    let mut out: Vec<IpNet> = Vec::new();
    for c in s.split(',') {
        let n = parse_cidr(c)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// Parse subnet.env as the reference does: `KEY=VALUE` lines split at the first `=`, no
/// quoting, unknown keys ignored; then every missing key is named at once.
pub fn parse_subnet_env(text: &str, file: &str) -> anyhow::Result<SubnetEnv> {
    let mut se = SubnetEnv::default();
    for line in text.lines() {
        let (key, value) = match line.split_once('=') {
            Some(kv) => kv,
            None => (line, ""),
        };
        let known = [
            "FLANNEL_NETWORK",
            "FLANNEL_SUBNET",
            "FLANNEL_IPV6_NETWORK",
            "FLANNEL_IPV6_SUBNET",
            "FLANNEL_MTU",
            "FLANNEL_IPMASQ",
        ];
        if known.contains(&key) && !line.contains('=') {
            // The reference crashes on this line; a message is kinder.
            bail!("{file}: line {line:?} has no '='");
        }
        match key {
            "FLANNEL_NETWORK" => se.networks = parse_cidr_list(value)?,
            "FLANNEL_SUBNET" => se.subnet = Some(parse_cidr(value)?),
            "FLANNEL_IPV6_NETWORK" => se.ip6_networks = parse_cidr_list(value)?,
            "FLANNEL_IPV6_SUBNET" => se.ip6_subnet = Some(parse_cidr(value)?),
            "FLANNEL_MTU" => {
                let mtu = value
                    .parse::<u32>()
                    .map_err(|e| anyhow!("strconv.ParseUint: parsing {value:?}: {}", go_parse_uint_err(&e)))?;
                se.mtu = Some(mtu);
            }
            "FLANNEL_IPMASQ" => se.ipmasq = Some(value == "true"),
            _ => {}
        }
    }
    let missing = se.missing();
    if !missing.is_empty() {
        bail!("{file} is missing {}", missing.join(", "));
    }
    Ok(se)
}

fn go_parse_uint_err(e: &std::num::ParseIntError) -> &'static str {
    match e.kind() {
        std::num::IntErrorKind::PosOverflow => "value out of range",
        _ => "invalid syntax",
    }
}

/// Read and parse the subnet file; a missing file names its path (the most common flannel
/// complaint is a node whose flanneld has not written it yet).
pub fn load_subnet_env(file: &str) -> anyhow::Result<SubnetEnv> {
    // A regular file of sane size only: a FIFO would block the ADD, /dev/zero fill the memory.
    let reader = crate::linux::files::Reader::following(1024 * 1024);
    let bytes = reader.read(Path::new(file)).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => crate::linux::error::io_errno_text(&e),
        };
        anyhow!("open {file}: {why}")
    })?;
    parse_subnet_env(&String::from_utf8_lossy(&bytes), file)
}

/// The delegate config, built exactly as the reference builds it (flannel.go cmdAdd and
/// flannel_linux.go doCmdAdd/getDelegateIPAM).
fn delegate_config(conf: &FlannelConf, env: &SubnetEnv) -> anyhow::Result<Map<String, Value>> {
    let mut d = conf.delegate.clone().unwrap_or_default();
    if d.get("type").is_some_and(|t| !t.is_string()) {
        bail!(CniError::invalid_config(
            "'delegate' dictionary, if present, must have (string) 'type' field"
        ));
    }
    if d.contains_key("name") {
        bail!(CniError::invalid_config(
            "'delegate' dictionary must not have 'name' field, it'll be set by flannel"
        ));
    }
    if d.contains_key("ipam") {
        bail!(CniError::invalid_config(
            "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel"
        ));
    }
    if let Some(rc) = &conf.runtime_config {
        d.insert("runtimeConfig".into(), Value::Object(rc.clone()));
    }
    d.insert("name".into(), Value::String(conf.name.clone()));
    d.entry("type").or_insert_with(|| "bridge".into());
    // flanneld masquerades itself when FLANNEL_IPMASQ=true; otherwise the delegate must.
    d.entry("ipMasq").or_insert(Value::Bool(!env.ipmasq.unwrap_or(false)));
    d.entry("mtu")
        .or_insert(env.mtu.map(Value::from).unwrap_or(Value::Null));
    if d.get("type").and_then(Value::as_str) == Some("bridge") {
        d.entry("isGateway").or_insert(Value::Bool(true));
    }
    if !conf.cni_version.is_empty() {
        d.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    }
    let ipam = delegate_ipam(conf, env).context("failed to assemble Delegate IPAM")?;
    d.insert("ipam".into(), Value::Object(ipam));
    Ok(d)
}

fn delegate_ipam(conf: &FlannelConf, env: &SubnetEnv) -> anyhow::Result<Map<String, Value>> {
    let mut ipam = conf.ipam.clone().unwrap_or_default();
    ipam.entry("type").or_insert_with(|| "host-local".into());
    let ranges: Vec<Value> = [env.subnet, env.ip6_subnet]
        .into_iter()
        .flatten()
        .map(|s| serde_json::json!([{ "subnet": s.to_string() }]))
        .collect();
    ipam.insert(
        "ranges".into(),
        if ranges.is_empty() {
            Value::Null
        } else {
            Value::Array(ranges)
        },
    );
    let mut routes: Vec<Route> = match ipam.get("routes") {
        // The ipam map's own keys are data, but a route's are Go struct fields (any case).
        Some(r) => crate::cni::gokeys::from_value(r)
            .map_err(|e| anyhow!("failed to parse ipam.routes: {e}"))
            .context("failed to read IPAM routes")?,
        None => Vec::new(),
    };
    // One route per flannel network, without gw: the delegate's gateway is used.
    routes.extend(
        env.networks
            .iter()
            .chain(&env.ip6_networks)
            .map(|n| Route::new(*n, None)),
    );
    ipam.insert("routes".into(), serde_json::to_value(routes).expect("routes serialise"));
    Ok(ipam)
}

// ---- Go's json.Marshal, for the saved file ------------------------------------------------

/// The delegate config as Go's json.Marshal prints a `map[string]interface{}`: compact, keys
/// sorted, numbers as float64, `<>&` escaped. Routes were typed structs there, so their keys
/// keep the struct's order.
fn go_marshal(d: &Map<String, Value>) -> Vec<u8> {
    let mut out = String::with_capacity(256);
    out.push('{');
    for (i, (k, v)) in d.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_string(k, &mut out);
        out.push(':');
        match (k.as_str(), v) {
            ("ipam", Value::Object(ipam)) => {
                out.push('{');
                for (j, (ik, iv)) in ipam.iter().enumerate() {
                    if j > 0 {
                        out.push(',');
                    }
                    go_string(ik, &mut out);
                    out.push(':');
                    match (ik.as_str(), iv) {
                        ("routes", Value::Array(rs)) => {
                            out.push('[');
                            for (n, r) in rs.iter().enumerate() {
                                if n > 0 {
                                    out.push(',');
                                }
                                go_route(r, &mut out);
                            }
                            out.push(']');
                        }
                        _ => go_value(iv, &mut out),
                    }
                }
                out.push('}');
            }
            _ => go_value(v, &mut out),
        }
    }
    out.push('}');
    out.into_bytes()
}

const ROUTE_KEYS: [&str; 7] = ["dst", "gw", "mtu", "advmss", "priority", "table", "scope"];

fn go_route(r: &Value, out: &mut String) {
    let Value::Object(m) = r else {
        return go_value(r, out);
    };
    out.push('{');
    for (i, k) in ROUTE_KEYS.iter().filter(|k| m.contains_key(**k)).enumerate() {
        if i > 0 {
            out.push(',');
        }
        go_string(k, out);
        out.push(':');
        go_value(&m[*k], out);
    }
    out.push('}');
}

fn go_value(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&go_number(n)),
        Value::String(s) => go_string(s, out),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_value(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                go_string(k, out);
                out.push(':');
                go_value(x, out);
            }
            out.push('}');
        }
    }
}

/// Go decodes every JSON number of an `interface{}` as float64 and prints it back with
/// `strconv.FormatFloat(f, 'f' or 'e', -1, 64)`; our own integers (mtu) were uints there.
fn go_number(n: &serde_json::Number) -> String {
    if let Some(u) = n.as_u64().filter(|u| *u < (1 << 53)) {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    } else {
        format!("{f}")
    }
}

fn go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

// ---- saved delegate configs ----------------------------------------------------------------

/// A delegate config is a few hundred bytes; a saved file this large is not ours.
const SAVED_MAX: u64 = 1 << 20;

fn saved_path(data_dir: &Path, container_id: &str) -> PathBuf {
    data_dir.join(container_id)
}

/// Write-then-fsync, mode 0600 in a 0700 directory: the reference's storage.
fn save(data_dir: &Path, container_id: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .with_context(|| format!("mkdir {}", data_dir.display()))?;
    let path = saved_path(data_dir, container_id);
    // Through a temp file and rename: a full dataDir leaves no half-written config, and a
    // symlink planted at the path is replaced, never written through.
    statefile::write_atomic(&path, bytes, 0o600, true).with_context(|| format!("write {}", path.display()))
}

/// The delegate type of a saved config.
fn saved_type(bytes: &[u8]) -> Result<String, serde_json::Error> {
    #[derive(Deserialize, GoKeys)]
    struct T {
        #[serde(rename = "type", default)]
        t: String,
    }
    crate::cni::gokeys::from_slice::<T>(bytes).map(|t| t.t)
}

// Why two copies: every plugin declares its name, kind, summary and capabilities in these
// lines of `CniPlugin`, where a reader of the plugin looks; they are alike by the trait's design.
struct Flannel;

impl CniPlugin for Flannel {
    const NAME: &'static str = "flannel";
    const KIND: Kind = Kind::Meta;
    const SUMMARY: &'static str = "connect pods across nodes: delegate to bridge + host-local with flanneld's subnet";
    /// Its delegate may be any built-in plugin: the union of theirs.
    const CAPS: &'static [Capability] = caps::TUNING;
    type Conf = FlannelConf;
    type Lenient = FlannelConf;

    fn load(args: &CmdArgs) -> anyhow::Result<Self::Conf> {
        // ADD keeps the reference's wording, with the code of the config error kept (7, not 999).
        load_conf(&args.stdin).map_err(|e| match args.command {
            Command::Add => CniError {
                msg: format!("loadFlannelNetConf failed: {}", e.msg),
                ..e
            }
            .into(),
            _ => e.into(),
        })
    }
    fn parse(args: &CmdArgs) -> anyhow::Result<Self::Lenient> {
        Ok(load_conf(&args.stdin)?)
    }

    fn add(conf: FlannelConf, args: &CmdArgs) -> anyhow::Result<CniResult> {
        let env = load_subnet_env(conf.subnet_file())
            .context("loadFlannelSubnetEnv failed")
            .map_err(|e| with_hint(e, conf.subnet_file()))?;
        let d = delegate_config(&conf, &env)?;
        let bytes = go_marshal(&d);
        // Saved before delegating, so a DEL after a half-done ADD still finds what to undo.
        save(conf.data_dir(), &args.container_id, &bytes)?;
        let dtype = d["type"].as_str().expect("checked to be a string").to_string();
        delegate::add(&dtype, &bytes, args).map_err(|e| {
            // A failed ADD leaves nothing: the delegate's DEL takes back whatever a delegate that
            // does not roll back left (ours does; a third-party one may not), then the saved
            // config goes, so no DEL or GC later acts on an attachment that never existed.
            if let Err(d) = delegate::del(&dtype, &bytes, args) {
                eprintln!("rollback: delegated DEL failed: {}", d.msg);
            }
            let _ = statefile::remove_with_temps(&saved_path(conf.data_dir(), &args.container_id));
            let mut e2 = e.clone();
            e2.msg = format!("failed to delegate add: {}", e.msg);
            e2.into()
        })
    }

    /// Replay the saved config to the delegate (this DEL's own prevResult and runtimeConfig are
    /// not used), then remove it, even when the delegate fails, as the reference does.
    fn del(conf: FlannelConf, args: &CmdArgs) -> anyhow::Result<()> {
        let path = saved_path(conf.data_dir(), &args.container_id);
        // Never followed through a symlink, never blocked on (a FIFO), bounded in size.
        let bytes = match statefile::read_regular(&path, SAVED_MAX) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // An ADD killed while saving leaves only its temp file.
                let _ = statefile::remove_with_temps(&path);
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // Planted, not saved by ADD (a symlink, a FIFO, 10 MB): never followed or
                // trusted; the entry itself goes (a directory stays), the DEL succeeds and GC
                // reclaims what the delegate held.
                eprintln!("flannel: ignoring saved config: {e}");
                let _ = statefile::remove_with_temps(&path);
                return Ok(());
            }
            Err(e) => return Err(anyhow!("read {}: {e}", path.display())),
        };
        let dtype = match saved_type(&bytes) {
            Ok(t) => t,
            Err(e) => {
                // Kept for a person to look at; the pod's links go with its netns anyway.
                eprintln!("failed to parse netconf: {e}");
                return Ok(());
            }
        };
        let r = delegate::del(&dtype, &bytes, args);
        let _ = statefile::remove_with_temps(&path);
        Ok(r?)
    }

    /// The reference does nothing here. When the delegate is built in, we ask it, with the saved
    /// config and this CHECK's prevResult, so a broken pod network is reported. An external
    /// delegate is not asked: the reference bridge's CHECK fails on the gw-less routes flannel
    /// gives it (it compares them with the gateway the kernel route has).
    fn check(conf: FlannelConf, args: &CmdArgs) -> anyhow::Result<()> {
        let dtype = conf
            .delegate
            .as_ref()
            .and_then(|d| d.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("bridge");
        if !matches!(delegate::resolve(dtype, &args.path), Ok(delegate::Target::BuiltIn(_))) {
            return Ok(());
        }
        let path = saved_path(conf.data_dir(), &args.container_id);
        let bytes = statefile::read_regular(&path, SAVED_MAX).map_err(|e| {
            anyhow!(
                "no saved delegate config for container {:?} ({}: {e})",
                args.container_id,
                path.display()
            )
        })?;
        let mut d: Map<String, Value> =
            serde_json::from_slice(&bytes).with_context(|| format!("failed to parse {}", path.display()))?;
        let dtype = d.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
        d.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
        if let Some(prev) = &conf.prev_result {
            d.insert("prevResult".into(), prev.clone());
        }
        let bytes = serde_json::to_vec(&d).expect("serialises");
        Ok(delegate::check(&dtype, &bytes, args)?)
    }

    /// Not ready (code 50) until flanneld has written a complete subnet file.
    fn status(args: &CmdArgs) -> anyhow::Result<()> {
        let conf = load_conf(&args.stdin)?;
        load_subnet_env(conf.subnet_file())
            .map_err(|e| CniError::new(code::NOT_AVAILABLE, format!("flannel is not ready: {e:#}")))?;
        Ok(())
    }

    /// Forward GC to the delegate once per distinct saved config (or, with none saved, the config
    /// ADD would build now), then forget the saved configs of containers not in the valid list.
    fn gc(args: &CmdArgs) -> anyhow::Result<()> {
        let conf = load_conf(&args.stdin)?;
        // Without the list there is nothing to tell live attachments from dead ones: keep all.
        let Some(valid): Option<Vec<Attachment>> = conf.valid_attachments.clone().or_else(|| conf.attachments.clone())
        else {
            return Ok(());
        };
        let dir = conf.data_dir();
        let mut saved: Vec<(String, PathBuf, Map<String, Value>)> = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !e.file_type().map(|t| t.is_file()).unwrap_or(false) || config::validate_container_id(&name).is_err()
                {
                    continue;
                }
                if let Ok(Value::Object(m)) = statefile::read_regular(&e.path(), SAVED_MAX)
                    .map_err(|_| ())
                    .and_then(|b| serde_json::from_slice(&b).map_err(|_| ()))
                {
                    saved.push((name, e.path(), m));
                }
            }
        }
        saved.sort_by(|a, b| a.0.cmp(&b.0));

        let mut configs: Vec<Map<String, Value>> = Vec::new();
        for (_, _, m) in &saved {
            let mut c = m.clone();
            c.remove("runtimeConfig");
            if !configs.contains(&c) {
                configs.push(c);
            }
        }
        if configs.is_empty() {
            if let Ok(env) = load_subnet_env(conf.subnet_file()) {
                let mut c = delegate_config(&conf, &env)?;
                c.remove("runtimeConfig");
                configs.push(c);
            }
        }
        let mut errors = Failures::under("flannel GC");
        for mut c in configs {
            let dtype = c.get("type").and_then(Value::as_str).unwrap_or_default().to_string();
            c.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
            let list = serde_json::to_value(&valid).expect("attachments serialise");
            c.insert("cni.dev/valid-attachments".into(), list.clone());
            c.insert("cni.dev/attachments".into(), list);
            let bytes = serde_json::to_vec(&c).expect("serialises");
            if let Err(e) = delegate::gc(&dtype, &bytes, args) {
                errors.push(CniError::new(e.code, format!("delegate {dtype:?}: {}", e.msg)));
            }
        }
        for (cid, path, _) in &saved {
            if !valid.iter().any(|a| &a.container_id == cid) {
                errors.keep(std::fs::remove_file(path).with_context(|| format!("remove {}", path.display())));
            }
        }
        Ok(errors.finish()?)
    }
}

/// Keep the reference's message, add what to look at in `details`.
fn with_hint(e: anyhow::Error, file: &str) -> anyhow::Error {
    let msg = format!("{e:#}");
    let details = if msg.contains("no such file or directory") {
        format!("{file} is written by flanneld once it has a subnet lease: is flanneld running on this node?")
    } else {
        format!("{file} is written by flanneld; check its FLANNEL_* lines")
    };
    CniError::internal(msg).with_details(details).into()
}

/// Fuzzing entry (fuzz/): the config and a subnet.env's text through the parsers and the
/// delegate's config as ADD assembles it, no files and no kernel.
#[doc(hidden)]
pub fn fuzz_parse(stdin: &[u8], subnet_env: &str) -> anyhow::Result<()> {
    let env = parse_subnet_env(subnet_env, "subnet.env")?;
    let conf = load_conf(stdin)?;
    let _ = conf.subnet_file();
    let _ = conf.data_dir();
    let d = delegate_config(&conf, &env)?;
    let _ = go_marshal(&d);
    // DEL reads back what ADD saved: the same bytes may be a hostile saved file.
    let _ = saved_type(stdin);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> FlannelConf {
        load_conf(json.as_bytes()).unwrap()
    }

    const V4: &str =
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn subnet_env_parsing() {
        let se = parse_subnet_env(V4, "f").unwrap();
        assert_eq!(se.networks, vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(se.subnet.unwrap().to_string(), "10.1.17.0/24");
        assert_eq!((se.mtu, se.ipmasq), (Some(1472), Some(true)));
        let se = parse_subnet_env(
            "FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16,10.1.0.0/16\nFLANNEL_IPV6_SUBNET=fc00::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=yes\nOTHER=x\n",
            "f",
        )
        .unwrap();
        assert_eq!(se.networks.len(), 2, "duplicates dropped");
        assert_eq!(se.ip6_subnet.unwrap().to_string(), "fc00::/64");
        assert_eq!(se.ipmasq, Some(false), "only \"true\" is true");
        let e = parse_subnet_env("foo=bar", "/x/subnet.env").unwrap_err().to_string();
        assert_eq!(
            e,
            "/x/subnet.env is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"
        );
        let e = parse_subnet_env("FLANNEL_SUBNET=10.1.17.1", "f")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "invalid CIDR address: 10.1.17.1");
        let e = parse_subnet_env("FLANNEL_MTU=abc", "f").unwrap_err().to_string();
        assert_eq!(e, "strconv.ParseUint: parsing \"abc\": invalid syntax");
        assert!(parse_subnet_env("FLANNEL_MTU\n", "f").is_err());
    }

    #[test]
    fn missing_file_names_path() {
        let e = load_subnet_env("/nonexistent/flannel/subnet.env")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "open /nonexistent/flannel/subnet.env: no such file or directory");
    }

    /// A config key of the wrong type is code 7 through ADD too (the reference's wrapping of
    /// the message dropped the code: 999; found by tests/it/corpus.rs).
    #[test]
    fn wrong_typed_key_is_code_7() {
        let args = CmdArgs::example(
            br#"{"cniVersion":"1.0.0","name":"n","type":"flannel","subnetFile":5}"#,
            "",
        );
        let e = CniError::from_anyhow(&(PLUGIN.add)(&args).unwrap_err());
        assert_eq!(e.code, 7, "{}", e.msg);
        assert!(e.msg.starts_with("loadFlannelNetConf failed: "), "{}", e.msg);
        let env = parse_subnet_env(
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.2.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
            "f",
        )
        .unwrap();
        for d in [r#"{"name":"x"}"#, r#"{"type":5}"#, r#"{"ipam":{}}"#] {
            let c = conf(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"flannel","delegate":{d}}}"#
            ));
            let e = CniError::from_anyhow(&delegate_config(&c, &env).unwrap_err());
            assert_eq!(e.code, 7, "{d}: {}", e.msg);
        }
    }

    /// A subnetFile that is a FIFO or a device is refused at once (it blocked the ADD, or
    /// read /dev/zero until memory ran out).
    #[test]
    fn subnet_file_that_is_no_regular_file() {
        let fifo = std::env::temp_dir().join(format!("cni-multi-flannel-fifo-{}", std::process::id()));
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = load_subnet_env(fifo.to_str().unwrap()).unwrap_err().to_string();
        std::fs::remove_file(&fifo).unwrap();
        assert!(e.ends_with(": not a regular file"), "{e}");
        let e = load_subnet_env("/dev/zero").unwrap_err().to_string();
        assert_eq!(e, "open /dev/zero: not a regular file");
    }

    #[test]
    fn delegate_v4_golden() {
        let c = conf(r#"{"name":"cni-flannel","type":"flannel"}"#);
        let d = delegate_config(&c, &parse_subnet_env(V4, "f").unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(go_marshal(&d)).unwrap(),
            r#"{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}"#
        );
    }

    #[test]
    fn delegate_keys_and_ipam_merge() {
        let c = conf(
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"portMappings":[]},
                "delegate":{"type":"ptp","ipMasq":true,"hairpinMode":true,"x":1.0,"y":1e21,"z":"<&>"},
                "ipam":{"type":"my-ipam","unknown-param":"unknown-value",
                        "routes":[{"dst":"10.96.0.0/12"},{"dst":"192.168.244.0/24","gw":"10.1.17.20","scope":0,"advmss":1}]}}"#,
        );
        let d = delegate_config(&c, &parse_subnet_env(V4, "f").unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(go_marshal(&d)).unwrap(),
            concat!(
                r#"{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":true,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"#,
                r#""routes":[{"dst":"10.96.0.0/12"},{"dst":"192.168.244.0/24","gw":"10.1.17.20","advmss":1,"scope":0},{"dst":"10.1.0.0/16"}],"#,
                r#""type":"my-ipam","unknown-param":"unknown-value"},"mtu":1472,"name":"n","runtimeConfig":{"portMappings":[]},"#,
                r#""type":"ptp","x":1,"y":1e+21,"z":"\u003c\u0026\u003e"}"#
            )
        );
    }

    #[test]
    fn delegate_rejections() {
        let env = parse_subnet_env(V4, "f").unwrap();
        for (delegate, msg) in [
            (
                r#"{"name":"x"}"#,
                "'delegate' dictionary must not have 'name' field, it'll be set by flannel",
            ),
            (
                r#"{"ipam":{}}"#,
                "'delegate' dictionary must not have 'ipam' field, it'll be set by flannel",
            ),
            (
                r#"{"type":5}"#,
                "'delegate' dictionary, if present, must have (string) 'type' field",
            ),
        ] {
            let c = conf(&format!(r#"{{"name":"n","delegate":{delegate}}}"#));
            assert_eq!(delegate_config(&c, &env).unwrap_err().to_string(), msg);
        }
    }
}

#[cfg(test)]
mod go_keys_tests {
    use super::*;
    use crate::cni::gokeys::{check_keys, GoKeys};

    #[test]
    fn keys_in_any_case() {
        check_keys(FlannelConf::shape()).unwrap();
        let c = load_conf(
            br#"{"CNIVersion":"1.0.0","Name":"n","SubnetFile":"/tmp/s.env","DataDir":"/tmp/d",
                 "Delegate":{"HairpinMode":true,"isDefaultGateway":true}}"#,
        )
        .unwrap();
        assert_eq!((c.subnet_file(), c.data_dir()), ("/tmp/s.env", Path::new("/tmp/d")));
        // The delegate's keys are a map's (Go's map[string]interface{}): kept as written.
        assert!(c.delegate.unwrap().contains_key("HairpinMode"));
    }
}
