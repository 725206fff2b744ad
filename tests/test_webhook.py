"""The Alertmanager webhook: auth, limits, reasons, durability, idempotency, resolve."""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sentinel.config.loading import parse_config
from sentinel.config.rules import parse_rules
from sentinel.config.schema import Alerts
from sentinel.core.alerts import Alert, map_alert
from sentinel.core.detect import DetectParams, detect
from sentinel.core.model import (
    NODE_KEY,
    Level,
    NodeInfo,
    NodeName,
    Ready,
    SiteName,
    SiteView,
    Snapshot,
    Verdict,
)
from sentinel.core.ruleset import RuleSet
from sentinel.http.app import Runtime, build_runtime, create_app
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.prometheus import free_port
from sentinel.sim.store import RESOURCES

TOKEN = "s3cret-token"


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {"version": "4", "status": status, "receiver": "sentinel",
            "groupKey": '{}:{alertname="EdgeNodeDown"}', "truncatedAlerts": 0,
            "groupLabels": {"alertname": "EdgeNodeDown"}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am:9093", "alerts": list(alerts)}


def alert(fp: str, node: str = "n1", status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "EdgeComponentDown", "node": node,
                                         "component": "kube-proxy", **labels},
            "annotations": {"summary": f"kube-proxy down on {node}"},
            "startsAt": "2026-11-22T09:52:26.739266876+02:00",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom:9090/graph",
            "fingerprint": fp}


@pytest.fixture(scope="module")
def api() -> Iterator[KubeApiServer]:
    srv = KubeApiServer().start()
    for n in ("n1", "n2"):
        srv.store.create(RESOURCES[("", "v1", "nodes")], "", {"metadata": {"name": n}})
    yield srv
    srv.stop()


def runtime(api: KubeApiServer, tmp: Path, **alerts: Any) -> Runtime:
    (tmp / "rules.yaml").write_text("rules:\n  - {name: r, level: node, expr: up == 0}\n")
    (tmp / "token").write_text(TOKEN + "\n")
    cfg = parse_config(yaml.safe_dump({
        "sites": [{"name": "a", "prometheus": "http://127.0.0.1:9"}], "rules": ["rules.yaml"],
        "cluster": {"url": api.url}, "journal": "j.db",
        "alerts": {"token_file": "token", "max_body_bytes": 65536, **alerts}}),
        str(tmp / "c.yaml"), {})
    return build_runtime(cfg, RuleSet(tuple(parse_rules((tmp / "rules.yaml").read_text(),
                                                        "rules.yaml"))))


