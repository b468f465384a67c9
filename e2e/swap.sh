# Swapping implementations with pods running, on every configuration of e2e/configs/ (issue
# #23): a node that moves from the reference plugins to cni-multi, or back, must be left with
# nothing that the reference's own ADD+DEL would not leave, and pods must keep their traffic
# when the node's iptables FORWARD policy turns DROP after they were added. Per config, each
# in its own node netns, all through `cni-multi net` (libcni's semantics: prevResult chaining,
# capabilities, DEL in reverse with the cached result), with CNI_PATH choosing whose plugins
# run:
#   baseline  reference ADD, reference DEL: what the reference itself leaves behind
#   (a)       cni-multi ADD, reference CHECK, reference DEL
#   (b)       reference ADD, cni-multi CHECK, cni-multi DEL
#   (c)       ADD (each implementation, default backends), then `iptables -P FORWARD DROP`
#             (and ip6tables), then pod -> outside, node -> pod and host-port traffic; every
#             check cni-multi fails where the reference passes is a failure.
# "Left behind" is the node's links, addresses, routes, `nft list ruleset`, `iptables-save` and
# `ip6tables-save` (counters and handles dropped) and the IPAM/flannel files, compared with the
# baseline: anything more is residue. Sourced by run.sh.
S=$E2E_TMP/swap; mkdir -p "$S/refbin"
REF=/usr/lib/cni
[ -x "$REF/bridge" ] || fail "swap: no reference plugins in $REF (containernetworking-plugins)"
for p in "$REF"/*; do ln -sf "$p" "$S/refbin/"; done
# As in configs.sh: the reference has no flannel; its flannel runs are cni-multi's flannel
# delegating to the reference's bridge and host-local.
ln -sf "$E2E_TMP/bin/flannel" "$S/refbin/flannel"

# Everything a node holds that an attachment could leave behind, normalised: no counters or
# handles, veth names as VETH. Files relative to the run's dirs.
swap_state() { # swap_state NS T NETNAME
    local ns=$1 t=$2 net=$3
    echo "# links"; nsenter --net="$ns" ip -o link show | awk '{print $2}' | sed -e 's/@.*//' -e 's/^veth.*/VETH/' | sort
    echo "# addresses"; nsenter --net="$ns" ip -o addr show | awk '$2 != "lo" {print $2, $3, $4}' | grep -v ' fe80:' | sort
    # `linkdown` follows the bridge's carrier, which the kernel's linkwatch updates up to a
    # second after the last port went: a timing, not a state.
    echo "# routes"; { nsenter --net="$ns" ip -4 route show; nsenter --net="$ns" ip -6 route show; } | grep -v -e '^fe80' -e '^multicast' | sed -e 's/veth[0-9a-f]*/VETH/g' -e 's/ linkdown//' | sort
    echo "# nft"; nsenter --net="$ns" nft list ruleset 2>&1 | sed -E -e 's/counter packets [0-9]+ bytes [0-9]+/counter/' -e 's/ # handle [0-9]+//' -e 's/veth[0-9a-f]+/VETH/g'
    for t4 in iptables ip6tables; do
        echo "# $t4-save"; nsenter --net="$ns" "$t4-save" 2>&1 | grep -v -e '^#' | sed -E -e 's/\[[0-9]+:[0-9]+\]/[0:0]/' -e 's/veth[0-9a-f]+/VETH/g'
    done
    echo "# files"
    (cd /var/lib/cni 2>/dev/null && find . -type f ! -name lock ! -name 'last_reserved_ip*' ! -name '.*.index' | sort)
    (cd "$t" && find . -type f ! -name conf ! -name '*.json' ! -name '*.err' ! -name '*.out' ! -name 'state*' ! -name subnet.env ! -name lock ! -name 'last_reserved_ip*' ! -name '.*.index' ! -path './cache/*' | sort)
}

