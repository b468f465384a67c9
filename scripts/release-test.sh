#!/usr/bin/env bash
# scripts/release-test.sh (make release-test, part of make test): the release archives are
# reproducible and are an install.
#
#   1. make release here, and again from a copy of the tree (the files git tracks or would
#      add, as they are in the work tree) at a deep path under /tmp holding spaces, with its own empty target dir:
#      every .tgz, .sha256, .sha512 and SBOM must be byte-identical (else the differing members
#      are shown). The copy is also the check that the build does not depend on where the
#      checkout is.
#   2. sha256sum -c / sha512sum -c pass; each archive holds cni-multi and only relative links
#      to it, every member owned by 0:0 with the same mtime.
#   3. The amd64 archive unpacked with `tar -C DIR -xzf` (as into /opt/cni/bin) runs plugins
#      through their links: VERSION, and host-local ADD/DEL with its state in a temp dir (no
#      network namespace needed, nothing outside the temp dir touched); `cni-multi version`
#      names the version, commit, target and libc. The arm64 binary: an aarch64 static ELF,
#      run under qemu-user (qemu-aarch64-static) when present, else checked by its header.
#   4. The dependency list cargo-auditable embedded (read with rust-audit-info) names the same
#      crates and versions as the SBOM beside the archive.
#
# Env: VERSION (default: Cargo.toml's), RELEASE_ARCHES (default "amd64 arm64"),
#      RELEASE_TEST_KEEP=1 keeps the temp dir.
set -euo pipefail

