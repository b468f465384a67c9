#!/usr/bin/env bash
# vm/run.sh: boot $VM_DIR/initrd.cpio.gz under the fetched Debian kernel in qemu (software
# emulation, no network device), print every VMTEST line, and exit non-zero if a test failed,
# VMTEST-DONE is missing, or the VM did not finish within VM_TIMEOUT seconds.
#
# Env: VM_DIR, VM_TIMEOUT (default 1800), VM_MEM (default 512), VM_VERBOSE=1 (every test's
#      output, not only failed ones), VM_TEST_TIMEOUT (per test inside the VM, default 300),
#      VM_CONSOLE_LOG (default $VM_DIR/console.log: the whole serial console).
set -euo pipefail

VM_DIR="${VM_DIR:-${CARGO_TARGET_DIR:-target}/vm}"
VM_DIR="$(cd "$VM_DIR" && pwd)"
# Guards against a hung VM or test, nothing more: at load average ~15 on this 2-core machine
# the amd64 run took 814 s and one test 152 s (idle: ~150 s and 15-50 s).
VM_TIMEOUT="${VM_TIMEOUT:-1800}"
LOG="${VM_CONSOLE_LOG:-$VM_DIR/console.log}"

# shellcheck disable=SC1091
. "$VM_DIR/kernel.env"
[ -f "$VM_DIR/initrd.cpio.gz" ] || { echo "vm/run: no initrd: run vm/build-initramfs.sh" >&2; exit 1; }

# arm64: the virt board, its PL011 UART as console; pauth-impdef: the cheap pointer
# authentication algorithm (the architected one is the slowest part of -cpu max under TCG).
case "${VM_ARCH:-amd64}" in
    amd64) QEMU=(qemu-system-x86_64 -accel tcg -cpu max); console=ttyS0 ;;
    arm64) QEMU=(qemu-system-aarch64 -M virt -accel tcg -cpu max,pauth-impdef=on); console=ttyAMA0 ;;
    *) echo "vm/run: VM_ARCH=$VM_ARCH: amd64 or arm64" >&2; exit 1 ;;
esac
append="console=$console quiet panic=-1 vmtest.timeout=${VM_TEST_TIMEOUT:-300}"
[ "${VM_VERBOSE:-0}" = 1 ] && append="$append vmtest.verbose=1"

start=$(date +%s)
set +e
timeout --kill-after=10 "$VM_TIMEOUT" \
    "${QEMU[@]}" -smp 1 -m "${VM_MEM:-512}" \
        -nographic -nic none -no-reboot -nodefaults -serial stdio -display none \
        -kernel "$VMLINUZ" -initrd "$VM_DIR/initrd.cpio.gz" -append "$append" \
        < /dev/null > "$LOG" 2>&1
qrc=$?
set -e
secs=$(( $(date +%s) - start ))

# Plain text: no CRs, no terminal escapes (SeaBIOS clears the screen before the first line).
tr -d '\r' < "$LOG" | sed -E 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/^.*(VMTEST|VMLOG)/\1/' > "$LOG.txt"
grep -E '^(VMTEST|VMLOG) ' "$LOG.txt" || true
done_line="$(grep -E '^VMTEST-DONE [0-9]+ [0-9]+$' "$LOG.txt" | tail -n1 || true)"
nfail=$(grep -cE '^VMTEST [^ ]+ FAIL' "$LOG.txt" || true)
npass=$(grep -cE '^VMTEST [^ ]+ PASS' "$LOG.txt" || true)

if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then
    echo "vm/run: VM timed out after ${VM_TIMEOUT}s; last console lines ($LOG.txt):" >&2
    tail -n 30 "$LOG.txt" >&2
    echo "vm: ${npass} passed, $((nfail + 1)) failed"
    exit 1
fi
if [ -z "$done_line" ]; then
    echo "vm/run: no VMTEST-DONE line (qemu exit $qrc); last console lines ($LOG.txt):" >&2
    tail -n 30 "$LOG.txt" >&2
    echo "vm: ${npass} passed, $((nfail + 1)) failed"
    exit 1
fi
# Every test packed (vm/build-initramfs.sh lists them) must have reported, and the VM's own
# count must agree with the lines seen: nothing may go missing between the VM and this report.
missing=
if [ -f "$VM_DIR/initrd.tests" ]; then
    while read -r t; do
        grep -qE "^VMTEST $t (PASS|FAIL) " "$LOG.txt" || missing="$missing $t"
    done < "$VM_DIR/initrd.tests"
fi
echo "vm/run: ${VM_ARCH:-amd64} kernel $KVER, ${secs}s in qemu, qemu exit $qrc"
if [ -n "$missing" ]; then
    echo "vm/run: no result line for:$missing" >&2
    echo "vm: ${npass} passed, $((nfail + 1)) failed"
    exit 1
fi
if [ "$done_line" != "VMTEST-DONE $npass $nfail" ]; then
    echo "vm/run: '$done_line' disagrees with the $npass PASS and $nfail FAIL lines seen" >&2
    echo "vm: ${npass} passed, $((nfail + 1)) failed"
    exit 1
fi
echo "vm: ${npass} passed, ${nfail} failed"
[ "$nfail" -eq 0 ]
