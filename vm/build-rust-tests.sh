#!/usr/bin/env bash
# vm/build-rust-tests.sh: build the Rust integration tests (the one crate tests/it; its modules
# tests/it/<name>.rs named in VM_RUST_TESTS only reach their kernel-driver branch under the
# second kernel) as a static executable the initramfs can run, and list them in
# $VM_DIR/rust-tests.list for vm/build-initramfs.sh:
#   test <name> <executable>       one per module (the same executable: tests/it's)
#   bin cni-multi <executable>     the binary those tests run (CARGO_BIN_EXE_cni-multi; the
#                                  initramfs puts it at /vmtests/bin/cni-multi, CNI_MULTI_TEST_BIN)
#
# The profile is cargo test's own (unoptimised, debug assertions and overflow checks on), so the
# VM runs the same code as `cargo test` on the host; only static linking (the initramfs has no
# libc for them) and no debuginfo (size, link time) differ. --target keeps these artifacts in
# target/<triple>/debug, apart from the host's target/debug, so neither build evicts the other.
#
# Env: VM_DIR        (default ${CARGO_TARGET_DIR:-target}/vm)
#      VM_RUST_TESTS (modules of tests/it, default "dummy vlan ipvlan vrf bridge_vlan"; empty: none)
#      VM_TESTS      (as for build-initramfs.sh: when set, only the files named rust-<name> there)
#      CARGO, TARGET (default cargo, x86_64-unknown-linux-gnu)
set -euo pipefail

VM_DIR="${VM_DIR:-${CARGO_TARGET_DIR:-target}/vm}"
mkdir -p "$VM_DIR"
VM_DIR="$(cd "$VM_DIR" && pwd)"
VM_RUST_TESTS="${VM_RUST_TESTS-dummy vlan ipvlan vrf bridge_vlan}"
CARGO="${CARGO:-cargo}"
TARGET="${TARGET:-x86_64-unknown-linux-gnu}"
LIST="$VM_DIR/rust-tests.list"

log() { echo "vm/build-rust-tests: $*" >&2; }
die() { log "$*"; exit 1; }

if [ -n "${VM_TESTS:-}" ]; then
    picked=
    for t in $VM_RUST_TESTS; do
        case " $VM_TESTS " in *" rust-$t "*) picked="$picked $t" ;; esac
    done
    VM_RUST_TESTS=$picked
fi
if [ -z "$VM_RUST_TESTS" ]; then
    : > "$LIST"; log "VM_RUST_TESTS is empty: no Rust tests in the VM"; exit 0
fi
for t in $VM_RUST_TESTS; do
    [ -f "$(dirname "$0")/../tests/it/$t.rs" ] || die "no module tests/it/$t.rs"
done

start=$(date +%s)
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_DEV_DEBUG=0 \
    "$CARGO" test --locked --no-run --target "$TARGET" --test it \
    --message-format=json-render-diagnostics > "$VM_DIR/rust-tests.json"

jq -r 'select(.reason == "compiler-artifact" and .executable != null)
       | select(.target.kind[0] == "test" or .target.name == "cni-multi")
       | "\(if .target.kind[0] == "test" then "test" else "bin" end) \(.target.name) \(.executable)"' \
    "$VM_DIR/rust-tests.json" | sort -u > "$LIST.built"
it=$(sed -n 's/^test it //p' "$LIST.built")
[ -n "$it" ] || die "cargo built no executable for tests/it"
{ grep '^bin ' "$LIST.built" || true; for t in $VM_RUST_TESTS; do echo "test $t $it"; done; } > "$LIST.tmp"
rm -f "$LIST.built"
grep -q '^bin cni-multi ' "$LIST.tmp" || die "cargo built no cni-multi binary for the tests"
while read -r _ name exe; do
    file -L "$exe" | grep -Eq 'statically linked|static-pie linked' || die "$name ($exe) is not static"
done < "$LIST.tmp"
mv -f "$LIST.tmp" "$LIST"
log "tests/it ($(grep -c '^test ' "$LIST") modules) + cni-multi, static, in $(( $(date +%s) - start )) s"
