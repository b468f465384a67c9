# podman 4.3 with its CNI backend, plugin dir = cni-multi's symlinks only (sourced by run.sh).
# What podman needs on a node like this one: runc (crun 1.8 refuses hybrid cgroups), cgroupfs,
# file events, vfs storage.
P=$E2E_TMP/podman; mkdir -p "$P/net.d" "$P/root" "$P/run" "$P/tmp"
cat >"$P/containers.conf" <<CONF
[network]
network_backend = "cni"
cni_plugin_dirs = ["$E2E_TMP/bin"]
network_config_dir = "$P/net.d"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$P/tmp"
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
CONF
cat >"$P/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$P/root"
runroot = "$P/run"
CONF
export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf
E2E_PODMAN="node podman"
pm() { node podman "$@"; }
# A busybox image without a registry.
mkdir -p "$P/rootfs/bin" && cp /bin/busybox "$P/rootfs/bin/busybox"
for a in sh sleep nc ip ping cat wget httpd echo; do ln -sf busybox "$P/rootfs/bin/$a"; done
tar -C "$P/rootfs" -cf "$P/rootfs.tar" . && pm import -q "$P/rootfs.tar" localhost/busybox:latest >/dev/null \
    || fail "podman import busybox"
before=$(residue)

# Default chain: bridge -> portmap -> firewall -> tuning.
check "network create" pm network create --subnet 10.89.7.0/24 cme2e
check "conflist is the default chain" sh -c "jq -r '.plugins[].type' $P/net.d/cme2e.conflist | tr '\n' ' ' | grep -qx 'bridge portmap firewall tuning '"
check "run web (-p 8080:80)" pm run -d --name web --network cme2e -p 8080:80 localhost/busybox sh -c 'echo hello-e2e > /i.html; httpd -f -p 80 -h /'
wip=$(pm inspect web -f '{{.NetworkSettings.Networks.cme2e.IPAddress}}')
gw=$(pm inspect web -f '{{.NetworkSettings.Networks.cme2e.Gateway}}')
check "address $wip in 10.89.7.0/24, gateway $gw" sh -c "case '$wip' in 10.89.7.*) [ '$gw' = 10.89.7.1 ];; *) false;; esac"
check "address inside the container" sh -c "podman exec web ip -4 -o addr show eth0 | grep -q 'inet $wip/24'"
sleep 0.5
check "node -> pod" node sh -c "echo | nc -w 2 $wip 80 >/dev/null || wget -qO- http://$wip/i.html"
check "port 8080 via gateway $gw" node sh -c "wget -qO- http://$gw:8080/i.html | grep -q hello-e2e"
check "port 8080 via 127.0.0.1" node sh -c "wget -qO- http://127.0.0.1:8080/i.html | grep -q hello-e2e"
# An outside namespace on a veth to the node.
ip netns add "$E2E_NODE-out"
ip -n "$E2E_NODE" link add up0 type veth peer name eth0 netns "$E2E_NODE-out"
ip -n "$E2E_NODE" addr add 192.0.2.1/24 dev up0 && ip -n "$E2E_NODE" link set up0 up
ip -n "$E2E_NODE-out" addr add 192.0.2.2/24 dev eth0 && ip -n "$E2E_NODE-out" link set eth0 up
check "port 8080 from an outside netns" ip netns exec "$E2E_NODE-out" sh -c "wget -qO- http://192.0.2.1:8080/i.html | grep -q hello-e2e"
check "pod -> pod" pm run --rm --network cme2e localhost/busybox sh -c "wget -qO- http://$wip/i.html | grep -q hello-e2e"
check "hairpin via the host port" pm exec web sh -c "wget -qO- http://$gw:8080/i.html | grep -q hello-e2e"
check "static --ip and --mac-address" pm run --rm --network cme2e --ip 10.89.7.77 --mac-address 02:42:0a:59:07:4d localhost/busybox \
    sh -c "ip -o addr show eth0 | grep -q 'inet 10.89.7.77/24' && ip -o link show eth0 | grep -q 02:42:0a:59:07:4d"

# Two networks on one container, one of them --internal (no masquerade, no gateway route out).
check "network create --internal" pm network create --internal --subnet 10.89.8.0/24 cme2ein
check "two networks on one container" pm run --rm --network cme2e,cme2ein localhost/busybox \
    sh -c "ip -o -4 addr | grep -q 'inet 10.89.7' && ip -o -4 addr | grep -q 'inet 10.89.8'"
# podman 4.3's CNI backend: isolate = firewall ingressPolicy "same-bridge".
check "network create -o isolate=true" pm network create -o isolate=true --subnet 10.89.9.0/24 cme2eiso
check "run iso server" pm run -d --name isoweb --network cme2eiso localhost/busybox sh -c 'echo iso > /i.html; httpd -f -p 80 -h /'
isoip=$(pm inspect isoweb -f '{{.NetworkSettings.Networks.cme2eiso.IPAddress}}')
check "isolated network: node reaches $isoip" node sh -c "wget -qO- http://$isoip/i.html | grep -q iso"
# ingressPolicy same-bridge (as the reference) drops traffic between isolated bridges only.
check "network create -o isolate=true (second)" pm network create -o isolate=true --subnet 10.89.11.0/24 cme2eiso2
check "isolated network: a pod on another isolated bridge cannot" pm run --rm --network cme2eiso2 localhost/busybox sh -c "! echo | nc -w 2 $isoip 80"
check "rm -f isoweb" pm rm -f -t 0 isoweb

