#!/bin/sh
# cni-multi's vlan in the second kernel: ADD/CHECK/DEL into two pods on a veth pair of
# parents, result shape equal to the reference's, VLAN traffic pod1 -> pod2, DEL after the
# master vanished, rejected configs leave nothing.
. "$VMTEST_LIB"
netns_add node; netns_add pod1; netns_add pod2; netns_add rpod
must masters sh -c "$IP -n node link add m0 type veth peer name m1 && $IP -n node link set m0 up && $IP -n node link set m1 up && $IP -n node link add m2 type veth peer name m3 && $IP -n node link set m2 up && $IP -n node link set m3 up"
rejects() { ! cni "$@"; }
mkconf() { # MASTER DATADIR
    cat <<JSON
{"cniVersion":"1.0.0","name":"vl","type":"vlan","master":"$1","vlanId":100,"mtu":1400,
 "ipam":{"type":"host-local","dataDir":"$2","subnet":"10.250.101.0/24","routes":[{"dst":"0.0.0.0/0"}]}}
JSON
}
T=$VMTEST_TMP
mkconf m0 "$T/ipam" > "$T/c1.json"; mkconf m1 "$T/ipam" > "$T/c2.json"; mkconf m2 "$T/refipam" > "$T/rc.json"
export NODE_NS=node
CNI_CONTAINERID=pod1 must add1 cni vlan ADD pod1 eth0 "$T/c1.json" "$T/r1.json"
CNI_CONTAINERID=pod2 must add2 cni vlan ADD pod2 eth0 "$T/c2.json" "$T/r2.json"
check vlan-id   sh -c "$IP -n pod1 -d link show eth0 | grep -q 'vlan protocol 802.1Q id 100'"
check mtu       sh -c "$IP -n pod1 link show eth0 | grep -q 'mtu 1400'"
check addr      has_addr pod1 eth0 10.250.101.2/24
check traffic   ping_from pod1 10.250.101.3
norm='del(.interfaces[0].mac) | .interfaces[0].sandbox = "NS" | del(.dns)'
if have_ref; then
    CNI_CONTAINERID=rpod CNI_PATH=$REF_BIN_DIR must ref-add cni "$REF_BIN_DIR/vlan" ADD rpod eth0 "$T/rc.json" "$T/rr.json"
    check same-as-ref sh -c "[ \"\$($JQ -c '$norm' $T/r1.json)\" = \"\$($JQ -c '$norm' $T/rr.json)\" ]"
fi
with_prev "$T/c1.json" "$T/r1.json" > "$T/p1.json"
CNI_CONTAINERID=pod1 check check cni vlan CHECK pod1 eth0 "$T/p1.json" "$T/k1.json"
CNI_CONTAINERID=pod1 check del1 cni vlan DEL pod1 eth0 "$T/p1.json" "$T/d1.json"
CNI_CONTAINERID=pod1 check del1-again cni vlan DEL pod1 eth0 "$T/p1.json" "$T/d1b.json"
check gone      link_absent pod1 eth0
# Better than the reference: DEL succeeds with the master gone.
must rm-master $IP -n node link del m1
CNI_CONTAINERID=pod2 check del-no-master cni vlan DEL pod2 eth0 "$T/c2.json" "$T/d2.json"
check released  sh -c "! ls $T/ipam/vl/ | grep -q '^10\\.'"
for bad in '"vlanId":4095' '"mtu":9000' '"master":"nope"'; do
    $JQ ". + {$bad}" "$T/c1.json" > "$T/bad.json"
    check "rejects $bad" rejects vlan ADD pod1 eth0 "$T/bad.json" "$T/bad.out"
done
check nothing-left sh -c "[ \"\$($IP -n pod1 -o link | wc -l)\" = 1 ]"
finish "vlan ADD/CHECK/DEL$(ref_note ", shape = reference"), VLAN traffic, DEL without master, rejections"
