#!/usr/bin/env bash
# scripts/tests-into-one-crate.sh: move integration-test files into the one test crate (#27).
#
# Every tests/<name>.rs (each of which used to be its own crate, compiling the harness and the
# rig again) becomes the module tests/it/<name>.rs of the crate `it` (tests/it/main.rs), and
# tests/common/ becomes tests/it/common/, the one shared rig. In a moved file:
#   - the line `mod common;` goes (main.rs declares it once);
#   - `common::…` (and `super::common::…`) paths become `crate::common::…`.
# Its tests keep their names, prefixed by the module: `cargo test --test it -- bridge::`.
#
# Re-runnable: run it again after a branch that still adds tests/<name>.rs has been merged; it
# moves only what is still at the top of tests/ and adds the missing `mod` lines. It prints
# the places outside tests/ that still name a moved file as its own test target (`--test
# <name>`, `tests/<name>.rs`): fix those by hand (`--test it -- <name>::`,
# `tests/it/<name>.rs`).
#
# Usage: scripts/tests-into-one-crate.sh [--no-git]   (from anywhere in the checkout; --no-git
# moves with mv instead of git mv)
set -euo pipefail

cd "$(dirname "$0")/.."
mv_() { if [ "${1:-}" = --no-git ]; then shift; mv "$@"; else git mv "$@"; fi; }
mode=${1:-}

mkdir -p tests/it
if [ -d tests/common ]; then
    if [ -d tests/it/common ]; then
        echo "tests/common and tests/it/common both exist: merge them by hand" >&2
        exit 1
    fi
    mv_ $mode tests/common tests/it/common
fi

main=tests/it/main.rs
if [ ! -f "$main" ]; then
    cat > "$main" <<'EOF'
//! The integration tests: one crate, one module per area (each was its own crate,
//! tests/<name>.rs, until #27), and one shared rig, `common` (namespaces, plugin runs, the
//! reference plugins, what a test needs and whether it ran: `common::rig`).
//!
//! `cargo test --test it -- bridge::` runs one module; doc/testing.md has the rest.
//! scripts/tests-into-one-crate.sh moves a new tests/<name>.rs in here.

mod common;

// One line per module, sorted (the script adds them).
EOF
fi

moved=()
for f in tests/*.rs; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .rs)
    case "$name" in
        it | main | common)
            echo "tests/$name.rs: a module cannot be called $name here; rename it first" >&2
            exit 1 ;;
    esac
    [ ! -e "tests/it/$name.rs" ] || { echo "tests/it/$name.rs exists already" >&2; exit 1; }
    mv_ $mode "$f" "tests/it/$name.rs"
    moved+=("$name")
done

# Rewrite the moved files and add their `mod` lines (kept sorted, after the header).
python3 - "$main" "${moved[@]}" <<'EOF'
import re, sys
main, names = sys.argv[1], sys.argv[2:]
# Every module, not only the ones moved now: a merge may bring old-style `common::` paths
# into a file that was moved before. The rewrite is idempotent.
import glob
for p in sorted(glob.glob("tests/it/*.rs")):
    if p.endswith("/main.rs"):
        continue
    s = open(p).read()
    s = re.sub(r"^mod common;[ \t]*\n", "", s, flags=re.M)
    # `super::common::` in a nested module meant the old crate root's.
    s = re.sub(r"(?<![\w:])(?:super::)+common::", "crate::common::", s)
    s = re.sub(r"(?<![\w:])common::", "crate::common::", s)
    open(p, "w").write(s)
s = open(main).read()
head, sep, tail = s.partition("// One line per module, sorted (the script adds them).\n")
if not sep:
    sys.exit(f"{main}: the line '// One line per module, sorted (the script adds them).' is missing")
mods = {l for l in tail.splitlines() if l.startswith("mod ")}
mods |= {f"mod {n};" for n in names}
open(main, "w").write(head + sep + "".join(m + "\n" for m in sorted(mods)))
EOF

# rustfmt folds the blank lines a removed `mod common;` leaves.
cargo fmt --all
echo "moved ${#moved[@]} file(s) into tests/it/: ${moved[*]:-none}"
# What still names a moved file as its own target (fix by hand; see the header).
for n in "${moved[@]}"; do
    git grep -nE -e "--test[ =]$n\b" -e "tests/$n\.rs" -- ':!tests/it' ':!*.lock' || true
done
