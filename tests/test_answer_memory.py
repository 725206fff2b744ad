"""A Prometheus answer's body is freed when it is parsed, by reference counting alone.

httpx's Response and its stream refer to each other, so a Response is freed only by the
garbage collector, and the service freezes whatever is alive after each cycle (http/heap.py)
for up to ten minutes. A central store's presence answer is 6.5 MB a cycle at 100,000 nodes:
held by Responses, those bodies were 200 MB of bench/fleet.py's RSS. Here the collector is
off, as it is for frozen objects, and the memory fifteen answers leave behind is counted.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sentinel.adapters.prom import SiteTarget, query_instant, query_nodes
from sentinel.adapters.promdecode import NodeDecoder
from sentinel.anomaly.history import query_range

NODES = 10_000


def _answer(kind: str) -> bytes:
    if kind == "matrix":
        result = [{"metric": {"node": f"edge-{i:05d}"}, "values": [[1.0, "1"], [2.0, "1"]]}
                  for i in range(NODES)]
    else:
        result = [{"metric": {"node": f"edge-{i:05d}", "zone": f"z{i % 7}"},
                   "value": [1733.5, "1"]} for i in range(NODES)]
    return json.dumps({"status": "success",
                       "data": {"resultType": kind, "result": result}}).encode()


class _Prometheus(BaseHTTPRequestHandler):
    """Answers every query with the same big answer, gzipped when asked, as Prometheus."""

    bodies = {"vector": _answer("vector"), "matrix": _answer("matrix")}

    def do_GET(self) -> None:
        body = self.bodies["matrix" if "query_range" in self.path else "vector"]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def no_collector() -> Iterator[None]:
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()


def _left_after(ask: object, times: int) -> float:
    """MB still allocated after `times` answers, each parsed and dropped (one warm-up first:
    the client's pool and the decoders' caches are not what is measured)."""
    assert callable(ask)
    ask()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(times):
            ask()
        return (tracemalloc.get_traced_memory()[0] - before) / 1e6
    finally:
        tracemalloc.stop()


def test_instant_answers_are_freed_without_the_collector(prometheus: str,
                                                         no_collector: None) -> None:
    site = SiteTarget("a", prometheus, 10.0)
    size = len(_Prometheus.bodies["vector"]) / 1e6
    decoder = NodeDecoder("zone")

    async def run() -> float:
        async with httpx.AsyncClient() as client:
            got = await query_nodes(client, site, "max by (node, zone) (up)", 10.0, decoder)
            assert len(got) == NODES and got[3] == ("edge-00003", "z3", 1.0)
            pairs = await query_instant(client, site, "up", 10.0)
            assert len(pairs) == NODES and pairs[5] == ({"node": "edge-00005", "zone": "z5"}, 1.0)
            loop = asyncio.get_running_loop()

            def ask() -> None:
                asyncio.run_coroutine_threadsafe(
                    query_nodes(client, site, "max by (node, zone) (up)", 10.0, decoder),
                    loop).result()
            return await asyncio.to_thread(_left_after, ask, 15)

    left = asyncio.run(run())
    # 15 answers of 0.7 MB each, kept, would leave 11 MB (plus their Responses).
    assert left < size * 2, f"{left:.1f} MB left after 15 answers of {size:.1f} MB"


def test_range_answers_are_freed_without_the_collector(prometheus: str,
                                                       no_collector: None) -> None:
    size = len(_Prometheus.bodies["matrix"]) / 1e6
    with httpx.Client() as client:
        series = query_range(client, prometheus, "up", 0, 2, 1, 10.0)
        assert len(series) == NODES and series[0]["values"] == [[1.0, "1"], [2.0, "1"]]

        def ask() -> None:
            query_range(client, prometheus, "up", 0, 2, 1, 10.0)
        left = _left_after(ask, 15)
    assert left < size * 2, f"{left:.1f} MB left after 15 answers of {size:.1f} MB"
