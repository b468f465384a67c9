# containerd 1.6's CRI driving only cni-multi's symlinks (sourced by run.sh), through the
# project's own CRI client (e2e/cri: Debian has no crictl). containerd runs inside the node
# netns with its root, state, socket and CNI conf dir in $E2E_TMP; run.sh's private mount ns
# has tmpfs over /run/netns, /var/lib/cni and /run/containerd.
C=$E2E_TMP/containerd; mkdir -p "$C/root" "$C/state" "$C/net.d" "$C/opt" "$C/gen"
SOCK=$C/containerd.sock
# The venv is made on first use so a fresh machine works (python3-venv from scripts/deps.sh).
VENV=${E2E_VENV:-$here/../target/e2e/venv}
if ! "$VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    python3 -m venv "$VENV" && "$VENV/bin/pip" install -q grpcio grpcio-tools || fail "venv with grpcio"
fi
export CRI_GEN=$C/gen
cri() { "$VENV/bin/python" "$here/cri/cri_client.py" "$SOCK" "$@"; }
# Every sandbox id this part made, for the cleanup on failure.
cri_run() { local out; out=$(cri run "$@") || { echo "$out"; return 1; }; echo "$out" | tee -a "$C/ids"; }

GW=10.88.40.1
# bandwidth (capabilities bandwidth) only when this build has it: containerd passes the pod's
# kubernetes.io/{ingress,egress}-bandwidth annotations to it as runtimeConfig.bandwidth.
HAVE_BW=
BW_PLUGIN=
case " $E2E_PLUGINS " in *" bandwidth "*) HAVE_BW=1; BW_PLUGIN='{"type":"bandwidth","capabilities":{"bandwidth":true}},' ;; esac
cat >"$C/net.d/10-e2e.conflist" <<CONF
{"cniVersion":"1.0.0","name":"cme2e-cri","plugins":[
 {"type":"bridge","bridge":"cni-cri0","isGateway":true,"ipMasq":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"10.88.40.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 $BW_PLUGIN
 {"type":"portmap","capabilities":{"portMappings":true}}]}
CONF
cat >"$C/config.toml" <<CONF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:e2e"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$E2E_TMP/bin"
    conf_dir = "$C/net.d"
CONF
CTRD_PID=
ctrd_start() {
    # A containerd still answering on the socket would make a "restart" test nothing.
    if cri version >/dev/null 2>&1; then echo "a containerd still answers on $SOCK"; return 1; fi
    # nsenter itself, not the node() function: a backgrounded function is a subshell, so $!
    # would be that subshell and killing it would leave containerd running.
    nsenter --net=/run/netns/"$E2E_NODE" containerd --config "$C/config.toml" >>"$C/containerd.log" 2>&1 &
    CTRD_PID=$!; echo $CTRD_PID >>"$E2E_TMP/pids"
    for _ in $(seq 100); do cri version >/dev/null 2>&1 && kill -0 "$CTRD_PID" 2>/dev/null && return 0; sleep 0.2; done
    tail -20 "$C/containerd.log"; return 1
}
# Waits on containerd's own pid: a bare `wait` would also wait for every other background job.
ctrd_stop() {
    [ -n "$CTRD_PID" ] || return 0
    kill "$CTRD_PID" 2>/dev/null; wait "$CTRD_PID" 2>/dev/null
    kill -0 "$CTRD_PID" 2>/dev/null && { echo "containerd $CTRD_PID did not exit"; return 1; }
    CTRD_PID=
}
ctrd_cleanup() {
    # On a failed run: stop and remove what is left through the CRI, so the shims and pause
    # processes go with their sandboxes; then end the shims under our state dir, by pid.
    if [ -n "$CTRD_PID" ] && [ -s "$C/ids" ]; then
        ids=$(awk '{print $2}' "$C/ids" | sort -u)
        cri stop $ids >/dev/null 2>&1; cri rm $ids >/dev/null 2>&1
    fi
    ctrd_stop
    for p in $(pgrep -f "containerd-shim.*$C" 2>/dev/null); do kill "$p" 2>/dev/null; done
}
trap 'ctrd_cleanup; cleanup' EXIT

# The bridge stays after its last pod, as with the reference; netns bind mounts that
# containerd made must go with their pods.
ctrd_residue() { residue | grep -vx -e 'cni-cri0:' -e 'cni0:'; echo "# netns"; ls /run/netns | grep -v '^cm-e2e-'; }

# A pause image from catatonit, as a hand-made docker-archive tarball.
mkdir -p "$C/img/rootfs/usr/bin" && cp /usr/bin/catatonit "$C/img/rootfs/usr/bin/"
tar -C "$C/img/rootfs" -cf "$C/img/layer.tar" usr
diff_id=sha256:$(sha256sum "$C/img/layer.tar" | cut -d' ' -f1)
cat >"$C/img/config.json" <<CONF
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/usr/bin/catatonit","-P"]},
 "rootfs":{"type":"layers","diff_ids":["$diff_id"]}}
