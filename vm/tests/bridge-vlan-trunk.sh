#!/bin/sh
# bridge `vlanTrunk` in the second kernel, on a bridge "brt" the plugin creates in netns node,
# as upstream v1.9 sets a port up (bridge.go v1.9.1, setupVeth lines 457-485: VLANs removed
# unless preserveDefaultVlan, `vlan` PVID untagged, the trunk tagged, and VLAN 1 PVID untagged
# as the native VLAN of a trunk without `vlan`):
#   t1: vlanTrunk [{"id":101},{"minID":200,"maxID":202}]   -> 1 PVID untagged + 101 200-202 tagged
#   t2: the same with preserveDefaultVlan true              -> the same (VLAN 1 kept, then re-added)
#   n5: the same with vlan 5 (the trunk's native VLAN)      -> 5 PVID untagged + the trunk, no VLAN 1
#   a:  vlan 101 (access port, another subnet)   a5: vlan 5 (access port, n5's subnet)
# Untagged traffic: t1 <-> t2 on native VLAN 1 (dropped before v1.8.0 with preserveDefaultVlan
# false), n5 <-> a5 on native VLAN 5. Tagged: t1's eth0.101 reaches a; t1.201 <-> t2.201 over
# the trunk; VLAN 300 (not in the trunk) does not pass. CHECK after ADD, DEL twice. The
# reference (Debian's 1.1.1) predates vlanTrunk and ignores the key: only its result is
# compared (same shape and values but MACs/veth name), its port VLANs are logged.
. "$VMTEST_LIB"
T=$VMTEST_TMP
ours=$CNI_BIN_DIR/bridge ref=$REF_BIN_DIR/bridge
need_ref_or_ours_only
netns_add node; netns_add t1; netns_add t2; netns_add a; netns_add rnode; netns_add rt1

trunk='"vlanTrunk":[{"id":101},{"minID":200,"maxID":202}]'
mkconf() { # DATADIR NAME SUBNET KEYS
    cat <<JSON
{"cniVersion":"1.0.0","name":"$2","type":"bridge","bridge":"brt",$4,
 "ipam":{"type":"host-local","dataDir":"$1","subnet":"$3"}}
JSON
}
mkconf "$T/ipam" brt 10.250.140.0/24 "$trunk" > "$T/ct.json"
mkconf "$T/ipam" brt 10.250.140.0/24 "$trunk,\"preserveDefaultVlan\":true" > "$T/ct2.json"
mkconf "$T/ipam" brt101 10.250.141.0/24 '"vlan":101' > "$T/ca.json"
mkconf "$T/ipam" brt5 10.250.145.0/24 "$trunk,\"vlan\":5" > "$T/cn5.json"
mkconf "$T/ipam" brt5 10.250.145.0/24 '"vlan":5' > "$T/ca5.json"
mkconf "$T/ripam" brt 10.250.140.0/24 "$trunk" > "$T/rct.json"

# add PLUGIN POD CONF: ADD then CHECK at once (the reference's bridge MAC is not pinned
# without an address: a later port can change it).
add() {
    CNI_CONTAINERID=$2 must "add-$2" cni "$1" ADD "$2" eth0 "$3" "$T/$2.json"
    with_prev "$3" "$T/$2.json" > "$T/p$2.json"
    CNI_CONTAINERID=$2 check "check-$2" cni "$1" CHECK "$2" eth0 "$T/p$2.json" "$T/k$2.out"
}
hv() { json_get "$T/$1.json" '.interfaces[1].name'; }
# vlan_if POD VID ADDR: a VLAN sub-interface eth0.VID with ADDR/24 in the pod.
vlan_if() {
    $IP -n "$1" link add link eth0 name "eth0.$2" type vlan id "$2" &&
        $IP -n "$1" addr add "$3/24" dev "eth0.$2" && $IP -n "$1" link set "eth0.$2" up
}

export NODE_NS=node
netns_add n5; netns_add a5
add "$ours" t1 "$T/ct.json"
add "$ours" t2 "$T/ct2.json"
add "$ours" a "$T/ca.json"
add "$ours" n5 "$T/cn5.json"
add "$ours" a5 "$T/ca5.json"
check vlan-filtering vlan_filtering node brt
check t1-vlans   port_vlans_are node "$(hv t1)" "1PU 101 200 201 202"
check t2-vlans   port_vlans_are node "$(hv t2)" "1PU 101 200 201 202"
check n5-vlans   port_vlans_are node "$(hv n5)" "5PU 101 200 201 202"
check a-vlans    port_vlans_are node "$(hv a)" "101PU"
check a5-vlans   port_vlans_are node "$(hv a5)" "5PU"
check t1-ip      json_eq "$T/t1.json" '.ips[0].address' 10.250.140.2/24
check native-1   ping_from t1 "$(json_get "$T/t2.json" '.ips[0].address' | cut -d/ -f1)"
check native-5   ping_from n5 "$(json_get "$T/a5.json" '.ips[0].address' | cut -d/ -f1)"
check 1-not-5    sh -c "! $IP netns exec t1 ping -c 2 -W 1 $(json_get "$T/a5.json" '.ips[0].address' | cut -d/ -f1)"
must  t1-vlan101 vlan_if t1 101 10.250.141.200
check trunk-to-access ping_from t1 10.250.141.2
must  t1-vlan201 vlan_if t1 201 10.250.144.1
must  t2-vlan201 vlan_if t2 201 10.250.144.2
check trunk-to-trunk  ping_from t1 10.250.144.2
must  t1-vlan300 vlan_if t1 300 10.250.143.1
must  t2-vlan300 vlan_if t2 300 10.250.143.2
check vlan300-dropped sh -c "! $IP netns exec t1 ping -c 2 -W 1 10.250.143.2"

t1_veth=$(hv t1)
CNI_CONTAINERID=t1 check del       cni "$ours" DEL t1 eth0 "$T/pt1.json" "$T/d1.out"
CNI_CONTAINERID=t1 check del-again cni "$ours" DEL t1 eth0 "$T/pt1.json" "$T/d2.out"
check gone      link_absent t1 eth0
check veth-gone link_absent node "$t1_veth"
check released  sh -c "[ ! -e $T/ipam/brt/10.250.140.2 ]"
check t2-still  port_vlans_are node "$(hv t2)" "1PU 101 200 201 202"

if have_ref; then
    export NODE_NS=rnode CNI_PATH=$REF_BIN_DIR
    add "$ref" rt1 "$T/rct.json"
    log "reference port vlans with vlanTrunk: [$(port_vlans rnode "$(hv rt1)")] (1.1.1 has no vlanTrunk)"
    check same-as-ref same_result "$T/t1.json" "$T/rt1.json"
    CNI_CONTAINERID=rt1 check ref-del cni "$ref" DEL rt1 eth0 "$T/prt1.json" "$T/rd1.out"
fi
log "our result: $(norm_bridge_result "$T/t1.json")"
finish "vlanTrunk as v1.9: native VLAN 1 (or vlan) PVID untagged + 101,200-202 tagged, untagged and tagged traffic, VLAN 300 dropped, CHECK/DEL x2$(ref_note ', result = reference')"