@contextmanager
def serving(rt: Runtime) -> Iterator[httpx.Client]:
    """The app under real uvicorn on a free loopback port, lifespan and all."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(rt, schedule=False), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            yield c
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture
def client(api: KubeApiServer, tmp_path: Path) -> Iterator[tuple[httpx.Client, Runtime]]:
    rt = runtime(api, tmp_path, basic_username="am", basic_password_file="token")
    with serving(rt) as c:
        assert rt.cluster.wait_synced(10)
        c.headers["Authorization"] = f"Bearer {TOKEN}"
        yield c, rt


def test_the_collectors_pauses_are_measured_while_the_service_runs(client: Any) -> None:
    """A full collection walks every object the process holds with the GIL held: at fleet size
    it is a pause every request waits out, and /metrics must show it."""
    import gc

    c, _ = client

    def full_collections() -> float:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith('sentinel_gc_pause_seconds_count{generation="2"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = full_collections()
    gc.collect()
    assert full_collections() >= before + 1  # ours, and any the threads ran meanwhile


def test_accepted_alerts_are_durable_before_the_answer(client: Any) -> None:
    c, rt = client
    r = c.post("/api/v1/alerts", json=payload(alert("a1"), alert("a2", node="n2")))
    assert r.status_code == 200, r.text
    assert r.json()["new"] == 2
    rows = rt.alerts.received()  # committed: visible to a fresh connection too
    assert {x["fingerprint"] for x in rows} == {"a1", "a2"}
    import sqlite3
    with sqlite3.connect(rt.alerts.path) as db:
        assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 2
    assert {e.node for e in rt.alerts.active()} == {"n1", "n2"}


def test_same_alert_twice_is_one_alert(client: Any) -> None:
    c, rt = client
    body = payload(alert("d1"))
    assert c.post("/api/v1/alerts", json=body).json()["new"] == 1
    second = c.post("/api/v1/alerts", json=body).json()  # an HA peer sends the same group
    assert (second["new"], second["duplicates"]) == (0, 1)
    assert len(rt.alerts.received()) == 1
    assert len(rt.alerts.active()) == 1


def test_resolved_alert_clears_its_evidence(client: Any) -> None:
    c, rt = client
    c.post("/api/v1/alerts", json=payload(alert("r1")))
    assert len(rt.alerts.active()) == 1
    r = c.post("/api/v1/alerts", json=payload(alert("r1", status="resolved"),
                                              status="resolved"))
    assert r.json()["resolved"] == 1
    assert rt.alerts.active() == []
    # a late duplicate of the firing delivery does not bring it back
    c.post("/api/v1/alerts", json=payload(alert("r1")))
    assert rt.alerts.active() == []


def test_alerts_naming_no_known_node_are_kept_and_counted(client: Any) -> None:
    c, rt = client
    no_node = alert("u1")
    del no_node["labels"]["node"]
    r = c.post("/api/v1/alerts", json=payload(no_node, alert("u2", node="ghost")))
    body = r.json()
    assert r.status_code == 200
    assert body["unmapped"] == ["u1: no 'node' label"]
    assert body["unknown_nodes"] == ["ghost"]
    assert {x["fingerprint"] for x in rt.alerts.received()} == {"u1", "u2"}
    reg = rt.registry
    assert reg.get_sample_value("sentinel_alerts_received_total", {"outcome": "unmapped"}) == 1
    assert reg.get_sample_value("sentinel_alerts_received_total",
                                {"outcome": "unknown_node"}) == 1


@pytest.mark.parametrize(("headers", "code"), [
    ({}, 401),
    ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic " + base64.b64encode(b"am:nope").decode()}, 401),
    ({"Authorization": "Basic " + base64.b64encode(f"am:{TOKEN}".encode()).decode()}, 200),
    ({"Authorization": f"Bearer {TOKEN}"}, 200),
], ids=["none", "wrong-token", "wrong-basic", "basic", "bearer"])
def test_auth(client: Any, headers: dict[str, str], code: int) -> None:
    c, _ = client
    c.headers.pop("Authorization")
    r = c.post("/api/v1/alerts", json=payload(alert("x1")), headers=headers)
    assert r.status_code == code
    if code == 401:
        assert "credentials" in r.json()["error"]


def _broken(change: str) -> Any:
    p = payload(alert("b1"))
    if change == "version":
        p["version"] = "3"
    elif change == "alerts-type":
        p["alerts"] = "many"
    elif change == "no-fingerprint":
        del p["alerts"][0]["fingerprint"]
    elif change == "bad-time":
        p["alerts"][0]["startsAt"] = "yesterday"
    elif change == "label-type":
        p["alerts"][0]["labels"]["node"] = 7
    elif change == "status":
        p["alerts"][0]["status"] = "exploded"
    return p


@pytest.mark.parametrize(("change", "field"), [
    ("version", "version"), ("alerts-type", "alerts"), ("no-fingerprint", "alerts.0.fingerprint"),
    ("bad-time", "alerts.0.startsAt"), ("label-type", "alerts.0.labels.node"),
    ("status", "alerts.0.status")])
def test_malformed_payloads_get_422_naming_the_field(client: Any, change: str,
                                                     field: str) -> None:
    c, rt = client
    r = c.post("/api/v1/alerts", json=_broken(change))
    assert r.status_code == 422
    assert field in [p["field"] for p in r.json()["problems"]]
    assert rt.alerts.received() == []


def test_not_json_and_too_large(client: Any) -> None:
    c, _ = client
    r = c.post("/api/v1/alerts", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    deep = b"[" * 30_000 + b"]" * 30_000  # within the size limit, deeper than the parser goes
    r = c.post("/api/v1/alerts", content=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    big = payload(*[alert(f"big{i}") for i in range(400)])
    r = c.post("/api/v1/alerts", json=big)
    assert r.status_code == 413 and "65536" in r.json()["error"]


def test_a_failure_to_persist_is_a_503_so_alertmanager_resends(client: Any) -> None:
    c, rt = client
    rt.alerts._db.execute("DROP TABLE alerts")  # the disk "fails" under the store
    r = c.post("/api/v1/alerts", json=payload(alert("p1")))
    assert r.status_code == 503 and "resend" in r.json()["error"]


def test_no_token_configured_is_a_503(api: KubeApiServer, tmp_path: Path) -> None:
    rt = runtime(api, tmp_path, token_file=None)
    with serving(rt) as c:
        r = c.post("/api/v1/alerts", json=payload(alert("t1")))
    assert r.status_code == 503 and "token" in r.json()["error"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """Valid payloads with one part replaced by arbitrary JSON, and arbitrary JSON."""
    if draw(st.booleans()):
        return draw(json_values)
    p = copy.deepcopy(payload(alert("h1")))
    target = draw(st.sampled_from(["top", "alert", "labels"]))
    obj = p if target == "top" else p["alerts"][0] if target == "alert" else \
        p["alerts"][0]["labels"]
    key = draw(st.sampled_from(sorted(obj)))
    obj[key] = draw(json_values)
    return p


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=mutated_payloads())
def test_generated_payloads_never_get_a_5xx(client: Any, body: Any) -> None:
    c, _ = client
    r = c.post("/api/v1/alerts", content=json.dumps(body).encode(),
               headers={"Content-Type": "application/json"})
    assert r.status_code in (200, 400, 413, 422), (r.status_code, r.text)
    assert "error" in r.json() or r.status_code == 200


@pytest.mark.parametrize(("labels", "key", "level", "problem"), [
    ({"node": "n1", "component": "kube-proxy"}, "kube-proxy", Level.COMPONENT, None),
    ({"node": "n1", "sentinel_level": "node"}, NODE_KEY, Level.NODE, None),
    ({"node": "n1"}, "EdgeThing", Level.COMPONENT, None),
    ({"component": "x"}, None, None, "no 'node' label"),
    ({"node": "n1", "sentinel_level": "cluster"}, None, None, "expected component or node"),
    ({"node": "n1", "component": "a b"}, None, None, "cannot name a taint key"),
], ids=["component", "node-level", "alertname-as-key", "no-node", "bad-level", "bad-component"])
def test_alert_mapping(labels: dict[str, str], key: str | None, level: Level | None,
                       problem: str | None) -> None:
    a = Alert.model_validate({"status": "firing", "labels": {"alertname": "EdgeThing", **labels},
                              "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f"})
    m = map_alert(a, Alerts())
    if problem:
        assert m.evidence is None and problem in (m.problem or "")
    else:
        assert m.evidence is not None and (m.evidence.key, m.evidence.level) == (key, level)


@pytest.mark.parametrize(("ready", "verdict", "key"), [
    (Ready.UNKNOWN, Verdict.NODE_FAILURE, NODE_KEY),
    (Ready.TRUE, Verdict.COMPONENT_FAULT, "EdgeNodeDown"),
], ids=["two-witnesses", "alert-alone-is-level-1"])
def test_node_level_alert_needs_the_cloud_to_agree(ready: Ready, verdict: Verdict,
                                                   key: str) -> None:
    a = Alert.model_validate({"status": "firing", "labels": {
        "alertname": "EdgeNodeDown", "node": "n1", "sentinel_level": "node"},
        "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "f"})
    ev = map_alert(a, Alerts()).evidence
    assert ev is not None
    snap = Snapshot(0.0, {"n1": NodeInfo(NodeName("n1"), SiteName("s"), ready)},
                    {"s": SiteView(SiteName("s"), True, None, 1.0, frozenset({"n1"}))},
                    {"n1": (ev,)})
    f = detect(snap, RuleSet(()), DetectParams()).findings["n1"]
    assert f.verdict is verdict
    assert [c.key for c in f.conditions] == [key]
    assert f.conditions[0].rule == "alert.EdgeNodeDown"
