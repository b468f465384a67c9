#!/usr/bin/env python3
"""Writes the JSON-shaped seeds (fuzz/seeds/<target>/) and dictionaries (fuzz/dict/) of the
fuzz targets. The kernel-dump seeds of `netlink` and `nft` come from a real kernel instead:
`cargo test --lib fuzzing::seeds -- --ignored` (root; a throw-away netns)."""
import json, os, itertools

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = ["bridge", "dummy", "host-device", "ipvlan", "loopback", "macvlan", "ptp", "tap",
           "vlan", "host-local", "static", "firewall", "flannel", "portmap", "tuning"]
V = "1.1.0"
HL = {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24", "gateway": "10.1.0.1"}],
                                        [{"subnet": "fd00::/64", "rangeStart": "fd00::10", "rangeEnd": "fd00::20"}]],
      "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00::1"}], "dataDir": "/nonexistent/x"}
PREV = {"cniVersion": V, "interfaces": [{"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/var/run/netns/x", "mtu": 1400,
         "socketPath": "/s", "pciID": "0000:00:01.0"}],
        "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
                {"address": "fd00::5/64", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1360, "priority": 5,
                    "table": 100, "scope": 0}],
        "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local", "search": ["a"], "options": ["ndots:5"]}}
PREV04 = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/x"}],
          "ips": [{"version": "4", "address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 0}],
          "routes": [{"dst": "0.0.0.0/0"}], "dns": {}}
PREV02 = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/24", "gateway": "10.1.0.1",
          "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]}, "ip6": {"ip": "fd00::5/64"}, "dns": {}}
VALID = [{"container_id": "c1", "ifname": "eth0"}]
RC = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "0.0.0.0"},
                       {"HostPort": 53, "ContainerPort": 53, "Protocol": "udp"}],
      "ips": ["10.1.0.7/24"], "mac": "0a:58:0a:01:00:07", "bandwidth": {"ingressRate": 1000, "ingressBurst": 100},
      "ipRanges": [[{"subnet": "10.2.0.0/24"}]], "deviceID": "0000:00:01.0", "aliases": ["a"], "cgroupPath": "/x"}

def conf(t, **kw):
    c = {"cniVersion": V, "name": "net1", "type": t}
    c.update(kw)
    return c