# swap_run CFG NAME ADD_PATH DEL_PATH [cm]: one pod added with ADD_PATH's plugins, checked and
# deleted with DEL_PATH's; writes $S/<cfg>-<name>/{state,check.rc,...}. The node netns is
# fresh; host-local's directory is emptied first so every run starts from the same range.
swap_run() {
    local file=$1 name=$2 addp=$3 delp=$4 base; base=$(basename "$file"); base=${base%.*}
    local T=$S/$base-$name; mkdir -p "$T/cache"
    local N=cm-e2e-sw-$$-$base-$name; N=${N:0:60}
    local NS=/run/netns/$N
    sed -e '/^\/\//d' -e "s|@TMP@|$T|g" "$file" >"$T/conf"
    local cap; cap=$(sed -n 's|^// e2e-cap: ||p' "$file"); cap=${cap:-"{}"}
    local senv; senv=$(sed -n 's|^// e2e-subnet-env: ||p' "$file")
    [ -n "$senv" ] && echo "$senv" | tr ' ' '\n' >"$T/subnet.env"
    local netname; netname=$(jq -r .name "$T/conf")
    rm -rf /var/lib/cni/networks/"$netname"
    ip netns add "$N" && ip -n "$N" link set lo up && ip netns add "$N-a"
    swapnet() { local p=$1; shift; nsenter --net="$NS" "$E2E_BIN" net --conf "$T/conf" --cache-dir "$T/cache" --path "$p" --container-id "ctr-$base-a" --cap-args "$cap" "$@"; }
    swapnet "$addp" add x "$NS-a" >"$T/add.json" 2>"$T/add.err"; echo $? >"$T/add.rc"
    case $(jq -r .cniVersion "$T/conf") in
        0.1.*|0.2.*|0.3.*) echo skip >"$T/check.rc" ;;
        *) swapnet "$delp" check x "$NS-a" >"$T/check.out" 2>&1; echo $? >"$T/check.rc" ;;
    esac
    swapnet "$delp" del x "$NS-a" >"$T/del.out" 2>&1; echo $? >"$T/del.rc"
    # containerd's second DEL: no netns, and the cached result gone by now.
    swapnet "$delp" del x "" >"$T/del2.out" 2>&1; echo $? >"$T/del2.rc"
    swap_state "$NS" "$T" "$netname" >"$T/state"
    rm -rf /var/lib/cni/networks/"$netname"
    ip netns del "$N-a"; ip netns del "$N"
}

# swap_traffic CFG IMPL PATH: ADD one pod, turn FORWARD to DROP, then the traffic checks;
# writes one "<check> ok|FAIL" line per check to $S/<cfg>-drop-<impl>/results.
swap_traffic() {
    local file=$1 impl=$2 path=$3 base; base=$(basename "$file"); base=${base%.*}
    local T=$S/$base-drop-$impl; mkdir -p "$T/cache"
    local N=cm-e2e-sd-$$-$base-$impl; N=${N:0:60}
    local NS=/run/netns/$N
    sed -e '/^\/\//d' -e "s|@TMP@|$T|g" "$file" >"$T/conf"
    local cap; cap=$(sed -n 's|^// e2e-cap: ||p' "$file"); cap=${cap:-"{}"}
    local senv; senv=$(sed -n 's|^// e2e-subnet-env: ||p' "$file")
    [ -n "$senv" ] && echo "$senv" | tr ' ' '\n' >"$T/subnet.env"
    local netname; netname=$(jq -r .name "$T/conf")
    rm -rf /var/lib/cni/networks/"$netname"
    # node: the pod network's gateway and 192.0.2.1 towards an "outside" netns (192.0.2.2),
    # which routes the pod ranges back through the node (for configs without masquerading).
    ip netns add "$N" && ip -n "$N" link set lo up && ip netns add "$N-a" && ip netns add "$N-o"
    ip -n "$N-o" link set lo up
    ip -n "$N" link add uplink type veth peer name eth0 netns "$N-o"
    ip -n "$N" addr add 192.0.2.1/24 dev uplink && ip -n "$N" link set uplink up
    ip -n "$N-o" addr add 192.0.2.2/24 dev eth0 && ip -n "$N-o" link set eth0 up
    ip -n "$N-o" route add 10.0.0.0/8 via 192.0.2.1
    nsenter --net="$NS" sysctl -qw net.ipv4.ip_forward=1
    local res=$T/results; : >"$res"
    r() { local what=$1; shift; if "$@" >/dev/null 2>&1; then echo "$what ok" >>"$res"; else echo "$what FAIL" >>"$res"; fi; }
    swapnet() { nsenter --net="$NS" "$E2E_BIN" net --conf "$T/conf" --cache-dir "$T/cache" --path "$path" --container-id "ctr-$base-a" --cap-args "$cap" "$@"; }
    if ! swapnet add x "$NS-a" >"$T/add.json" 2>"$T/add.err"; then
        echo "ADD FAIL" >>"$res"
    else
        echo "ADD ok" >>"$res"
        nsenter --net="$NS" iptables -P FORWARD DROP
        nsenter --net="$NS" ip6tables -P FORWARD DROP
        local ipa; ipa=$(jq -r '[.ips[] | select(.address | test("\\."))][0].address' "$T/add.json" | cut -d/ -f1)
        # The pod's default route: configs without isGateway (the spec's dbnet) have none.
        r "pod -> outside ping" nsenter --net="$NS-a" ping -c1 -W2 192.0.2.2
        nsenter --net="$NS-o" socat TCP-LISTEN:7070,fork,reuseaddr SYSTEM:'echo hello-out' >/dev/null 2>&1 &
        local op=$!; echo $op >>"$E2E_TMP/pids"
        for _ in $(seq 50); do nsenter --net="$NS-o" ss -ltn | grep -q ':7070 ' && break; sleep 0.1; done
        r "pod -> outside tcp" sh -c "nsenter --net='$NS-a' nc -w 2 192.0.2.2 7070 </dev/null | grep -q hello-out"
        kill $op 2>/dev/null; wait $op 2>/dev/null
        r "node -> pod ping" nsenter --net="$NS" ping -c1 -W2 "$ipa"
        if echo "$cap" | jq -e .portMappings >/dev/null; then
            nsenter --net="$NS-a" socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo hello-pod' >/dev/null 2>&1 &
            local sp=$!; echo $sp >>"$E2E_TMP/pids"
            for _ in $(seq 50); do nsenter --net="$NS-a" ss -ltn | grep -q ':80 ' && break; sleep 0.1; done
            r "host port from the node (192.0.2.1:18080)" sh -c "nsenter --net='$NS' nc -w 2 192.0.2.1 18080 </dev/null | grep -q hello-pod"
            r "host port from outside (192.0.2.1:18080)" sh -c "nsenter --net='$NS-o' nc -w 2 192.0.2.1 18080 </dev/null | grep -q hello-pod"
            kill $sp 2>/dev/null; wait $sp 2>/dev/null
        fi
        swapnet del x "$NS-a" >"$T/del.out" 2>&1 || echo "DEL FAIL" >>"$res"
    fi
    rm -rf /var/lib/cni/networks/"$netname"
    ip netns del "$N-o"; ip netns del "$N-a"; ip netns del "$N"
}

