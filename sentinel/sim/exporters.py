"""Simulated edge nodes as a site's Prometheus scrapes them: one HTTP server per site, a path
per node and job (`/metrics/<node>/<job>`). A crashed node or component answers 503, which the
real Prometheus records as `up == 0`, exactly as for a dead exporter.

node-exporter serves the series sentinel's anomaly features read (CPU, load, memory, disk,
filesystem, network), edgecore the container restarts, all from the signal model in
signals.py: counters integrate its rates between scrapes, and a grey fault changes them while
every scrape still succeeds. `/metrics/_pods/apps` serves the site's application pods
(apps.py)."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import threading
import time
from http import HTTPStatus

import numpy as np

from sentinel.sim.apps import AppPods
from sentinel.sim.signals import CORES, GRAY_FAULTS, GrayFault, NodeSignals

__all__ = ["JOBS", "SiteExporters"]

JOBS = ("node-exporter", "edgecore", "kube-proxy", "coredns")


class _Server:
    """One event loop in one thread answers every scrape of the site. A thread per connection
    (http.server's way) meant a thousand threads at the largest demo, each waking for the GIL
    for every scrape: on a busy 2-core machine scrapes then timed out by the hundred and the
    fleet never looked healthy."""

    def __init__(self, owner: SiteExporters) -> None:
        self.owner = owner
        self.loop = asyncio.new_event_loop()
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.server_address = self._sock.getsockname()
        self._server: asyncio.Server | None = None
        self._started = threading.Event()
        self._writers: set[asyncio.StreamWriter] = set()

    def serve_forever(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self._server = await asyncio.start_server(self._client, sock=self._sock)
            self._started.set()

        self.loop.run_until_complete(start())
        try:
            self.loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                # ends each connection's reader, so its task returns (cancelling it instead
                # makes Python 3.11's streams log a CancelledError as a callback's error)
                writer.transport.abort()
            tasks = asyncio.all_tasks(self.loop)
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.close()

    def shutdown(self) -> None:
        """From another thread, while `serve_forever` runs (or is about to) there."""
        if self._started.wait(5):
            self.loop.call_soon_threadsafe(self.loop.stop)

    def shutdown_unstarted(self) -> None:
        self._sock.close()
        self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive, as Prometheus scrapes: a GET and its headers, no body."""
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
                code, body = self._answer(line)
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (
                                 code, HTTPStatus(code).phrase.encode(), len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the scraper hung up or gave up on a scrape: not the exporter's problem
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, line: list[str]) -> tuple[int, bytes]:
        if len(line) != 3 or line[0] != "GET":
            return 400, b"bad request\n"
        parts = line[1].split("?")[0].strip("/").split("/")
        if len(parts) != 3 or parts[0] != "metrics":
            return 404, b"not found\n"
        body = self.owner.render(parts[1], parts[2])
        return (503, b"down\n") if body is None else (200, body.encode())


class _NodeState:
    """One node's signals and the counters node-exporter would have accumulated."""

    def __init__(self, seed: int, site_seed: int) -> None:
        self.signals = NodeSignals(seed=seed, site_seed=site_seed)
        self.rng = np.random.default_rng(seed)
        self.t0 = time.time()
        self.last: float | None = None
        self.now: dict[str, float] = {}
        self.counters: dict[str, float] = dict.fromkeys(
            ("idle", "io", "io_weighted", "rx_errs", "retrans", "restarts"), 0.0)

    def advance(self) -> None:
        t = time.time() - self.t0
        r = {k: float(v[0]) for k, v in self.signals.rates(np.array([t]), self.rng).items()}
        dt = 0.0 if self.last is None else max(0.0, t - self.last)
        self.last = t
        c = self.counters
        io_busy = 0.2
        c["idle"] += (1 - r["cpu"]) * dt
        c["io"] += io_busy * dt
        c["io_weighted"] += r["disk_latency"] * io_busy * dt
        c["rx_errs"] += r["net_errors"] * dt
        c["retrans"] += r["retransmits"] * dt
        c["restarts"] += r["restarts"] * dt
        self.now = r


class SiteExporters:
    def __init__(self, site: str, nodes: list[str], seed: int = 0) -> None:
        self.site = site
        self.nodes = list(nodes)
        self.crashed: set[str] = set()
        self.down: set[tuple[str, str]] = set()
        self.flaky = 0.0
        """Fraction of scrapes that fail at random (a scrape storm: a Prometheus or a network
        that cannot keep up); 0 normally."""
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._state = {n: _NodeState(seed * 1000 + i, seed) for i, n in enumerate(nodes)}
        self.apps: AppPods | None = None
        """The application pods on these nodes (`/metrics/_pods/apps`), set by the fleet."""
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"exporters-{site}")

    @property
    def address(self) -> str:
        port = self._server.server_address[1]
        return f"127.0.0.1:{port}"

    def start(self) -> SiteExporters:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        else:
            self._server.shutdown_unstarted()

    def set_crashed(self, node: str, crashed: bool) -> None:
        with self._lock:
            (self.crashed.add if crashed else self.crashed.discard)(node)

    def set_component(self, node: str, job: str, down: bool) -> None:
        with self._lock:
            (self.down.add if down else self.down.discard)((node, job))

    def gray(self, node: str, kind: str, severity: float = 1.0, ramp: float = 5.0) -> None:
        """A grey failure from now on, reaching full strength after `ramp` seconds."""
        if kind not in GRAY_FAULTS:
            raise KeyError(f"no grey fault {kind!r}; faults: {', '.join(GRAY_FAULTS)}")
        with self._lock:
            st = self._state[node]
            t = time.time() - st.t0
            st.signals.faults.append(GrayFault(kind, t, math.inf, severity, ramp))

    def heal(self, node: str | None = None) -> None:
        with self._lock:
            if node is None:
                self.flaky = 0.0
                self.crashed.clear()
                self.down.clear()
                for st in self._state.values():
                    st.signals.faults.clear()
            else:
                self.crashed.discard(node)
                self.down = {d for d in self.down if d[0] != node}
                self._state[node].signals.faults.clear()

    def render(self, node: str, job: str) -> str | None:
        if node == "_pods" and job == "apps":
            return self.apps.render() if self.apps is not None else ""
        with self._lock:
            if node not in self.nodes or job not in JOBS:
                return None
            if node in self.crashed or (node, job) in self.down:
                return None
            if self.flaky and self._rng.random() < self.flaky:
                return None
            st = self._state[node]
            if job == "node-exporter":
                st.advance()
                return _node_exporter(st)
            if job == "edgecore":
                restarts = math.floor(st.counters["restarts"])
                return (f'sim_component_info{{component="{job}"}} 1\n'
                        'kube_pod_container_status_restarts_total{namespace="default",'
                        f'pod="app-{node}-0",container="app"}} {restarts}\n')
        return f'sim_component_info{{component="{job}"}} 1\n'


