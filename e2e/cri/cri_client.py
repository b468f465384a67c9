#!/usr/bin/env python3
"""A tiny CRI client for make e2e (Debian has no crictl).

  cri_client.py SOCK version
  cri_client.py SOCK run NAME... [-p HOST:CONTAINER[/PROTO][@HOSTIP]]... [-a KEY=VALUE]...
        -> one "NAME ID" line per sandbox; several names are started concurrently (threads),
           as kubelet starts pods (exit 1 if any failed, the others still printed)
  cri_client.py SOCK status ID...  -> one "IP NETNS-PATH STATE" line per ID
  cri_client.py SOCK stop ID... | rm ID...   (concurrent for several IDs)

api.proto is compiled by grpcio-tools into CRI_GEN (a temp dir) on first use, so the
repository carries no generated code.
"""
import argparse, json, os, sys
from concurrent.futures import ThreadPoolExecutor

here = os.path.dirname(os.path.abspath(__file__))
gen = os.environ.get("CRI_GEN") or os.path.join("/tmp", "cri-gen-%d" % os.getpid())
if not os.path.exists(os.path.join(gen, "api_pb2_grpc.py")):
    from grpc_tools import protoc
    os.makedirs(gen, exist_ok=True)
    if protoc.main(["protoc", "-I" + here, "--python_out=" + gen, "--grpc_python_out=" + gen, "api.proto"]) != 0:
        sys.exit("cri_client: protoc failed")
sys.path.insert(0, gen)
import grpc  # noqa: E402
import api_pb2 as pb  # noqa: E402
import api_pb2_grpc as pbg  # noqa: E402

TIMEOUT = 120


def port(s):
    hip = ""
    if "@" in s:
        s, hip = s.split("@", 1)
    proto = "tcp"
    if "/" in s:
        s, proto = s.split("/", 1)
    h, c = s.split(":")
    return pb.PortMapping(protocol=pb.Protocol.Value(proto.upper()), host_port=int(h), container_port=int(c), host_ip=hip)


def each(fn, items):
    """fn over items, concurrently when there are several; returns [(item, result|Exception)]."""
    def safe(x):
        try:
            return fn(x)
        except Exception as e:  # reported per item; the others go on
            return e
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as ex:
        return list(zip(items, ex.map(safe, items)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sock")
    ap.add_argument("cmd", choices=["version", "run", "status", "stop", "rm"])
    ap.add_argument("args", nargs="*")
    ap.add_argument("-p", action="append", default=[])
    ap.add_argument("-a", action="append", default=[])
    a = ap.parse_args()
    rt = pbg.RuntimeServiceStub(grpc.insecure_channel("unix://" + a.sock))
    if a.cmd == "version":
        r = rt.Version(pb.VersionRequest(version="v1"), timeout=TIMEOUT)
        print(r.runtime_name, r.runtime_version, r.runtime_api_version)
        return 0

    def run(name):
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid="uid-" + name, namespace="e2e", attempt=0),
            hostname=name,
            port_mappings=[port(p) for p in a.p],
            annotations=dict(kv.split("=", 1) for kv in a.a),
        )
        return name + " " + rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=TIMEOUT).pod_sandbox_id

    def status(sid):
        r = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=True), timeout=TIMEOUT)
        spec = json.loads(r.info.get("info", "{}")).get("runtimeSpec", {})
        ns = [n.get("path", "") for n in spec.get("linux", {}).get("namespaces", []) if n.get("type") == "network"]
        return "%s %s %s" % (r.status.network.ip or "-", ns[0] if ns else "-", "ready" if r.status.state == 0 else "notready")

    def stop(sid):
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=TIMEOUT)
        return None

    def rm(sid):
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=TIMEOUT)
        return None

    fn = {"run": run, "status": status, "stop": stop, "rm": rm}[a.cmd]
    # status keeps its order (a caller reads line by line); it is cheap, so it is sequential.
    results = [(x, safe_call(fn, x)) for x in a.args] if a.cmd == "status" else each(fn, a.args)
    rc = 0
    for item, res in results:
        if isinstance(res, Exception):
            rc = 1
            msg = res.details() if isinstance(res, grpc.RpcError) else str(res)
            print("cri_client: %s %s: %s" % (a.cmd, item, msg), file=sys.stderr)
        elif res is not None:
            print(res)
    return rc


def safe_call(fn, x):
    try:
        return fn(x)
    except Exception as e:
        return e


if __name__ == "__main__":
    sys.exit(main())