for f in "$here"/configs/*; do
    base=$(basename "$f"); base=${base%.*}
    c0=$(date +%s.%N)
    swap_run "$f" baseline "$S/refbin" "$S/refbin"
    swap_run "$f" a "$E2E_TMP/bin" "$S/refbin"
    swap_run "$f" b "$S/refbin" "$E2E_TMP/bin"
    B=$S/$base-baseline
    [ "$(cat "$B/add.rc")" = 0 ] || { fail "$base: the reference's own ADD fails: $(tail -2 "$B/add.err")"; continue; }
    for x in a b; do
        X=$S/$base-$x
        case $x in a) what="$base (a) cni-multi ADD, reference CHECK+DEL" ;; b) what="$base (b) reference ADD, cni-multi CHECK+DEL" ;; esac
        check "$what: ADD" [ "$(cat "$X/add.rc")" = 0 ]
        # The reference's CHECK of its own pod is the yardstick for its CHECK of ours (Debian's
        # 1.1.1 portmap CHECK fails on IPv6 pods it made itself: plugins#819).
        if [ "$(cat "$X/check.rc")" != skip ]; then
            if [ $x = b ] || [ "$(cat "$B/check.rc")" = 0 ]; then
                check "$what: CHECK" sh -c "[ $(cat "$X/check.rc") = 0 ] || { cat '$X/check.out'; false; }"
            else
                echo "  note $what: the reference's CHECK fails on its own pod too: $(tail -1 "$B/check.out")"
            fi
        fi
        check "$what: DEL" sh -c "[ $(cat "$X/del.rc") = 0 ] || { cat '$X/del.out'; false; }"
        check "$what: second DEL (no netns, no cache)" sh -c "[ $(cat "$X/del2.rc") = 0 ] || { cat '$X/del2.out'; false; }"
        # Residue: lines present after the swap and not after the reference's own ADD+DEL.
        check "$what: leaves nothing the reference's ADD+DEL would not" \
            sh -c "! diff '$B/state' '$X/state' | grep '^>'"
    done
    swap_traffic "$f" reference "$S/refbin"
    swap_traffic "$f" cni-multi "$E2E_TMP/bin"
    R=$S/$base-drop-reference/results M=$S/$base-drop-cni-multi/results
    while read -r line; do
        c=${line% *}; ref=${line##* }; ours=$(grep -F "$c " "$M" | tail -1); ours=${ours##* }
        if [ "$ref" = ok ]; then
            check "$base (c) FORWARD DROP after ADD: $c (the reference: ok)" [ "$ours" = ok ]
        elif [ "$ours" = ok ]; then
            pass "$base (c) FORWARD DROP after ADD: $c (the reference fails it)"
        else
            echo "  note $base (c) FORWARD DROP after ADD: $c fails with the reference too"
        fi
    done <"$R"
    printf '  time %s: %.1f s\n' "$base" "$(awk "BEGIN{print $(date +%s.%N) - $c0}")"
done
