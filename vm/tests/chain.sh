#!/bin/sh
# The chain a node runs most (podman's default conflist): bridge (ipMasq, host-local) ->
# portmap -> firewall -> tuning, for two pods, each plugin called as a runtime calls it
# (ADD with the previous result, CHECK, DEL in reverse), with traffic: pod to pod over the
# bridge, pod to a client outside the node (masqueraded), the client to a pod through the
# node's mapped port (DNAT).
. "$VMTEST_LIB"
netns_add node; netns_add p1; netns_add p2; netns_add client
export NODE_NS=node
# The client: a veth to the node, the node's side 10.251.0.1/30 (the host port's address).
must client-link sh -c "$IP link add cl0 netns node type veth peer name eth0 netns client &&
    $IP -n node addr add 10.251.0.1/30 dev cl0 && $IP -n node link set cl0 up &&
    $IP -n client addr add 10.251.0.2/30 dev eth0 && $IP -n client link set eth0 up"

T=$VMTEST_TMP
plugin_conf() { # TYPE PREV-RESULT-FILE: the network's config for one plugin, as a runtime sends it
    $JQ -c --arg t "$1" --slurpfile prev "$2" '.plugins[] | select(.type == $t)
        | . + {cniVersion: "1.0.0", name: "chain"}
        | if $prev[0] then .prevResult = $prev[0] else . end
        | if .type == "portmap" then .runtimeConfig = {portMappings: [{hostPort: 8080, containerPort: 80, protocol: "tcp"}]} else . end' \
        "$T/net.json"
}
cat > "$T/net.json" <<JSON
{"plugins":[
 {"type":"bridge","bridge":"cni-ch0","isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","subnet":"10.252.0.0/24","routes":[{"dst":"0.0.0.0/0"}],"dataDir":"$T/ipam"}},
 {"type":"portmap","capabilities":{"portMappings":true}},
 {"type":"firewall"},
 {"type":"tuning","mtu":1400,"sysctl":{"net.ipv4.conf.eth0.accept_local":"1"}}]}
JSON
CHAIN="bridge portmap firewall tuning"
add_pod() { # POD: ADD the chain, then CHECK it; the final result in $T/POD.result
    echo null > "$T/$1.prev"
    for p in $CHAIN; do
        plugin_conf "$p" "$T/$1.prev" > "$T/$1.$p.conf"
        CNI_CONTAINERID=$1 cni "$p" ADD "$1" eth0 "$T/$1.$p.conf" "$T/$1.$p.out" || return 1
        cp "$T/$1.$p.out" "$T/$1.prev"
    done
    cp "$T/$1.prev" "$T/$1.result"
    for p in $CHAIN; do
        plugin_conf "$p" "$T/$1.result" > "$T/$1.$p.conf"
        CNI_CONTAINERID=$1 cni "$p" CHECK "$1" eth0 "$T/$1.$p.conf" "$T/$1.$p.check" || return 1
    done
}
del_pod() { # POD: DEL in reverse with the cached result
    for p in tuning firewall portmap bridge; do
        plugin_conf "$p" "$T/$1.result" > "$T/$1.$p.conf"
        CNI_CONTAINERID=$1 cni "$p" DEL "$1" eth0 "$T/$1.$p.conf" "$T/$1.$p.del" || return 1
    done
}
must add-p1 add_pod p1
must add-p2 add_pod p2
check p1-addr   json_eq "$T/p1.result" '.ips[0].address' 10.252.0.2/24
check p2-addr   json_eq "$T/p2.result" '.ips[0].address' 10.252.0.3/24
check tuning-mtu sh -c "$IP -n p1 link show eth0 | grep -q 'mtu 1400'"
check tuning-sysctl sh -c "[ \$($IP netns exec p1 cat /proc/sys/net/ipv4/conf/eth0/accept_local) = 1 ]"
check pod-to-pod ping_from p1 10.252.0.3
check masq-out   ping_from p2 10.251.0.2

# The host port: the client reaches p1's port 80 at the node's 10.251.0.1:8080 (a one-shot
# server that ends by itself; the client retries until it is listening).
in_ns p1 timeout 60 sh -c 'echo hello-from-p1 | nc -l -p 80' > /dev/null 2>&1 &
hostport() {
    for _i in 1 2 3 4 5 6 7 8 9 10; do
        _got=$(in_ns client sh -c 'echo hi | timeout 5 nc 10.251.0.1 8080' 2>/dev/null)
        [ "$_got" = hello-from-p1 ] && return 0
        sleep 1
    done
    echo "the client got '$_got' from 10.251.0.1:8080"; return 1
}
check portmap-dnat hostport

must del-p1 del_pod p1
must del-p2 del_pod p2
check p1-gone link_absent p1 eth0
check ipam-released sh -c "! ls $T/ipam/chain | grep -q '^10\\.'"
finish "bridge -> portmap -> firewall -> tuning on two pods: ADD/CHECK/DEL, pod-pod, masquerade, host port 8080"
