"""What a simulated node's metrics look like over time, healthy or going grey.

One model feeds both the live exporters (a value at wall-clock time, integrated into counters as
node-exporter would export them) and the offline dataset generator (whole series at once), so
the labelled data that tunes the anomaly model is the data the sites' Prometheus scrapes.

Healthy behaviour: each node has its own level for every signal, the site shares a daily
rhythm (peers move together), and there is noise, occasional bursts and rare restarts.
Grey failures are slow or partial: the node still answers every probe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sentinel.config.capabilities import DEFAULT_FEATURES

__all__ = ["FEATURES", "GRAY_FAULTS", "GrayFault", "NodeSignals", "labels"]

#: The eight features, in the order of the dataset's columns: sentinel's default features.
FEATURES = tuple(DEFAULT_FEATURES)

#: Grey failures and what they do to a node (see `_apply`).
GRAY_FAULTS = ("disk-slow", "memory-leak", "nic-errors", "cpu-hog", "restart-loop")

CORES = 4
#: Container restarts per second on a healthy node: about one a day.
RESTART_RATE = 1.0 / 86400


@dataclass(frozen=True, slots=True)
class GrayFault:
    kind: str
    start: float
    end: float
    """Seconds on the signal's clock; the label is 1 in [start, end)."""
    severity: float = 1.0
    ramp: float | None = None
    """Seconds to full strength; default 30 % of its length."""


@dataclass
class NodeSignals:
    """A node's signals as functions of time (seconds). `seed` makes its levels its own;
    `site_seed` gives the rhythm it shares with its peers."""

    seed: int
    site_seed: int = 0
    day: float = 86400.0
    faults: list[GrayFault] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = np.random.default_rng(self.seed)
        self.cpu0 = r.uniform(0.15, 0.45)
        self.mem0 = r.uniform(0.35, 0.6)
        self.disk0 = r.uniform(0.002, 0.006)
        self.full0 = r.uniform(0.3, 0.7)
        self.err0 = r.uniform(0.05, 0.3)
        s = np.random.default_rng(10_000 + self.site_seed)
        self.phase = s.uniform(0, 2 * math.pi)
        self.amp = s.uniform(0.08, 0.15)

    def active(self, t: float) -> list[GrayFault]:
        return [f for f in self.faults if f.start <= t < f.end]

    def rates(self, t: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Instantaneous values at times `t`: gauges as such, counters as per-second rates
        (`restarts`: the expected container restarts per second)."""
        n = t.shape[0]
        rhythm = self.amp * np.sin(2 * math.pi * t / self.day + self.phase)
        burst = (rng.random(n) < 0.01) * rng.uniform(0.1, 0.3, n)
        cpu = np.clip(self.cpu0 + rhythm + rng.normal(0, 0.03, n) + burst, 0.01, 0.99)
        load = cpu * CORES * (1 + rng.normal(0, 0.08, n))
        mem = np.clip(self.mem0 + 0.3 * rhythm + rng.normal(0, 0.01, n), 0.05, 0.98)
        disk = self.disk0 * (1 + 2 * cpu) * rng.lognormal(0, 0.2, n)
        # Logs fill the disk through the day and are rotated at night: a sawtooth.
        full = np.clip(self.full0 + 0.02 * ((t / self.day + self.phase) % 1.0)
                       + rng.normal(0, 0.001, n), 0, 0.99)
        errs = np.asarray(rng.poisson(self.err0 * 10, n) / 10, dtype=np.float64)
        retrans = (2 + 20 * cpu) * rng.lognormal(0, 0.25, n)
        restarts = np.full(n, RESTART_RATE)
        out: dict[str, np.ndarray] = {
            "cpu": cpu, "load": load, "memory": mem, "disk_latency": disk, "disk_full": full,
            "net_errors": errs, "retransmits": retrans, "restarts": restarts}
        for f in self.faults:
            self._apply(f, t, out, rng)
        return out

    @staticmethod
    def _apply(f: GrayFault, t: np.ndarray, out: dict[str, np.ndarray],
               rng: np.random.Generator) -> None:
        on = (t >= f.start) & (t < f.end)
        if not on.any():
            return
        # Grey failures grow: a fraction of the way in, they reach full strength.
        length = f.ramp if f.ramp is not None else 0.3 * (f.end - f.start)
        ramp = np.clip((t - f.start) / max(1.0, length), 0, 1) * on
        s = f.severity
        if f.kind == "disk-slow":
            out["disk_latency"] = out["disk_latency"] * (1 + 4 * s * ramp)
        elif f.kind == "memory-leak":
            out["memory"] = np.clip(out["memory"] + 0.25 * s * ramp, 0, 0.995)
        elif f.kind == "nic-errors":
            out["net_errors"] = out["net_errors"] + on * rng.poisson(20 * s, t.shape[0])
            out["retransmits"] = out["retransmits"] * (1 + 3 * s * ramp)
        elif f.kind == "cpu-hog":
            extra = 0.3 * s * ramp
            out["cpu"] = np.clip(out["cpu"] + extra, 0, 0.99)
            out["load"] = out["load"] + extra * CORES
        elif f.kind == "restart-loop":
            out["restarts"] = out["restarts"] + on * (s / 120)
        else:
            raise ValueError(f"no grey fault {f.kind!r}; faults: {', '.join(GRAY_FAULTS)}")

    def features(self, t: np.ndarray, rng: np.random.Generator, step: float) -> np.ndarray:
        """The feature matrix (len(t), 8) as sentinel's queries see it at resolution `step`:
        rates averaged over two steps, restarts summed over ten minutes."""
        r = self.rates(t, rng)
        cols = []
        for name in FEATURES:
            v = r[name]
            if name == "restarts":  # whole restarts, counted over ten minutes
                k = max(1, round(600 / step))
                v = np.convolve(rng.poisson(v * step), np.ones(k), mode="full")[: len(v)]
            elif name in ("cpu", "disk_latency", "net_errors", "retransmits"):
                v = np.convolve(v, [0.5, 0.5], mode="full")[: len(v)]
                v[0] = r[name][0]
            cols.append(v)
        return np.stack(cols, axis=1)


def labels(faults: Sequence[GrayFault], t: np.ndarray) -> np.ndarray:
    out = np.zeros(t.shape[0], dtype=np.int8)
    for f in faults:
        out[(t >= f.start) & (t < f.end)] = 1
    return out
