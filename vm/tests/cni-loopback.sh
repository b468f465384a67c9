#!/bin/sh
# cni-multi runs in the second kernel: `list`, the plugin symlinks, and the loopback plugin's
# ADD / CHECK / DEL through its symlink in a fresh netns.
. "$VMTEST_LIB"

must list        sh -c "$CNI_BIN_DIR/cni-multi list | grep -qw loopback"
must symlink     test -L "$CNI_BIN_DIR/loopback"

netns_add lo1
conf=$VMTEST_TMP/lo.json
echo '{"cniVersion":"1.0.0","name":"lo","type":"loopback"}' > "$conf"
$IP -n lo1 link set lo down
check lo-starts-down sh -c "! $IP -n lo1 link show lo | grep -Eq '[<,]UP[,>]'"

check add        cni loopback ADD lo1 lo "$conf" "$VMTEST_TMP/add.json"
check add-cni    json_eq "$VMTEST_TMP/add.json" .cniVersion 1.0.0
check add-ips    json_true "$VMTEST_TMP/add.json" '[.interfaces[]?.name] | index("lo") != null'
check lo-up      link_up lo1 lo
check lo-v4      has_addr lo1 lo 127.0.0.1/8
check ping-lo    ping_from lo1 127.0.0.1
check check      cni loopback CHECK lo1 lo "$conf" "$VMTEST_TMP/check.json"
check del        cni loopback DEL lo1 lo "$conf" "$VMTEST_TMP/del.json"
check del-empty  sh -c "[ ! -s $VMTEST_TMP/del.json ]"

finish "list, symlink, ADD/CHECK/DEL, lo up with 127.0.0.1/8"
