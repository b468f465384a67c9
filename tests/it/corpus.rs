//! The bad-input corpus (tests/corpus/cases.json, made by tests/corpus/gen.py): hundreds of
//! broken invocations across every plugin. Each must answer a CNI error JSON with exactly its
//! code (exit status 1), naming what the case's `msg` names if it has one, and leave nothing
//! behind: no link in the node or pod netns, no
//! nftables object in the node, no file in the state dir. Every plugin runs in a throw-away
//! node netns against a throw-away pod netns.
//!
//! Where /usr/lib/cni has the plugin, the reference gets the same case (in its own node and
//! pod) and must answer the same code, or the `reference` recorded in the case: a documented
//! difference, mostly where cni-multi is deliberately stricter ("ok": it accepted the input).
//! A case marked `known` records a defect not fixed yet: its current answer is asserted, and
//! it is listed in the output.

use crate::common::rig::{require_reference, require_root, Invocation, Outcome, PluginDir, TempDir, TestNs};
use serde_json::Value;
use std::collections::BTreeMap;

struct Env {
    node: TestNs,
    pod: TestNs,
    data: TempDir,
    scratch: TempDir,
}

impl Env {
    fn new(tag: &str) -> Env {
        let scratch = TempDir::new("corpus-scratch");
        std::fs::write(scratch.join("file"), b"not a netns").unwrap();
        std::fs::create_dir_all(scratch.join("dir")).unwrap();
        nix::unistd::mkfifo(&scratch.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let data = TempDir::new("corpus-data");
        // flannel's cases are about its config, so flanneld's file is there and valid.
        std::fs::write(
            data.join("subnet.env"),
            "FLANNEL_NETWORK=10.77.0.0/16\nFLANNEL_SUBNET=10.77.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        Env {
            node: TestNs::new_node(&format!("{tag}n")),
            pod: TestNs::new_node(&format!("{tag}p")),
            data,
            scratch,
        }
    }

    fn fill(&self, s: &str) -> String {
        s.replace("@DATA@", self.data.as_str())
            .replace("@FILE@", self.scratch.join("file").to_str().unwrap())
            .replace("@DIR@", self.scratch.join("dir").to_str().unwrap())
            .replace("@FIFO@", self.scratch.join("fifo").to_str().unwrap())
            .replace("@POD@", self.pod.path_str())
    }

    /// Links of both namespaces, the node's nftables ruleset and the state dir's files.
    fn residue(&self) -> String {
        let links = |ns: &TestNs| {
            ns.ip(&["-o", "link", "show"])
                .lines()
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let nft = self.node.exec_ok(&["nft", "list", "ruleset"]);
        let mut files = Vec::new();
        walk(self.data.path(), &mut files);
        format!(
            "node links [{}] pod links [{}] nft [{}] files {files:?}",
            links(&self.node),
            links(&self.pod),
            nft.trim()
        )
    }
}

fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p.display().to_string());
        }
    }
}

fn invocation(case: &Value, env: &Env) -> Invocation {
    let plugin = case["plugin"].as_str().unwrap();
    let mut inv = Invocation::new(plugin, case["command"].as_str().unwrap())
        .container_id("corpus-c")
        .pod(&env.pod)
        .in_node(&env.node);
    if let Some(vars) = case.get("env").and_then(Value::as_object) {
        for (k, v) in vars {
            inv = match v.as_str() {
                Some(v) => inv.env(k, &env.fill(v)),
                None => inv.unset(k),
            };
        }
    }
    let stdin: Vec<u8> = if let Some(hex) = case.get("stdin_hex").and_then(Value::as_str) {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    } else if let Some(s) = case.get("stdin").and_then(Value::as_str) {
        s.as_bytes().to_vec()
    } else {
        let mut conf = case["config"].clone();
        if let Some(n) = case.get("pad").and_then(Value::as_u64) {
            conf["padding"] = Value::String("x".repeat(n as usize));
        }
        env.fill(&conf.to_string()).into_bytes()
    };
    inv.stdin_raw(stdin)
}

/// The code of an error answer, or "ok"/a description of what else came back.
fn answer(o: &Outcome) -> String {
    if o.timed_out {
        return "timed out".into();
    }
    match (&o.json, o.status) {
        (_, 0) => "ok".into(),
        (Some(j), 1) if j["code"].is_u64() && j["msg"].is_string() => j["code"].to_string(),
        _ => format!(
            "no CNI error (status {}, stdout {:?}, stderr {:?})",
            o.status, o.stdout, o.stderr
        ),
    }
}

#[test]
fn bad_input_corpus() {
    if !require_root("bad_input_corpus") {
        return;
    }
    let cases: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus/cases.json")).unwrap(),
    )
    .unwrap();
    assert!(cases.len() >= 300, "{} cases", cases.len());
    let mut by_plugin: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for c in &cases {
        by_plugin.entry(c["plugin"].as_str().unwrap()).or_default().push(c);
    }
    let dir = PluginDir::new();
    let mut failures = Vec::new();
    let mut ref_diffs = Vec::new();
    let mut known = Vec::new();
    let (mut ours_n, mut ref_n) = (0, 0);
    for (plugin, cases) in &by_plugin {
        let ours = Env::new("co");
        let clean = ours.residue();
        // Debian's package (1.1.1) has every plugin but these; CI must have the others.
        let compared = !["dummy", "tap", "flannel"].contains(plugin);
        let reference = (compared && require_reference("bad_input_corpus", plugin)).then(|| Env::new("cr"));
        for case in cases {
            let id = case["id"].as_str().unwrap();
            // A number, or "ok" for a known defect that is still accepted (listed at the end).
            let want = case["code"]
                .as_str()
                .map(String::from)
                .unwrap_or(case["code"].to_string());
            if let Some(k) = case.get("known").and_then(Value::as_str) {
                known.push(format!("{id} ({}): {k}", case["note"]));
            }
            let out = invocation(case, &ours).run_ours_in(&dir);
            let got = answer(&out);
            ours_n += 1;
            if got != want {
                failures.push(format!("{id} ({}): want code {want}, got {got}", case["note"]));
            }
            // A case may name what the message must name (the key at fault).
            if let Some(m) = case.get("msg").and_then(Value::as_str) {
                if !out.msg().is_some_and(|x| x.contains(m)) {
                    failures.push(format!(
                        "{id} ({}): the message does not name {m:?}: {out}",
                        case["note"]
                    ));
                }
            }
            let now = ours.residue();
            if now != clean {
                failures.push(format!("{id} ({}): left {now}\n   was {clean}", case["note"]));
                // Start the next case from a clean slate.
                break;
            }
            if let Some(r) = reference.as_ref().filter(|_| case.get("no_reference").is_none()) {
                let got = answer(&invocation(case, r).run_reference());
                ref_n += 1;
                let allowed = case
                    .get("reference")
                    .map(|v| v.as_str().map(String::from).unwrap_or(v.to_string()));
                if got != want && Some(&got) != allowed.as_ref() {
                    ref_diffs.push(format!("{id} ({}): ours {want}, reference {got}", case["note"]));
                }
            }
        }
    }
    eprintln!("corpus: {ours_n} cases run through cni-multi, {ref_n} through the reference");
    eprintln!("known defects, still answered as recorded:\n{}", known.join("\n"));
    assert!(
        failures.is_empty() && ref_diffs.is_empty(),
        "{} failures:\n{}\n{} unrecorded differences from the reference:\n{}",
        failures.len(),
        failures.join("\n"),
        ref_diffs.len(),
        ref_diffs.join("\n")
    );
}
