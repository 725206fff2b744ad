"""Crash to level 2 with a real cluster's timing, at the shipped defaults.

A simulated fleet (12 sites x 10 nodes, one real Prometheus per site scraping every 15 s, the
Prometheus default) whose kubelets renew their Leases every 10 s and whose node lifecycle
controller marks a node Unknown after 50 s without a renewal (Kubernetes 1.32), and a real
`sentinel serve` with the shipped rules (`rules/`), the default `interval` (10 s) and the
default `cluster.lease_witness_after` (25 s). 20 nodes crash at random moments over 150 s;
each one's time from the crash to its level-2 taint is read from the emulator. The run is made
twice: with the Lease witness, and with `lease_witness_after: 0` (the controller's Ready
condition only). The rate budget is raised to 30 a minute so that no crash is refused: the
wait is what is measured. Last line: `crash_to_l2_p50_seconds=<n> crash_to_l2_p95_seconds=<n>
crash_to_l2_max_seconds=<n> without_lease_witness_p95_seconds=<n> crashes=<n>`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from sentinel.sim.fleet import Fleet, FleetSpec
from sentinel.sim.lifecycle import NodeTiming
from sentinel.sim.process import free_port

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "sentinel.edge.io"


def serve(fleet: Fleet, home: Path, witness: float | None) -> subprocess.Popen[bytes]:
    port = free_port()
    cfg: dict[str, object] = {
        "mode": "enforce", "rules": [str(ROOT / "rules")], "journal": str(home / "j.db"),
        "sites": [{"name": s, "prometheus": u} for s, u in fleet.prometheus_urls().items()],
        "cluster": {"url": fleet.api.url}, "listen": f"127.0.0.1:{port}",
        "budgets": {"max_new_per_minute": 30}, "anomaly": {"enabled": False}}
    if witness is not None:
        cfg["cluster"] = {"url": fleet.api.url, "lease_witness_after": witness}
    (home / "sentinel.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "serve", "--config",
                             str(home / "sentinel.yaml")], stdout=(home / "log").open("wb"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"sentinel never became ready: {(home / 'log').read_text()[-2000:]}")


def level2(fleet: Fleet, node: str) -> bool:
    return any(t["key"] == f"{DOMAIN}/node" and t["effect"] == "NoExecute"
               for t in fleet.node(node)["spec"].get("taints", []))


def run(witness: float | None, crashes: int, window: float, seed: int) -> list[float]:
    timing = NodeTiming()  # renew 10 s, grace 50 s, monitor 5 s: a real cluster's
    home = Path(tempfile.mkdtemp(prefix="sentinel-crash-"))
    rng = random.Random(seed)
    with Fleet(FleetSpec(sites=12, nodes_per_site=10, scrape_interval=15.0,
                         timing=timing)) as fleet:
        fleet.wait_scraped(timeout=120)
        proc = serve(fleet, home, witness)
        try:
            time.sleep(30)  # let the site Prometheus servers outlive the rules' `for`
            victims = rng.sample(fleet.nodes(), crashes)
            at = sorted(rng.uniform(0, window) for _ in victims)
            crashed: dict[str, float] = {}
            seen: dict[str, float] = {}
            start = time.monotonic()

            def crasher() -> None:
                for node, t in zip(victims, at, strict=True):
                    time.sleep(max(0.0, start + t - time.monotonic()))
                    fleet.crash(node)
                    crashed[node] = time.monotonic()

            th = threading.Thread(target=crasher, daemon=True)
            th.start()
            deadline = start + window + 240
            while time.monotonic() < deadline and len(seen) < crashes:
                for node in list(crashed):
                    if node not in seen and level2(fleet, node):
                        seen[node] = time.monotonic() - crashed[node]
                time.sleep(0.25)
            th.join()
            missing = [n for n in victims if n not in seen]
            if missing:
                raise SystemExit(f"never level 2 within 4 min: {missing}")
            return sorted(seen.values())
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            shutil.rmtree(home, ignore_errors=True)


def main(crashes: int, window: float) -> None:
    with_w = run(None, crashes, window, seed=1)
    print(f"with the Lease witness (25 s): p50 {statistics.median(with_w):.1f}s, "
          f"max {max(with_w):.1f}s over {len(with_w)} crashes", flush=True)
    without = run(0.0, crashes, window, seed=1)
    print(f"Ready condition only: p50 {statistics.median(without):.1f}s, "
          f"max {max(without):.1f}s", flush=True)

    def p95(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=20, method="inclusive")[18]

    print(f"crash_to_l2_p50_seconds={statistics.median(with_w):.1f} "
          f"crash_to_l2_p95_seconds={p95(with_w):.1f} crash_to_l2_max_seconds={max(with_w):.1f} "
          f"without_lease_witness_p95_seconds={p95(without):.1f} crashes={len(with_w)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--window", type=float, default=150.0, help="seconds the crashes spread over")
    a = ap.parse_args()
    main(a.crashes, a.window)
