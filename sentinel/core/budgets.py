"""Budgets, spent once per cycle over the whole fleet: at most a fraction of a site and of the
fleet isolated at once, at most N new isolations a minute. Past a budget sentinel stops acting
and says which budget stopped it (like a MachineHealthCheck's `maxUnhealthy`). A person's
isolation with `--force` spends none."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sentinel.core.detect import Detection
from sentinel.core.ids import decision_id
from sentinel.core.model import Action, ActionKind, Level, NodeInfo, Note, NoteReason, SiteName
from sentinel.core.phases import NO_EXECUTE, Candidate, cond_text

__all__ = ["BudgetKind", "Budgets", "Refused", "Spent", "budget_cap", "recheck", "spend"]


class BudgetKind:
    """The names a spent budget is reported by (Plan.budget_exhausted, the metric's label)."""

    RATE = "rate"
    FLEET = "fleet"

    @staticmethod
    def site(site: str) -> str:
        return f"site:{site}"


def budget_cap(fraction: float, size: int) -> int:
    return max(1, math.floor(fraction * size))


@dataclass(frozen=True, slots=True)
class Budgets:
    site_isolated: Counter[str]
    """Nodes isolated per site after this cycle's releases."""
    fleet_size: int
    site_max_fraction: float
    fleet_max_fraction: float
    max_new_per_minute: int


@dataclass(frozen=True, slots=True)
class Spent:
    actions: tuple[Action, ...]
    notes: tuple[Note, ...]
    exhausted: frozenset[str]
    recent: tuple[float, ...]


def _stop(b: Budgets, site_isolated: Counter[str], fleet_isolated: int, recent: int,
          site: str, site_size: int, new_node: bool) -> tuple[str, str] | None:
    """Which budget one more isolation would break, and why in words; None if none."""
    if recent >= b.max_new_per_minute:
        return BudgetKind.RATE, \
            f"{recent} isolations in the last minute (max {b.max_new_per_minute})"
    if not new_node:
        return None
    site_cap = budget_cap(b.site_max_fraction, site_size)
    if site_isolated[site] + 1 > site_cap:
        return BudgetKind.site(site), \
            f"{site_isolated[site]} of {site_size} nodes of site {site} isolated (max {site_cap})"
    fleet_cap = budget_cap(b.fleet_max_fraction, b.fleet_size)
    if fleet_isolated + 1 > fleet_cap:
        return BudgetKind.FLEET, \
            f"{fleet_isolated} of {b.fleet_size} nodes of the fleet isolated (max {fleet_cap})"
    return None


def spend(candidates: Sequence[Candidate], b: Budgets, detection: Detection,
          recent_isolations: Sequence[float], now: float) -> Spent:
    """Level 2 first, then the oldest matches: what the budgets allow becomes an action."""
    recent = [t for t in recent_isolations if now - t < 60.0]
    site_isolated = Counter(b.site_isolated)
    fleet_isolated = sum(site_isolated.values())
    exhausted: set[str] = set()
    newly: set[str] = set()
    actions: list[Action] = []
    notes: list[Note] = []
    ordered = sorted(candidates,
                     key=lambda c: (c.cond.level is not Level.NODE, c.since, c.node.name))
    for cand in ordered:
        node, c = cand.node, cand.cond
        site = SiteName(node.site or "")
        new_node = not node.held and node.name not in newly
        forced = cand.override is not None and cand.override.force
        site_size = detection.sites[site].nodes if site in detection.sites else 1
        stop = None if forced else _stop(b, site_isolated, fleet_isolated, len(recent), site,
                                         site_size, new_node)
        if stop is not None:
            exhausted.add(stop[0])
            notes.append(Note(node.name, site, NoteReason.BUDGET,
                              f"would isolate ({cond_text(c)}) but the budget is spent: "
                              f"{stop[1]}"))
            continue
        if new_node:
            site_isolated[site] += 1
            fleet_isolated += 1
            newly.add(node.name)
        recent.append(now)
        actions.append(_isolate(cand, now))
    return Spent(tuple(actions), tuple(notes), frozenset(exhausted), tuple(recent))


@dataclass(frozen=True, slots=True)
class Refused:
    action: Action
    budget: str
    why: str


def recheck(actions: Sequence[Action], nodes: Mapping[str, NodeInfo],
            site_sizes: Mapping[str, int], b: Budgets, recent_isolations: Sequence[float],
            now: float) -> tuple[tuple[Action, ...], tuple[Refused, ...]]:
    """The budgets again where the plan is applied, as descheduler's evictor counts its
    limits at each eviction: against the nodes as they are now and the isolations journaled
    by now, not as they were when the plan was made. Another writer (a previous leader's last
    cycle, a second replica in a split brain) may have spent the budget meanwhile; what this
    plan would then add beyond it is refused. `b.site_isolated` is ignored: it is counted
    here from `nodes`, less the nodes this plan's releases free."""
    released: dict[str, set[str]] = {}
    for a in actions:
        if a.kind is ActionKind.RELEASE:
            released.setdefault(a.node, set()).add(a.key)
    freed = {n for n, keys in released.items()
             if n in nodes and set(nodes[n].held.keys) <= keys}
    site_isolated: Counter[str] = Counter(
        n.site for n in nodes.values() if n.site is not None and n.held and n.name not in freed)
    fleet_isolated = sum(site_isolated.values())
    recent = sum(1 for t in recent_isolations if now - t < 60.0)
    newly: set[str] = set()
    kept: list[Action] = []
    refused: list[Refused] = []
    for a in actions:
        node = nodes.get(a.node)
        override = a.evidence.get("override")
        forced = isinstance(override, Mapping) and bool(override.get("force"))
        if a.kind is not ActionKind.ISOLATE or node is None or forced:
            kept.append(a)
            continue
        new_node = (not node.held or a.node in freed) and a.node not in newly
        stop = _stop(b, site_isolated, fleet_isolated, recent, a.site,
                     site_sizes.get(a.site, 1), new_node)
        if stop is not None:
            refused.append(Refused(a, stop[0], f"refused where applied: {stop[1]}"))
            continue
        if new_node:
            site_isolated[a.site] += 1
            fleet_isolated += 1
            newly.add(a.node)
        recent += 1
        kept.append(a)
    return tuple(kept), tuple(refused)


def _isolate(cand: Candidate, now: float) -> Action:
    node, c = cand.node, cand.cond
    ev: dict[str, object] = dict(cand.finding.evidence()) if cand.finding \
        else {"verdict": "healthy"}
    ev["matching_since"] = cand.since
    if cand.override is not None:
        ev["override"] = cand.override.record()
    return Action(decision_id(now, node.name, c.key, ActionKind.ISOLATE), ActionKind.ISOLATE,
                  node.name, SiteName(node.site or ""), c.key, c.level, cand.effect, c.rule,
                  isolate_text(cand, now), ev)


def isolate_text(cand: Candidate, now: float) -> str:
    f, c = cand.finding, cand.cond
    if cand.override is not None or f is None:
        return c.query
    held_for = f"for {now - cand.since:.0f}s"
    if c.level is Level.NODE:
        how = "cordon + NoExecute" if cand.effect == NO_EXECUTE else \
            "cordon + NoSchedule only (autonomous node or bound pod: nothing is evicted)"
        cloud = f"cloud Ready={f.cloud.value}" if cand.node.lease_silent is None else \
            f"cloud Lease not renewed for {cand.node.lease_silent:.0f}s"
        return (f"node failure confirmed by both witnesses {held_for}: {cloud}, site "
                f"Prometheus {cond_text(c)} -> {how}")
    if c.rule == "cloud-link":
        return (f"cloud sees Ready={f.cloud.value} {held_for} while the site sees the node "
                f"serving: edgecore or its cloud link is broken -> NoSchedule {c.key}")
    return f"component {c.key} broken {held_for}: {cond_text(c)} -> NoSchedule"
