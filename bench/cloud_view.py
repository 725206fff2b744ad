"""The cloud view's memory at fleet size: kubelet-sized Nodes and pods from the emulator,
through the official client, as `sentinel serve` keeps them.

Two child processes list and cache the same fleet, so each one's resident memory is its own:
- `sentinel`: what the service does — lists in pages (`cluster.list_page_size`), keeps only
  what `node_info` reads of a Node (`slim_node`) and only (uid, bound node) of a pod;
- `whole`: what it did before — one unpaginated list per kind, every Node kept whole.

Prints, per mode and at half and all of `--nodes`, the resident memory after sync and at
peak over a child that imported the same modules and listed nothing; then what one more node
costs (the difference between the two sizes over the nodes added) and what 100,000 nodes would.
Last line: `cloud_view_kb_per_node=<n> cloud_view_100k_nodes_mb=<n> whole_kb_per_node=<n>`.
Sizes: `--nodes` (default 10,000) and `--pods-per-node` (5); the emulator holds every object as
a dict, so 100,000 nodes and 500,000 pods would need about 10 GB here for the emulator alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

CHILD = r"""
import ctypes, gc, json, sys, time
from kubernetes import client
import yaml
from sentinel.adapters.kube import ClusterView
from sentinel.adapters.reflector import Reflector
from sentinel.config.loading import parse_config

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
url, mode = sys.argv[1], sys.argv[2]
cfg = parse_config(yaml.safe_dump({"sites": [{"name": "a", "prometheus": "http://x:1"}],
                                   "cluster": {"url": url}}), "bench.yaml", {})
api = client.ApiClient(client.Configuration(host=url))
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
base = rss("VmRSS")
t0 = time.perf_counter()
if mode == "sentinel":
    view = ClusterView(api, cfg)
    view.nodes_reflector._list()
    view.pods_reflector._list()
    n = len(view.nodes())
elif mode == "whole":
    core = client.CoreV1Api(api)
    nodes, bound = {}, {}
    Reflector("nodes", core.list_node, lambda items: nodes.update(
        (o["metadata"]["name"], o) for o in items), lambda *_: None, page_size=10**9)._list()
    Reflector("pods", core.list_pod_for_all_namespaces, lambda items: bound.update(
        (o["metadata"]["uid"], o["spec"].get("nodeName")) for o in items), lambda *_: None,
        page_size=10**9)._list()
    n = len(nodes)
else:
    n = 0
took = time.perf_counter() - t0
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)  # what is kept, not what malloc has not returned yet
print(json.dumps({"nodes": n, "rss_mb": rss("VmRSS") - base, "peak_mb": rss("VmHWM") - base,
                  "seconds": took}))
"""


def child(url: str, mode: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, url, mode], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    from sentinel.sim.kubeapi import KubeApiServer
    from sentinel.sim.nodes import kubelet_node, kubelet_pod
    from sentinel.sim.store import RESOURCES, Store

    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--pods-per-node", type=int, default=5)
    args = ap.parse_args()
    nodes_res, pods_res = RESOURCES[("", "v1", "nodes")], RESOURCES[("", "v1", "pods")]
    store = Store(history=100)
    srv = KubeApiServer(store).start()
    made = 0
    got: dict[int, dict[str, dict[str, float]]] = {}
    try:
        empty = child(srv.url, "none")
        for size in (args.nodes // 2, args.nodes):
            t0 = time.perf_counter()
            for i in range(made, size):
                name = f"edge-{i:06d}"
                store.create(nodes_res, "", kubelet_node(name, {
                    "topology.kubernetes.io/zone": "a"}))
                for k in range(args.pods_per_node):
                    labels = {"app": "x",
                              **({"apps.openyurt.io/binding": "true"} if k == 0 else {})}
                    store.create(pods_res, "default",
                                 kubelet_pod(f"app-{name}-{k}", name, labels))
            made = size
            gc.collect()
            print(f"emulator: {size} kubelet-sized nodes, {size * args.pods_per_node} pods "
                  f"({time.perf_counter() - t0:.0f} s to create)", flush=True)
            got[size] = {m: child(srv.url, m) for m in ("sentinel", "whole")}
            for mode, r in got[size].items():
                print(f"  {mode:<9} nodes={r['nodes']} "
                      f"rss_after_sync_mb={r['rss_mb'] - empty['rss_mb']:.0f} "
                      f"peak_mb={r['peak_mb'] - empty['peak_mb']:.0f} "
                      f"list_seconds={r['seconds']:.1f}", flush=True)
    finally:
        srv.stop()
    half, full = args.nodes // 2, args.nodes
    # The difference between the two sizes is what one more node costs; what both share (the
    # client, one page in flight, the allocator's arenas) cancels out.
    per = {m: (got[full][m]["rss_mb"] - got[half][m]["rss_mb"]) * 1024 / (full - half)
           for m in ("sentinel", "whole")}
    at_100k = got[full]["sentinel"]["rss_mb"] - empty["rss_mb"] + \
        per["sentinel"] * (100_000 - full) / 1024
    print(f"cloud_view_kb_per_node={per['sentinel']:.2f} cloud_view_100k_nodes_mb={at_100k:.0f} "
          f"whole_kb_per_node={per['whole']:.2f}")


if __name__ == "__main__":
    main()