CONF
echo '[{"Config":"config.json","RepoTags":["localhost/pause:e2e"],"Layers":["layer.tar"]}]' >"$C/img/manifest.json"
tar -C "$C/img" -cf "$C/pause.tar" manifest.json config.json layer.tar

check "containerd starts in the node netns" ctrd_start
check "ctr images import pause" node ctr -a "$SOCK" -n k8s.io images import --snapshotter native "$C/pause.tar"
before=$(ctrd_residue)

# ip_in_netns NETNS: the IPv4 address on the pod's eth0.
ip_in_netns() { nsenter --net="$1" ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; }
read -r _ id1 <<<"$(cri_run p1 2>"$C/p1.err")"
check "RunPodSandbox" [ -n "$id1" ]
read -r ip1 ns1 st1 <<<"$(cri status "${id1:-x}" 2>/dev/null)"
check "PodSandboxStatus ready, IP $ip1 = the address in the pod netns" sh -c "[ '$st1' = ready ] && [ -n '$ip1' ] && [ \"\$(nsenter --net='$ns1' ip -4 -o addr show eth0 | awk '{print \$4}' | cut -d/ -f1)\" = '$ip1' ]"
check "node -> pod ping" node ping -c1 -W2 "$ip1"
check "pod -> node ping" nsenter --net="$ns1" ping -c1 -W2 $GW
check "StopPodSandbox" cri stop "${id1:-x}"
check "PodSandboxStatus after stop: not ready" sh -c "'$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' status '${id1:-x}' | grep -q notready"
check "RemovePodSandbox" cri rm "${id1:-x}"
check "stop/remove leave nothing (links, nft rules, reservations, cache, netns)" diff <(echo "$before") <(ctrd_residue)

# Port mappings: containerd sends HostPort/ContainerPort/Protocol/HostIP to portmap.
read -r _ idw <<<"$(cri_run web -p 8081:80 -p 8082:82/udp -p 8083:80@$GW 2>"$C/web.err")"
check "RunPodSandbox with -p 8081:80 -p 8082:82/udp -p 8083:80@$GW" [ -n "$idw" ]
read -r wip wns _ <<<"$(cri status "${idw:-x}" 2>/dev/null)"
nsenter --net="$wns" socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo hello-cri' >/dev/null 2>&1 &
tcp_pid=$!; echo $tcp_pid >>"$E2E_TMP/pids"
nsenter --net="$wns" socat UDP-RECVFROM:82,fork SYSTEM:'echo hello-udp' >/dev/null 2>&1 &
udp_pid=$!; echo $udp_pid >>"$E2E_TMP/pids"
for _ in $(seq 50); do nsenter --net="$wns" ss -ltnu | grep -q ':82 ' && nsenter --net="$wns" ss -ltn | grep -q ':80 ' && break; sleep 0.1; done
check "node -> pod $wip:80" node sh -c "nc -w 2 $wip 80 </dev/null | grep -q hello-cri"
check "tcp 8081 via the gateway $GW" node sh -c "nc -w 2 $GW 8081 </dev/null | grep -q hello-cri"
check "tcp 8081 via 127.0.0.1" node sh -c "nc -w 2 127.0.0.1 8081 </dev/null | grep -q hello-cri"
# UDP may lose a datagram (seen once here): up to 3 tries.
udp_try=0; for i in 1 2 3; do udp_try=$i; echo x | node socat -T1 - UDP:$GW:8082 | grep -q hello-udp && break; udp_try=0; done
check "udp 8082 via the gateway $GW (datagrams sent: ${udp_try/#0/3, no answer})" [ "$udp_try" != 0 ]
check "tcp 8083 with HostIP $GW via $GW" node sh -c "nc -w 2 $GW 8083 </dev/null | grep -q hello-cri"
check "tcp 8083 with HostIP $GW not via 127.0.0.1" node sh -c "! nc -w 2 127.0.0.1 8083 </dev/null | grep -q hello-cri"
kill "$tcp_pid" "$udp_pid" 2>/dev/null; wait "$tcp_pid" "$udp_pid" 2>/dev/null
check "stop+remove web" sh -c "'$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' stop '${idw:-x}' && '$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' rm '${idw:-x}'"
check "port-mapped pod leaves nothing" diff <(echo "$before") <(ctrd_residue)

# A chain that fails half way: bridge and host-local succeed, then portmap rejects the HostIP;
# containerd then runs DEL over the whole chain, which must leave nothing.
cri_run half -p 8090:80@not-an-ip >"$C/half.out" 2>&1
check "RunPodSandbox with HostIP not-an-ip fails" sh -c "! grep -q '^half ' '$C/half.out' || { cat '$C/half.out'; false; }"
sed "s/^/       /" "$C/half.out" | cut -c1-220
check "the half-made chain's DEL leaves nothing" diff <(echo "$before") <(ctrd_residue)

if [ -n "$HAVE_BW" ]; then
    source "$here/containerd-bw.sh"
