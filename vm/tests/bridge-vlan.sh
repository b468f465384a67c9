#!/bin/sh
# bridge `vlan` (access port) in the second kernel, ours and the reference side by side, each
# from its own node netns onto a bridge "brv" the plugin creates:
#   a: vlan 100 (preserveDefaultVlan false)  b: vlan 200 (the same)  c: vlan 100 (default keys)
# The host veth has PVID 100 untagged, the plugin-made bridge vlan_filtering 1, a and c talk,
# b (same subnet, VLAN 200) reaches nobody. VLAN 1 leaves the port unless preserveDefaultVlan
# is true: its default is false since upstream v1.8.0 (bridge.go v1.9.1 line 61, setupVeth
# 457-462), which ours follows; the reference here, Debian's 1.1.1, has no such key and always
# keeps VLAN 1. CHECK after each ADD, DEL twice, results equal to the reference's.
. "$VMTEST_LIB"
T=$VMTEST_TMP
ours=$CNI_BIN_DIR/bridge ref=$REF_BIN_DIR/bridge
need_ref_or_ours_only

mkconf() { # DATADIR VLAN [EXTRA-KEYS]
    cat <<JSON
{"cniVersion":"1.0.0","name":"brv","type":"bridge","bridge":"brv","vlan":$2${3:+,$3},
 "ipam":{"type":"host-local","dataDir":"$1","subnet":"10.250.120.0/24"}}
JSON
}

# run_side TAG PLUGIN: the pods of one side in netns ${TAG}a..c, node netns ${TAG}node:
#   a: vlan 100, preserveDefaultVlan false   b: vlan 200, the same   c: vlan 100, default keys
# (one subnet, one host-local pool). Results in $T/${TAG}{a,b,c}.json; checks labelled TAG:...
run_side() {
    t=$1 p=$2 node=${1}node t0=$(cut -d' ' -f1 /proc/uptime)
    netns_add "$node"
    for x in a b c; do netns_add "$t$x"; done
    mkconf "$T/$t-ipam" 100 '"preserveDefaultVlan":false' > "$T/${t}a.conf"
    mkconf "$T/$t-ipam" 200 '"preserveDefaultVlan":false' > "$T/${t}b.conf"
    mkconf "$T/$t-ipam" 100 > "$T/${t}c.conf"
    export NODE_NS=$node CNI_PATH=$(dirname "$p")
    for x in a b c; do
        pod=$t$x
        CNI_CONTAINERID=$pod must "$t:add-$x" cni "$p" ADD "$pod" eth0 "$T/$pod.conf" "$T/$pod.json"
        # CHECK right after ADD: the reference's bridge MAC is not pinned without an address
        # and follows the lowest port MAC, so a later pod can make its prevResult's bridge MAC
        # stale (ours is pinned before the first port joins).
        with_prev "$T/$pod.conf" "$T/$pod.json" > "$T/p$pod.json"
        CNI_CONTAINERID=$pod check "$t:check-$x" cni "$p" CHECK "$pod" eth0 "$T/p$pod.json" "$T/k$pod.out"
    done
    va=$(json_get "$T/${t}a.json" '.interfaces[1].name')
    vb=$(json_get "$T/${t}b.json" '.interfaces[1].name')
    vc=$(json_get "$T/${t}c.json" '.interfaces[1].name')
    check "$t:vlan-filtering" vlan_filtering "$node" brv
    check "$t:a-ip"       json_eq "$T/${t}a.json" '.ips[0].address' 10.250.120.2/24
    check "$t:a-master"   sh -c "$IP -n $node link show $va | grep -q 'master brv'"
    if [ "$t" = o ]; then
        check "$t:a-vlans" port_vlans_are "$node" "$va" "100PU"
        check "$t:b-vlans" port_vlans_are "$node" "$vb" "200PU"
    else # no preserveDefaultVlan in 1.1.1: VLAN 1 stays (untagged, no longer PVID)
        check "$t:a-vlans" port_vlans_are "$node" "$va" "1U 100PU"
        check "$t:b-vlans" port_vlans_are "$node" "$vb" "1U 200PU"
    fi
    if [ "$t" = o ]; then
        check "$t:c-vlans" port_vlans_are "$node" "$vc" "100PU"
    else
        check "$t:c-vlans" port_vlans_are "$node" "$vc" "1U 100PU"
    fi
    check "$t:c-to-a"     ping_from "${t}c" 10.250.120.2
    check "$t:a-to-c"     ping_from "${t}a" 10.250.120.4
    check "$t:b-isolated" sh -c "! $IP netns exec ${t}b ping -c 1 -W 1 10.250.120.2 && ! $IP netns exec ${t}b ping -c 1 -W 1 10.250.120.4"
    # DEL twice (as a runtime retries) of pod a.
    export CNI_CONTAINERID=${t}a
    check "$t:del"        cni "$p" DEL "${t}a" eth0 "$T/p${t}a.json" "$T/${t}da.out"
    check "$t:del-again"  cni "$p" DEL "${t}a" eth0 "$T/p${t}a.json" "$T/${t}da2.out"
    unset CNI_CONTAINERID
    check "$t:gone"       link_absent "${t}a" eth0
    check "$t:veth-gone"  link_absent "$node" "$va"
    check "$t:released"   sh -c "[ -d $T/$t-ipam/brv ] && [ ! -e $T/$t-ipam/brv/10.250.120.2 ]"
    check "$t:bridge-stays" link_up "$node" brv
    if [ "$t" = o ]; then cvl="100PU"; else cvl="1U 100PU"; fi
    check "$t:c-still-ok" port_vlans_are "$node" "$vc" "$cvl"
    log "$t: side took $(awk -v a="$t0" '{print $1 - a}' /proc/uptime)s"
}

run_side o "$ours"
if have_ref; then
    run_side r "$ref"
    for x in a b c; do
        check "same-as-ref-$x" same_result "$T/o$x.json" "$T/r$x.json"
    done
fi
log "our result (a): $(norm_bridge_result "$T/oa.json")"
finish "access vlan 100: PVID untagged, vlan_filtering, a<->c, VLAN 200 isolated, VLAN 1 removed by default (v1.9; kept by 1.1.1), CHECK/DEL x2$(ref_note)"