CONFIGS = {
    "bridge": [conf("bridge", bridge="cni0", isGateway=True, ipMasq=True, hairpinMode=True, mtu=1400,
                    promiscMode=True, vlan=100, vlanTrunk=[{"id": 5}, {"minID": 10, "maxID": 20}],
                    preserveDefaultVlan=False, macspoofchk=True, enabledad=True, forceAddress=True,
                    isDefaultGateway=True, disableContainerInterface=False, portIsolation=True,
                    ipam=HL, runtimeConfig=RC, args={"cni": {"mac": "0a:58:00:00:00:01"}}),
               conf("bridge", ipam={}, prevResult=PREV)],
    "dummy": [conf("dummy", mtu=1500, ipam=HL)],
    "host-device": [conf("host-device", device="eth1"), conf("host-device", hwaddr="aa:bb:cc:dd:ee:ff"),
                    conf("host-device", kernelpath="/sys/devices/x"), conf("host-device", pciBusID="0000:00:01.0",
                    runtimeConfig={"deviceID": "0000:00:02.0"}, ipam=HL)],
    "ipvlan": [conf("ipvlan", master="eth0", mode="l3s", mtu=1500, linkInContainer=False, ipam=HL)],
    "loopback": [conf("loopback"), conf("loopback", prevResult=PREV)],
    "macvlan": [conf("macvlan", master="eth0", mode="bridge", mtu=1500, mac="aa:bb:cc:dd:ee:ff",
                     linkInContainer=True, bcqueuelen=100, runtimeConfig={"mac": "aa:bb:cc:dd:ee:01"}, ipam=HL)],
    "ptp": [conf("ptp", mtu=1400, ipMasq=True, ipMasqBackend="nftables", ipam=HL, dns={"nameservers": ["1.1.1.1"]})],
    "tap": [conf("tap", mac="aa:bb:cc:dd:ee:ff", mtu=1500, selinuxcontext="x", multiQueue=True, owner=0,
                 group=0, bridge="br0", ipam=HL)],
    "vlan": [conf("vlan", master="eth0", vlanId=100, mtu=1500, linkInContainer=False, ipam=HL)],
    "host-local": [conf("x", ipam=HL), conf("x", ipam={"type": "host-local", "subnet": "10.1.0.0/16",
                   "rangeStart": "10.1.0.10", "rangeEnd": "10.1.0.20", "gateway": "10.1.0.1"},
                   args={"cni": {"ips": ["10.1.0.11"]}}, runtimeConfig={"ips": ["10.1.0.12"]},
                   **{"cni.dev/valid-attachments": VALID})],
    "static": [conf("x", ipam={"type": "static", "addresses": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1"},
               {"address": "fd00::5/64"}], "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["1.1.1.1"]}},
               args={"cni": {"ips": ["10.1.0.6/24"]}}, runtimeConfig={"ips": ["10.1.0.7/24"]})],
    "firewall": [conf("firewall", backend="iptables", ingressPolicy="same-bridge", iptablesAdminChainName="ADM",
                      firewalldZone="trusted", prevResult=PREV),
                 conf("firewall", ingressPolicy="isolated", prevResult=PREV04, cniVersion="0.4.0")],
    "flannel": [conf("flannel", subnetFile="/run/flannel/subnet.env", dataDir="/var/lib/cni/flannel",
                     delegate={"isDefaultGateway": True, "hairpinMode": True},
                     ipam={"routes": [{"dst": "10.0.0.0/8"}]}, runtimeConfig={"portMappings": []})],
    "portmap": [conf("portmap", snat=True, backend="nftables", conditionsV4=["-s", "1.2.3.4", "!", "-d", "10.0.0.0/8"],
                     conditionsV6=["-d", "fd00::/8"], masqAll=True, runtimeConfig=RC, prevResult=PREV,
                     **{"cni.dev/valid-attachments": VALID})],
    "tuning": [conf("tuning", sysctl={"net.core.somaxconn": "500", "net.ipv4.conf.IFNAME.arp_filter": "1"},
                    mac="aa:bb:cc:dd:ee:ff", promisc=True, mtu=1400, txQLen=1000, allmulti=True,
                    dataDir="/x", prevResult=PREV, runtimeConfig={"mac": "aa:bb:cc:dd:ee:02"},
                    args={"cni": {"mtu": 1300, "sysctl": {"net.ipv4.conf.IFNAME.forwarding": "1"}}})],
}

SUBNET_ENV = ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n"
              "FLANNEL_IPMASQ=true\nFLANNEL_IPV6_NETWORK=fd00::/56,fd01::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\n")

def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

def j(v):
    return json.dumps(v, indent=1).encode()

for i, p in enumerate(PLUGINS):
    for k, c in enumerate(CONFIGS[p]):
        for verb in range(4 if p in ("portmap", "firewall") else 1):
            write("plugin_config", f"{p}-{k}-{verb}", bytes([i + verb * len(PLUGINS)]) + j(c))
for n, a in enumerate(["IgnoreUnknown=1;IP=10.1.0.9;K8S_POD_NAME=p", "MAC=aa:bb:cc:dd:ee:ff", "IP=fd00::9",
                       "IgnoreUnknown=true;X=y", "IP=10.1.0.9/24"]):
    for p in ("host-local", "static", "tuning", "bridge", "macvlan", "tap"):
        write("cni_args", f"{n}-{p}", a.encode() + b"\0" + j(CONFIGS[p][0]))
