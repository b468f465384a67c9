//! Conformance runner: every scenario in `conformance/scenarios/*.json` is run through the
//! reference plugins (Debian's containernetworking-plugins in /usr/lib/cni) and through
//! cni-multi, each in fresh namespaces, and the two are compared step by step. See
//! `conformance/README.md` for the scenario format.
//!
//! `cargo test --test conformance -- --nocapture` prints one PASS / FAIL / SKIP line per
//! scenario; `CONFORMANCE_FILTER=substring` runs only the scenarios whose name contains it.
//! `CONFORMANCE_BINARY=path` tests another cni-multi build (e.g. the static release binary);
//! `CONFORMANCE_OURS_DIR=dir` takes "ours" from a directory of plugin binaries instead
//! (`CONFORMANCE_OURS_DIR=/usr/lib/cni` checks the runner itself: reference vs reference).

use crate::common::rig::{
    self, json_diff, json_subset_diff, Invocation, Outcome, Placeholders, PluginDir, TempDir, TestNs,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn scenario_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/scenarios")
}

// ---------------------------------------------------------------------------------------------
// The scenario format
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(default)]
    description: String,
    /// The plugin every step runs (a step may name another).
    plugin: String,
    /// Run the reference too and compare (default). `false`: ours only, against `expect`.
    #[serde(default = "yes")]
    reference: bool,
    // "matrix": {"VAR": ["a", "b"]}: one scenario per value, `${VAR}` replaced everywhere
    // (expanded by `load` before parsing).
    /// Commands run before the first step, inside the node / pod namespaces.
    #[serde(default)]
    setup: Setup,
    steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Setup {
    #[serde(default)]
    node: Vec<Vec<String>>,
    #[serde(default)]
    pod: Vec<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// `CNI_COMMAND`; absent or null: not set at all.
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    plugin: Option<String>,
    #[serde(default)]
    note: String,
    /// Extra variables, or overrides of the defaults; `null` unsets a variable.
    #[serde(default)]
    env: BTreeMap<String, Option<String>>,
    /// Config JSON sent on stdin.
    #[serde(default)]
    config: Option<Value>,
    /// Raw stdin text instead of `config`.
    #[serde(default)]
    stdin_raw: Option<String>,
    /// Insert the result of an earlier step (by index) as `prevResult` in the config.
    #[serde(default)]
    prev_result_from: Option<usize>,
    /// "pod" (default), "node", "none" (unset), "empty", "vanished", or a literal path.
    #[serde(default)]
    netns: Option<String>,
    /// What to compare between reference and ours: "exit", "code", "result", "raw",
    /// "kernel" (pod netns), "kernel_node". Default: exit, code, result, kernel; just
    /// "kernel" when `expect_ours` is given.
    #[serde(default)]
    compare: Option<Vec<String>>,
    /// Also compare error `msg` and `details`.
    #[serde(default)]
    compare_msg: bool,
    /// Golden expectation for both implementations.
    #[serde(default)]
    expect: Option<Expect>,
    /// Golden expectation for cni-multi where it must differ from the reference.
    #[serde(default)]
    expect_ours: Option<Expect>,
    /// What the reference (1.1.1) does, where that is worth pinning down.
    #[serde(default)]
    expect_reference: Option<Expect>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    exit: Option<i32>,
    code: Option<i64>,
    msg: Option<String>,
    msg_contains: Option<String>,
    /// The whole normalised result.
    result: Option<Value>,
    /// Only these keys of the normalised result.
    result_subset: Option<Value>,
    /// Exact stdout after placeholder substitution.
    stdout: Option<String>,
    stderr_contains: Option<String>,
    /// Only these keys of the normalised pod kernel state.
    kernel_subset: Option<Value>,
}

const DEFAULT_COMPARE: &[&str] = &["exit", "code", "result", "kernel"];
const COMPARE_KINDS: &[&str] = &["exit", "code", "result", "raw", "kernel", "kernel_node"];
const COMMANDS: &[&str] = &["ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC"];

/// Replace `${VAR}` in every string of a JSON value (keys too).
fn substitute(v: &Value, vars: &BTreeMap<String, String>) -> Value {
    let sub = |s: &str| {
        let mut s = s.to_string();
        for (k, val) in vars {
            s = s.replace(&format!("${{{k}}}"), val);
        }
        s
    };
    match v {
        Value::String(s) => Value::String(sub(s)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, x)| (sub(k), substitute(x, vars))).collect()),
        other => other.clone(),
    }
}

