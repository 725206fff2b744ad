"""`sentinel demo`: a simulated fleet with real Prometheus servers and a real `sentinel serve`
process enforcing on it; a guided tour of each fault, then free play until Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from sentinel.sim.fleet import Fleet, FleetSpec
from sentinel.sim.prometheus import free_port

__all__ = ["run_demo"]

DOMAIN = "sentinel.edge.io"
DEMO_RULES = """\
# The shipped rules with demo-sized durations (production: see rules/isolation.yaml).
rules:
  - {{name: node-down, level: node, component: node-exporter,
     expr: 'up{{job="node-exporter"}} == 0', for: {f}s}}
  - {{name: edgecore-down, level: component, component: edgecore,
     expr: 'up{{job="edgecore"}} == 0', for: {f}s}}
  - {{name: kube-proxy-down, level: component, component: kube-proxy,
     expr: 'up{{job="kube-proxy"}} == 0', for: {f}s}}
  - {{name: coredns-down, level: component, component: coredns,
     expr: 'up{{job="coredns"}} == 0', for: {f}s}}
"""


def _command() -> str:
    """How to call `sentinel` from the user's shell: the venv's script is not on PATH."""
    script = Path(sys.executable).parent / "sentinel"
    if shutil.which("sentinel") == str(script) or not script.exists():
        return "sentinel" if shutil.which("sentinel") else f"{sys.executable} -m sentinel"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _say(msg: str) -> None:
    print(f"\033[1m{msg}\033[0m" if sys.stdout.isatty() else msg, flush=True)


class _Demo:
    def __init__(self, sites: int, nodes: int, scrape_interval: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
        self.fleet = Fleet(FleetSpec(sites, nodes, scrape_interval=scrape_interval))
        # Demo-sized durations that stay meaningful against the scrape interval.
        self.for_s = max(6, round(2 * scrape_interval))
        self.release_s = 2 * self.for_s
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.control = ""

    def start(self) -> None:
        _say("starting the simulated fleet (one real Prometheus per site)...")
        self.fleet.start()
        try:
            self.control = self.fleet.serve_control(18099)
        except OSError:
            self.control = self.fleet.serve_control(0)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        (self.dir / "rules.yaml").write_text(DEMO_RULES.format(f=self.for_s))
        cfg = {
            "mode": "enforce", "interval": "2s", "query_timeout": "2s",
            "sites": [{"name": s, "prometheus": u}
                      for s, u in self.fleet.prometheus_urls().items()],
            "rules": ["rules.yaml"], "taint_domain": DOMAIN,
            "cluster": {"url": self.fleet.api.url, "events_namespace": "default"},
            "durations": {"release_after": f"{self.release_s}s", "flap_window": "60s",
                          "cloud_link_for": f"{self.for_s}s", "max_data_age": "30s"},
            "budgets": {"site_max_fraction": 0.5, "fleet_max_fraction": 0.34,
                        "max_new_per_minute": 10},
            "journal": "journal.db", "listen": f"127.0.0.1:{port}",
        }
        (self.dir / "sentinel.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "serve", "--config",
             str(self.dir / "sentinel.yaml")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._relay, daemon=True).start()
        self._wait(lambda: self._ready(), 60, "sentinel ready")
        self.fleet.wait_scraped()
        self._banner()

    def _relay(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"  sentinel | {line.rstrip()}", flush=True)

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("sentinel exited; see its log above")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _banner(self) -> None:
        sim = "" if self.control.endswith(":18099") else f" --sim {self.control}"
        cli = _command()
        _say("\nsentinel demo is running")
        print(f"  sentinel API       {self.url}  (/metrics /healthz /readyz /api/v1/status)")
        print(f"  Kubernetes API     {self.fleet.api.url}  (emulator)")
        for s, p in self.fleet.proms.items():
            print(f"  Prometheus {s:<7} {p.url}  (sentinel reaches it via "
                  f"{self.fleet.uplinks[s].url})")
        print(f"  config             {self.dir / 'sentinel.yaml'}")
        print("  faults to try:")
        a, b = self.fleet.nodes(self.fleet.sites[0])[:2]
        for cmd in (f"crash {a}", f"component {b} kube-proxy", f"link-loss {a}",
                    f"partition {self.fleet.sites[-1]}", f"flap {b} 5", f"autonomy {a}",
                    "heal all"):
            print(f"    {cli} sim inject {cmd}{sim}")
        print(flush=True)

    def _wait(self, pred: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.5)
        _say(f"  !! not within {timeout:.0f}s: {what}")
        return False

    def taints(self, node: str) -> dict[str, str]:
        return {t["key"].removeprefix(DOMAIN + "/"): t["effect"]
                for t in self.fleet.node(node)["spec"].get("taints", [])
                if t["key"].startswith(DOMAIN)}

    def tour(self) -> bool:
        f = self.fleet
        a, b, c = (f.sites[i % len(f.sites)] for i in range(3))
        na, nb, nc = f.nodes(a)[1], f.nodes(b)[2], f.nodes(c)[0]
        ok = True

        def step(title: str, cmd: str, check: Callable[[], bool], what: str,
                 timeout: float = 40) -> None:
            nonlocal ok
            _say(f"\n== {title}\n   $ {_command()} sim inject {cmd}")
            kind, target, *arg = cmd.split()
            print("   " + f.inject(kind, target, arg[0] if arg else None), flush=True)
            t0 = time.monotonic()
            if self._wait(check, timeout, what):
                _say(f"   ok after {time.monotonic() - t0:.0f}s: {what}")
            else:
                ok = False

        step("a broken component: level 1, the node keeps its pods",
             f"component {na} kube-proxy", lambda: "kube-proxy" in self.taints(na),
             f"{na} tainted {DOMAIN}/kube-proxy:NoSchedule")
        step(f"it heals: released after release_after ({self.release_s}s here)", f"heal {na}",
             lambda: not self.taints(na), f"{na} released")
        pods = len(f.pods_on([nb]))
        step("a dead node, by both witnesses: level 2", f"crash {nb}",
             lambda: self.taints(nb).get("node") == "NoExecute",
             f"{nb} cordoned + NoExecute")
        print(f"   {pods} movable pods on {nb}; now {len(f.pods_on([nb]))} (evicted)")
        step("the cloud loses a node that still serves at its site: level 1 edgecore",
             f"link-loss {nc}", lambda: "edgecore" in self.taints(nc),
             f"{nc} tainted {DOMAIN}/edgecore:NoSchedule, not cordoned")
        before = {n: self.taints(n) for n in f.nodes(a)}
        step(f"site {a}'s uplink drops: a partition, nothing is evicted", f"partition {a}",
             lambda: self._status_site(a) == "partitioned", f"site {a} partitioned")
        hold = 3 * self.for_s
        time.sleep(hold)  # hold the partition for the audience: 3 x the longest `for`
        after = {n: self.taints(n) for n in f.nodes(a)}
        same = before == after
        _say(f"   {'ok' if same else '!!'}: after {hold}s of partition, site {a}'s taints are "
             f"{'unchanged' if same else 'CHANGED'}")
        ok = ok and same
        step("everything heals: every isolation is released", "heal all",
             lambda: all(not self.taints(n) for n in f.nodes()), "no sentinel taint left", 60)
        return ok

    def _status_site(self, site: str) -> str | None:
        try:
            st = httpx.get(f"{self.url}/api/v1/status", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None
        return next((s["state"] for s in st["sites"] if s["site"] == site), None)

    def summary(self) -> None:
        try:
            st: dict[str, Any] = httpx.get(f"{self.url}/api/v1/status", timeout=2).json()
            _say("\nstatus: " + json.dumps(st["sites"], indent=None)[:400])
        except (httpx.HTTPError, ValueError):
            pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.fleet.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_demo(sites: int, nodes: int, *, scrape_interval: float, tour: bool,
             exit_after_tour: bool) -> int:
    demo = _Demo(sites, nodes, scrape_interval)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        demo.start()
        ok = True
        if tour:
            ok = demo.tour()
            demo.summary()
            _say("\ntour " + ("complete" if ok else "had failures (see !! above)"))
        if exit_after_tour:
            return 0 if ok else 1
        _say("\nfree play: inject faults from another terminal; Ctrl-C stops everything")
        sys.stdout.flush()
        stop.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        _say("\nstopping: sentinel, the Prometheus servers, the emulator...")
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
