"""The values that flow through one cycle: a Snapshot in; Findings, a Plan and state out.

Everything here is immutable and free of I/O, so detect and decide can be tested by tables
and run on 100,000 nodes without touching the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

from sentinel.core.anomalyreading import AnomalyReading
from sentinel.core.kinds import Mode, NoteReason, Outcome, SiteState

__all__ = [
    "ANOMALY_KEY",
    "MANUAL",
    "NODE_KEY",
    "Action",
    "ActionKind",
    "AlertEvidence",
    "AnomalyReading",
    "Condition",
    "Finding",
    "Held",
    "HeldKey",
    "Level",
    "Mode",
    "NodeInfo",
    "NodeName",
    "Note",
    "NoteReason",
    "Outcome",
    "Override",
    "OverrideKind",
    "Plan",
    "Ready",
    "SiteName",
    "SiteSees",
    "SiteState",
    "SiteStatus",
    "SiteView",
    "Snapshot",
    "Verdict",
]

NodeName = NewType("NodeName", str)
SiteName = NewType("SiteName", str)

#: The isolation key of level 2. Level-1 keys are component names.
NODE_KEY = "node"


class Level(StrEnum):
    """How far an isolation goes: level 1 keeps the pods, level 2 moves the movable ones."""

    COMPONENT = "component"
    NODE = "node"


class Ready(StrEnum):
    """The cloud witness: the node's Ready condition as Kubernetes reports it."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class SiteSees(StrEnum):
    """The site witness: what the site's own Prometheus says of the node."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class Verdict(StrEnum):
    """One row of the two-witness table in DESIGN.md."""

    HEALTHY = "healthy"
    COMPONENT_FAULT = "component-fault"
    CLOUD_LINK = "cloud-link-broken"
    NODE_FAILURE = "node-failure"
    PARTITION = "site-partition-suspected"
    UNKNOWN = "unknown"


class ActionKind(StrEnum):
    ISOLATE = "isolate"
    RELEASE = "release"


class OverrideKind(StrEnum):
    """What a person told sentinel to do, beating every rule until it expires."""

    ISOLATE = "isolate"
    RELEASE = "release"
    EXEMPT = "exempt"
    PAUSE = "pause"


#: The level-1 key (taint) of an anomaly, when `anomaly.action` is isolate.
ANOMALY_KEY = "anomaly"

#: Prefix of the rule name (and taint value) of a manual isolation.
MANUAL = "manual-"


@dataclass(frozen=True, slots=True)
class Override:
    """A person's decision with a reason and an expiry. `node` for isolate, release and
    exempt; `site` (or neither, for the whole fleet) for pause."""

    id: str
    kind: OverrideKind
    reason: str
    by: str
    created: float
    expires: float
    node: str | None = None
    site: str | None = None
    key: str = ""
    """For isolate: the component to taint, or `node` for a level-2 isolation."""
    force: bool = False
    """For isolate: spend no budget (the reason says why)."""

    @property
    def rule(self) -> str:
        """The rule name a manual isolation carries: a valid taint value."""
        return f"{MANUAL}{self.id}"

    def active(self, now: float) -> bool:
        return self.created <= now < self.expires

    @property
    def target(self) -> str:
        """What it covers, as every message names it."""
        return self.node or (f"site {self.site}" if self.site else "the whole fleet")

    def record(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind.value, "node": self.node, "site": self.site,
                "target": self.target, "key": self.key, "force": self.force,
                "reason": self.reason, "by": self.by, "created": self.created,
                "expires": self.expires}


@dataclass(frozen=True, slots=True)
class HeldKey:
    """One isolation sentinel holds on a node, as its taint and annotation show it."""

    key: str
    effect: str
    rule: str
    since: float | None = None
    decision: str = ""

    def record(self) -> dict[str, object]:
        """As the node annotation, the status API and explain all show it."""
        return {"rule": self.rule, "effect": self.effect, "since": self.since,
                "decision": self.decision}


@dataclass(frozen=True, slots=True)
class Held:
    """All that sentinel holds on a node. Rebuilt from the node itself every cycle."""

    keys: Mapping[str, HeldKey] = field(default_factory=dict)
    cordoned: bool = False
    released: float | None = None
    """When a release last freed the node entirely (flap damping). On the node, not only in
    one replica's journal: a new leader, or one whose disk was lost, damps the same flaps."""

    def __bool__(self) -> bool:
        return bool(self.keys)


NOTHING_HELD = Held()


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The cloud view of one node, plus what sentinel already holds on it."""

    name: NodeName
    site: SiteName | None
    ready: Ready
    unschedulable: bool = False
    protected: bool = False
    """Autonomous node (the flag) or one with a bound pod: level 2 never evicts here."""
    exempt: bool = False
    held: Held = NOTHING_HELD
    protected_by: str = ""
    """Which setting protects it, in words (explain)."""
    autonomy_for: float | None = None
    """OpenYurt's `autonomy-duration` in seconds (0: for ever): level 2 does not evict while
    the node has been out of contact for less (core/autonomy.py)."""
    unready_since: float | None = None
    """When the cloud's Ready condition last left True (its lastTransitionTime)."""
    autonomy_note: str = ""
    """An autonomy setting that is there but unreadable, ignored as OpenYurt ignores it."""
    lease_silent: float | None = None
    """Set when `ready` is Unknown because the kubelet's Lease went unrenewed for this many
    seconds while its Ready condition still says True (core/leases.py)."""


