"""A labelled dataset from the simulated fleet, in the server-machine benchmark layout.

Each entity is one simulated node (its own levels, its site's rhythm), sampled at `step`
seconds as sentinel's feature queries see it: a healthy training period, then a test period
with grey failures injected at random times and labelled 1 while they last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sentinel.anomaly.dataset import write_entity
from sentinel.sim.fleet import FleetSpec
from sentinel.sim.signals import GRAY_FAULTS, GrayFault, NodeSignals, labels

__all__ = ["DatasetSpec", "generate"]


@dataclass(frozen=True)
class DatasetSpec:
    sites: int = 2
    nodes_per_site: int = 4
    train_steps: int = 2880
    test_steps: int = 2880
    step: float = 60.0
    faults_per_entity: tuple[int, int] = (1, 3)
    fault_steps: tuple[int, int] = (15, 90)
    seed: int = 1


def _faults(rng: np.random.Generator, spec: DatasetSpec, t0: float) -> list[GrayFault]:
    """Non-overlapping faults with healthy gaps between them, in the test period only."""
    k = int(rng.integers(spec.faults_per_entity[0], spec.faults_per_entity[1] + 1))
    slot = spec.test_steps // k
    out = []
    for i in range(k):
        length = int(rng.integers(spec.fault_steps[0], min(spec.fault_steps[1], slot // 2) + 1))
        start = i * slot + int(rng.integers(slot // 4, slot - length))
        out.append(GrayFault(str(rng.choice(GRAY_FAULTS)), t0 + start * spec.step,
                             t0 + (start + length) * spec.step,
                             float(rng.uniform(0.5, 1.5))))
    return out


def generate(root: Path, spec: DatasetSpec = DatasetSpec()) -> list[str]:
    """Write the dataset; returns the entity names."""
    fleet = FleetSpec(sites=spec.sites, nodes_per_site=spec.nodes_per_site)
    rng = np.random.default_rng(spec.seed)
    names = []
    for si, site in enumerate(fleet.site_names()):
        for ni, node in enumerate(fleet.node_names(site)):
            sig = NodeSignals(seed=spec.seed * 1000 + si * 100 + ni, site_seed=si,
                              day=1440 * spec.step)
            t = np.arange(spec.train_steps + spec.test_steps) * spec.step
            t0 = spec.train_steps * spec.step
            sig.faults = _faults(rng, spec, t0)
            x = sig.features(t, rng, spec.step)
            y = labels(sig.faults, t[spec.train_steps:])
            name = f"{site}-{node}"
            write_entity(root, name, x[: spec.train_steps], x[spec.train_steps:], y)
            names.append(name)
    return names
