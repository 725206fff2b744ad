"""Journal ids of actions: the same decision gets the same id on every replica that takes it."""

from __future__ import annotations

import hashlib

from sentinel.core.model import ActionKind

__all__ = ["action_id", "decision_id"]


def action_id(now: float, *parts: str) -> str:
    """The journal id of an action: when, and what it is about."""
    return hashlib.sha1("/".join((f"{now:.3f}", *parts)).encode()).hexdigest()[:12]


def decision_id(now: float, node: str, key: str, kind: ActionKind) -> str:
    return action_id(now, node, key, kind.value)
