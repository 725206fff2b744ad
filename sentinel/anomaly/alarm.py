"""The alarm of the anomaly score: evidence gathered over cycles (a one-sided CUSUM on the
score's rarity) raises it, a point under the threshold clears it, and the state it keeps per
node between cycles. Why this rule and not `enter` points in a row: docs/anomaly.md, measured
on real servers' metrics and on the simulator's.

How much evidence a node needs follows how much of its alarm budget it spent: the share of its
time it alarmed (an exponential average over `budget_half_life`) against `target_alarm_rate`.
A node that stayed quiet for days needs less (down to a fifth of `enter`, still two points at
least); one that alarmed more than its budget needs more (up to five times `enter`). Without
labels, the threshold's own promise — so many alarming points in health — is what tells a
rule too strict for this node's faint faults from one too loose for its noisy health; measured
on both real datasets and the simulator (docs/anomaly.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from sentinel.anomaly.arrays import Array
from sentinel.anomaly.drift import Drift
from sentinel.anomaly.params import AnomalyParams

__all__ = ["BUDGET_EXPONENT", "ENTER_RANGE", "AlarmState", "hysteresis", "needed", "series_alarms",
           "spent_share"]

#: The evidence a node can need, in multiples of `enter`. A fifth of the default (2) still
#: takes two points at the threshold, never one; five times it (50) keeps a node that alarms
#: all day from alarming again on every blip. Measured against 3-10, 3-20, 5-20 and 2-30
#: (docs/anomaly.md).
ENTER_RANGE = (0.2, 5.0)
#: `enter` grows as the spent share of the budget to this power: measured against 0.5, 1 and
#: 2 (docs/anomaly.md).
BUDGET_EXPONENT = 1.5


@dataclass(frozen=True)
class AlarmState:
    """Per node, between cycles: the smoothed evidence, the hysteresis counters, the baseline
    as drift has moved it, and when the last cycle was scored."""

    nodes: tuple[str, ...] = ()
    smooth: Array = field(default_factory=lambda: np.zeros(0))
    evidence: Array = field(default_factory=lambda: np.zeros(0))
    """Gathered towards `enter` (points at the threshold); zero again when an alarm clears."""
    below: Array = field(default_factory=lambda: np.zeros(0))
    """Points (of `AnomalyParams.step`) in a row under the threshold."""
    alarm: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    spent: Array = field(default_factory=lambda: np.zeros(0))
    """The share of its time each node alarmed, lately (NaN: not yet known, the budget)."""
    drift: Drift | None = None
    at: float | None = None
    basis: Array | None = None
    """The trained baselines the drift started from: a new model (even with other features)
    starts it again, so `drift` always has the model's features."""

    def aligned(self, nodes: tuple[str, ...], features: int) -> AlarmState:
        """The same state over another node list (a new model, nodes joining or leaving)."""
        if nodes == self.nodes and self.drift is not None:
            return self
        n = len(nodes)
        new = AlarmState(nodes, np.full(n, np.nan), np.zeros(n), np.zeros(n),
                         np.zeros(n, dtype=bool), np.full(n, np.nan),
                         Drift.empty(n, features), self.at, self.basis)
        if self.nodes:
            old = {name: i for i, name in enumerate(self.nodes)}
            pairs = [(i, old[name]) for i, name in enumerate(nodes) if name in old]
            if pairs:
                to, fr = (np.asarray(p) for p in zip(*pairs, strict=True))
                new.smooth[to], new.evidence[to] = self.smooth[fr], self.evidence[fr]
                new.below[to], new.alarm[to] = self.below[fr], self.alarm[fr]
                if len(self.spent) == len(self.nodes):
                    new.spent[to] = self.spent[fr]
                if self.drift is not None:
                    new = replace(new, drift=self.drift.take(to, fr, n))
        return new


def hysteresis(score: Array, st: AlarmState, params: AnomalyParams,
               weight: float = 1.0) -> AlarmState:
    """One cycle of every node's alarm from its score (NaN: no score, nothing changes).
    `weight`: the part of a point this cycle stands for (its seconds over the model's step,
    at most 1): cycles faster than the data gather evidence no faster in time."""
    known = ~np.isnan(score)
    high = known & (score >= params.threshold)
    low = known & ~high
    # Decades of rarity over half the threshold's, in points at the threshold.
    with np.errstate(all="ignore"):
        rarity = np.log1p(-np.clip(np.nan_to_num(score), 0.0, 1.0 - 1e-12))
        gained = 2.0 * rarity / np.log1p(-params.threshold) - 1.0
    spent = spent_share(st, params)
    enter = needed(spent, params)
    # No one point gives more than half: a single glitch (a counter reset's spike) never
    # raises the alarm alone. Measured: nab event F1 +0.016 over an uncapped sum.
    gained = weight * np.minimum(gained, enter / 2.0)
    # Capped at `enter`: what a long spell just under the threshold gathered is drained by
    # quiet points as soon as any other evidence would be.
    evidence = np.where(known, np.clip(st.evidence + gained, 0.0, enter), st.evidence)
    below = np.where(low, st.below + weight, np.where(high, 0.0, st.below))
    cleared = st.alarm & (below >= params.leave - 1e-9)
    # Raised on a point at or above the threshold: one just under it would be cleared by
    # `leave` at once, and a node that stays just under would flap (measured: asd -0.02).
    alarm = (st.alarm | (high & (evidence >= enter))) & ~cleared
    if params.budget_half_life > 0:  # time-weighted: a cycle counts for its share of a point
        keep = 0.5 ** (weight * params.step / params.budget_half_life)
        spent = np.where(known, keep * spent + (1.0 - keep) * alarm, spent)
    return replace(st, evidence=np.where(cleared, 0.0, evidence), below=below, alarm=alarm,
                   spent=spent)


def spent_share(st: AlarmState, params: AnomalyParams) -> Array:
    """Each node's recent share of time alarming; the budget itself where not yet known."""
    if len(st.spent) != len(st.nodes):  # a state from before the budget was kept
        return np.full(len(st.nodes), params.target_alarm_rate)
    return np.where(np.isnan(st.spent), params.target_alarm_rate, st.spent)


def needed(spent: Array, params: AnomalyParams) -> Array:
    """The evidence each node needs now: `enter` scaled by the share of its budget it spent
    (to the power `BUDGET_EXPONENT`), between a fifth and five times `enter`; `enter` itself
    with `budget_half_life` 0."""
    if params.budget_half_life <= 0:
        return np.full(spent.shape, params.enter)
    return np.clip(params.enter * (spent / params.target_alarm_rate) ** BUDGET_EXPONENT,
                   params.enter * ENTER_RANGE[0], params.enter * ENTER_RANGE[1])


def series_alarms(scores: Array, params: AnomalyParams) -> NDArray[np.int8]:
    """The alarm (0/1) of one entity's score series, as cycles would raise it from these
    scores (the baselines' hysteresis; sentinel's own replays its cycles: `score_series`)."""
    st = AlarmState().aligned(("entity",), 1)
    out = np.zeros(scores.shape[0], dtype=np.int8)
    for t in range(scores.shape[0]):
        st = hysteresis(scores[t: t + 1], st, params)
        out[t] = st.alarm[0]
    return out
