#!/bin/sh
# cni-multi's vrf in the second kernel, the edges (split from vrf.sh to keep each test short
# under software emulation): concurrent ADDs into one pod, each a new VRF with an automatic
# table, never share a table; a default route over two interfaces (IPv4 and IPv6 ECMP)
# leaves only the enslaved interface's nexthop to the VRF and the other one to main; an
# onlink route stays onlink; a failure after the enslave is rolled back completely.
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

# An onlink route keeps its flag in the VRF's table.
netns_add pod7
must onlink sh -c "$IP -n pod7 link add o1 type dummy && $IP -n pod7 link set o1 up && $IP -n pod7 addr add 10.71.0.2/24 dev o1 && $IP -n pod7 route add 10.20.0.0/16 via 10.9.9.9 dev o1 onlink"
vrf_conf ov > "$T/ov.base"; with_prev "$T/ov.base" "$T/prev.json" > "$T/ov.json"
CNI_CONTAINERID=pod7 check onlink-add cni vrf ADD pod7 o1 "$T/ov.json" "$T/ov.out"
check onlink-kept sh -c "$IP -n pod7 route show table 1 | grep -q '^10.20.0.0/16 via 10.9.9.9 dev o1 onlink'"

# A gateway reached through a static link-scope route (Calico's shape): both routes move.
netns_add pod9
must linkscope sh -c "$IP -n pod9 link add k1 type dummy && $IP -n pod9 link set k1 up && $IP -n pod9 addr add 10.91.0.2/32 dev k1 && $IP -n pod9 route add 169.254.1.1 dev k1 scope link && $IP -n pod9 route add default via 169.254.1.1 dev k1"
vrf_conf kv > "$T/kv.base"; with_prev "$T/kv.base" "$T/prev.json" > "$T/kv.json"
CNI_CONTAINERID=pod9 check linkscope-add cni vrf ADD pod9 k1 "$T/kv.json" "$T/kv.out"
check linkscope-moved sh -c "$IP -n pod9 route show table 1 | grep -q '^169.254.1.1 dev k1 scope link' && $IP -n pod9 route show table 1 | grep -q '^default via 169.254.1.1 dev k1'"

# A route the VRF's table refuses (its IPv6 preferred source is on an interface outside the
# VRF) fails the ADD after the enslave: the rollback releases the interface, deletes the VRF
# it made and puts the addresses and routes back in main.
netns_add pod8
must prefsrc sh -c "$IP -n pod8 link add r1 type dummy && $IP -n pod8 link add r2 type dummy && $IP -n pod8 link set r1 up && $IP -n pod8 link set r2 up && $IP -n pod8 addr add 10.81.0.2/24 dev r1 && $IP -n pod8 addr add fd81::2/64 dev r1 nodad && $IP -n pod8 addr add fd82::2/64 dev r2 nodad && $IP -n pod8 route add 10.30.0.0/16 via 10.81.0.1 dev r1 && $IP -n pod8 -6 route add 1111::/64 via fd81::1 dev r1 src fd82::2"
state8() { $IP -n pod8 route show; $IP -n pod8 -6 route show | grep -v -e fe80 -e 'proto kernel'; $IP -n pod8 -6 addr show dev r1 scope global | grep inet6; }
before=$(state8)
vrf_conf rb > "$T/rb.base"; with_prev "$T/rb.base" "$T/prev.json" > "$T/rb.json"
CNI_CONTAINERID=pod8 cni vrf ADD pod8 r1 "$T/rb.json" "$T/rb.out" >/dev/null
log "failed ADD: $(tr -d '\n' < "$T/rb.out")"
check rollback-failed json_true "$T/rb.out" '.code == 999 and (.msg | test("could not copy a route of r1 into VRF rb"))'
check rollback-no-vrf link_absent pod8 rb
check rollback-released sh -c "! $IP -n pod8 link show r1 | grep -q master"
after_state() { _a=$(state8); [ "$_a" = "$before" ] || { echo "before: $before"; echo "after:  $_a"; return 1; }; }
check rollback-restored after_state

finish "vrf edges: concurrent ADDs get distinct tables; ECMP nexthops split between the VRF and main; onlink kept; link-scope gateway routes moved; failed copy rolled back"
