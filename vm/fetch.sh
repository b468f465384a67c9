#!/usr/bin/env bash
# vm/fetch.sh: make sure the host tools for the second-kernel rig are installed, and that
# a Debian kernel (vmlinuz + modules, with modules.dep) is unpacked under $VM_DIR/kernel.
#
# Everything comes from the Debian archive by package name through apt-get:
#   host tools: qemu-system-x86 busybox-static cpio kmod iproute2 jq file
#   kernel:     linux-image-<ver>-amd64, fetched with `apt-get download` into $VM_DIR/cache
#               (kept between runs; delete the cache dir to pick up a newer kernel).
#
# Env: VM_DIR (default ${CARGO_TARGET_DIR:-target}/vm)
#      VM_CACHE (where the .deb is kept, default $VM_DIR/cache; point it outside the clone to
#               keep the download across fresh clones)
#      VM_KERNEL_PKG (default: the cached .deb if any, else what linux-image-amd64 depends on)
# Prints the kernel directory's variables to $VM_DIR/kernel.env for the other scripts.
set -euo pipefail

VM_DIR="${VM_DIR:-${CARGO_TARGET_DIR:-target}/vm}"
VM_CACHE="${VM_CACHE:-$VM_DIR/cache}"
mkdir -p "$VM_DIR" "$VM_CACHE"
VM_DIR="$(cd "$VM_DIR" && pwd)"
CACHE="$(cd "$VM_CACHE" && pwd)"

log() { echo "vm/fetch: $*" >&2; }

# --- host tools ---------------------------------------------------------------------------
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-system-x86_64 || need+=(qemu-system-x86)
[ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || need+=(busybox-static)
have cpio || need+=(cpio)
have depmod && have modprobe || need+=(kmod)
[ -x /usr/bin/jq ] || need+=(jq)
[ -x /bin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
have file || need+=(file)
have dpkg-deb || { log "dpkg-deb missing: this rig needs a Debian host"; exit 1; }
# The reference plugins are optional (test c is skipped without them outside CI).
[ -x /usr/lib/cni/vlan ] || need+=(containernetworking-plugins)

apt_updated=
apt_update() { [ -n "$apt_updated" ] || { log "apt-get update"; apt-get update -qq; apt_updated=1; }; }

if [ "${#need[@]}" -gt 0 ]; then
    log "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
        apt_update
        apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    fi
fi

# --- kernel package -----------------------------------------------------------------------
pick_pkg() {
    # What the linux-image-amd64 metapackage points at (the archive's current kernel).
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1
}

pkg="${VM_KERNEL_PKG:-}"
if [ -z "$pkg" ]; then
    cached="$(cd "$CACHE" && ls -1 linux-image-*-amd64_*.deb 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$cached" ]; then
        pkg="${cached%%_*}"
    else
        pkg="$(pick_pkg)"
        if [ -z "$pkg" ]; then apt_update; pkg="$(pick_pkg)"; fi
        if [ -z "$pkg" ]; then
            # No metapackage: take the highest versioned linux-image-*-amd64 apt offers.
            pkg="$(apt-cache search --names-only '^linux-image-[0-9.]+-[0-9]+-amd64$' \
                | awk '{print $1}' | sort -V | tail -n1)"
        fi
    fi
fi
[ -n "$pkg" ] || { log "no linux-image-*-amd64 package found via apt-cache"; exit 1; }

deb="$(cd "$CACHE" && ls -1 "${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)"
if [ -z "$deb" ]; then
    log "apt-get download $pkg"
    if ! (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null); then
        apt_update
        (cd "$CACHE" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
    fi
    deb="$(cd "$CACHE" && ls -1 "${pkg}"_*.deb | sort -V | tail -n1)"
else
    log "cached $deb"
fi

# Kernel release = package name without the linux-image- prefix (Debian's convention).
kver="${pkg#linux-image-}"
kdir="$VM_DIR/kernel/$kver"
if [ ! -f "$kdir/.done" ] || [ "$CACHE/$deb" -nt "$kdir/.done" ]; then
    log "unpacking $deb"
    rm -rf "$kdir"; mkdir -p "$kdir"
    dpkg-deb -x "$CACHE/$deb" "$kdir"
    [ -f "$kdir/boot/vmlinuz-$kver" ] || { log "no boot/vmlinuz-$kver in $deb"; exit 1; }
    depmod -b "$kdir" "$kver"
    touch "$kdir/.done"
fi

cat > "$VM_DIR/kernel.env" <<ENV
KVER=$kver
KDIR=$kdir
VMLINUZ=$kdir/boot/vmlinuz-$kver
KCONFIG=$kdir/boot/config-$kver
ENV
log "kernel $kver ready in $kdir"