/// Load one file and expand its matrix into scenarios.
fn load(path: &Path) -> Result<Vec<Scenario>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw: Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let matrix: BTreeMap<String, Vec<String>> = match raw.get("matrix") {
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| format!("{}: bad matrix: {e}", path.display()))?,
        None => BTreeMap::new(),
    };
    let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    for (var, values) in &matrix {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.insert(var.clone(), v.clone());
                    c
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    for combo in combos {
        let mut v = substitute(&raw, &combo);
        if let Some(o) = v.as_object_mut() {
            o.remove("matrix");
        }
        let mut sc: Scenario =
            serde_json::from_value(v).map_err(|e| format!("{}: bad scenario: {e}", path.display()))?;
        if !combo.is_empty() {
            let tag: Vec<&str> = combo.values().map(String::as_str).collect();
            sc.name = format!("{}[{}]", sc.name, tag.join(","));
        }
        validate(&sc).map_err(|e| format!("{}: {}: {e}", path.display(), sc.name))?;
        out.push(sc);
    }
    Ok(out)
}

fn validate(sc: &Scenario) -> Result<(), String> {
    if sc.steps.is_empty() {
        return Err("no steps".into());
    }
    if sc.name.contains("${") {
        return Err("unexpanded ${...} in name".into());
    }
    for (i, st) in sc.steps.iter().enumerate() {
        if let Some(c) = &st.command {
            if !COMMANDS.contains(&c.as_str()) && !c.starts_with('X') {
                return Err(format!("step {i}: unknown command {c} (use X... for bogus ones)"));
            }
        }
        for c in st.compare.iter().flatten() {
            if !COMPARE_KINDS.contains(&c.as_str()) {
                return Err(format!("step {i}: unknown compare kind {c}"));
            }
        }
        if st.config.is_some() && st.stdin_raw.is_some() {
            return Err(format!("step {i}: both config and stdin_raw"));
        }
        if let Some(p) = st.prev_result_from {
            if p >= i {
                return Err(format!("step {i}: prev_result_from {p} is not an earlier step"));
            }
        }
        if !sc.reference && st.expect.is_none() && st.expect_ours.is_none() {
            return Err(format!("step {i}: reference=false needs an expectation"));
        }
    }
    Ok(())
}

fn load_all() -> (Vec<Scenario>, Vec<String>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenario_dir())
        .expect("conformance/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match load(&f) {
            Ok(s) => scenarios.extend(s),
            Err(e) => errors.push(e),
        }
    }
    (scenarios, errors)
}

// ---------------------------------------------------------------------------------------------
// Running one implementation through a scenario
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Impl {
    Reference,
    Ours,
}

impl Impl {
    fn label(self) -> &'static str {
        match self {
            Impl::Reference => "reference",
            Impl::Ours => "cni-multi",
        }
    }
}

struct StepRecord {
    outcome: Outcome,
    /// Normalised stdout JSON (or the trimmed stdout as a string).
    result: Value,
    raw: String,
    kernel: Value,
    kernel_node: Value,
}

struct Run {
    steps: Vec<StepRecord>,
}

