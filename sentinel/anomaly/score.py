"""Anomaly scores for grey failures: a node against its own history and against its site's
peers at the same moment, combined into one calibrated score in [0, 1].

Why this shape (measured with `sentinel anomaly evaluate` on real servers' metrics and on the
simulator's, figures in docs/anomaly.md):

- Self, three parts on robust z-scores (the node's median and MAD): the largest |z| catches
  one signal leaving its range; the distance to the nearest of a compact reference of normal
  z-vectors (`reference_size` k-means centroids of the training window) catches a combination
  never seen in health; a PCA's reconstruction error catches signals that stop moving
  together (load without CPU). The reference ranks like nearest neighbours over the whole
  training window (which ranked best of the baselines on real data) at a fixed, small cost:
  one (nodes x reference) product per cycle.
- Peers: the node's z-scores against its site's median at the same moment, in units of
  their spread, so a site-wide swing is not one node's anomaly. A node that joined after
  training is compared on raw values against its peers.
- Each part's raw value is turned into "how rare was this in the calibration window" (an
  empirical CDF with an exponential tail), the rarest part counts, a moving average over the
  last points steadies it (`smoothing`), and that is calibrated once more. The score therefore
  reads as a percentile of normal behaviour: 0.99 is exceeded 1 % of the time by healthy
  nodes, and the alarm threshold follows from a target alarm rate, without labels.
- Alarm: evidence accumulates over points (a one-sided CUSUM on the score's rarity): each
  point adds how many decades rarer than half the threshold it is, in units of a point at the
  threshold, and the alarm is raised at a point at or above the threshold once `enter`
  points' worth has gathered: `enter` points at the threshold in a row, fewer when they are
  rarer, more when some fall just under it. A short fault with very rare points is caught that
  "`enter` in a row" missed (real servers' faults are often 7-11 steps), and a healthy blip is
  not: measured, docs/anomaly.md. It is cleared after `leave` points in a row under the
  threshold. `enter` itself is scaled per node by the share of its alarm budget it spent lately
  (alarm.py): less for a node quiet for days, more for one that alarmed all day.
- Drift (sentinel/anomaly/drift.py): a level shift that persists for `accept_after` becomes the
  node's new baseline instead of an alarm until the next training.

Everything here takes arrays and returns arrays; fitting and persistence live elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import NDArray

from sentinel.anomaly import ESTIMATORS
from sentinel.anomaly.alarm import AlarmState, hysteresis, needed, series_alarms, spent_share
from sentinel.anomaly.arrays import (
    Array,
    Calibration,
    calibration_steps,
    ewma,
    nearest,
    peer_z,
    reference_points,
    robust,
    site_codes,
    smooth_step,
    tail,
)
from sentinel.anomaly.params import AnomalyParams
from sentinel.anomaly.readings import FleetScores
from sentinel.core.errors import InputError

__all__ = [
    "ESTIMATORS",
    "AlarmState",
    "AnomalyModel",
    "AnomalyParams",
    "FitError",
    "fit_model",
    "score_fleet",
    "series_alarms",
]


#: Fewer training steps than this and a baseline means nothing.
MIN_STEPS = 30
#: The smallest spread of the peers' z-scores: healthy nodes differ by about one.
PEER_Z_FLOOR = 1.0
#: Rows the reference is fitted on, drawn at random from the fleet's standardized history.
FIT_ROWS = 50_000


class FitError(InputError):
    """Training data that cannot give a model (too short, no node with data)."""


@dataclass(frozen=True)
class AnomalyModel:
    """What training learned; plain arrays, so it persists without pickle."""

    features: tuple[str, ...]
    nodes: tuple[str, ...]
    center: Array
    """(nodes, features): each node's median over its training window."""
    scale: Array
    """(nodes, features): each node's robust spread (1.4826 MAD, else std, else a floor)."""
    reference: Array
    """(k, features): centroids of the training window's z-vectors (k = 0: that part off)."""
    pca_mean: Array
    components: Array
    """(k, features): the PCA on standardized values; k = 0 turns that part off."""
    peer_floor: Array
    """(features,): the smallest spread the peer comparison divides by."""
    cal_self: Calibration
    cal_near: Calibration
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
        """z-scores of x (m, features) against the trained baselines of model rows `rows`
        (-1: none, giving NaN)."""
        known = rows >= 0
        center = np.full(x.shape, np.nan)
        scale = np.ones(x.shape)
        center[known], scale[known] = self.center[rows[known]], self.scale[rows[known]]
        return self.z(x, center, scale)

    def z(self, x: Array, center: Array, scale: Array) -> Array:
        """z-scores against the given baselines (NaN rows: no baseline)."""
        with np.errstate(all="ignore"):
            return np.clip((x - center) / scale, -self.params.clip, self.params.clip)

    def self_parts(self, z: Array) -> tuple[Array, Array, Array]:
        """Raw self scores: the largest |z|, the distance to the nearest reference point, and
        the PCA's reconstruction error."""
        with np.errstate(all="ignore"):
            zz = np.nan_to_num(z)
            missing = np.isnan(z).all(axis=1)
            worst = np.where(missing, np.nan, np.abs(zz).max(axis=1))
            near = err = np.full(z.shape[0], np.nan)
            if self.reference.shape[0]:
                near = np.where(missing, np.nan, nearest(zz, self.reference))
            if self.components.shape[0]:
                r = zz - self.pca_mean
                resid = r - (r @ self.components.T) @ self.components
                err = np.where(missing, np.nan, (resid**2).sum(axis=1))
        return worst, near, err

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
        worst, near, err = self.self_parts(z)
        total = np.maximum(np.maximum(tail(self.cal_self(worst)), tail(self.cal_near(near))),
                           tail(self.cal_pca(err)))
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
    none = Calibration.fit(np.zeros(1))
    model = AnomalyModel(tuple(features), tuple(nodes), center, scale,
                         np.zeros((0, len(features))), np.zeros(len(features)),
                         np.zeros((0, len(features))), np.zeros(len(features)),
                         none, none, none, None, none, params, dict(meta or {}))

    def z_of(part: Array) -> Array:
        t, n, f = part.shape
        flat = part.reshape(t * n, f)
        return model.standardize(flat, np.tile(rows, t)).reshape(t, n, f)

    zfit = z_of(fit_part).reshape(-1, len(features))
    zfit = zfit[~np.isnan(zfit).any(axis=1)]
    rng = np.random.default_rng(seed)
    if zfit.shape[0] > FIT_ROWS:
        zfit = zfit[rng.choice(zfit.shape[0], FIT_ROWS, replace=False)]
    if len(features) > 1 and zfit.shape[0]:
        # One feature has no combinations to catch: |z| says all there is, and a reference of
        # its (often discrete) values made every value it lacked look rare (measured: NAB).
        model = replace(model, reference=reference_points(zfit, params.reference_size, seed))
        if params.pca and zfit.shape[0] > len(features):
            from sklearn.decomposition import PCA  # scikit-learn: 1.8 s to import, here only

            pca = PCA(n_components=params.pca_variance, svd_solver="full").fit(zfit)
            keep = min(pca.n_components_, len(features) - 1)
            model = replace(model, pca_mean=pca.mean_.astype(np.float64),
                            components=pca.components_[:keep].astype(np.float64))

    t_cal = cal_part.shape[0]
    zcal = z_of(cal_part).reshape(t_cal * len(nodes), -1)
    worst, near, err = model.self_parts(zcal)
    model = replace(model, cal_self=Calibration.fit(worst), cal_near=Calibration.fit(near),
                    cal_pca=Calibration.fit(err),
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
def score_fleet(model: AnomalyModel, nodes: tuple[str, ...], sites: Sequence[str],
                x: Array, state: AlarmState, now: float) -> tuple[FleetScores, AlarmState]:
    """Score this cycle's feature matrix `x` (len(nodes), features) at time `now` (seconds).
    Nodes missing from the model (joined after training) are compared with their peers only.
    Uses only this point and the state the previous points left: what `evaluate` replays."""
    p = model.params
    idx = model.index
    rows = np.fromiter((idx.get(n, -1) for n in nodes), dtype=np.intp, count=len(nodes))
    _, codes = site_codes(sites)
    if state.basis is not model.center:  # a new model: what drift moved was the old one's
        state = replace(state, drift=None, basis=model.center)
    st = state.aligned(nodes, len(model.features))
    dt = 0.0 if st.at is None else max(0.0, now - st.at)
    # The part of a point this cycle stands for: the first counts whole, later ones by time.
    weight = 1.0 if st.at is None else min(1.0, dt / p.step)
    assert st.drift is not None
    drift = st.drift.started(model.center, model.scale, rows)
    z = model.z(x, drift.center, drift.scale)
    pz = model.peers(z, x, codes) if _has_peers(codes, p.min_peers) else np.full(z.shape, np.nan)
    evidence = model.evidence(z, pz)
    # `smoothing` per point; a cycle of a fraction of a point moves the average as much as
    # that fraction of a point would (weight 1: exactly the per-point average).
    smooth = smooth_step(st.smooth, evidence, 1.0 - (1.0 - p.smoothing) ** weight)
    score = np.where(np.isnan(evidence), np.nan, model.cal_final(smooth))
    st = hysteresis(score, replace(st, smooth=smooth), p, weight)
    drift, rebased = drift.tracked(x, dt, p.recent_window).accepted(
        st.alarm | (~np.isnan(score) & (score >= p.threshold)), dt, p.accept_after)
    if rebased.any():  # the shift is the new normal: its alarm ends with it
        st = replace(st, alarm=st.alarm & ~rebased,
                     evidence=np.where(rebased, 0.0, st.evidence))
    st = replace(st, drift=drift, at=now)
    spent = spent_share(st, p)
    return (FleetScores(nodes, tuple(sites), score, st.alarm, x, z, pz, model.features,
                        p.threshold, rebased, st.evidence, needed(spent, p), spent), st)


def score_series(model: AnomalyModel, x: Array, step: float) -> tuple[Array, NDArray[np.int8]]:
    """One entity's scores and alarms over time (time, features), `step` seconds apart, by
    scoring it point by point as cycles would: each point sees only the points before it
    (no peers: the benchmark layout has none)."""
    model = replace(model, params=replace(model.params, step=step))
    st = AlarmState()
    names, sites = ("entity",), ["-"]
    scores = np.empty(x.shape[0])
    alarms = np.zeros(x.shape[0], dtype=np.int8)
    for t in range(x.shape[0]):
        fs, st = score_fleet(model, names, sites, x[t: t + 1], st, t * step)
        scores[t], alarms[t] = fs.score[0], fs.alarm[0]
    return scores, alarms
