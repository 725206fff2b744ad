"""Anomaly scores for grey failures: a node against its own history and against its site's
peers at the same moment, combined into one calibrated score in [0, 1].

Why this shape (measured with `sentinel anomaly evaluate`, figures in docs/anomaly.md):

- Self: robust z-scores (median and MAD of the node's own training window) catch one signal
  leaving its range; a PCA fitted on those z-scores catches signals that stop moving together
  (load without CPU). Both are a few array operations per node, so 100,000 nodes score in
  well under a second. `evaluate --estimator` keeps IsolationForest (clearly worse here) and
  nearest neighbours for comparison.
- Peers: the node's z-scores against its site's median at the same moment, in units of
  their spread, so a site-wide swing is not one node's anomaly. A node that joined after
  training is compared on raw values against its peers.
- Each part's raw value is turned into "how rare was this in the calibration window" (an
  empirical CDF with an exponential tail), the rarest part counts, and that is calibrated
  once more. (Summing the parts, Fisher's rule, let a noisy PCA part hide a
  clear single-signal fault: measured worse.) The score therefore
  reads as a percentile of normal behaviour: 0.99 is exceeded 1 % of the time by healthy
  nodes, and the alarm threshold follows from a target alarm rate, without labels.
- Hysteresis: a score must stay at or above the threshold `enter` points in a row to raise
  the alarm and below it `leave` points in a row to clear it, so one noisy point does not
  alarm and one quiet point does not end an alarm.

Everything here takes arrays and returns arrays; fitting and persistence live elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from sentinel.anomaly import ESTIMATORS
from sentinel.anomaly.arrays import (
    Array,
    Calibration,
    calibration_steps,
    ewma,
    peer_z,
    robust,
    site_codes,
    smooth_step,
    tail,
)
from sentinel.core.errors import InputError
from sentinel.core.model import AnomalyReading

__all__ = [
    "ESTIMATORS",
    "AlarmState",
    "AnomalyModel",
    "AnomalyParams",
    "FitError",
    "FleetScores",
    "fit_model",
    "score_fleet",
    "series_alarms",
]


#: Fewer training steps than this and a baseline means nothing.
MIN_STEPS = 30
#: The smallest spread of the peers' z-scores: healthy nodes differ by about one.
PEER_Z_FLOOR = 1.0
#: Rows the PCA is fitted on, drawn at random from the fleet's standardized history.
PCA_ROWS = 50_000


class FitError(InputError):
    """Training data that cannot give a model (too short, no node with data)."""


@dataclass(frozen=True, slots=True)
class AnomalyParams:
    target_alarm_rate: float = 0.01
    """Fraction of healthy points allowed at or above the threshold: the label-free choice."""
    enter: int = 3
    """Points in a row at or above the threshold that raise the alarm."""
    leave: int = 1
    """Points in a row below it that clear the alarm. Measured: a longer leave only flagged
    healthy steps after each event."""
    smoothing: float = 1.0
    """Weight of the newest point in a moving average of the evidence (1: none). Measured:
    averaging delayed alarms more than it saved false ones; `enter` does that job better."""
    pca_variance: float = 0.9
    calibration_fraction: float = 0.25
    """The part of the training window held out to calibrate the scores on: two blocks, one
    in the middle and the newest, so the calibration sees more than one time of day."""
    min_peers: int = 3
    clip: float = 50.0

    @property
    def threshold(self) -> float:
        return 1.0 - self.target_alarm_rate


@dataclass(frozen=True)
class AnomalyModel:
    """What training learned; plain arrays, so it persists without pickle."""

    features: tuple[str, ...]
    nodes: tuple[str, ...]
    center: Array
    """(nodes, features): each node's median over its training window."""
    scale: Array
    """(nodes, features): each node's robust spread (1.4826 MAD, else std, else a floor)."""
    pca_mean: Array
    components: Array
    """(k, features): the PCA on standardized values; k = 0 turns that part off."""
    peer_floor: Array
    """(features,): the smallest spread the peer comparison divides by."""
    cal_self: Calibration
    cal_pca: Calibration
    cal_peer: Calibration | None
    cal_final: Calibration
    params: AnomalyParams = AnomalyParams()
    meta: Mapping[str, object] = field(default_factory=dict)

    @cached_property
    def index(self) -> dict[str, int]:
        """Node -> row, built once per model (every cycle looks nodes up in it)."""
        return {n: i for i, n in enumerate(self.nodes)}

    # -- the parts, on any rows ----------------------------------------------------------
    def standardize(self, x: Array, rows: NDArray[np.intp]) -> Array:
        """z-scores of x (m, features) against the baselines of model rows `rows` (-1: none,
        giving NaN)."""
        known = rows >= 0
        z = np.full(x.shape, np.nan)
        if known.any():
            r = rows[known]
            z[known] = np.clip((x[known] - self.center[r]) / self.scale[r],
                               -self.params.clip, self.params.clip)
        return z

    def self_parts(self, z: Array) -> tuple[Array, Array]:
        """Raw self scores: the largest |z|, and the PCA's reconstruction error."""
        with np.errstate(all="ignore"):
            zz = np.nan_to_num(z)
            worst = np.where(np.isnan(z).all(axis=1), np.nan, np.abs(zz).max(axis=1))
            if self.components.shape[0] == 0:
                return worst, np.full(z.shape[0], np.nan)
            r = zz - self.pca_mean
            resid = r - (r @ self.components.T) @ self.components
            err = np.where(np.isnan(worst), np.nan, (resid**2).sum(axis=1))
        return worst, err

    def peers(self, z: Array, x: Array, codes: NDArray[np.intp]) -> Array:
        """Against the site's peers at the same moment, on the nodes' own z-scores: a node's
        usual offset from its peers (a fuller disk) is not news, and a site-wide swing (every
        node busier) moves the median with it. A node without a baseline (joined after
        training) is compared on raw values instead."""
        pz = peer_z(z, codes, np.full(z.shape[1], PEER_Z_FLOOR), self.params.min_peers)
        new = np.isnan(z).all(axis=1)
        if new.any():
            raw = peer_z(x, codes, self.peer_floor, self.params.min_peers)
            pz[new] = raw[new]
        return pz

    def peer_part(self, pz: Array) -> Array:
        with np.errstate(all="ignore"):
            return np.where(np.isnan(pz).all(axis=1), np.nan,
                            np.abs(np.nan_to_num(pz)).max(axis=1))

    def evidence(self, z: Array, pz: Array | None) -> Array:
        """The rarest of the calibrated parts (before smoothing)."""
        worst, err = self.self_parts(z)
        total = np.maximum(tail(self.cal_self(worst)), tail(self.cal_pca(err)))
        if pz is not None and self.cal_peer is not None:
            total = np.maximum(total, tail(self.cal_peer(self.peer_part(pz))))
        known = ~np.isnan(worst)
        if pz is not None:
            known |= ~np.isnan(pz).all(axis=1)
        return np.where(known, total, np.nan)


