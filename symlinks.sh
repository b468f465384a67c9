#!/bin/sh
# Install one symlink per CNI plugin name pointing at the cni-multi binary.
#
#   symlinks.sh [--dir DIR] [--binary PATH] [--dry-run]
#
# DIR defaults to /opt/cni/bin, PATH to DIR/cni-multi. Each link is made under a temporary
# name and renamed over the old entry (mv -T), so a running runtime never sees a missing
# plugin. --dry-run only prints what would be done.
set -eu

PLUGINS="loopback bridge ptp host-local static macvlan ipvlan vlan host-device dummy tap portmap firewall tuning bandwidth sbr vrf flannel dhcp"

dir=/opt/cni/bin
binary=
dry_run=0

usage() {
    echo "usage: $0 [--dir DIR] [--binary PATH] [--dry-run]" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
        --dir=*) dir=${1#--dir=}; shift ;;
        --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
        --binary=*) binary=${1#--binary=}; shift ;;
        --dry-run|-n) dry_run=1; shift ;;
        -h|--help) usage ;;
        *) echo "$0: unknown argument: $1" >&2; usage ;;
    esac
done

[ -n "$binary" ] || binary=$dir/cni-multi

run() {
    echo "+ $*"
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

if [ "$dry_run" -eq 0 ] && [ ! -e "$binary" ]; then
    echo "$0: binary $binary does not exist" >&2
    exit 1
fi
[ -d "$dir" ] || run mkdir -p "$dir"

for name in $PLUGINS; do
    tmp=$dir/.$name.cni-multi-tmp.$$
    run ln -sfn "$binary" "$tmp"
    run mv -fT "$tmp" "$dir/$name"
done
echo "$(echo "$PLUGINS" | wc -w) plugin links in $dir -> $binary"