for n, r in enumerate([PREV, PREV04, PREV02, {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8"}]},
                       {"interfaces": [], "ips": [], "dns": {}}]):
    for sel in range(7):
        write("result", f"{n}-{sel}", bytes([sel]) + j(r))
lst = {"cniVersion": V, "name": "net1", "disableCheck": False, "disableGC": False,
       "plugins": [dict(CONFIGS["bridge"][0], capabilities={"ips": True, "mac": True}),
                   dict(CONFIGS["portmap"][0], capabilities={"portMappings": True})]}
write("runtime_config", "list", j(RC) + b"\0" + j(lst))
write("runtime_config", "single", j(RC) + b"\0" + j(dict(CONFIGS["tuning"][0], capabilities={"mac": True})))
for p in PLUGINS:
    write("runtime_config", f"conf-{p}", b"{}\0" + j(CONFIGS[p][0]))
write("subnet_env", "dual", SUBNET_ENV.encode() + b"\0" + j(CONFIGS["flannel"][0]))
write("subnet_env", "v4", b"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\n"
      b"FLANNEL_IPMASQ=false\n\0" + j(conf("flannel", delegate={"type": "ptp"})))
write("cache_file", "v1", j({"kind": "cniCacheV1", "containerId": "c1", "config": "eyJ9", "ifName": "eth0",
      "networkName": "n", "netns": "/x", "cniArgs": [["IgnoreUnknown", "1"]],
      "capabilityArgs": {"portMappings": []}, "result": PREV}))
write("cache_file", "legacy", j(PREV))
files = [("10.1.0.2", b"c1\r\neth0"), ("10.1.0.3", b"c2"), ("10.1.0.4", b""), ("last_reserved_ip.0", b"10.1.0.3"),
         ("fd00::10", b"c1\r\neth0"), ("last_reserved_ip.1", b"fd00::10"), (".tmp-1-1", b"x"), ("lock", b"")]
for n, c in enumerate(CONFIGS["host-local"]):
    body = b"".join(a.encode() + b"\0" + b + b"\0" for a, b in files)
    write("host_local", f"{n}", j(dict(c, prevResult=PREV)) + b"\0" + body)
    write("host_local", f"{n}-empty", j(c))
for n, (k, i) in enumerate([("net.ipv4.conf.IFNAME.arp_filter", "eth0"), ("net/ipv6/conf/IFNAME/accept_ra", "eth0.100"),
                            ("net.core.somaxconn", ""), ("net.ipv4.conf.IFNAME.x", "..")]):
    write("sysctl_name", f"{n}", i.encode() + b"\0" + k.encode())
# DHCP: an offer with the common options, one with overload.
def dhcp(opts, overload=None):
    b = bytearray(236)
    b[0], b[1], b[2] = 2, 1, 6
    b[4:8] = b"\x12\x34\x56\x78"; b[16:20] = bytes([10, 0, 0, 5]); b[28:34] = b"\xaa\xbb\xcc\xdd\xee\xff"
    if overload:
        b[108:113] = bytes([15, 3]) + b"abc"[:3]
    b += b"\x63\x82\x53\x63"
    for code, val in opts:
        b += bytes([code, len(val)]) + val
    return bytes(b) + b"\xff"
base = [(53, b"\x02"), (54, bytes([10, 0, 0, 1])), (51, b"\x00\x00\x0e\x10"), (58, b"\x00\x00\x07\x08"),
        (59, b"\x00\x00\x0c\x4e"), (1, bytes([255, 255, 255, 0])), (3, bytes([10, 0, 0, 1])),
        (6, bytes([8, 8, 8, 8, 1, 1, 1, 1])), (15, b"example.org"), (119, b"\x07example\x03org\x00"),
        (121, bytes([24, 10, 2, 0, 10, 0, 0, 1, 0, 10, 0, 0, 1]))]
write("dhcp_packet", "offer", dhcp(base))
write("dhcp_packet", "ack-overload", dhcp([(53, b"\x05"), (52, b"\x01")], overload=True))

KEYS = ["cniVersion", "name", "type", "ipam", "dns", "prevResult", "runtimeConfig", "args", "cni",
        "cni.dev/valid-attachments", "cni.dev/attachments", "capabilities", "plugins", "disableCheck", "disableGC",
        "interfaces", "ips", "routes", "dst", "gw", "gateway", "address", "interface", "version", "ip4", "ip6",
        "mac", "sandbox", "mtu", "socketPath", "pciID", "advmss", "priority", "table", "scope", "nameservers",
        "domain", "search", "options", "container_id", "ifname", "portMappings", "hostPort", "containerPort",
        "protocol", "hostIP", "ipRanges", "bandwidth", "deviceID", "aliases", "cgroupPath", "subnet", "rangeStart",
        "rangeEnd", "ranges", "dataDir", "resolvConf", "addresses", "bridge", "isGateway", "isDefaultGateway",
        "forceAddress", "ipMasq", "ipMasqBackend", "hairpinMode", "promiscMode", "vlan", "vlanTrunk", "id", "minID",
        "maxID", "preserveDefaultVlan", "macspoofchk", "enabledad", "disableContainerInterface", "portIsolation",
        "master", "mode", "linkInContainer", "bcqueuelen", "device", "hwaddr", "kernelpath", "pciBusID",
        "vlanId", "selinuxcontext", "multiQueue", "owner", "group", "backend", "ingressPolicy",
        "iptablesAdminChainName", "firewalldZone", "subnetFile", "delegate", "snat", "conditionsV4", "conditionsV6",
        "masqAll", "markMasqBit", "externalSetMarkChain", "sysctl", "promisc", "txQLen", "allmulti", "kind",
        "cniCacheV1", "containerId", "config", "ifName", "networkName", "netns", "cniArgs", "capabilityArgs",
        "result", "labels", "IPs", "MAC", "PortMappings", "HostPort", "ContainerPort", "Protocol", "HostIP",
        # Other spellings Go's decoder (and cni::gokeys) accepts.
        "RuntimeConfig", "IPAM", "Type", "Name", "CNIVersion", "PrevResult", "IPMasq", "isgateway", "Ranges",
        "Subnet", "SysCtl", "DNS"]
VALUES = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "tcp", "udp", "sctp", "bridge",
          "l2", "l3", "l3s", "private", "vepa", "passthru", "source", "open", "same-bridge", "isolated",
          "iptables", "nftables", "firewalld", "10.1.0.0/24", "10.1.0.1", "fd00::/64", "fd00::1", "0.0.0.0/0",
          "::/0", "aa:bb:cc:dd:ee:ff", "IFNAME", "host-local", "static", "-s", "-d", "!", "--dport", "-p"]
