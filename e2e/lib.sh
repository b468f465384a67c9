# Shared helpers for make e2e (sourced). Everything lives in $E2E_TMP and in namespaces
# this run made; run.sh has already put us in a private mount namespace where /run/netns,
# /run/cni, /var/lib/cni, /var/lib/containers, /run/containers and /run/libpod are fresh tmpfs, so
# neither podman nor libcni can reach the machine's own state.
E2E_FAILS=${E2E_FAILS:-0}
pass() { echo "  ok   $*"; }
fail() { echo "  FAIL $*"; E2E_FAILS=$((E2E_FAILS + 1)); }
# check "what" cmd...: pass/fail on the command's exit status.
check() { local what=$1; shift; if "$@" >"$E2E_TMP/last.out" 2>&1; then pass "$what"; else fail "$what"; sed 's/^/       /' "$E2E_TMP/last.out" | tail -20; fi; }
node() { nsenter --net=/run/netns/"$E2E_NODE" "$@"; }
# Kernel and file state that must be back to the start after every removal.
residue() {
    {
        echo "# links"; node ip -o link show | awk '{print $2}' | sort
        # Rules only: empty tables/chains stay, as with the reference. The firewall's
        # per-bridge isolation rules (ingressPolicy) also stay after the last DEL, as the
        # reference's do, so they are not residue either.
        # The same goes for portmap's shared CNI-HOSTPORT-MASQ rule (the mark's masquerade) in
        # the iptables layout. nft's warnings about iptables-nft's tables go to stderr: not residue.
        echo "# nft"; node nft list ruleset 2>/dev/null | grep -E 'dnat|masquerade|ip saddr|ip daddr|ether saddr' \
            | grep -v -e '^table' -e '224.0.0.0/4' -e '^[[:space:]]*meta mark & 0x[0-9a-f]* == 0x[0-9a-f]* counter packets [0-9]* bytes [0-9]* masquerade$' | sort
        # host-local's `.<network>.index` (a cache of the directory) is no reservation.
        echo "# files"; (cd /var/lib/cni 2>/dev/null && find . -type f ! -name lock ! -name 'last_reserved_ip*' ! -name '.*.index' | sort)
    } 2>&1
}
