"""The simulated exporters as a Prometheus meets them: keep-alive scrapes, a dead node's 503,
and one thread however many connections are open (a thread per connection starved the
largest demo's scrapes on a busy machine)."""

from __future__ import annotations

import socket
import threading
import time

import httpx

from sentinel.sim.exporters import JOBS, SiteExporters


def test_every_job_answers_on_one_kept_alive_connection_and_a_crash_answers_503() -> None:
    exp = SiteExporters("site-a", ["n1", "n2"]).start()
    try:
        with httpx.Client(base_url=f"http://{exp.address}") as c:
            for _ in range(3):
                for job in JOBS:
                    r = c.get(f"/metrics/n1/{job}")
                    assert r.status_code == 200, (job, r.text)
                    assert 'sim_component_info' in r.text or "node_load1" in r.text
            assert c.get("/metrics/n1/node-exporter").text.count("node_cpu_seconds_total") >= 1
            exp.set_crashed("n1", True)
            assert c.get("/metrics/n1/edgecore").status_code == 503
            assert c.get("/metrics/n2/edgecore").status_code == 200
            exp.set_component("n2", "coredns", down=True)
            assert c.get("/metrics/n2/coredns").status_code == 503
            assert c.get("/metrics/n2/kube-proxy").status_code == 200
            assert c.get("/metrics/n9/edgecore").status_code == 503, "a node it does not serve"
            assert c.get("/nope").status_code == 404
    finally:
        exp.stop()


def _scrape(sock: socket.socket, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def test_many_open_connections_are_served_by_one_thread_and_stop_closes_them() -> None:
    exp = SiteExporters("site-a", [f"n{i}" for i in range(50)]).start()
    # The threads alive now, by identity: one an earlier test left behind may end meanwhile
    # (a count would then differ, as it did once in CI), a new one must not start.
    before = {t.ident for t in threading.enumerate()}
    host, port = exp.address.split(":")
    conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(100)]
    try:
        for i, s in enumerate(conns):
            assert _scrape(s, f"/metrics/n{i % 50}/node-exporter") == b"HTTP/1.1 200 OK"
        for s in conns:  # the same connections again: kept alive
            assert _scrape(s, "/metrics/n1/edgecore") == b"HTTP/1.1 200 OK"
        new = [t.name for t in threading.enumerate() if t.ident not in before]
        assert new == [], f"a thread was started for a connection: {new}"
        t0 = time.monotonic()
        exp.stop()
        assert time.monotonic() - t0 < 5
        assert conns[0].recv(1) == b"", "stop left a scraper's connection open"
    finally:
        for s in conns:
            s.close()


def test_an_exporter_never_started_stops_at_once() -> None:
    exp = SiteExporters("site-a", ["n1"])
    t0 = time.monotonic()
    exp.stop()
    assert time.monotonic() - t0 < 1
