#!/usr/bin/env python3
"""A CycloneDX 1.5 SBOM of the crates in one target's build of cni-multi (make release).

    scripts/sbom.py --target TRIPLE --version X.Y.Z [--arch amd64] > cni-multi-linux-amd64-X.Y.Z.cdx.json

From `cargo metadata --locked --filter-platform TRIPLE` (the dependency graph cargo resolved
for that target) and Cargo.lock (each crate's SHA-256): every crate reachable from cni-multi
through normal and build dependencies, as cargo-auditable embeds them in the binary
(`.dep-v0`): a crate reached only through a build script or a proc-macro is built but not
linked in, so it gets scope "excluded" (cargo-auditable's kind "build"); the others
"required" (its "runtime"). Dev-dependencies are not in the build, so not here.

Reproducible: no random serial number (a UUID derived from name, version and target) and the
timestamp from SOURCE_DATE_EPOCH; lists sorted.
"""
import argparse, datetime, json, os, subprocess, sys, uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lock_checksums():
    sums, name, version = {}, None, None
    with open(os.path.join(ROOT, "Cargo.lock")) as f:
        for line in f:
            line = line.strip()
            if line == "[[package]]":
                name = version = None
            elif line.startswith("name = "):
                name = line.split('"')[1]
            elif line.startswith("version = ") and name is not None:
                version = line.split('"')[1]
            elif line.startswith("checksum = "):
                sums[(name, version)] = line.split('"')[1]
    return sums


def crates(meta):
    """{pkg id: (package, kind)} reachable from the root; kind "runtime" wins over "build"."""
    pkgs = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    root = meta["resolve"]["root"]
    kinds, edges = {}, {}
    # Runtime first: the normal edges between crates that are linked in; then everything
    # else reachable (build scripts' dependencies, proc-macros and theirs) is "build".
    for want in ("runtime", "build"):
        stack, seen = [root], {root}
        while stack:
            pid = stack.pop()
            for d in nodes[pid]["deps"]:
                dep_kinds = {k["kind"] for k in d["dep_kinds"]}
                if dep_kinds == {"dev"}:
                    continue
                edges.setdefault(pid, set()).add(d["pkg"])
                linked = None in dep_kinds and not is_proc_macro(pkgs[d["pkg"]])
                if want == "runtime" and not linked:
                    continue
                kinds.setdefault(d["pkg"], want)
                if d["pkg"] not in seen:
                    seen.add(d["pkg"])
                    stack.append(d["pkg"])
    return root, pkgs, kinds, edges


def is_proc_macro(p):
    return any("proc-macro" in t["kind"] for t in p["targets"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--arch", default="")
    a = ap.parse_args()
    meta = json.loads(subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", a.target],
        cwd=ROOT, check=True, capture_output=True).stdout)
    root, pkgs, kinds, edges = crates(meta)
    sums = lock_checksums()
    main_name = pkgs[root]["name"]
    ref = lambda pid: f"pkg:cargo/{pkgs[pid]['name']}@{pkgs[pid]['version']}"
    root_ref = f"{main_name}@{a.version}"
    components = []
    for pid in sorted(kinds, key=lambda p: (pkgs[p]["name"], pkgs[p]["version"])):
        p = pkgs[pid]
        c = {"type": "library", "bom-ref": ref(pid), "name": p["name"], "version": p["version"],
             "scope": "required" if kinds[pid] == "runtime" else "excluded", "purl": ref(pid)}
        if p.get("license"):
            c["licenses"] = [{"expression": p["license"]}]
        if (p["name"], p["version"]) in sums:
            c["hashes"] = [{"alg": "SHA-256", "content": sums[(p["name"], p["version"])]}]
        components.append(c)
    deps = []
    for pid in [root] + sorted(kinds, key=ref):
        on = sorted(ref(d) for d in edges.get(pid, ()) if d in kinds)
        deps.append({"ref": root_ref if pid == root else ref(pid), "dependsOn": on})
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"cni-multi/{a.version}/{a.target}")),
        "version": 1,
        "metadata": {
            "timestamp": stamp,
            "tools": {"components": [{"type": "application", "name": "cni-multi scripts/sbom.py"}]},
            "component": {
                "type": "application", "bom-ref": root_ref, "name": main_name, "version": a.version,
                "licenses": [{"expression": pkgs[root]["license"]}],
                "properties": [{"name": "cargo:target", "value": a.target}]
                + ([{"name": "arch", "value": a.arch}] if a.arch else []),
            },
        },
        "components": components,
        "dependencies": deps,
    }
    json.dump(bom, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
