#!/bin/sh
# cni-multi's vrf in the second kernel, the edges (split from vrf.sh to keep each test short
# under software emulation): concurrent ADDs into one pod, each a new VRF with an automatic
# table, never share a table; a default route over two interfaces (IPv4 and IPv6 ECMP)
# leaves only the enslaved interface's nexthop to the VRF and the other one to main.
. "$VMTEST_LIB"
T=$VMTEST_TMP
netns_add node
export NODE_NS=node
vrf_conf() { # VRFNAME [TABLE]
    echo "{\"cniVersion\":\"1.0.0\",\"name\":\"v\",\"type\":\"vrf\",\"vrfname\":\"$1\"${2:+,\"table\":$2}}"
}
master_is() { $IP -n "$1" link show "$2" | grep -q " master $3 " || { $IP -n "$1" link show "$2"; return 1; }; }
echo '{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"dns":{}}' > "$T/prev.json"

# Concurrent ADDs into one pod, each a new VRF with an automatic table: no two may share one.
# (The window between choosing and creating is short, so under one emulated CPU the retry
# after a clash is seldom taken; the outcome is what is checked.)
netns_add pod5
must dummies sh -c "for i in 1 2 3 4; do $IP -n pod5 link add d\$i type dummy && $IP -n pod5 link set d\$i up || exit 1; done"
for i in 1 2 3 4; do
    vrf_conf "c$i" > "$T/c$i.base"; with_prev "$T/c$i.base" "$T/prev.json" > "$T/c$i.json"
    CNI_CONTAINERID=pod5 cni vrf ADD pod5 "d$i" "$T/c$i.json" "$T/c$i.out" > "$T/c$i.log" 2>&1 &
done
wait
for i in 1 2 3 4; do check "concurrent-$i" master_is pod5 "d$i" "c$i"; done
check concurrent-tables-distinct sh -c "[ \$($IP -n pod5 -d link show type vrf | grep -o 'vrf table [0-9]*' | sort -u | wc -l) = 4 ]"
log "concurrent: $($IP -n pod5 -d link show type vrf | grep -o 'vrf table [0-9]*' | tr '\n' ' ')"

# A default route over two interfaces is one ECMP route (IPv6 merges a second network's
# default into it): only the enslaved one's nexthop moves into the VRF, main keeps the other.
netns_add pod6
must ecmp sh -c "$IP -n pod6 link add e1 type dummy && $IP -n pod6 link add e2 type dummy && $IP -n pod6 link set e1 up && $IP -n pod6 link set e2 up && $IP -n pod6 addr add 2001:db8::2/64 dev e1 nodad && $IP -n pod6 addr add 2001:db8:1::2/64 dev e2 nodad && $IP -n pod6 -6 route add default nexthop via 2001:db8::1 dev e1 nexthop via 2001:db8:1::1 dev e2 && $IP -n pod6 addr add 10.61.0.2/24 dev e1 && $IP -n pod6 addr add 10.62.0.2/24 dev e2 && $IP -n pod6 route add default nexthop via 10.61.0.1 dev e1 nexthop via 10.62.0.1 dev e2"
vrf_conf ev > "$T/ev.base"; with_prev "$T/ev.base" "$T/prev.json" > "$T/ev.json"
CNI_CONTAINERID=pod6 check ecmp-add cni vrf ADD pod6 e2 "$T/ev.json" "$T/ev.out"
check ecmp-moved    sh -c "$IP -n pod6 -6 route show table 1 | grep -q '^default via 2001:db8:1::1 dev e2'"
check ecmp4-moved   sh -c "$IP -n pod6 route show table 1 | grep -q '^default via 10.62.0.1 dev e2'"
ecmp_main() { # FAMILY-FLAG GW-LEFT
    _m=$($IP -n pod6 "$1" route show default); echo "$_m" | grep -q "via $2 dev e1" && ! echo "$_m" | grep -q e2 || { echo "$_m"; return 1; }
}
check ecmp-rest-in-main ecmp_main -6 2001:db8::1
check ecmp4-rest-in-main ecmp_main -4 10.61.0.1
log "ecmp: main: $($IP -n pod6 route show default; $IP -n pod6 -6 route show default | tr '\n\t' '  ') vrf: $($IP -n pod6 route show table 1 | grep default; $IP -n pod6 -6 route show table 1 | grep default)"

finish "vrf edges: concurrent ADDs get distinct tables; ECMP nexthops split between the VRF and main"
