"""`sentinel demo`: a simulated fleet with real Prometheus servers and a real `sentinel serve`
process enforcing on it; a guided tour of each fault, then free play until Ctrl-C."""

from __future__ import annotations

import json
import os
import secrets
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

from sentinel.cli import demofile
from sentinel.core.errors import SentinelError
from sentinel.sim.fleet import Fleet, FleetSpec
from sentinel.sim.lifecycle import NodeTiming
from sentinel.sim.prometheus import free_port

__all__ = ["Demo", "DemoError", "run_demo"]

DOMAIN = "sentinel.edge.io"
DISCOVER = {"nodepools": "openyurt-nodepools", "nodegroups": "kubeedge-nodegroups"}
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


class Demo:
    def __init__(self, sites: int, nodes: int, scrape_interval: float,
                 relay: Callable[[str], None] | None = None, discover: str | None = None) -> None:
        self.relay = relay or (lambda line: print(f"  sentinel | {line}", flush=True))
        self.dir = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
        self.token_file = self.dir / "oncall.token"
        self.scrape = scrape_interval
        # Demo-sized durations that stay meaningful against the scrape interval: at least
        # four scrapes (the tests' 1 s scrapes), two at the default 5 s.
        self.for_s = max(4, round(2 * scrape_interval))
        # The cloud sees a dead node after a grace period, as in a real cluster (50 s there;
        # here half the rules' `for`, so the tour does not keep its audience waiting).
        self.grace_s = max(3, self.for_s // 2)
        self.fleet = Fleet(FleetSpec(sites, nodes, scrape_interval=scrape_interval,
                                     timing=NodeTiming(renew=max(1.0, self.grace_s / 5),
                                                       grace=self.grace_s,
                                                       monitor_period=1.0),
                                     discover=discover, domain=DOMAIN))
        self.discover = discover
        self.release_s = 2 * self.for_s
        # Long enough that a node flapping with the banner's period is released at most once
        # in it (its releases come 2 periods apart).
        self.flap_window = 12 * self.for_s
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
        # A write token, so that the on-call writes (isolate, release, pause) can be tried: a
        # config without one refuses every write. Only this user can read it.
        self.token_file.touch(mode=0o600)
        self.token_file.write_text(secrets.token_urlsafe(24) + "\n")
        cfg = {
            "mode": "enforce", "interval": "2s", "query_timeout": "2s",
            # Discovered: the sites are the NodePools (NodeGroups) and their Prometheus the
            # annotation the fleet put on each; else written out, as most configs are.
            **({"site_discovery": {"discover": DISCOVER[self.discover]}} if self.discover
               else {"sites": [{"name": s, "prometheus": u}
                               for s, u in self.fleet.prometheus_urls().items()]}),
            "rules": ["rules.yaml"], "taint_domain": DOMAIN,
            "cluster": {"url": self.fleet.api.url, "events_namespace": "default"},
            "durations": {"release_after": f"{self.release_s}s",
                          "flap_window": f"{self.flap_window}s",
                          "cloud_link_for": f"{self.for_s}s", "max_data_age": "30s"},
            "budgets": {"site_max_fraction": 0.5, "fleet_max_fraction": 0.34,
                        "max_new_per_minute": 10},
            "journal": "journal.db", "listen": f"127.0.0.1:{port}",
            "api": {"tokens": [{"name": "demo-oncall", "token_file": str(self.token_file),
                                "write": True}]},
            # Train as soon as 30 scrapes of history exist, instead of production's hours.
            "anomaly": {"training_step": f"{self.scrape:g}s",
                        "rate_window": f"{max(4 * self.scrape, 1):g}s",
                        "training_window": "1h", "retry_after": f"{max(30, 6 * self.scrape):g}s",
                        "model_file": "anomaly.npz"},
        }
        (self.dir / "sentinel.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentinel", "serve", "--config",
             str(self.dir / "sentinel.yaml")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            # Its own process group: a terminal's Ctrl-C reaches the demo only, which stops
            # sentinel with one SIGINT (a second one makes uvicorn quit with a traceback).
            start_new_session=True)
        threading.Thread(target=self._relay, daemon=True).start()
        if not self._wait(lambda: self._ready(), 60, "sentinel ready"):
            raise DemoError("sentinel serve did not become ready within 60s (its log is "
                            "above)")
        # 26 x 30 takes 10 s here on 2 cores; a busy machine may take several times that.
        total = self.fleet.spec.sites * self.fleet.spec.nodes_per_site
        self.fleet.wait_scraped(timeout=max(30.0, 6 * self.scrape, total / 6))
        self._banner()

    def _relay(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.relay(line.rstrip())

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(f"sentinel serve exited with code {self.proc.returncode} before it "
                            "was ready (its log is above)")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _banner(self) -> None:
        cli = _command()
        where = demofile.remember(self.url, self.control, str(self.token_file))
        _say("\nsentinel demo is running")
        if where is not None:
            print(f"  the CLI finds it without flags ({where}); from another shell or host:")
        print(f"    export SENTINEL_URL={self.url} SENTINEL_SIM={self.control} "
              f"SENTINEL_TOKEN_FILE={self.token_file}")
        print(f"  sentinel API       {self.url}  (/metrics /healthz /readyz /api/v1/status)")
        print(f"  Kubernetes API     {self.fleet.api.url}  (emulator; a dead node goes Unknown "
              f"{self.grace_s}s after its last Lease renewal here, 50s in a real cluster)")
        for s, p in self.fleet.proms.items():
            print(f"  Prometheus {s:<7} {p.url}  (sentinel reaches it via "
                  f"{self.fleet.uplinks[s].url})")
        print(f"  config             {self.dir / 'sentinel.yaml'}")
        history = 30 * self.scrape
        print(f"  anomaly model      trains once 30 scrapes of history exist (about "
              f"{history:.0f}s); until then `explain` says it is not trained yet")
        print("  faults to try:")
        a, b = self.fleet.nodes(self.fleet.sites[0])[:2]
        flap = 3 * self.for_s  # down long enough to be isolated, up long enough to be released
        for cmd in (f"crash {a}", f"component {b} kube-proxy", f"link-loss {a}",
                    f"partition {self.fleet.sites[-1]}",
                    f"flap {b} --period {flap} --count 3", f"autonomy {a}", "heal all"):
            print(f"    {cli} sim inject {cmd}")
        print(f"    {cli} status; {cli} explain {b}   (flap damping: the second release "
              f"waits for flap_window, {self.flap_window}s here)")
        print(f"  on call (the demo's write token is set up):\n    {cli} isolate {b} --reason "
              f"\"try it\" --for 10m; {cli} overrides; {cli} release {b} --reason done --for 5m")
        print(flush=True)

    def _wait(self, pred: Callable[[], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise DemoError(f"sentinel serve exited with code {self.proc.returncode} "
                                "(its log is above); the fleet is stopped with it")
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


class DemoError(SentinelError):
    """The demo cannot go on; the message is the one line the operator reads."""


def _start(demo: Demo) -> None:
    try:
        demo.start()
    except (TimeoutError, RuntimeError, OSError) as e:
        spec = demo.fleet.spec
        size = f"{spec.sites} sites x {spec.nodes_per_site} nodes"
        hint = ". Try fewer nodes (--nodes) or sites (--sites), or a longer --scrape-interval" \
            if isinstance(e, TimeoutError) else ""
        raise DemoError(f"the simulated fleet ({size}) did not start: {e}{hint}") from None


def _watch(demo: Demo, stop: threading.Event) -> None:
    """Free play until Ctrl-C; `sentinel serve` exiting ends the demo at once, loudly: a demo
    with nothing enforcing would mislead whoever injects the next fault."""
    while not stop.wait(0.5):
        code = demo.proc.poll() if demo.proc is not None else None
        if code is not None:
            raise DemoError(f"sentinel serve exited with code {code} (its log is above); the "
                            "fleet is stopped with it")


def run_demo(sites: int, nodes: int, *, scrape_interval: float, tour: bool,
             exit_after_tour: bool, discover: str | None = None) -> int:
    demo = Demo(sites, nodes, scrape_interval, discover=discover)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Started in the background by a script, a process inherits SIGINT ignored: Ctrl-C (or
    # `kill -INT`) must stop the demo all the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _start(demo)
        ok = True
        if tour:
            ok = demo.tour()
            demo.summary()
            _say("\ntour " + ("complete" if ok else "had failures (see !! above)"))
        if exit_after_tour:
            return 0 if ok else 1
        _say("\nfree play: inject faults from another terminal; Ctrl-C stops everything")
        sys.stdout.flush()
        _watch(demo, stop)
        return 0
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say("\nstopping: sentinel, the Prometheus servers, the emulator...")
        demofile.forget()
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, interrupt)
