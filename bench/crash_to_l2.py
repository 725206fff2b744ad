"""Crash to level 2 with a real cluster's timing, at the shipped defaults, and no false isolation.

A simulated fleet (12 sites x 10 nodes, one real Prometheus per site scraping every 15 s, the
Prometheus default) whose kubelets renew their Leases every 10 s and whose node lifecycle
controller marks a node Unknown after 50 s without a renewal (Kubernetes 1.32), and a real
`sentinel serve` with the shipped rules (`rules/`: node-down `for` 10 s), the default `interval`
(5 s) and the default `cluster.lease_witness_after` (20 s). 20 nodes crash at random moments
over 150 s; each one's time from the crash to its level-2 taint is read from the emulator.
Meanwhile, what must never be isolated: one site's uplink is cut for 80 s (its kubelets and
its Prometheus unreachable: a partition), three kubelets renew every 15 s (late every time,
alive), and the 30 s after sentinel starts; any taint of ours on one of those nodes, or on any
node before the first crash, is a false isolation. One node flaps (down 8 s, up 8 s) all along:
it may be isolated (it is faulty), but once, never released and isolated again (flap damping).
The run is made twice: with the Lease witness, and with `lease_witness_after: 0` (the
controller's Ready condition only). The rate budget is raised to 30 a minute so that no crash
is refused: the wait is what is measured. Last line: `crash_to_l2_p50_seconds=<n>
crash_to_l2_p95_seconds=<n> crash_to_l2_max_seconds=<n> without_lease_witness_p95_seconds=<n>
crashes=<n> false_isolations=<n> flapper_isolations=<n>`.
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


def taints(fleet: Fleet, node: str) -> list[str]:
    return [f"{t['key']}:{t['effect']}" for t in fleet.node(node)["spec"].get("taints", [])
            if t["key"].startswith(DOMAIN)]


def run(witness: float | None, crashes: int, window: float,
        seed: int) -> tuple[list[float], list[str], int]:
    """Crash to level 2 of each crash, the nodes falsely isolated (with the taint), and how
    many times the flapping node was isolated."""
    timing = NodeTiming()  # renew 10 s, grace 50 s, monitor 5 s: a real cluster's
    home = Path(tempfile.mkdtemp(prefix="sentinel-crash-"))
    rng = random.Random(seed)
    with Fleet(FleetSpec(sites=12, nodes_per_site=10, scrape_interval=15.0,
                         timing=timing)) as fleet:
        fleet.wait_scraped(timeout=120)
        cut = fleet.sites[-1]
        spared = set(fleet.nodes(cut))
        others = [n for n in fleet.nodes() if n not in spared]
        slow = others[:3]
        flapper = others[3]
        for n in slow:
            fleet.lifecycle.renew_every[n] = 15.0
        spared |= set(slow)
        proc = serve(fleet, home, witness)
        false: set[str] = set()
        flaps, was = 0, False

        def check(nodes: list[str] | set[str]) -> None:
            false.update(f"{n} ({', '.join(t)})" for n in nodes if (t := taints(fleet, n)))

        try:
            t_ready = time.monotonic()
            while time.monotonic() < t_ready + 30:  # start-up: no node of ours yet
                check(fleet.nodes())
                time.sleep(1.0)
            victims = rng.sample([n for n in fleet.nodes()
                                  if n not in spared and n != flapper], crashes)
            at = sorted(rng.uniform(0, window) for _ in victims)
            crashed: dict[str, float] = {}
            seen: dict[str, float] = {}
            start = time.monotonic()

            def crasher() -> None:
                for node, t in zip(victims, at, strict=True):
                    time.sleep(max(0.0, start + t - time.monotonic()))
                    fleet.crash(node)
                    crashed[node] = time.monotonic()

            def troubles() -> None:
                fleet.flap(flapper, period=8.0)
                time.sleep(window / 3)
                fleet.partition(cut)
                time.sleep(80)
                fleet.restore_uplink(cut)

            threads = [threading.Thread(target=f, daemon=True) for f in (crasher, troubles)]
            for th in threads:
                th.start()
            deadline = start + window + 240
            while time.monotonic() < deadline and (len(seen) < crashes or threads[1].is_alive()):
                for node in list(crashed):
                    if node not in seen and level2(fleet, node):
                        seen[node] = time.monotonic() - crashed[node]
                check(spared)
                now_isolated = bool(taints(fleet, flapper))
                flaps += now_isolated and not was
                was = now_isolated
                time.sleep(0.25)
            for th in threads:
                th.join()
            fleet.stop_flapping(flapper)
            missing = [n for n in victims if n not in seen]
            if missing:
                raise SystemExit(f"never level 2 within 4 min: {missing}")
            return sorted(seen.values()), sorted(false), flaps
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            shutil.rmtree(home, ignore_errors=True)


def main(crashes: int, window: float) -> None:
    with_w, false_w, flaps_w = run(None, crashes, window, seed=1)
    print(f"with the Lease witness (20 s): p50 {statistics.median(with_w):.1f}s, "
          f"max {max(with_w):.1f}s over {len(with_w)} crashes; falsely isolated: "
          f"{', '.join(false_w) or 'none'}", flush=True)
    without, false_wo, flaps_wo = run(0.0, crashes, window, seed=1)
    print(f"Ready condition only: p50 {statistics.median(without):.1f}s, "
          f"max {max(without):.1f}s; falsely isolated: {', '.join(false_wo) or 'none'}",
          flush=True)

    def p95(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=20, method="inclusive")[18]

    print(f"crash_to_l2_p50_seconds={statistics.median(with_w):.1f} "
          f"crash_to_l2_p95_seconds={p95(with_w):.1f} crash_to_l2_max_seconds={max(with_w):.1f} "
          f"without_lease_witness_p95_seconds={p95(without):.1f} crashes={len(with_w)} "
          f"false_isolations={len(set(false_w) | set(false_wo))} "
          f"flapper_isolations={max(flaps_w, flaps_wo)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--window", type=float, default=150.0, help="seconds the crashes spread over")
    a = ap.parse_args()
    main(a.crashes, a.window)
