# The node-install image (sourced by run.sh): the multi-arch list deploy/build-image.sh makes
# (amd64 + arm64, each FROM scratch with its binary, deploy/Containerfile), then run against
# bind-mounted temp directories as the DaemonSet in deploy/ runs it: an empty plugin directory
# and a populated one (another vendor's plugin, an old cni-multi, a stale link) are both left
# with the binary, one relative link per plugin, and everything else untouched; a second run
# changes nothing. The arm64 image cannot run here: its binary is taken out of the image,
# checked by its ELF header, and run under qemu-user (qemu-aarch64-static) as the entrypoint
# runs it. E2E_BIN_ARM64: the arm64 build (make e2e builds it).
I=$E2E_TMP/image; mkdir -p "$I/ctx" "$I/root" "$I/run" "$I/tmp" "$I/empty" "$I/populated"
cat >"$I/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$I/root"
runroot = "$I/run"
CONF
cat >"$I/containers.conf" <<CONF
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$I/tmp"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
CONF
im() { CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf node podman "$@"; }
E2E_BIN_ARM64=$(readlink -f "${E2E_BIN_ARM64:-$here/../target/cni-multi-arm64-musl}")
imp() { CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf podman "$@"; }
check "multi-arch image: podman build FROM scratch, amd64 and arm64, one manifest list" \
    env CONTAINERS_CONF="$I/containers.conf" CONTAINERS_STORAGE_CONF="$I/storage.conf" \
    "$here/../deploy/build-image.sh" localhost/cni-multi:e2e amd64="$E2E_BIN" arm64="$E2E_BIN_ARM64"
check "the list names linux/amd64 and linux/arm64" sh -c "
    CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf podman manifest inspect localhost/cni-multi:e2e \
    | jq -e '[.manifests[].platform | \"\\(.os)/\\(.architecture)\"] | sort == [\"linux/amd64\", \"linux/arm64\"]'"
for arch in amd64 arm64; do
    digest=$(imp manifest inspect localhost/cni-multi:e2e | jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest')
    id=$(imp images --digests --format '{{.Digest}} {{.ID}}' | awk -v d="$digest" '$1 == d {print $2; exit}')
    eval "image_$arch=\$id"
    check "$arch image: one layer, the binary, under 3.5 MB, architecture $arch" sh -c "
        [ -n '$id' ] &&
        [ \"\$(CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf podman image inspect $id -f '{{len .RootFS.Layers}} {{.Architecture}}')\" = '1 $arch' ] &&
        CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf podman image inspect $id -f '{{.Size}}' | awk '{exit !(\$1 < 3500000)}'"
done
echo third-party >"$I/populated/whereabouts"
echo old >"$I/populated/cni-multi"
ln -s /nonexistent "$I/populated/bridge"
installed_ok() { # dir: binary identical, every plugin a relative link to it that runs
    local d=$1
    cmp -s "$E2E_BIN" "$d/cni-multi" || return 1
    for p in $E2E_PLUGINS; do [ "$(readlink "$d/$p")" = cni-multi ] || { echo "$p: $(readlink "$d/$p")"; return 1; }; done
    CNI_COMMAND=VERSION "$d/bridge" </dev/null | grep -q 1.1.0
}
for d in empty populated; do
    check "install into the $d directory" im run --rm --network none -v "$I/$d:/host/opt/cni/bin" localhost/cni-multi:e2e
    check "$d: binary and relative links, runnable on the host" installed_ok "$I/$d"
done
check "populated: the other vendor's plugin untouched" sh -c "[ \"\$(cat $I/populated/whereabouts)\" = third-party ]"
ls -li --time-style=+%s.%N "$I/populated" >"$I/before"
check "second run" im run --rm --network none -v "$I/populated:/host/opt/cni/bin" localhost/cni-multi:e2e
ls -li --time-style=+%s.%N "$I/populated" >"$I/after"
check "second run changes nothing (same inodes and times)" cmp "$I/before" "$I/after"
check "no temporary files left" sh -c "! ls -A $I/empty $I/populated | grep -q '^\\.'"
# arm64: the binary as the image holds it, identical to the build, an aarch64 static ELF; under
# qemu-user it installs itself into an empty directory as the entrypoint does there.
mkdir -p "$I/arm64" "$I/arm64-dir"
# By the arm64 entry's image: `create --platform` on a local list may resolve to the host's.
imp create -q --name cm-arm64 "$image_arm64" >/dev/null 2>"$I/arm64/create.err"
check "arm64 image: its binary copied out (podman cp)" imp cp cm-arm64:/cni-multi "$I/arm64/cni-multi"
imp rm -f cm-arm64 >/dev/null 2>&1
check "arm64 image: the binary is the arm64 build, a static aarch64 ELF" sh -c "
    cmp '$E2E_BIN_ARM64' '$I/arm64/cni-multi' && file '$I/arm64/cni-multi' | grep 'ARM aarch64' | grep -q 'statically linked'"
if command -v qemu-aarch64-static >/dev/null; then
    check "arm64 image: under qemu-aarch64-static, its entrypoint installs binary and links" sh -c "
        qemu-aarch64-static '$I/arm64/cni-multi' install --copy --dir '$I/arm64-dir' >/dev/null &&
        cmp '$I/arm64/cni-multi' '$I/arm64-dir/cni-multi' && [ \"\$(readlink '$I/arm64-dir/bridge')\" = cni-multi ] &&
        CNI_COMMAND=VERSION qemu-aarch64-static '$I/arm64-dir/bridge' </dev/null | grep -q 1.1.0"
else
    fail "qemu-aarch64-static missing: make deps installs qemu-user-static"
fi
imp manifest rm localhost/cni-multi:e2e >/dev/null 2>&1
im rmi -af >/dev/null 2>&1
