#!/usr/bin/env bash
# vm/build-initramfs.sh: pack $VM_DIR/initrd.cpio.gz for the second-kernel rig.
#
# Contents: static busybox (+ applet links), iproute2 ip/bridge and jq with the libraries
# ldd lists (for VM_ARCH=arm64: Debian's arm64 busybox, ip, bridge and jq that vm/fetch.sh
# unpacked, with the libraries their ELF NEEDED entries reach, read with readelf), the kernel modules below in insmod order (modprobe --show-depends on the host),
# the static cni-multi binary at /opt/cni/bin/cni-multi (/init makes the plugin symlinks with
# `cni-multi install`), the Debian reference plugins at /opt/ref/bin, vm/init as /init,
# vm/tests/*.sh under /vmtests, and the Rust test executables of $VM_DIR/rust-tests.list (from
# vm/build-rust-tests.sh) at /vmtests/rust/<name>, each run as the vm test rust-<name>
# (vm/rust-test.sh), with the debug cni-multi they run at /vmtests/bin/cni-multi (CNI_MULTI_TEST_BIN).
#
# Env: VM_DIR       (default ${CARGO_TARGET_DIR:-target}/vm; needs kernel.env from vm/fetch.sh)
#      VM_CNI_BIN   (default ${CARGO_TARGET_DIR:-target}/cni-multi, built by `make build`)
#      VM_MODULES   (modules to load in the VM; default below)
#      VM_REF_PLUGINS (reference plugins copied from /usr/lib/cni; default below; none for
#                    arm64: Debian's are amd64 binaries, so the ref-* tests are left out there)
#      VM_TESTS     (space-separated test names to include, default: all vm/tests/*.sh and
#                    every rust-<name> of rust-tests.list)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
VM_DIR="${VM_DIR:-${CARGO_TARGET_DIR:-target}/vm}"
VM_DIR="$(cd "$VM_DIR" && pwd)"
VM_CNI_BIN="${VM_CNI_BIN:-${CARGO_TARGET_DIR:-target}/cni-multi}"
VM_MODULES="${VM_MODULES:-8021q ipvlan macvlan dummy vrf veth bridge tun nf_tables nft_ct nft_nat nft_chain_nat nft_masq nft_redir nft_fib_inet}"
REF_SRC=/usr/lib/cni

log() { echo "vm/build-initramfs: $*" >&2; }
die() { log "$*"; exit 1; }

[ -f "$VM_DIR/kernel.env" ] || die "$VM_DIR/kernel.env missing: run vm/fetch.sh first"
# shellcheck disable=SC1091
. "$VM_DIR/kernel.env"
VM_ARCH="${VM_ARCH:-amd64}"
if [ "$VM_ARCH" = amd64 ]; then
    VM_REF_PLUGINS="${VM_REF_PLUGINS-vlan ipvlan macvlan host-local static loopback bridge ptp vrf tuning}"
    ELF_MACHINE=x86-64
else
    VM_REF_PLUGINS="${VM_REF_PLUGINS-}"
    ELF_MACHINE="ARM aarch64"
    [ -d "$USERLAND" ] || die "$VM_ARCH userland missing: run vm/fetch.sh with VM_ARCH=$VM_ARCH"
fi
[ -x "$VM_CNI_BIN" ] || die "$VM_CNI_BIN missing: run make build first"
file -L "$VM_CNI_BIN" | grep -Eq 'statically linked|static-pie linked' || die "$VM_CNI_BIN is not static"
file -L "$VM_CNI_BIN" | grep -q "$ELF_MACHINE" || die "$VM_CNI_BIN is not a $ELF_MACHINE binary"
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || die "need busybox-static"
BUSYBOX=/bin/busybox
[ "$VM_ARCH" = amd64 ] || BUSYBOX="$USERLAND/bin/busybox"
file -L "$BUSYBOX" | grep 'statically linked' | grep -q "$ELF_MACHINE" || die "$BUSYBOX is not a static $ELF_MACHINE busybox"

ROOT="$VM_DIR/root"
rm -rf "$ROOT"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,etc,proc,sys,dev,run,tmp,var,root,opt/cni/bin,opt/ref/bin,vmtests/tests,lib/modules}
ln -s ../run "$ROOT/var/run"
# The console must exist before /init runs (devtmpfs is mounted only by /init).
mknod -m 600 "$ROOT/dev/console" c 5 1
mknod -m 666 "$ROOT/dev/null" c 1 3

# --- busybox ------------------------------------------------------------------------------
cp "$BUSYBOX" "$ROOT/bin/busybox"
# Real iproute2 binaries take the names ip and bridge; every other applet is a link. The
# applet list is the host's busybox's (an arm64 one cannot run here; Debian builds both from
# one source and configuration).
/bin/busybox --list-full | while read -r app; do
    case "$(basename "$app")" in ip|bridge|busybox) continue ;; esac
    [ -e "$ROOT/$app" ] || ln -s /bin/busybox "$ROOT/$app"
done

