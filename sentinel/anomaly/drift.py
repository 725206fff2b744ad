"""A node's baseline after training: what happens when its metrics move to a new level and stay.

Real servers shift level between the training window and later data (a deployment, a new load):
with a baseline frozen at training, such a node alarms until the next training, on every step
(measured on real data: 90 % of one series' steps, docs/anomaly.md). Two ways were measured:

- A baseline that follows slow drift (an exponential average updated from steps that do not
  alarm). Not kept: it absorbed the simulator's slow grey faults (a memory leak is a slow
  drift) and cost event F1 there, while a step change still alarmed forever (a shifted node's
  steps all alarm, so none updates it).
- **Accepting a shift that persisted** (kept): each node keeps a recent level and spread (an
  exponential average over `recent_window`, updated on every step, so it follows the node
  wherever it goes). While the node alarms or its score is at or above the threshold a leaky
  counter of seconds grows, and it shrinks otherwise (a shifted, noisy node dips under the
  threshold now and then; a reset counter would never reach the limit). When the counter
  reaches `accept_after`, the node's baseline becomes its recent level, its spread the larger
  of the trained one and the recent one, and the alarm clears: the journal says the shift was
  taken as the new normal until the next training (a new model starts from its own
  baselines). A fault shorter than `accept_after` (the default is 6 h) is never absorbed, and
  a node that returns to its trained level after a short fault is judged against the trained
  level, which never moved.

Per node and feature this is four floats, and one per node: 8 features x 100,000 nodes is
26 MB. Arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sentinel.anomaly.arrays import Array

__all__ = ["MAD_TO_SIGMA", "Drift"]

#: Mean absolute deviation -> standard deviation for normal data (sqrt(pi / 2)).
MAD_TO_SIGMA = 1.2533


@dataclass(frozen=True)
class Drift:
    """Per node (rows) and feature: the baseline in use and the recent level it may move to.
    NaN rows are nodes without a baseline (joined after training)."""

    center: Array
    scale: Array
    recent: Array
    spread: Array
    """Exponential average of |value - recent|: the recent spread."""
    high_for: Array
    """Seconds, leaky: + while the node alarms or scores at or above the threshold, - else."""

    @classmethod
    def empty(cls, n: int, f: int) -> Drift:
        nan = np.full((n, f), np.nan)
        return cls(nan, nan.copy(), nan.copy(), nan.copy(), np.zeros(n))

    def take(self, to: NDArray[np.intp], fr: NDArray[np.intp], n: int) -> Drift:
        """Rows `fr` of this state as rows `to` of a state over `n` nodes (others empty)."""
        out = Drift.empty(n, self.center.shape[1])
        for name in ("center", "scale", "recent", "spread", "high_for"):
            getattr(out, name)[to] = getattr(self, name)[fr]
        return out

    def started(self, center: Array, scale: Array, rows: NDArray[np.intp]) -> Drift:
        """Nodes seen for the first time with a trained baseline (`rows` >= 0) start from it."""
        new = np.isnan(self.center[:, 0]) & (rows >= 0)
        if not new.any():
            return self
        c, s, r, sp = (a.copy() for a in (self.center, self.scale, self.recent, self.spread))
        c[new], s[new] = center[rows[new]], scale[rows[new]]
        r[new], sp[new] = c[new], s[new] / MAD_TO_SIGMA
        return replace(self, center=c, scale=s, recent=r, spread=sp)

    def tracked(self, x: Array, dt: float, window: float) -> Drift:
        """One step of the recent level and spread; a missing value keeps them."""
        if dt <= 0:
            return self
        a = 1.0 - np.exp(-dt / window)
        ok = ~np.isnan(x) & ~np.isnan(self.recent)
        recent = np.where(ok, self.recent + a * (x - self.recent), self.recent)
        spread = np.where(ok, self.spread + a * (np.abs(x - recent) - self.spread), self.spread)
        return replace(self, recent=recent, spread=spread)

    def accepted(self, high: NDArray[np.bool_], dt: float,
                 after: float) -> tuple[Drift, NDArray[np.bool_]]:
        """Count this step; rebase the nodes whose shift has persisted. Returns which did."""
        high_for = np.maximum(0.0, self.high_for + np.where(high, dt, -dt))
        done = (high_for >= after) & ~np.isnan(self.center[:, 0])
        if not done.any():
            return replace(self, high_for=high_for), done
        c, s = self.center.copy(), self.scale.copy()
        c[done] = self.recent[done]
        s[done] = np.maximum(s[done], MAD_TO_SIGMA * self.spread[done])
        high_for[done] = 0.0
        return replace(self, center=c, scale=s, high_for=high_for), done
