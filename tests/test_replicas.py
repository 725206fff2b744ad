"""Two `sentinel serve` replicas as deploy/ runs them: each with its own state directory (no
file shared), Alertmanager routing as shipped (every alert to each replica), overrides in the
cluster, a central Prometheus scraping both. The leader is killed with SIGKILL and its state
directory deleted: the other takes over within the lease, repeats nothing, and every
acknowledged alert, override and flap-damping clock is still in force."""

from __future__ import annotations

import shutil
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from sentinel.core.model import NODE_KEY
from sentinel.sim.alertmanager import AlertmanagerProcess
from sentinel.sim.fleet import Fleet
from sentinel.sim.process import free_port
from sentinel.sim.prometheus import PrometheusProcess

from .conftest import FAST_RULES, Serve, our_taints, poll
from .test_alerting import shortened
from .test_dashboards import FILES, metric_names

ROOT = Path(__file__).resolve().parents[1]
TOKEN, WRITE = "am-webhook-token", "oncall-write-token"
LEASE = {"enabled": True, "namespace": "sentinel", "name": "sentinel-replicas",
         "lease_duration": "4s", "renew_deadline": "3s", "retry_period": "500ms"}
#: What each replica exports about itself: one series per replica is right for these.
OWN_HEALTH = {"up", "sentinel_leader", "sentinel_cycles_total", "sentinel_build_info",
              "sentinel_cycle_duration_seconds_bucket", "sentinel_cycle_duration_seconds_sum",
              "sentinel_cycle_duration_seconds_count", "sentinel_mode",
              "sentinel_cycle_collect_duration_seconds_bucket",
              "sentinel_last_cycle_success_timestamp_seconds", "sentinel_journal_writable",
              "sentinel_journal_write_errors_total", "sentinel_anomaly_trainings_total",
              "sentinel_anomaly_training_duration_seconds"}


def replica(fleet: Fleet, tmp: Path, name: str, am: AlertmanagerProcess,
            identity: str | None = None) -> Serve:
    d = tmp / name
    d.mkdir()
    (d / "token").write_text(TOKEN)
    (d / "write-token").write_text(WRITE)
    return Serve(fleet, d, rules=FAST_RULES, journal="state/journal.db",
                 leader_election={**LEASE, "identity": identity or name},
                 alerts={"token_file": "token", "alertmanager_urls": [am.url]},
                 anomaly={"enabled": False},
                 api={"tokens": [{"name": "oncall", "token_file": "write-token",
                                  "write": True}]})


def alertmanager_as_shipped(ports: list[int], token: Path) -> AlertmanagerProcess:
    """The shipped route, its per-replica URLs pointed at the replicas' ports."""
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    cfg = yaml.safe_load((ROOT / "alertmanager/alertmanager.yml").read_text())
    cfg["route"]["routes"][0].update(group_wait="1s", group_interval="1s")
    hooks = next(r for r in cfg["receivers"] if r["name"] == "sentinel")["webhook_configs"]
    assert len(hooks) == len(urls), "one webhook per replica, as shipped"
    for hook, url in zip(hooks, urls, strict=True):
        hook["url"] = f"{url}/api/v1/alerts"
        hook["http_config"]["authorization"]["credentials_file"] = str(token)
    oncall = next(r for r in cfg["receivers"] if r["name"] == "oncall")
    oncall["webhook_configs"][0]["url"] = "http://127.0.0.1:9/"  # people: nobody listening
    return AlertmanagerProcess(cfg).start()