# --- dynamically linked tools, with their libraries -----------------------------------------
copy_with_libs() { # SRC DEST-IN-ROOT
    local src="$1" dest="$2"
    mkdir -p "$ROOT/$(dirname "$dest")"
    cp -L "$src" "$ROOT/$dest"
    ldd "$src" 2>/dev/null | grep -oE '(/[^ ]+)' | while read -r lib; do
        [ -e "$lib" ] || continue
        [ -e "$ROOT$lib" ] && continue
        mkdir -p "$ROOT$(dirname "$lib")"
        cp -L "$lib" "$ROOT$lib"
    done
}
# A foreign architecture's: the unpacked packages' files, symlinks resolved inside USERLAND,
# and the libraries of their NEEDED entries (and the program interpreter), recursively.
ul_path() { # PATH-IN-USERLAND: the real file in USERLAND it names
    local p=$1 t n=0
    while [ -L "$USERLAND$p" ] && [ $n -lt 20 ]; do
        t=$(readlink "$USERLAND$p")
        case "$t" in /*) p=$t ;; *) p="$(dirname "$p")/$t" ;; esac
        n=$((n + 1))
    done
    [ -e "$USERLAND$p" ] && echo "$p"
}
ul_copy() { # PATH-IN-USERLAND [DEST]: copy it into the initramfs, with what it needs
    local src dest="${2:-$1}" lib dir found
    [ -e "$ROOT$dest" ] && return 0
    src=$(ul_path "$1") || die "$1 not in the $VM_ARCH userland ($USERLAND)"
    mkdir -p "$ROOT$(dirname "$dest")"
    cp "$USERLAND$src" "$ROOT$dest"
    local interp
    interp=$(readelf -l "$USERLAND$src" 2>/dev/null | sed -n 's/.*program interpreter: \(.*\)]/\1/p')
    [ -z "$interp" ] || ul_copy "$interp"
    for lib in $(readelf -d "$USERLAND$src" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        found=
        for dir in /lib/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu /lib /usr/lib; do
            if [ -e "$USERLAND$dir/$lib" ]; then found=$dir/$lib; break; fi
        done
        [ -n "$found" ] || die "$lib (NEEDED by $src) not in the $VM_ARCH userland"
        ul_copy "$found"
    done
}
if [ "$VM_ARCH" = amd64 ]; then
    IP_BIN="$(command -v ip || echo /sbin/ip)"
    copy_with_libs "$(readlink -f "$IP_BIN")" /sbin/ip
    BR_BIN="$(command -v bridge || echo /sbin/bridge)"
    [ -x "$BR_BIN" ] && copy_with_libs "$(readlink -f "$BR_BIN")" /sbin/bridge
    [ -x /usr/bin/jq ] || die "need jq (apt-get install jq)"
    copy_with_libs /usr/bin/jq /usr/bin/jq
else
    for t in /sbin/ip:/bin/ip /sbin/bridge:/sbin/bridge /usr/bin/jq:/usr/bin/jq; do
        dest=${t%%:*}; src=${t#*:}
        ul_path "$src" > /dev/null || src=$dest
        ul_copy "$src" "$dest"
    done
fi

# --- cni-multi and the reference plugins ----------------------------------------------------
cp "$VM_CNI_BIN" "$ROOT/opt/cni/bin/cni-multi"
n_ref=0
[ -n "$VM_REF_PLUGINS" ] || : > "$ROOT/etc/vmtest-no-ref"   # lib.sh have_ref
for p in $VM_REF_PLUGINS; do
    if [ -x "$REF_SRC/$p" ]; then
        copy_with_libs "$REF_SRC/$p" "/opt/ref/bin/$p"; n_ref=$((n_ref + 1))
    else
        log "warning: reference plugin $REF_SRC/$p not found (apt-get install containernetworking-plugins)"
    fi
done

# --- kernel modules in insmod order ---------------------------------------------------------
: > "$ROOT/etc/modules.load"
for m in $VM_MODULES; do
    out="$(modprobe -d "$KDIR" -S "$KVER" --show-depends "$m")" || die "module $m not found in $KVER"
    while read -r kind path args; do
        case "$kind" in
            builtin) continue ;;
            insmod) ;;
            *) die "unexpected modprobe output for $m: $kind $path" ;;
        esac
        rel="${path#"$KDIR"}"
        name="$(basename "$rel")"
        # busybox insmod takes plain .ko: decompress on the host if the kernel ships .ko.xz/.zst.
        case "$name" in
            *.ko.xz) dst="${rel%.xz}"; [ -e "$ROOT$dst" ] || { mkdir -p "$ROOT$(dirname "$dst")"; xz -dc "$path" > "$ROOT$dst"; } ;;
            *.ko.zst) dst="${rel%.zst}"; [ -e "$ROOT$dst" ] || { mkdir -p "$ROOT$(dirname "$dst")"; zstd -qdc "$path" > "$ROOT$dst"; } ;;
            *.ko.gz) dst="${rel%.gz}"; [ -e "$ROOT$dst" ] || { mkdir -p "$ROOT$(dirname "$dst")"; gzip -dc "$path" > "$ROOT$dst"; } ;;
            *) dst="$rel"; [ -e "$ROOT$dst" ] || { mkdir -p "$ROOT$(dirname "$dst")"; cp "$path" "$ROOT$dst"; } ;;
        esac
        grep -qxF "$dst${args:+ $args}" "$ROOT/etc/modules.load" || echo "$dst${args:+ $args}" >> "$ROOT/etc/modules.load"
    done <<< "$out"
done
echo "$KVER" > "$ROOT/etc/kernel-release"

# --- init, runner library and tests ---------------------------------------------------------
install -m 755 "$HERE/init" "$ROOT/init"
install -m 644 "$HERE/tests/lib.sh" "$ROOT/vmtests/lib.sh"
n_tests=0
for t in "$HERE"/tests/*.sh; do
    name="$(basename "$t" .sh)"
    [ "$name" = lib ] && continue
    if [ -n "${VM_TESTS:-}" ]; then
        case " $VM_TESTS " in *" $name "*) ;; *) continue ;; esac
    fi
    # The reference's tests need its (amd64) plugins.
    case "$name" in ref-*) [ -n "$VM_REF_PLUGINS" ] || continue ;; esac
    install -m 755 "$t" "$ROOT/vmtests/tests/$name.sh"; n_tests=$((n_tests + 1))
done

# Rust integration tests: the test executable of rust-tests.list (the one crate tests/it, once,
# at /vmtests/rust/it; each listed module is one vm test), symbols kept (panic backtraces),
# debuginfo dropped (size); a missing list is an error, so they are never left out silently.
LIST="$VM_DIR/rust-tests.list"
# binutils' strip reads only the host's ELF; the toolchain's llvm objcopy reads every one.
strip_to() { strip --strip-debug -o "$2" "$1"; } # SRC DEST
if [ "$VM_ARCH" != amd64 ]; then
    sysroot="$(rustc --print sysroot)"
    objcopy="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-objcopy"
    [ -x "$objcopy" ] || die "$objcopy missing (the toolchain's llvm-tools)"
    # It links the toolchain's libLLVM, which rustc finds through its own lib dir.
    strip_to() { LD_LIBRARY_PATH="$sysroot/lib" "$objcopy" --strip-debug "$1" "$2"; }
fi
[ -f "$LIST" ] || die "$LIST missing: run vm/build-rust-tests.sh first (VM_RUST_TESTS= builds none)"
n_rust=0
while read -r kind name exe; do
    [ -x "$exe" ] || die "$exe (of $LIST) missing: run vm/build-rust-tests.sh"
    case "$kind" in
        # Not at the path cargo built it at (CARGO_BIN_EXE_cni-multi): that may be under /tmp,
        # which /init mounts afresh. The tests find it through CNI_MULTI_TEST_BIN
        # (vm/rust-test.sh), and since the build path is absent here, a test that used it
        # directly fails in the VM wherever the checkout is.
        bin) mkdir -p "$ROOT/vmtests/bin"; strip_to "$exe" "$ROOT/vmtests/bin/cni-multi"
             printf '%s\n' "$exe" > "$ROOT/vmtests/bin/cni-multi.built-at" ;;
        test)
            if [ -n "${VM_TESTS:-}" ]; then
                case " $VM_TESTS " in *" rust-$name "*) ;; *) continue ;; esac
            fi
            mkdir -p "$ROOT/vmtests/rust"
            [ -e "$ROOT/vmtests/rust/it" ] || strip_to "$exe" "$ROOT/vmtests/rust/it"
            printf '#!/bin/sh\n# tests/it/%s.rs (cargo test), run by vm/rust-test.sh\nexec sh /vmtests/rust-test.sh %s\n' \
                "$name" "$name" > "$ROOT/vmtests/tests/rust-$name.sh"
            chmod 755 "$ROOT/vmtests/tests/rust-$name.sh"
            n_tests=$((n_tests + 1)); n_rust=$((n_rust + 1)) ;;
        *) die "bad line in $LIST: $kind $name $exe" ;;
    esac
done < "$LIST"
install -m 644 "$HERE/rust-test.sh" "$ROOT/vmtests/rust-test.sh"
[ "$n_tests" -gt 0 ] || die "no tests selected"
# What vm/run.sh must see a VMTEST line for.
(cd "$ROOT/vmtests/tests" && ls -- *.sh | sed 's/\.sh$//') > "$VM_DIR/initrd.tests"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) \
    | gzip -1 > "$VM_DIR/initrd.cpio.gz.tmp"
mv -f "$VM_DIR/initrd.cpio.gz.tmp" "$VM_DIR/initrd.cpio.gz"
log "$(du -h "$VM_DIR/initrd.cpio.gz" | cut -f1) initrd: $(wc -l < "$ROOT/etc/modules.load") modules, $n_ref reference plugins, $n_tests tests ($n_rust of them Rust)"
