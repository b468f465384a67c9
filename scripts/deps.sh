#!/usr/bin/env bash
# Installs, by Debian package name, what the tests use and is missing (the plugins themselves
# need no other program at run time). Called by `make deps`, which `make test` depends on, so
# `sudo make test` is all the set-up a fresh Debian machine needs. Installs nothing when every
# package is present, so it is cheap to run each time.
#
#   make, iproute2 (ip netns), util-linux (nsenter), containernetworking-plugins (the reference
#   plugins compared against), nftables/iptables/conntrack (inspect firewall state; the
#   reference's ipMasq uses iptables; Debian's iptables also ships iptables-legacy,
#   ip6tables-legacy and their -save/-restore, which the legacy-node tests need), iputils-ping/netcat-openbsd/socat (traffic between
#   namespaces), iperf3 (bandwidth shaping measurements), file (static check), jq, procps, time,
#   strace, python3 (a UDP test server), python3-venv (e2e's CRI client), dnsmasq-base (a DHCP
#   server for the dhcp tests), firewalld/dbus (tests/it/firewalld.rs runs both inside a node netns
#   on a private bus), qemu-system-x86/busybox-static/cpio/kmod (make vm-test: a
#   Debian kernel with vlan, ipvlan, dummy and vrf; the kernel package itself is fetched with
#   apt-get download by vm/fetch.sh), qemu-system-arm (make vm-test ARCH=arm64: the arm64
#   kernel, busybox and iproute2 are Debian's arm64 .debs, fetched by vm/fetch.sh), qemu-user-static
#   (runs the arm64 binary of make release-test and make image), podman/runc/catatonit/uidmap/
#   containerd (make e2e).
set -euo pipefail

PACKAGES=(
    make iproute2 util-linux containernetworking-plugins nftables iptables conntrack
    iputils-ping netcat-openbsd socat iperf3 file jq procps time strace python3 python3-venv
    dnsmasq-base firewalld dbus qemu-system-x86 busybox-static cpio kmod qemu-system-arm qemu-user-static
    podman runc catatonit uidmap containerd
)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "deps: run as root (sudo make test) to install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # firewalld's package would start (and enable) the daemon on this machine's own network:
    # the tests only run their own, in a throw-away netns. So service starts are refused while
    # it installs, and a firewalld installed here is masked afterwards (no start at boot, no
    # D-Bus activation).
    new_firewalld=false
    if [[ " ${missing[*]} " == *" firewalld "* ]]; then
        new_firewalld=true
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            trap 'rm -f /usr/sbin/policy-rc.d' EXIT
        fi
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    if $new_firewalld && [ -d /run/systemd/system ]; then
        systemctl mask firewalld.service >/dev/null 2>&1 || true
    fi
fi

# rustfmt and clippy: normally preinstalled with the toolchain; add them only if missing.
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

# make build: the musl targets (amd64, and arm64 cross-built; both linked by the toolchain's
# rust-lld, so no C cross toolchain), and cargo-auditable, which embeds the dependency list in
# the binary; make release-test reads it back with rust-audit-info. Both from crates.io.
installed_targets=$(rustup target list --installed)
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    echo "$installed_targets" | grep -qx "$t" || rustup target add "$t"
done
cargo auditable --version >/dev/null 2>&1 || cargo install --locked cargo-auditable
command -v rust-audit-info >/dev/null 2>&1 || cargo install --locked rust-audit-info

# make fuzz: a nightly toolchain and cargo-fuzz (from crates.io), only when missing.
cargo +nightly --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# Namespaces are made with `ip netns add`, which needs /run/netns; nothing else is touched.
mkdir -p /run/netns
