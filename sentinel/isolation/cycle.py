"""One cycle, end to end: collect, detect, decide, act, report.

This is the only place that reads the clock and glues the pure core to the adapters. The
adapters are passed in, so tests run the same cycle against the emulator and real Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from sentinel.adapters.actuate import ActionResult, Actuator
from sentinel.adapters.journal import Journal
from sentinel.adapters.metrics import Metrics
from sentinel.adapters.prom import SiteCollector
from sentinel.anomaly.arrays import feature_matrix
from sentinel.anomaly.score import (
    AlarmState,
    AnomalyModel,
    FleetScores,
    score_fleet,
)
from sentinel.config.schema import Config
from sentinel.core.alerts import by_node
from sentinel.core.decide import DecideParams, PolicyState, decide
from sentinel.core.detect import Detection, DetectParams, detect
from sentinel.core.model import (
    ANOMALY_KEY,
    ActionKind,
    AlertEvidence,
    AnomalyReading,
    NodeInfo,
    NodeName,
    Note,
    NoteReason,
    Outcome,
    Override,
    Plan,
    SiteView,
    Snapshot,
)
from sentinel.core.ruleset import RuleSet

__all__ = ["CycleReport", "NodeSource", "Sentinel", "decide_params", "detect_params"]

log = logging.getLogger("sentinel.cycle")


class NodeSource(Protocol):
    def nodes(self) -> dict[str, NodeInfo]: ...


class AlertSource(Protocol):
    def active(self) -> list[AlertEvidence]: ...


class OverrideSource(Protocol):
    def active(self, now: float) -> tuple[Override, ...]: ...


class ModelSource(Protocol):
    """The anomaly model in use (learning.AnomalyKeeper): None until one is trained."""

    model: AnomalyModel | None

    @property
    def features(self) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class CycleReport:
    started_at: float
    finished_at: float
    mode: str
    snapshot: Snapshot
    detection: Detection
    plan: Plan
    results: tuple[ActionResult, ...]
    nodes_after: Mapping[str, NodeInfo]
    state: PolicyState
    """Decide's memory after this cycle: when each pending match began, each clear key's
    release clock."""
    anomaly: FleetScores | None = None
    """Every node's anomaly score this cycle, when a model is in use."""

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


def detect_params(cfg: Config) -> DetectParams:
    return DetectParams(max_data_age=cfg.durations.max_data_age,
                        cloud_link_for=cfg.durations.cloud_link_for,
                        site_disruption_threshold=cfg.guard.site_disruption_threshold,
                        min_failing=cfg.guard.min_failing,
                        site_wide_threshold=cfg.guard.site_wide_threshold,
                        site_wide_min_nodes=cfg.guard.site_wide_min_nodes,
                        anomaly_isolates=cfg.anomaly.enabled and cfg.anomaly.action == "isolate",
                        anomaly_for=cfg.anomaly.isolate_after)


def decide_params(cfg: Config) -> DecideParams:
    b = cfg.budgets
    return DecideParams(release_after=cfg.durations.release_after,
                        flap_window=cfg.durations.flap_window,
                        site_max_fraction=b.site_max_fraction,
                        fleet_max_fraction=b.fleet_max_fraction,
                        max_new_per_minute=b.max_new_per_minute,
                        exempt_nodes=frozenset(cfg.exempt.nodes))


