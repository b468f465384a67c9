#!/bin/sh
# vm/rust-test.sh NAME: run the module NAME (tests/it/NAME.rs) of the integration-test executable
# /vmtests/rust/it (libtest harness) inside the VM as one vm test. build-initramfs.sh makes a
# /vmtests/tests/rust-NAME.sh for each that runs this.
#
# PASS only if the executable exits 0 AND its "test result:" line says every test it lists
# under NAME:: (--list NAME::) passed: none failed or ignored, and at least one ran. Under CI=true
# a test that cannot find what it needs fails instead of skipping, and EXPECT_KERNEL_DRIVERS
# makes the kernel probes (tests/it/common/links_rig.rs kernel_supports) fail rather than report a
# driver missing, so the driver branch is the one that runs.
. "$VMTEST_LIB"
name=$1
bin=${VMTEST_RUST_DIR:-/vmtests/rust}/it
filter="$name::"
[ -x "$bin" ] || fail "no test executable $bin"

# The drivers this VM's kernel has (VM_MODULES in build-initramfs.sh loads them).
drivers="dummy vlan ipvlan macvlan vrf bridge_vlan"

# The cni-multi the tests run (tests/it/common/rig.rs ours_bin), where build-initramfs.sh put it:
# it must be there and run, and the path cargo built it at must not exist here, so a test
# that bypassed the variable fails in the VM wherever the checkout is (a /tmp one hid it).
CNI_MULTI_TEST_BIN=/vmtests/bin/cni-multi; export CNI_MULTI_TEST_BIN
"$CNI_MULTI_TEST_BIN" version > /dev/null 2>&1 || fail "the VM cannot run cni-multi at CNI_MULTI_TEST_BIN=$CNI_MULTI_TEST_BIN"
built_at=$(cat /vmtests/bin/cni-multi.built-at 2>/dev/null)
[ -n "$built_at" ] || fail "/vmtests/bin/cni-multi.built-at missing"
[ ! -e "$built_at" ] || fail "$built_at (cargo's path) exists in the VM: the tests must not find it that way"

listed=$("$bin" --list "$filter" 2>&1) || { echo "$listed"; fail "$bin --list $filter failed"; }
# A filter matches anywhere in a name (vlan:: is in ipvlan::x too): run NAME's tests by their
# exact names.
names=$(echo "$listed" | sed -n "s/^\($filter.*\): test\$/\1/p")
want=$(echo "$names" | grep -c .)
[ "$want" -gt 0 ] || { echo "$listed"; fail "$bin --list $filter shows no tests"; }

out=$VMTEST_TMP/out
CI=true EXPECT_KERNEL_DRIVERS="$drivers" RUST_BACKTRACE=1 "$bin" --exact $names --test-threads=1 > "$out" 2>&1
rc=$?
cat "$out"

# test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.5s
results=$(grep -c '^test result: ' "$out")
[ "$results" -eq 1 ] || fail "$results 'test result:' lines from $name (exit $rc)"
line=$(grep '^test result: ' "$out")
count() { echo "$line" | sed -n "s/.* \([0-9][0-9]*\) $1[;.].*/\1/p"; }
passed=$(count passed); failed=$(count failed); ignored=$(count ignored); filtered=$(count 'filtered out')
[ -n "$passed" ] && [ -n "$failed" ] && [ -n "$ignored" ] && [ -n "$filtered" ] \
    || fail "cannot read '$line' (exit $rc)"
if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
    fail "tests/it/$name.rs: $failed of $want failed: $(grep -E '^test .* FAILED$' "$out" | sed 's/^test //; s/ \.\.\. FAILED$//' | tr '\n' ' ')(exit $rc)"
fi
# The other modules' tests are filtered out; every one of NAME's must have run.
[ "$passed" -eq "$want" ] && [ "$ignored" -eq 0 ] \
    || fail "tests/it/$name.rs: $passed of $want passed, $ignored ignored"
pass "tests/it/$name.rs: $passed of $want passed (CI=true, drivers expected: $drivers)"
