"""People's decisions as values: which override wins on a node, which pause covers a site,
and what a request for a new one must satisfy.

Overrides enter the cycle in the snapshot and go through `decide` like every rule, so the
budgets, the journal and `explain` see them the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sentinel.core.model import NODE_KEY, Override, OverrideKind

__all__ = ["OverrideRequest", "Overrides", "check_request", "replaced_by"]

_COMPONENT = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
NODE_KINDS = (OverrideKind.ISOLATE, OverrideKind.RELEASE, OverrideKind.EXEMPT)


@dataclass(frozen=True, slots=True)
class Overrides:
    """The overrides in force at one moment, indexed the way decide asks."""

    on_node: Mapping[str, Override]
    """Node -> the newest isolate, release or exempt override on it (a later one replaces
    an earlier one, which is lifted as the later one is set: `replaced_by`)."""
    pauses: Mapping[str | None, Override]
    """Site -> its pause; `None` -> the fleet-wide pause."""

    @classmethod
    def at(cls, overrides: Iterable[Override], now: float) -> Overrides:
        on_node: dict[str, Override] = {}
        pauses: dict[str | None, Override] = {}
        for o in sorted((o for o in overrides if o.active(now)), key=lambda o: (o.created, o.id)):
            if o.kind is OverrideKind.PAUSE:
                pauses[o.site] = o
            elif o.node is not None:
                on_node[o.node] = o
        return cls(on_node, pauses)

    def pause_for(self, site: str) -> Override | None:
        return self.pauses.get(None) or self.pauses.get(site)


def replaced_by(new: Override, active: Iterable[Override]) -> list[Override]:
    """The overrides in force on the node a new isolate, release or exempt is set on: it
    replaces them, and they are lifted, not left to come back when it ends. Left in force, an
    hour's isolation released by hand for ten minutes took the node again after those ten."""
    if new.kind not in NODE_KINDS or new.node is None:
        return []
    active = list(active)
    # Compared as stored (its time read back to the microsecond, maybe a hair earlier than
    # the float it was written from), in the order `Overrides.at` gives them: only older ones.
    # One another person set a moment later, on another replica, wins and stays.
    me = next((o for o in active if o.id == new.id), new)
    return [o for o in active if o.kind in NODE_KINDS and o.node == new.node
            and o.id != new.id and (o.created, o.id) < (me.created, me.id)]


@dataclass(frozen=True, slots=True)
class OverrideRequest:
    kind: OverrideKind
    reason: str
    ttl: float
    node: str | None = None
    site: str | None = None
    key: str = ""
    force: bool = False


def check_request(req: OverrideRequest, *, max_ttl: float, sites: Iterable[str]) -> list[str]:
    """Everything wrong with a request, in words an operator can act on."""
    problems = []
    if not req.reason.strip():
        problems.append("reason: say why (it is journaled and shown to everyone)")
    if not 0 < req.ttl <= max_ttl:
        problems.append(f"ttl: must be more than 0 s and at most {max_ttl:.0f} s "
                        "(api.max_override_ttl)")
    if req.kind is OverrideKind.PAUSE:
        if req.node is not None:
            problems.append("node: a pause covers a site or the fleet, not a node")
        if req.site is not None and req.site not in set(sites):
            problems.append(f"site: no site {req.site!r} in the configuration")
    else:
        if not req.node:
            problems.append(f"node: {req.kind.value} needs a node")
        if req.site is not None:
            problems.append(f"site: {req.kind.value} applies to a node, not a site")
    if req.kind is OverrideKind.ISOLATE:
        if req.key != NODE_KEY and not _COMPONENT.match(req.key):
            problems.append(f"key: {req.key!r} is neither `node` (level 2) nor a component "
                            "name (1-63 letters, digits, '-', '_', '.')")
    elif req.key:
        problems.append(f"key: only isolate takes a key, not {req.kind.value}")
    elif req.force:
        problems.append(f"force: only isolate can bypass the budgets, not {req.kind.value}")
    if req.force and len(req.reason.strip()) < 10:
        problems.append("reason: --force bypasses the budgets; give a reason of at least 10 "
                        "characters")
    return problems
