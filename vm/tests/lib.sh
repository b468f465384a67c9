# vm/tests/lib.sh: helpers for second-kernel tests. Source it first: . "$VMTEST_LIB"
# Runs under busybox sh inside the VM. See vm/README.md for the contract.
#
# Provided by the runner: CNI_BIN_DIR (cni-multi + plugin symlinks), REF_BIN_DIR (Debian's
# reference plugins), VMTEST_NAME, VMTEST_TMP (empty per-test dir), VMTEST_RESULT.

IP=/sbin/ip          # iproute2; plain `ip` would be busybox's applet
BRIDGE=/sbin/bridge  # iproute2's bridge
JQ=/usr/bin/jq
: "${VMTEST_TMP:=$(mktemp -d)}" "${VMTEST_RESULT:=$VMTEST_TMP/.result}" "${VMTEST_NAME:=$(basename "$0" .sh)}"
: "${CNI_BIN_DIR:=/opt/cni/bin}" "${REF_BIN_DIR:=/opt/ref/bin}"

# have_ref: this VM has the reference plugins (the arm64 one has none: Debian's on the build
# host are amd64 binaries; build-initramfs.sh leaves /etc/vmtest-no-ref there). Tests that
# compare with the reference run their own side alone then, and say so.
have_ref() { [ ! -e /etc/vmtest-no-ref ]; }
need_ref_or_ours_only() { # what the test needs besides the reference
    if have_ref; then
        must ref-present test -x "$REF_BIN_DIR/bridge" -a -x "$REF_BIN_DIR/host-local" -a -x "$BRIDGE"
    else
        must tools-present test -x "$BRIDGE"
        log "no reference plugins in this VM: cni-multi's side only"
    fi
}
ref_note() { have_ref && echo "${1:-, results = reference}" || echo " (no reference in this VM)"; }

_vm_failures=""
_vm_netns=""
_vm_cleanup=""

log() { echo "# $*"; }

# pass [DETAIL]: the test passed; ends the script.
pass() { echo "${1:-ok}" > "$VMTEST_RESULT"; exit 0; }
# fail DETAIL: the test failed; ends the script.
fail() { echo "$*" > "$VMTEST_RESULT"; echo "FAIL: $*"; exit 1; }

# check LABEL CMD...: run CMD; on failure log its output and remember LABEL (test goes on).
check() {
    _l=$1; shift
    if _o=$("$@" 2>&1); then
        log "ok   $_l"
    else
        log "FAIL $_l: $*"; [ -n "$_o" ] && echo "$_o" | sed 's/^/    /'
        _vm_failures="$_vm_failures $_l"
    fi
}
# must LABEL CMD...: run CMD; on failure the test fails at once with LABEL and CMD's last line.
must() {
    _l=$1; shift
    if _o=$("$@" 2>&1); then
        log "ok   $_l"
    else
        echo "$_o" | sed 's/^/    /'
        fail "$_l: $(echo "$_o" | tail -n1)"
    fi
}
# finish [DETAIL]: pass unless a check failed.
finish() {
    [ -z "$_vm_failures" ] || fail "failed:$_vm_failures"
    pass "${1:-ok}"
}

# on_exit CMD: run CMD (a string, eval'd) when the script exits, last registered first.
on_exit() { _vm_cleanup="$1; $_vm_cleanup"; }
_vm_exit() {
    _rc=$?
    eval "$_vm_cleanup" >/dev/null 2>&1
    for _ns in $_vm_netns; do $IP netns del "$_ns" >/dev/null 2>&1; done
    exit $_rc
}
trap _vm_exit EXIT

# netns_add NAME: make a named netns (lo up), deleted at exit. Its path: netns_path NAME.
netns_add() {
    $IP netns add "$1" || fail "ip netns add $1"
    _vm_netns="$_vm_netns $1"
    $IP -n "$1" link set lo up
}
netns_path() { echo "/run/netns/$1"; }
# in_ns NAME CMD...: run CMD inside the netns.
in_ns() { _n=$1; shift; $IP netns exec "$_n" "$@"; }

