"""Decision: a purely computational pipeline `(snapshot, detection, state, params, now) ->
(plan, state)`.

It holds every safety rule that is not a witness: `for` and `release_after`, flap damping,
the site guards' consequences, budgets and exemptions. It reads no clock and does no I/O; the
caller passes `now` and applies the plan. Each phase is a pure function of its own
(`phases.py`, `budgets.py`), tested by its own table; `decide` only runs them in order, per
node, then spends the budgets on what they asked for:

  hand_back (exempt, override) -> manual -> mature (`for`) -> guard (site guard, site-wide
  symptoms)
  -> wanted (pause, effect) -> releases (release_after, pause, flap damping) -> budgets
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sentinel.core.budgets import Budgets, budget_cap, spend
from sentinel.core.detect import Detection
from sentinel.core.ids import action_id, decision_id
from sentinel.core.model import (
    Action,
    NodeInfo,
    Note,
    OverrideKind,
    Plan,
    SiteName,
    Snapshot,
)
from sentinel.core.overrides import Overrides
from sentinel.core.phases import (
    Candidate,
    NodeTurn,
    evidence_of,
    guard,
    hand_back,
    hand_back_retired,
    hold_reason,
    hold_text,
    manual_candidate,
    mature,
    releases,
    wanted,
)

__all__ = ["DecideParams", "PolicyState", "action_id", "budget_cap", "decide", "decision_id",
           "forget", "site_moves"]


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


def _tally(snapshot: Snapshot, detection: Detection,
           ovs: Overrides) -> tuple[Counter[str], int, list[str]]:
    """Isolated nodes per site, the fleet's size, and the nodes worth a look, sorted."""
    site_isolated: Counter[str] = Counter()
    fleet_size = 0
    names = set(detection.findings)
    for n in snapshot.nodes.values():
        if n.site is None:
            continue
        fleet_size += 1
        if n.held:
            site_isolated[n.site] += 1
            names.add(n.name)
    names.update(n for n in ovs.on_node if n in snapshot.nodes)
    return site_isolated, fleet_size, sorted(names)


def site_moves(before: Mapping[str, str | None], nodes: Mapping[str, NodeInfo],
               retired: Mapping[str, str]) -> tuple[frozenset[str], dict[str, str]]:
    """Which nodes changed site since the last cycle (`before`: each node's site then), and
    the nodes to hand back: those that left every site while sentinel held keys on them,
    kept until they hold nothing or are in a site again (Snapshot.retired)."""
    moved = frozenset(n for n, i in nodes.items() if n in before and before[n] != i.site)
    out = {n: s for n, s in retired.items()
           if n in nodes and nodes[n].site is None and nodes[n].held}
    for n in moved:
        old = before[n]
        if nodes[n].site is None and old is not None and nodes[n].held:
            out[n] = old
    return moved, out


def forget(state: PolicyState, nodes: frozenset[str]) -> PolicyState:
    """The clocks of nodes that changed site start again: a `for` counted on one site's
    Prometheus is no evidence from another's, nor a release clock either. What the node
    holds stays held until its new site clears it for `release_after`."""
    if not nodes:
        return state
    return replace(
        state, pending={k: v for k, v in state.pending.items() if k[0] not in nodes},
        clear_since={k: v for k, v in state.clear_since.items() if k[0] not in nodes})


def decide(snapshot: Snapshot, detection: Detection, state: PolicyState, params: DecideParams,
           now: float) -> tuple[Plan, PolicyState]:
    ovs = Overrides.at(snapshot.overrides, now)
    site_isolated, fleet_size, names = _tally(snapshot, detection, ovs)
    last_release = {k: v for k, v in state.last_release.items() if now - v < params.flap_window}
    pending: dict[tuple[str, str, str], float] = {}
    clear_since: dict[tuple[str, str], float] = {}
    actions: list[Action] = []
    notes: list[Note] = []
    candidates: list[Candidate] = []
    for name, former in sorted(snapshot.retired.items()):
        node = snapshot.nodes.get(name)
        if node is not None and node.site is None and node.held:
            actions.extend(hand_back_retired(node, former, now).releases)
    for name in names:
        node = snapshot.nodes.get(name)
        if node is None or node.site is None:
            continue
        turn = _node_turn(node, detection, ovs, state, params, last_release, now)
        pending.update(turn.pending)
        clear_since.update(turn.clear_since)
        actions.extend(turn.releases)
        notes.extend(turn.notes)
        candidates.extend(turn.candidates)
        if turn.frees:
            site_isolated[node.site] -= 1
        if turn.freed_at is not None:
            last_release[name] = turn.freed_at
    budgets = Budgets(site_isolated, fleet_size, params.site_max_fraction,
                      params.fleet_max_fraction, params.max_new_per_minute)
    spent = spend(candidates, budgets, detection, state.recent_isolations, now)
    plan = Plan((*actions, *spent.actions), (*notes, *spent.notes), spent.exhausted)
    return plan, PolicyState(pending, clear_since, last_release, spent.recent)


def _node_turn(node: NodeInfo, detection: Detection, ovs: Overrides, state: PolicyState,
               params: DecideParams, last_release: Mapping[str, float],
               now: float) -> NodeTurn:
    """One node through the phases, in order; each phase may end the node's turn."""
    site = SiteName(node.site or "")
    f = detection.findings.get(node.name)
    ov = ovs.on_node.get(node.name)
    exempt = node.exempt or node.name in params.exempt_nodes
    back = hand_back(node, f, ov, exempt, now)
    if back is not None:
        return back
    manual = ov if ov is not None and ov.kind is OverrideKind.ISOLATE else None
    cands = manual_candidate(node, f, manual, now)
    if f is not None and f.hold_all:
        return NodeTurn(candidates=cands,
                        notes=(Note(node.name, site, hold_reason(f), hold_text(f)),))
    paused = ovs.pause_for(site)
    m = guard(node, mature(node, f, state.pending, now), detection)
    want, want_notes = wanted(node, f, m.desired, manual, paused, now)
    firing = m.firing | ({manual.key} if manual is not None else set())
    rel = releases(node, f, evidence_of(f, ov), firing, state.clear_since, paused,
                   last_release.get(node.name), params.release_after, params.flap_window, now)
    return NodeTurn(pending=m.pending, clear_since=rel.clear_since, releases=rel.actions,
                    notes=(*m.all_notes, *want_notes, *rel.notes),
                    candidates=(*cands, *want), frees=rel.frees,
                    freed_at=now if rel.frees_by_timer else None)
