"""The array operations the anomaly score is built of: calibration of a raw part into a
percentile, robust centre and spread, the peer comparison, moving averages, the feature matrix
of one cycle. Arrays in, arrays out."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sentinel.core.model import SiteView

__all__ = ["Array", "Calibration", "calibration_steps", "ewma", "feature_matrix", "nearest",
           "peer_z", "reference_points", "robust", "site_codes", "smooth_step", "tail"]

#: Rows per block in `nearest`: a (block x reference) distance matrix, not (all x reference).
NEAREST_BLOCK = 16_384

Array = NDArray[np.float64]


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


def tail(p: Array) -> Array:
    """-log(1 - p): how rare a calibrated part is, on an unbounded scale; 0 where missing."""
    return np.nan_to_num(-np.log1p(-np.clip(p, 0.0, 1.0 - 1e-12)), nan=0.0)


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


def reference_points(z: Array, size: int, seed: int) -> Array:
    """A compact reference of normal z-vectors: `size` k-means centroids (all rows if fewer).
    Nearest-neighbour distance to the whole training window ranked best of the baselines on
    real data, but it needs that window at every cycle; 64 centroids rank as well (measured,
    docs/anomaly.md) and cost one small matrix product."""
    if z.shape[0] <= size:
        return z.copy()
    # Here, not at the top: scikit-learn takes 1.8 s to import, and only training needs it.
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=size, n_init=1, max_iter=50, random_state=seed).fit(z)
    return np.asarray(km.cluster_centers_, dtype=np.float64)


def nearest(z: Array, reference: Array) -> Array:
    """Euclidean distance from each row of z (no NaN) to its nearest reference row, in blocks
    so that 100,000 rows never make a 100,000 x reference matrix at once."""
    out = np.empty(z.shape[0])
    ref2 = (reference**2).sum(axis=1)
    for start in range(0, z.shape[0], NEAREST_BLOCK):
        b = z[start: start + NEAREST_BLOCK]
        near = np.argmin(ref2[None, :] - 2.0 * (b @ reference.T), axis=1)
        # The distance itself from the difference, not the expansion: its rounding (1e-10)
        # would make a value the reference holds exactly look a little unusual.
        out[start: start + b.shape[0]] = np.sqrt(((b - reference[near]) ** 2).sum(axis=1))
    return out


def robust(x: Array) -> tuple[Array, Array]:
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


def smooth_step(last: Array, v: Array, weight: float) -> Array:
    """One step of the moving average; a missing point keeps the previous value, a first
    point starts it."""
    return np.where(np.isnan(last), v, np.where(np.isnan(v), last,
                                                weight * v + (1 - weight) * last))


def ewma(x: Array, weight: float) -> Array:
    """Smooth (time, nodes) along time, as successive cycles would."""
    out = np.empty_like(x)
    last = np.full(x.shape[1], np.nan)
    for t in range(x.shape[0]):
        last = out[t] = smooth_step(last, x[t], weight)
    return out


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
