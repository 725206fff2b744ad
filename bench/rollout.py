"""Rollout guard: time from a bad version's first ready pod to the rollback patch, and false
rollbacks of noisy-but-healthy versions, at the default `rollouts` settings (a round every
10 s, 30 s rate window, a sample every 10 s, 60 s minimum window, 10 samples a side, alpha
0.01), against a simulated fleet with one real Prometheus per site (5 s scrapes).

All rollouts of one batch run at once, as an EdgeApplication updates every node group at the
same moment: `--bad` single-group apps get a version with 15 % errors, `--noisy` apps on every
site get a healthy version with bursty traffic and jittery errors. Each batch waits for 60 s of
stable history first. The times come from the emulator's watch: the first pod of the bad
version appearing, and the Deployment's template going back.
Last line: `rollback_p95_seconds=<n> false_rollbacks=<k>/<runs>`. Targets (issue 6): rollback
within 120 s, 0 false rollbacks in at least 50 healthy runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from sentinel.adapters.journal import Journal
from sentinel.adapters.kube import make_api_client
from sentinel.adapters.metrics import Metrics
from sentinel.config.loading import parse_config
from sentinel.http.runtime import make_recorder, rollout_guard
from sentinel.rollouts.guard import RolloutGuard
from sentinel.sim.fleet import Fleet, FleetSpec
from sentinel.sim.store import Resource
from sentinel.sim.workloads import DEPLOYMENTS, PODS


class Clock:
    """Watches the emulator: when each Deployment's first bad pod appeared, and when its
    template went back to the good version."""

    def __init__(self, fleet: Fleet, bad: str, good: str) -> None:
        self.fleet, self.bad, self.good = fleet, bad, good
        self.first_pod: dict[str, float] = {}
        self.rolled_back: dict[str, float] = {}
        self._stop = threading.Event()
        for res, fn in ((PODS, self._pod), (DEPLOYMENTS, self._deployment)):
            threading.Thread(target=self._watch, args=(res, fn), daemon=True).start()

    def _watch(self, res: Resource, fn: Callable[[str, dict[str, Any]], None]) -> None:
        since = self.fleet.store.resource_version
        for e in self.fleet.store.watch(res, None, since, 3600, lambda o: True,
                                        self._stop.is_set):
            fn(e.type, e.obj)

    def _pod(self, kind: str, o: dict[str, Any]) -> None:
        labels = o["metadata"].get("labels") or {}
        if kind == "ADDED" and labels.get("version") == self.bad:
            owner = o["metadata"]["name"].rsplit("-", 2)[0]
            self.first_pod.setdefault(owner, time.time())

    def _deployment(self, kind: str, o: dict[str, Any]) -> None:
        v = o["spec"]["template"]["metadata"]["labels"].get("version")
        name = o["metadata"]["name"]
        if v == self.good and name in self.first_pod:
            self.rolled_back.setdefault(name, time.time())

    def stop(self) -> None:
        self._stop.set()


def batch(fleet: Fleet, guard: RolloutGuard, n_bad: int, n_noisy: int, tag: str,
          timeout: float) -> tuple[list[float], int, int]:
    good, bad, noisy = f"1.0-{tag}", f"2.0-{tag}", f"1.1-{tag}"
    fleet.set_version(bad, "bad-errors")
    fleet.set_version(noisy, "noisy")
    bads = [fleet.deploy_app(f"bad{tag}x{i}", good, sites=[fleet.sites[i % len(fleet.sites)]])[0]
            for i in range(n_bad)]
    noisies = [n for i in range(n_noisy) for n in fleet.deploy_app(f"noisy{tag}x{i}", good)]
    time.sleep(60)  # the stable history a long-running version has (a benchmark, not a test)
    clock = Clock(fleet, bad, good)
    for name in bads:
        app, site = name.split("-", 1)
        fleet.upgrade(app, bad, site)
    for name in noisies:
        app, site = name.split("-", 1)
        fleet.upgrade(app, noisy, site)
    deadline = time.monotonic() + timeout
    false = set()
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        for a in guard.run_round():
            if a.kind == "rollback" and a.workload.name in noisies:
                false.add(a.workload.name)
        rows = {w["name"]: w["state"] for w in guard.status_values()}
        done_bad = all(rows.get(n) == "rolled-back" for n in bads)
        done_noisy = all(rows.get(n) in ("passed", "rolled-back") or n in false
                         for n in noisies)
        if done_bad and done_noisy:
            break
        time.sleep(max(0.0, guard.r.interval - (time.monotonic() - t0)))
    clock.stop()
    times = [clock.rolled_back[n] - clock.first_pod[n] for n in bads
             if n in clock.rolled_back and n in clock.first_pod]
    missed = len(bads) - len(times)
    fleet.remove_apps()
    return times, len(false), missed


def main(batches: int, n_bad: int, n_noisy: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sentinel-bench-rollout-"))
    with Fleet(FleetSpec(sites=3, nodes_per_site=5, scrape_interval=5.0,
                         rollout_step=5.0)) as fleet:
        fleet.wait_scraped(60)
        cfg = parse_config(yaml.safe_dump({
            "mode": "enforce", "rules": [], "cluster": {"url": fleet.api.url},
            "journal": str(tmp / "journal.db"), "rollouts": {"enabled": True},
            "sites": [{"name": s, "prometheus": u}
                      for s, u in fleet.prometheus_urls().items()]}),
            str(tmp / "sentinel.yaml"), {})
        journal = Journal(tmp / "journal.db")
        client = make_api_client(cfg.cluster)
        guard = rollout_guard(cfg, client, make_recorder(cfg, client, journal),
                              Metrics(CollectorRegistry(), "enforce")).start()
        guard.view.wait_synced(30)
        times: list[float] = []
        false = runs = missed = 0
        for b in range(batches):
            t, f, m = batch(fleet, guard, n_bad, n_noisy, str(b), timeout=300)
            times += t
            false += f
            missed += m
            runs += n_noisy * len(fleet.sites)
            print(f"batch {b + 1}: rollbacks {len(t)}/{n_bad} in "
                  f"{', '.join(f'{x:.1f}' for x in sorted(t))} s; false rollbacks {f}/"
                  f"{n_noisy * len(fleet.sites)}", flush=True)
        guard.close()
        journal.close()
    if missed:
        print(f"bad versions not rolled back within the batch timeout: {missed}")
    times.sort()
    p95 = times[min(len(times) - 1, int(0.95 * len(times)))] if times else float("nan")
    print(f"rollback seconds: median {statistics.median(times):.1f}, max {max(times):.1f}, "
          f"{len(times)} rollbacks")
    print(f"rollback_p95_seconds={p95:.1f} false_rollbacks={false}/{runs}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--bad", type=int, default=10, help="bad rollouts per batch")
    ap.add_argument("--noisy", type=int, default=9,
                    help="noisy healthy apps per batch (one rollout per site each)")
    a = ap.parse_args()
    main(a.batches, a.bad, a.noisy)
