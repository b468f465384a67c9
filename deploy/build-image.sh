#!/usr/bin/env bash
# deploy/build-image.sh IMAGE ARCH=BINARY...   (make image; e2e/image.sh)
#
# The node-install image as a multi-arch manifest list: one image per architecture, each
# FROM scratch holding only that architecture's static binary (deploy/Containerfile), built
# with `podman build --platform linux/<arch> --manifest IMAGE` (no RUN step, so no emulation is
# needed to build the arm64 one). `podman run IMAGE` on a node then pulls the image of its
# own architecture. Push with `podman manifest push --all IMAGE docker://REGISTRY/...`.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 IMAGE ARCH=BINARY..." >&2; exit 2; }
image=$1; shift
here="$(cd "$(dirname "$0")" && pwd)"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

# A fresh list each time: an old one would keep the previous build's entries.
podman manifest exists "$image" 2>/dev/null && podman manifest rm "$image" >/dev/null
podman image exists "$image" 2>/dev/null && podman rmi "$image" >/dev/null
podman manifest create "$image" >/dev/null
for spec in "$@"; do
    arch=${spec%%=*}; bin=${spec#*=}
    rm -rf "$ctx/$arch"; mkdir "$ctx/$arch"
    cp "$bin" "$ctx/$arch/cni-multi"
    cp "$here/Containerfile" "$ctx/$arch/"
    podman build -q --platform "linux/$arch" --manifest "$image" "$ctx/$arch" >/dev/null
    echo "image: $image linux/$arch <- $bin"
done
podman manifest inspect "$image" | grep -o '"architecture": *"[a-z0-9]*"' | tr '\n' ' '; echo