def _node_exporter(st: _NodeState) -> str:
    r, c = st.now, st.counters
    lines = [f'node_cpu_seconds_total{{cpu="{i}",mode="idle"}} {c["idle"]:.3f}'
             for i in range(CORES)]
    mem_total = 8e9
    fs_size = 100e9
    lines += [
        f"node_load1 {r['load']:.3f}",
        f"node_memory_MemTotal_bytes {mem_total:.0f}",
        f"node_memory_MemAvailable_bytes {(1 - r['memory']) * mem_total:.0f}",
        f'node_disk_io_time_seconds_total{{device="sda"}} {c["io"]:.4f}',
        f'node_disk_io_time_weighted_seconds_total{{device="sda"}} {c["io_weighted"]:.6f}',
        f'node_filesystem_size_bytes{{mountpoint="/"}} {fs_size:.0f}',
        f'node_filesystem_avail_bytes{{mountpoint="/"}} {(1 - r["disk_full"]) * fs_size:.0f}',
        f'node_network_receive_errs_total{{device="eth0"}} {c["rx_errs"]:.2f}',
        'node_network_transmit_errs_total{device="eth0"} 0',
        f"node_netstat_Tcp_RetransSegs {c['retrans']:.2f}",
    ]
    return "\n".join(lines) + "\n"
