"""The simulator's control endpoint: `sentinel sim inject` posts faults to it, and anyone can
read where the fleet's parts listen."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

__all__ = ["Controllable", "serve_control"]


class Controllable(Protocol):
    """What the control endpoint needs of the fleet (sim.fleet.Fleet)."""

    @property
    def sites(self) -> list[str]: ...

    def nodes(self, site: str | None = None) -> list[str]: ...

    def inject(self, kind: str, target: str, arg: str | None = None, *,
               period: float | None = None, count: int | None = None) -> str: ...

    def describe(self) -> dict[str, Any]:
        """Where the fleet's parts listen."""
        ...


def _number(req: dict[str, Any], key: str, kind: type[float] | type[int]) -> Any:
    v = req.get(key)
    return None if v is None else kind(v)


def serve_control(fleet: Controllable, port: int = 0) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            try:
                req = json.loads(self.rfile.read(n) or b"{}")
                msg = fleet.inject(str(req["fault"]), str(req["target"]), req.get("arg"),
                                   period=_number(req, "period", float),
                                   count=_number(req, "count", int))
                self._send(200, {"ok": True, "message": msg})
            except (KeyError, ValueError, TypeError) as e:
                self._send(400, {"ok": False, "error": str(e).strip("'\"")})

        def do_GET(self) -> None:
            self._send(200, fleet.describe())

    server = ThreadingHTTPServer(("127.0.0.1", port), H)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True, name="sim-control").start()
    return server
