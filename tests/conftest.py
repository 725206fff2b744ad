"""Shared fixtures: one simulated fleet (real Prometheus per site) for the session, reset
between tests, and a harness that runs sentinel's real cycle against it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sentinel.config.loading import parse_config
from sentinel.config.rules import load_rules
from sentinel.core.explain import explain_node
from sentinel.http.app import Runtime, build_runtime
from sentinel.isolation.cycle import CycleReport
from sentinel.sim.fleet import NODES, PODS, Fleet, FleetSpec
from sentinel.sim.lifecycle import NodeTiming
from sentinel.sim.nodes import kubelet_pod
from sentinel.sim.process import free_port

DOMAIN = "sentinel.edge.io"
SCRAPE = 1.0

FAST_RULES = """
rules:
  - name: node-down
    level: node
    component: node-exporter
    expr: up{job="node-exporter"} == 0
    for: 2s
  - name: edgecore-down
    level: component
    component: edgecore
    expr: up{job="edgecore"} == 0
    for: 2s
  - name: kube-proxy-down
    level: component
    component: kube-proxy
    expr: up{job="kube-proxy"} == 0
    for: 2s
"""


@contextmanager
def scraped_fleet(sites: int, nodes: int, discover: str | None = None) -> Iterator[Fleet]:
    """A fleet at test speed, every node scraped healthy once. A crashed node goes Unknown
    1.5-2 s after it died: the order of a real cluster (Lease, grace period, then the cloud
    sees it), at test speed."""
    timing = NodeTiming(renew=0.5, grace=1.5, monitor_period=0.5)
    with Fleet(FleetSpec(sites=sites, nodes_per_site=nodes, scrape_interval=SCRAPE,
                         timing=timing, discover=discover, domain=DOMAIN)) as f:
        f.wait_scraped()
        yield f


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    with scraped_fleet(3, 5) as f:
        yield f


def reset(fleet: Fleet) -> None:
    """Heal everything and strip every trace of earlier tests from the nodes."""
    fleet.heal()
    for n in fleet.nodes():
        def clean(o: dict[str, Any]) -> None:
            o["spec"].pop("unschedulable", None)
            o["spec"]["taints"] = [t for t in o["spec"].get("taints", [])
                                   if not t["key"].startswith(DOMAIN)
                                   and t["key"] != "node.kubernetes.io/unschedulable"
                                   and not t["key"].startswith("test.")]
            ann = o["metadata"].get("annotations", {})
            ann.pop(f"{DOMAIN}/isolation", None)
            ann.pop("node.beta.openyurt.io/autonomy", None)
            ann.pop("node.openyurt.io/autonomy-duration", None)
        fleet.store.mutate(NODES, "", n, clean)
    overrides = fleet.store.resources[("sentinel.edge.io", "v1alpha1", "sentineloverrides")]
    for o in fleet.store.list(overrides, None)[0]:  # in the cluster now, not a test's journal
        fleet.store.delete(overrides, o["metadata"]["namespace"], o["metadata"]["name"])
    items, _ = fleet.store.list(PODS, None)
    for p in items:
        if p["metadata"]["name"].startswith("camera-"):
            fleet.store.delete(PODS, p["metadata"]["namespace"], p["metadata"]["name"])
    for n in fleet.nodes():  # recreate evicted pods so every test starts with a full fleet
        for k in range(fleet.spec.pods_per_node):
            name = f"app-{n}-{k}"
            try:
                fleet.store.get(PODS, "default", name)
            except Exception:
                fleet.store.create(PODS, "default", kubelet_pod(name, n, {"app": "demo"}))
    fleet.wait_scraped()


@pytest.fixture
def clean_fleet(fleet: Fleet) -> Iterator[Fleet]:
    reset(fleet)
    yield fleet
    reset(fleet)


class Harness:
    """Sentinel's real runtime (adapters and all) driven cycle by cycle from the test."""

    def __init__(self, fleet: Fleet, tmp: Path, **overrides: Any) -> None:
        self.fleet, self.tmp = fleet, tmp
        rules = tmp / "rules.yaml"
        if not rules.exists():
            rules.write_text(FAST_RULES)
        cfg: dict[str, Any] = {
            "mode": "enforce", "interval": 0.5, "query_timeout": 1.5,
            "sites": [{"name": s, "prometheus": u} for s, u in fleet.prometheus_urls().items()],
            "rules": [str(rules)], "cluster": {"url": fleet.api.url, "watch_timeout": 30},
            "durations": {"release_after": 3, "flap_window": 0, "cloud_link_for": 2,
                          "max_data_age": 30},
            "budgets": {"site_max_fraction": 1.0, "fleet_max_fraction": 1.0,
                        "max_new_per_minute": 100},
            "journal": str(tmp / "journal.db"), "taint_domain": DOMAIN,
        }
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k] = {**cfg[k], **v}
            else:
                cfg[k] = v
        self.cfg = parse_config(yaml.safe_dump(cfg), str(tmp / "sentinel.yaml"), {})
        self.rules = load_rules([Path(r) for r in self.cfg.rules])
        self.loop = asyncio.new_event_loop()
        self.rt: Runtime = build_runtime(self.cfg, self.rules)
        self.rt.cluster.start()
        self.rt.sites.start()
        self.rt.overrides.start()
        assert self.rt.cluster.wait_synced(10), "node list never synced"
        assert self.rt.sites.wait_synced(10), f"sites never listed: {self.rt.sites.error}"
        self.reports: list[CycleReport] = []

    @property
    def sentinel(self) -> Any:
        return self.rt.sentinel

    def cycle(self) -> CycleReport:
        rep = self.loop.run_until_complete(self.rt.sentinel.run_cycle())
        self.reports.append(rep)
        return rep

    def until(self, pred: Callable[[CycleReport], bool], timeout: float, what: str,
              pause: float = 0.3) -> CycleReport:
        """Run cycles until `pred` holds; fail with `what` at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            rep = self.cycle()
            if pred(rep):
                return rep
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}")
            time.sleep(pause)  # pacing between cycles, as the scheduler would; not a sync

    def run_for(self, seconds: float, pause: float = 0.3) -> list[CycleReport]:
        deadline = time.monotonic() + seconds
        out = []
        while time.monotonic() < deadline:
            out.append(self.cycle())
            time.sleep(pause)
        return out

    def explain(self, node: str, **kw: Any) -> dict[str, Any]:
        """The node's story as of the last cycle, as the API tells it."""
        rep = self.reports[-1]
        return explain_node(rep.nodes_after[node], snapshot=rep.snapshot,
                            detection=rep.detection, plan=rep.plan, state=rep.state,
                            params=self.sentinel.decide_params, mode=rep.mode,
                            now=rep.finished_at, journal=[], **kw)

    def close(self) -> None:
        self.loop.run_until_complete(self.rt.aclose())
        self.loop.close()


