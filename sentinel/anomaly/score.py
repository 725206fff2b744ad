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
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray
from sklearn.decomposition import PCA

from sentinel.core.model import AnomalyReading, SiteView

__all__ = [
    "ESTIMATORS",
    "AlarmState",
    "AnomalyModel",
    "AnomalyParams",
    "Calibration",
    "FitError",
    "FleetScores",
    "feature_matrix",
    "fit_model",
    "score_fleet",
    "series_alarms",
    "site_codes",
]

Array = NDArray[np.float64]

ESTIMATORS = ("combined", "zscore", "pca", "iforest", "knn")
#: Fewer training steps than this and a baseline means nothing.
MIN_STEPS = 30
#: The smallest spread of the peers' z-scores: healthy nodes differ by about one.
PEER_Z_FLOOR = 1.0
#: Rows the PCA is fitted on, drawn at random from the fleet's standardized history.
PCA_ROWS = 50_000


class FitError(ValueError):
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


@dataclass(frozen=True, slots=True)
class Calibration:
    """Raw value -> fraction of the calibration sample below it, increasing above the sample's
    maximum too (an exponential tail), so ranking survives far out until the float rounds
    to 1.0."""

    quantiles: Array
    spread: float

    LEVELS = 512

    @classmethod
    def fit(cls, sample: Array) -> Calibration:
        s = sample[np.isfinite(sample)]
        if s.size == 0:
            return cls(np.zeros(1), 1.0)
        levels = (np.arange(cls.LEVELS) + 1) / (cls.LEVELS + 1)
        q = np.quantile(s, levels)
        # The tail above the sample: the exponential through the 90th percentile and the
        # maximum, so a value far out is far rarer, not merely "above everything seen".
        i90 = int(0.9 * cls.LEVELS)
        decades = math.log((1 - levels[i90]) / (1 - levels[-1]))
        spread = max(float(q[-1] - q[i90]) / decades, 1e-6 * (abs(float(q[-1])) + 1.0))
        return cls(np.maximum.accumulate(q), spread)

    def __call__(self, x: Array) -> Array:
        q = self.quantiles
        n = q.size
        levels = (np.arange(n) + 1) / (n + 1)
        p = np.interp(x, q, levels)
        over = x > q[-1]
        if over.any():
            p[over] = 1.0 - (1.0 - levels[-1]) * np.exp(-(x[over] - q[-1]) / self.spread)
        p[np.isnan(x)] = np.nan
        return p


def _tail(p: Array) -> Array:
    """-log(1 - p): how rare a calibrated part is, on an unbounded scale; 0 where missing."""
    return np.nan_to_num(-np.log1p(-np.clip(p, 0.0, 1.0 - 1e-12)), nan=0.0)


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
        total = np.maximum(_tail(self.cal_self(worst)), _tail(self.cal_pca(err)))
        if pz is not None and self.cal_peer is not None:
            total = np.maximum(total, _tail(self.cal_peer(self.peer_part(pz))))
        known = ~np.isnan(worst)
        if pz is not None:
            known |= ~np.isnan(pz).all(axis=1)
        return np.where(known, total, np.nan)