else
    # Not a missing tool: the plugin itself is not in this build yet, so there is nothing to test.
    echo "  note bandwidth annotations not checked: this build has no bandwidth plugin (cni-multi list)"
fi

# 20 sandboxes in parallel (one client, 20 concurrent RunPodSandbox calls, as kubelet does).
N=20
cri_run $(for i in $(seq $N); do echo par$i; done) >"$C/par.ids" 2>"$C/par.err"
par_ids=$(awk '{print $2}' "$C/par.ids" | tr '\n' ' ')
check "$N parallel RunPodSandbox calls succeed" sh -c "[ \$(grep -c . '$C/par.ids') = $N ] && ! [ -s '$C/par.err' ] || { cat '$C/par.err'; false; }"
cri status $par_ids >"$C/par.status" 2>&1
ips=$(awk '{print $1}' "$C/par.status" | grep '^10\.88\.40\.' | sort -u | grep -c .)
check "$N parallel sandboxes got $N distinct addresses ($ips)" [ "$ips" = $N ]
bad=0; while read -r ip ns _; do [ "$(ip_in_netns "$ns")" = "$ip" ] || bad=$((bad + 1)); done <"$C/par.status"
check "each one's CRI IP is the address in its netns ($bad differ)" [ "$bad" = 0 ]

# containerd restart with the pods running, then their removal.
check "containerd stops with $N pods running" ctrd_stop
check "containerd restarts" ctrd_start
check "the pods survive the restart with their addresses" sh -c "'$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' status $par_ids | diff '$C/par.status' -"
check "node -> one pod after the restart" node ping -c1 -W2 "$(head -1 "$C/par.status" | awk '{print $1}')"
check "$N concurrent StopPodSandbox" cri stop $par_ids
check "$N concurrent RemovePodSandbox" cri rm $par_ids
check "removal after the restart leaves nothing" diff <(echo "$before") <(ctrd_residue)

# The k3s node: containerd with k3s's own flannel chain (e2e/configs/k3s-flannel.conflist:
# flannel -> portmap -> bandwidth) and a subnet.env as flanneld writes it. containerd tears
# pods down with the config it has loaded, so the switch happens with no pod left, and a
# restart makes it load the new file.
if [ -n "$HAVE_BW" ]; then
    K=$C/k3s; mkdir -p "$K"
    printf 'FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' >"$K/subnet.env"
    ctrd_stop
    rm -f "$C/net.d/10-e2e.conflist"
    sed -e '/^\/\//d' -e "s|@TMP@|$K|g" "$here/configs/k3s-flannel.conflist" >"$C/net.d/10-flannel.conflist"
    check "containerd restarts with k3s's flannel chain" ctrd_start
    read -r _ idk <<<"$(cri_run k3spod -p 8084:80 -a kubernetes.io/ingress-bandwidth=20M 2>"$C/k3s.err")"
    check "k3s chain: RunPodSandbox with -p 8084:80 and ingress-bandwidth=20M" sh -c "[ -n '$idk' ] || { cat '$C/k3s.err'; false; }"
    read -r kip kns _ <<<"$(cri status "${idk:-x}" 2>/dev/null)"
    check "k3s chain: pod IP $kip in flannel's subnet, = the netns address, MTU 1450" sh -c "case '$kip' in 10.42.1.*) ;; *) exit 1;; esac; [ \"\$(nsenter --net='$kns' ip -4 -o addr show eth0 | awk '{print \$4}' | cut -d/ -f1)\" = '$kip' ] && nsenter --net='$kns' ip -o link show eth0 | grep -q 'mtu 1450'"
    check "k3s chain: node -> pod ping" node ping -c1 -W2 "$kip"
    nsenter --net="$kns" socat TCP-LISTEN:80,fork,reuseaddr SYSTEM:'echo hello-k3s' >/dev/null 2>&1 &
    k_pid=$!; echo $k_pid >>"$E2E_TMP/pids"
    for _ in $(seq 50); do nsenter --net="$kns" ss -ltn | grep -q ':80 ' && break; sleep 0.1; done
    check "k3s chain: host port 8084 via 10.42.1.1" node sh -c "nc -w 2 10.42.1.1 8084 </dev/null | grep -q hello-k3s"
    kill "$k_pid" 2>/dev/null; wait "$k_pid" 2>/dev/null
    check "k3s chain: tbf at 20Mbit on the host veth" sh -c "nsenter --net=/run/netns/$E2E_NODE tc qdisc show | grep -E '^qdisc tbf 1: dev veth.* root .* rate 20Mbit'"
    check "k3s chain: flannel saved its delegate config" sh -c "[ -n \"\$(ls '$K/flannel')\" ]"
    check "k3s chain: stop+remove" sh -c "'$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' stop '${idk:-x}' && '$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' rm '${idk:-x}'"
    check "k3s chain: nothing left (links, rules, reservations, cache, netns)" diff <(echo "$before") <(ctrd_residue)
    check "k3s chain: flannel's saved delegate config removed" sh -c "[ -z \"\$(ls '$K/flannel')\" ]"
fi
ctrd_cleanup
