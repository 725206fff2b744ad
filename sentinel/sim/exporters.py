"""Simulated edge nodes as a site's Prometheus scrapes them: one HTTP server per site, a path
per node and job (`/metrics/<node>/<job>`). A crashed node or component answers 503, which the
real Prometheus records as `up == 0`, exactly as for a dead exporter."""

from __future__ import annotations

import random
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["JOBS", "SiteExporters"]

JOBS = ("node-exporter", "edgecore", "kube-proxy", "coredns")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 3 or parts[0] != "metrics":
            self._reply(404, b"not found\n")
            return
        _, node, job = parts
        body = self.server.owner.render(node, job)
        if body is None:
            self._reply(503, b"down\n")
        else:
            self._reply(200, body.encode())

    def _reply(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: SiteExporters) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # Prometheus gave up on a scrape: not the exporter's problem
        super().handle_error(request, client_address)


class SiteExporters:
    def __init__(self, site: str, nodes: list[str], seed: int = 0) -> None:
        self.site = site
        self.nodes = list(nodes)
        self.crashed: set[str] = set()
        self.down: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"exporters-{site}",
                                        kwargs={"poll_interval": 0.1})

    @property
    def address(self) -> str:
        port = self._server.server_address[1]
        return f"127.0.0.1:{port}"

    def start(self) -> SiteExporters:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_crashed(self, node: str, crashed: bool) -> None:
        with self._lock:
            (self.crashed.add if crashed else self.crashed.discard)(node)

    def set_component(self, node: str, job: str, down: bool) -> None:
        with self._lock:
            (self.down.add if down else self.down.discard)((node, job))

    def heal(self, node: str | None = None) -> None:
        with self._lock:
            if node is None:
                self.crashed.clear()
                self.down.clear()
            else:
                self.crashed.discard(node)
                self.down = {d for d in self.down if d[0] != node}

    def render(self, node: str, job: str) -> str | None:
        with self._lock:
            if node not in self.nodes or job not in JOBS:
                return None
            if node in self.crashed or (node, job) in self.down:
                return None
            noise = self._rng.gauss(0, 1)
        if job == "node-exporter":
            return (f"node_load1 {max(0.0, 0.8 + 0.3 * noise):.3f}\n"
                    f"node_memory_MemAvailable_bytes {4e9 + 2e8 * noise:.0f}\n"
                    f"node_network_receive_errs_total {abs(int(3 * noise))}\n")
        return f'sim_component_info{{component="{job}"}} 1\n'