# cni PLUGIN CMD NETNS IFNAME CONFFILE OUT: invoke a CNI plugin binary the way a runtime does.
# PLUGIN is a path, or a name looked up in CNI_BIN_DIR. NETNS is a netns name or a path
# ("" for none). stdout goes to OUT, stderr to OUT.err; returns the plugin's exit code.
# Env overrides: CNI_CONTAINERID (default $VMTEST_NAME), CNI_ARGS, CNI_PATH (default the
# plugin's own directory, so IPAM plugins are found beside it), NODE_NS (a netns name: the
# plugin runs inside it, as on a node; default: the VM's root netns).
cni() {
    _p=$1; _cmd=$2; _ns=$3; _if=$4; _conf=$5; _out=$6
    case "$_p" in */*) ;; *) _p=$CNI_BIN_DIR/$_p ;; esac
    case "$_ns" in ""|/*) ;; *) _ns=$(netns_path "$_ns") ;; esac
    if [ -n "${NODE_NS:-}" ]; then set -- $IP netns exec "$NODE_NS" "$_p"; else set -- "$_p"; fi
    CNI_COMMAND=$_cmd CNI_CONTAINERID=${CNI_CONTAINERID:-$VMTEST_NAME} CNI_NETNS=$_ns \
        CNI_IFNAME=$_if CNI_PATH=${CNI_PATH:-$(dirname "$_p")} CNI_ARGS=${CNI_ARGS:-} \
        "$@" < "$_conf" > "$_out" 2> "$_out.err"
    _rc=$?
    # On failure show what the plugin said (check/must print it with the failure).
    [ "$_rc" -eq 0 ] || { echo "exit $_rc"; cat "$_out" "$_out.err"; }
    return "$_rc"
}

# with_prev CONF RESULT: print CONF with .prevResult set to RESULT (for CHECK, and DEL as a
# runtime sends it).
with_prev() { $JQ --slurpfile r "$2" '.prevResult = $r[0]' "$1"; }

# JSON (jq is in the initramfs):
# json_get FILE FILTER: print jq -r FILTER of FILE.
json_get() { $JQ -r "$2" "$1"; }
# json_eq FILE FILTER EXPECTED: FILTER's raw value equals EXPECTED (prints both on mismatch).
json_eq() {
    _v=$($JQ -r "$2" "$1" 2>&1) || { echo "jq failed on $1: $_v"; return 1; }
    [ "$_v" = "$3" ] || { echo "$2: got '$_v', want '$3'"; return 1; }
}
# json_true FILE EXPR: jq -e EXPR is true (e.g. '.ips | length == 1').
json_true() { $JQ -e "$2" "$1" >/dev/null 2>&1 || { echo "not true: $2 in $(cat "$1")"; return 1; }; }
# json_shape FILE: the sorted key paths of FILE (no values) — compare result shapes.
json_shape() { $JQ -c '[paths(scalars) | map(if type == "number" then 0 else . end)] | unique' "$1"; }

# link_up NETNS IFNAME: the link exists in the netns and is UP.
link_up() { $IP -n "$1" link show "$2" 2>&1 | grep -Eq '[<,]UP[,>]' || { $IP -n "$1" link show "$2" 2>&1; return 1; }; }
# link_absent NETNS IFNAME: no such link in the netns ("" = the VM's root netns).
link_absent() {
    if [ -n "$1" ]; then ! $IP -n "$1" link show "$2" >/dev/null 2>&1; else ! $IP link show "$2" >/dev/null 2>&1; fi
}
# has_addr NETNS IFNAME CIDR: the address is on the link.
has_addr() { $IP -n "$1" -o addr show dev "$2" | grep -q " ${3} " || { $IP -n "$1" -o addr show dev "$2"; return 1; }; }
# ping_from NETNS ADDR: one ping reaches ADDR (busybox ping, 3 tries of 1 s).
ping_from() { in_ns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 || in_ns "$1" ping -c 3 -W 1 "$2"; }

# Bridges (iproute2's bridge is in the initramfs as $BRIDGE):
# port_vlans NETNS DEV: DEV's bridge VLANs as sorted words VID[P][U] (P = PVID, U = egress
# untagged), e.g. "1U 100PU"; ranges that `bridge vlan show` compresses are expanded.
port_vlans() {
    in_ns "$1" $BRIDGE -j vlan show dev "$2" | $JQ -r '[.[] | (.vlans // [])[]
        | .vlan as $a | (.flags // []) as $f
        | range($a; (.vlanEnd // $a) + 1)
        | [., (if any($f[]; . == "PVID") then "P" else "" end), (if any($f[]; . == "Egress Untagged") then "U" else "" end)]]
        | sort_by(.[0]) | map("\(.[0])\(.[1])\(.[2])") | join(" ")'
}
# port_vlans_are NETNS DEV WANT: port_vlans equals WANT (prints both on mismatch).
port_vlans_are() {
    _v=$(port_vlans "$1" "$2") || return 1
    [ "$_v" = "$3" ] || { echo "vlans of $2: got '$_v', want '$3'"; return 1; }
}
# vlan_filtering NETNS BRIDGE: the bridge has vlan_filtering 1.
vlan_filtering() { $IP -n "$1" -d link show "$2" | grep -q 'vlan_filtering 1' || { $IP -n "$1" -d link show "$2"; return 1; }; }
# norm_bridge_result FILE: a bridge ADD result with MACs, host veth names and sandboxes
# replaced by placeholders and dns dropped (compare ours with the reference's).
norm_bridge_result() {
    $JQ -cS 'del(.dns) | .interfaces |= map(
        (if has("mac") then .mac = "MAC" else . end)
        | (if (.name | test("^veth")) then .name = "VETH" else . end)
        | (if has("sandbox") then .sandbox = "NS" else . end))' "$1"
}
# same_result A B: norm_bridge_result of both files is equal (prints both otherwise).
same_result() {
    _a=$(norm_bridge_result "$1") && _b=$(norm_bridge_result "$2") || return 1
    [ "$_a" = "$_b" ] || { echo "ours: $_a"; echo "ref:  $_b"; return 1; }
}