fn run_impl(sc: &Scenario, which: Impl) -> Run {
    let tmp = TempDir::new("conf");
    let node = TestNs::new_node("cnode");
    let pod = TestNs::new("cpod");
    let vanished = rig::vanished_netns_path();
    let plugin_dir = match std::env::var_os("CONFORMANCE_BINARY") {
        Some(b) => PluginDir::with_binary(Path::new(&b)),
        None => PluginDir::new(),
    };
    let ours_dir = std::env::var("CONFORMANCE_OURS_DIR").ok();
    let cni_path = match (which, &ours_dir) {
        (Impl::Reference, _) => rig::REFERENCE_DIR.to_string(),
        (Impl::Ours, Some(d)) => d.clone(),
        (Impl::Ours, None) => plugin_dir.as_str().to_string(),
    };

    let mut ph = Placeholders::new();
    ph.add(pod.path_str(), "<pod-netns>")
        .add(node.path_str(), "<node-netns>")
        .add(&vanished, "<vanished-netns>")
        .add(tmp.as_str(), "<tmpdir>")
        .add(&cni_path, "<cni-path>");
    let vars: BTreeMap<String, String> = [
        ("POD_NETNS", pod.path_str()),
        ("NODE_NETNS", node.path_str()),
        ("VANISHED_NETNS", vanished.as_str()),
        ("TMPDIR", tmp.as_str()),
        ("CNI_PATH", cni_path.as_str()),
        ("POD_NS_NAME", pod.name()),
        ("NODE_NS_NAME", node.name()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let run_setup = |ns: &TestNs, cmds: &[Vec<String>]| {
        for c in cmds {
            let c: Vec<String> = c
                .iter()
                .map(|a| substitute(&json!(a), &vars).as_str().unwrap().to_string())
                .collect();
            let argv: Vec<&str> = c.iter().map(String::as_str).collect();
            ns.exec_ok(&argv);
        }
    };
    run_setup(&node, &sc.setup.node);
    run_setup(&pod, &sc.setup.pod);

    let mut steps: Vec<StepRecord> = Vec::new();
    for st in &sc.steps {
        let plugin = st.plugin.as_deref().unwrap_or(&sc.plugin);
        let mut inv = Invocation::new(plugin, st.command.as_deref().unwrap_or(""))
            .container_id("cm-conformance")
            .in_node(&node);
        match st.netns.as_deref().unwrap_or("pod") {
            "pod" => inv = inv.netns(pod.path()),
            "node" => inv = inv.netns(node.path()),
            "none" => inv = inv.unset("CNI_NETNS"),
            "empty" => inv = inv.netns(""),
            "vanished" => inv = inv.netns(&vanished),
            p if p.starts_with('/') => inv = inv.netns(p),
            other => panic!("{}: unknown netns {other:?}", sc.name),
        }
        for (k, v) in &st.env {
            inv = match v {
                Some(v) => inv.env(k, substitute(&json!(v), &vars).as_str().unwrap()),
                None => inv.unset(k),
            };
        }
        if let Some(raw) = &st.stdin_raw {
            inv = inv.stdin_raw(substitute(&json!(raw), &vars).as_str().unwrap());
        } else if let Some(cfg) = &st.config {
            let mut cfg = substitute(cfg, &vars);
            if let Some(i) = st.prev_result_from {
                let prev = steps[i].outcome.json.clone().unwrap_or(Value::Null);
                if let Some(o) = cfg.as_object_mut() {
                    o.insert("prevResult".into(), prev);
                }
            }
            inv = inv.config(&cfg);
        }
        let outcome = match which {
            Impl::Reference => inv.run_reference(),
            Impl::Ours => match &ours_dir {
                Some(d) => inv.run_binary(&Path::new(d).join(plugin), d),
                None => inv.run_ours_in(&plugin_dir),
            },
        };
        let result = match &outcome.json {
            Some(j) => ph.apply(j),
            None => Value::String(ph.apply_str(outcome.stdout.trim())),
        };
        let raw = ph.apply_str(&outcome.stdout);
        let kernel = pod.kernel_state(&ph);
        let kernel_node = node.kernel_state(&ph);
        steps.push(StepRecord {
            outcome,
            result,
            raw,
            kernel,
            kernel_node,
        });
    }
    Run { steps }
}

// ---------------------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------------------

/// The part of a result that is compared: for an error, its code (and text if asked).
fn comparable(rec: &StepRecord, with_msg: bool) -> Value {
    match &rec.result {
        Value::Object(o) if rec.outcome.status != 0 && o.contains_key("code") => {
            let mut m = serde_json::Map::new();
            m.insert("code".into(), o["code"].clone());
            if with_msg {
                for k in ["msg", "details"] {
                    if let Some(v) = o.get(k) {
                        m.insert(k.into(), v.clone());
                    }
                }
            }
            Value::Object(m)
        }
        other => other.clone(),
    }
}

fn check_expect(e: &Expect, rec: &StepRecord, who: &str, problems: &mut Vec<String>) {
    let o = &rec.outcome;
    let mut p = |s: String| problems.push(format!("{who}: {s}"));
    if o.timed_out {
        p("timed out".into());
    }
    if let Some(x) = e.exit {
        if o.status != x {
            p(format!("exit status: expected {x}, got {}", o.status));
        }
    }
    if let Some(c) = e.code {
        if o.code() != Some(c) {
            p(format!("error code: expected {c}, got {:?}", o.code()));
        }
    }
    if let Some(m) = &e.msg {
        if o.msg() != Some(m.as_str()) {
            p(format!("msg: expected {m:?}, got {:?}", o.msg()));
        }
    }
    if let Some(m) = &e.msg_contains {
        if !o.msg().unwrap_or("").contains(m.as_str()) {
            p(format!("msg: expected to contain {m:?}, got {:?}", o.msg()));
        }
    }
    if let Some(r) = &e.result {
        for d in json_diff(r, &rec.result) {
            p(format!("result {d}"));
        }
    }
    if let Some(r) = &e.result_subset {
        for d in json_subset_diff(r, &rec.result) {
            p(format!("result {d}"));
        }
    }
    if let Some(s) = &e.stdout {
        if &rec.raw != s {
            p(format!("stdout: expected {s:?}, got {:?}", rec.raw));
        }
    }
    if let Some(s) = &e.stderr_contains {
        if !o.stderr.contains(s.as_str()) {
            p(format!("stderr: expected to contain {s:?}, got {:?}", o.stderr));
        }
    }
    if let Some(k) = &e.kernel_subset {
        for d in json_subset_diff(k, &rec.kernel) {
            p(format!("kernel {d}"));
        }
    }
}

fn compare_step(st: &Step, r: &StepRecord, o: &StepRecord, problems: &mut Vec<String>) {
    let default: Vec<String> = if st.expect_ours.is_some() {
        vec!["kernel".into()]
    } else {
        DEFAULT_COMPARE.iter().map(|s| s.to_string()).collect()
    };
    let kinds = st.compare.clone().unwrap_or(default);
    for k in &kinds {
        match k.as_str() {
            "exit" if r.outcome.status != o.outcome.status => problems.push(format!(
                "exit status: reference {}, cni-multi {}",
                r.outcome.status, o.outcome.status
            )),
            "code" if r.outcome.code() != o.outcome.code() => problems.push(format!(
                "error code: reference {:?}, cni-multi {:?}",
                r.outcome.code(),
                o.outcome.code()
            )),
            "result" => {
                let (a, b) = (comparable(r, st.compare_msg), comparable(o, st.compare_msg));
                for d in json_diff(&a, &b) {
                    problems.push(format!("result (reference → cni-multi) {d}"));
                }
            }
            "raw" if r.raw != o.raw => problems.push(format!(
                "raw stdout differs:\n      reference: {:?}\n      cni-multi: {:?}",
                r.raw, o.raw
            )),
            "kernel" => {
                for d in json_diff(&r.kernel, &o.kernel) {
                    problems.push(format!("pod kernel state (reference → cni-multi) {d}"));
                }
            }
            "kernel_node" => {
                for d in json_diff(&r.kernel_node, &o.kernel_node) {
                    problems.push(format!("node kernel state (reference → cni-multi) {d}"));
                }
            }
            _ => {}
        }
    }
}

enum Verdict {
    Pass,
    Fail(String),
    Skip(String),
}

fn run_scenario(sc: &Scenario) -> Verdict {
    let plugins: Vec<&str> = std::iter::once(sc.plugin.as_str())
        .chain(sc.steps.iter().filter_map(|s| s.plugin.as_deref()))
        .collect();
    if sc.reference {
        if let Some(p) = plugins.iter().find(|p| !rig::reference_available(p)) {
            let why = format!("no reference binary {}", rig::reference_bin(p).display());
            if rig::in_ci() {
                return Verdict::Fail(why);
            }
            return Verdict::Skip(why);
        }
    }
    let reference = sc.reference.then(|| run_impl(sc, Impl::Reference));
    let ours = run_impl(sc, Impl::Ours);

    let mut report = String::new();
    for (i, st) in sc.steps.iter().enumerate() {
        let mut problems = Vec::new();
        let o = &ours.steps[i];
        if let Some(e) = st.expect_ours.as_ref().or(st.expect.as_ref()) {
            check_expect(e, o, Impl::Ours.label(), &mut problems);
        }
        if let Some(rr) = &reference {
            let r = &rr.steps[i];
            if let Some(e) = st.expect_reference.as_ref().or(st.expect.as_ref()) {
                check_expect(e, r, Impl::Reference.label(), &mut problems);
            }
            compare_step(st, r, o, &mut problems);
        }
        if !problems.is_empty() {
            let cmd = st.command.as_deref().unwrap_or("(no CNI_COMMAND)");
            report.push_str(&format!("  step {i} {cmd} {}\n", st.note));
            for p in problems {
                report.push_str(&format!("    - {p}\n"));
            }
            if let Some(rr) = &reference {
                report.push_str(&format!("    reference:\n{}\n", indent(&rr.steps[i].outcome)));
            }
            report.push_str(&format!("    cni-multi:\n{}\n", indent(&o.outcome)));
        }
    }
    if report.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(report)
    }
}

fn indent(o: &Outcome) -> String {
    o.to_string()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Every scenario file parses and is well-formed (no root needed).
#[test]
fn scenarios_are_well_formed() {
    let (scenarios, errors) = load_all();
    assert!(errors.is_empty(), "bad scenario files:\n{}", errors.join("\n"));
    assert!(!scenarios.is_empty(), "no scenarios found");
    let mut names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate scenario names");
    for s in &scenarios {
        assert!(!s.description.is_empty(), "{}: no description", s.name);
    }
}

/// Runs every scenario, reference vs cni-multi, and reports them all.
#[test]
fn conformance() {
    if !rig::require_root("conformance") {
        return;
    }
    let (scenarios, errors) = load_all();
    assert!(errors.is_empty(), "bad scenario files:\n{}", errors.join("\n"));
    let filter = std::env::var("CONFORMANCE_FILTER").unwrap_or_default();
    let (mut pass, mut fail, mut skip) = (Vec::new(), Vec::new(), Vec::new());
    for sc in scenarios.iter().filter(|s| s.name.contains(&filter)) {
        // A panic inside one scenario (rig failure) must not hide the others.
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_scenario(sc))).unwrap_or_else(|e| {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Verdict::Fail(format!("  panicked: {msg}\n"))
        });
        match verdict {
            Verdict::Pass => {
                println!("PASS {}", sc.name);
                pass.push(sc.name.clone());
            }
            Verdict::Skip(why) => {
                println!("SKIP {} ({why})", sc.name);
                skip.push(sc.name.clone());
            }
            Verdict::Fail(report) => {
                println!("FAIL {}\n{report}", sc.name);
                fail.push(sc.name.clone());
            }
        }
    }
    println!(
        "conformance: {} passed, {} failed, {} skipped",
        pass.len(),
        fail.len(),
        skip.len()
    );
    assert!(fail.is_empty(), "failed scenarios:\n  {}", fail.join("\n  "));
}

