"""Takeover after the leader is lost with its disk, at the shipped lease settings.

Two `sentinel serve` replicas, each with its own state directory, behind Alertmanager routed as
`alertmanager/alertmanager.yml` ships (every alert to each replica), on a small simulated fleet.
Each run fires one more alert through Alertmanager, waits until both replicas acknowledged it,
kills the leader with SIGKILL, deletes its state directory, and measures how long until the
other reports `sentinel_leader 1`; then counts the alerts in force on the new leader
(`sentinel_alerts_active`) against every alert acknowledged so far, and starts a replacement on
an empty disk at the dead one's address (it reads the firing alerts from Alertmanager).
Last line: `takeover_p50_seconds=<n> takeover_p95_seconds=<n> takeover_max_seconds=<n>
alerts_acknowledged=<n> alerts_in_force=<n> runs=<n>`. Expect the lease duration (15 s) plus
up to one retry period (2 s), less the time since the leader's last renewal.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from sentinel.sim.alertmanager import AlertmanagerProcess
from sentinel.sim.fleet import Fleet, FleetSpec
from sentinel.sim.lifecycle import NodeTiming
from sentinel.sim.process import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-webhook-token"


def wait(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"not within {timeout:.0f}s: {what}")
        time.sleep(step)


class Replica:
    def __init__(self, fleet: Fleet, home: Path, name: str, port: int, am: str) -> None:
        self.name, self.port, self.dir = name, port, home / f"{name}-{time.monotonic_ns()}"
        self.dir.mkdir()
        (self.dir / "token").write_text(TOKEN)
        cfg = {"mode": "enforce", "interval": "2s",
               "sites": [{"name": s, "prometheus": u} for s, u in
                         fleet.prometheus_urls().items()],
               "rules": [str(ROOT / "rules")], "cluster": {"url": fleet.api.url},
               "journal": "state/journal.db",
               "listen": f"127.0.0.1:{port}", "anomaly": {"enabled": False},
               "leader_election": {"enabled": True, "namespace": "sentinel",
                                   "identity": name},  # the shipped lease timings
               "alerts": {"token_file": "token", "alertmanager_urls": [am]}}
        (self.dir / "sentinel.yaml").write_text(yaml.safe_dump(cfg))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "serve", "--config", str(self.dir / "sentinel.yaml"),
             "--log-format", "json"], stdout=(self.dir / "log").open("wb"),
            stderr=subprocess.STDOUT)

    def metric(self, name: str) -> float | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def alerts(self) -> set[str]:
        path = self.dir / "state" / "journal.db"
        if not path.exists():
            return set()
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return {fp for (fp,) in db.execute("SELECT fingerprint FROM alerts WHERE status = "
                                               "'firing'")}

    def lose(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir / "state")


def alertmanager(ports: list[int], token: Path) -> AlertmanagerProcess:
    cfg: dict[str, Any] = yaml.safe_load((ROOT / "alertmanager/alertmanager.yml").read_text())
    cfg["route"]["routes"][0].update(group_wait="1s", group_interval="1s")
    hooks = next(r for r in cfg["receivers"] if r["name"] == "sentinel")["webhook_configs"]
    for hook, port in zip(hooks, ports, strict=True):
        hook["url"] = f"http://127.0.0.1:{port}/api/v1/alerts"
        hook["http_config"]["authorization"]["credentials_file"] = str(token)
    next(r for r in cfg["receivers"] if r["name"] == "oncall")["webhook_configs"][0]["url"] = \
        "http://127.0.0.1:9/"
    return AlertmanagerProcess(cfg).start()


def one_run(run: int, fleet: Fleet, home: Path, reps: list[Replica],
            am: AlertmanagerProcess, node: str) -> tuple[float, set[str], float]:
    """One more alert, the leader lost with its disk, the takeover, the replacement."""
    now = datetime.now(UTC)
    alert = {"labels": {"alertname": "EdgeComponentDown", "node": node,
                        "component": f"component-{run}", "sentinel_level": "component"},
             "startsAt": now.isoformat(), "endsAt": (now + timedelta(hours=1)).isoformat()}
    httpx.post(f"{am.url}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()
    wait(lambda: len(reps[0].alerts() & reps[1].alerts()) == run + 1, 30,
         "both replicas acknowledged the alert")
    acked = reps[0].alerts() | reps[1].alerts()
    lead = next(i for i, r in enumerate(reps) if r.metric("sentinel_leader") == 1)
    other = reps[1 - lead]
    t0 = time.monotonic()
    reps[lead].lose()
    wait(lambda: other.metric("sentinel_leader") == 1, 60, "takeover")
    took = time.monotonic() - t0
    wait(lambda: other.metric("sentinel_alerts_active") == len(acked), 30,
         "the acknowledged alerts in force on the new leader")
    in_force = other.metric("sentinel_alerts_active") or 0.0
    print(f"run {run + 1}: takeover {took:.2f}s, alerts acknowledged {len(acked)}, in force "
          f"on the new leader {in_force:.0f}", flush=True)
    new = reps[lead] = Replica(fleet, home, reps[lead].name, reps[lead].port, am.url)
    wait(lambda: new.metric("sentinel_leader") == 0, 60, "the replacement follows")
    wait(lambda: new.alerts() == acked, 30,
         "the replacement read the firing alerts from Alertmanager")
    return took, acked, in_force


def main(runs: int) -> None:
    timing = NodeTiming(renew=0.5, grace=1.5, monitor_period=0.5)
    home = Path(tempfile.mkdtemp(prefix="sentinel-takeover-"))
    (home / "token").write_text(TOKEN)
    took: list[float] = []
    acked: set[str] = set()
    in_force = 0.0
    with Fleet(FleetSpec(sites=2, nodes_per_site=4, scrape_interval=1.0, timing=timing)) as fleet:
        ports = [free_port(), free_port()]
        am = alertmanager(ports, home / "token")
        reps: list[Replica] = []
        try:
            am.wait_ready()
            reps = [Replica(fleet, home, f"sentinel-{i}", p, am.url)
                    for i, p in enumerate(ports)]
            wait(lambda: sorted(r.metric("sentinel_leader") or 0 for r in reps) == [0, 1], 60,
                 "one leader, one follower")
            node = fleet.nodes()[0]
            for run in range(runs):
                seconds, acked, in_force = one_run(run, fleet, home, reps, am, node)
                took.append(seconds)
        finally:
            for r in reps:
                if r.proc.poll() is None:
                    r.proc.send_signal(signal.SIGKILL)
                    r.proc.wait()
            am.stop()
            if sys.exc_info()[0] is None:
                shutil.rmtree(home, ignore_errors=True)
    q = statistics.quantiles(took, n=20, method="inclusive")
    print(f"takeover_p50_seconds={statistics.median(took):.2f} takeover_p95_seconds={q[18]:.2f} "
          f"takeover_max_seconds={max(took):.2f} alerts_acknowledged={len(acked)} "
          f"alerts_in_force={in_force:.0f} runs={len(took)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="leaders lost (at least 10 for a p95)")
    main(ap.parse_args().runs)
