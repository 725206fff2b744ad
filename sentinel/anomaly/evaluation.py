"""How good an anomaly score is, against labels: the figures `sentinel anomaly evaluate`
reports, per entity of a benchmark-layout dataset.

sentinel's own estimator is replayed as the live loop runs it: fitted on train only, then the
test scored point by point in order, each point seeing only the points before it (the baseline's
drift, the smoothing, the hysteresis), never a label and never a later point. The baselines are
scored on the trained baseline, with the same calibration and hysteresis.

- AUPRC (average precision): the whole ranking, no threshold.
- Best point F1, and the event-based F1 (point precision x event recall; an event is found
  when any of its points is flagged), each at the threshold that maximizes it: what a perfect
  choice of threshold would give, an upper bound no deployment has.
- At the model's own label-free threshold (with its hysteresis): point F1, event F1, alarm rate
  (fraction of flagged steps) and the median delay, in steps, from an event's start to its first
  flagged step. This is what an SRE would live with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.neighbors import NearestNeighbors

from sentinel.anomaly.arrays import Calibration, calibration_steps
from sentinel.anomaly.dataset import DatasetError
from sentinel.anomaly.score import (
    ESTIMATORS,
    AnomalyModel,
    AnomalyParams,
    fit_model,
    score_series,
    series_alarms,
)

__all__ = ["EntityResult", "evaluate_entity", "events", "summarize"]

Array = NDArray[np.float64]
DEFAULT = AnomalyParams()


def events(labels: NDArray[np.int8]) -> list[tuple[int, int]]:
    """Runs of 1s as (start, end) with end exclusive."""
    padded = np.concatenate([[0], labels.astype(np.int8), [0]])
    d = np.diff(padded)
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(),
                    strict=True))


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _at(labels: NDArray[np.int8], flagged: NDArray[np.int8],
        evs: Sequence[tuple[int, int]]) -> tuple[float, float, float | None]:
    """Point F1, event F1 and the median detection delay of one 0/1 prediction."""
    tp = int(np.sum((flagged == 1) & (labels == 1)))
    fp = int(np.sum((flagged == 1) & (labels == 0)))
    fn = int(np.sum((flagged == 0) & (labels == 1)))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    delays = []
    for s, e in evs:
        hit = np.flatnonzero(flagged[s:e])
        if hit.size:
            delays.append(int(hit[0]))
    ev_rec = len(delays) / len(evs) if evs else 0.0
    return _f1(prec, rec), _f1(prec, ev_rec), float(np.median(delays)) if delays else None


@dataclass(frozen=True)
class EntityResult:
    entity: str
    steps: int
    events: int
    auprc: float
    f1_best: float
    fc1_best: float
    f1_own: float
    fc1_own: float
    alarm_rate_own: float
    delay_own: float | None
    """Median steps from an event's start to its first alarm; None if none was found."""

    def record(self) -> dict[str, object]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in asdict(self).items()}


def _best(labels: NDArray[np.int8], scores: Array,
          evs: Sequence[tuple[int, int]]) -> tuple[float, float]:
    prec, rec, thr = precision_recall_curve(labels, scores)
    p, r = prec[:-1], rec[:-1]
    with np.errstate(all="ignore"):
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    emax = np.sort([scores[s:e].max() for s, e in evs])
    ev_rec = 1.0 - np.searchsorted(emax, thr, side="left") / len(emax)
    with np.errstate(all="ignore"):
        fc1 = np.where(p + ev_rec > 0, 2 * p * ev_rec / (p + ev_rec), 0.0)
    return float(f1.max(initial=0.0)), float(fc1.max(initial=0.0))


def _scores(name: str, train: Array, test: Array, estimator: str, params: AnomalyParams,
            seed: int, step: float) -> tuple[Array, NDArray[np.int8]]:
    """Fit on train only; score test. Baselines share the calibration and alarm logic, so
    the comparison is of the estimators alone."""
    if estimator == "pca" and train.shape[1] < 2:
        raise DatasetError(f"{name}: 1 feature; the pca baseline reconstructs one feature from "
                           "the others and needs at least 2 (use zscore on one feature)")
    model = fit_model(train[:, None, :], ["entity"], np.array([-1]),
                      [f"f{i}" for i in range(train.shape[1])], params, seed=seed)
    if estimator == "combined":
        return score_series(model, test, step)
    scores = _baseline(model, train, test, estimator, params, seed)
    return scores, series_alarms(scores, params)


def _baseline(model: AnomalyModel, train: Array, test: Array, estimator: str,
              params: AnomalyParams, seed: int) -> Array:
    rows = np.zeros(test.shape[0], dtype=np.intp)
    z_test = model.standardize(test, rows)
    if estimator in ("zscore", "pca"):  # one of sentinel's own parts, alone
        worst, _, err = model.self_parts(z_test)
        return model.cal_self(worst) if estimator == "zscore" else model.cal_pca(err)
    held = calibration_steps(train.shape[0], params.calibration_fraction)
    fit_z = model.standardize(train[~held], np.zeros(int((~held).sum()), dtype=np.intp))
    cal_z = model.standardize(train[held], np.zeros(int(held.sum()), dtype=np.intp))
    if estimator == "iforest":
        forest = IsolationForest(n_estimators=200, random_state=seed).fit(fit_z)
        cal = Calibration.fit(-forest.score_samples(cal_z))
        return cal(-forest.score_samples(z_test))
    if estimator == "knn":
        nn = NearestNeighbors(n_neighbors=5).fit(fit_z)
        cal = Calibration.fit(nn.kneighbors(cal_z)[0].mean(axis=1))
        return cal(nn.kneighbors(z_test)[0].mean(axis=1))
    raise ValueError(f"no estimator {estimator!r}; estimators: {', '.join(ESTIMATORS)}")


def evaluate_entity(name: str, train: Array, test: Array, labels: NDArray[np.int8],
                    estimator: str = "combined", params: AnomalyParams = DEFAULT,
                    seed: int = 0, step: float = 60.0
                    ) -> tuple[EntityResult, Array, NDArray[np.int8]]:
    """`step`: seconds between rows, for what the live loop counts in time (drift)."""
    scores, alarms = _scores(name, train, test, estimator, params, seed, step)
    evs = events(labels)
    f1_own, fc1_own, delay = _at(labels, alarms, evs)
    if evs:
        auprc = float(average_precision_score(labels, scores))
        f1_best, fc1_best = _best(labels, scores, evs)
    else:  # nothing to find: only the alarm rate means anything
        auprc = f1_best = fc1_best = float("nan")
        f1_own = fc1_own = float("nan")
    return (EntityResult(name, int(test.shape[0]), len(evs), auprc, f1_best, fc1_best, f1_own,
                         fc1_own, float(alarms.mean()), delay), scores, alarms)


def summarize(results: Sequence[EntityResult]) -> dict[str, float | None]:
    """Means over entities; entities without events count only in the alarm rate."""
    def mean(key: str) -> float | None:
        vals = [getattr(r, key) for r in results]
        vals = [v for v in vals if v is not None and not np.isnan(v)]
        return float(np.mean(vals)) if vals else None

    return {k: mean(k) for k in ("auprc", "f1_best", "fc1_best", "f1_own", "fc1_own",
                                 "alarm_rate_own", "delay_own")}
