"""Alertmanager's webhook payload (version 4) and how an alert becomes evidence.

Pure: pydantic models and functions over values. The HTTP endpoint and the durable store are
adapters; what an alert *means* for a node is decided here, the same way for every caller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from sentinel.core.model import NODE_KEY, AlertEvidence, Level, NodeName

__all__ = ["Alert", "AlertMapping", "LabelNames", "MappedAlert", "WebhookPayload", "by_node",
           "map_alert"]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class _Model(BaseModel):
    # Alertmanager adds fields over time; unknown ones are ignored, known ones are checked.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Model):
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    starts_at: str = Field(alias="startsAt", pattern=_RFC3339.pattern)
    ends_at: str = Field("0001-01-01T00:00:00Z", alias="endsAt", pattern=_RFC3339.pattern)
    generator_url: str = Field("", alias="generatorURL", max_length=4096)
    fingerprint: str = Field(min_length=1, max_length=64)


class WebhookPayload(_Model):
    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str
    group_key: str = Field(alias="groupKey")
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field("", alias="externalURL")
    alerts: list[Alert] = Field(max_length=10_000)


@dataclass(frozen=True, slots=True)
class MappedAlert:
    """One received alert with what it names; `evidence` is None when it names no node."""

    alert: Alert
    evidence: AlertEvidence | None
    site: str | None
    problem: str | None = None


class LabelNames(Protocol):
    """Which labels name the node, its site, the component and the level (`alerts.labels`)."""

    @property
    def node(self) -> str: ...
    @property
    def site(self) -> str: ...
    @property
    def component(self) -> str: ...
    @property
    def level(self) -> str: ...


class AlertMapping(Protocol):
    """What map_alert reads of the `alerts` settings; a Protocol so the core names no config."""

    @property
    def labels(self) -> LabelNames: ...
    @property
    def default_level(self) -> str: ...


def map_alert(alert: Alert, cfg: AlertMapping, external_url: str = "") -> MappedAlert:
    """Labels -> evidence, by the configured label names (default `node`, `site`, `component`,
    `sentinel_level`). An alert that names no node is kept (journaled, counted), not dropped."""
    lab = cfg.labels
    node = alert.labels.get(lab.node, "")
    site = alert.labels.get(lab.site) or None
    if not node:
        return MappedAlert(alert, None, site, f"no {lab.node!r} label")
    level_raw = alert.labels.get(lab.level, cfg.default_level)
    if level_raw not in ("component", "node"):
        return MappedAlert(alert, None, site,
                           f"label {lab.level}={level_raw!r}: expected component or node")
    level = Level(level_raw)
    name = alert.labels.get("alertname", "alert")
    key = NODE_KEY if level is Level.NODE else alert.labels.get(lab.component) or name
    if level is Level.COMPONENT and (key == NODE_KEY or not _KEY.match(key) or len(key) > 63):
        return MappedAlert(alert, None, site, f"component {key!r} cannot name a taint key")
    summary = alert.annotations.get("summary") or alert.annotations.get("description") or name
    return MappedAlert(alert, AlertEvidence(
        fingerprint=alert.fingerprint, alertname=name, node=NodeName(node), key=key,
        level=level, starts_at=alert.starts_at, summary=summary,
        source=alert.generator_url or external_url), site)


def by_node(evidence: Iterable[AlertEvidence]) -> dict[str, tuple[AlertEvidence, ...]]:
    out: dict[str, list[AlertEvidence]] = {}
    for ev in evidence:
        out.setdefault(ev.node, []).append(ev)
    return {n: tuple(sorted(v, key=lambda e: e.fingerprint)) for n, v in out.items()}
