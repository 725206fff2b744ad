"""Detect + decide on a synthetic fleet: 100,000 nodes in 500 sites with 20 rules.

Prints its figures; the last line is `detect_decide_seconds=<median> peak_rss_mb=<n>`.
Target (issue 2): <= 1.0 s and <= 500 MB, as the node lifecycle controller re-checks every 5 s.

The snapshot is what a bad day looks like, not an idle fleet: 2 % of nodes with a component
rule matching, 0.5 % dead by both witnesses, 0.5 % with a broken cloud link, two partitioned
sites, one site in a site event, and 1 % already isolated from earlier cycles.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time

from sentinel.core.decide import DecideParams, PolicyState, decide
from sentinel.core.detect import DetectParams, detect
from sentinel.core.model import (
    NODE_KEY,
    Held,
    HeldKey,
    Level,
    NodeInfo,
    NodeName,
    Ready,
    SiteName,
    SiteView,
    Snapshot,
)
from sentinel.core.ruleset import Rule, RuleSet


def rules(n: int) -> RuleSet:
    out = [Rule("node-down", Level.NODE, 'up{job="node-exporter"} == 0', 30, "node-exporter",
                "critical", "", "bench:1")]
    for i in range(n - 1):
        out.append(Rule(f"comp-{i}-down", Level.COMPONENT, f'up{{job="comp-{i}"}} == 0', 60,
                        f"comp-{i}", "warning", "", f"bench:{i + 2}"))
    return RuleSet(tuple(out))


def fleet(n_nodes: int, n_sites: int, rs: RuleSet, seed: int) -> Snapshot:
    rng = random.Random(seed)
    per = n_nodes // n_sites
    nodes: dict[str, NodeInfo] = {}
    sites: dict[str, SiteView] = {}
    comp_rules = [r for r in rs.rules if r.level is Level.COMPONENT]
    for s in range(n_sites):
        site = SiteName(f"site-{s:03d}")
        names = [f"{site}-n{j:04d}" for j in range(per)]
        firing: dict[str, dict[str, float]] = {}
        guard_site = s == 7
        for name in names:
            roll = rng.random()
            ready = Ready.TRUE
            if (guard_site and roll < 0.7) or roll < 0.005:
                ready = Ready.UNKNOWN
                firing.setdefault("node-down", {})[name] = 0.0
            elif roll < 0.01:
                ready = Ready.UNKNOWN  # cloud link
            elif roll < 0.03:
                r = rng.choice(comp_rules)
                firing.setdefault(r.name, {})[name] = 0.0
            held = Held()
            if rng.random() < 0.01:
                held = Held({"comp-0": HeldKey("comp-0", "NoSchedule", "comp-0-down", 0.0)})
            nodes[name] = NodeInfo(NodeName(name), site, ready, held=held)
        reachable = s not in (3, 4)
        sites[site] = SiteView(site, reachable, None if reachable else "timed out",
                               1.0 if reachable else None,
                               frozenset(names) if reachable else frozenset(),
                               firing if reachable else {})
    return Snapshot(0.0, nodes, sites)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--sites", type=int, default=500)
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    rs = rules(args.rules)
    t0 = time.perf_counter()
    snap = fleet(args.nodes, args.sites, rs, seed=1)
    print(f"built snapshot: {len(snap.nodes)} nodes, {len(snap.sites)} sites, "
          f"{len(rs.rules)} rules in {time.perf_counter() - t0:.2f}s")
    dp = DetectParams()
    medians = []
    for label, cp in (("default budgets", DecideParams()),
                      ("budgets wide open", DecideParams(site_max_fraction=1,
                                                         fleet_max_fraction=1,
                                                         max_new_per_minute=10**9))):
        # a state as after earlier cycles: every firing condition has been pending a while
        det = detect(snap, rs, dp)
        _, state = decide(snap, det, PolicyState(), cp, 0.0)
        times = []
        for i in range(args.runs):
            now = 100.0 + i
            t = time.perf_counter()
            det = detect(snap, rs, dp)
            plan, _ = decide(snap, det, state, cp, now)
            times.append(time.perf_counter() - t)
        level2 = sum(1 for a in plan.actions if a.key == NODE_KEY)
        print(f"{label}: findings={len(det.findings)} actions={len(plan.actions)} "
              f"(level 2: {level2}) notes={len(plan.notes)} "
              f"budgets_spent={sorted(plan.budget_exhausted)}")
        print("  runs (s): " + " ".join(f"{t:.3f}" for t in times))
        medians.append(statistics.median(times))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"detect_decide_seconds={max(medians):.3f} peak_rss_mb={peak_mb:.0f}")


if __name__ == "__main__":
    main()
