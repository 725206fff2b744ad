"""The HTTP contract: a pydantic model for every answer of the API, in the OpenAPI document.
The server returns them (FastAPI validates each answer against its route's model) and the CLI
parses every answer into the same model, so the two cannot drift apart.

Records the journal and the guards keep (actions, history rows, registry and rollout rows)
are open models: their known fields are typed, new fields pass through.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sentinel.core.kinds import RolloutState

__all__ = [
    "AlertsAccepted",
    "ErrorOut",
    "ExplainOut",
    "HealthOut",
    "HeldBack",
    "HistoryEntry",
    "IsolatedRow",
    "LastCycle",
    "Lifted",
    "LiftedMany",
    "NodeRow",
    "OverrideCreated",
    "OverrideIn",
    "OverrideRecord",
    "PauseIn",
    "ReadyOut",
    "RegistryRow",
    "ResumeIn",
    "RolloutActionOut",
    "RolloutIn",
    "RolloutsOut",
    "SiteRow",
    "StatusOut",
]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests ------------------------------------------------------------------------------
class OverrideIn(_Body):
    kind: Literal["isolate", "release", "exempt", "pause"]
    reason: str = Field(min_length=1, max_length=500)
    ttl: float | str = Field(description="Seconds, or a duration such as 30m, 2h, 1d.")
    node: str | None = None
    site: str | None = None
    key: str | None = Field(None, description="isolate: a component, or `node` for level 2.")
    force: bool = False


class PauseIn(_Body):
    reason: str = Field(min_length=1, max_length=500)
    ttl: float | str = "1h"
    site: str | None = None


class ResumeIn(_Body):
    site: str | None = None


class RolloutIn(_Body):
    workload: str = Field(min_length=1, description="NAME or NAMESPACE/NAME.")
    reason: str = Field("", max_length=500)


# -- answers -------------------------------------------------------------------------------
class ErrorOut(_Out):
    """Every 4xx and 5xx: the CLI prints `error` as its one line."""

    error: str
    problems: list[Any] | None = None


class HealthOut(_Out):
    ok: bool
    reason: str | None = None


class ReadyOut(_Out):
    ready: bool
    reason: str | None = None


class OverrideRecord(_Out):
    id: str
    kind: Literal["isolate", "release", "exempt", "pause"]
    node: str | None
    site: str | None
    target: str
    key: str
    force: bool
    reason: str
    by: str
    created: float
    expires: float


class HeldBack(_Out):
    node: str | None = None
    site: str | None = None
    reason: str
    why: str


class SiteRow(_Out):
    site: str
    state: Literal["ok", "partitioned", "stale", "guarded", "unresolved"]
    reachable: bool
    data_age_seconds: float | None
    error: str | None
    nodes: int
    failing: int
    isolated_level1: int
    isolated_level2: int
    paused: OverrideRecord | None
    site_wide: dict[str, int] = {}
    """Keys failing site-wide (no node isolated for them one by one), with their node count."""
    checks_failing_broadly: int = 0
    young_rules: list[str] = []


class IsolatedRow(_Out):
    node: str
    site: str | None
    level: int
    keys: dict[str, dict[str, Any]]
    cordoned_by_sentinel: bool


class LastCycle(_Out):
    at: float
    duration_seconds: float
    collect_seconds: float
    """Of the duration, the wait for the metrics (the sites' Prometheus or the central
    store)."""
    actions: int
    budget_exhausted: list[str]


class WorkloadRow(_Open):
    """One workload under the rollout guard; the analysis and records beside it are open."""

    namespace: str
    name: str
    kind: Literal["Deployment", "DaemonSet"]
    state: RolloutState


class RolloutsOut(_Out):
    enabled: bool
    mode: Literal["enforce", "dry-run"] | None = None
    checked_at: float | None = None
    workloads: list[WorkloadRow] = []


class JournalHealth(_Out):
    writable: bool
    """False while the journal cannot be written: sentinel then acts on nothing."""
    error: str | None
    since: float | None


class StatusOut(_Out):
    mode: Literal["enforce", "dry-run"]
    synced: bool
    journal: JournalHealth
    now: float
    last_cycle: LastCycle | None
    sites: list[SiteRow]
    isolated: list[IsolatedRow]
    recent_actions: list[dict[str, Any]]
    budgets: dict[str, Any] | None = None
    guards: list[str] = []
    pauses: list[OverrideRecord] = []
    overrides: list[OverrideRecord] = []
    registries: list[dict[str, Any]] = []
    anomaly: dict[str, Any] = {}
    rollouts: RolloutsOut | None = None
    held_back: list[HeldBack] = []
    site_discovery: dict[str, Any] | None = None
    """Where the sites come from (NodePools, NodeGroups), whether they are listed, and the
    discovered sites not acted on, each with why."""


class NodeRow(_Out):
    node: str
    site: str
    ready: Literal["True", "False", "Unknown"]
    verdict: str
    state: Literal["healthy", "failing", "isolated", "held", "exempt", "unknown"]
    level: int
    keys: list[str]
    exempt: bool
    protected: bool
    held_back: HeldBack | None


class ExplainOut(_Open):
    """One node's story; the facts beside it are open (they follow the core's records)."""

    node: str
    story: list[str]


class HistoryEntry(_Open):
    type: str
    ts: float


class RegistryRow(_Open):
    site: str


class RolloutActionOut(_Open):
    pass


class OverrideCreated(_Out):
    override: OverrideRecord
    applies: str
    replaced: list[OverrideRecord] = []
    """The node's overrides it replaces, lifted as it was set."""
    warnings: list[str] = []
    """What could not be done with it (an override it replaces that could not be lifted)."""


class Lifted(_Out):
    lifted: OverrideRecord
    by: str


class LiftedMany(_Out):
    lifted: list[OverrideRecord]
    by: str


class AlertsAccepted(_Out):
    accepted: int
    new: int
    resolved: int
    duplicates: int
    unmapped: list[str]
    unknown_nodes: list[str]
    truncated_alerts: int
