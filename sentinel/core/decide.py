"""Decision: a purely computational function `(snapshot, detection, state, params, now) ->
(plan, state)`.

It holds every safety rule that is not a witness: `for` and `release_after`, flap damping,
the site guard's consequence, budgets and exemptions. It reads no clock and does no I/O; the
caller passes `now` and applies the plan.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from sentinel.core.detect import Detection
from sentinel.core.model import (
    MANUAL,
    NODE_KEY,
    Action,
    ActionKind,
    Condition,
    Finding,
    Level,
    NodeInfo,
    Note,
    Override,
    OverrideKind,
    Plan,
    SiteName,
    Snapshot,
)
from sentinel.core.overrides import Overrides
from sentinel.core.timefmt import utc

__all__ = ["DecideParams", "PolicyState", "budget_cap", "decide"]

NO_SCHEDULE = "NoSchedule"
NO_EXECUTE = "NoExecute"


@dataclass(frozen=True, slots=True)
class DecideParams:
    release_after: float = 300.0
    flap_window: float = 1800.0
    site_max_fraction: float = 0.5
    fleet_max_fraction: float = 0.2
    max_new_per_minute: int = 10
    exempt_nodes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class PolicyState:
    """What decide must remember between cycles. Everything else is read from the nodes."""

    pending: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    """(node, rule, key) -> when first seen matching, for `for`. The key is part of it: a
    level-2 rule downgraded to level 1 (one witness only) starts its own clock."""
    clear_since: Mapping[tuple[str, str], float] = field(default_factory=dict)
    """(node, key) -> since when a held key stopped matching, for `release_after`."""
    last_release: Mapping[str, float] = field(default_factory=dict)
    recent_isolations: tuple[float, ...] = ()


def action_id(now: float, *parts: str) -> str:
    """The journal id of an action: when, and what it is about."""
    return hashlib.sha1("/".join((f"{now:.3f}", *parts)).encode()).hexdigest()[:12]


def decision_id(now: float, node: str, key: str, kind: ActionKind) -> str:
    return action_id(now, node, key, kind.value)


@dataclass(slots=True)
class _Candidate:
    node: NodeInfo
    cond: Condition
    effect: str
    since: float
    finding: Finding | None
    override: Override | None = None


def budget_cap(fraction: float, size: int) -> int:
    return max(1, math.floor(fraction * size))


def _fmt(c: Condition) -> str:
    value = "" if c.value is None else f" (value {c.value:g})"
    return f"{c.rule}: {c.query}{value}"


def decide(snapshot: Snapshot, detection: Detection, state: PolicyState, params: DecideParams,
           now: float) -> tuple[Plan, PolicyState]:
    nodes = snapshot.nodes
    site_isolated: Counter[str] = Counter()
    fleet_size = 0
    names = set(detection.findings)
    for n in nodes.values():
        if n.site is None:
            continue
        fleet_size += 1
        if n.held:
            site_isolated[n.site] += 1
            names.add(n.name)

    pending: dict[tuple[str, str, str], float] = {}
    clear_since: dict[tuple[str, str], float] = {}
    last_release = {k: v for k, v in state.last_release.items() if now - v < params.flap_window}
    actions: list[Action] = []
    notes: list[Note] = []
    candidates: list[_Candidate] = []

    def release(node: NodeInfo, key: str, reason: str, ev: Mapping[str, object]) -> None:
        h = node.held.keys[key]
        level = Level.NODE if key == NODE_KEY else Level.COMPONENT
        actions.append(Action(decision_id(now, node.name, key, ActionKind.RELEASE),
                              ActionKind.RELEASE, node.name, SiteName(node.site or ""), key,
                              level, h.effect, h.rule, reason, ev))

    ovs = Overrides.at(snapshot.overrides, now)
    names.update(n for n in ovs.on_node if n in nodes)
    for name in sorted(names):
        node = nodes.get(name)
        if node is None or node.site is None:
            continue
        site = SiteName(node.site)
        f = detection.findings.get(name)
        held = node.held.keys
        ev: dict[str, object] = f.evidence() if f else {"verdict": "healthy"}
        ov = ovs.on_node.get(name)
        if ov is not None:
            ev = {**ev, "override": ov.record()}

        if node.exempt or name in params.exempt_nodes or (
                ov is not None and ov.kind is not OverrideKind.ISOLATE):
            if ov is not None and ov.kind is not OverrideKind.ISOLATE:
                why = _override_text(ov)
                notes.append(Note(node.name, site, "override", f"{why}: no isolation whatever "
                                  "the rules say"))
            else:
                why = "node is exempt: sentinel hands it back"
                if f and f.conditions:
                    notes.append(Note(node.name, site, "exempt",
                                      "node is exempt; no isolation whatever the rules say"))
            for key in sorted(held):
                release(node, key, why, ev)
            if held:
                site_isolated[site] -= 1
            continue

        firing: set[str] = set()
        desired: dict[str, tuple[Condition, float]] = {}
        manual = ov if ov is not None and ov.kind is OverrideKind.ISOLATE else None
        if manual is not None:
            level = Level.NODE if manual.key == NODE_KEY else Level.COMPONENT
            cond = Condition(manual.key, level, manual.rule, 0.0, None, _override_text(manual))
            firing.add(manual.key)
            h = held.get(manual.key)
            effect = NO_EXECUTE if level is Level.NODE and not node.protected else NO_SCHEDULE
            if h is None or h.effect != effect:
                candidates.append(_Candidate(node, cond, effect, manual.created, f, manual))
        if f is not None and f.hold_all:
            notes.append(Note(node.name, site, f.verdict.value, _hold_text(f)))
            continue
        paused = ovs.pause_for(site)

        for c in (f.conditions if f else ()):
            pk = (name, c.rule, c.key)
            since = state.pending.get(pk, now)
            pending[pk] = since
            firing.add(c.key)
            if now - since >= c.for_seconds:
                desired.setdefault(c.key, (c, since))
            else:
                notes.append(Note(node.name, site, "pending",
                                  f"{_fmt(c)} matching for {now - since:.0f}s of "
                                  f"{c.for_seconds:.0f}s"))
        if NODE_KEY in desired and detection.guarded(site):
            del desired[NODE_KEY]
            st = detection.sites[site]
            notes.append(Note(node.name, site, "site-guard",
                              f"{st.failing} of {st.nodes} nodes of site {site} fail together: "
                              "a site event, no level-2 action there"))
        for key, (c, since) in desired.items():
            if manual is not None and key == manual.key:
                continue  # the person's isolation of this key beats the rule's
            if paused is not None:
                notes.append(Note(node.name, site, "paused",
                                  f"would isolate ({_fmt(c)}) but {_override_text(paused)}"))
                continue
            effect = NO_SCHEDULE
            if c.level is Level.NODE and not node.protected:
                effect = NO_EXECUTE
            h = held.get(key)
            if h is None or h.effect != effect:
                assert f is not None
                candidates.append(_Candidate(node, c, effect, since, f))

        unknown = f.unknown if f else frozenset()
        releasable: list[tuple[str, float]] = []
        ended: list[str] = []
        for key in sorted(held):
            if key in firing:
                continue
            if held[key].rule.startswith(MANUAL):
                ended.append(key)  # the person's isolation expired or was lifted
                continue
            if key in unknown:
                notes.append(Note(node.name, site, "unknown",
                                  f"cannot read the state of {key!r}: holding the isolation"))
                continue
            ck = (name, key)
            since = state.clear_since.get(ck, now)
            clear_since[ck] = since
            if now - since >= params.release_after:
                releasable.append((key, since))
        for key in ended:
            release(node, key, f"manual isolation {held[key].rule.removeprefix(MANUAL)} "
                               "expired or was lifted", {**ev, "frees_node": False})
        if ended and len(ended) == len(held):
            site_isolated[site] -= 1
        last = last_release.get(name)
        if releasable and paused is not None:
            notes.append(Note(node.name, site, "paused",
                              f"would release {', '.join(k for k, _ in releasable)} but "
                              f"{_override_text(paused)}"))
            releasable = []
        if releasable and last is not None and now - last < params.flap_window:
            # Set only when a release freed the node entirely: holding keys again since then
            # means it was re-isolated inside the window, i.e. it flaps. Keep it isolated.
            notes.append(Note(node.name, site, "flap-damping",
                              f"released {now - last:.0f}s ago and isolated again: next "
                              f"release allowed in {params.flap_window - (now - last):.0f}s"))
            releasable = []
        frees = bool(releasable) and len(releasable) + len(ended) == len(held)
        for key, since in releasable:
            release(node, key, f"{key} clear for {now - since:.0f}s "
                               f"(release_after {params.release_after:.0f}s)",
                    {**ev, "frees_node": frees})
        if frees:
            last_release[name] = now
            site_isolated[site] -= 1

    recent = [t for t in state.recent_isolations if now - t < 60.0]
    exhausted: set[str] = set()
    fleet_isolated = sum(site_isolated.values())
    fleet_cap = budget_cap(params.fleet_max_fraction, fleet_size)
    newly: set[str] = set()
    candidates.sort(key=lambda c: (c.cond.level is not Level.NODE, c.since, c.node.name))
    for cand in candidates:
        node, c = cand.node, cand.cond
        site = SiteName(node.site or "")
        new_node = not node.held and node.name not in newly
        stop: str | None = None
        forced = cand.override is not None and cand.override.force
        if forced:
            pass
        elif len(recent) >= params.max_new_per_minute:
            stop = "rate"
            why = f"{len(recent)} isolations in the last minute (max {params.max_new_per_minute})"
        elif new_node:
            site_size = detection.sites[site].nodes if site in detection.sites else 1
            site_cap = budget_cap(params.site_max_fraction, site_size)
            if site_isolated[site] + 1 > site_cap:
                stop = f"site:{site}"
                why = f"{site_isolated[site]} of {site_size} nodes of site {site} isolated " \
                      f"(max {site_cap})"
            elif fleet_isolated + 1 > fleet_cap:
                stop = "fleet"
                why = f"{fleet_isolated} of {fleet_size} nodes of the fleet isolated " \
                      f"(max {fleet_cap})"
        if stop is not None:
            exhausted.add(stop)
            notes.append(Note(node.name, site, "budget",
                              f"would isolate ({_fmt(c)}) but the budget is spent: {why}"))
            continue
        if new_node:
            site_isolated[site] += 1
            fleet_isolated += 1
            newly.add(node.name)
        recent.append(now)
        ev = dict(cand.finding.evidence()) if cand.finding else {"verdict": "healthy"}
        ev["matching_since"] = cand.since
        if cand.override is not None:
            ev["override"] = cand.override.record()
        actions.append(Action(
            decision_id(now, node.name, c.key, ActionKind.ISOLATE), ActionKind.ISOLATE,
            node.name, site, c.key, c.level, cand.effect, c.rule, _isolate_text(cand, now), ev))

    plan = Plan(tuple(actions), tuple(notes), frozenset(exhausted))
    return plan, PolicyState(pending, clear_since, last_release, tuple(recent))


def _override_text(o: Override) -> str:
    what = {OverrideKind.ISOLATE: f"isolated by hand ({o.key})",
            OverrideKind.RELEASE: "released by hand", OverrideKind.EXEMPT: "exempted by hand",
            OverrideKind.PAUSE: f"actions are paused on {o.target}"}[o.kind]
    force = " with --force (no budget)" if o.force else ""
    return f"{what}{force} by {o.by} until {utc(o.expires)} (override {o.id}): {o.reason}"


def _isolate_text(cand: _Candidate, now: float) -> str:
    f, c = cand.finding, cand.cond
    if cand.override is not None or f is None:
        return c.query
    held_for = f"for {now - cand.since:.0f}s"
    if c.level is Level.NODE:
        how = "cordon + NoExecute" if cand.effect == NO_EXECUTE else \
            "cordon + NoSchedule only (autonomous node or bound pod: nothing is evicted)"
        return (f"node failure confirmed by both witnesses {held_for}: cloud Ready="
                f"{f.cloud.value}, site Prometheus {_fmt(c)} -> {how}")
    if c.rule == "cloud-link":
        return (f"cloud sees Ready={f.cloud.value} {held_for} while the site sees the node "
                f"serving: edgecore or its cloud link is broken -> NoSchedule {c.key}")
    return f"component {c.key} broken {held_for}: {_fmt(c)} -> NoSchedule"


def _hold_text(f: Finding) -> str:
    if f.verdict.value == "site-partition-suspected":
        return ("site Prometheus unreachable and the cloud lost the node: a partition is "
                "suspected, so nothing is done but alert")
    return "no trustworthy data for this node this cycle: changing nothing"
