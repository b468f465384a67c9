#!/usr/bin/env python3
"""Where a bridge (+ host-local) DEL waits: off-CPU time of the plugin process by kernel stack.

    sudo scripts/del-profile.py [-n RUNS] [--fifo] [--gap MS] [--cpu] [CASE ...]

A CASE is LABEL=BINARY:LAYOUT, LAYOUT one of iptables (ipMasq, ipMasqBackend "iptables", the
default on a node with iptables), nftables (ipMasq, ipMasqBackend "nftables") or none (no
ipMasq); or `floor`:
`ip -n <pod> link del eth0` of a pod the first case's binary added, the kernel's veth delete
from a process of its own. Default: ours-ipt=target/cni-multi:iptables,
ours-nft=target/cni-multi:nftables, ours-nomasq=target/cni-multi:none, floor. Two builds as
an A/B: `old-ipt=/tmp/old:iptables new-ipt=target/cni-multi:iptables`.

Each run: ADD of one pod (untimed), then its DEL as a runtime runs it (one process started
with posix_spawn in the node netns, config on stdin from a file, CNI_* env) while `perf sched
record -g` records every context switch with its kernel stack; cases alternate run by run.
Per DEL process, from `perf sched timehist`: run (on-CPU), sched delay (runnable but waiting
for a CPU, preemption included: the part that depends on the machine's load), and blocked
(asleep) time attributed to the stack it went to sleep in. `run + blocked` is what the DEL
would take on an idle machine. Also, from the same trace: whether the link deletion's
rcu_barrier (netdev_run_todo) started while the kworker of an nf_tables commit
(nf_tables_trans_destroy_work) sat in synchronize_rcu, i.e. whether it had to wait for that
grace period to end before its own.

--gap 0 runs the DEL right after its ADD, as `make bench` times them: the ADD's nf_tables
destroy work and late_close child are still in flight when the DEL starts.

--cpu samples instead where the DEL process's CPU time goes: one `perf record -a -g` (cpu-clock,
4999 Hz) over all runs, the DEL processes' samples sorted by the kernel entry point on their
stack (the veth delete, nf_tables, execve, page faults, files ...; user space when none), in
ms per run.

--fifo runs the DEL process (and the floor's ip) SCHED_FIFO 50, so on a loaded machine it gets
a CPU as soon as it is woken: fewer sched-delay samples, closer to an idle machine's order of
events. Medians in ms; the load average is printed with them.

Needs perf (linux-perf) with sched tracepoints, iproute2, root. Everything happens in two
namespaces of its own (node and pod) and a temp dir, removed at the end.
"""
import argparse, collections, ctypes, json, os, re, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def setns(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


class Proc:
    """A process started with posix_spawn (vfork, as a runtime's Go os/exec starts plugins):
    a fork of this Python would give the child a copy of its memory to tear down in execve,
    ~3 ms of CPU charged to the measured process. `netns`: entered by this process around
    the spawn, so the child starts in it. `fifo`: SCHED_FIFO 50 (inherited by the plugin's
    late_close child too, which only sleeps)."""

    def __init__(self, argv, env=None, stdin=None, netns=None, fifo=False):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        actions = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        if stdin:
            actions.append((os.POSIX_SPAWN_OPEN, 0, stdin, os.O_RDONLY, 0))
        home = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            if netns:
                ns = os.open(netns, os.O_RDONLY)
                try:
                    setns(ns)
                finally:
                    os.close(ns)
            if fifo:  # inherited through the spawn (not every Python has setscheduler=)
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
            self.pid = os.posix_spawn(argv[0], argv, env if env is not None else os.environ,
                                      file_actions=actions)
        finally:
            if fifo:
                os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            setns(home)
            os.close(home)
            os.close(out_w)
            os.close(err_w)
        self.out, self.err = out_r, err_r
        self.returncode = None

    def communicate(self):
        """Both outputs (small: read one, then the other) and the exit status."""
        res = []
        for fd in (self.out, self.err):
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
            os.close(fd)
            res.append(b"".join(chunks))
        self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return res


def classify(stack):
    """A blocked interval's kind, from the kernel stack the process went to sleep in."""
    if "rcu_barrier" in stack and "netdev_run_todo" in stack:
        return "DELLINK rcu_barrier (netdev_run_todo)"
    if "del_nbp" in stack:
        return "DELLINK bridge port (del_nbp: synchronize_net)"
    if "unregister_netdevice_many" in stack:
        return "DELLINK unregister (synchronize_net)"
    if "rtnl_dellink" in stack or "netdev_wait_allrefs" in stack:
        return "DELLINK other"
    if "__mutex_lock" in stack and "rtnl" in stack:
        return "RTNL lock (another process)"
    if "nfnetlink" in stack or "nf_tables" in stack:
        return "nf_tables"
    if "flock" in stack:
        return "flock"
    if "namespace_unlock" in stack:
        return "mount namespace (ip -n)"
    if "rwsem_down" in stack and ("mmap" in stack or "vma" in stack):
        return "mmap lock (held by another reader: perf, kdamond)"
    return "other: " + " <- ".join(stack.split(" <- ")[:4])


LINE = re.compile(r"\s*([\d.]+)\s+\[\d+\]\s+(.+?)\[(\d+)(?:/(\d+))?\]\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*(.*)")


def timehist(data):
    """Rows (switch-out time s, comm, tid, wait ms, sched delay ms, run ms, stack) by tid."""
    out = subprocess.run(["perf", "sched", "timehist", "-i", data, "--max-stack", "16"],
                         capture_output=True, text=True, check=True).stdout
    rows = collections.defaultdict(list)
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            t, comm, tid = float(m[1]), m[2], int(m[3])
            rows[tid].append((t, comm, float(m[5]), float(m[6]), float(m[7]), m[8]))
    return rows


def intervals(rows):
    """(went to sleep s, woken s, stack) of each blocked interval of one task."""
    out = []
    for a, b in zip(rows, rows[1:]):
        if not preempted(a[5]):
            # b's switch-out time minus its run is when it got the CPU; minus its sched delay
            # when it was woken.
            out.append((a[0], b[0] - (b[4] + b[3]) / 1000, a[5]))
    return out


def preempted(stack):
    """Switched out while runnable (preemption, a timeslice's end), not asleep."""
    top = stack.split(" <- ")[0]
    return top in ("irqentry_exit_to_user_mode", "exit_to_user_mode_loop", "__cond_resched") or top.startswith("preempt_schedule")


class Rig:
    def __init__(self, cases):
        self.tag = str(os.getpid())
        self.node, self.pod = f"cm-delprof-n{self.tag}", f"cm-delprof-p{self.tag}"
        self.dir = tempfile.mkdtemp(prefix="cm-delprof-")
        self.made = []
        for ns in (self.node, self.pod):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            self.made.append(ns)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        self.cases = {}
        for label, binary, layout in cases:
            d = os.path.join(self.dir, label)
            os.makedirs(d)
            for p in ("bridge", "host-local"):
                os.symlink(os.path.abspath(binary), os.path.join(d, p))
            c = {"cniVersion": "1.0.0", "name": "delprof", "type": "bridge", "bridge": "cni0",
                 "isGateway": True, "ipMasq": layout != "none",
                 "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": os.path.join(self.dir, "ipam")}}
            if layout != "none":
                c["ipMasqBackend"] = layout
            conf = os.path.join(d, "conf.json")
            with open(conf, "w") as f:
                json.dump(c, f)
            self.cases[label] = (d, conf)

    def close(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(self.dir, ignore_errors=True)

    def plugin(self, label, command, cid, fifo=False):
        d, conf = self.cases[label]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
               "CNI_NETNS": f"/run/netns/{self.pod}", "CNI_IFNAME": "eth0", "CNI_PATH": d,
               "CNI_MULTI_STATE_DIR": os.path.join(self.dir, "state")}

        return Proc([os.path.join(d, "bridge")], env=env, stdin=conf, netns=f"/run/netns/{self.node}", fifo=fifo)


