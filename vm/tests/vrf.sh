#!/bin/sh
# cni-multi's vrf chained after its bridge plugin, in the second kernel (this host has no
# CONFIG_NET_VRF). Two bridges in a node netns, A (bra, 10.251.1.0/24 + fd51:1::/64) and B
# (brb, 10.251.2.0/24). A VRF lives in the pod's netns, so isolation is seen inside one pod:
#   pod1: eth0 on A in "red" (table auto: 1), net1 on B in "blue" (auto: 2)
#   pod2: eth0 on A in "red"            pod3: eth0 on B in "blue", table 100
#   pod4: eth0 and net1, both on A, in "green" (two slaves of one VRF)
# pod1 reaches pod2 only through red and pod3 only through blue, never across and never from
# the default VRF; pods in differently named VRFs on one bridge still talk (VRFs are per
# netns). Checked too: the ADD result is the prevResult, the ipam routes and the IPv6
# address survive the enslave (the route in the VRF table, the address with its local
# route), table conflict and already-enslaved errors change nothing, a failed enslave
# deletes the VRF it created, CHECK, DEL deletes the VRF only with its last slave, DEL twice
# and DEL of a vanished netns succeed. (Concurrent ADDs and ECMP routes: vrf-edge.sh.)
. "$VMTEST_LIB"
T=$VMTEST_TMP
netns_add node
for p in pod1 pod2 pod3 pod4; do netns_add "$p"; done
export NODE_NS=node
rejects() { ! cni "$@"; }

bridge_conf() { # NAME BRIDGE RANGES
    cat <<JSON
{"cniVersion":"1.0.0","name":"$1","type":"bridge","bridge":"$2",
 "ipam":{"type":"host-local","dataDir":"$T/ipam","ranges":$3,
         "routes":[{"dst":"10.99.0.0/16"},{"dst":"fd99::/32"}]}}
JSON
}
bridge_conf neta bra '[[{"subnet":"10.251.1.0/24"}],[{"subnet":"fd51:1::/64"}]]' > "$T/neta.json"
bridge_conf netb brb '[[{"subnet":"10.251.2.0/24"}]]' > "$T/netb.json"
vrf_conf() { # VRFNAME [TABLE]
    echo "{\"cniVersion\":\"1.0.0\",\"name\":\"v\",\"type\":\"vrf\",\"vrfname\":\"$1\"${2:+,\"table\":$2}}"
}
# attach POD IFNAME NET VRF [TABLE]: bridge ADD, then vrf ADD with its result as prevResult.
attach() {
    _b=$T/$1-$2-br.json _c=$T/$1-$2-vrf.conf
    CNI_CONTAINERID=$1 cni bridge ADD "$1" "$2" "$T/$3.json" "$_b" || return 1
    vrf_conf "$4" "$5" > "$T/$1-$2.base"
    with_prev "$T/$1-$2.base" "$_b" > "$_c"
    CNI_CONTAINERID=$1 cni vrf ADD "$1" "$2" "$_c" "$T/$1-$2-vrf.json"
}
addr_of() { json_get "$T/$1-$2-br.json" ".ips[] | select(.address | test(\"$3\")) | .address | sub(\"/.*\"; \"\")"; }
vrf_table_is() { $IP -n "$1" -d link show "$2" | grep -q "vrf table $3 " || { $IP -n "$1" -d link show "$2"; return 1; }; }
master_is() { $IP -n "$1" link show "$2" | grep -q " master $3 " || { $IP -n "$1" link show "$2"; return 1; }; }
no_master() { ! $IP -n "$1" link show "$2" | grep -q " master "; }
ping_vrf() { in_ns "$1" ping -c 1 -W 1 -I "$2" "$3" >/dev/null 2>&1 || in_ns "$1" ping -c 2 -W 1 -I "$2" "$3"; }
no_ping() { ! in_ns "$1" ping -c 1 -W 1 ${3:+-I "$3"} "$2"; }
# settled POD: no tentative IPv6 address left (DAD done), polled at most 50 times.
settled() {
    for _i in $(seq 50); do
        $IP -n "$1" -6 addr show | grep -q tentative || return 0
        sleep 0.1
    done
    $IP -n "$1" -6 addr show; return 1
}

must pod1-eth0 attach pod1 eth0 neta red
must pod1-net1 attach pod1 net1 netb blue
must pod2-eth0 attach pod2 eth0 neta red
must pod3-eth0 attach pod3 eth0 netb blue 100
must pod4-eth0 attach pod4 eth0 neta green
must pod4-net1 attach pod4 net1 neta green
p1a=$(addr_of pod1 eth0 '^10[.]') p1a6=$(addr_of pod1 eth0 :) p2=$(addr_of pod2 eth0 '^10[.]')
p2v6=$(addr_of pod2 eth0 :) p3=$(addr_of pod3 eth0 '^10[.]') p4=$(addr_of pod4 eth0 '^10[.]')
log "pod1 $p1a $p1a6, pod2 $p2 $p2v6, pod3 $p3, pod4 $p4"