# macvlan with host-local on a veth parent in the node netns.
ip -n "$E2E_NODE" link add mvpar type veth peer name mvpeer && ip -n "$E2E_NODE" link set mvpar up && ip -n "$E2E_NODE" link set mvpeer up
ip -n "$E2E_NODE" addr add 10.89.10.1/24 dev mvpeer
check "macvlan network create" pm network create -d macvlan -o parent=mvpar --subnet 10.89.10.0/24 cme2emv
check "macvlan container reaches the parent's peer" pm run --rm --network cme2emv localhost/busybox sh -c "ping -c1 -W2 10.89.10.1"
# macvlan with dhcp: dnsmasq on the parent's peer, cni-multi's dhcp daemon in the node netns on
# its default socket /run/cni/dhcp.sock (a tmpfs of this run's mount namespace, as podman's
# generated conflist names no socket).
case " $E2E_PLUGINS " in
*" dhcp "*)
    # nsenter directly (not node()): $! must be the daemon itself, to end it by pid.
    nsenter --net=/run/netns/"$E2E_NODE" dnsmasq --no-daemon --conf-file=/dev/null --interface=mvpeer --bind-interfaces --port=0 \
        --dhcp-range=10.89.10.50,10.89.10.99,255.255.255.0,2m --dhcp-leasefile="$P/leases" >"$P/dnsmasq.log" 2>&1 &
    dnsmasq_pid=$!; echo $dnsmasq_pid >>"$E2E_TMP/pids"
    nsenter --net=/run/netns/"$E2E_NODE" env PATH= "$E2E_TMP/bin/dhcp" daemon >"$P/dhcpd.log" 2>&1 &
    dhcpd_pid=$!; echo $dhcpd_pid >>"$E2E_TMP/pids"
    for _ in $(seq 50); do [ -S /run/cni/dhcp.sock ] && break; sleep 0.1; done
    check "dhcp daemon listens on /run/cni/dhcp.sock" [ -S /run/cni/dhcp.sock ]
    check "macvlan network create --ipam-driver dhcp" pm network create -d macvlan -o parent=mvpar --ipam-driver dhcp cme2edh
    check "its conflist is macvlan + dhcp" sh -c "jq -e '.plugins[0].type == \"macvlan\" and .plugins[0].ipam.type == \"dhcp\"' $P/net.d/cme2edh.conflist"
    check "run dh on macvlan+dhcp" pm run -d --name dh --network cme2edh localhost/busybox sleep 300
    dhip=$(pm inspect dh -f '{{.NetworkSettings.Networks.cme2edh.IPAddress}}')
    check "dh got $dhip from the dnsmasq range, on its eth0" sh -c "case '$dhip' in 10.89.10.[5-9][0-9]) ;; *) exit 1;; esac; podman exec dh ip -4 -o addr show eth0 | grep -q 'inet $dhip/24'"
    check "dh reaches the DHCP server's side" pm exec dh ping -c1 -W2 10.89.10.1
    check "dnsmasq holds dh's lease" grep -q " $dhip " "$P/leases"
    check "rm -f dh" pm rm -f -t 0 dh
    # dnsmasq drops a lease from its file on DHCPRELEASE, which DEL (podman rm) sends.
    check "the lease was released at removal" sh -c "! grep -q ' $dhip ' '$P/leases' || { cat '$P/leases'; false; }"
    check "network rm cme2edh" pm network rm cme2edh
    kill "$dhcpd_pid" "$dnsmasq_pid" 2>/dev/null; wait "$dhcpd_pid" "$dnsmasq_pid" 2>/dev/null
    ;;
*) echo "  note macvlan + dhcp not run: this build has no dhcp plugin (cni-multi list)" ;;
esac

# 20 containers started and removed concurrently.
cpids=; for i in $(seq 1 20); do pm run -d --name c$i --network cme2e localhost/busybox sleep 300 >/dev/null 2>&1 & cpids="$cpids $!"; done; wait $cpids
ips=$(for i in $(seq 1 20); do pm inspect c$i -f '{{.NetworkSettings.Networks.cme2e.IPAddress}}'; done | sort -u | grep -c .)
check "20 concurrent containers got 20 distinct addresses ($ips)" [ "$ips" = 20 ]
cpids=; for i in $(seq 1 20); do pm rm -f -t 0 c$i >/dev/null 2>&1 & cpids="$cpids $!"; done; wait $cpids

check "rm -f web" pm rm -f -t 0 web
for n in cme2e cme2ein cme2eiso cme2eiso2 cme2emv; do check "network rm $n" pm network rm $n; done
ip netns del "$E2E_NODE-out"; ip -n "$E2E_NODE" link del up0 2>/dev/null; ip -n "$E2E_NODE" link del mvpar
after=$(residue)
check "podman rm/network rm leave nothing (links, nft rules, reservations, cache)" diff <(echo "$before") <(echo "$after")