@dataclass(frozen=True, slots=True)
class SiteView:
    """The site and link views: what one site's Prometheus answered this cycle."""

    site: SiteName
    reachable: bool
    error: str | None = None
    data_age: float | None = None
    present: frozenset[str] = frozenset()
    """Nodes the site's Prometheus sees serving: at least one target up."""
    firing: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Rule name -> node -> sample value, for every rule whose query matched."""
    rule_errors: Mapping[str, str] = field(default_factory=dict)
    features: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Anomaly feature name -> node -> value, this cycle."""
    feature_errors: Mapping[str, str] = field(default_factory=dict)
    uptime: float | None = None
    """How long the site's Prometheus has been running, by its own clock (runtime info's
    startTime against its `time()`); None where the store does not say (Thanos, Mimir...)."""
    established: frozenset[str] | None = None
    """Nodes whose series already existed the longest rule's `for` ago; a node not among them
    is no witness yet. None when the query failed: every node counts."""
    unresolved: bool = False
    """No Prometheus to ask (a discovered site without one): `error` says why."""


@dataclass(frozen=True, slots=True)
class AlertEvidence:
    """A firing Alertmanager alert that names a node: evidence like a rule's match."""

    fingerprint: str
    alertname: str
    node: NodeName
    key: str
    """The component it names, or `node` for a level-2 alert."""
    level: Level
    starts_at: str
    summary: str
    source: str
    """Where it came from (generatorURL, else the Alertmanager's externalURL)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one cycle knows. `taken_at` is when collection started (epoch seconds)."""

    taken_at: float
    nodes: Mapping[str, NodeInfo]
    sites: Mapping[str, SiteView]
    alerts: Mapping[str, tuple[AlertEvidence, ...]] = field(default_factory=dict)
    """Node -> the firing alerts that name it."""
    overrides: tuple[Override, ...] = ()
    """The people's decisions not yet expired or deleted when the cycle started."""
    anomalies: Mapping[str, AnomalyReading] = field(default_factory=dict)
    """Node -> its anomaly reading, for the nodes whose anomaly alarm is raised."""
    anomaly_unknown: frozenset[str] = frozenset()
    """Nodes holding the anomaly key that could not be scored this cycle: hold, not release."""
    retired: Mapping[str, str] = field(default_factory=dict)
    """Node -> the site it left (or that was removed) holding keys there: handed back."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule (or a built-in witness check) that currently matches a node."""

    key: str
    level: Level
    rule: str
    for_seconds: float
    value: float | None
    query: str
    timed_with: str | None = None
    """Where this match's clock may already run: a node-level rule's `for` counts from when
    the site first saw the node down, while the cloud still said Ready (under the rule's
    level-1 key). The cloud's witness has a wait of its own (the Lease, the grace period):
    timing the site's only from their agreement would add the two waits up."""


@dataclass(frozen=True, slots=True)
class Finding:
    """What detect concluded for one node, with the evidence behind it."""

    node: NodeName
    site: SiteName
    verdict: Verdict
    cloud: Ready
    site_sees: SiteSees
    site_reachable: bool
    conditions: tuple[Condition, ...] = ()
    unknown: frozenset[str] = frozenset()
    """Keys whose state could not be read this cycle: hold them, release nothing."""
    hold_all: bool = False
    """No trustworthy view at all (partition, missing data): change nothing on this node."""

    def evidence(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.value,
            "cloud_ready": self.cloud.value,
            "site_reachable": self.site_reachable,
            "site_sees": self.site_sees.value,
            "conditions": [
                {"rule": c.rule, "key": c.key, "level": c.level.value, "value": c.value,
                 "query": c.query, "for_seconds": c.for_seconds}
                for c in self.conditions
            ],
        }


@dataclass(frozen=True, slots=True)
class SiteStatus:
    """Per-site outcome of detection: the link view and the site guard."""

    site: SiteName
    state: SiteState
    reachable: bool
    data_age: float | None
    nodes: int
    failing: int
    error: str | None = None
    widespread: Mapping[str, int] = field(default_factory=dict)
    """Isolation key -> nodes it fails on, for every key failing on more than its rule's
    site-wide threshold of the site: the site's problem, not each node's."""
    young_rules: frozenset[str] = frozenset()
    """Rules whose `for` is longer than the site's Prometheus has been running: its matches
    are not a witness yet (a restart's first scrapes fail broadly)."""
    broad: int = 0
    """Nodes failing some check, when more than the site-wide threshold of the site do (each
    on its own key, perhaps): the site's scrapes fail broadly, no node is isolated one by one.
    0 otherwise."""


@dataclass(frozen=True, slots=True)
class Action:
    """One change to one isolation key on one node. The actuator groups them per node."""

    id: str
    kind: ActionKind
    node: NodeName
    site: SiteName
    key: str
    level: Level
    effect: str
    rule: str
    reason: str
    evidence: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Note:
    """Why sentinel did not act on a node although something is wrong with it."""

    node: NodeName
    site: SiteName
    reason: NoteReason
    text: str


@dataclass(frozen=True, slots=True)
class Plan:
    actions: tuple[Action, ...] = ()
    notes: tuple[Note, ...] = ()
    budget_exhausted: frozenset[str] = frozenset()
    """Which budgets stopped an isolation this cycle: `site:<name>`, `fleet`, `rate`."""
