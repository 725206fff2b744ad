"""The whole service at fleet size: `sentinel serve` against kubelet-sized nodes and pods.

The emulator (in this process) holds `--nodes` kubelet-sized Nodes in `--sites` sites with
`--pods-per-node` pods each; their kubelets renew Leases every 10 s and its node lifecycle
controller marks a silent node Unknown after 50 s (a real cluster's timing). The metrics come
from one real Prometheus (central-store mode) scraping every 15 s one simulated exporter that
exposes every node's `up` series per job with its `site` label, as a federation endpoint
does (`--jobs`: how many of the four jobs; with fewer the store holds fewer series, for a
machine whose cores cannot carry a store of the whole fleet beside the emulator: say so
with the figures). A real `sentinel serve` (its own process: collector, reflectors through
the official client, decide, actuator, journal, API) runs with the shipped rules and
defaults; the rate budget is raised to 30 a minute so that no crash waits for it, and anomaly
scoring is off.

Measured: time from start to ready (synced from cold); while `--crashes` nodes crash at random
over `--window` s, every cycle's duration (from `/api/v1/status`), the latency of
`GET /api/v1/status` and `/api/v1/nodes/<node>/explain` polled meanwhile from a client in
its own process (timed from this one, the emulator's load would count), sentinel's resident
memory (sampled, and the kernel's peak), each crash's time to its level-2 taint, how much of
each cycle was spent waiting for the store's answers, and the cores each process used
meanwhile (the emulator, Prometheus and sentinel share the machine), with the CPU the host
took from this VM (steal: on a shared host it moves the timings from run to run). Then the
emulator's API server is restarted and its watch history dropped meanwhile (a compaction):
every watch sentinel starts again ends with 410 Gone and it lists nodes, pods and Leases
again (time until the last page of each is served, memory meanwhile). Then a restart (time to
ready, memory). Last line: `fleet_cycle_p95_seconds=<n> fleet_peak_rss_mb=<n>
fleet_crash_to_l2_p95_seconds=<n> api_p99_ms=<n>`.

Sizes: the defaults (20,000 nodes, 100,000 pods, 100 sites) are what the emulator carries on
a 2-core machine in a few minutes (2.9 GB: it keeps every object as a dict, and serves lists
from the stored objects without copying them), so 100,000 nodes and 500,000 pods
(`--nodes 100000 --sites 500`) need about 15 GB for the emulator alone. The emulator, the
kubelets and Prometheus share the machine with sentinel: the figures are an upper bound of
sentinel's own.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import random
import shutil
import signal
import statistics
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

from sentinel.sim.exporters import JOBS
from sentinel.sim.fleet import install_crds
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.lifecycle import NodeLifecycle, NodeTiming
from sentinel.sim.nodes import kubelet_node, kubelet_pod
from sentinel.sim.process import free_port
from sentinel.sim.prometheus import PrometheusProcess
from sentinel.sim.store import RESOURCES, Store

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "sentinel.edge.io"
ZONE = "topology.kubernetes.io/zone"
NODES = RESOURCES[("", "v1", "nodes")]
PODS = RESOURCES[("", "v1", "pods")]


class Exporter:
    """Every node's `up` per job, as a federation endpoint exposes them (a crashed node's 0),
    served as a file by its own process: megabytes a scrape, which this process, busy with the
    emulator, could not always write within Prometheus' scrape timeout."""

    def __init__(self, site_of: dict[str, str], home: Path,
                 jobs: tuple[str, ...] = JOBS) -> None:
        self.site_of, self.jobs = site_of, jobs
        self.crashed: set[str] = set()
        self.dir = home / "exporter"
        self.dir.mkdir()
        self._write()
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
             "--directory", str(self.dir)], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def crash(self, node: str) -> None:
        self.crashed.add(node)
        self._write()

    def _write(self) -> None:
        lines = [f'up{{job="{j}",node="{n}",instance="{n}",site="{s}"}} '
                 f'{0 if n in self.crashed else 1}'
                 for n, s in self.site_of.items() for j in self.jobs]
        tmp = self.dir / "metrics.txt.new"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.dir / "metrics.txt")  # a scrape reads the old file or the new one

    def store(self, name: str, scrape_interval: float) -> PrometheusProcess:
        """A real Prometheus (not started) scraping this endpoint as a central store would:
        labels as exposed, no external labels of its own."""
        prom = PrometheusProcess(name, [], scrape_interval)
        prom.config["global"].pop("external_labels", None)
        prom.config["scrape_configs"] = [{
            "job_name": "fleet", "honor_labels": True, "scrape_timeout": "10s",
            "metrics_path": "/metrics.txt",
            "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}]}]
        prom._write()
        return prom

    def wait_scraped(self, prom_url: str, timeout: float) -> None:
        """Until the store holds every node's `up` per job at 1."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = httpx.get(f"{prom_url}/api/v1/query", params={"query": "count(up == 1)"},
                          timeout=60).json()["data"]["result"]
            if r and float(r[0]["value"][1]) >= len(self.site_of) * len(self.jobs):
                return
            time.sleep(1)
        raise SystemExit("Prometheus never scraped the whole fleet")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def build(store: Store, sites: int, per_site: int, pods: int) -> dict[str, str]:
    site_of: dict[str, str] = {}
    gc.disable()  # a million acyclic dicts: see Fleet.start
    try:
        for i in range(sites):
            site = f"site-{i:03d}"
            for j in range(per_site):
                name = f"edge-{i:03d}-{j:04d}"
                site_of[name] = site
                store.create(NODES, "", kubelet_node(name, {ZONE: site}))
                for k in range(pods):
                    store.create(PODS, "default", kubelet_pod(f"app-{name}-{k}", name,
                                                              {"app": "demo"}))
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()
    return site_of


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def serve(home: Path, api_url: str, prom_url: str, sites: list[str],
          port: int) -> subprocess.Popen[bytes]:
    cfg = {"mode": "enforce", "rules": [str(ROOT / "rules")], "journal": str(home / "j.db"),
           "sites": [{"name": s} for s in sites], "cluster": {"url": api_url},
           "metrics_source": {"mode": "central", "url": prom_url},
           "listen": f"127.0.0.1:{port}", "budgets": {"max_new_per_minute": 30},
           "anomaly": {"enabled": False}}
    (home / "sentinel.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([sys.executable, "-m", "sentinel", "serve", "--config",
                             str(home / "sentinel.yaml")], stdout=(home / "log").open("ab"),
                            stderr=subprocess.STDOUT)


def wait_ready(base: str, proc: subprocess.Popen[bytes], home: Path, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() < t0 + timeout:
        if proc.poll() is not None:
            raise SystemExit(f"sentinel exited: {(home / 'log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"sentinel not ready in {timeout:.0f}s: {(home / 'log').read_text()[-3000:]}")


#: The API's client, in its own process: timed from the bench's, a request would also wait
#: for the GIL of a process that runs the emulator, its kubelets and their Lease renewals
#: (measured: p99 465 ms there at 20,000 nodes).
CLIENT = """
import json, random, sys, time
import httpx
base, nodes = sys.argv[1], open(sys.argv[2]).read().split()
rng = random.Random(7)
with httpx.Client(base_url=base, timeout=30) as c:
    for line in sys.stdin:  # one line from the bench: one round of requests
        for path in ("/api/v1/status", f"/api/v1/nodes/{rng.choice(nodes)}/explain"):
            t = time.perf_counter()
            try:
                r = c.get(path)
            except httpx.HTTPError as e:
                print(json.dumps({"error": f"{path.split('/')[3]}: {type(e).__name__}: {e}"}))
                continue
            out = {"ms": 1000 * (time.perf_counter() - t)}
            if path.endswith("status") and r.status_code == 200:
                body = r.json()
                out["last"] = body.get("last_cycle")
                dark = [s for s in body.get("sites") or [] if not s["reachable"]]
                out["dark"] = len(dark)
                if dark:
                    out["why"] = dark[0].get("error") or "?"
            print(json.dumps(out))
        print(json.dumps({"round": True}), flush=True)
"""


class Sampler(threading.Thread):
    """Sentinel's memory every 0.2 s, and the API's latency and the cycles it reports (asked
    by a client process, CLIENT, one round every 0.2 s)."""

    def __init__(self, base: str, pid: int, nodes: list[str], home: Path) -> None:
        super().__init__(daemon=True)
        self.base, self.pid = base, pid
        self.names = home / "node-names"
        self.names.write_text("\n".join(nodes))
        self.rss: list[float] = []
        self.api_ms: list[float] = []
        self.errors: list[str] = []
        """Requests that got no answer (counted, not timed): the bench goes on measuring."""
        self.cycles: dict[float, float] = {}
        self.waits: dict[float, float] = {}
        """Per cycle, the seconds of it spent waiting for the central store's answers."""
        self.dark: dict[float, int] = {}
        """Per cycle, the sites it saw unreachable (the store did not answer in time: all)."""
        self.why: dict[float, str] = {}
        """Per such cycle, why (sentinel names the store's query that failed)."""
        self.stop = threading.Event()

    def run(self) -> None:
        client = subprocess.Popen([sys.executable, "-c", CLIENT, self.base, str(self.names)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdin is not None and client.stdout is not None
        try:
            while not self.stop.is_set():
                self.rss.append(rss_mb(self.pid, "VmRSS:"))
                client.stdin.write("go\n")
                client.stdin.flush()
                for line in client.stdout:
                    got = json.loads(line)
                    if got.get("round"):
                        break
                    if "error" in got:
                        self.errors.append(got["error"])
                        continue
                    self.api_ms.append(got["ms"])
                    if got.get("last"):
                        self.cycles[got["last"]["at"]] = got["last"]["duration_seconds"]
                        self.waits[got["last"]["at"]] = got["last"]["collect_seconds"]
                        self.dark[got["last"]["at"]] = got.get("dark", 0)
                        if got.get("why"):
                            self.why[got["last"]["at"]] = got["why"]
                self.stop.wait(0.2)
        finally:
            client.stdin.close()
            client.wait(timeout=30)


def track_lists(api: KubeApiServer, at_least: int, finals: list[float],
                kinds: list[str]) -> None:
    """When each list of `at_least` objects or more (nodes, pods, Leases) served its last page
    (at sentinel's page size, 500): the emulator's side of "synced again"."""
    pages = api.pages
    resume = pages.resume

    def tracked(token: str, latest: Callable[[], tuple[list[dict[str, Any]], int]]) -> tuple[
            list[dict[str, Any]], int, int]:
        items, rv, start = resume(token, latest)
        if len(items) >= at_least and start + 500 >= len(items):
            finals.append(time.monotonic())
            kinds.append(items[0]["metadata"].get("namespace") or "nodes")
        return items, rv, start

    pages.resume = tracked  # type: ignore[method-assign]


def prom_query_times(url: str) -> str:
    """Prometheus' own summary of its queries' evaluation time (its last 10 minutes): on a
    shared 2-core machine the central store, not sentinel, may be what a cycle waits for."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=30).text
    except httpx.HTTPError as e:
        return f"unknown ({e})"
    got = {}
    for line in text.splitlines():
        if line.startswith('prometheus_engine_query_duration_seconds{') and \
                'slice="inner_eval"' in line and "quantile=" in line:
            q = line.split('quantile="')[1].split('"')[0]
            got[q] = float(line.rsplit(" ", 1)[1])
    return ", ".join(f"p{float(q) * 100:g} {v:.2f}s" for q, v in sorted(got.items())) or "unknown"


def gc_counts(base: str) -> dict[str, tuple[float, float, float]]:
    """Sentinel's own collector pauses so far (sentinel_gc_pause_seconds), per generation:
    (collections, of them at most 100 ms, seconds in all). A full collection over a fleet's
    worth of objects holds the GIL, and every API request waits it out."""
    try:
        text = httpx.get(f"{base}/metrics", timeout=30).text
    except httpx.HTTPError:
        return {}
    got: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line.startswith("sentinel_gc_pause_seconds"):
            continue
        gen = line.split('generation="')[1].split('"')[0]
        value = float(line.rsplit(" ", 1)[1])
        g = got.setdefault(gen, [0.0, 0.0, 0.0])
        if line.startswith("sentinel_gc_pause_seconds_count"):
            g[0] = value
        elif line.startswith("sentinel_gc_pause_seconds_sum"):
            g[2] = value
        elif 'le="0.1"' in line:
            g[1] = value
    return {k: (v[0], v[1], v[2]) for k, v in got.items()}


def gc_pauses(now: dict[str, tuple[float, float, float]],
              since: dict[str, tuple[float, float, float]] | None = None) -> str:
    """Collections between two readings of gc_counts (or since start)."""
    def minus(g: str) -> tuple[float, float, float]:
        a, b = now[g], (since or {}).get(g, (0.0, 0.0, 0.0))
        return a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return "; ".join(f"generation {g}: {n:.0f}, {n - fast:.0f} over 100 ms, {t:.1f}s in all"
                     for g in sorted(now) for n, fast, t in [minus(g)]) or "unknown"


def cpu_seconds(pid: int) -> float:
    """User and system time of a process so far, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Cores:
    """Where the machine's cores went over a stretch of the bench, per process: on 2 shared
    cores, the cycle of sentinel may wait for a store that waits for the emulator."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t, self.start = time.monotonic(), {k: cpu_seconds(p) for k, p in pids.items()}
        self.mark = steal_mark()

    def __str__(self) -> str:
        took = time.monotonic() - self.t
        return ", ".join(f"{k} {(cpu_seconds(p) - self.start[k]) / took:.2f}"
                         for k, p in self.pids.items()) + f"; {steal_since(self.mark)}"


def steal_mark() -> tuple[float, float]:
    return time.monotonic(), stolen_seconds()


def steal_since(mark: tuple[float, float]) -> str:
    """The host's steal since `mark` (time.monotonic(), stolen_seconds()), in cores."""
    return f"host steal {(stolen_seconds() - mark[1]) / (time.monotonic() - mark[0]):.2f} cores"


def stolen_seconds() -> float:
    """CPU time the hypervisor gave other guests while this one wanted it (/proc/stat's
    steal), all cores: on a shared host it changes a run's timings from day to day."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def level2(store: Store, node: str) -> bool:
    return any(t["key"] == f"{DOMAIN}/node" and t["effect"] == "NoExecute"
               for t in store.get(NODES, "", node)["spec"].get("taints", []))


def main(a: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="sentinel-fleet-"))
    store = Store(history=200_000)
    install_crds(store)
    t = time.monotonic()
    site_of = build(store, a.sites, a.nodes // a.sites, a.pods_per_node)
    nodes = list(site_of)
    print(f"emulator: {len(nodes)} nodes, {len(nodes) * a.pods_per_node} pods, {a.sites} sites "
          f"in {time.monotonic() - t:.0f}s, {rss_mb(os.getpid(), 'VmRSS:'):.0f} MB", flush=True)
    silent: set[str] = set()
    api = KubeApiServer(store).start()
    finals: list[float] = []
    kinds: list[str] = []
    """Which list each of `finals` ended: nodes, or pods' or Leases' namespace."""
    track_lists(api, len(nodes), finals, kinds)
    life = NodeLifecycle(store, lambda: nodes, lambda n: n not in silent, NodeTiming()).start()
    exp = Exporter(site_of, home, JOBS[:a.jobs])
    prom = exp.store("fleet", a.scrape_interval)
    prom.start().wait_ready()
    prom_url = f"http://127.0.0.1:{prom.port}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        exp.wait_scraped(prom_url, 120)
        sites = sorted(set(site_of.values()))
        listed = len(finals)
        t = time.monotonic()
        mark = steal_mark()
        proc = serve(home, api.url, prom_url, sites, port)
        cold = wait_ready(base, proc, home, 600)
        print(f"synced from cold in {cold:.1f}s, RSS {rss_mb(proc.pid, 'VmRSS:'):.0f} MB "
              f"(the lists of nodes, pods and Leases served their last page at "
              f"{', '.join(f'{f - t:.1f}' for f in finals[listed:])} s; then a first cycle; "
              f"{steal_since(mark)})", flush=True)
        time.sleep(30)  # past the rules' `for` since start
        gc_before = gc_counts(base)
        sampler = Sampler(base, proc.pid, nodes, home)
        sampler.start()
        assert prom.proc is not None
        cores = Cores({"emulator and kubelets": os.getpid(), "Prometheus": prom.proc.pid,
                       "exporter": exp.proc.pid, "sentinel": proc.pid})
        rng = random.Random(1)
        victims = rng.sample(nodes, a.crashes)
        at = sorted(rng.uniform(0, a.window) for _ in victims)
        crashed: dict[str, float] = {}
        seen: dict[str, float] = {}
        start = time.monotonic()
        for node, when in zip(victims, at, strict=True):
            while time.monotonic() < start + when:
                for n in list(crashed):
                    if n not in seen and level2(store, n):
                        seen[n] = time.monotonic() - crashed[n]
                time.sleep(0.25)
            silent.add(node)
            exp.crash(node)
            crashed[node] = time.monotonic()
        deadline = time.monotonic() + 240
        while len(seen) < len(victims) and time.monotonic() < deadline:
            for n in list(crashed):
                if n not in seen and level2(store, n):
                    seen[n] = time.monotonic() - crashed[n]
            time.sleep(0.25)
        print(f"cores used while nodes crashed: {cores}", flush=True)
        sampler.stop.set()
        sampler.join()
        steady_peak = max(sampler.rss)
        missing = [n for n in victims if n not in seen]
        cycles = list(sampler.cycles.values())
        print(f"{len(cycles)} cycles: p50 {statistics.median(cycles):.2f}s, p95 "
              f"{quantile(cycles, 0.95):.2f}s, max {max(cycles):.2f}s; api p50 "
              f"{statistics.median(sampler.api_ms):.0f} ms, p99 "
              f"{quantile(sampler.api_ms, 0.99):.0f} ms over {len(sampler.api_ms)} requests"
              f", {len(sampler.errors)} without an answer"
              + (f" (first: {sampler.errors[0]})" if sampler.errors else ""), flush=True)
        waits = list(sampler.waits.values())
        print(f"of each cycle, waiting for the central store: p50 {statistics.median(waits):.2f}s"
              f", p95 {quantile(waits, 0.95):.2f}s; the rest (sentinel's own work): p50 "
              f"{statistics.median(c - w for c, w in zip(cycles, waits, strict=True)):.2f}s, "
              f"p95 {quantile([c - w for c, w in zip(cycles, waits, strict=True)], 0.95):.2f}s",
              flush=True)
        gc_now = gc_counts(base)
        print(f"sentinel's garbage collections while nodes crashed: "
              f"{gc_pauses(gc_now, gc_before)} (since start: {gc_pauses(gc_now)})", flush=True)
        dark = sum(1 for n in sampler.dark.values() if n)
        print(f"central store: {dark} of {len(sampler.dark)} cycles saw sites unreachable; "
              f"its query time (inner_eval) {prom_query_times(prom_url)}", flush=True)
        for why, count in collections.Counter(sampler.why.values()).most_common(3):
            print(f"  {count} cycles: {why}", flush=True)
        print(f"crash to level 2: {len(seen)} of {len(victims)} "
              f"(never: {', '.join(missing) or 'none'})"
              + (f"; p50 {statistics.median(seen.values()):.1f}s, max "
                 f"{max(seen.values()):.1f}s" if seen else ""), flush=True)
        wrong = [n for n in nodes if n not in crashed and any(
            taint["key"].startswith(f"{DOMAIN}/")
            for taint in store.get(NODES, "", n)["spec"].get("taints", []))]
        print(f"healthy nodes tainted: {len(wrong)}" + (f" ({', '.join(wrong[:5])})"
                                                        if wrong else ""), flush=True)
        # every watch ends with 410 Gone: sentinel lists nodes, pods and Leases again
        done_before = len(finals)
        t = time.monotonic()
        mark = steal_mark()
        # The API server restarts after a compaction: every watch is cut, and every version
        # sentinel holds is gone when it comes back (the kubelets go on renewing meanwhile).
        api.stop()
        time.sleep(2.0)
        store.compact()
        api = KubeApiServer(store, port=api.port).start()
        track_lists(api, len(nodes), finals, kinds)
        peak, timeline = 0.0, list[str]()
        while len(finals) < done_before + 3 and time.monotonic() < t + 300:
            now = rss_mb(proc.pid, "VmRSS:")
            peak = max(peak, now)
            if not timeline or time.monotonic() - t >= 5 * len(timeline):
                timeline.append(f"{time.monotonic() - t:.0f}s {now:.0f}")
            time.sleep(0.1)
        print(f"relist RSS every 5 s (MB): {', '.join(timeline)}", flush=True)
        relist = finals[-1] - t if len(finals) >= done_before + 3 else float("nan")
        ended = ", ".join(f"{k} {f - t:.1f}s" for k, f in zip(
            kinds[done_before:], finals[done_before:], strict=True)) or "none"
        print(f"relist after 410 Gone: nodes, pods and Leases listed again in {relist:.1f}s, "
              f"RSS peak {peak:.0f} MB (lists ended: {ended}; {steal_since(mark)})", flush=True)
        if relist != relist:  # nan: what sentinel's reflectors said meanwhile
            print("".join(line for line in (home / "log").read_text().splitlines(True)
                          if "sentinel.kube" in line)[-3000:], flush=True)
        hwm = rss_mb(proc.pid, "VmHWM:")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        listed, t = len(finals), time.monotonic()
        mark = steal_mark()
        proc = serve(home, api.url, prom_url, sites, port)
        restart = wait_ready(base, proc, home, 600)
        time.sleep(10)
        restart_hwm = rss_mb(proc.pid, "VmHWM:")
        print(f"restart: ready after {restart:.1f}s, RSS {rss_mb(proc.pid, 'VmRSS:'):.0f} MB, "
              f"peak {restart_hwm:.0f} MB (lists ended: " + (", ".join(
                  f"{k} {f - t:.1f}s" for k, f in zip(kinds[listed:], finals[listed:],
                                                       strict=True)) or "none") +
              f"; {steal_since(mark)})", flush=True)
        peak_all = max(steady_peak, peak, hwm, restart_hwm)
        print(f"memory: {1000 * peak_all / len(nodes):.1f} MB per 1,000 nodes "
              f"({a.pods_per_node} pods each) at peak, the whole process (the interpreter and "
              "its libraries, about 100 MB, included)", flush=True)
        l2 = list(seen.values()) or [float("nan")]
        print(f"fleet_cycle_p95_seconds={quantile(cycles, 0.95):.2f} "
              f"fleet_peak_rss_mb={peak_all:.0f} "
              f"fleet_crash_to_l2_p95_seconds={quantile(l2, 0.95):.1f} "
              f"api_p99_ms={quantile(sampler.api_ms, 0.99):.0f}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        life.stop()
        prom.stop()
        exp.stop()
        api.stop()
        if a.keep_log is not None and (home / "log").exists():
            shutil.copy(home / "log", a.keep_log)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--sites", type=int, default=100)
    ap.add_argument("--pods-per-node", type=int, default=5)
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--window", type=float, default=120.0)
    ap.add_argument("--scrape-interval", type=float, default=15.0)
    ap.add_argument("--keep-log", type=Path, default=None,
                    help="copy sentinel's log (both of its runs) there before cleaning up")
    ap.add_argument("--jobs", type=int, default=len(JOBS), choices=range(1, len(JOBS) + 1),
                    help=f"the `up` series per node the store holds, of {', '.join(JOBS)}")
    main(ap.parse_args())
