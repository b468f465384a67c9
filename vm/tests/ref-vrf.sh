#!/bin/sh
# cni-multi's vrf next to the reference (Debian 1.1.1) in the second kernel, on two identical
# pods (ours: oa, ref: ra) whose eth0 is a veth into a node netns with 10.252.0.2/24 +
# fd52::2/64 (no DAD), a route 10.10.10.0/24 via 10.252.0.1 and 1111:dddd::/80 via fd52::1:
# the same ADD result, the same VRF device and slave (`ip -d link`, indexes and MACs aside),
# the same kernel routes in the VRF table (`ip route show vrf`) and the same IPv6 address
# back. Ours also copies the two routes into the VRF table (upstream does since v1.3;
# 1.1.1 loses them): that difference is asserted, not hidden. Then a second pod interface
# in the same VRF, the table conflict error text, CHECK and DEL twice on both sides.
. "$VMTEST_LIB"
T=$VMTEST_TMP
ours=$CNI_BIN_DIR/vrf ref=$REF_BIN_DIR/vrf
must ref-present test -x "$ref"
netns_add node
export NODE_NS=node

# pod NS PEER: eth0 (and net1, not enslaved yet) as a main plugin would leave them.
pod() {
    netns_add "$1" || return 1
    $IP -n node link add "$2" type veth peer name eth0 netns "$1" &&
        $IP -n node link add "$2b" type veth peer name net1 netns "$1" &&
        $IP -n node link set "$2" up && $IP -n node link set "$2b" up &&
        $IP -n "$1" addr add 10.252.0.2/24 dev eth0 &&
        $IP -n "$1" addr add fd52::2/64 dev eth0 nodad &&
        $IP -n "$1" addr add 10.253.0.2/24 dev net1 &&
        $IP -n "$1" link set eth0 up && $IP -n "$1" link set net1 up &&
        $IP -n "$1" route add 10.10.10.0/24 via 10.252.0.1 dev eth0 &&
        $IP -n "$1" -6 route add 1111:dddd::/80 via fd52::1 dev eth0
}
pod oa vo || fail "pod oa"
pod ra vr || fail "pod ra"

prev() { # POD
    cat <<JSON
{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","sandbox":"/run/netns/$1"}],
 "ips":[{"address":"10.252.0.2/24","gateway":"10.252.0.1","interface":0},
        {"address":"fd52::2/64","gateway":"fd52::1","interface":0}],
 "routes":[{"dst":"10.10.10.0/24","gw":"10.252.0.1"},{"dst":"1111:dddd::/80","gw":"fd52::1"}],"dns":{}}
JSON
}
conf() { # POD VRF [TABLE]
    echo "{\"cniVersion\":\"1.0.0\",\"name\":\"v\",\"type\":\"vrf\",\"vrfname\":\"$2\"${3:+,\"table\":$3},\"prevResult\":$(prev "$1")}"
}
conf oa red > "$T/oa.json"; conf ra red > "$T/ra.json"
CNI_CONTAINERID=oa must ours-add cni "$ours" ADD oa eth0 "$T/oa.json" "$T/oa.out"
CNI_CONTAINERID=ra must ref-add cni "$ref" ADD ra eth0 "$T/ra.json" "$T/ra.out"
log "ours: $(tr -d ' \n' < "$T/oa.out")"
log "ref:  $(tr -d ' \n' < "$T/ra.out")"

# The reference re-adds the IPv6 address without waiting for its local route: wait here
# (bounded) before comparing routes.
local_back() {
    for _i in $(seq 50); do
        $IP -n "$1" -6 route show table 1 | grep -q '^local fd52::2 ' && return 0
        sleep 0.1
    done
    $IP -n "$1" -6 route show table 1; return 1
}
check ours-local-route local_back oa
check ref-local-route local_back ra

