#!/bin/sh
# Smoke test: the second kernel has what this machine's kernel lacks (dummy, 802.1Q vlan,
# ipvlan, vrf, bridge VLAN filtering), plus veth and macvlan, inside a fresh netns.
. "$VMTEST_LIB"

netns_add k
ipk() { $IP -n k "$@"; }

check dummy        ipk link add d0 type dummy
check veth         ipk link add p0 type veth peer name p1
check vlan         ipk link add link d0 name d0.100 type vlan id 100
check vlan-dup     sh -c "! $IP -n k link add link d0 name d0.x type vlan id 100"   # same id, same parent: EEXIST
check vlan-id      sh -c "ipid=\$($IP -n k -d link show d0.100 | grep -o 'vlan protocol 802.1Q id 100'); [ -n \"\$ipid\" ]"
check ipvlan-l2    ipk link add link p0 name iv0 type ipvlan mode l2
check ipvlan-l3    ipk link add link p0 name iv1 type ipvlan mode l3
check ipvlan-l3s   ipk link add link p0 name iv2 type ipvlan mode l3s
check macvlan      ipk link add link p1 name mv0 type macvlan mode bridge
check vrf          ipk link add vrf-red type vrf table 10
check vrf-enslave  ipk link set d0 master vrf-red
check bridge-vlan  ipk link add br0 type bridge vlan_filtering 1
check bridge-vid   sh -c "$IP -n k link add d1 type dummy && $IP -n k link set d1 master br0 && $IP netns exec k $BRIDGE vlan add dev d1 vid 42 && $IP netns exec k $BRIDGE vlan show dev d1 | grep -qw 42"
check links-up     sh -c "for l in d0 d0.100 p0 p1 iv0 mv0 vrf-red br0; do $IP -n k link set \$l up || exit 1; done"

finish "dummy vlan ipvlan(l2,l3,l3s) macvlan vrf bridge-vlan-filtering veth"
