#!/usr/bin/env python3
"""Regenerate link/hot-functions-<target>.txt: the functions plugin runs execute, in first-execution order.

make build links them first and together (build.rs: lld --symbol-ordering-file), so that a
plugin process faults in a few hundred KiB of the binary instead of most of its text.

    sudo scripts/hot-functions/run.py      (root: it makes throw-away network namespaces)

It builds the release binary unstripped as make build does (same flags, no order file), runs
each plugin as a runtime would (one process per plugin, config on stdin) under bptrace, which
puts a breakpoint on the first byte of every function and logs each function once, maps the
addresses to symbol names, and writes the list. Everything happens in two namespaces of its
own (a node and a pod) and a temp dir; both are removed at the end. Re-run after large code
changes: names no longer in the binary are ignored by the linker, new ones just land later.

    scripts/hot-functions/run.py --translate FROM_TARGET     (TARGET=aarch64-unknown-linux-musl)

writes the list of a target whose binary cannot run here: the symbol names carry a hash that
differs between targets, so each name of FROM_TARGET's list is matched, hash aside, to the
names of TARGET's link map (every instance of a generic, which share the hashless name).
"""
import bisect, json, os, re, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# As make build (which passes its own when it runs this, CARGO_ENCODED_RUSTFLAGS, which cargo
# takes over RUSTFLAGS, and the musl targets' linker).
TARGET = os.environ.get("TARGET", "x86_64-unknown-linux-musl")
FLAGS = os.environ.get("RELEASE_RUSTFLAGS", "-C target-feature=+crt-static -C relocation-model=static")
for t in ("X86_64", "AARCH64"):
    os.environ.setdefault(f"CARGO_TARGET_{t}_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")


def sh(*a, **k):
    return subprocess.run(list(a), check=k.pop("check", True), **k)


def build(work):
    """The binary exactly as make build makes it (same flags and profile, so the same symbol
    names), without an order, with lld's link map: it is stripped."""
    # A fixed path: a changed one would make cargo relink.
    link_map = os.path.join(ROOT, "target", f"hot-functions-{TARGET}.map")
    env = dict(os.environ, RUSTFLAGS=FLAGS, CNI_MULTI_LINK_MAP=link_map)
    env.pop("CNI_MULTI_SYMBOL_ORDER", None)
    sh("cargo", "build", "--release", "--locked", "--target", TARGET, cwd=ROOT, env=env)
    if work is None:
        return symbols(link_map)
    binary = os.path.join(work, "cni-multi")
    sh("cp", os.path.join(ROOT, env.get("CARGO_TARGET_DIR", "target"), TARGET, "release", "cni-multi"), binary)
    tracer = os.path.join(work, "bptrace")
    sh("cc", "-O2", "-o", tracer, os.path.join(ROOT, "scripts", "hot-functions", "bptrace.c"))
    return binary, tracer, symbols(link_map)


def symbols(link_map):
    """(address, name) of every function lld placed in .text, sorted by address. The map
    prints names demangled; with function sections, the input section `.text.<name>` holds
    the linker's (mangled) name, which is what the order file needs."""
    syms, in_text, section = [], False, None
    with open(link_map) as f:
        for line in f:
            p = line.split(None, 4)  # a demangled name may hold spaces
            if len(p) != 5 or not all(c in "0123456789abcdef" for c in p[0]):
                continue
            name = p[4].rstrip("\n")
            if name.startswith("."):
                in_text = name == ".text"  # an output section
            elif ":(" in name and name.endswith(")"):
                sec = name.rsplit(":(", 1)[1][:-1]
                section = None
                for prefix in (".text.unlikely.", ".text.hot.", ".text.startup.", ".text."):
                    rest = sec[len(prefix):]
                    if sec.startswith(prefix) and rest.startswith(("_ZN", "_R")):
                        section = rest  # Rust's function sections: the mangled name
                        break
            elif in_text:
                syms.append((int(p[0], 16), section or name))
    syms.sort()
    return syms