def dict_file(target, words):
    with open(os.path.join(HERE, "dict", f"{target}.dict"), "w") as f:
        for w in words:
            b = w.encode("latin-1") if isinstance(w, str) else w
            esc = "".join(chr(c) if 32 <= c < 127 and c not in (34, 92) else f"\\x{c:02x}" for c in b)
            f.write(f'"{esc}"\n')
json_words = [f'"{k}":' for k in KEYS] + [f'"{v}"' for v in VALUES] + ["true", "false", "null", "-1",
              "4294967296", "1e309", "[]", "{}", "\\u0000", "\\ud800",
              # The runes Go's foldName maps onto ASCII letters: dotless i, long s, Kelvin sign.
              "\xc4\xb1", "\xc5\xbf", "\xe2\x84\xaa"]
for t in ("plugin_config", "result", "runtime_config", "cache_file", "host_local"):
    dict_file(t, json_words)
dict_file("cni_args", json_words + ["IgnoreUnknown=1", "IP=", "MAC=", "K8S_POD_NAME=", ";", "="])
dict_file("subnet_env", json_words + ["FLANNEL_NETWORK=", "FLANNEL_SUBNET=", "FLANNEL_MTU=", "FLANNEL_IPMASQ=",
          "FLANNEL_IPV6_NETWORK=", "FLANNEL_IPV6_SUBNET=", "\n"])
dict_file("sysctl_name", ["IFNAME", ".", "/", "..", "net", "ipv4", "ipv6", "conf", "proc", "sys", "\x00"])
dict_file("dhcp_packet", ["\x63\x82\x53\x63", "\x35\x01\x02", "\x34\x01\x03", "\xff"])
dict_file("dhcp_rpc", ["CONNECT /_goRPC_ HTTP/1.0\n\n", "\xff\x81", "\xff\x82", "\xff\x83", "\x03\x01\x01",
          "Request", "Response", "CmdArgs", "Result", "ServiceMethod", "Seq", "Error", "DHCP.Allocate",
          "DHCP.Release", "StdinData", "IPs", "Routes", "Address", "Mask", "\x04\x0a\x00\x00\x01", "\x00"])
# dhcp_rpc's seeds are the captures of Debian's 1.1.1 plugin and daemon that its unit tests use.
import shutil
os.makedirs(os.path.join(HERE, "seeds", "dhcp_rpc"), exist_ok=True)
_td = os.path.join(HERE, "..", "src", "ipam", "dhcp", "testdata")
for _f in sorted(f for f in os.listdir(_td) if f.endswith(".bin")):
    shutil.copy(os.path.join(_td, _f), os.path.join(HERE, "seeds", "dhcp_rpc", _f.removesuffix(".bin")))
dict_file("netlink", ["\x08\x00", "\x05\x00", "\x14\x00", "\x00\x00\x00\x00"])
dict_file("nft", ["\x08\x00", "\x0c\x00\x01\x00", "\x02\x00", "\x00\x00\x00\x00"])
