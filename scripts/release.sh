#!/usr/bin/env bash
# scripts/release.sh OUT VERSION LIST_BIN ARCH=BINARY:TARGET…  (run by make release)
#
# Writes into OUT, per architecture, as upstream's plugin releases are laid out:
#   cni-multi-linux-<arch>-<version>.tgz          the binary and one relative symlink per plugin
#                                                 (`tar -C /opt/cni/bin -xzf` is an install)
#   cni-multi-linux-<arch>-<version>.tgz.sha256   `sha256sum -c` / `sha512sum -c` read them
#   cni-multi-linux-<arch>-<version>.tgz.sha512
#   cni-multi-linux-<arch>-<version>.cdx.json     CycloneDX SBOM of the crates built in (scripts/sbom.py)
#
# Byte for byte reproducible: members in a fixed order, every mtime SOURCE_DATE_EPOCH, owner
# and group 0 by number, modes fixed, gzip -n (no name or time in its header), no "./" entry
# (unpacking must not touch the directory's own mode or time). The plugin names come from
# LIST_BIN (`cni-multi list` of a build that runs here: the same source has the same plugins).
set -euo pipefail

[ $# -ge 4 ] || { echo "usage: $0 OUT VERSION LIST_BIN ARCH=BINARY:TARGET..." >&2; exit 2; }
out=$1 version=$2 list_bin=$3; shift 3
: "${SOURCE_DATE_EPOCH:?SOURCE_DATE_EPOCH must be set (make release sets it to the commit time)}"
export LC_ALL=C TZ=UTC
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
names=$("$list_bin" list | awk '{print $1}' | sort)
[ -n "$names" ] || { echo "release: $list_bin list printed no plugin" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

for spec in "$@"; do
    arch=${spec%%=*}; rest=${spec#*=}; bin=${rest%:*}; target=${rest##*:}
    base=cni-multi-linux-$arch-$version
    rm -rf "$stage/$arch"; mkdir "$stage/$arch"
    cp "$bin" "$stage/$arch/cni-multi"; chmod 0755 "$stage/$arch/cni-multi"
    for n in $names; do ln -s cni-multi "$stage/$arch/$n"; done
    # shellcheck disable=SC2086
    (cd "$stage/$arch" && tar --format=gnu --numeric-owner --owner=0 --group=0 \
        --mtime="@$SOURCE_DATE_EPOCH" --no-recursion -cf - cni-multi $names) \
        | gzip -9n > "$out/$base.tgz.tmp"
    mv -f "$out/$base.tgz.tmp" "$out/$base.tgz"
    (cd "$out" && sha256sum "$base.tgz" > "$base.tgz.sha256" && sha512sum "$base.tgz" > "$base.tgz.sha512")
    "$here/sbom.py" --target "$target" --version "$version" --arch "$arch" > "$out/$base.cdx.json.tmp"
    mv -f "$out/$base.cdx.json.tmp" "$out/$base.cdx.json"
    echo "release: $out/$base.tgz ($(stat -c %s "$out/$base.tgz") bytes, $(echo "$names" | wc -l) plugin links) $(cut -c1-16 "$out/$base.tgz.sha256")…"
done