class Rig:
    def __init__(self, binary, tracer, work, syms):
        self.tracer, self.work, self.n, self.traces = tracer, work, 0, []
        self.dir = os.path.join(work, "bin")
        os.makedirs(self.dir)
        for p in ["bridge", "dummy", "host-device", "ipvlan", "loopback", "macvlan", "ptp", "tap",
                  "vlan", "dhcp", "host-local", "static", "bandwidth", "firewall", "flannel",
                  "portmap", "sbr", "tuning", "vrf"]:
            os.symlink(binary, os.path.join(self.dir, p))
        with open(os.path.join(work, "funcs"), "w") as f:
            # One breakpoint per address: aliases share one.
            f.write("".join(f"{a:x}\n" for a in sorted({a for a, _ in syms})))
        tag = f"{os.getpid()}"
        self.node, self.pod = f"hotfn-node-{tag}", f"hotfn-pod-{tag}"
        sh("ip", "netns", "add", self.node)
        sh("ip", "netns", "add", self.pod)
        sh("ip", "-n", self.node, "link", "set", "lo", "up")

    def close(self):
        sh("ip", "netns", "del", self.node, check=False)
        sh("ip", "netns", "del", self.pod, check=False)

    def run(self, plugin, cmd, conf, ifname="eth0", cid="c1"):
        self.n += 1
        out = os.path.join(self.work, f"{self.n:03d}-{plugin}-{cmd}.ips")
        conf_file = os.path.join(self.work, "conf.json")
        with open(conf_file, "w") as f:
            json.dump(conf, f)
        env = [f"CNI_COMMAND={cmd}", f"CNI_CONTAINERID={cid}", f"CNI_NETNS=/run/netns/{self.pod}",
               f"CNI_IFNAME={ifname}", f"CNI_PATH={self.dir}"]
        sh("ip", "netns", "exec", self.node, self.tracer, os.path.join(self.work, "funcs"), out,
           conf_file, os.path.join(self.dir, plugin), plugin, *env)
        self.traces.append(out)
        with open(out + ".stdout") as f:
            printed = f.read()
        try:
            return json.loads(printed) if printed.strip() else None
        except ValueError:
            return None

    def chain(self, name, plugins, caps=None, ifname="eth0", check=False):
        """ADD through the list (each result feeds the next), CHECK if asked, DEL in reverse."""
        def conf(p, prev):
            c = dict(p, name=name, cniVersion="1.0.0")
            if prev:
                c["prevResult"] = prev
            if caps and "capabilities" in p:
                c["runtimeConfig"] = caps
            return c
        prev = None
        for p in plugins:
            prev = self.run(p["type"], "ADD", conf(p, prev), ifname, name) or prev
        if check:
            for p in plugins:
                self.run(p["type"], "CHECK", conf(p, prev), ifname, name)
        for p in reversed(plugins):
            self.run(p["type"], "DEL", conf(p, prev), ifname, name)


