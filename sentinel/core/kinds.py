"""Typed states that travel as strings elsewhere (journal rows, metric labels, JSON): why a
node was held back, how sentinel acts, what became of an action, where a workload's rollout
stands, a site's state. Re-exported by model.py (and the rollout ones by rollouts/analysis.py)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Mode", "NoteReason", "Outcome", "RolloutKind", "RolloutState", "SiteState"]


class SiteState(StrEnum):
    """Where a site stands this cycle (detect), as /status and the metrics show it."""

    OK = "ok"
    PARTITIONED = "partitioned"
    STALE = "stale"
    GUARDED = "guarded"
    UNRESOLVED = "unresolved"
    """A discovered site with no Prometheus to ask (or an unreadable annotation): reported,
    never acted on, and not a partition: nothing was cut."""


class NoteReason(StrEnum):
    """Why sentinel did not act (or what it noticed) on a node: shared by decide, explain, the
    API, the journal and the tests, so that no one matches a reason by its spelling."""

    PENDING = "pending"
    """A rule matches, but not yet for its `for`."""
    SITE_GUARD = "site-guard"
    """Too many of the site's nodes fail together: no level 2 there."""
    SITE_WIDE = "site-wide"
    """One rule matches on too many of the site's nodes: the site's problem, not each node's."""
    PAUSED = "paused"
    BUDGET = "budget"
    FLAP_DAMPING = "flap-damping"
    UNKNOWN = "unknown"
    """The key's state (or, for a whole node, any trustworthy view) could not be read."""
    PARTITION = "site-partition-suspected"
    OVERRIDE = "override"
    EXEMPT = "exempt"
    ANOMALY = "anomaly"
    ANOMALY_CLEARED = "anomaly-cleared"
    ROLLOUT_HOLD_OVERDUE = "rollout-hold-overdue"
    ROLLOUT_PASSED = "rollout-passed"


class Mode(StrEnum):
    """How sentinel acts: `dry-run` plans, journals and explains, and changes nothing."""

    ENFORCE = "enforce"
    DRY_RUN = "dry-run"


class Outcome(StrEnum):
    """What became of one action, as the journal settles it and the metrics count it."""

    APPLIED = "applied"
    NOOP = "noop"
    """Already in force: nothing to change."""
    FAILED = "failed"
    REFUSED = "refused"
    """Planned, then refused where applied: a budget was spent by then (core/budgets.recheck)."""
    INTERRUPTED = "interrupted"
    """Planned, then the process died: settled from the nodes at the next start."""


class RolloutKind(StrEnum):
    """What the guard does to a workload (the metric's `action`, the journal's `effect`)."""

    ROLLBACK = "rollback"
    """Pause, restore the previous template."""
    HOLD = "hold"
    """Pause a sibling of a workload that failed."""
    RESUME = "resume"
    """A person lifts a hold."""


class RolloutState(StrEnum):
    """Where a workload stands, as `sentinel rollouts` and the API show it."""

    STABLE = "stable"
    WAITING = "waiting"
    ANALYSING = "analysing"
    PASSED = "passed"
    HELD = "held"
    ROLLING_BACK = "rolling-back"
    ROLLED_BACK = "rolled-back"
    HELD_DRY_RUN = "held (dry-run)"
    """Dry-run: the guard would have held it; the cluster does not show it."""
    ROLLED_BACK_DRY_RUN = "rolled-back (dry-run)"
