"""One cycle's anomaly scores as people read them: a node's score, whether it alarms, and the
features that stand out most, against its own history or its site's peers. Readings are built
on demand: 100,000 nodes are scored, few of them are read."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from sentinel.anomaly.arrays import Array
from sentinel.core.model import AnomalyReading

__all__ = ["FleetScores"]


@dataclass(frozen=True)
class FleetScores:
    """One cycle's scores; readings are built on demand (100,000 nodes, few of them read)."""

    nodes: tuple[str, ...]
    sites: tuple[str, ...]
    score: Array
    alarm: NDArray[np.bool_]
    x: Array
    z: Array
    pz: Array
    features: tuple[str, ...]
    threshold: float
    rebased: NDArray[np.bool_]
    """Nodes whose persistent shift became their baseline this cycle."""
    evidence: Array | None = None
    needed: Array | None = None
    spent: Array | None = None
    """Per node: the alarm's evidence, what it needs now, the share of time it alarmed."""

    @cached_property
    def index(self) -> dict[str, int]:
        """Node -> row, built once however many readings are asked for."""
        return {n: k for k, n in enumerate(self.nodes)}

    def reading(self, node: str) -> AnomalyReading | None:
        i = self.index.get(node)
        if i is None or math.isnan(self.score[i]):
            return None
        own, peer = np.abs(np.nan_to_num(self.z[i])), np.abs(np.nan_to_num(self.pz[i]))
        worst = np.maximum(own, peer)
        top = []
        for f in np.argsort(-worst)[:3]:
            if worst[f] < 2.0:
                break
            top.append((self.features[f], float(self.x[i, f]),
                        float(self.z[i, f] if own[f] >= peer[f] else self.pz[i, f]),
                        "own history" if own[f] >= peer[f] else "site peers"))
        def at(a: Array | None) -> float | None:
            return None if a is None else float(a[i])
        return AnomalyReading(float(self.score[i]), bool(self.alarm[i]), self.threshold,
                              tuple(top), at(self.evidence), at(self.needed), at(self.spent))

    def alarms(self) -> dict[str, AnomalyReading]:
        out = {}
        for i in np.flatnonzero(self.alarm):
            r = self.reading(self.nodes[i])
            if r is not None:
                out[self.nodes[i]] = r
        return out
