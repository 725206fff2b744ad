"""The rollout guard, end to end: read the opted-in workloads, analyse every one whose new
revision is rolling out (range queries on its site's Prometheus, the verdict in analysis.py),
roll back a failed one, hold its siblings, through the workload actuator (actuate.py) on the
shared apply-and-record path: journal (write-ahead), the write with the record in the
workload's annotation that `sentinel rollouts` and a restarted sentinel read, metric, Event.

It runs on its own schedule (`rollouts.interval`), in a worker thread, never inside the
isolation cycle.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from sentinel.adapters.acting import Done, Recorder
from sentinel.adapters.metrics import Metrics
from sentinel.adapters.prom import SiteTarget, site_targets
from sentinel.adapters.promhttp import PromClients
from sentinel.anomaly.history import query_range
from sentinel.config.schema import Config, SiteConfig
from sentinel.core.effects import Effect, EventSpec, JournalKind
from sentinel.core.errors import AdapterError, Refused
from sentinel.core.ids import action_id
from sentinel.core.model import NodeName, Note, NoteReason, Outcome, SiteName
from sentinel.rollouts.actuate import WorkloadActuator
from sentinel.rollouts.analysis import (
    Analysis,
    AnalysisParams,
    MetricSpec,
    RolloutAction,
    RolloutKind,
    RolloutState,
    Verdict,
    Workload,
    analyse,
    decide_rollouts,
)
from sentinel.rollouts.workloads import WorkloadView, pods_regex

__all__ = ["RolloutError", "RolloutGuard"]

log = logging.getLogger("sentinel.rollouts")
LEVEL = "rollout"


class RolloutError(Refused):
    """A manual command that cannot be carried out; `status` is the HTTP code to answer."""


@dataclass(frozen=True, slots=True)
class _Site:
    name: str
    selector: Mapping[str, str]
    target: SiteTarget


def _describe(w: Workload) -> str:
    return f"{w.kind} {w.key}"


def _rev(r: Any) -> str:
    return f"revision {r.number} (version {r.version or '?'})"


class RolloutGuard:
    def __init__(self, cfg: Config, api: client.ApiClient, actuator: WorkloadActuator,
                 recorder: Recorder, metrics: Metrics,
                 clock: Callable[[], float] = time.time) -> None:
        r = cfg.rollouts
        self.cfg, self.r, self.metrics = cfg, r, metrics
        self.actuator, self.recorder, self.journal = actuator, recorder, recorder.journal
        self.clock = clock
        self.view = WorkloadView(api, cfg)
        self.sites: list[_Site] = []
        self.set_sites(cfg.sites)
        self.specs = [MetricSpec(n, m.margin, m.relative) for n, m in r.metrics.items()]
        # each sample's rate window spans this many steps: the rank test is told
        self.params = AnalysisParams(r.alpha, r.min_samples, r.min_window,
                                     overlap=max(1.0, r.rate_window / r.step))
        self.clients = PromClients()
        self._lock = threading.Lock()
        self._passed: dict[str, str] = {}
        """Workload -> the revision hash whose analysis passed (this process)."""
        self._analysis: dict[str, tuple[str, Analysis, float]] = {}
        self._hold_since: dict[str, tuple[str, float]] = {}
        self._overdue: set[str] = set()
        self._status: list[dict[str, Any]] = []
        self.checked_at: float | None = None
        self._settled = False

    def set_sites(self, sites: Sequence[SiteConfig]) -> None:
        """The node groups a workload's analysis compares: the sites as they stand (discovery
        changes them); a site without a Prometheus to ask is left out."""
        targets = {t.name: t for t in site_targets(self.cfg, sites=sites)}
        self.sites = [_Site(s.name, self.cfg.site_selector(s), targets[s.name])
                      for s in sites if s.name in targets]

    def start(self) -> RolloutGuard:
        self.view.start()
        return self

    def close(self) -> None:
        self.view.stop()
        self.clients.close()

    # -- one round -------------------------------------------------------------------------
    def run_round(self) -> list[RolloutAction]:
        """Analyse, decide, act; returns the actions taken (or planned, in dry-run)."""
        with self._lock:
            if not self.view.synced:
                log.info("rollouts: workloads not listed yet; no analysis this round")
                return []
            now = self.clock()
            if not self._settled:
                self._settle_predecessor()
            workloads = self.view.workloads()
            verdicts: dict[str, Analysis] = {}
            for w in workloads:
                for kind in (RolloutKind.ROLLBACK, RolloutKind.HOLD):  # at 0 from the start:
                    self.metrics.rollout_actions.labels(  # increase() sees the first one
                        w.namespace, w.name, kind, Outcome.APPLIED)
                if self._state(w, now) is RolloutState.ANALYSING:
                    verdicts[w.key] = self._analyse(w, now)
            actions = decide_rollouts(workloads, verdicts, self.actuator.planned())
            taken = [a for a in actions if self._act(a, now)]
            keys = {w.key for w in workloads}
            for d in (self._analysis, self._hold_since, self._passed):
                for k in [k for k in d if k not in keys]:
                    del d[k]
            self.checked_at = now
            self._status = [self._row(w, now) for w in workloads]
            self.metrics.rollout_state.workloads = self._status
            return taken

    def _settle_predecessor(self) -> None:
        """A predecessor killed mid-action left `planned` rows. The workloads' annotations
        say what holds now, and this run finishes a cut rollback itself (once), so the old
        rows are closed as interrupted."""
        rows = self.journal.interrupt_other(LEVEL, "sentinel stopped before this action "
                                            "completed; the workload's annotation tells what "
                                            "holds now")
        for row in rows:
            log.info("rollouts: action %s (%s %s) left planned by a previous run: interrupted",
                     row["id"], row["kind"], row["key"])
        self._settled = True

    def _state(self, w: Workload, now: float) -> RolloutState:
        if w.failed_here:
            return RolloutState.ROLLING_BACK
        if w.rolled_back:
            return RolloutState.ROLLED_BACK
        if w.current is None:
            return RolloutState.HELD if w.hold is not None else RolloutState.WAITING
        if w.previous is None:
            return RolloutState.STABLE
        if self._passed.get(w.key) == w.current.hash:
            return RolloutState.PASSED
        created = w.current.created
        if w.settled and (created is None or now - created > self.r.max_window):
            return RolloutState.STABLE  # rolled out before our window: the baseline
        return RolloutState.ANALYSING

    def _sites_of(self, w: Workload) -> list[_Site]:
        assert w.current is not None
        spec = w.current.template.get("spec")
        sel = (spec.get("nodeSelector") if isinstance(spec, dict) else None) or {}
        mine = [s for s in self.sites if s.selector and
                all(sel.get(k) == v for k, v in s.selector.items())]
        return mine or self.sites

    def _analyse(self, w: Workload, now: float) -> Analysis:
        assert w.current is not None and w.previous is not None
        new_v, old_v = w.current.version, w.previous.version
        created = w.current.created or now
        window = max(0.0, now - created)
        if new_v is None or new_v == old_v:
            a = Analysis(Verdict.HOLD, f"the new and the stable revision have the same "
                         f"{self.r.version_label!r} pod label ({new_v!r}): their pods cannot "
                         "be told apart in the metrics", window)
        else:
            start = max(created - self.r.baseline, now - self.r.max_window)
            samples: dict[str, tuple[list[float], list[float]]] = {}
            errors: dict[str, str] = {}
            pods = pods_regex(w.kind, w.name)
            for spec in self.specs:
                q = self.r.query(spec.name, w.namespace, pods)
                new: list[float] = []
                old: list[float] = []
                # one query per store: in central mode every site's target is the store
                for site in {s.target.url: s for s in self._sites_of(w)}.values():
                    t = site.target
                    try:
                        series = query_range(self.clients.sync_client(t.http), t.url, q, start,
                                             now, self.r.step, t.timeout)
                    except AdapterError as e:
                        errors[spec.name] = f"site {site.name}: {e}"
                        break
                    for s in series:
                        metric = s.get("metric") or {}
                        assert isinstance(metric, dict)
                        side = new if metric.get("version") == new_v else \
                            old if metric.get("version") == old_v else None
                        if side is None:
                            continue
                        values = s.get("values") or []
                        assert isinstance(values, list)
                        side.extend(x for x in (float(v) for _, v in values)
                                    if math.isfinite(x))
                samples[spec.name] = (new, old)
            a = analyse(self.specs, samples, errors, window, self.params)
        self._analysis[w.key] = (w.current.hash, a, now)
        if a.verdict is Verdict.HOLD:
            since = self._hold_since.get(w.key)
            if since is None or since[0] != w.current.hash:
                self._hold_since[w.key] = (w.current.hash, now)
        else:
            self._hold_since.pop(w.key, None)
            self._overdue.discard(w.key)
        held = self._hold_since.get(w.key)
        if held is not None and now - held[1] > self.r.hold_deadline and \
                w.key not in self._overdue:
            self._overdue.add(w.key)
            self._note(w, NoteReason.ROLLOUT_HOLD_OVERDUE, f"{_describe(w)}: the analysis of "
                       f"{_rev(w.current)} has been on hold for {now - held[1]:.0f}s (deadline "
                       f"{self.r.hold_deadline:.0f}s): {a.reason}", now)
            log.warning("rollouts: %s on hold past the deadline: %s", w.key, a.reason)
        if a.verdict is Verdict.PASS and w.settled:
            self._passed[w.key] = w.current.hash
            self._note(w, NoteReason.ROLLOUT_PASSED, f"{_describe(w)}: {_rev(w.current)} passed "
                       f"analysis against {_rev(w.previous)}: "
                       + "; ".join(f"{m.name} {m.reason}" for m in a.metrics), now)
            log.info("rollouts: %s %s passed", w.key, _rev(w.current))
        return a

    def _note(self, w: Workload, reason: NoteReason, text: str, now: float) -> None:
        site = self._sites_of(w)[0].name if w.current is not None else ""
        self.journal.record_notes([Note(NodeName(""), SiteName(site), reason, text)], now)

    # -- actions ---------------------------------------------------------------------------
    def _act(self, a: RolloutAction, now: float, by: str = "sentinel") -> bool:
        """Through the shared apply-and-record path: journal, write, settle, metric, Event."""
        w = a.workload
        aid = action_id(now, w.key, a.kind)
        cur = w.current
        site = self._sites_of(w)[0].name if cur is not None else ""
        if a.kind is RolloutKind.ROLLBACK:
            assert cur is not None and a.to is not None
            text = (f"rolled back {_describe(w)} from {_rev(cur)} to {_rev(a.to)}: "
                    f"{a.reason}")
            record: dict[str, Any] = {
                "state": "failed", "revision": cur.hash, "version": cur.version,
                "number": cur.number, "to": a.to.hash, "to_version": a.to.version,
                "to_number": a.to.number, "reason": a.reason, "at": now, "id": aid, "by": by}
        else:
            version = cur.version if cur is not None else None
            text = f"held {_describe(w)} (at version {version or '?'}): {a.reason}"
            record = {"by": by, "cause": a.cause, "reason": a.reason, "at": now, "id": aid}
        analysis = self._analysis.get(w.key)
        evidence = {"workload": w.key, "kind": w.kind, "app": w.app, "record": record,
                    "analysis": analysis[1].record() if analysis else None}
        kind = JournalKind.ROLLOUT_ROLLBACK if a.kind is RolloutKind.ROLLBACK \
            else JournalKind.ROLLOUT_HOLD
        effect = Effect(aid, kind, site, w.key, LEVEL, a.kind, "rollout-guard", text, evidence)

        def write() -> bool:
            if a.kind is RolloutKind.ROLLBACK:
                assert a.to is not None
                return self.actuator.rollback(w, a.to, record, now)
            return self.actuator.hold(w, record)

        event = EventSpec(w.kind, w.name, w.namespace, "apps/v1",
                          "SentinelRolloutRollback" if a.kind is RolloutKind.ROLLBACK
                          else "SentinelRolloutHold", text, "Warning")
        return self._record(effect, w, a.kind, text, write, event, now).outcome \
            is Outcome.APPLIED

    def _record(self, effect: Effect, w: Workload, kind: RolloutKind, text: str,
                write: Callable[[], bool], event: EventSpec | None, now: float) -> Done:
        def done() -> Done:  # an AdapterError is journaled failed; the next round decides
            return Done(effect.id, Outcome.APPLIED, text, event=event, planned=write())

        def count(d: Done) -> None:
            self.metrics.rollout_actions.labels(w.namespace, w.name, kind, d.counted).inc()

        return self.recorder.run_one(effect, self.actuator.mode, now, text, done, count, log)

    # -- manual commands -------------------------------------------------------------------
    def find(self, name: str) -> Workload:
        ws = self.view.workloads()
        hits = [w for w in ws if w.key == name] or [w for w in ws if w.name == name]
        if not hits:
            raise RolloutError(404, f"no workload {name!r} under the rollout guard (label "
                               f"{self.r.label}=true on a Deployment or DaemonSet)")
        if len(hits) > 1:
            raise RolloutError(409, f"{name!r} is ambiguous: "
                               f"{', '.join(w.key for w in hits)}; say NAMESPACE/NAME")
        return hits[0]

    def rollback(self, name: str, by: str, reason: str) -> dict[str, Any]:
        with self._lock:
            w = self.find(name)
            if w.current is None:
                raise RolloutError(409, f"{w.key}: its current template has no revision yet "
                                   "(a paused rollout that never started): nothing to undo")
            if w.previous is None:
                raise RolloutError(409, f"{w.key}: no earlier revision to roll back to")
            a = RolloutAction(RolloutKind.ROLLBACK, w, f"manual rollback by {by}: {reason}",
                              to=w.previous)
            if not self._act(a, self.clock(), by):
                raise RolloutError(502, f"{w.key}: the rollback failed; see the journal")
            return {"workload": w.key, "action": RolloutKind.ROLLBACK,
                    "from": w.current.version, "to": w.previous.version,
                    "mode": self.actuator.mode, "by": by}

    def resume(self, name: str, by: str) -> dict[str, Any]:
        """Lift sentinel's hold (or a pause it left) so the rollout goes on."""
        with self._lock:
            w = self.find(name)
            if w.hold is None and not w.paused:
                raise RolloutError(409, f"{w.key} is neither held nor paused")
            now = self.clock()
            aid = action_id(now, w.key, RolloutKind.RESUME)
            text = f"resumed {_describe(w)} by {by}"
            effect = Effect(aid, JournalKind.ROLLOUT_RESUME, "", w.key, LEVEL,
                            RolloutKind.RESUME, "manual", text, {"hold": w.hold})
            out = self._record(effect, w, RolloutKind.RESUME, text,
                               lambda: self.actuator.resume(w), None, now)
            if out.outcome is not Outcome.APPLIED:
                raise RolloutError(502, str(out.error))
            return {"workload": w.key, "action": RolloutKind.RESUME,
                    "mode": self.actuator.mode, "by": by}

    # -- reading ---------------------------------------------------------------------------
    def _row(self, w: Workload, now: float) -> dict[str, Any]:
        an = self._analysis.get(w.key)
        current_hash = w.current.hash if w.current else None
        analysis = an[1].record() if an is not None and an[0] == current_hash else None
        held = self._hold_since.get(w.key)
        hold_s = now - held[1] if held is not None and held[0] == current_hash else None
        state = self._state(w, now)
        planned = self.actuator.planned()
        if f"{RolloutKind.ROLLBACK}:{w.key}" in planned:
            state = RolloutState.ROLLED_BACK_DRY_RUN
        elif f"{RolloutKind.HOLD}:{w.key}" in planned:
            state = RolloutState.HELD_DRY_RUN
        elif w.hold is not None and state not in (RolloutState.ROLLING_BACK,
                                                  RolloutState.ROLLED_BACK):
            state = RolloutState.HELD
        return {
            "namespace": w.namespace, "name": w.name, "kind": w.kind, "app": w.app,
            "state": state, "paused": w.paused,
            "current": None if w.current is None else
            {"version": w.current.version, "revision": w.current.number},
            "previous": None if w.previous is None else
            {"version": w.previous.version, "revision": w.previous.number},
            "updated": w.updated, "desired": w.desired, "settled": w.settled,
            "analysis": analysis, "analysed_at": an[2] if an is not None else None,
            "hold_seconds": hold_s,
            "hold_overdue": hold_s is not None and hold_s > self.r.hold_deadline,
            "record": w.record, "hold": w.hold}

    def status_values(self) -> list[dict[str, Any]]:
        return list(self._status)
