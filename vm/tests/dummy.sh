#!/bin/sh
# cni-multi's dummy in the second kernel (Debian has no reference dummy): the golden result of
# the reference's documented behaviour, the link and address, CHECK, DEL (twice), IPAM required.
. "$VMTEST_LIB"
netns_add node; netns_add pod
T=$VMTEST_TMP
cat > "$T/c.json" <<JSON
{"cniVersion":"1.0.0","name":"dm","type":"dummy",
 "ipam":{"type":"host-local","dataDir":"$T/ipam","subnet":"10.250.103.0/24","routes":[{"dst":"10.9.0.0/16","gw":"10.250.103.1"}]}}
JSON
export NODE_NS=node
must add cni dummy ADD pod eth0 "$T/c.json" "$T/r.json"
check shape  json_eq "$T/r.json" '[paths(scalars)|map(tostring)|join(".")]|sort|join(" ")' \
    'cniVersion interfaces.0.mac interfaces.0.name interfaces.0.sandbox ips.0.address ips.0.gateway ips.0.interface routes.0.dst routes.0.gw'
check ip     json_eq "$T/r.json" '.ips[0].address' 10.250.103.2/24
check kind   sh -c "$IP -n pod -d link show eth0 | grep -q dummy"
check up     link_up pod eth0
check addr   has_addr pod eth0 10.250.103.2/24
check self   ping_from pod 10.250.103.2
with_prev "$T/c.json" "$T/r.json" > "$T/p.json"
check check  cni dummy CHECK pod eth0 "$T/p.json" "$T/k.json"
check del    cni dummy DEL pod eth0 "$T/p.json" "$T/d.json"
check del2   cni dummy DEL pod eth0 "$T/p.json" "$T/d2.json"
check gone   link_absent pod eth0
$JQ 'del(.ipam)' "$T/c.json" > "$T/noipam.json"
rejects() { ! cni "$@"; }
check ipam-rejected rejects dummy ADD pod eth0 "$T/noipam.json" "$T/e.json"
check ipam-message  grep -q 'dummy interface requires an IPAM configuration' "$T/e.json"
finish "dummy ADD/CHECK/DEL, golden shape, IPAM required"
