"""sentinel_* metrics: counters created once against an injected registry, and a Collector
that exports the last cycle's state at scrape time (per site, and per node that is not healthy,
so cardinality follows trouble rather than fleet size).

Only the replica that acts exports the fleet's state and what was done to it (`_LeaderOnly`):
with two replicas scraped, every `sum()` of a dashboard and every alert counts the fleet once.
A follower exports `sentinel_leader 0` and its own health (cycles, journal, build, training)."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sentinel.adapters.actuate import ActionResult
from sentinel.adapters.capmetrics import RegistryCollector, RolloutCollector
from sentinel.adapters.version import version
from sentinel.core.detect import Detection
from sentinel.core.explain import isolation_level
from sentinel.core.model import NodeInfo, Plan, SiteState, Snapshot
from sentinel.core.overrides import Overrides

__all__ = ["CycleFacts", "Metrics", "ScoresFacts"]


class ScoresFacts(Protocol):
    """What the anomaly gauges read of one cycle's scores (anomaly.readings.FleetScores)."""

    @property
    def nodes(self) -> Sequence[str]: ...
    @property
    def sites(self) -> Sequence[str]: ...
    @property
    def score(self) -> Sequence[float] | Any: ...
    @property
    def alarm(self) -> Sequence[bool] | Any: ...
    @property
    def threshold(self) -> float: ...


class CycleFacts(Protocol):
    """What the metrics read of one finished cycle (isolation.cycle.CycleReport). A Protocol
    here, so that the instruments sit below the capabilities that feed them."""

    @property
    def started_at(self) -> float: ...
    @property
    def finished_at(self) -> float: ...
    @property
    def collect_seconds(self) -> float: ...
    @property
    def mode(self) -> str: ...
    @property
    def snapshot(self) -> Snapshot: ...
    @property
    def detection(self) -> Detection: ...
    @property
    def plan(self) -> Plan: ...
    @property
    def results(self) -> tuple[ActionResult, ...]: ...
    @property
    def nodes_after(self) -> Mapping[str, NodeInfo]: ...
    @property
    def anomaly(self) -> ScoresFacts | None: ...
    @property
    def held(self) -> tuple[NodeInfo, ...]: ...
    @property
    def unassigned(self) -> int: ...

BUDGETS = ("site", "fleet", "rate")


_C = TypeVar("_C", bound=Collector)


class _LeaderOnly(Collector):
    """What it wraps is collected only while `leading()`: the follower cycles on the same
    data, and its copy of the fleet's state would be counted twice by every `sum()`."""

    def __init__(self, leading: Callable[[], bool]) -> None:
        self.leading = leading
        self.parts: list[Collector] = []

    def add(self, part: _C) -> _C:
        self.parts.append(part)
        return part

    def collect(self) -> Iterator[Any]:
        if self.leading():
            for part in self.parts:
                yield from part.collect()

    def describe(self) -> Sequence[Any]:
        return []


