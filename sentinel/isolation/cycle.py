"""One cycle, end to end: collect, detect, decide, act, report.

This is the only place that reads the clock and glues the pure core to the adapters. The
adapters are passed in, so tests run the same cycle against the emulator and real Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from sentinel.adapters.acting import Recorder
from sentinel.adapters.actuate import ActionResult, Actuator
from sentinel.adapters.journal import Journal, JournalError
from sentinel.adapters.metrics import Metrics
from sentinel.adapters.sitewatch import SiteCatalog
from sentinel.anomaly.arrays import feature_matrix
from sentinel.anomaly.notes import Named, alarm_notes
from sentinel.anomaly.readings import FleetScores
from sentinel.anomaly.score import AlarmState, AnomalyModel, score_fleet
from sentinel.config.discovery import Resolved
from sentinel.config.schema import Config
from sentinel.core.alerts import by_node
from sentinel.core.budgets import Budgets, Refused, recheck
from sentinel.core.decide import DecideParams, PolicyState, decide, forget
from sentinel.core.detect import Detection, DetectParams, detect
from sentinel.core.effects import effect_of
from sentinel.core.leases import lease_witness
from sentinel.core.model import (
    ANOMALY_KEY,
    Action,
    ActionKind,
    AnomalyReading,
    NodeInfo,
    Note,
    NoteReason,
    Outcome,
    Plan,
    SiteView,
    Snapshot,
)
from sentinel.core.ownership import memory_from_nodes
from sentinel.core.ruleset import RuleSet
from sentinel.isolation.ports import (
    AlertSource,
    Collector,
    ModelSource,
    NodeSource,
    OverrideSource,
)
from sentinel.isolation.sitefollow import SiteFollower

__all__ = ["CycleReport", "NodeSource", "Sentinel", "decide_params", "detect_params"]

log = logging.getLogger("sentinel.cycle")


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
    collected_at: float | None = None
    """When every site's answers were in (the sites' Prometheus or the central store)."""

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    @property
    def collect_seconds(self) -> float:
        """Of the duration, the wait for the metrics: a slow cycle is the store's or ours."""
        return 0.0 if self.collected_at is None else self.collected_at - self.started_at

    # What every /status request and metrics scrape reads of the whole fleet, computed once a
    # cycle (the cycle warms them off the event loop), not once a request: 100,000 nodes
    # walked on each of a few requests a second starve the API and the webhook.
    @cached_property
    def held(self) -> tuple[NodeInfo, ...]:
        """The nodes sentinel holds some key on after this cycle, by name."""
        return tuple(sorted((n for n in self.nodes_after.values() if n.held),
                            key=lambda n: n.name))

    @cached_property
    def managed(self) -> int:
        """Nodes in one of the configured sites."""
        return sum(1 for n in self.nodes_after.values() if n.site in self.detection.sites)

    @cached_property
    def unassigned(self) -> int:
        """Nodes in no site: never acted on."""
        return sum(1 for n in self.nodes_after.values() if n.site is None)


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
    def __init__(self, cfg: Config, rules: RuleSet, collector: Collector, nodes: NodeSource,
                 actuator: Actuator, journal: Journal, metrics: Metrics,
                 clock: Callable[[], float] = time.time, alerts: AlertSource | None = None,
                 overrides: OverrideSource | None = None,
                 anomaly: ModelSource | None = None,
                 leading: Callable[[], bool] = lambda: True,
                 recorder: Recorder | None = None, sites: SiteCatalog | None = None,
                 apply_sites: Callable[[Resolved], None] = lambda r: None) -> None:
        self.cfg, self.rules = cfg, rules
        self.collector, self.node_source = collector, nodes
        self.actuator, self.journal, self.metrics = actuator, journal, metrics
        self.recorder = recorder or Recorder(journal, None)
        self.clock = clock
        self.alerts, self.overrides, self.anomaly = alerts, overrides, anomaly
        self.leading = leading
        """A replica that does not hold the lease cycles, but acts on nothing and journals
        nothing (leader election)."""
        self._alarm_state = AlarmState()
        self._scores: FleetScores | None = None
        self._named: Named = {}
        self.detect_params, self.decide_params = detect_params(cfg), decide_params(cfg)
        self.state = PolicyState()
        self.remember()
        self.last: CycleReport | None = None
        self._notes: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self.sites = SiteFollower(sites, apply_sites)

    def remember(self) -> None:
        """Have decide's memory read again, from the journal and the nodes, by the next cycle
        that sees the nodes: at start, and when this replica takes the lease over (the
        previous leader's releases and isolations count for flap damping and the rate
        budget). Pending matches are this replica's own: it kept cycling as follower."""
        self._settled = False
        self._read_memory = True

    def _memory(self, nodes: Mapping[str, NodeInfo], now: float) -> tuple[dict[str, float],
                                                                          tuple[float, ...]]:
        """The journal's memory joined with the nodes': this replica's journal holds only what
        it did itself (another replica led before, or its disk was replaced); the nodes hold
        what any leader did. Each release the later of the two; of the isolations of the last
        minute the longer list (both are lower bounds, and their sum would count twice)."""
        p = self.decide_params
        j_last, j_recent = self.journal.memory(now, p.flap_window, self.actuator.mode)
        n_last, n_recent = memory_from_nodes(nodes.values(), now, p.flap_window)
        last = {**n_last, **{k: max(v, n_last.get(k, v)) for k, v in j_last.items()}}
        return last, max(j_recent, n_recent, key=len)

    async def take_over(self) -> None:
        """This replica got the lease: reload the memory between cycles, never during one
        (a cycle in flight would write its older state back over it)."""
        async with self._lock:
            self.remember()

    async def run_cycle(self) -> CycleReport:
        async with self._lock:  # never two cycles at once, whoever calls
            try:
                return await self._cycle()
            except JournalError as e:  # the journal logged the first failure with why
                self.metrics.failed()
                log.error("cycle stopped before acting: %s; the next cycle tries again", e)
                raise
            except Exception:
                self.metrics.failed()
                log.exception("cycle failed; nothing was decided on partial data")
                raise

    async def _cycle(self) -> CycleReport:
        started = self.clock()
        self.sites.follow()
        model = self.anomaly.model if self.anomaly is not None else None
        features = self.anomaly.features if model is not None and self.anomaly else []
        sites = await self.collector.collect(self.rules.rules, features)
        collected = self.clock()
        # Everything proportional to the fleet runs off the event loop, which keeps serving
        # the webhook and the probes meanwhile.
        snapshot = await asyncio.to_thread(self._snapshot, started, sites, model)
        nodes = snapshot.nodes
        detection, (plan, state) = await asyncio.to_thread(self._think, snapshot, started)
        try:
            results, plan = await asyncio.to_thread(self._act, plan, detection, started)
        except JournalError:
            # Nothing was applied. The clocks decide started (`for`, release_after) are
            # observations and go on; the actions it assumed did not happen, so the first
            # cycle the journal can be written again takes them.
            self.state = _only_what_happened(
                state, self.state, [ActionResult(a, Outcome.FAILED) for a in plan.actions],
                started)
            raise
        self.state = _only_what_happened(state, self.state, results, started)
        for stop in sorted(plan.budget_exhausted):
            log.warning("budget %s spent: isolations held this cycle", stop)
        after = await asyncio.to_thread(self._nodes, started) if results else nodes
        report = CycleReport(started, self.clock(), self.actuator.mode, snapshot, detection,
                             plan, tuple(results), after, self.state, self._scores, collected)
        await asyncio.to_thread(lambda: (report.held, report.managed, report.unassigned))
        self.metrics.observe(report)
        self.last = report
        return report

    def _act(self, plan: Plan, detection: Detection,
             now: float) -> tuple[list[ActionResult], Plan]:
        """Budgets again against the nodes as they are now, then the shared apply-and-record
        path (journal write-ahead, apply, settle, Event, log); every fsync off the event
        loop. An isolation the budgets refuse now is journaled `refused`, with why."""
        results: list[ActionResult] = []
        if not self.leading():
            return results, plan
        if plan.actions:
            kept, refused = self._recheck(plan, detection, now)
            if refused:
                plan = replace(plan, notes=(*plan.notes, *(
                    Note(r.action.node, r.action.site, NoteReason.BUDGET,
                         f"would isolate {r.action.key} but {r.why}") for r in refused)),
                    budget_exhausted=plan.budget_exhausted | {r.budget for r in refused})

            def apply() -> list[ActionResult]:
                done = self.actuator.apply(replace(plan, actions=kept), now) if kept else []
                return [*done, *(ActionResult(r.action, Outcome.REFUSED, r.why)
                                 for r in refused)]

            results = self.recorder.run([effect_of(a) for a in plan.actions],
                                        self.actuator.mode, now, apply, logger=log)
        # The journal said why; the changed reasons are journaled at its next write.
        with contextlib.suppress(JournalError):
            self._journal_notes(plan, now)
        return results, plan

    def _recheck(self, plan: Plan, detection: Detection,
                 now: float) -> tuple[tuple[Action, ...], tuple[Refused, ...]]:
        if not any(a.kind is ActionKind.ISOLATE for a in plan.actions):
            return plan.actions, ()
        p = self.decide_params
        nodes = self.actuator.view(self.node_source.nodes())
        _, recent = self._memory(nodes, now)
        sizes = {name: st.nodes for name, st in detection.sites.items()}
        fleet = sum(1 for n in nodes.values() if n.site is not None)
        b = Budgets(Counter(), fleet, p.site_max_fraction, p.fleet_max_fraction,
                    p.max_new_per_minute)
        return recheck(plan.actions, nodes, sizes, b, recent, now)

    def _snapshot(self, started: float, sites: Mapping[str, SiteView],
                  model: AnomalyModel | None) -> Snapshot:
        nodes = self._nodes(started)
        if self._read_memory and nodes:  # at start and at takeover, once nodes are known
            last_release, recent = self._memory(nodes, started)
            self.state = replace(self.state, last_release=last_release,
                                 recent_isolations=recent)
            self._read_memory = False
        if not self._settled and self.leading():
            self._settle_interrupted(nodes)
        evidence = by_node(self.alerts.active()) if self.alerts is not None else {}
        overrides = self.overrides.active(started) if self.overrides is not None else ()
        alarms, unknown = self._score(model, nodes, sites, started)
        self.state = forget(self.state, self.sites.moves(nodes))
        return Snapshot(started, nodes, sites, evidence, overrides, alarms, unknown,
                        dict(self.sites.retired))

    def _score(self, model: AnomalyModel | None, nodes: Mapping[str, NodeInfo],
               sites: Mapping[str, SiteView], now: float) -> tuple[
                   dict[str, AnomalyReading], frozenset[str]]:
        """Score every node with a site; journal each alarm as it is raised, what it turns out to
        be about (`alarm_notes`), and when it clears."""
        held = frozenset(n for n, i in nodes.items() if ANOMALY_KEY in i.held.keys)
        if model is None:
            self._scores = None
            return {}, held
        node_sites = {n: i.site for n, i in nodes.items() if i.site is not None}
        names, site_list, x = feature_matrix(node_sites, sites, model.features)
        st = self._alarm_state
        before = {st.nodes[i] for i in np.flatnonzero(st.alarm)}
        self._scores, self._alarm_state = score_fleet(model, names, site_list, x, st, now)
        alarms = self._scores.alarms()
        st = self._alarm_state
        after = {st.nodes[i] for i in np.flatnonzero(st.alarm)}
        alarmed = {n: self._scores.reading(n) for n in after}
        cleared = {n: self._scores.reading(n) for n in before - after}
        rebased = {self._scores.nodes[i] for i in np.flatnonzero(self._scores.rebased)}
        notes, self._named = alarm_notes(alarmed, cleared, node_sites, self._named, rebased,
                                         model.params.accept_after)
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

    def _nodes(self, now: float) -> dict[str, NodeInfo]:
        """The cloud view as decide reads it: what the actuator holds, and a kubelet's silent
        Lease as the cloud's witness (core/leases.py)."""
        after = self.cfg.cluster.lease_witness_after
        return lease_witness(self.actuator.view(self.node_source.nodes()),
                             self.node_source.lease_silence(after), after, now)

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
        self.journal.record_notes(changed, now)
        self._notes = current  # only once on disk: a failed write is tried again


def _only_what_happened(new: PolicyState, old: PolicyState, results: list[ActionResult],
                        now: float) -> PolicyState:
    """Decide assumed its plan would succeed; undo that for the actions that failed (or that
    the budgets refused where applied), so a failed release is retried next cycle and a failed
    isolation does not spend the budget."""
    failed = [r.action for r in results if r.outcome in (Outcome.FAILED, Outcome.REFUSED)]
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
