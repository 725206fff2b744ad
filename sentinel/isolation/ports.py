"""What the cycle needs of its adapters, as Protocols: the cycle is written against these, and
the composition root (http/runtime.py) or a test passes anything that fits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sentinel.anomaly.score import AnomalyModel
from sentinel.core.model import AlertEvidence, NodeInfo, Override, SiteView
from sentinel.core.ruleset import Rule

__all__ = ["AlertSource", "Collector", "ModelSource", "NodeSource", "OverrideSource"]


class Collector(Protocol):
    """The site and link views of one cycle (adapters.prom.SiteCollector, or
    adapters.central.CentralCollector for one store of every site)."""

    async def collect(self, rules: Sequence[Rule],
                      features: Sequence[tuple[str, str]] = ()) -> dict[str, SiteView]: ...

    async def aclose(self) -> None: ...


class NodeSource(Protocol):
    def nodes(self) -> dict[str, NodeInfo]: ...
    def lease_silence(self, at_least: float = 0.0) -> dict[str, float]: ...


class AlertSource(Protocol):
    def active(self) -> list[AlertEvidence]: ...


class OverrideSource(Protocol):
    def active(self, now: float) -> tuple[Override, ...]: ...


class ModelSource(Protocol):
    """The anomaly model in use (learning.AnomalyKeeper): None until one is trained."""

    model: AnomalyModel | None

    @property
    def features(self) -> list[tuple[str, str]]: ...
