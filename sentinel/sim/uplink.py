"""A site's uplink as sentinel sees it: a TCP proxy in front of the site's Prometheus.

Cutting it is a partition: the site's Prometheus keeps scraping its nodes on the local network,
but sentinel cannot reach it. `refuse` resets every connection at once; `blackhole` accepts and
never answers, as a dead WAN link does, so callers must rely on their own timeouts.
"""

from __future__ import annotations

import contextlib
import socket
import threading

__all__ = ["Uplink"]


class Uplink:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.mode = "up"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(128)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="uplink")

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Uplink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._drop_all()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def cut(self, mode: str = "refuse") -> None:
        if mode not in ("refuse", "blackhole"):
            raise ValueError("mode is refuse or blackhole")
        with self._lock:
            self.mode = mode
        self._drop_all()

    def restore(self) -> None:
        with self._lock:
            self.mode = "up"
        self._drop_all()  # held blackhole connections end; clients reconnect

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode == "blackhole":
                    self._conns.append(client)
                    continue
            if mode == "refuse":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                if src in self._conns:
                    self._conns.remove(src)
            src.close()
