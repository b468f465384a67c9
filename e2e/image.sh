# The node-install image (sourced by run.sh): built FROM scratch with podman from
# deploy/Containerfile, then run against bind-mounted temp directories as the DaemonSet in
# deploy/ runs it: an empty plugin directory and a populated one (another vendor's plugin,
# an old cni-multi, a stale link) are both left with the binary, one relative link per
# plugin, and everything else untouched; a second run changes nothing.
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
cp "$E2E_BIN" "$I/ctx/cni-multi" && cp "$here/../deploy/Containerfile" "$I/ctx/"
check "podman build FROM scratch" im build -q -t localhost/cni-multi:e2e "$I/ctx"
check "image holds one file, the binary" sh -c "
    [ \$(CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf podman image inspect localhost/cni-multi:e2e -f '{{len .RootFS.Layers}}') = 1 ] &&
    CONTAINERS_CONF=$I/containers.conf CONTAINERS_STORAGE_CONF=$I/storage.conf podman image inspect localhost/cni-multi:e2e -f '{{.Size}}' | awk '{exit !(\$1 < 3500000)}'"
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
im rmi -af >/dev/null 2>&1