class Sentinel:
    def __init__(self, cfg: Config, rules: RuleSet, collector: SiteCollector, nodes: NodeSource,
                 actuator: Actuator, journal: Journal, metrics: Metrics,
                 clock: Callable[[], float] = time.time, alerts: AlertSource | None = None,
                 overrides: OverrideSource | None = None,
                 anomaly: ModelSource | None = None,
                 leading: Callable[[], bool] = lambda: True) -> None:
        self.cfg, self.rules = cfg, rules
        self.collector, self.node_source = collector, nodes
        self.actuator, self.journal, self.metrics = actuator, journal, metrics
        self.clock = clock
        self.alerts, self.overrides, self.anomaly = alerts, overrides, anomaly
        self.leading = leading
        """A replica that does not hold the lease cycles, but acts on nothing and journals
        nothing (leader election)."""
        self._alarm_state = AlarmState()
        self._scores: FleetScores | None = None
        self.detect_params, self.decide_params = detect_params(cfg), decide_params(cfg)
        self.state = PolicyState()
        self.remember(clock())
        self.last: CycleReport | None = None
        self._notes: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def remember(self, now: float) -> None:
        """Decide's memory from the journal: at start, and when this replica takes the lease
        over (the previous leader's releases and isolations count for flap damping and the
        rate budget). Pending matches are this replica's own: it kept cycling as follower."""
        last_release, recent = self.journal.memory(now, self.cfg.durations.flap_window,
                                                   self.actuator.mode)
        self.state = replace(self.state, last_release=last_release, recent_isolations=recent)
        self._settled = False

    async def take_over(self, now: float) -> None:
        """This replica got the lease: reload the memory between cycles, never during one
        (a cycle in flight would write its older state back over it)."""
        async with self._lock:
            await asyncio.to_thread(self.remember, now)

    async def run_cycle(self) -> CycleReport:
        async with self._lock:  # never two cycles at once, whoever calls
            try:
                return await self._cycle()
            except Exception:
                self.metrics.failed()
                log.exception("cycle failed; nothing was decided on partial data")
                raise

    async def _cycle(self) -> CycleReport:
        started = self.clock()
        model = self.anomaly.model if self.anomaly is not None else None
        features = self.anomaly.features if model is not None and self.anomaly else []
        sites = await self.collector.collect(self.rules.rules, features)
        # Everything proportional to the fleet runs off the event loop, which keeps serving
        # the webhook and the probes meanwhile.
        snapshot = await asyncio.to_thread(self._snapshot, started, sites, model)
        nodes = snapshot.nodes
        detection, (plan, state) = await asyncio.to_thread(self._think, snapshot, started)
        results = await asyncio.to_thread(self._act, plan, started)
        self.state = _only_what_happened(state, self.state, results, started)
        for stop in sorted(plan.budget_exhausted):
            log.warning("budget %s spent: isolations held this cycle", stop)
        after = await asyncio.to_thread(lambda: self.actuator.view(self.node_source.nodes())) \
            if results else nodes
        report = CycleReport(started, self.clock(), self.actuator.mode, snapshot, detection,
                             plan, tuple(results), after, self.state, self._scores)
        self.metrics.observe(report)
        self.last = report
        return report

    def _act(self, plan: Plan, now: float) -> list[ActionResult]:
        """Journal (write-ahead), apply, settle; every fsync off the event loop."""
        results: list[ActionResult] = []
        if not self.leading():
            return results
        if plan.actions:
            self.journal.plan(plan.actions, self.actuator.mode, now)
            results = self.actuator.apply(plan, now)
            self.journal.settle((r.action.id, r.outcome, r.error) for r in results)
        self._journal_notes(plan, now)
        return results

    def _snapshot(self, started: float, sites: Mapping[str, SiteView],
                  model: AnomalyModel | None) -> Snapshot:
        nodes = self.actuator.view(self.node_source.nodes())
        if not self._settled and self.leading():
            self._settle_interrupted(nodes)
        evidence = by_node(self.alerts.active()) if self.alerts is not None else {}
        overrides = self.overrides.active(started) if self.overrides is not None else ()
        alarms, unknown = self._score(model, nodes, sites, started)
        return Snapshot(started, nodes, sites, evidence, overrides, alarms, unknown)

    def _score(self, model: AnomalyModel | None, nodes: Mapping[str, NodeInfo],
               sites: Mapping[str, SiteView], now: float) -> tuple[
                   dict[str, AnomalyReading], frozenset[str]]:
        """Score every node with a site; journal each alarm as it is raised and cleared."""
        held = frozenset(n for n, i in nodes.items() if ANOMALY_KEY in i.held.keys)
        if model is None:
            self._scores = None
            return {}, held
        node_sites = {n: i.site for n, i in nodes.items() if i.site is not None}
        names, site_list, x = feature_matrix(node_sites, sites, model.features)
        st = self._alarm_state
        before = {st.nodes[i] for i in np.flatnonzero(st.alarm)}
        self._scores, self._alarm_state = score_fleet(model, names, site_list, x, st)
        alarms = self._scores.alarms()
        st = self._alarm_state
        after = {st.nodes[i] for i in np.flatnonzero(st.alarm)}
        notes = []
        for n in sorted(after - before):
            r = self._scores.reading(n)
            notes.append(Note(NodeName(n), node_sites[n], NoteReason.ANOMALY,
                              r.sentence() if r is not None else "anomaly alarm raised"))
        for n in sorted(before - after):
            if n in node_sites:
                r = self._scores.reading(n)
                notes.append(Note(NodeName(n), node_sites[n], NoteReason.ANOMALY_CLEARED,
                                  "anomaly alarm cleared" + (f": score {r.score:.3f}"
                                                             if r is not None else "")))
        for note in notes:
            log.info("ANOMALY %s (%s): %s", note.node, note.reason, note.text)
        if self.leading():
            self.journal.record_notes(notes, now)
        unscored = frozenset(n for n in held if self._scores.reading(n) is None)
        return alarms, unscored

    def _settle_interrupted(self, nodes: Mapping[str, NodeInfo]) -> None:
        """A predecessor killed mid-plan left `planned` rows: the nodes say what happened (an
        applied isolation carries its decision id in the node's annotation)."""
        out = []
        for row in self.journal.unsettled(self.actuator.mode):
            node = nodes.get(row["node"])
            held = node.held.keys.get(row["key"]) if node is not None else None
            if row["kind"] == "isolate":
                done = held is not None and held.decision == row["id"]
            else:
                done = node is not None and held is None
            out.append((row["id"], Outcome.APPLIED if done else Outcome.INTERRUPTED,
                        None if done else "sentinel stopped before this action completed"))
            log.info("settled action %s (%s %s on %s) left by a previous run: %s", row["id"],
                     row["kind"], row["key"], row["node"], out[-1][1])
        self.journal.settle(out)
        self._settled = True

    def _think(self, snapshot: Snapshot, now: float) -> tuple[Detection, tuple[Plan, PolicyState]]:
        detection = detect(snapshot, self.rules, self.detect_params)
        return detection, decide(snapshot, detection, self.state, self.decide_params, now)

    def _journal_notes(self, plan: Plan, now: float) -> None:
        """A hold reason is journaled when it changes, not every cycle."""
        current: dict[str, str] = {}
        changed: list[Note] = []
        for n in plan.notes:
            if n.node in current:
                continue
            current[n.node] = n.reason
            if self._notes.get(n.node) != n.reason:
                changed.append(n)
                log.info("HOLD %s (%s): %s", n.node, n.reason, n.text)
        self._notes = current
        self.journal.record_notes(changed, now)


def _only_what_happened(new: PolicyState, old: PolicyState, results: list[ActionResult],
                        now: float) -> PolicyState:
    """Decide assumed its plan would succeed; undo that for the actions that failed, so a
    failed release is retried next cycle and a failed isolation does not spend the budget."""
    failed = [r.action for r in results if r.outcome is Outcome.FAILED]
    if not failed:
        return new
    last_release = dict(new.last_release)
    recent = list(new.recent_isolations)
    for a in failed:
        if a.kind is ActionKind.RELEASE:
            if a.node in old.last_release:
                last_release[a.node] = old.last_release[a.node]
            else:
                last_release.pop(a.node, None)
        elif now in recent:
            recent.remove(now)
    return PolicyState(new.pending, new.clear_since, last_release, tuple(recent))