def finish(p, what):
    out, err = p.communicate()
    if p.returncode != 0:
        sys.exit(f"{what} failed ({p.returncode}): {out.decode()} {err.decode()}")


class Recorder:
    """perf sched record, system-wide, started before and stopped after one DEL (its control
    fifo says when recording really runs: perf takes a while to set up)."""

    def __init__(self, data):
        self.ctl, self.ack = data + ".ctl", data + ".ack"
        for f in (self.ctl, self.ack):
            os.mkfifo(f)
        self.perf = subprocess.Popen(["perf", "sched", "record", "-g", "-o", data, "-D", "-1",
                                      "--control", f"fifo:{self.ctl},{self.ack}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cw, self.ar = open(self.ctl, "w"), open(self.ack)
        self.cw.write("enable\n")
        self.cw.flush()
        self.ar.readline()

    def stop(self):
        time.sleep(0.02)  # the late_close child and the kworkers' last switches
        self.perf.send_signal(2)
        self.perf.wait()
        self.cw.close()
        self.ar.close()
        os.unlink(self.ctl)
        os.unlink(self.ack)


def measure(rig, label, first, it, fifo, gap, cpu=False):
    cid = f"delprof-{it}"
    add_label = first if label == "floor" else label
    data = os.path.join(rig.dir, "sched.data")
    if cpu:
        finish(rig.plugin(add_label, "ADD", cid), f"{add_label} ADD")
        time.sleep(0.2 if gap is None else gap / 1000)
        if label == "floor":
            p = Proc([shutil.which("ip"), "-n", rig.pod, "link", "del", "eth0"], fifo=fifo)
            finish(p, "ip link del")
            finish(rig.plugin(first, "DEL", cid), f"{first} DEL")
        else:
            p = rig.plugin(label, "DEL", cid, fifo)
            finish(p, f"{label} DEL")
        return p.pid
    if gap is None:
        finish(rig.plugin(add_label, "ADD", cid), f"{add_label} ADD")
        time.sleep(0.2)
    rec = Recorder(data)
    try:
        if gap is not None:
            finish(rig.plugin(add_label, "ADD", cid), f"{add_label} ADD")
            time.sleep(gap / 1000)
        t0 = time.monotonic()
        if label == "floor":
            p = Proc([shutil.which("ip"), "-n", rig.pod, "link", "del", "eth0"], fifo=fifo)
            finish(p, "ip link del")
        else:
            p = rig.plugin(label, "DEL", cid, fifo)
            finish(p, f"{label} DEL")
        wall = (time.monotonic() - t0) * 1000
    finally:
        rec.stop()  # also on a failure: no perf left recording
    if label == "floor":
        finish(rig.plugin(first, "DEL", cid), f"{first} DEL")  # rules and the reservation
    rows = timehist(data)
    os.unlink(data)
    mine = rows.get(p.pid, [])
    r = collections.Counter({"wall (incl. spawn)": wall})
    for a, b in zip(mine, mine[1:]):
        if preempted(a[5]):
            r["sched delay"] += b[2]  # runnable all along
        else:
            r["blocked: " + classify(a[5])] += b[2] - b[3]
            r["sched delay"] += b[3]
    r["run"] = sum(x[4] for x in mine)
    r["run + blocked"] = r["run"] + sum(v for k, v in r.items() if k.startswith("blocked"))
    # The nf_tables destroy work's grace period against the rcu_barrier.
    barrier = [iv for iv in intervals(mine) if "rcu_barrier" in iv[2] and "netdev_run_todo" in iv[2]]
    start = mine[0][0] - mine[0][4] / 1000 if mine else 0
    gp = [iv for tid, rs in rows.items() for iv in intervals(rs)
          if "nf_tables_trans_destroy_work" in iv[2] and "synchronize_rcu" in iv[2] and iv[1] >= start]
    gp.sort()
    if gp:
        r["nft destroy work's synchronize_rcu"] = (gp[0][1] - gp[0][0]) * 1000
    if barrier:
        b0, b1, _ = barrier[0]
        inside = [g for g in gp if g[0] <= b0 < g[1]]
        if inside:
            r["barrier inside nft GP (count)"] += 1
            r["barrier: rest of nft GP sat through"] = (inside[0][1] - b0) * 1000
            r["barrier: after nft GP's end"] = (b1 - inside[0][1]) * 1000
    return r


CPU_KINDS = [  # first match on a sample's stack wins
    ("rtnl_dellink", "veth delete (RTM_DELLINK)"), ("nfnetlink", "nf_tables"), ("nf_tables", "nf_tables"),
    ("netlink_", "other netlink"), ("execve", "execve"), ("do_exit", "exit"), ("do_group_exit", "exit"),
    ("kernel_clone", "fork (late_close child)"), ("asm_exc_page_fault", "page faults"),
    ("setns", "namespaces (setns, mounts)"), ("unshare", "namespaces (setns, mounts)"),
    ("mount", "namespaces (setns, mounts)"), ("flock", "files"), ("vfs_", "files"), ("do_sys_open", "files"),
    ("do_unlinkat", "files"), ("do_renameat", "files"), ("ksys_", "files"), ("entry_SYSCALL", "other system calls"),
]


def cpu_profile(data, pids):
    """ms per run by kind, per case, from `perf record -g` samples of the processes in pids
    (label -> list of pids)."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,ip,sym"],
                         capture_output=True, text=True).stdout
    who = {p: label for label, ps in pids.items() for p in ps}
    kinds = {label: collections.Counter() for label in pids}
    pid, stack = None, []

    def flush():
        if pid in who:
            s = " ".join(stack)
            kind = next((k for key, k in CPU_KINDS if key in s), "user space")
            if kind == "other system calls":  # name it
                kind = next((f"system call {f[len('__x64_sys_'):]}" for f in stack if f.startswith("__x64_sys_")), kind)
            kinds[who[pid]][kind] += 1

    for line in out.splitlines():
        if not line.strip():
            continue
        if line.startswith("\t"):
            parts = line.split()
            stack.append(parts[1] if len(parts) > 1 else "?")
        else:
            flush()
            pid, stack = int(line.split()[0]), []
    flush()
    return {label: {k: n / 4.999 / len(pids[label]) for k, n in c.items()} for label, c in kinds.items()}


def parse_case(s):
    if s == "floor":
        return ("floor", None, None)
    label, rest = s.split("=", 1)
    binary, layout = rest.rsplit(":", 1)
    if layout not in ("iptables", "nftables", "none"):
        sys.exit(f"{s}: layout must be iptables, nftables or none")
    return (label, binary, layout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=10, help="runs per case (default 10)")
    ap.add_argument("--fifo", action="store_true", help="run the DEL process SCHED_FIFO")
    ap.add_argument("--gap", type=float, metavar="MS",
                    help="DEL this many ms after its ADD, recording from before the ADD (make bench "
                         "times DEL right after ADD: --gap 0); default: 200 ms, recording from then")
    ap.add_argument("--cpu", action="store_true", help="where the DEL's CPU time goes (perf record)")
    ap.add_argument("cases", nargs="*")
    a = ap.parse_args()
    ours = os.path.join(ROOT, "target", "cni-multi")
    specs = [parse_case(c) for c in (a.cases or [f"ours-ipt={ours}:iptables", f"ours-nft={ours}:nftables",
                                                 f"ours-nomasq={ours}:none", "floor"])]
    plugins = [c for c in specs if c[0] != "floor"]
    if not plugins:
        sys.exit("floor needs a plugin case first (its ADD)")
    rig = Rig(plugins)
    results = collections.defaultdict(list)
    loads = []
    perf, cpu = None, None
    try:
        if a.cpu:
            data = os.path.join(rig.dir, "cpu.data")
            perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "4999", "-o", data],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(2)  # perf's set-up
        for it in range(a.n):
            for label, _, _ in specs:
                results[label].append(measure(rig, label, plugins[0][0], it, a.fifo, a.gap, a.cpu))
            loads.append(float(open("/proc/loadavg").read().split()[0]))
        if perf:
            perf.send_signal(2)
            perf.wait()
            perf = None
            cpu = cpu_profile(data, results)
    finally:
        if perf:
            perf.kill()
            perf.wait()
        rig.close()
    gap = "200 ms" if a.gap is None else f"{a.gap:g} ms"
    print(f"{a.n} runs per case, load average {min(loads):.1f}-{max(loads):.1f}, "
          f"{'SCHED_FIFO' if a.fifo else 'normal priority'}, DEL {gap} after ADD; ms, median (min-max)"
          if not cpu else f"{a.n} runs per case, load average {min(loads):.1f}-{max(loads):.1f}; "
          f"CPU time of the DEL process by kind, ms per run (cpu-clock samples at 4999 Hz)")
    if cpu:
        for label, kinds in cpu.items():
            print(f"== {label}: {sum(kinds.values()):.2f} ms")
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
                if v >= 0.05:
                    print(f"  {k:40s} {v:6.2f}")
            print(f"  {'(each under 0.05 ms, together)':40s} {sum(v for v in kinds.values() if v < 0.05):6.2f}")
        return
    for label, rs in results.items():
        print(f"== {label}")
        for k in sorted({k for r in rs for k in r}):
            if k.endswith("(count)"):
                print(f"  {k:58s} {sum(r.get(k, 0) for r in rs)} of {len(rs)}")
                continue
            # A run without such an interval has none, not a zero one.
            v = [r[k] for r in rs if k in r] if k.startswith(("barrier:", "nft ")) else [r.get(k, 0.0) for r in rs]
            n = "" if len(v) == len(rs) else f" in {len(v)} runs"
            print(f"  {k:58s} {statistics.median(v):7.2f}  ({min(v):.2f}-{max(v):.2f}){n}")


if __name__ == "__main__":
    main()
