"""The HTTP contract, against a real `sentinel serve`: every route declares who may call it and
the model of its answer (in the OpenAPI document), every answer parses into that model as the
CLI parses it, and credentials and the body's size are checked before the body is read."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel.cli.client import answer_model, answers
from sentinel.http.auth import Access
from sentinel.http.models import ErrorOut
from sentinel.sim.fleet import Fleet

from .conftest import Serve, reset

WRITE = "w-" + "0a1b2c3d4e5f6789"
ALERTS = "a-" + "9876fedcba012345"


@pytest.fixture(scope="module")
def srv(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    reset(fleet)
    tmp = tmp_path_factory.mktemp("contract")
    s = Serve(fleet, tmp, api={"open_reads": False, "tokens": [
        {"name": "oncall", "token": WRITE, "write": True}]},
        alerts={"token": ALERTS})
    s.start()
    yield s
    s.kill()
    reset(fleet)


def _openapi(srv: Serve) -> dict[str, Any]:
    r = srv.get("/openapi.json")
    assert r.status_code == 200
    return dict(r.json())


def test_every_route_declares_its_access_and_its_answer(srv: Serve) -> None:
    doc = _openapi(srv)
    covered = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            tags = set(op.get("tags") or [])
            assert len(tags & set(Access)) == 1, f"{where}: no access tag ({tags})"
            if path.startswith("/api/"):
                assert Access.OPEN not in tags, f"{where}: an API route open to anyone"
            ok = [c for c in op["responses"] if c.startswith("2")]
            assert ok, where
            if path != "/metrics":
                schema = op["responses"][ok[0]]["content"]["application/json"]["schema"]
                assert "$ref" in schema or schema.get("type") == "array", f"{where}: {schema}"
            if path.startswith("/api/"):
                concrete = path.replace("{name}", "n").replace("{oid}", "o")
                answer_model(method.upper(), concrete)  # the CLI parses it into a model
                covered.append((method.upper(), concrete))
    assert len(covered) == len(answers()), "the CLI knows an answer the server does not give"


def _call(c: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    r = c.request(method, path, json=body)
    if r.status_code >= 400:
        return ErrorOut.model_validate(r.json())
    return answer_model(method, path).validate_python(r.json())


def test_every_endpoint_answers_in_its_model(srv: Serve, fleet: Fleet) -> None:
    node = fleet.nodes("site-a")[0]
    with httpx.Client(base_url=srv.url, timeout=10,
                      headers={"authorization": f"Bearer {WRITE}"}) as c:
        for path in ("/api/v1/status", "/api/v1/sites", "/api/v1/nodes",
                     f"/api/v1/nodes/{node}/explain", "/api/v1/history", "/api/v1/registries",
                     "/api/v1/rollouts", "/api/v1/overrides"):
            out = _call(c, "GET", path)
            assert not isinstance(out, ErrorOut), (path, out)
        made = _call(c, "POST", "/api/v1/overrides", {"kind": "exempt", "node": node,
                                                      "reason": "contract test", "ttl": "5m"})
        assert made.override.node == node
        assert _call(c, "DELETE", f"/api/v1/overrides/{made.override.id}").lifted.id == \
            made.override.id
        _call(c, "POST", "/api/v1/pause", {"reason": "contract test", "site": "site-a"})
        assert _call(c, "POST", "/api/v1/resume", {"site": "site-a"}).by == "oncall"
        off = _call(c, "POST", "/api/v1/rollouts/resume", {"workload": "web"})
        assert isinstance(off, ErrorOut) and "rollout guard is off" in off.error
        r = c.post("/api/v1/alerts", json={}, headers={"authorization": f"Bearer {ALERTS}"})
        assert r.status_code == 422 and ErrorOut.model_validate(r.json())


def _raw(srv: Serve, head: str) -> tuple[int, bytes]:
    """Send only the request head (a huge Content-Length, no body) and read the answer: one
    that comes proves the server decided without reading the body."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head.encode())
        data = b""
        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
            data += chunk
        head_, _, body = data.partition(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head_.split(b"\r\n")
                      if h.lower().startswith(b"content-length:"))
        while len(body) < length and (chunk := s.recv(65536)):
            body += chunk
    return int(head_.split(b" ", 2)[1]), body


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_credentials_and_size_are_checked_before_the_body_is_read(srv: Serve) -> None:
    assert srv.proc is not None
    peak = _peak_rss_kb(srv.proc.pid)
    big = 50 * 1024 * 1024
    head = ("POST /api/v1/overrides HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {big}\r\n{{auth}}\r\n")
    status, body = _raw(srv, head.format(auth=""))
    assert status == 401 and b"needs a token" in body
    status, body = _raw(srv, head.format(auth=f"Authorization: Bearer {WRITE}\r\n"))
    assert status == 413 and b"body larger than 65536 bytes" in body
    status, body = _raw(srv, head.replace("/api/v1/overrides", "/api/v1/alerts").format(
        auth=f"Authorization: Bearer {ALERTS}\r\n"))
    assert status == 413 and b"body larger than 1048576 bytes" in body
    # 50 MiB sent in full without a token: refused, and the process does not grow for it
    t0 = time.monotonic()
    try:
        r = httpx.post(srv.url + "/api/v1/overrides", content=b"x" * big, timeout=30)
        assert r.status_code == 401
    except httpx.TransportError:
        pass  # the server answered and closed before the client finished sending
    grew = (_peak_rss_kb(srv.proc.pid) - peak) / 1024
    assert grew < 10, f"the process grew {grew:.1f} MiB for an unauthenticated 50 MiB body"
    assert time.monotonic() - t0 < 10


def test_a_body_without_a_length_is_cut_at_the_limit(srv: Serve) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):  # 160 KiB, chunked, over the 64 KiB limit
            yield b"{" + b" " * 8190 + b"}"

    r = httpx.post(srv.url + "/api/v1/overrides", content=chunks(), timeout=10,
                   headers={"authorization": f"Bearer {WRITE}",
                            "content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert "body larger than 65536 bytes" in r.json()["error"]