# -- fitting -------------------------------------------------------------------------------
def fit_model(x: Array, nodes: Sequence[str], codes: NDArray[np.intp],
              features: Sequence[str], params: AnomalyParams = AnomalyParams(),
              meta: Mapping[str, object] | None = None, seed: int = 0) -> AnomalyModel:
    """Fit on history `x` (time, nodes, features); `codes` gives each node's site (-1: none).
    A `calibration_fraction` of the steps is held out to calibrate the scores on."""
    if x.ndim != 3 or x.shape[1] != len(nodes) or x.shape[2] != len(features):
        raise FitError(f"history has shape {x.shape}, expected (steps, {len(nodes)}, "
                       f"{len(features)})")
    with_data = np.flatnonzero(~np.isnan(x).all(axis=(1, 2)))
    if with_data.size < MIN_STEPS:
        raise FitError(f"{with_data.size} time steps with data in the training window; at "
                       f"least {MIN_STEPS} are needed")
    x = x[with_data[0]: with_data[-1] + 1]  # a young Prometheus has no older history
    steps = x.shape[0]
    has_data = ~np.isnan(x).all(axis=(0, 2))
    if not has_data.any():
        raise FitError("no node has any data in the training window")
    if not has_data.all():  # a node without history gets no baseline: peers only
        x, codes = x[:, has_data], codes[has_data]
        nodes = [nodes[int(i)] for i in np.flatnonzero(has_data)]
    held = calibration_steps(steps, params.calibration_fraction)
    fit_part, cal_part = x[~held], x[held]
    center, scale = robust(fit_part)
    rows = np.arange(len(nodes))
    model = AnomalyModel(tuple(features), tuple(nodes), center, scale, np.zeros(len(features)),
                         np.zeros((0, len(features))), np.zeros(len(features)),
                         Calibration.fit(np.zeros(1)), Calibration.fit(np.zeros(1)), None,
                         Calibration.fit(np.zeros(1)), params, dict(meta or {}))

    def z_of(part: Array) -> Array:
        t, n, f = part.shape
        flat = part.reshape(t * n, f)
        return model.standardize(flat, np.tile(rows, t)).reshape(t, n, f)

    zfit = z_of(fit_part).reshape(-1, len(features))
    zfit = zfit[~np.isnan(zfit).any(axis=1)]
    rng = np.random.default_rng(seed)
    if zfit.shape[0] > PCA_ROWS:
        zfit = zfit[rng.choice(zfit.shape[0], PCA_ROWS, replace=False)]
    if len(features) > 1 and zfit.shape[0] > len(features):
        # Here, not at the top: scikit-learn takes 1.8 s to import, and only training needs it
        # (every `sentinel serve` start, every CLI call would pay it).
        from sklearn.decomposition import PCA

        pca = PCA(n_components=params.pca_variance, svd_solver="full").fit(zfit)
        keep = min(pca.n_components_, len(features) - 1)
        model = replace(model, pca_mean=pca.mean_.astype(np.float64),
                        components=pca.components_[:keep].astype(np.float64))

    t_cal = cal_part.shape[0]
    zcal = z_of(cal_part).reshape(t_cal * len(nodes), -1)
    worst, err = model.self_parts(zcal)
    model = replace(model, cal_self=Calibration.fit(worst), cal_pca=Calibration.fit(err),
                    peer_floor=np.maximum(np.median(scale, axis=0), 1e-9))
    pz = None
    if _has_peers(codes, params.min_peers):
        zc = zcal.reshape(t_cal, len(nodes), -1)
        pz = np.concatenate([model.peers(zc[t], cal_part[t], codes) for t in range(t_cal)])
        model = replace(model, cal_peer=Calibration.fit(model.peer_part(pz)))
    evidence = model.evidence(zcal, pz).reshape(t_cal, len(nodes))
    smooth = ewma(evidence, params.smoothing)
    return replace(model, cal_final=Calibration.fit(smooth.ravel()))


