"""Rollout analysis and decisions as values: is a new revision worse than the stable one, and
what to do about it.

The verdict per metric is a one-sided Mann-Whitney rank test (are the new pods' samples larger
than the stable pods'?) *and* an effect-size margin on the medians: a difference must be both
unlikely by chance and big enough to matter. Rank statistics ignore how noisy a version is, and
the margin keeps a significant but trivial difference from rolling anything back.

Missing evidence never condemns: no samples, too few, a failed query or a window shorter than
`min_window` give **hold**, which never rolls back (it alerts once it lasts past a deadline).

Pure: samples, workload values and `now` come in; verdicts and actions go out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from sentinel.core.kinds import RolloutKind, RolloutState

__all__ = [
    "Analysis",
    "AnalysisParams",
    "MetricResult",
    "MetricSpec",
    "Revision",
    "RolloutAction",
    "RolloutKind",
    "RolloutState",
    "Verdict",
    "Workload",
    "analyse",
    "decide_rollouts",
    "judge_metric",
    "rank_test",
]


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    margin: float
    """The new median must exceed the stable one by more than this (absolute) to fail..."""
    relative: float = 0.0
    """...and by more than this fraction of the stable median."""


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    alpha: float = 0.01
    min_samples: int = 10
    """Per version and metric."""
    min_window: float = 60.0
    """Seconds since the new revision's first pod before any verdict but hold."""
    overlap: float = 1.0
    """How many samples share each one's data: a rate over `rate_window` sampled every `step`
    counts the same requests in `rate_window / step` samples in a row. The rank test widens its
    variance by this much (`rank_test`)."""


@dataclass(frozen=True, slots=True)
class MetricResult:
    name: str
    verdict: Verdict
    reason: str
    n_new: int = 0
    n_stable: int = 0
    median_new: float | None = None
    median_stable: float | None = None
    threshold: float | None = None
    """How far above the stable median the new one must be to fail."""
    p: float | None = None
    effect: float | None = None
    """P(new sample > stable sample), ties half: 0.5 is no difference."""

    def record(self) -> dict[str, object]:
        return {"metric": self.name, "verdict": self.verdict.value, "reason": self.reason,
                "n_new": self.n_new, "n_stable": self.n_stable,
                "median_new": self.median_new, "median_stable": self.median_stable,
                "threshold": self.threshold, "p": self.p, "effect": self.effect}


@dataclass(frozen=True, slots=True)
class Analysis:
    verdict: Verdict
    reason: str
    window: float
    metrics: tuple[MetricResult, ...] = ()

    def record(self) -> dict[str, object]:
        return {"verdict": self.verdict.value, "reason": self.reason,
                "window_seconds": round(self.window, 1),
                "metrics": [m.record() for m in self.metrics]}


def rank_test(new: Iterable[float], stable: Iterable[float],
              overlap: float = 1.0) -> tuple[float, float]:
    """One-sided Mann-Whitney U (new stochastically larger than stable), normal approximation
    with tie and continuity corrections. Returns (p, effect); the approximation is fair from
    about ten samples a side, which `min_samples` enforces.

    `overlap`: samples of a rate whose window spans `overlap` steps are not independent (each
    request is counted in that many samples in a row); the test counted them as independent and
    was overconfident: at the shipped 30 s window and 10 s step, 7 % of healthy comparisons
    came out below `alpha` 0.01 (a simulation of bursty traffic, tests/test_rollouts.py). With
    neighbours correlated by the share of the window they have in common, the variance of a
    sum over them is `overlap` times the independent one; the U statistic's, about as much."""
    x, y = np.fromiter(new, float), np.fromiter(stable, float)
    n1, n2 = len(x), len(y)
    both = np.concatenate([x, y])
    # average ranks over ties: a group of equal values takes the mean of the ranks it spans
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = ((ends - counts + 1 + ends) / 2)[inverse]
    tie_term = float((counts.astype(float) ** 3 - counts).sum())
    u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2
    effect = u / (n1 * n2)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) * max(1.0, overlap)
    if var <= 0:
        return 1.0, effect  # every sample equal: no evidence either way
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2)), effect


def judge_metric(spec: MetricSpec, new: Sequence[float], stable: Sequence[float],
                 params: AnalysisParams) -> MetricResult:
    n1, n2 = len(new), len(stable)
    if n1 < params.min_samples or n2 < params.min_samples:
        return MetricResult(spec.name, Verdict.HOLD,
                            f"too few samples: {n1} new, {n2} stable (need "
                            f"{params.min_samples} each)", n1, n2)
    # A pass says the data could have failed and did not: with windows that overlap, ten
    # samples a side are about three samples' worth, and not even a wholly worse version
    # would reach `alpha`.
    best, _ = rank_test(range(n2, n2 + n1), range(n2), params.overlap)
    if best >= params.alpha:
        return MetricResult(spec.name, Verdict.HOLD,
                            f"too few samples to tell: {n1} new, {n2} stable, each rate "
                            f"window spanning {params.overlap:g} samples; even every new one "
                            f"worse would give p={best:.2g} (alpha {params.alpha:g})", n1, n2)
    m1, m2 = float(np.median(new)), float(np.median(stable))
    threshold = max(spec.margin, spec.relative * abs(m2))
    p, effect = rank_test(new, stable, params.overlap)
    numbers = (f"median {m1:.4g} new vs {m2:.4g} stable (fails above +{threshold:.3g}), "
               f"p={p:.2g}, P(new>stable)={effect:.2f}, {n1}/{n2} samples")
    if p < params.alpha and m1 - m2 > threshold:
        return MetricResult(spec.name, Verdict.FAIL, f"worse: {numbers}", n1, n2, m1, m2,
                            threshold, p, effect)
    why = "no significant difference" if p >= params.alpha else "difference within the margin"
    return MetricResult(spec.name, Verdict.PASS, f"{why}: {numbers}", n1, n2, m1, m2,
                        threshold, p, effect)


