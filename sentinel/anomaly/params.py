"""What an operator tunes in the anomaly score and its alarm, with what each was measured
to do (docs/anomaly.md). Plain values: a trained model keeps them in its metadata."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AnomalyParams"]


@dataclass(frozen=True, slots=True)
class AnomalyParams:
    target_alarm_rate: float = 0.01
    """Fraction of healthy points allowed at or above the threshold: the label-free choice."""
    enter: float = 10.0
    """Evidence that raises the alarm, in points at the threshold: at the default target of
    1 %, 10 points at 1 in 100, 5 at 1 in 1,000, 2 at 1 in ten million. A point adds
    2 log(1 - score) / log(1 - threshold) - 1 (so one at 1 in 10 adds nothing and a quieter
    one takes some back; never below zero). Measured against 3 points in a row, replayed:
    event F1 asd 0.441 -> 0.453, nab 0.581 -> 0.629, the simulator's mean 0.904 -> 0.913
    (docs/anomaly.md). One point adds at most half of `enter`: two points at least, however
    rare."""
    budget_half_life: float = 2 * 86400.0
    """Seconds: the half-life of each node's recent share of time alarming, against which its
    `enter` is scaled (alarm.py); 0 keeps `enter` fixed. Measured, replayed: event F1 asd
    0.453 -> 0.530, nab 0.629 -> 0.654, the simulator -0.002 to +0.005 on its four datasets
    (and within 0.001 on two of ten days); a day's half-life gave asd 0.540 but the simulator
    -0.006, three days asd 0.511 (docs/anomaly.md)."""
    leave: int = 1
    """Points in a row below it that clear the alarm. Measured: a longer leave only flagged
    healthy steps after each event."""
    smoothing: float = 0.7
    """Weight of the newest point in a moving average of the evidence (1: none). Measured on
    real data: 0.7 ranks better (AUPRC) and alarms less on both real datasets; 0.5 steadied
    more but delayed alarms on the simulator's short faults."""
    reference_size: int = 64
    """Centroids of normal z-vectors per model. Measured on real data: 64 rank as well as
    nearest neighbours over the whole training window; 32 ranked lower."""
    pca: bool = True
    """The PCA part. Measured: it adds little to the ranking on real data (asd AUPRC +0.003)
    but a live cpu-hog (CPU and load up together) alarmed on 73 % of its steps without it."""
    pca_variance: float = 0.9
    """The share of the variance the PCA keeps."""
    accept_after: float = 6 * 3600.0
    """Seconds a shift must keep the score at or above the threshold (leaky: time below counts
    back) before it is taken as the node's new baseline."""
    recent_window: float = 3600.0
    """Seconds: the exponential average that tracks a node's recent level and spread."""
    calibration_fraction: float = 0.25
    """The part of the training window held out to calibrate the scores on: two blocks, one
    in the middle and the newest, so the calibration sees more than one time of day."""
    min_peers: int = 3
    clip: float = 50.0
    step: float = 60.0
    """Seconds one point stands for: the training step. The alarm's evidence, `leave` and the
    moving average count in these, so a cycle every 10 s on a model trained at 60 s steps
    gathers evidence as fast in time as the replay (`evaluate`) does point by point; counted
    per cycle, the same feature value, seen again by six cycles, was six points, and one
    glitch raised the alarm alone."""

    @property
    def threshold(self) -> float:
        return 1.0 - self.target_alarm_rate