@pytest.fixture
def harness(clean_fleet: Fleet, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        h = Harness(clean_fleet, tmp_path, **overrides)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def poll(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.2)


def prometheus_children(pid: int) -> set[int]:
    """The Prometheus servers a process started itself. Never count every Prometheus on the
    machine: the suite runs on two workers, and the other one starts and stops its own."""
    out = subprocess.run(["pgrep", "-x", "prometheus", "-P", str(pid)], capture_output=True,
                         text=True)
    return {int(p) for p in out.stdout.split()}


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if Path(f"/proc/{p}").exists()}


class ChildWatch:
    """Every Prometheus a process starts while it runs, sampled by a thread: for a process
    that runs to its end on its own (the tour), whose servers must all be gone after it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.seen |= prometheus_children(self.pid)

    def stop(self) -> set[int]:
        self._stop.set()
        self._thread.join()
        return self.seen


class Serve:
    def __init__(self, fleet: Fleet, tmp: Path, rules: str = FAST_RULES,
                 **extra: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "rules.yaml").write_text(rules)
        self.journal = tmp / str(extra.get("journal", "journal.db"))
        cfg = {"mode": "enforce", "interval": "0.5s", "query_timeout": "1.5s",
               "sites": [{"name": s, "prometheus": u} for s, u in
                         fleet.prometheus_urls().items()],
               "rules": ["rules.yaml"], "taint_domain": DOMAIN, "journal": "journal.db",
               "cluster": {"url": fleet.api.url},
               "durations": {"release_after": "3s", "cloud_link_for": "2s"},
               "listen": f"127.0.0.1:{self.port}", **extra}
        self.config = tmp / "sentinel.yaml"
        self.cfg = cfg
        self.config.write_text(yaml.safe_dump(cfg))
        self.log = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def set_port(self, port: int) -> None:
        """Listen on this port (one that another process, such as Alertmanager, names)."""
        self.port, self.url = port, f"http://127.0.0.1:{port}"
        self.cfg["listen"] = f"127.0.0.1:{port}"
        self.config.write_text(yaml.safe_dump(self.cfg))

    def spawn(self) -> None:
        """Start the process; `wait_ready` waits for it (two replicas start side by side)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sentinel", "serve", "--config", str(self.config),
                 "--log-format", "json"], stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        poll(lambda: self.get("/readyz").status_code == 200, 30, "sentinel ready")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def get(self, path: str) -> httpx.Response:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"sentinel exited: {self.log.read_text()[-2000:]}")
        try:
            return httpx.get(self.url + path, timeout=2)
        except httpx.HTTPError:
            return httpx.Response(599)

    def cycles(self) -> float:
        for line in self.get("/metrics").text.splitlines():
            if line.startswith('sentinel_cycles_total{outcome="ok"}'):
                return float(line.split()[-1])
        return 0.0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def our_taints(fleet: Fleet, node: str) -> dict[str, str]:
    return {t["key"].removeprefix(DOMAIN + "/"): t["effect"]
            for t in fleet.node(node)["spec"].get("taints", []) if t["key"].startswith(DOMAIN)}


def site_actions(fleet: Fleet, site: str) -> list[tuple[str, str, str, str]]:
    nodes = set(fleet.nodes(site))
    return [w for w in fleet.store.writes
            if w[1] == "nodes" and w[3] in nodes and w[0] in ("update",)]
