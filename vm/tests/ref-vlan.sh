#!/bin/sh
# The Debian reference plugins run in the second kernel: reference vlan + host-local ADD /
# CHECK / DEL from a node netns into two pod netns, the ADD result's shape, 802.1Q id on the
# link, and traffic between the two pods over the VLAN (tagged frames across a veth pair).
# This is the baseline later comparison runs of our vlan plugin use.
. "$VMTEST_LIB"

ref=$REF_BIN_DIR/vlan
must ref-present test -x "$ref" -a -x "$REF_BIN_DIR/host-local"

netns_add node; netns_add pod1; netns_add pod2
must masters sh -c "$IP -n node link add m0 type veth peer name m1 && $IP -n node link set m0 up && $IP -n node link set m1 up"

mkconf() { # MASTER
    cat <<JSON
{"cniVersion":"1.0.0","name":"vlan-ref","type":"vlan","master":"$1","vlanId":100,
 "ipam":{"type":"host-local","dataDir":"$VMTEST_TMP/ipam","subnet":"10.250.100.0/24","routes":[{"dst":"0.0.0.0/0"}]}}
JSON
}
mkconf m0 > "$VMTEST_TMP/c1.json"; mkconf m1 > "$VMTEST_TMP/c2.json"

export NODE_NS=node CNI_PATH="$REF_BIN_DIR"
CNI_CONTAINERID=pod1 must add1 cni "$ref" ADD pod1 eth0 "$VMTEST_TMP/c1.json" "$VMTEST_TMP/r1.json"
CNI_CONTAINERID=pod2 must add2 cni "$ref" ADD pod2 eth0 "$VMTEST_TMP/c2.json" "$VMTEST_TMP/r2.json"
log "ADD result: $(tr -d '\n ' < "$VMTEST_TMP/r1.json")"
log "shape: $(json_shape "$VMTEST_TMP/r1.json")"

r=$VMTEST_TMP/r1.json
# The reference's result shape for vlan (cniVersion 1.0.0), as containernetworking-plugins
# 1.1.1 prints it: one container interface (no mtu key), one IP, the route, an empty dns.
check shape      json_eq "$r" '[paths(scalars)|map(tostring)|join(".")]|sort|join(" ")' \
    'cniVersion interfaces.0.mac interfaces.0.name interfaces.0.sandbox ips.0.address ips.0.gateway ips.0.interface routes.0.dst'
check dns-empty  json_eq "$r" '.dns' '{}'
check version    json_eq "$r" .cniVersion 1.0.0
check if-name    json_eq "$r" '.interfaces[0].name' eth0
check if-sandbox json_eq "$r" '.interfaces[0].sandbox' /run/netns/pod1
check ip         json_eq "$r" '.ips[0].address' 10.250.100.2/24
check ip-gw      json_eq "$r" '.ips[0].gateway' 10.250.100.1
check ip-if      json_eq "$r" '.ips[0].interface' 0
check mac        sh -c "[ \"\$($IP -n pod1 link show eth0 | awk '/link\\/ether/{print \$2}')\" = \"\$(jq -r '.interfaces[0].mac' $r)\" ]"
check vlan-id    sh -c "$IP -n pod1 -d link show eth0 | grep -q 'vlan protocol 802.1Q id 100'"
check pod1-addr  has_addr pod1 eth0 10.250.100.2/24
check pod2-addr  has_addr pod2 eth0 10.250.100.3/24
check traffic    ping_from pod1 10.250.100.3
with_prev "$VMTEST_TMP/c1.json" "$VMTEST_TMP/r1.json" > "$VMTEST_TMP/p1.json"
with_prev "$VMTEST_TMP/c2.json" "$VMTEST_TMP/r2.json" > "$VMTEST_TMP/p2.json"
CNI_CONTAINERID=pod1 check check1 cni "$ref" CHECK pod1 eth0 "$VMTEST_TMP/p1.json" "$VMTEST_TMP/k1.json"
CNI_CONTAINERID=pod1 check del1   cni "$ref" DEL pod1 eth0 "$VMTEST_TMP/p1.json" "$VMTEST_TMP/d1.json"
CNI_CONTAINERID=pod2 check del2   cni "$ref" DEL pod2 eth0 "$VMTEST_TMP/p2.json" "$VMTEST_TMP/d2.json"
check del-again  cni "$ref" DEL pod1 eth0 "$VMTEST_TMP/p1.json" "$VMTEST_TMP/d3.json"
check gone       link_absent pod1 eth0
check released   sh -c "! ls $VMTEST_TMP/ipam/vlan-ref/ | grep -q '^10\\.'"

finish "reference vlan+host-local: ADD/CHECK/DEL, result shape, VLAN 100 traffic pod1->pod2"