def analyse(specs: Sequence[MetricSpec],
            samples: Mapping[str, tuple[Sequence[float], Sequence[float]]],
            errors: Mapping[str, str], window: float, params: AnalysisParams) -> Analysis:
    """`samples[metric] = (new, stable)`; `errors[metric]` why a metric has none. A failed
    metric fails the revision only when no metric's data is missing: with part of the evidence
    unreadable, the verdict is hold (the rest may be exactly what would clear it)."""
    results = []
    for spec in specs:
        if spec.name in errors:
            results.append(MetricResult(spec.name, Verdict.HOLD,
                                        f"no data: {errors[spec.name]}"))
            continue
        new, stable = samples.get(spec.name, ((), ()))
        results.append(judge_metric(spec, new, stable, params))
    held = [m for m in results if m.verdict is Verdict.HOLD]
    failed = [m for m in results if m.verdict is Verdict.FAIL]
    if held:
        return Analysis(Verdict.HOLD, "; ".join(f"{m.name}: {m.reason}" for m in held), window,
                        tuple(results))
    if window < params.min_window:
        return Analysis(Verdict.HOLD, f"analysis window {window:.0f}s of "
                        f"{params.min_window:.0f}s", window, tuple(results))
    if failed:
        return Analysis(Verdict.FAIL, "; ".join(f"{m.name} {m.reason}" for m in failed),
                        window, tuple(results))
    return Analysis(Verdict.PASS, "every metric within its margin", window, tuple(results))


# -- decisions ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Revision:
    hash: str
    number: int
    version: str | None
    template: Mapping[str, object] = field(compare=False, repr=False)
    created: float | None = None


@dataclass(frozen=True, slots=True)
class Workload:
    """One node group's workload as the guard sees it; `record` is what sentinel last wrote on
    it (annotation), `hold` the hold it put on it for a sibling's failure."""

    kind: str
    namespace: str
    name: str
    app: str
    paused: bool
    current: Revision | None
    previous: Revision | None
    """The revision before the current one: what a rollback restores."""
    desired: int
    updated: int
    settled: bool
    """The controller has seen the latest spec and every pod runs the current revision."""
    record: Mapping[str, object] | None = None
    hold: Mapping[str, object] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def rolled_back(self) -> bool:
        """The current template is the one sentinel rolled back to."""
        r = self.record or {}
        return (r.get("state") == "rolled-back" and self.current is not None
                and r.get("to") == self.current.hash)

    @property
    def failed_here(self) -> bool:
        """Sentinel decided to roll back this revision and has not finished (a restart)."""
        r = self.record or {}
        return (r.get("state") == "failed" and self.current is not None
                and r.get("revision") == self.current.hash)


@dataclass(frozen=True, slots=True)
class RolloutAction:
    kind: RolloutKind
    workload: Workload
    reason: str
    to: Revision | None = None
    cause: str = ""
    """For a hold: the workload whose failure holds this one."""


def decide_rollouts(workloads: Sequence[Workload], verdicts: Mapping[str, Analysis],
                    done: frozenset[str] = frozenset()) -> list[RolloutAction]:
    """Actions for failed verdicts (and rollbacks a previous run left half done): roll the
    workload back; hold every sibling of the same app that has not finished its rollout and
    is not held yet. `done` holds `rollback:<key>` and `hold:<key>` for actions this process
    already took without a trace in the cluster (dry-run)."""
    actions: list[RolloutAction] = []
    failing: dict[str, list[tuple[Workload, str]]] = {}
    for w in workloads:
        a = verdicts.get(w.key)
        if w.failed_here:
            reason = str((w.record or {}).get("reason") or "failed analysis")
        elif a is not None and a.verdict is Verdict.FAIL:
            reason = a.reason
        else:
            continue
        if f"{RolloutKind.ROLLBACK}:{w.key}" in done or w.previous is None:
            continue
        actions.append(RolloutAction(RolloutKind.ROLLBACK, w, reason, to=w.previous))
        failing.setdefault(w.app, []).append((w, reason))
    for app, fails in failing.items():
        cause = fails[0][0]
        version = cause.current.version if cause.current else None
        failed = {f.key for f, _ in fails}
        for s in workloads:
            if s.app != app or s.key in failed or s.hold is not None or \
                    f"{RolloutKind.HOLD}:{s.key}" in done:
                continue
            if s.settled and s.current is not None and s.current.version == version:
                continue  # finished rolling out this version already: not ours to stop now
            actions.append(RolloutAction(
                RolloutKind.HOLD, s, f"{cause.kind} {cause.key} of the same app failed analysis of "
                f"version {version}; this node group is held before it rolls it out",
                cause=cause.key))
    return actions
