#!/bin/sh
# `cni-multi demo` in the second kernel: its own node and pod namespaces, the default bridge
# network on two pods, pings between them, DEL and cleanup; it exits non-zero on any ✗.
. "$VMTEST_LIB"
out=$VMTEST_TMP/demo.out
"$CNI_BIN_DIR/cni-multi" demo > "$out" 2>&1; rc=$?
cat "$out"
[ "$rc" -eq 0 ] || fail "cni-multi demo exited $rc: $(grep '✗' "$out" | head -n1)"
grep -q '✗' "$out" && fail "cni-multi demo printed a failure: $(grep '✗' "$out" | head -n1)"
n=$(grep -c '✓' "$out")
[ "$n" -gt 0 ] || fail "cni-multi demo printed no check"
pass "cni-multi demo: $n checks passed"
