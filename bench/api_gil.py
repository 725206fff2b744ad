"""What a worker thread's JSON parsing does to the API's latency.

sentinel answers `/status` on its event loop while worker threads parse fleet-sized answers (a
central Prometheus' presence answer, pages of kubelet-sized Nodes). `json.loads` holds the
GIL for a whole document; sentinel parses them with adapters/jsonarray.py instead, a chunk at
a time, and `sentinel serve` shortens the GIL's switch interval. Here a uvicorn app serves a
fixed body while one thread parses, back to back, a Prometheus answer of SERIES series (a
20,000-node fleet's `up` per job), the ordinary way or sentinel's, at the interpreter's switch
interval and at sentinel's; a client in another process asks 20 times a second and times each
answer.

Last line: api_gil_p99_ms_json_loads=<n> api_gil_p99_ms_split=<n> api_gil_p99_ms_serve=<n>
(serve: the split parse at sentinel's switch interval) and the idle p99.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sentinel.adapters.jsonarray import loads_split
from sentinel.cli.main import SWITCH_INTERVAL
from sentinel.sim.process import free_port

SERIES, SECONDS = 60_000, 12.0

CLIENT = """
import sys, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
c = httpx.Client()
deadline = time.monotonic() + 30
while True:
    try:
        c.get(url); break
    except httpx.HTTPError:
        if time.monotonic() > deadline: raise
        time.sleep(0.05)
lat, end = [], time.monotonic() + seconds
while time.monotonic() < end:
    t = time.perf_counter(); c.get(url); lat.append((time.perf_counter() - t) * 1000)
    time.sleep(0.05)
print(" ".join(f"{v:.2f}" for v in lat))
"""


def answer() -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"__name__": "up", "job": f"job-{i % 3}", "node": f"edge-{i:06d}",
                    "site": f"site-{i % 100:03d}", "instance": f"10.{i % 250}.{i % 200}.1:9100"},
         "value": [1700000000.123, "1"]} for i in range(SERIES)]}},
        separators=(",", ":")).encode()


def measure(parse: Callable[[], object] | None) -> list[float]:
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            if parse is None:
                stop.wait(0.1)
            else:
                parse()

    body = b'{"ok": true}' * 200

    async def status(_: Request) -> Response:
        return Response(body, media_type="application/json")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/status", status)]),
                                          host="127.0.0.1", port=port, log_level="warning"))

    async def run() -> list[float]:
        task = asyncio.create_task(server.serve())
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}/status", str(SECONDS),
            stdout=subprocess.PIPE)
        out, _ = await client.communicate()
        server.should_exit = True
        await task
        return [float(v) for v in out.split()]

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        return asyncio.run(run())
    finally:
        stop.set()
        worker.join()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def main() -> int:
    raw = answer()
    t = time.perf_counter()
    json.loads(raw)
    whole = time.perf_counter() - t
    t = time.perf_counter()
    loads_split(raw, ("data", "result"))
    split = time.perf_counter() - t
    print(f"answer: {SERIES} series, {len(raw) / 1e6:.1f} MB; json.loads {whole:.3f} s, "
          f"sentinel's split parse {split:.3f} s")
    p99 = {}
    default = sys.getswitchinterval()
    for name, parse, switch in (
            ("idle", None, default), ("json_loads", lambda: json.loads(raw), default),
            ("split", lambda: loads_split(raw, ("data", "result")), default),
            ("serve", lambda: loads_split(raw, ("data", "result")), SWITCH_INTERVAL)):
        sys.setswitchinterval(switch)
        lat = measure(parse)
        p99[name] = pct(lat, 0.99)
        print(f"{name:<11} switch={switch * 1000:g} ms requests={len(lat)} "
              f"p50={pct(lat, 0.5):.1f} ms "
              f"p99={p99[name]:.1f} ms max={max(lat):.1f} ms", flush=True)
    print(f"api_gil_p99_ms_idle={p99['idle']:.1f} api_gil_p99_ms_json_loads="
          f"{p99['json_loads']:.1f} api_gil_p99_ms_split={p99['split']:.1f} "
          f"api_gil_p99_ms_serve={p99['serve']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