check result-is-prev sh -c "[ \"\$($JQ -cS . $T/pod1-eth0-br.json)\" = \"\$($JQ -cS . $T/pod1-eth0-vrf.json)\" ]"
check table-auto-1  vrf_table_is pod1 red 1
check table-auto-2  vrf_table_is pod1 blue 2
check table-auto-pod2 vrf_table_is pod2 red 1
check table-given   vrf_table_is pod3 blue 100
check vrf-up        link_up pod1 red
check enslaved      master_is pod1 eth0 red
check enslaved-net1 master_is pod1 net1 blue
two_slaves() { master_is pod4 eth0 green && master_is pod4 net1 green; }
check two-slaves    two_slaves
check one-green     sh -c "[ \$($IP -n pod4 -o link show type vrf | wc -l) = 1 ]"
# The enslave cycles the link: what the kernel drops must be back, in the VRF's table.
check route-moved   sh -c "$IP -n pod1 route show vrf red | grep -q '^10.99.0.0/16 via 10.251.1.1 dev eth0'"
check route6-moved  sh -c "$IP -n pod1 -6 route show vrf red | grep -q '^fd99::/32 via fd51:1::1 dev eth0'"
check connected-in-vrf sh -c "$IP -n pod1 route show vrf red | grep -q '^10.251.1.0/24 dev eth0 proto kernel'"
check main-empty    sh -c "! $IP -n pod1 route show | grep -q . && ! $IP -n pod1 -6 route show | grep -Eq 'eth0|net1'"
check v6-restored   has_addr pod1 eth0 "$p1a6/64"
# (`ip route show vrf` hides local routes; `table` shows them.)
check v6-local-route sh -c "$IP -n pod1 -6 route show table 1 | grep -q '^local $p1a6 dev eth0'"

for p in pod1 pod2 pod3 pod4; do check "dad-$p" settled "$p"; done
check in-red        ping_vrf pod1 red "$p2"
check in-blue       ping_vrf pod1 blue "$p3"
check in-red-v6     ping_vrf pod1 red "$p2v6"
check not-red-to-B  no_ping pod1 "$p3" red
check not-blue-to-A no_ping pod1 "$p2" blue
check not-default   no_ping pod1 "$p2"
check green-to-red  ping_vrf pod4 green "$p2"

# Errors change nothing.
must net2 sh -c "$IP -n pod1 link add net2 type veth peer name net2p && $IP -n pod1 link set net2 up"
vrf_conf red 7 > "$T/conflict.base"; with_prev "$T/conflict.base" "$T/pod1-eth0-br.json" > "$T/conflict.json"
check conflict-fails rejects vrf ADD pod1 net2 "$T/conflict.json" "$T/conflict.out"
check conflict-msg  json_eq "$T/conflict.out" .msg "cmdAdd failed: VRF red already exist with different routing table 1"
check conflict-code json_eq "$T/conflict.out" .code 7
untouched() { no_master pod1 net2 && vrf_table_is pod1 red 1; }
check conflict-untouched untouched
must pbr sh -c "$IP -n pod3 link add pbr type bridge && $IP -n pod3 link add d0 type veth peer name d0p && $IP -n pod3 link set d0 master pbr"
vrf_conf xvrf > "$T/x.base"; with_prev "$T/x.base" "$T/pod3-eth0-br.json" > "$T/x.json"
check has-master-fails rejects vrf ADD pod3 d0 "$T/x.json" "$T/x.out"
check has-master-msg sh -c "$JQ -r .msg $T/x.out | grep -q 'interface d0 has already a master set: pbr'"
check has-master-no-vrf link_absent pod3 xvrf
# A VRF cannot be enslaved to a VRF: the enslave fails after "newv" was created, so it goes.
vrf_conf newv > "$T/n.base"; with_prev "$T/n.base" "$T/pod1-eth0-br.json" > "$T/n.json"
check enslave-fails rejects vrf ADD pod1 blue "$T/n.json" "$T/n.out"
check created-vrf-deleted link_absent pod1 newv
log "enslave failure: $(cat "$T/n.out" | tr -d '\n')"

# CHECK
check check-ok cni vrf CHECK pod1 eth0 "$T/pod1-eth0-vrf.conf" "$T/k1.out"
vrf_conf blue > "$T/wrong.base"; with_prev "$T/wrong.base" "$T/pod1-eth0-br.json" > "$T/wrong.json"
check check-wrong-vrf rejects vrf CHECK pod1 eth0 "$T/wrong.json" "$T/k2.out"

# DEL: the VRF goes with its last slave only.
CNI_CONTAINERID=pod4 check del-first cni vrf DEL pod4 eth0 "$T/pod4-eth0-vrf.conf" "$T/d1.out"
green_stays() { link_up pod4 green && master_is pod4 net1 green && no_master pod4 eth0; }
check green-stays   green_stays
CNI_CONTAINERID=pod4 check del-last cni vrf DEL pod4 net1 "$T/pod4-net1-vrf.conf" "$T/d2.out"
check green-gone    link_absent pod4 green
released() { no_master pod4 net1 && link_up pod4 net1; }
check net1-released released
CNI_CONTAINERID=pod4 check del-again cni vrf DEL pod4 net1 "$T/pod4-net1-vrf.conf" "$T/d3.out"
CNI_CONTAINERID=pod1 check del-pod1-eth0 cni vrf DEL pod1 eth0 "$T/pod1-eth0-vrf.conf" "$T/d4.out"
red_gone() { link_absent pod1 red && master_is pod1 net1 blue; }
check red-gone-blue-stays red_gone
check del-no-netns  cni vrf DEL /run/netns/vanished eth0 "$T/pod1-eth0-vrf.conf" "$T/d5.out"
check del-no-iface  cni vrf DEL pod2 nosuch "$T/pod2-eth0-vrf.conf" "$T/d6.out"
check red-kept-pod2 master_is pod2 eth0 red
finish "vrf after bridge: isolation in and across VRFs, tables auto/given, routes+IPv6 kept, errors clean, DEL with the last slave"
