"""What a page of kubelet-sized objects costs to decode, as the cloud view reads it, and to
encode, as the emulator serves it; and a central store's answer for every node of a fleet.

For pages of `--page` Nodes and pods (sentinel.sim.nodes' kubelet-sized objects): the whole
page through `json.loads`, through the chunked parse the generic reflector uses
(adapters/jsonarray.py), and through the schema decoder the cloud view uses
(adapters/kubedecode.py: only the fields it reads are built); then `json.dumps` against
`msgspec.json.encode` for the emulator's answer. Then a Prometheus answer of `--series`
samples (`max by (node) (up)` over a fleet) through the general parse (adapters/jsonarray.py
and `_parse_vector`) and through adapters/promdecode.py. Best of `--repeat` runs each; then
the garbage collections one promdecode call sets off. Last line: `node_page_decode_ms=<n>
node_page_json_ms=<n> pod_page_decode_ms=<n> pod_page_json_ms=<n> prom_answer_decode_ms=<n>
prom_answer_general_ms=<n> prom_answer_full_collections=<n>`.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from sentinel.adapters.jsonarray import loads_split
from sentinel.adapters.kubedecode import ListDecoder, NodeSchema, PodSchema
from sentinel.adapters.prom import _parse_vector
from sentinel.adapters.promdecode import decode_vector
from sentinel.sim.nodes import kubelet_node, kubelet_pod


def best_ms(fn: Callable[[], Any], repeat: int) -> float:
    out = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out * 1000


def collections(fn: Callable[[], Any]) -> list[int]:
    """Young, middle and full collections one call sets off, with what existed before it
    frozen, as the service freezes after each cycle (http/heap.py)."""
    counts = [0, 0, 0]

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            counts[info["generation"]] += 1

    gc.collect()
    gc.freeze()
    gc.callbacks.append(seen)
    try:
        fn()
    finally:
        gc.callbacks.remove(seen)
        gc.unfreeze()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--page", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--series", type=int, default=100_000)
    a = ap.parse_args()
    figures: dict[str, float] = {}
    for kind, make, schema in (
            ("node", lambda i: kubelet_node(f"edge-{i:05d}", {"zone": "a"}), NodeSchema),
            ("pod", lambda i: kubelet_pod(f"app-{i:05d}", f"edge-{i:05d}", {"app": "x"}),
             PodSchema)):
        page = {"kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": "1", "continue": "x"},
                "items": [make(i) for i in range(a.page)]}
        raw = json.dumps(page).encode()
        dec = ListDecoder(schema)
        whole = best_ms(lambda raw=raw: json.loads(raw), a.repeat)
        chunked = best_ms(lambda raw=raw: loads_split(raw, ("items",)), a.repeat)
        typed = best_ms(lambda raw=raw, dec=dec: dec.page(raw), a.repeat)
        dumps = best_ms(lambda page=page: json.dumps(page).encode(), a.repeat)
        encode = best_ms(lambda page=page: msgspec.json.encode(page), a.repeat)
        print(f"{a.page} {kind}s, {len(raw) / 1e6:.1f} MB: decode json.loads {whole:.1f} ms, "
              f"chunked {chunked:.1f} ms, schema {typed:.1f} ms; encode json.dumps "
              f"{dumps:.1f} ms, msgspec {encode:.1f} ms", flush=True)
        figures[f"{kind}_page_decode_ms"] = typed
        figures[f"{kind}_page_json_ms"] = whole
    raw = json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"node": f"edge-{i // 200:03d}-{i % 200:04d}"}, "value": [1.8e9, "1"]}
        for i in range(a.series)]}}, separators=(",", ":")).encode()

    def general() -> object:
        body, result = loads_split(raw, ("data", "result"))
        body["data"]["result"] = result
        return _parse_vector(body, "max by (node) (up)")

    slow = best_ms(general, max(3, a.repeat // 4))
    fast = best_ms(lambda: decode_vector(raw), max(3, a.repeat // 4))
    young, middle, full = collections(lambda: decode_vector(raw))
    print(f"Prometheus answer of {a.series} series, {len(raw) / 1e6:.1f} MB: general parse "
          f"{slow:.0f} ms, promdecode {fast:.0f} ms, setting off {young} young, {middle} "
          f"middle and {full} full collections", flush=True)
    figures["prom_answer_decode_ms"], figures["prom_answer_general_ms"] = fast, slow
    figures["prom_answer_full_collections"] = full
    print(" ".join(f"{k}={v:.1f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
