#!/bin/sh
# Reference ipvlan (l2) + host-local in the second kernel: two pods on one parent in a node
# netns, ADD result shape, the ipvlan mode on the link, pod-to-pod traffic, CHECK, DEL.
# Baseline for comparison runs of our ipvlan plugin.
. "$VMTEST_LIB"

ref=$REF_BIN_DIR/ipvlan
must ref-present test -x "$ref" -a -x "$REF_BIN_DIR/host-local"

netns_add node; netns_add pod1; netns_add pod2
must parent sh -c "$IP -n node link add p0 type dummy && $IP -n node link set p0 up"

cat > "$VMTEST_TMP/c.json" <<JSON
{"cniVersion":"1.0.0","name":"ipvlan-ref","type":"ipvlan","master":"p0","mode":"l2",
 "ipam":{"type":"host-local","dataDir":"$VMTEST_TMP/ipam","subnet":"10.250.200.0/24"}}
JSON

export NODE_NS=node CNI_PATH="$REF_BIN_DIR"
CNI_CONTAINERID=pod1 must add1 cni "$ref" ADD pod1 eth0 "$VMTEST_TMP/c.json" "$VMTEST_TMP/r1.json"
CNI_CONTAINERID=pod2 must add2 cni "$ref" ADD pod2 eth0 "$VMTEST_TMP/c.json" "$VMTEST_TMP/r2.json"
r=$VMTEST_TMP/r1.json
log "ADD result: $(tr -d '\n ' < "$r")"

check shape      json_eq "$r" '[paths(scalars)|map(tostring)|join(".")]|sort|join(" ")' \
    'cniVersion interfaces.0.mac interfaces.0.name interfaces.0.sandbox ips.0.address ips.0.gateway ips.0.interface'
check ip         json_eq "$r" '.ips[0].address' 10.250.200.2/24
check mode       sh -c "$IP -n pod1 -d link show eth0 | grep -q 'ipvlan  *mode l2'"
check pod2-addr  has_addr pod2 eth0 10.250.200.3/24
check traffic    ping_from pod1 10.250.200.3
with_prev "$VMTEST_TMP/c.json" "$r" > "$VMTEST_TMP/p1.json"
with_prev "$VMTEST_TMP/c.json" "$VMTEST_TMP/r2.json" > "$VMTEST_TMP/p2.json"
CNI_CONTAINERID=pod1 check check1 cni "$ref" CHECK pod1 eth0 "$VMTEST_TMP/p1.json" "$VMTEST_TMP/k1.json"
CNI_CONTAINERID=pod1 check del1   cni "$ref" DEL pod1 eth0 "$VMTEST_TMP/p1.json" "$VMTEST_TMP/d1.json"
CNI_CONTAINERID=pod2 check del2   cni "$ref" DEL pod2 eth0 "$VMTEST_TMP/p2.json" "$VMTEST_TMP/d2.json"
check gone       link_absent pod1 eth0
check released   sh -c "! ls $VMTEST_TMP/ipam/ipvlan-ref/ | grep -q '^10\\.'"

finish "reference ipvlan l2+host-local: ADD/CHECK/DEL, result shape, pod1->pod2 traffic"