def scenarios(r, state):
    def hl(subnet):
        return {"type": "host-local", "subnet": subnet, "dataDir": f"{state}/{subnet.split('/')[0]}"}
    lo = {"type": "loopback", "name": "lo", "cniVersion": "1.0.0"}
    r.run("loopback", "VERSION", lo)
    # The bench's case 4 chain, then case 1: what nodes run most.
    r.chain("c4", [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                  "routes": [{"dst": "0.0.0.0/0"}], "dataDir": f"{state}/ipam"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "tuning"}],
        caps={"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
                               {"hostPort": 8443, "containerPort": 443, "protocol": "tcp"}]})
    r.chain("c1", [{"type": "bridge", "bridge": "cni1", "isGateway": True, "ipam": hl("10.89.0.0/24")}])
    h = {"type": "host-local", "name": "hl", "cniVersion": "1.0.0", "ipam": hl("10.93.0.0/24")}
    r.run("host-local", "ADD", h, cid="h")
    r.run("host-local", "DEL", h, cid="h")
    r.run("loopback", "ADD", lo, ifname="lo")
    r.run("loopback", "DEL", lo, ifname="lo")
    # The other plugins, with CHECK (on kernels without dummy links some only fail: their
    # error path is still what such a run executes).
    sh("ip", "-n", r.node, "link", "add", "hotm0", "type", "dummy", check=False)
    sh("ip", "-n", r.node, "link", "set", "hotm0", "up", check=False)
    r.chain("ptp", [{"type": "ptp", "ipMasq": True, "ipam": hl("10.90.0.0/24")}, {"type": "firewall"},
                    {"type": "bandwidth", "ingressRate": 1000000, "ingressBurst": 100000,
                     "egressRate": 1000000, "egressBurst": 100000}], ifname="eth1", check=True)
    r.chain("macvlan", [{"type": "macvlan", "master": "hotm0",
                         "ipam": {"type": "static", "addresses": [{"address": "10.91.0.5/24"}]}}],
            ifname="eth2", check=True)
    r.chain("ipvlan", [{"type": "ipvlan", "master": "hotm0", "ipam": hl("10.92.0.0/24")}], ifname="eth3", check=True)
    r.chain("vlan", [{"type": "vlan", "master": "hotm0", "vlanId": 7, "ipam": hl("10.94.0.0/24")}],
            ifname="eth4", check=True)
    r.chain("dummy", [{"type": "dummy", "ipam": hl("10.95.0.0/24")}, {"type": "sbr"}], ifname="eth5", check=True)
    r.chain("tap", [{"type": "tap", "ipam": hl("10.96.0.0/24")}], ifname="eth6", check=True)
    r.chain("vrf", [{"type": "bridge", "bridge": "cni2", "ipam": hl("10.97.0.0/24")},
                    {"type": "vrf", "vrfname": "blue"},
                    {"type": "tuning", "sysctl": {"net.ipv4.conf.eth7.rp_filter": "1"}, "mtu": 1400}],
            ifname="eth7", check=True)
    sh("ip", "-n", r.node, "link", "add", "hothd0", "type", "dummy", check=False)
    r.chain("hd", [{"type": "host-device", "device": "hothd0"}], ifname="eth8")
    r.run("bridge", "ADD", {"type": "bridge", "name": "bad", "cniVersion": "1.0.0",
                            "ipam": {"type": "host-local"}}, cid="bad")


def order_file(target):
    return os.path.join(ROOT, "link", f"hot-functions-{target}.txt")


def translate(source_target):
    """TARGET's list from SOURCE_TARGET's, by names without their hash (legacy mangling:
    _ZN<path>17h<16 hex>E)."""
    strip = re.compile(r"17h[0-9a-f]{16}E$")
    by_key = {}
    for _, name in build(None):
        by_key.setdefault(strip.sub("", name), []).append(name)
    seen, order, missed = set(), [], 0
    with open(order_file(source_target)) as f:
        names = f.read().split()
    for name in names:
        found = by_key.get(strip.sub("", name))
        missed += not found
        for n in found or []:
            if n not in seen:
                seen.add(n)
                order.append(n)
    dest = order_file(TARGET)
    with open(dest, "w") as f:
        f.write("\n".join(order) + "\n")
    print(f"{dest}: {len(order)} functions for the {len(names)} of {source_target} ({missed} not in {TARGET})")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--translate":
        return translate(sys.argv[2])
    if os.geteuid() != 0:
        sys.exit("run.py needs root: it makes throw-away network namespaces")
    work = tempfile.mkdtemp(prefix="hot-functions-")
    binary, tracer, syms = build(work)
    r = Rig(binary, tracer, work, syms)
    try:
        scenarios(r, os.path.join(work, "state"))
    finally:
        r.close()
    addrs = [a for a, _ in syms]
    seen, order = set(), []
    for t in r.traces:
        with open(t) as f:
            for line in f:
                i = bisect.bisect_right(addrs, int(line, 16)) - 1
                if i >= 0 and syms[i][1] not in seen:
                    seen.add(syms[i][1])
                    order.append(syms[i][1])
    dest = order_file(TARGET)
    with open(dest, "w") as f:
        f.write("\n".join(order) + "\n")
    sh("rm", "-rf", work)
    print(f"{dest}: {len(order)} functions from {len(r.traces)} plugin runs")


if __name__ == "__main__":
    main()
