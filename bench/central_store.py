"""What one cycle's queries cost the central store itself, with nothing else on the machine.

bench/fleet.py runs the emulator, its kubelets, Prometheus and sentinel on the same 2 cores;
its cycle waits for a store that waits for CPU. This measures the store alone: one real
Prometheus scraping every 15 s one file that holds every node's `up` per job with its `site`
label (bench/fleet.py's exporter, `--nodes` nodes), then sentinel's own central-store queries
(the default presence query, the freshness query, the shipped rules) asked one at a time
(median of `--repeat`) and all at once, as a cycle asks them. That is the floor under a
cycle's wait for the metrics at that size on this machine, whatever sentinel does. The
freshness query is asked both ways: of every node's `up` (a cycle's first), and of three
nodes per site (every cycle after it: adapters/freshness.py).
Last line: `store_cycle_seconds=<n> store_presence_seconds=<n> store_freshness_seconds=<n>
store_rule_seconds=<n> store_first_cycle_seconds=<n> store_full_freshness_seconds=<n>`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from fleet import Exporter  # bench/fleet.py: the same exposition

from sentinel.adapters.freshness import SAMPLE, FreshnessSample, freshness_query
from sentinel.config.rules import load_rules
from sentinel.config.schema import Config
from sentinel.sim.exporters import JOBS

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(a: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="sentinel-store-"))
    site_of = {f"edge-{i // 200:03d}-{i % 200:04d}": f"site-{i // 200:03d}"
               for i in range(a.nodes)}
    exp = Exporter(site_of, home)
    prom = exp.store("store", 15.0)
    try:
        prom.start().wait_ready()
        exp.wait_scraped(f"http://127.0.0.1:{prom.port}", 300)
        url = f"http://127.0.0.1:{prom.port}/api/v1/query"

        def ask(q: str) -> None:  # in a POST body, as sentinel sends a long one
            httpx.post(url, data={"query": q}, timeout=300).raise_for_status()

        time.sleep(a.settle)  # a few scrapes' samples per series, as a running store has
        presence = Config.model_fields["presence_query"].default
        full = freshness_query("site")
        sample = FreshnessSample(max_age=120.0)  # three nodes a site, as a cycle asks them
        sample.place(site_of)
        fresh, _ = sample.query("site")
        rules = [r.expr for r in load_rules([ROOT / "rules"]).rules]
        p = median_seconds(lambda: ask(presence), a.repeat)
        f = median_seconds(lambda: ask(fresh), a.repeat)
        f_full = median_seconds(lambda: ask(full), a.repeat)
        each = [median_seconds(functools.partial(ask, q), a.repeat) for q in rules]
        print(f"{a.nodes} nodes x {len(JOBS)} jobs = {a.nodes * len(JOBS)} up series; one "
              f"at a time: presence {p:.2f}s ({presence}), freshness {f:.2f}s ({SAMPLE} nodes a "
              f"site; {f_full:.2f}s of every node), rules "
              f"{', '.join(f'{t:.2f}s' for t in each)}", flush=True)

        def cycle(freshness: str) -> None:
            with concurrent.futures.ThreadPoolExecutor(len(rules) + 2) as pool:
                list(pool.map(ask, [presence, freshness, *rules]))
        c = median_seconds(lambda: cycle(fresh), a.repeat)
        first = median_seconds(lambda: cycle(full), a.repeat)
        print(f"a cycle's {len(rules) + 2} queries at once: {c:.2f}s (the first, freshness of "
              f"every node: {first:.2f}s)", flush=True)
        print(f"store_cycle_seconds={c:.2f} store_presence_seconds={p:.2f} "
              f"store_freshness_seconds={f:.2f} store_rule_seconds={max(each):.2f} "
              f"store_first_cycle_seconds={first:.2f} store_full_freshness_seconds={f_full:.2f}")
    finally:
        prom.stop()
        exp.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20_000)
    ap.add_argument("--settle", type=float, default=45.0)
    ap.add_argument("--repeat", type=int, default=5)
    main(ap.parse_args())