// ---------------------------------------------------------------------------------------------
// Self-tests of the rig (they live here so that they run once, not in every test binary)
// ---------------------------------------------------------------------------------------------

mod rig_selftest {
    use crate::common::rig::*;
    use serde_json::json;

    #[test]
    fn tokens_are_normalised() {
        assert_eq!(
            normalize_tokens("a 0a:58:0A:f4:00:02 b 00:00:00:00:00:00 veth1a2b3c4d vethx"),
            "a <mac> b 00:00:00:00:00:00 <veth> vethx"
        );
        assert_eq!(normalize_tokens("fe80::1:2:3:4:5:6"), "fe80::1:2:3:4:5:6");
        assert_eq!(normalize_tokens("veth1234567890"), "veth1234567890");
        assert_eq!(normalize_tokens("ünï veth0000000a"), "ünï <veth>");
    }

    #[test]
    fn placeholders_replace_longest_first() {
        let mut p = Placeholders::new();
        p.add("/run/netns/a", "<a>").add("/run/netns/ab", "<ab>");
        assert_eq!(p.apply_str("/run/netns/ab /run/netns/a"), "<ab> <a>");
    }

    #[test]
    fn diffs() {
        let d = json_diff(&json!({"a":1,"b":[1,2]}), &json!({"a":2,"b":[1],"c":0}));
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(json_subset_diff(&json!({"a":1}), &json!({"a":1,"b":2})).is_empty());
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("a b/c").starts_with("cm-a-b-c-"));
    }

    #[test]
    fn temp_dir_is_removed() {
        let p = {
            let t = TempDir::new("selftest");
            std::fs::write(t.join("f"), "x").unwrap();
            t.path().to_path_buf()
        };
        assert!(!p.exists());
    }

    #[test]
    fn plugin_dir_links_every_plugin() {
        let d = PluginDir::new();
        for name in PLUGINS {
            assert_eq!(std::fs::read_link(d.plugin(name)).unwrap(), ours_bin());
        }
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn netns_guard_cleans_up() {
        if !require_root("netns_guard_cleans_up") {
            return;
        }
        let path = {
            let ns = TestNs::new("selftest");
            ns.lo_up();
            let st = ns.kernel_state(&Placeholders::new());
            assert_eq!(st["links"][0]["ifname"], "lo", "{st}");
            assert!(ns.exec_ok(&["ip", "-j", "link"]).contains("\"lo\""));
            assert!(ns.link("lo").is_some() && ns.link("nope0").is_none());
            // A process left running inside is killed, so the netns really goes away.
            let mut child = std::process::Command::new(tool("nsenter"))
                .arg(format!("--net={}", ns.path_str()))
                .args([tool("sleep").to_str().unwrap(), "600"])
                .spawn()
                .unwrap();
            wait_until(
                || !ns.pids().is_empty(),
                std::time::Duration::from_secs(10),
                "sleep to run in the netns",
            );
            let p = ns.path().to_path_buf();
            drop(ns);
            let _ = child.wait();
            p
        };
        assert!(!path.exists());
    }

    #[test]
    fn netns_guard_survives_panic() {
        if !require_root("netns_guard_survives_panic") {
            return;
        }
        let path = std::sync::Mutex::new(None);
        let r = std::panic::catch_unwind(|| {
            let ns = TestNs::new("panic");
            *path.lock().unwrap() = Some(ns.path().to_path_buf());
            panic!("boom");
        });
        assert!(r.is_err());
        assert!(!path.lock().unwrap().clone().unwrap().exists());
    }

    #[test]
    fn invocation_env_is_clean_and_runs_in_node() {
        if !require_root("invocation_env_is_clean_and_runs_in_node") {
            return;
        }
        let node = TestNs::new_node("selfnode");
        // `env` stands in for a plugin: it prints exactly the environment it was given.
        let out = Invocation::new("loopback", "ADD")
            .unset("CNI_IFNAME")
            .env("X_EXTRA", "1")
            .in_node(&node)
            .run_binary(&tool("env"), "/cni/path");
        out.expect_ok();
        let mut lines: Vec<&str> = out.stdout.lines().collect();
        lines.sort();
        let path_line = format!("PATH={PLUGIN_PATH}");
        // Ours: where the plugins keep their nft records (a temp dir), and a system bus that
        // is not there (no test reaches the machine's bus).
        let state_line = format!("CNI_MULTI_STATE_DIR={}", state_dir());
        let bus_line = format!("DBUS_SYSTEM_BUS_ADDRESS={}", crate::common::rig::NO_SYSTEM_BUS);
        assert_eq!(
            lines,
            [
                "CNI_COMMAND=ADD",
                "CNI_CONTAINERID=cm-test-container",
                state_line.as_str(),
                "CNI_PATH=/cni/path",
                bus_line.as_str(),
                path_line.as_str(),
                "X_EXTRA=1"
            ]
        );
        // And it really ran in the node netns.
        let dir = TempDir::new("selfscript");
        let script = script(&dir, "netns", "readlink /proc/self/ns/net");
        let out = Invocation::new("x", "ADD").in_node(&node).run_binary(&script, "");
        let want = format!(
            "net:[{}]",
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(node.path()).unwrap())
        );
        assert_eq!(out.expect_ok().stdout.trim(), want);
    }

    #[test]
    fn invocation_feeds_stdin_and_times_out() {
        if !require_root("invocation_feeds_stdin_and_times_out") {
            return;
        }
        let out = Invocation::new("x", "ADD")
            .config(&json!({"a": 1}))
            .run_binary(&tool("cat"), "");
        out.expect_ok();
        assert_eq!(out.json, Some(json!({"a": 1})));
        let dir = TempDir::new("selfscript");
        let slow = script(&dir, "slow", "exec sleep 30");
        let out = Invocation::new("x", "ADD")
            .timeout(std::time::Duration::from_millis(300))
            .run_binary(&slow, "");
        assert!(out.timed_out && out.elapsed < std::time::Duration::from_secs(10));
    }
}