def _has_peers(codes: NDArray[np.intp], min_peers: int) -> bool:
    c = codes[codes >= 0]
    return c.size > 0 and int(np.bincount(c).max()) >= min_peers


# -- scoring -------------------------------------------------------------------------------
@dataclass(frozen=True)
class AlarmState:
    """Per node, between cycles: the smoothed evidence and the hysteresis counters."""

    nodes: tuple[str, ...] = ()
    smooth: Array = field(default_factory=lambda: np.zeros(0))
    above: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    below: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alarm: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def aligned(self, nodes: tuple[str, ...]) -> AlarmState:
        """The same state over another node list (a new model, nodes joining or leaving)."""
        if nodes == self.nodes:
            return self
        n = len(nodes)
        new = AlarmState(nodes, np.full(n, np.nan), np.zeros(n, dtype=np.int64),
                         np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))
        if self.nodes:
            old = {name: i for i, name in enumerate(self.nodes)}
            pairs = [(i, old[name]) for i, name in enumerate(nodes) if name in old]
            if pairs:
                to, fr = (np.asarray(p) for p in zip(*pairs, strict=True))
                new.smooth[to], new.above[to] = self.smooth[fr], self.above[fr]
                new.below[to], new.alarm[to] = self.below[fr], self.alarm[fr]
        return new


def _hysteresis(score: Array, st: AlarmState, params: AnomalyParams) -> AlarmState:
    known = ~np.isnan(score)
    high = known & (score >= params.threshold)
    low = known & ~high
    above = np.where(high, st.above + 1, np.where(low, 0, st.above))
    below = np.where(low, st.below + 1, np.where(high, 0, st.below))
    alarm = (st.alarm | (above >= params.enter)) & ~(st.alarm & (below >= params.leave))
    return replace(st, above=above, below=below, alarm=alarm)


def series_alarms(scores: Array, params: AnomalyParams) -> NDArray[np.int8]:
    """The alarm (0/1) of one entity's score series, exactly as cycles would raise it."""
    st = AlarmState().aligned(("entity",))
    out = np.zeros(scores.shape[0], dtype=np.int8)
    for t in range(scores.shape[0]):
        st = _hysteresis(scores[t: t + 1], st, params)
        out[t] = st.alarm[0]
    return out


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
        return AnomalyReading(float(self.score[i]), bool(self.alarm[i]), self.threshold,
                              tuple(top))

    def alarms(self) -> dict[str, AnomalyReading]:
        out = {}
        for i in np.flatnonzero(self.alarm):
            r = self.reading(self.nodes[i])
            if r is not None:
                out[self.nodes[i]] = r
        return out


def score_fleet(model: AnomalyModel, nodes: tuple[str, ...], sites: Sequence[str],
                x: Array, state: AlarmState) -> tuple[FleetScores, AlarmState]:
    """Score this cycle's feature matrix `x` (len(nodes), features). Nodes missing from the
    model (joined after training) are compared with their peers only."""
    idx = model.index
    rows = np.fromiter((idx.get(n, -1) for n in nodes), dtype=np.intp, count=len(nodes))
    _, codes = site_codes(sites)
    z = model.standardize(x, rows)
    pz = model.peers(z, x, codes)
    evidence = model.evidence(z, pz)
    st = state.aligned(nodes)
    smooth = smooth_step(st.smooth, evidence, model.params.smoothing)
    score = np.where(np.isnan(evidence), np.nan, model.cal_final(smooth))
    st = _hysteresis(score, replace(st, smooth=smooth), model.params)
    return (FleetScores(nodes, tuple(sites), score, st.alarm, x, z, pz, model.features,
                        model.params.threshold), st)


def score_series(model: AnomalyModel, x: Array) -> Array:
    """One entity's scores over time (time, features), as successive cycles would give them
    (no peers: the benchmark layout has none)."""
    z = model.standardize(x, np.zeros(x.shape[0], dtype=np.intp))
    evidence = model.evidence(z, None)
    smooth = ewma(evidence[:, None], model.params.smoothing)[:, 0]
    return model.cal_final(smooth)
