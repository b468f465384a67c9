#!/bin/sh
# bridge `vlan` + `isGateway` in the second kernel: the VLAN gateway interface brg.100 (one
# end of a veth pair whose other end is a bridge port with PVID 100) carries the gateway
# address, is the 4th result interface, and pods on VLAN 100 reach it; a pod on VLAN 200 in
# the same subnet does not. Ours and the reference side by side (node / rnode), results
# compared (MACs, veth names, sandboxes normalised). CHECK after ADD, DEL twice; the gateway
# interface stays after DEL (as with the reference). Dual-stack: one brd.100 with both gateways.
. "$VMTEST_LIB"
T=$VMTEST_TMP
ours=$CNI_BIN_DIR/bridge ref=$REF_BIN_DIR/bridge
need_ref_or_ours_only

mkconf() { # DATADIR KEYS
    cat <<JSON
{"cniVersion":"1.0.0","name":"brg","type":"bridge","bridge":"brg",$2,
 "ipam":{"type":"host-local","dataDir":"$1","subnet":"10.250.130.0/24"}}
JSON
}
GW=10.250.130.1

# run_side TAG PLUGIN: pods ${TAG}1, ${TAG}2 (vlan 100 + isGateway), ${TAG}3 (vlan 200).
run_side() {
    t=$1 p=$2 node=${1}node
    netns_add "$node"; netns_add "${t}1"; netns_add "${t}2"; netns_add "${t}3"
    mkconf "$T/$t-ipam" '"vlan":100,"isGateway":true,"preserveDefaultVlan":false' > "$T/${t}gw.json"
    mkconf "$T/$t-ipam" '"vlan":200,"preserveDefaultVlan":false' > "$T/${t}200.json"
    export NODE_NS=$node CNI_PATH=$(dirname "$p")
    for x in 1:gw 2:gw 3:200; do
        pod=$t${x%%:*} conf=$T/$t${x#*:}.json
        CNI_CONTAINERID=$pod must "$t:add-${x%%:*}" cni "$p" ADD "$pod" eth0 "$conf" "$T/$pod.json"
        # At once: the reference's gateway address pins brg.100's MAC, not the bridge's,
        # which a later port can still change (ours pins the bridge's before its first port).
        with_prev "$conf" "$T/$pod.json" > "$T/p$pod.json"
        CNI_CONTAINERID=$pod check "$t:check-${x%%:*}" cni "$p" CHECK "$pod" eth0 "$T/p$pod.json" "$T/k$pod.out"
    done
    r1=$T/${t}1.json
    check "$t:gw-if-up"     link_up "$node" brg.100
    check "$t:gw-addr"      has_addr "$node" brg.100 $GW/24
    check "$t:no-br-addr"   sh -c "! $IP -n $node -o addr show dev brg | grep -q 'inet '"
    check "$t:result-gw-if" json_eq "$r1" '[(.interfaces | length), .interfaces[3].name] | map(tostring) | join(" ")' "4 brg.100"
    check "$t:result-gw-mac" json_eq "$r1" '.interfaces[3].mac' "$($IP -n "$node" link show brg.100 | awk '/link\/ether/{print $2}')"
    check "$t:2nd-result"   json_eq "$T/${t}2.json" '.interfaces[3].name' brg.100
    check "$t:ip-gw"        json_eq "$r1" '.ips[0].gateway' $GW
    check "$t:ip-if"        json_eq "$r1" '.ips[0].interface' 2
    gw_port=$($IP -n "$node" -o link show brg.100 | sed -n 's/^[0-9]*: brg\.100@\([^:]*\):.*/\1/p')
    check "$t:gw-port"      sh -c "$IP -n $node link show $gw_port | grep -q 'master brg'"
    log "$t: gw port $gw_port vlans [$(port_vlans "$node" "$gw_port")], pod 1 port [$(port_vlans "$node" "$(json_get "$r1" '.interfaces[1].name')")]"
    check "$t:1-to-gw"      ping_from "${t}1" $GW
    check "$t:2-to-gw"      ping_from "${t}2" $GW
    check "$t:1-to-2"       ping_from "${t}1" 10.250.130.3
    check "$t:3-isolated"   sh -c "! $IP netns exec ${t}3 ping -c 2 -W 1 $GW"
    export CNI_CONTAINERID=${t}1
    check "$t:del"          cni "$p" DEL "${t}1" eth0 "$T/p${t}1.json" "$T/${t}d1.out"
    check "$t:del-again"    cni "$p" DEL "${t}1" eth0 "$T/p${t}1.json" "$T/${t}d2.out"
    unset CNI_CONTAINERID
    check "$t:gone"         link_absent "${t}1" eth0
    check "$t:released"     sh -c "[ ! -e $T/$t-ipam/brg/10.250.130.2 ]"
    check "$t:gw-if-stays"  has_addr "$node" brg.100 $GW/24
    check "$t:2-still-to-gw" ping_from "${t}2" $GW
}

# dual TAG PLUGIN: dual-stack vlan 100 + isGateway on bridge brd: one gateway interface
# brd.100 with both gateways, listed once in the result.
dual() {
    t=$1 p=$2 node=${1}node
    netns_add "${t}6"
    cat > "$T/${t}6.conf" <<JSON
{"cniVersion":"1.0.0","name":"brd","type":"bridge","bridge":"brd","vlan":100,"isGateway":true,
 "ipam":{"type":"host-local","dataDir":"$T/$t-ipam","ranges":[[{"subnet":"10.250.131.0/24"}],[{"subnet":"fd00:250:131::/64"}]]}}
JSON
    CNI_CONTAINERID=${t}6 must "$t:dual-add" cni "$p" ADD "${t}6" eth0 "$T/${t}6.conf" "$T/${t}6.json"
    check "$t:dual-gw4"    has_addr "$node" brd.100 10.250.131.1/24
    check "$t:dual-gw6"    has_addr "$node" brd.100 fd00:250:131::1/64
    check "$t:dual-result" json_eq "$T/${t}6.json" '[.interfaces[].name | select(startswith("brd."))] | join(" ")' brd.100
    check "$t:dual-ping4"  ping_from "${t}6" 10.250.131.1
    with_prev "$T/${t}6.conf" "$T/${t}6.json" > "$T/p${t}6.json"
    CNI_CONTAINERID=${t}6 check "$t:dual-check" cni "$p" CHECK "${t}6" eth0 "$T/p${t}6.json" "$T/k${t}6.out"
    CNI_CONTAINERID=${t}6 check "$t:dual-del" cni "$p" DEL "${t}6" eth0 "$T/p${t}6.json" "$T/d${t}6.out"
}

run_side o "$ours"
check o:gw-port-vlans port_vlans_are onode "$gw_port" "100PU"
dual o "$ours"
if have_ref; then
    run_side r "$ref"
    dual r "$ref"
    for x in 1 2 3 6; do
        check "same-as-ref-$x" same_result "$T/o$x.json" "$T/r$x.json"
    done
fi
log "our result (1): $(norm_bridge_result "$T/o1.json")"
finish "vlan 100 + isGateway: brg.100 has $GW, in the result, reached from VLAN 100 only, CHECK/DEL x2, dual-stack$(ref_note)"
