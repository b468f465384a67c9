#!/usr/bin/env bash
# make e2e: real runtimes (podman's CNI backend, ...) driving only cni-multi's symlinks.
#   E2E_BIN=target/cni-multi e2e/run.sh [part...]      parts: podman image containerd configs swap (default: all)
# Never touches the root netns or the machine's /etc/cni, /opt/cni/bin, /var/lib/cni,
# podman or containerd state: it re-executes itself in a private mount namespace with
# tmpfs over the state directories, and runs the runtimes inside a throw-away node netns.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${E2E_INNER:-}" ]; then
    exec env E2E_INNER=1 unshare -m --propagation private "$0" "$@"
fi
export E2E_BIN=$(readlink -f "${E2E_BIN:-$here/../target/cni-multi}")
[ -x "$E2E_BIN" ] || { echo "e2e: no binary at $E2E_BIN (make build)"; exit 1; }
for d in /run/netns /run/cni /var/lib/cni /var/lib/containers /run/containers /run/libpod /run/containerd /var/lib/containerd; do
    mkdir -p "$d" && mount -t tmpfs tmpfs "$d" || { echo "e2e: cannot mount tmpfs on $d"; exit 1; }
done
export E2E_TMP=$(mktemp -d /tmp/cm-e2e.XXXXXX)
export E2E_NODE=cm-e2e-node-$$
cleanup() {
    [ -n "${E2E_PODMAN:-}" ] && $E2E_PODMAN rm -af -t 0 >/dev/null 2>&1
    for p in $(cat "$E2E_TMP"/pids 2>/dev/null); do kill "$p" 2>/dev/null; done
    for ns in $(ip netns list | awk '{print $1}'); do ip netns del "$ns" 2>/dev/null; done
    grep " $E2E_TMP" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$E2E_TMP"
}
trap cleanup EXIT
ip netns add "$E2E_NODE" && ip -n "$E2E_NODE" link set lo up
mkdir -p "$E2E_TMP/bin" && "$E2E_BIN" install --dir "$E2E_TMP/bin" >/dev/null || exit 1
export E2E_PLUGINS=$("$E2E_BIN" list | awk '{print $1}' | tr '\n' ' ')
parts=${*:-podman image containerd configs swap}
total_start=$(date +%s.%N)
source "$here/lib.sh"
for part in $parts; do
    echo "== e2e $part"; t0=$(date +%s.%N)
    source "$here/$part.sh"
    printf '== e2e %s: %.1f s\n' "$part" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")"
done
printf '== e2e total: %.1f s, %d failure(s)\n' "$(awk "BEGIN{print $(date +%s.%N) - $total_start}")" "$E2E_FAILS"
[ "$E2E_FAILS" -eq 0 ]
