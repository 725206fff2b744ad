"""What sentinel is about to change, as values: one `Effect` per change, whatever it changes
(a node's taints, a workload's template, a site's registry). The capabilities build them; the
one apply-and-record path (adapters/acting.py) journals them ahead, applies them through an
actuator and records how they went. Pure: no client, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from sentinel.core.model import Action

__all__ = ["Effect", "EventSpec", "JournalKind", "effect_of"]


class JournalKind(StrEnum):
    """The `kind` column of the journal's actions, for every capability that acts."""

    ISOLATE = "isolate"
    RELEASE = "release"
    REGISTRY_FAILOVER = "registry-failover"
    REGISTRY_FAILBACK = "registry-failback"
    ROLLOUT_ROLLBACK = "rollout-rollback"
    ROLLOUT_HOLD = "rollout-hold"
    ROLLOUT_RESUME = "rollout-resume"


@dataclass(frozen=True, slots=True)
class EventSpec:
    """A core/v1 Event about the object a change touched, as `kubectl describe` shows it."""

    kind: str
    name: str
    namespace: str | None
    api_version: str
    reason: str
    message: str
    type: str = "Normal"
    """`Warning` for what takes capacity or a release away, `Normal` for what gives it back."""


@dataclass(frozen=True, slots=True)
class Effect:
    """One change, as its journal row says it. `node` is empty for what is not a node."""

    id: str
    kind: JournalKind
    site: str
    key: str
    level: str
    effect: str
    rule: str
    reason: str
    evidence: Mapping[str, object] = field(default_factory=dict)
    node: str = ""


def effect_of(a: Action) -> Effect:
    return Effect(a.id, JournalKind(a.kind.value), a.site, a.key, a.level.value, a.effect,
                  a.rule, a.reason, a.evidence, a.node)
