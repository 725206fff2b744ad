"""The real processes a user runs: `sentinel serve` (killed with SIGKILL mid-isolation and
started again), `sentinel sim inject`, and `sentinel demo`."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel.sim.fleet import Fleet
from sentinel.sim.prometheus import free_port

from .conftest import ChildWatch, Serve, alive, our_taints, poll, prometheus_children


@pytest.fixture
def serve(clean_fleet: Fleet, tmp_path: Path) -> Iterator[Serve]:
    s = Serve(clean_fleet, tmp_path)
    yield s
    s.kill()


def test_serve_health_and_metrics(serve: Serve) -> None:
    serve.start()
    assert serve.get("/healthz").json() == {"ok": True}
    metrics = serve.get("/metrics").text
    assert 'sentinel_site_reachable{site="site-a"} 1.0' in metrics
    assert "sentinel_cycle_duration_seconds_count" in metrics
    assert 'sentinel_mode{mode="enforce"} 1.0' in metrics
    assert 'sentinel_nodes_without_site 0.0' in metrics


def test_sigkill_mid_isolation_then_restart(serve: Serve, clean_fleet: Fleet) -> None:
    f = clean_fleet
    serve.start()
    f.crash("edge-c-02")
    f.component("edge-a-03", "kube-proxy")
    poll(lambda: our_taints(f, "edge-c-02").get("node") == "NoExecute"
         and "kube-proxy" in our_taints(f, "edge-a-03"), 20, "both isolated")
    before = {n: f.node(n)["spec"]["taints"] for n in ("edge-c-02", "edge-a-03")}
    serve.kill()
    serve.start()
    # the restarted sentinel runs several full cycles over the isolated nodes
    poll(lambda: serve.cycles() >= 5, 20, "five cycles after the restart")
    for n, taints in before.items():
        assert f.node(n)["spec"]["taints"] == taints, f"{n} changed after the restart"
    with sqlite3.connect(serve.journal) as db:
        rows = db.execute("SELECT node, key, COUNT(*) FROM actions WHERE kind = 'isolate' "
                          "GROUP BY node, key").fetchall()
    assert sorted(rows) == [("edge-a-03", "kube-proxy", 1), ("edge-c-02", "node", 1)]
    status = serve.get("/api/v1/status").json()
    assert {i["node"] for i in status["isolated"]} == {"edge-a-03", "edge-c-02"}
    f.heal("edge-a-03")
    poll(lambda: not our_taints(f, "edge-a-03"), 20, "released by the restarted sentinel")
    assert '"level": "INFO"' in serve.log.read_text()  # structured logs


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_sim_inject_cli(clean_fleet: Fleet) -> None:
    url = clean_fleet.serve_control(0)
    out = _cli("sim", "inject", "component", "edge-b-01", "coredns", "--sim", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "edge-b-01: coredns down"
    assert ("edge-b-01", "coredns") in clean_fleet.exporters["site-b"].down
    out = _cli("sim", "inject", "crash", "edge-z-99", "--sim", url)
    assert out.returncode == 1 and "no node 'edge-z-99' in the fleet" in out.stderr
    out = _cli("sim", "inject", "explode", "edge-b-01", "--sim", url)
    assert out.returncode == 1 and "no fault 'explode'" in out.stderr
    out = _cli("sim", "inject", "heal", "all", "--sim", url)
    assert out.returncode == 0 and not clean_fleet.exporters["site-b"].down
    out = _cli("sim", "inject", "flap", "edge-b-02", "5", "--sim", url)
    assert out.returncode == 1 and "flap takes --period SECONDS and --count N, not '5' as an " \
        "argument" in \
        out.stderr
    out = _cli("sim", "inject", "flap", "edge-b-02", "--period", "1", "--count", "1",
               "--sim", url)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "edge-b-02: crashes for 1s, then serves for 1s, 1 time(s)"
    poll(lambda: not clean_fleet.flapping("edge-b-02"), 20, "one flap, then done")
    assert "edge-b-02" not in clean_fleet.exporters["site-b"].crashed
    assert clean_fleet.node("edge-b-02")["status"]["conditions"][-1]["status"] == "True"
    dead = f"http://127.0.0.1:{free_port()}"
    out = _cli("sim", "inject", "heal", "all", "--sim", dead)
    assert out.returncode == 1 and f"no simulator at {dead}" in out.stderr


def test_demo_tour_runs_and_cleans_up() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "demo", "--exit-after-tour",
                             "--scrape-interval", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    watch = ChildWatch(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
        servers = watch.stop()
    assert proc.returncode == 0, stdout[-3000:] + stderr[-2000:]
    assert "tour complete" in stdout
    assert "ENFORCED isolate node on" in stdout
    assert "site-partition-suspected" in stdout
    assert len(servers) == 3, f"one Prometheus per site while the tour ran: {servers}"
    assert not alive(servers), "the demo left Prometheus processes behind"


def test_demo_stops_every_process_on_ctrl_c() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "sentinel", "demo", "--no-tour",
                             "--scrape-interval", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "free play" in line:
                break
        assert any("sentinel API" in s for s in seen), "".join(seen)
        during = prometheus_children(proc.pid)
        assert len(during) == 3, "one Prometheus per site while the demo runs"
    finally:  # a failed assertion must not leave the demo and its servers running
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, rest
    assert not alive(during), "Prometheus processes survived Ctrl-C"
