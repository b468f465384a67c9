# Bandwidth from pod annotations through containerd's CRI (sourced by containerd.sh when the
# build has bandwidth). containerd 1.6 turns kubernetes.io/ingress-bandwidth and
# egress-bandwidth into runtimeConfig.bandwidth {IngressRate, IngressBurst, EgressRate,
# EgressBurst} (capitalised keys; bursts math.MaxUint32 bits), which the bandwidth plugin
# turns into a TBF at the host veth's root (ingress) and one at an IFB's root (egress).
# No throughput run here: with a 512 MiB burst a short transfer is never shaped (the configs
# part measures one with a small burst).
read -r _ idbw <<<"$(cri_run bw -a kubernetes.io/ingress-bandwidth=10M -a kubernetes.io/egress-bandwidth=5M 2>"$C/bw.err")"
check "RunPodSandbox with ingress-bandwidth=10M egress-bandwidth=5M" sh -c "[ -n '$idbw' ] || { cat '$C/bw.err'; false; }"
bwveth=$(node ip -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1 | head -1)
bwifb=$(node ip -o link show type ifb | awk -F': ' '{print $2}' | cut -d@ -f1 | head -1)
node tc qdisc show >"$C/bw.qdisc" 2>&1
check "host veth $bwveth: root tbf at 10Mbit (ingress annotation)" sh -c "grep -E '^qdisc tbf 1: dev $bwveth root .* rate 10Mbit' '$C/bw.qdisc' || { cat '$C/bw.qdisc'; false; }"
check "IFB $bwifb: root tbf at 5Mbit (egress annotation)" sh -c "[ -n '$bwifb' ] && grep -E '^qdisc tbf 1: dev $bwifb root .* rate 5Mbit' '$C/bw.qdisc' || { cat '$C/bw.qdisc'; false; }"
check "host veth $bwveth: ingress qdisc redirecting to the IFB" sh -c "nsenter --net=/run/netns/$E2E_NODE tc filter show dev $bwveth ingress | grep -q 'Redirect to device $bwifb'"
check "stop+remove bw" sh -c "'$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' stop '${idbw:-x}' && '$VENV/bin/python' '$here/cri/cri_client.py' '$SOCK' rm '${idbw:-x}'"
check "bandwidth pod leaves nothing (its IFB included)" diff <(echo "$before") <(ctrd_residue)