def peer_z(x: Array, codes: NDArray[np.intp], floor: Array, min_peers: int) -> Array:
    """Each row's distance from its group's median, in the group's robust spread, feature by
    feature; NaN where the group has fewer than `min_peers` values. Fully vectorized: the
    groups are padded into one (groups, largest, features) block and sorted once."""
    n, f = x.shape
    out = np.full((n, f), np.nan)
    ok = codes >= 0
    if not ok.any():
        return out
    idx = np.flatnonzero(ok)
    c = codes[idx]
    order = np.argsort(c, kind="stable")
    sc = c[order]
    groups = int(sc[-1]) + 1
    starts = np.searchsorted(sc, np.arange(groups))
    pos = np.arange(sc.size) - starts[sc]
    width = int(pos.max()) + 1
    block = np.full((groups, width, f), np.nan)
    block[sc, pos] = x[idx[order]]
    count = (~np.isnan(block)).sum(axis=1)

    def median(b: Array) -> Array:
        s = np.sort(b, axis=1)  # NaN last
        lo = np.clip((count - 1) // 2, 0, width - 1)[:, None, :]
        hi = np.clip(count // 2, 0, width - 1)[:, None, :]
        return ((np.take_along_axis(s, lo, 1) + np.take_along_axis(s, hi, 1)) / 2)[:, 0, :]

    med = median(block)
    mad = median(np.abs(block - med[:, None, :])) * 1.4826
    spread = np.maximum(np.nan_to_num(mad), floor)
    z = (x[idx] - med[c]) / spread[c]
    z[count[c] < min_peers] = np.nan
    out[idx] = z
    return out


# -- fitting -------------------------------------------------------------------------------
def _robust(x: Array) -> tuple[Array, Array]:
    """Median and spread per node and feature over time (axis 0), ignoring missing points."""
    # nanmedian warns on all-NaN slices: a node without data is expected, not a problem.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        center = np.nanmedian(x, axis=0)
        mad = np.nanmedian(np.abs(x - center), axis=0) * 1.4826
        std = np.nanstd(x, axis=0)
        # A spread finer than the data's own resolution is not a spread: one container
        # restart on a node that never restarts is 1 restart away, not 10 deviations.
        gaps = np.diff(np.sort(x, axis=0), axis=0)
        resolution = np.nan_to_num(np.nanmin(np.where(gaps > 0, gaps, np.inf), axis=0),
                                   posinf=0.0)
        # A node that never moved shows no resolution: borrow the fleet's (one restart is one
        # restart on every node).
        seen = np.where(resolution > 0, resolution, np.nan)
        fleet = np.nan_to_num(np.nanmedian(seen, axis=0)) if seen.ndim == 2 else 0.0
        resolution = np.where(resolution > 0, resolution, fleet)
    floor = np.maximum(1e-3 * np.abs(np.nan_to_num(center)) + 1e-6, np.nan_to_num(resolution))
    scale = np.where(mad > 0, mad, np.where(std > 0, std, floor))
    return np.nan_to_num(center), np.maximum(np.nan_to_num(scale, nan=1.0), floor)


def _smooth_step(last: Array, v: Array, weight: float) -> Array:
    """One step of the moving average; a missing point keeps the previous value, a first
    point starts it."""
    return np.where(np.isnan(last), v, np.where(np.isnan(v), last,
                                                weight * v + (1 - weight) * last))


def _ewma(x: Array, weight: float) -> Array:
    """Smooth (time, nodes) along time, as successive cycles would."""
    out = np.empty_like(x)
    last = np.full(x.shape[1], np.nan)
    for t in range(x.shape[0]):
        last = out[t] = _smooth_step(last, x[t], weight)
    return out


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
    center, scale = _robust(fit_part)
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
    smooth = _ewma(evidence, params.smoothing)
    return replace(model, cal_final=Calibration.fit(smooth.ravel()))


def calibration_steps(steps: int, fraction: float) -> NDArray[np.bool_]:
    """Which training steps are held out: two equal blocks, ending at half and at the end."""
    n = max(5, int(steps * fraction / 2))
    held = np.zeros(steps, dtype=bool)
    held[steps // 2 - n: steps // 2] = True
    held[steps - n:] = True
    return held


def site_codes(sites: Sequence[str]) -> tuple[list[str], NDArray[np.intp]]:
    """The sites in name order, and each node's site as its position there: the groups the
    peer comparison works on."""
    names = sorted(set(sites))
    code_of = {s: i for i, s in enumerate(names)}
    return names, np.fromiter((code_of[s] for s in sites), dtype=np.intp, count=len(sites))


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
    smooth = _smooth_step(st.smooth, evidence, model.params.smoothing)
    score = np.where(np.isnan(evidence), np.nan, model.cal_final(smooth))
    st = _hysteresis(score, replace(st, smooth=smooth), model.params)
    return (FleetScores(nodes, tuple(sites), score, st.alarm, x, z, pz, model.features,
                        model.params.threshold), st)


def score_series(model: AnomalyModel, x: Array) -> Array:
    """One entity's scores over time (time, features), as successive cycles would give them
    (no peers: the benchmark layout has none)."""
    z = model.standardize(x, np.zeros(x.shape[0], dtype=np.intp))
    evidence = model.evidence(z, None)
    smooth = _ewma(evidence[:, None], model.params.smoothing)[:, 0]
    return model.cal_final(smooth)


def feature_matrix(node_sites: Mapping[str, str], views: Mapping[str, SiteView],
                   features: Sequence[str]) -> tuple[tuple[str, ...], list[str], Array]:
    """This cycle's values as (nodes, features), NaN where a site did not answer or a node
    has no value; a value counts only from the node's own site."""
    names = tuple(node_sites)
    sites = [node_sites[n] for n in names]
    idx = {n: i for i, n in enumerate(names)}
    x = np.full((len(names), len(features)), np.nan)
    for site, view in views.items():
        if not view.reachable:
            continue
        for f, fname in enumerate(features):
            values = view.features.get(fname)
            if not values:
                continue
            rows = np.fromiter((idx.get(n, -1) if node_sites.get(n) == site else -1
                                for n in values), dtype=np.intp, count=len(values))
            vals = np.fromiter(values.values(), dtype=np.float64, count=len(values))
            ok = rows >= 0
            x[rows[ok], f] = vals[ok]
    return names, sites, x