same() { # A B: equal, or print both
    [ "$1" = "$2" ] || { echo "ours: $1"; echo "ref:  $2"; return 1; }
}
norm_link='.[0] | del(.ifindex, .address, .broadcast, .link_index, .link_netnsid, .link, .inet6_addr_gen_mode)'
link_of() { $IP -n "$1" -d -j link show "$2" | $JQ -cS "$norm_link"; }
# `ip route show vrf` hides local and broadcast routes: the table shows everything (the
# link-local address follows the random MAC).
kroutes() { { $IP -n "$1" route show table 1; $IP -n "$1" -6 route show table 1; } | grep 'proto kernel' | sed 's/^local fe80::[0-9a-f:]* /local fe80::LL /' | sort; }
userroutes() { { $IP -n "$1" route show vrf red; $IP -n "$1" -6 route show vrf red; } | grep -v 'proto kernel' | sort | tr '\n' ';'; }
v6addrs() { $IP -n "$1" -6 -o addr show dev eth0 scope global | awk '{print $4}' | sort | tr '\n' ' '; }

norm_res='.interfaces[0].sandbox = "NS"'
check same-result  same "$($JQ -cS "$norm_res" "$T/oa.out")" "$($JQ -cS "$norm_res" "$T/ra.out")"
check result-is-prev same "$($JQ -cS "$norm_res" "$T/oa.out")" "$(prev oa | $JQ -cS "$norm_res")"
check same-vrf-link same "$(link_of oa red)" "$(link_of ra red)"
check same-slave   same "$(link_of oa eth0)" "$(link_of ra eth0)"
check table-1      sh -c "$IP -n oa -d link show red | grep -q 'vrf table 1 '"
check same-kernel-routes same "$(kroutes oa)" "$(kroutes ra)"
check same-v6-addr same "$(v6addrs oa)" "$(v6addrs ra)"
check v6-addr      same "$(v6addrs oa)" "fd52::2/64 "
log "ours' own routes in red: $(userroutes oa)"
log "ref's own routes in red: $(userroutes ra)"
check ours-copied  same "$(userroutes oa)" "10.10.10.0/24 via 10.252.0.1 dev eth0 ;1111:dddd::/80 via fd52::1 dev eth0 metric 1024 pref medium;"
check ref-lost     same "$(userroutes ra)" ""

# A second interface into the same VRF; then the conflict error.
conf oa red > "$T/oa2.json"; conf ra red > "$T/ra2.json"
CNI_CONTAINERID=oa check ours-add2 cni "$ours" ADD oa net1 "$T/oa2.json" "$T/oa2.out"
CNI_CONTAINERID=ra check ref-add2  cni "$ref" ADD ra net1 "$T/ra2.json" "$T/ra2.out"
check same-slave2  same "$(link_of oa net1)" "$(link_of ra net1)"
conf oa red 5 > "$T/oa3.json"; conf ra red 5 > "$T/ra3.json"
$IP -n oa link add net2 type dummy 2>/dev/null || $IP -n oa link add net2 type veth peer name net2p
$IP -n ra link add net2 type dummy 2>/dev/null || $IP -n ra link add net2 type veth peer name net2p
CNI_CONTAINERID=oa cni "$ours" ADD oa net2 "$T/oa3.json" "$T/oa3.out" >/dev/null
CNI_CONTAINERID=ra cni "$ref" ADD ra net2 "$T/ra3.json" "$T/ra3.out" >/dev/null
log "conflict: ours $(tr -d '\n' < "$T/oa3.out"), ref $(tr -d '\n' < "$T/ra3.out")"
check same-conflict-msg same "$(json_get "$T/oa3.out" .msg)" "$(json_get "$T/ra3.out" .msg)"

for s in oa ra; do
    p=$ours; [ "$s" = ra ] && p=$ref
    CNI_CONTAINERID=$s check "$s-check" cni "$p" CHECK "$s" eth0 "$T/$s.json" "$T/$s.k"
    CNI_CONTAINERID=$s check "$s-del-eth0" cni "$p" DEL "$s" eth0 "$T/$s.json" "$T/$s.d1"
    CNI_CONTAINERID=$s check "$s-del-net1" cni "$p" DEL "$s" net1 "$T/$s.json" "$T/$s.d2"
    CNI_CONTAINERID=$s check "$s-del-again" cni "$p" DEL "$s" net1 "$T/$s.json" "$T/$s.d3"
    check "$s-vrf-gone" link_absent "$s" red
done
check same-after-del same "$(link_of oa eth0)" "$(link_of ra eth0)"
finish "vrf = reference 1.1.1 (result, ip -d link, kernel routes, IPv6 restore, conflict text, DEL); ours also keeps the routes"
