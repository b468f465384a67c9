#!/usr/bin/env bash
# vm/fetch.sh: make sure the host tools for the second-kernel rig are installed, and that
# a Debian kernel (vmlinuz + modules, with modules.dep) is unpacked under $VM_DIR/kernel.
#
# Everything comes from the Debian archive by package name through apt-get:
#   host tools: qemu-system-x86 (or qemu-system-arm) busybox-static cpio kmod iproute2 jq file
#   kernel:     linux-image-<ver>-<arch>, fetched with `apt-get download` into $VM_DIR/cache
#               (kept between runs; delete the cache dir to pick up a newer kernel).
#   VM_ARCH=arm64 also: busybox-static, iproute2 and jq of arm64 with the libraries they need,
#               unpacked with dpkg-deb -x into $VM_DIR/userland (nothing arm64 can run on the
#               host, so nothing of it is run to build the initramfs). apt reads arm64's package
#               lists from a private state dir in the cache ($VM_CACHE/apt): the machine's dpkg
#               architectures and apt lists are left as they are.
#
# Env: VM_DIR (default ${CARGO_TARGET_DIR:-target}/vm)
#      VM_ARCH  (amd64 or arm64, default amd64)
#      VM_CACHE (where the .debs are kept, default $VM_DIR/cache; point it outside the clone to
#               keep the download across fresh clones)
#      VM_KERNEL_PKG (default: the cached .deb if any, else what linux-image-<arch> depends on)
# Prints the kernel directory's variables to $VM_DIR/kernel.env for the other scripts.
set -euo pipefail

VM_DIR="${VM_DIR:-${CARGO_TARGET_DIR:-target}/vm}"
VM_CACHE="${VM_CACHE:-$VM_DIR/cache}"
VM_ARCH="${VM_ARCH:-amd64}"
mkdir -p "$VM_DIR" "$VM_CACHE"
VM_DIR="$(cd "$VM_DIR" && pwd)"
CACHE="$(cd "$VM_CACHE" && pwd)"

log() { echo "vm/fetch: $*" >&2; }
case "$VM_ARCH" in
    amd64) QEMU=qemu-system-x86_64 QEMU_PKG=qemu-system-x86 ;;
    arm64) QEMU=qemu-system-aarch64 QEMU_PKG=qemu-system-arm ;;
    *) log "VM_ARCH=$VM_ARCH: amd64 or arm64"; exit 1 ;;
esac

# --- host tools ---------------------------------------------------------------------------
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have "$QEMU" || need+=("$QEMU_PKG")
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
# The kernel's (and for arm64 the userland's) packages: the machine's apt for amd64, a private
# arm64 apt state for arm64 (same sources, arm64 lists, an empty dpkg status).
APT=()
if [ "$VM_ARCH" != amd64 ]; then
    A="$CACHE/apt"; mkdir -p "$A/lists/partial" "$A/cache/archives/partial"; touch "$A/status"
    APT=(-o "APT::Architecture=$VM_ARCH" -o "APT::Architectures::=$VM_ARCH" -o "Dir::State::Lists=$A/lists"
         -o "Dir::Cache=$A/cache" -o "Dir::State::status=$A/status")
    apt_update() {
        [ -n "$apt_updated" ] || { log "apt-get update ($VM_ARCH lists, private)"; apt-get "${APT[@]}" update -qq; apt_updated=1; }
    }
    ls "$A/lists/"*_Packages* >/dev/null 2>&1 || apt_update
fi

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
    # What the linux-image-<arch> metapackage points at (the archive's current kernel).
    apt-cache "${APT[@]}" depends "linux-image-$VM_ARCH" 2>/dev/null \
        | sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$VM_ARCH\)\$/\1/p" | head -n1
}

pkg="${VM_KERNEL_PKG:-}"
if [ -z "$pkg" ]; then
    cached="$(cd "$CACHE" && ls -1 linux-image-*-"$VM_ARCH"_*.deb 2>/dev/null | sort -V | tail -n1 || true)"
    if [ -n "$cached" ]; then
        pkg="${cached%%_*}"
    else
        pkg="$(pick_pkg)"
        if [ -z "$pkg" ]; then apt_update; pkg="$(pick_pkg)"; fi
        if [ -z "$pkg" ]; then
            # No metapackage: take the highest versioned linux-image-*-<arch> apt offers.
            pkg="$(apt-cache "${APT[@]}" search --names-only "^linux-image-[0-9.]+-[0-9]+-$VM_ARCH\$" \
                | awk '{print $1}' | sort -V | tail -n1)"
        fi
    fi
fi
[ -n "$pkg" ] || { log "no linux-image-*-$VM_ARCH package found via apt-cache"; exit 1; }

deb="$(cd "$CACHE" && ls -1 "${pkg}"_*.deb 2>/dev/null | sort -V | tail -n1 || true)"
if [ -z "$deb" ]; then
    log "apt-get download $pkg"
    if ! (cd "$CACHE" && apt-get "${APT[@]}" download -q -o APT::Sandbox::User=root "$pkg" >/dev/null); then
        apt_update
        (cd "$CACHE" && apt-get "${APT[@]}" download -q -o APT::Sandbox::User=root "$pkg" >/dev/null)
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

# --- arm64 userland: busybox, iproute2, jq and the libraries they link ---------------------
USERLAND=
if [ "$VM_ARCH" != amd64 ]; then
    USERLAND="$VM_DIR/userland"
    UCACHE="$CACHE/userland"; mkdir -p "$UCACHE"
    tools="busybox-static iproute2 jq"
    # The tools and every library package they depend on (build-initramfs.sh copies only the
    # files their ELF NEEDED entries reach); those not in the cache yet are downloaded.
    deps="$(apt-cache "${APT[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
            --no-breaks --no-replaces --no-enhances --no-pre-depends $tools 2>/dev/null \
            | grep -E '^(lib|zlib)[^ <]*$' | sort -u)"
    [ -n "$deps" ] || { log "apt-cache found no library packages for $tools ($VM_ARCH)"; exit 1; }
    get=
    for p in $tools $deps; do ls "$UCACHE/${p}"_*.deb >/dev/null 2>&1 || get="$get $p"; done
    if [ -n "$get" ]; then
        log "apt-get download ($VM_ARCH):$get"
        # shellcheck disable=SC2086
        (cd "$UCACHE" && apt-get "${APT[@]}" download -q -o APT::Sandbox::User=root $get >/dev/null)
    fi
    # Unpacked again whenever the set of .debs changed (.done lists them).
    if [ "$(cat "$USERLAND/.done" 2>/dev/null)" != "$(cd "$UCACHE" && ls -1 -- *.deb)" ]; then
        rm -rf "$USERLAND"; mkdir -p "$USERLAND"
        for d in "$UCACHE"/*.deb; do dpkg-deb -x "$d" "$USERLAND"; done
        (cd "$UCACHE" && ls -1 -- *.deb) > "$USERLAND/.done"
    fi
    log "$VM_ARCH userland: $(ls "$UCACHE" | wc -l) packages in $USERLAND"
fi

cat > "$VM_DIR/kernel.env" <<ENV
VM_ARCH=$VM_ARCH
KVER=$kver
KDIR=$kdir
VMLINUZ=$kdir/boot/vmlinuz-$kver
KCONFIG=$kdir/boot/config-$kver
USERLAND=$USERLAND
ENV
log "kernel $kver ready in $kdir"