class Metrics:
    def __init__(self, registry: CollectorRegistry, mode: str) -> None:
        self.registry = registry
        fleet = _LeaderOnly(lambda: self.leading())
        registry.register(fleet)
        self.cycle_seconds = Histogram(
            "sentinel_cycle_duration_seconds", "Time of one collect-detect-decide-act cycle.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry)
        self.collect_seconds = Histogram(
            "sentinel_cycle_collect_duration_seconds", "Of each cycle, the time spent waiting "
            "for the metrics (every site's Prometheus, or the central store).",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=registry)
        self.cycles = Counter("sentinel_cycles_total", "Cycles run, by outcome.", ["outcome"],
                              registry=registry)
        self.gc_pause = Histogram(
            "sentinel_gc_pause_seconds", "Time of each collection of the interpreter's cyclic "
            "garbage collector, by generation: every thread, the API's included, waits it out.",
            ["generation"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry)
        self._gc_started = 0.0
        self.actions = fleet.add(Counter(
            "sentinel_actions_total", "Actions taken, by kind and rule.",
            ["kind", "rule", "level", "mode", "outcome"], registry=None))
        self.alerts = fleet.add(Counter(
            "sentinel_alerts_received_total", "Alerts received on the webhook, by outcome "
            "(new, resolved, duplicate, unmapped, unknown_node, rejected). Every replica "
            "receives every alert; the leader's count is exported.", ["outcome"],
            registry=None))
        self.last_success = Gauge("sentinel_last_cycle_success_timestamp_seconds",
                                  "When the last cycle completed.", registry=registry)
        Gauge("sentinel_build_info", "1, labelled with the running sentinel's version and "
              "Python's.", ["version", "python"], registry=registry).labels(
            version(), platform.python_version()).set(1)
        mode_g = Gauge("sentinel_mode", "1 for the mode sentinel runs in.", ["mode"],
                       registry=registry)
        for m in ("enforce", "dry-run"):
            mode_g.labels(m).set(1 if m == mode else 0)
        self.leading: Callable[[], bool] = lambda: True
        """Set by the runtime: whether this replica holds the lease (leader election)."""
        Gauge("sentinel_leader", "1 on the replica that acts (holds the lease, or leader "
              "election is off); 0 on a follower, which serves reads and changes nothing.",
              registry=registry).set_function(lambda: 1.0 if self.leading() else 0.0)
        self.journal_writable: Callable[[], bool] = lambda: True
        """Set by the runtime: whether the journal's last write succeeded."""
        Gauge("sentinel_journal_writable", "0 while the journal cannot be written (disk full, "
              "its lock held past journal_busy_timeout): sentinel then acts on nothing.",
              registry=registry).set_function(lambda: 1.0 if self.journal_writable() else 0.0)
        self.journal_write_errors = Counter(
            "sentinel_journal_write_errors_total", "Journal writes that failed (and were "
            "rolled back).", registry=registry)
        self.state = fleet.add(_StateCollector())
        self.registry_switches = fleet.add(Counter(
            "sentinel_registry_switches_total", "Registry switches of a site, by the role "
            "switched to (standby: failover, primary: failback) and outcome.",
            ["site", "to", "outcome"], registry=None))
        self.registry_probe = fleet.add(Histogram(
            "sentinel_registry_probe_duration_seconds", "Time of one registry probe "
            "(GET /v2/, and the canary manifest if configured), failed or not.",
            ["site", "registry"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=None))
        self.registry_state = fleet.add(RegistryCollector())
        self.trainings = Counter("sentinel_anomaly_trainings_total",
                                 "Anomaly model trainings, by outcome (ok, failed).",
                                 ["outcome"], registry=registry)
        self.training_seconds = Gauge("sentinel_anomaly_training_duration_seconds",
                                      "How long the last successful training took (fetch "
                                      "and fit).", registry=registry)
        self.anomaly_state = fleet.add(_AnomalyCollector())
        self.rollout_actions = fleet.add(Counter(
            "sentinel_rollout_actions_total", "Rollout guard actions (rollback, hold, resume), "
            "by outcome (applied, failed, planned in dry-run).",
            ["namespace", "workload", "action", "outcome"], registry=None))
        self.rollout_state = fleet.add(RolloutCollector())
        self.unresolved_sites = fleet.add(Gauge(
            "sentinel_site_unresolved", "1 for each discovered site (NodePool, NodeGroup) "
            "sentinel does not act on: no Prometheus resolved for it, or an unreadable "
            "annotation (`sentinel status` says which).", ["site"], registry=None))

    def sites_unresolved(self, problems: Mapping[str, str]) -> None:
        """The discovered sites that are reported, never acted on (site catalog)."""
        self.unresolved_sites.clear()
        for site in problems:
            self.unresolved_sites.labels(site).set(1)

    def trained(self, outcome: str, seconds: float | None = None) -> None:
        self.trainings.labels(outcome).inc()
        if seconds is not None:
            self.training_seconds.set(seconds)

    def registries(self, sites: list[dict[str, Any]]) -> None:
        """One probe round's outcome (failover.RegistryGuard.status_values)."""
        for s in sites:
            for role in ("primary", "standby"):
                if s[role]["seconds"] is not None:
                    self.registry_probe.labels(s["site"], role).observe(s[role]["seconds"])
        self.registry_state.sites = sites

    def observe(self, report: CycleFacts) -> None:
        self.cycle_seconds.observe(report.finished_at - report.started_at)
        self.collect_seconds.observe(report.collect_seconds)
        self.cycles.labels("ok").inc()
        self.last_success.set(report.finished_at)
        for r in report.results:
            a = r.action
            self.actions.labels(a.kind.value, a.rule, a.level.value, report.mode,
                                r.outcome).inc()
        self.state.report = report
        self.anomaly_state.report = report

    def failed(self) -> None:
        self.cycles.labels("error").inc()

    def gc_callback(self, phase: str, info: Mapping[str, Any]) -> None:
        """For `gc.callbacks`, installed by the service: a full collection walks every object
        the process holds (the cloud view of a fleet is millions) with the GIL held."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_pause.labels(str(info.get("generation", "?"))).observe(
                time.perf_counter() - self._gc_started)


class _AnomalyCollector(Collector):
    """Scores as of the last cycle; the model's age at scrape time."""

    def __init__(self) -> None:
        self.report: CycleFacts | None = None
        self.age: Callable[[], float | None] = lambda: None
        self.min_score = 0.0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        score = GaugeMetricFamily("sentinel_anomaly_score", "How unusual the node is against "
                                  "its own history and its site's peers: the fraction of "
                                  "healthy behaviour it exceeds (0-1).", labels=["site", "node"])
        alarm = GaugeMetricFamily("sentinel_anomaly_alarm", "1 while the node's anomaly alarm "
                                  "is raised (score at or above the threshold, with "
                                  "hysteresis); only such nodes.", labels=["site", "node"])
        threshold = GaugeMetricFamily("sentinel_anomaly_threshold", "The label-free alarm "
                                      "threshold on the score.")
        age = GaugeMetricFamily("sentinel_anomaly_model_age_seconds", "Since the model in use "
                                "was trained; absent without a model.")
        rep = self.report
        sc = rep.anomaly if rep is not None else None
        if sc is not None:
            threshold.add_metric([], sc.threshold)
            for i, (node, site) in enumerate(zip(sc.nodes, sc.sites, strict=True)):
                v = float(sc.score[i])
                if not math.isnan(v) and v >= self.min_score:
                    score.add_metric([site, node], v)
                if sc.alarm[i]:
                    alarm.add_metric([site, node], 1.0)
        a = self.age()
        if a is not None:
            age.add_metric([], a)
        yield from (score, alarm, threshold, age)

    def describe(self) -> Sequence[GaugeMetricFamily]:
        return []


class _StateCollector(Collector):
    def __init__(self) -> None:
        self.report: CycleFacts | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rep = self.report
        reach = GaugeMetricFamily("sentinel_site_reachable",
                                  "1 if the site's Prometheus answered this cycle.",
                                  labels=["site"])
        age = GaugeMetricFamily("sentinel_site_data_age_seconds",
                                "Age of the newest scrape at the site.", labels=["site"])
        part = GaugeMetricFamily("sentinel_site_partitioned",
                                 "1 while the site's Prometheus is unreachable: no node action "
                                 "there.", labels=["site"])
        guard = GaugeMetricFamily("sentinel_site_guard_active",
                                  "1 while too many of the site's nodes fail together.",
                                  labels=["site"])
        wide = GaugeMetricFamily("sentinel_site_wide_symptom_nodes",
                                 "Nodes failing one isolation key while that is a site-wide "
                                 "symptom (more than its threshold of the site): no node is "
                                 "isolated for it one by one. Only such keys; key=\"any "
                                 "check\": nodes failing some check, when checks fail broadly.",
                                 labels=["site", "key"])
        young = GaugeMetricFamily("sentinel_site_prometheus_young_rules",
                                  "Rules whose `for` is longer than the site's Prometheus has "
                                  "been running: not a witness there yet.", labels=["site"])
        failing = GaugeMetricFamily("sentinel_site_failing_nodes",
                                    "Nodes failing by either witness.", labels=["site"])
        isolated = GaugeMetricFamily("sentinel_isolated_nodes",
                                     "Nodes sentinel holds isolated, by highest level.",
                                     labels=["site", "level"])
        level = GaugeMetricFamily("sentinel_node_isolation_level",
                                  "0 none, 1 component, 2 node; only nodes sentinel holds.",
                                  labels=["site", "node"])
        verdict = GaugeMetricFamily("sentinel_node_verdict",
                                    "1 for the verdict of each node that is not healthy.",
                                    labels=["site", "node", "verdict"])
        unassigned = GaugeMetricFamily("sentinel_nodes_without_site",
                                       "Nodes that match no configured site: sentinel never "
                                       "acts on them. Check the sites' selectors.")
        active = GaugeMetricFamily("sentinel_alerts_active",
                                   "Firing alerts that name a node, as evidence this cycle.")
        budget = GaugeMetricFamily("sentinel_budget_exhausted",
                                   "1 if this budget stopped an isolation in the last cycle.",
                                   labels=["budget", "site"])
        overrides = GaugeMetricFamily("sentinel_overrides_active",
                                      "Overrides in force (a person's isolate, release, exempt "
                                      "or pause), by kind.", labels=["kind"])
        paused = GaugeMetricFamily("sentinel_site_paused",
                                   "1 while a person paused sentinel's actions on the site (or "
                                   "the whole fleet).", labels=["site"])
        if rep is not None:
            by_kind = dict.fromkeys(("isolate", "release", "exempt", "pause"), 0)
            for o in rep.snapshot.overrides:
                by_kind[o.kind.value] += 1
            for kind, c in by_kind.items():
                overrides.add_metric([kind], float(c))
            ovs = Overrides.at(rep.snapshot.overrides, rep.started_at)
            for site in rep.detection.sites:
                paused.add_metric([site], 0.0 if ovs.pause_for(site) is None else 1.0)
            counts: dict[tuple[str, str], int] = {}
            for st in rep.detection.sites.values():
                reach.add_metric([st.site], 1.0 if st.reachable else 0.0)
                if st.data_age is not None:
                    age.add_metric([st.site], st.data_age)
                part.add_metric([st.site], 1.0 if st.state is SiteState.PARTITIONED else 0.0)
                guard.add_metric([st.site], 1.0 if st.state is SiteState.GUARDED else 0.0)
                failing.add_metric([st.site], float(st.failing))
                young.add_metric([st.site], float(len(st.young_rules)))
                for key, count in sorted(st.widespread.items()):
                    wide.add_metric([st.site, key], float(count))
                if st.broad:
                    wide.add_metric([st.site, "any check"], float(st.broad))
                counts[(st.site, "1")] = 0
                counts[(st.site, "2")] = 0
            for n in rep.held:
                if n.site:
                    lv = str(isolation_level(n))
                    counts[(n.site, lv)] = counts.get((n.site, lv), 0) + 1
                    level.add_metric([n.site, n.name], float(lv))
            for (site, lv), c in sorted(counts.items()):
                isolated.add_metric([site, lv], float(c))
            for f in rep.detection.findings.values():
                if f.verdict.value != "healthy":
                    verdict.add_metric([f.site, f.node, f.verdict.value], 1.0)
            unassigned.add_metric([], float(rep.unassigned))
            active.add_metric([], float(sum(len(v) for v in rep.snapshot.alerts.values())))
            spent = rep.plan.budget_exhausted
            for b in ("fleet", "rate"):
                budget.add_metric([b, ""], 1.0 if b in spent else 0.0)
            for site in rep.detection.sites:
                budget.add_metric(["site", site], 1.0 if f"site:{site}" in spent else 0.0)
        yield from (reach, age, part, guard, wide, young, failing, isolated, level, verdict,
                    unassigned, active, budget, overrides, paused)

    def describe(self) -> Sequence[GaugeMetricFamily]:
        return []
