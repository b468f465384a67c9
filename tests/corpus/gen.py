#!/usr/bin/env python3
"""Generates tests/corpus/cases.json, the bad-input corpus of tests/it/corpus.rs: for every
plugin a valid base config, then one broken thing per case (stdin, names, versions, env,
CNI_ARGS, netns paths, key types and ranges, unicode, oversize), each with the CNI error
code it must get. `pad` adds a key of that many bytes, `stdin_hex` gives raw stdin. Placeholders filled in by the test: @DATA@ (a temp state dir), @FILE@
(a regular file), @DIR@ (a directory), @FIFO@ (a FIFO), @POD@ (the pod netns)."""
import json, os

HERE = os.path.dirname(os.path.abspath(__file__))
V = "1.0.0"
HL = {"type": "host-local", "dataDir": "@DATA@/ipam", "ranges": [[{"subnet": "10.77.0.0/24"}]]}
PREV = {"cniVersion": V, "interfaces": [{"name": "eth0", "sandbox": "@POD@"}],
        "ips": [{"address": "10.77.0.5/24", "interface": 0}], "dns": {}}

def base(t, **kw):
    c = {"cniVersion": V, "name": "corpus", "type": t}
    c.update(kw)
    return c

BASES = {
    "bridge": base("bridge", bridge="cm-corpus0", ipam=HL),
    "ptp": base("ptp", ipam=HL),
    "macvlan": base("macvlan", master="cm-nomaster", ipam=HL),
    "ipvlan": base("ipvlan", master="cm-nomaster", ipam=HL),
    "vlan": base("vlan", master="cm-nomaster", vlanId=5, ipam=HL),
    "host-device": base("host-device", device="cm-nodev"),
    "dummy": base("dummy", ipam=HL),
    "tap": base("tap", ipam=HL),
    "loopback": base("loopback"),
    "host-local": base("host-local", ipam=HL),
    "static": base("static", ipam={"type": "static", "addresses": [{"address": "10.77.0.9/24"}]}),
    "tuning": base("tuning", dataDir="@DATA@/tuning", prevResult=PREV),
    "portmap": base("portmap", prevResult=PREV,
                    runtimeConfig={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
    "firewall": base("firewall", prevResult=PREV),
    "flannel": base("flannel", subnetFile="@DATA@/subnet.env", dataDir="@DATA@/flannel"),
}
NETNS_USERS = ["bridge", "ptp", "macvlan", "ipvlan", "vlan", "host-device", "dummy", "tap", "loopback", "tuning"]
cases = []
# What cni-multi answers today where it is not (yet) the rule: (plugin, key, value) -> fields.
MASTER_FIRST = {"code": 999, "why": "the master (missing here) is looked up before the MTU is checked"}
KNOWN = {
    ("macvlan", "mtu", "-5"): MASTER_FIRST, ("ipvlan", "mtu", "-5"): MASTER_FIRST, ("vlan", "mtu", "-3"): MASTER_FIRST,
}
# Keys loopback never reads: the reference parses into libcni's NetConf, which has neither,
# so any type there is ignored (src/interface/loopback.rs does the same).
for v in ["[]", "[1]", '"x"', "5"]:
    KNOWN[("loopback", "runtimeConfig", v)] = {"code": "ok"}
for v in ['"x"', "5", "[]"]:
    KNOWN[("loopback", "args", v)] = {"code": "ok"}
# The reference's answers where they differ (recorded from a run; tests/it/corpus.rs checks them).
REFERENCE = json.load(open(os.path.join(HERE, "reference.json")))

def case(plugin, note, code, config=None, stdin=None, env=None, command="ADD", **extra):
    c = {"id": f"{plugin}/{len([x for x in cases if x['plugin'] == plugin]):03d}", "plugin": plugin,
         "note": note, "command": command, "code": code}
    if stdin is not None:
        c["stdin"] = stdin
    else:
        c["config"] = config if config is not None else BASES[plugin]
    if env:
        c["env"] = env
    c.update(extra)
    cases.append(c)

def with_(plugin, **kw):
    c = json.loads(json.dumps(BASES[plugin]))
    for k, v in kw.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c

for p in BASES:
    # stdin that is not a config at all: 6
    for note, s in [("empty stdin", ""), ("truncated JSON", '{"cniVersion": "1.0.0", "name": '),
                    ("a list", "[]"), ("null", "null"), ("a number", "42"), ("a string", '"x"'),
                    ("trailing garbage", json.dumps(BASES[p]) + " x")]:
        case(p, note, 6, stdin=s)
    case(p, "invalid UTF-8", 6, stdin="", stdin_hex="7b226e616d65223a22ff227d")
    # network names: 7 (a name of the wrong type is a decoding error, 6)
    for note, n, code in [("no name", None, 7), ("empty name", "", 7), ("name with a slash", "a/b", 7),
                          ("name ..", "..", 7), ("unicode name", "n\u00e9t", 7), ("name with a space", "a b", 7),
                          ("name is a number", 5, 6), ("name is a list", ["x"], 6)]:
        cfg = with_(p)
        if n is None:
            cfg.pop("name")
        else:
            cfg["name"] = n
        case(p, note, code, config=cfg)
    # versions: unsupported 1, unparsable 1 or 6
    case(p, "cniVersion 9.9.9", 1, config=with_(p, cniVersion="9.9.9"))
    case(p, "cniVersion 1.0.0.0", 1, config=with_(p, cniVersion="1.0.0.0"))
    case(p, "cniVersion is a number", 6, config=with_(p, cniVersion=1))
    case(p, "CHECK at 0.3.1", 1, config=with_(p, cniVersion="0.3.1"), command="CHECK")
    case(p, "GC at 1.0.0", 1, command="GC")
    # environment: 4 (missing container ID for ADD is 4 too: it is a required variable)
    case(p, "container ID with a slash", 4, env={"CNI_CONTAINERID": "a/b"})
    case(p, "container ID ..", 4, env={"CNI_CONTAINERID": ".."})
    case(p, "unicode container ID", 4, env={"CNI_CONTAINERID": "c\u00e9"})
    case(p, "no container ID", 4, env={"CNI_CONTAINERID": None})
    case(p, "ifname too long", 4, env={"CNI_IFNAME": "x" * 16})
    case(p, "ifname with a slash", 4, env={"CNI_IFNAME": "a/b"})
    case(p, "ifname .", 4, env={"CNI_IFNAME": "."})
    case(p, "ifname with a space", 4, env={"CNI_IFNAME": "a b"})
    case(p, "no ifname", 4, env={"CNI_IFNAME": None})
    case(p, "unknown command", 4, env={"CNI_COMMAND": "ADDD"})
    case(p, "no CNI_PATH", 4, env={"CNI_PATH": None})
    # oversize stdin: 2 MiB of padding in an otherwise broken config (unsupported version)
    case(p, "2 MiB stdin", 1, config=with_(p, cniVersion="9.9.9"), pad=2 << 20)

for p in NETNS_USERS:
    case(p, "netns is a regular file", 4, env={"CNI_NETNS": "@FILE@"})
    case(p, "netns is a directory", 4, env={"CNI_NETNS": "@DIR@"})
    case(p, "netns is a mount namespace", 4, env={"CNI_NETNS": "/proc/self/ns/mnt"})
    case(p, "netns is a FIFO", 4, env={"CNI_NETNS": "@FIFO@"})
    case(p, "netns does not exist", 3, env={"CNI_NETNS": "/nonexistent/netns"})
    case(p, "no netns", 4, env={"CNI_NETNS": None})

# key types and ranges: 7 with the key named
TYPED = {
    "bridge": [("bridge", 5), ("mtu", "1500"), ("mtu", -1), ("mtu", 1 << 40), ("isGateway", "yes"),
               ("ipMasq", 1), ("vlan", "5"), ("vlan", -2), ("vlan", 5000), ("hairpinMode", []),
               ("ipam", ["x"]), ("ipam", "host-local"), ("vlanTrunk", {"id": 5}), ("vlanTrunk", [{"id": 0}]),
               ("bridge", "x" * 16), ("macspoofchk", "true")],  # bridge has no "mac" key
    "ptp": [("mtu", "1400"), ("mtu", -1), ("ipMasq", "true"), ("ipam", 5), ("ipam", ["x"])],
    "macvlan": [("master", 5), ("mode", 5), ("mode", "bogus"), ("mtu", "x"), ("mtu", -5), ("mac", 5),
                ("linkInContainer", "no")],
    "ipvlan": [("master", []), ("mode", "l4"), ("mtu", "x"), ("mtu", -5), ("linkInContainer", 1)],
    "vlan": [("vlanId", "5"), ("vlanId", -1), ("vlanId", 5000), ("master", 5), ("mtu", "x"), ("mtu", -3)],
    "host-device": [("device", 5), ("hwaddr", 5), ("kernelpath", {}), ("pciBusID", [])],
    "dummy": [("ipam", "x"), ("ipam", ["x"])],
    "tap": [("mac", 5), ("mtu", "x"), ("mtu", -1), ("multiQueue", "yes"), ("owner", "root"),
            ("group", -1), ("selinuxContext", 5)],
    "loopback": [("prevResult", []), ("prevResult", 5), ("runtimeConfig", []), ("runtimeConfig", [1]),
                 ("runtimeConfig", "x"), ("runtimeConfig", 5), ("args", "x"),
                 ("args", 5), ("args", [])],
    "host-local": [("ipam", ["x"]), ("ipam", 5)],
    "static": [("ipam", ["x"]), ("ipam", 5)],
    "tuning": [("mtu", "1500"), ("mac", 42), ("sysctl", "x"), ("promisc", "yes"), ("txQLen", "x"),
               ("allmulti", 1), ("dataDir", 5), ("prevResult", []), ("prevResult", "x")],
    "portmap": [("snat", "yes"), ("backend", 5), ("backend", "bogus"), ("conditionsV4", "x"),
                ("prevResult", []), ("prevResult", {"ips": 5}), ("runtimeConfig", {"portMappings": "x"}),
                ("runtimeConfig", {"portMappings": [{"hostPort": "80", "containerPort": 80}]}),
                ("markMasqBit", 32), ("markMasqBit", -1), ("markMasqBit", "13"), ("externalSetMarkChain", ""),
                # iptables-syntax conditions cni-multi cannot translate, or iptables itself refuses
                ("conditionsV4", ["-j", "ACCEPT"]), ("conditionsV4", ["-p", "udp"]),
                ("conditionsV4", ["--dport", "80"]), ("conditionsV4", ["-s", "10.0.0.0/8,10.1.0.0/16"]),
                ("conditionsV4", ["-m", "udp", "--dport", "53"]), ("conditionsV6", ["-s", "10.0.0.1"]),
                # nft-syntax conditions cni-multi cannot encode
                ("conditionsV4", ["tcp dport 5"]), ("conditionsV6", ["ip saddr 10.0.0.1"])],
    "firewall": [("backend", 5), ("backend", "bogus"), ("ingressPolicy", "bogus"), ("ingressPolicy", 5),
                 ("firewalldZone", 5), ("firewalldZone", True), ("iptablesAdminChainName", 5),
                 ("iptablesAdminChainName", "x" * 29), ("prevResult", []), ("prevResult", {"interfaces": 5})],
    "flannel": [("subnetFile", 5), ("dataDir", []), ("delegate", "x"), ("delegate", {"name": "x"}),
                ("delegate", {"type": 5}), ("ipam", "x")],
}
for p, keys in TYPED.items():
    for k, v in keys:
        # A prevResult that is no result is a decoding failure (6), as in every chained plugin.
        code = 6 if k == "prevResult" else 7
        extra = dict(KNOWN.get((p, k, json.dumps(v)), {}))
        code = extra.pop("code", code)
        case(p, f"{k} = {json.dumps(v)[:40]}", code, config=with_(p, **{k: v}), **extra)

# portmap: a key of the other layout than the one asked for
case("portmap", "externalSetMarkChain with backend nftables", 7,
     config=with_("portmap", backend="nftables", externalSetMarkChain="KUBE-MARK-MASQ"))
case("portmap", "nft conditions with backend iptables", 7,
     config=with_("portmap", backend="iptables", conditionsV4=["ip saddr 10.0.0.0/8"]))
case("portmap", "iptables and nft conditions together", 7,
     config=with_("portmap", conditionsV4=["-s", "10.0.0.0/8"], conditionsV6=["ip6 saddr fd00::/8"]))
case("portmap", "markMasqBit with externalSetMarkChain", 7,
     config=with_("portmap", markMasqBit=13, externalSetMarkChain="KUBE-MARK-MASQ"))

# ranges and values inside IPAM
for p in ["host-local", "bridge", "ptp"]:
    for note, ranges in [("subnet is not a CIDR", [[{"subnet": "10.77.0.0"}]]),
                         ("subnet is a number", [[{"subnet": 5}]]),
                         ("rangeStart outside the subnet", [[{"subnet": "10.77.0.0/24", "rangeStart": "10.78.0.1"}]]),
                         ("unicode subnet", [[{"subnet": "10.77.0.0\u2044 24"}]]),
                         ("ranges is a string", "x")]:
        ipam = dict(HL, ranges=ranges)
        # host-local answers value errors (not shape errors) with the reference's 999.
        shape = note in ("subnet is a number", "ranges is a string")
        case(p, note, 7 if shape else 999, config=with_(p, ipam=ipam))
# CNI_ARGS
for p in ["host-local", "static", "tuning", "bridge"]:
    for note, a in [("CNI_ARGS without =", "IP"), ("unknown CNI_ARGS key", "FOO=bar"),
                    ("CNI_ARGS IP not an address", "IP=x"), ("CNI_ARGS unicode key", "\u00e9=1")]:
        # host-local, static and tuning keep the reference's 999 for CNI_ARGS they cannot use;
        # bridge reads them itself (the MAC) and calls them a bad environment (4).
        case(p, note, 4 if p == "bridge" else 999, env={"CNI_ARGS": a})
# paths
case("flannel", "subnetFile does not exist", 999, config=with_("flannel", subnetFile="/nonexistent/subnet.env"))
case("flannel", "subnetFile is a FIFO", 999, config=with_("flannel", subnetFile="@FIFO@"))
case("flannel", "subnetFile is a directory", 999, config=with_("flannel", subnetFile="@DIR@"))
case("host-local", "resolvConf is a FIFO", 999, config=with_("host-local", ipam=dict(HL, resolvConf="@FIFO@")),
     no_reference="the reference blocks on the FIFO until killed")
case("host-local", "resolvConf is /dev/zero", 999, config=with_("host-local", ipam=dict(HL, resolvConf="/dev/zero")))
case("host-local", "dataDir is a regular file", 999, config=with_("host-local", ipam=dict(HL, dataDir="@FILE@")))

# The backend keys (#23): an unknown value is 7 naming the key, before anything is made (last,
# so that the reference's successes, which ignore the key, come after its other cases).
for p in ["bridge", "ptp"]:
    for v in ["bogus", "IPTABLES", 5]:
        case(p, f"ipMasqBackend = {json.dumps(v)} with ipMasq", 7,
             config=with_(p, ipMasq=True, ipMasqBackend=v), msg="ipMasqBackend")
case("firewall", "backend = \"IPTABLES\"", 7, config=with_("firewall", backend="IPTABLES"), msg="backend")

for c in cases:
    r = REFERENCE.get(f"{c['plugin']}|{c['note']}")
    if r is not None and r != c["code"]:
        c["reference"] = r
with open(os.path.join(HERE, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1, ensure_ascii=True)
    f.write("\n")
print(len(cases), "cases")
