#!/usr/bin/env python3
"""A tiny CRI client for make e2e (Debian has no crictl).

  cri_client.py SOCK version
  cri_client.py SOCK run NAME [-p HOST:CONTAINER[/PROTO][@HOSTIP]]... [-a KEY=VALUE]...   -> sandbox id
  cri_client.py SOCK status ID     -> "IP NETNS-PATH"
  cri_client.py SOCK stop ID | rm ID

api.proto is compiled by grpcio-tools into CRI_GEN (a temp dir) on first use, so the
repository carries no generated code.
"""
import argparse, json, os, sys

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


def port(s):
    hip = ""
    if "@" in s:
        s, hip = s.split("@", 1)
    proto = "tcp"
    if "/" in s:
        s, proto = s.split("/", 1)
    h, c = s.split(":")
    return pb.PortMapping(protocol=pb.Protocol.Value(proto.upper()), host_port=int(h), container_port=int(c), host_ip=hip)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sock")
    ap.add_argument("cmd", choices=["version", "run", "status", "stop", "rm"])
    ap.add_argument("arg", nargs="?")
    ap.add_argument("-p", action="append", default=[])
    ap.add_argument("-a", action="append", default=[])
    a = ap.parse_args()
    rt = pbg.RuntimeServiceStub(grpc.insecure_channel("unix://" + a.sock))
    t = 60
    if a.cmd == "version":
        r = rt.Version(pb.VersionRequest(version="v1"), timeout=t)
        print(r.runtime_name, r.runtime_version, r.runtime_api_version)
    elif a.cmd == "run":
        cfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=a.arg, uid="uid-" + a.arg, namespace="e2e", attempt=0),
            hostname=a.arg,
            port_mappings=[port(p) for p in a.p],
            annotations=dict(kv.split("=", 1) for kv in a.a),
        )
        print(rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=t).pod_sandbox_id)
    elif a.cmd == "status":
        r = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=a.arg, verbose=True), timeout=t)
        spec = json.loads(r.info.get("info", "{}")).get("runtimeSpec", {})
        ns = [n.get("path", "") for n in spec.get("linux", {}).get("namespaces", []) if n.get("type") == "network"]
        print(r.status.network.ip, ns[0] if ns else "-")
    elif a.cmd == "stop":
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=a.arg), timeout=t)
    elif a.cmd == "rm":
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=a.arg), timeout=t)


if __name__ == "__main__":
    main()
