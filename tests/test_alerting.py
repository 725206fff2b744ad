"""The shipped alerting rules and Alertmanager route, checked by the upstream tools, and the
whole alert path end to end with the real binaries."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sentinel.core.model import NODE_KEY
from sentinel.sim.alertmanager import AlertmanagerProcess
from sentinel.sim.fleet import Fleet

from .conftest import Serve, our_taints, poll

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "am-webhook-token"
# A rule that never matches: in these tests the alerts are the only evidence.
NO_RULES = "rules:\n  - {name: never, level: component, component: none, " \
           "expr: 'up{job=\"no-such-job\"} == 0'}\n"


def test_shipped_prometheus_rules_pass_promtool() -> None:
    files = sorted(str(p) for p in (ROOT / "rules/prometheus").glob("*.yaml"))
    assert len(files) == 2
    out = subprocess.run(["promtool", "check", "rules", *files], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    tests = sorted(p.name for p in (ROOT / "tests/promtool").glob("*_test.yaml"))
    out = subprocess.run(["promtool", "test", "rules", *tests], capture_output=True, text=True,
                         cwd=ROOT / "tests/promtool")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("SUCCESS") == len(tests)


def test_shipped_alertmanager_config_passes_amtool() -> None:
    out = subprocess.run(["amtool", "check-config", str(ROOT / "alertmanager/alertmanager.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_has_severity_summary_and_runbook() -> None:
    runbooks = (ROOT / "docs/runbooks.md").read_text().lower()
    for f in (ROOT / "rules/prometheus").glob("*.yaml"):
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert rule["annotations"]["summary"], rule["alert"]
                anchor = rule["annotations"]["runbook_url"].split("#")[1]
                assert f"## {rule['alert'].lower()}" in runbooks and anchor == \
                    rule["alert"].lower(), rule["alert"]


def shortened(src: Path, dst: Path, for_: str) -> Path:
    """The shipped rules with test-sized `for` (exprs, labels, annotations unchanged)."""
    doc = yaml.safe_load(src.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    dst.write_text(yaml.safe_dump(doc))
    return dst


@pytest.fixture
def alert_path(clean_fleet: Fleet, tmp_path: Path) -> Iterator[tuple[Fleet, Serve, Any]]:
    """site-a's Prometheus evaluates the shipped rules and sends to a real Alertmanager, which
    routes by the shipped configuration to a real `sentinel serve`."""
    f = clean_fleet
    (tmp_path / "token").write_text(TOKEN)
    serve = Serve(f, tmp_path, rules=NO_RULES, alerts={"token_file": "token"})
    am_cfg = yaml.safe_load((ROOT / "alertmanager/alertmanager.yml").read_text())
    sentinel_route = am_cfg["route"]["routes"][0]
    sentinel_route.update(group_wait="1s", group_interval="1s")
    receiver = next(r for r in am_cfg["receivers"] if r["name"] == "sentinel")
    hook = receiver["webhook_configs"][0]
    receiver["webhook_configs"] = [hook]  # one replica here (tests/test_replicas.py: two)
    hook["url"] = f"{serve.url}/api/v1/alerts"
    hook["http_config"]["authorization"]["credentials_file"] = str(tmp_path / "token")
    oncall = next(r for r in am_cfg["receivers"] if r["name"] == "oncall")
    oncall["webhook_configs"][0]["url"] = "http://127.0.0.1:9/"  # people: nobody listening
    am = AlertmanagerProcess(am_cfg).start()
    prom = f.proms["site-a"]
    try:
        am.wait_ready()
        rules = shortened(ROOT / "rules/prometheus/site.rules.yaml", tmp_path / "site.yaml", "2s")
        prom.set_alerting([rules], am.address)
        serve.start()
        yield f, serve, am
    finally:
        serve.kill()
        prom.set_alerting([], None)
        am.stop()


def chain_state(f: Fleet, am: Any) -> str:
    """Where an alert got to, for a failure message."""
    prom = httpx.get(f"{f.proms['site-a'].url}/api/v1/alerts", timeout=5).json()
    ams = httpx.get(f"{am.url}/api/v2/alerts", timeout=5).json()
    firing = [(a["labels"]["alertname"], a["state"]) for a in prom["data"]["alerts"]]
    return (f"prometheus: {firing}"
            f"\nalertmanager: {[a['labels']['alertname'] for a in ams]}"
            f"\nprometheus alertmanagers: "
            f"{httpx.get(f.proms['site-a'].url + '/api/v1/alertmanagers', timeout=5).json()}"
            f"\nprometheus log: {f.proms['site-a'].log_path.read_text()[-1500:]}")


def test_node_death_through_prometheus_and_alertmanager(alert_path: Any) -> None:
    f, serve, am = alert_path
    node = "edge-a-04"
    f.crash(node)
    try:
        poll(lambda: our_taints(f, node).get(NODE_KEY) == "NoExecute", 45,
             "level 2 from the EdgeNodeDown alert")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{chain_state(f, am)}") from None
    with sqlite3.connect(serve.journal) as db:
        (evidence,) = db.execute("SELECT evidence FROM actions WHERE node = ? AND kind = "
                                 "'isolate' AND key = 'node'", (node,)).fetchone()
        alerts = db.execute("SELECT alertname, receiver, status FROM alerts WHERE node = ?",
                            (node,)).fetchall()
    conds = json.loads(evidence)["conditions"]
    assert [c["rule"] for c in conds] == ["alert.EdgeNodeDown"]
    assert f"Edge node {node} cannot be scraped at its site" in conds[0]["query"]
    assert ("EdgeNodeDown", "sentinel", "firing") in alerts
    # the cluster changes first; sentinel's own report of it follows at the end of its cycle
    poll(lambda: "node" in serve.get(f"/api/v1/nodes/{node}/explain").json().get("held", {}),
         10,
         "explain shows the isolation")
    story = serve.get(f"/api/v1/nodes/{node}/explain").json()
    assert story["held"]["node"]["rule"] == "alert.EdgeNodeDown"
    assert "EdgeNodeDown" in [a["alertname"] for a in story["alerts"]]
    assert story["evidence"]["verdict"] == "node-failure"
    assert any(a["kind"] == "isolate" and a["rule"] == "alert.EdgeNodeDown"
               for a in story["actions"])
    assert serve.get("/api/v1/nodes/no-such-node/explain").status_code == 404
    # the heal resolves the alert in Alertmanager; the resolve clears the evidence; release
    f.heal(node)
    poll(lambda: not our_taints(f, node), 45, "release after the resolved alert")
    with sqlite3.connect(serve.journal) as db:
        statuses = {s for (s,) in db.execute("SELECT status FROM alerts WHERE node = ?",
                                               (node,))}
    assert statuses == {"firing", "resolved"}


def test_two_deliveries_of_one_group_make_one_action(alert_path: Any) -> None:
    f, serve, _ = alert_path
    node = "edge-a-02"
    body = {"version": "4", "status": "firing", "receiver": "sentinel", "groupKey": "g",
            "alerts": [{"status": "firing", "fingerprint": "peer-1",
                        "labels": {"alertname": "EdgeComponentDown", "node": node,
                                   "component": "coredns", "sentinel_level": "component"},
                        "annotations": {"summary": "coredns down"},
                        "startsAt": "2026-11-22T10:00:00Z"}]}
    hdr = {"Authorization": f"Bearer {TOKEN}"}
    results: list[int] = []

    def peer() -> None:
        results.append(httpx.post(f"{serve.url}/api/v1/alerts", json=body, headers=hdr,
                                  timeout=10).status_code)

    peers = [threading.Thread(target=peer) for _ in range(2)]  # two HA peers, at once
    for t in peers:
        t.start()
    for t in peers:
        t.join()
    assert results == [200, 200]
    poll(lambda: "coredns" in our_taints(f, node), 20, "coredns isolation from the alert")
    poll(lambda: serve.cycles() >= 10, 20, "more cycles")
    with sqlite3.connect(serve.journal) as db:
        n_alerts = db.execute("SELECT COUNT(*) FROM alerts WHERE fingerprint = 'peer-1'"
                              ).fetchone()[0]
        n_actions = db.execute("SELECT COUNT(*) FROM actions WHERE node = ? AND key = "
                               "'coredns'", (node,)).fetchone()[0]
    assert (n_alerts, n_actions) == (1, 1)


def test_every_acknowledged_alert_survives_sigkill(clean_fleet: Fleet, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    serve = Serve(clean_fleet, tmp_path, rules=NO_RULES, alerts={"token_file": "token"})
    serve.start()
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(k: int) -> None:
        with httpx.Client(timeout=5) as c:
            for i in range(10_000):
                if stop.is_set():
                    return
                fps = [f"k{k}-{i}-{j}" for j in range(5)]
                body = {"version": "4", "status": "firing", "receiver": "sentinel",
                        "groupKey": f"g{k}", "alerts": [
                            {"status": "firing", "fingerprint": fp, "startsAt":
                             "2026-11-22T10:00:00Z", "labels": {"alertname": "Load",
                                                                "node": "edge-b-01"}}
                            for fp in fps]}
                try:
                    r = c.post(f"{serve.url}/api/v1/alerts", json=body,
                               headers={"Authorization": f"Bearer {TOKEN}"})
                except httpx.HTTPError:
                    return  # the server died mid-call: this call was never acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.extend(fps)

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    poll(lambda: len(acked) >= 500, 30, "500 acknowledged alerts")
    assert serve.proc is not None
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    with sqlite3.connect(serve.journal) as db:
        stored = {fp for (fp,) in db.execute("SELECT fingerprint FROM alerts")}
    lost = set(acked) - stored
    assert not lost, f"{len(lost)} acknowledged alerts lost, e.g. {sorted(lost)[:3]}"