def fire(am: AlertmanagerProcess, node: str, component: str) -> None:
    now = datetime.now(UTC)
    alert = {"labels": {"alertname": "EdgeComponentDown", "node": node, "component": component,
                        "sentinel_level": "component", "severity": "warning"},
             "annotations": {"summary": f"{component} down on {node}"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
    r = httpx.post(f"{am.url}/api/v2/alerts", json=[alert], timeout=5)
    assert r.status_code == 200, r.text


def stored_alerts(s: Serve) -> set[tuple[str, str]]:
    """(node, key) of the firing alerts in this replica's own store (its own disk)."""
    path = s.journal
    if not path.exists():
        return set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {(n, k) for n, k in db.execute("SELECT node, key FROM alerts WHERE status = "
                                              "'firing'")}


def metric(s: Serve, name: str) -> float | None:
    for line in s.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def leader(s: Serve) -> float | None:
    return metric(s, "sentinel_leader")


def node_writes(fleet: Fleet, nodes: list[str]) -> int:
    return sum(1 for w in fleet.store.writes if w[1] == "nodes" and w[3] in nodes
               and w[0] == "update")


def query(prom: PrometheusProcess, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom.url}/api/v1/query", params={"query": expr}, timeout=5).json()
    assert r["status"] == "success", (expr, r)
    out: list[dict[str, Any]] = r["data"]["result"]
    return out


def check_single_counts(hq: PrometheusProcess, isolated: dict[str, int]) -> None:
    """Every series a dashboard or a shipped alert reads comes from one replica, unless it
    is a replica's own health; the shipped recording rule counts the isolations once."""
    rules = yaml.safe_load((ROOT / "rules/prometheus/central.rules.yaml").read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    for f in FILES:
        exprs += [t["expr"] for p in _panels(yaml.safe_load(f.read_text()))
                  for t in p.get("targets", []) if t.get("expr")]
    names = set().union(*(metric_names(e) for e in exprs)) - OWN_HEALTH
    names -= {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    assert "sentinel_isolated_nodes" in names
    for name in sorted(names):
        found = query(hq, f'count by (instance) ({{__name__="{name}"}})')
        assert len(found) <= 1, f"{name} exported by {len(found)} replicas: counted twice"
    assert len(query(hq, "count by (instance) (sentinel_leader)")) == 2, "both scraped"
    assert [float(s["value"][1]) for s in query(hq, "sum(sentinel_leader)")] == [1.0]
    by_level = {s["metric"]["level"]: float(s["value"][1])
                for s in query(hq, "sentinel:isolated_nodes:sum")}
    assert by_level == {lv: float(n) for lv, n in isolated.items()}, by_level
    for r in (r for g in rules["groups"] for r in g["rules"] if "alert" in r):
        if metric_names(r["expr"]) <= OWN_HEALTH:
            continue  # about one replica itself: one alert per replica is right
        fired = query(hq, r["expr"])
        keys = [tuple(sorted((k, v) for k, v in s["metric"].items() if k != "instance"))
                for s in fired]
        assert len(keys) == len(set(keys)), f"{r['alert']} would fire twice: {fired}"


def _panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash.get("panels", []):
        out.append(p)
        out += p.get("panels", [])
    return out


def test_losing_the_leader_with_its_disk_loses_and_repeats_nothing(clean_fleet: Fleet,
                                                                   tmp_path: Path) -> None:
    fleet = clean_fleet
    (tmp_path / "token").write_text(TOKEN)
    ports = [free_port(), free_port()]
    am = alertmanager_as_shipped(ports, tmp_path / "token")
    a, b = replica(fleet, tmp_path, "a", am), replica(fleet, tmp_path, "b", am)
    a.set_port(ports[0])
    b.set_port(ports[1])
    a2: Serve | None = None
    hq = PrometheusProcess("hq", [], 1.0)
    hq.scrape_only("sentinel", [s.url.removeprefix("http://") for s in (a, b)])
    hq.start()
    n_alert, n_exempt = fleet.nodes("site-a")[1], fleet.nodes("site-a")[3]
    n_flap, n_manual = fleet.nodes("site-b")[2], fleet.nodes("site-c")[0]
    ours = [n_alert, n_flap, n_manual]
    hdr = {"Authorization": f"Bearer {WRITE}"}
    try:
        am.wait_ready()
        hq.wait_ready()
        hq.set_alerting([shortened(ROOT / "rules/prometheus/central.rules.yaml",
                                   tmp_path / "central.yaml", "1s")], None)
        a.spawn()
        b.spawn()  # side by side, as a StatefulSet with podManagementPolicy Parallel
        a.wait_ready()
        b.wait_ready()
        poll(lambda: {leader(a), leader(b)} == {0.0, 1.0}, 15, "one leads, one follows")
        if leader(b) == 1.0:  # call the leader a
            a, b = b, a
            ports.reverse()
        status = b.get("/api/v1/status").json()
        assert {s["site"] for s in status["sites"]} == set(fleet.sites), "a follower reads"

        # an alert, acknowledged by each replica into its own store
        fire(am, n_alert, "coredns")
        poll(lambda: (n_alert, "coredns") in stored_alerts(a) & stored_alerts(b), 20,
             "Alertmanager delivers the alert to both replicas")
        poll(lambda: "coredns" in our_taints(fleet, n_alert), 20, "the leader acts on it")
        # overrides, written through the follower: they go to the cluster
        for body in ({"kind": "exempt", "node": n_exempt, "reason": "vendor on site"},
                     {"kind": "isolate", "node": n_manual, "reason": "disk noise"}):
            r = httpx.post(f"{b.url}/api/v1/overrides", json={**body, "ttl": "1h"},
                           headers=hdr, timeout=5)
            assert r.status_code == 201, r.text
        poll(lambda: "manual" in our_taints(fleet, n_manual), 20, "the leader applies it")
        # a flapping node: isolated, released (which frees it), isolated again
        fleet.crash(n_flap)
        poll(lambda: our_taints(fleet, n_flap).get(NODE_KEY) == "NoExecute", 30, "isolated")
        fleet.heal_node(n_flap)
        poll(lambda: our_taints(fleet, n_flap) == {}, 30, "released")
        fleet.crash(n_flap)
        poll(lambda: our_taints(fleet, n_flap).get(NODE_KEY) == "NoExecute", 30,
             "isolated again")

        poll(lambda: len(query(hq, "count by (instance) (sentinel_isolated_nodes)")) >= 1
             and len(query(hq, "sentinel_leader")) == 2
             and query(hq, "sentinel:isolated_nodes:sum") != [], 20, "hq has scraped both")
        poll(lambda: {s["metric"]["level"]: s["value"][1]
                      for s in query(hq, "sentinel:isolated_nodes:sum")} ==
             {"1": "2", "2": "1"}, 20, "hq sees the isolations")
        check_single_counts(hq, {"1": 2, "2": 1})

        acked = stored_alerts(a) | stored_alerts(b)
        writes = node_writes(fleet, ours)
        assert b.proc is not None and a.proc is not None
        t0 = time.monotonic()
        a.kill()
        shutil.rmtree(a.journal.parent)  # its volume is gone with it
        poll(lambda: leader(b) == 1.0, 10, "b takes over")
        took = time.monotonic() - t0
        assert took <= 4 + 0.5 + 1.5, f"takeover after {took:.1f}s (lease 4 s)"

        c0 = b.cycles()
        poll(lambda: b.cycles() > c0 + 6, 15, "the new leader cycles")
        assert node_writes(fleet, ours) == writes, "the new leader repeated an action"
        in_force = {(n, k) for n in [*ours, n_exempt]
                    for k in [x["key"] for x in b.get(f"/api/v1/nodes/{n}/explain").json()
                              .get("alerts", [])]}
        assert in_force == acked == {(n_alert, "coredns")}, (in_force, acked)
        assert metric(b, "sentinel_alerts_active") == len(acked)
        kinds = {(o["kind"], o["node"]) for o in b.get("/api/v1/overrides").json()}
        assert kinds == {("exempt", n_exempt), ("isolate", n_manual)}
        assert "manual" in our_taints(fleet, n_manual)
        # the flap-damping clock was the old leader's: the node carries it
        fleet.heal_node(n_flap)
        poll(lambda: "flap damping" in " ".join(
            b.get(f"/api/v1/nodes/{n_flap}/explain").json()["story"]).lower(), 20,
            "the new leader damps the flap its predecessor saw")
        assert our_taints(fleet, n_flap).get(NODE_KEY) == "NoExecute"
        history = b.get("/api/v1/history").json()
        lost = a.cfg["leader_election"]["identity"]
        assert history[-1]["type"] == "notice" and f"journaled by {lost}" in history[-1]["text"]

        # a's replacement starts on an empty disk, at a's address, as a StatefulSet does: it
        # reads what is firing from Alertmanager at once (a delivery already made is repeated
        # only at the route's repeat_interval, 10 min) ...
        a2 = replica(fleet, tmp_path, "a2", am, identity=lost)
        a2.set_port(ports[0])
        a2.start()
        poll(lambda: stored_alerts(a2) == acked, 15, "the replacement knows what is firing")
        # ... so the loss of the other replica, with its disk, loses nothing either
        b.kill()
        shutil.rmtree(b.journal.parent)
        poll(lambda: leader(a2) == 1.0, 10, "the replacement takes over")
        poll(lambda: metric(a2, "sentinel_alerts_active") == len(acked), 10,
             "every acknowledged alert in force on the replacement")
        assert {(o["kind"], o["node"]) for o in a2.get("/api/v1/overrides").json()} == kinds
    finally:
        a.kill()
        b.kill()
        if a2 is not None:
            a2.kill()
        am.stop()
        hq.stop()