cd "$(dirname "$0")/.."
src=$(pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR="$src/$CARGO_TARGET_DIR" ;; esac
VERSION="${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)}"
ARCHES="${RELEASE_ARCHES:-amd64 arm64}"
# Both builds get the same commit string and time, as two builds of one commit would.
commit="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit="$commit-dirty"
sde="$(git log -1 --format=%ct 2>/dev/null || echo 0)"

tmp=$(mktemp -d /tmp/cm-release-test.XXXXXX)
[ "${RELEASE_TEST_KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "release-test: ok   $*"; }
bad() { echo "release-test: FAIL $*" >&2; fails=$((fails + 1)); }
mk() { # DIR TREE [make args]: make release from TREE into DIR
    local out=$1 tree=$2; shift 2
    make --no-print-directory -C "$tree" release VERSION="$VERSION" RELEASE_ARCHES="$ARCHES" \
        RELEASE_DIR="$out" GIT_COMMIT="$commit" SOURCE_DATE_EPOCH="$sde" "$@"
}

# --- 1. two builds --------------------------------------------------------------------------
start=$(date +%s)
copy="$tmp/a deep/path with spaces/to the/cni-multi checkout"
mkdir -p "$copy"
# The work tree's files as git sees them (tracked and new, not ignored; not target/).
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
done | xargs -0 cp -P --parents -t "$copy"
mk "$tmp/b" "$copy" CARGO_TARGET_DIR="$copy/target"
mk "$tmp/a" "$src"
echo "release-test: two release builds in $(( $(date +%s) - start )) s"
for f in "$tmp"/a/*; do
    n=$(basename "$f")
    if cmp -s "$f" "$tmp/b/$n"; then ok "identical: $n"; continue; fi
    bad "differs between the two builds: $n"
    case "$n" in
        *.tgz)
            mkdir -p "$tmp/x/a" "$tmp/x/b"
            tar -C "$tmp/x/a" -xzf "$f"; tar -C "$tmp/x/b" -xzf "$tmp/b/$n"
            diff <(tar -tvzf "$f") <(tar -tvzf "$tmp/b/$n") || true
            cmp -l "$tmp/x/a/cni-multi" "$tmp/x/b/cni-multi" | head -n 5 || true
            rm -rf "$tmp/x" ;;
        *.json) diff "$f" "$tmp/b/$n" | head -n 20 || true ;;
    esac
done
[ "$(ls "$tmp/a" | wc -l)" = "$(ls "$tmp/b" | wc -l)" ] || bad "the two builds wrote different file sets"
rm -rf "$copy/target"

# --- 2. checksums and archive layout -------------------------------------------------------
cd "$tmp/a"
for a in $ARCHES; do
    base=cni-multi-linux-$a-$VERSION
    for f in "$base.tgz" "$base.tgz.sha256" "$base.tgz.sha512" "$base.cdx.json"; do
        [ -s "$f" ] || bad "$f missing"
    done
    sha256sum --quiet -c "$base.tgz.sha256" && sha512sum --quiet -c "$base.tgz.sha512" \
        && ok "$base.tgz: sha256sum -c and sha512sum -c" || bad "$base.tgz: checksum files do not match"
    listing=$(tar -tvzf "$base.tgz")
    if echo "$listing" | awk -v sde="$(date -u -d "@$sde" '+%Y-%m-%d %H:%M')" '
        { if ($2 != "0/0" || $4 " " $5 != sde) bad = 1 }
        $1 ~ /^l/ { if ($7 != "->" || $8 != "cni-multi" || $6 ~ /\//) bad = 1; links++ }
        $1 ~ /^-/ { if ($6 != "cni-multi" || $1 != "-rwxr-xr-x") bad = 1; files++ }
        END { exit !(bad == 0 && files == 1 && links >= 19) }'; then
        ok "$base.tgz: cni-multi + $(echo "$listing" | grep -c '^l') relative links, 0/0, mtime = SOURCE_DATE_EPOCH"
    else
        bad "$base.tgz layout:"; echo "$listing" >&2
    fi
done
cd "$src"

# --- 3. unpacked, it is a plugin directory -------------------------------------------------
dir="$tmp/root/opt/cni/bin"; mkdir -p "$dir"
tar -C "$dir" -xzf "$tmp/a/cni-multi-linux-amd64-$VERSION.tgz"
if CNI_COMMAND=VERSION "$dir/bridge" < /dev/null | grep -q '"supportedVersions"'; then
    ok "unpacked: bridge VERSION through its link"
else
    bad "unpacked: bridge VERSION"
fi
conf='{"cniVersion":"1.0.0","name":"rel","type":"host-local","ipam":{"type":"host-local","subnet":"10.250.77.0/24","dataDir":"'"$tmp"'/ipam"}}'
# A throw-away netns as the container's (a plugin refuses its own as CNI_NETNS); host-local
# only reserves an address in the temp dataDir, nothing is made in it.
ns=cm-release-test-$$
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null; [ "${RELEASE_TEST_KEEP:-0}" = 1 ] || rm -rf "$tmp"' EXIT
run_hl() { # VERB
    env -i CNI_COMMAND="$1" CNI_CONTAINERID=release-test CNI_NETNS="/run/netns/$ns" CNI_IFNAME=eth0 \
        CNI_PATH="$dir" "$dir/host-local" <<< "$conf"
}
if out=$(run_hl ADD) && echo "$out" | grep -q '"10.250.77.2/24"' && [ -f "$tmp/ipam/rel/10.250.77.2" ] \
    && run_hl DEL && [ ! -e "$tmp/ipam/rel/10.250.77.2" ]; then
    ok "unpacked: host-local ADD gave 10.250.77.2/24, DEL released it (through the host-local link)"
else
    bad "unpacked: host-local ADD/DEL: $out"
fi
v=$("$dir/cni-multi" version)
if echo "$v" | grep -qx "cni-multi $VERSION (CNI spec .*)" && echo "$v" | grep -qx "commit: $commit" \
    && echo "$v" | grep -qx 'target: x86_64-unknown-linux-musl (libc: musl)'; then
    ok "cni-multi version: $(echo "$v" | tr '\n' ';')"
else
    bad "cni-multi version printed: $v"
fi

if echo " $ARCHES " | grep -q ' arm64 '; then
    mkdir -p "$tmp/arm64"
    tar -C "$tmp/arm64" -xzf "$tmp/a/cni-multi-linux-arm64-$VERSION.tgz"
    info=$(file -L "$tmp/arm64/bridge")
    case "$info" in
        *"ARM aarch64"*"statically linked"*) ok "arm64: $info" ;;
        *) bad "arm64 binary: $info" ;;
    esac
    if command -v qemu-aarch64-static > /dev/null; then
        v=$(qemu-aarch64-static "$tmp/arm64/cni-multi" version || true)
        echo "$v" | grep -qx 'target: aarch64-unknown-linux-musl (libc: musl)' \
            && ok "arm64 under qemu-aarch64-static: $(echo "$v" | tr '\n' ';')" || bad "arm64 under qemu-user: $v"
    elif [ "${CI:-}" = true ]; then
        bad "qemu-aarch64-static missing (make deps installs qemu-user-static)"
    fi
fi

# --- 4. embedded dependency list = SBOM ------------------------------------------------------
command -v rust-audit-info > /dev/null || { bad "rust-audit-info missing (make deps installs it)"; }
for a in $ARCHES; do
    base=cni-multi-linux-$a-$VERSION
    mkdir -p "$tmp/audit-$a"; tar -C "$tmp/audit-$a" -xzf "$tmp/a/$base.tgz" cni-multi
    command -v rust-audit-info > /dev/null || continue
    if ! rust-audit-info "$tmp/audit-$a/cni-multi" > "$tmp/audit-$a.json"; then
        bad "$a: no dependency list embedded (cargo auditable)"; continue
    fi
    if python3 - "$tmp/audit-$a.json" "$tmp/a/$base.cdx.json" <<'PY'
import json, sys
audit = json.load(open(sys.argv[1]))["packages"]
bom = json.load(open(sys.argv[2]))
# The root is the SBOM's component; the workspace's other local crates (the GoKeys derive
# macro) are components of both lists like any dependency.
main = bom["metadata"]["component"]["name"]
emb = {(p["name"], p["version"]) for p in audit if p["name"] != main}
sb = {(c["name"], c["version"]) for c in bom["components"]}
root = [p["name"] for p in audit if p["name"] == main and p.get("source") == "local"]
ok = emb == sb and root == [main]
if not ok:
    print("embedded only:", sorted(emb - sb), "\nSBOM only:", sorted(sb - emb), "\nroot:", root, file=sys.stderr)
# Kinds: cargo-auditable takes a proc-macro crate with test targets (getset) and what it
# pulls in for runtime; the SBOM marks every crate that is not linked in "excluded". Shown only.
kind = {"required": "runtime", "excluded": "build"}
sk = {(c["name"], c["version"]): kind[c["scope"]] for c in bom["components"]}
ek = {(p["name"], p["version"]): p.get("kind", "runtime") for p in audit if p["name"] != main}
diff = sorted(f"{n} {v}" for (n, v) in emb & sb if sk[(n, v)] != ek[(n, v)])
print(f"{len(emb)} crates" + (f"; runtime in the binary's list, build-only in the SBOM: {', '.join(diff)}" if diff else ""))
sys.exit(0 if ok else 1)
PY
    then
        ok "$a: the embedded list and $base.cdx.json name the same crates and versions"
    else
        bad "$a: embedded dependency list and SBOM differ"
    fi
done

if [ "$fails" -gt 0 ]; then echo "release-test: $fails failed"; exit 1; fi
echo "release-test: all passed ($ARCHES, version $VERSION, commit $commit)"
