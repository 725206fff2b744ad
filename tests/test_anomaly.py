"""Anomaly models: scores, the label-free threshold, persistence and its refusals, the
decision's limits (never level 2), `evaluate` on a simulator dataset, and the live path
against real Prometheus and the emulator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import generate_latest
from sklearn.metrics import average_precision_score

from sentinel.anomaly.alarm import hysteresis, needed, spent_share
from sentinel.anomaly.arrays import Calibration
from sentinel.anomaly.keeper import AnomalyKeeper
from sentinel.anomaly.notes import alarm_notes
from sentinel.anomaly.score import (
    AlarmState,
    AnomalyModel,
    AnomalyParams,
    FitError,
    fit_model,
    score_fleet,
    series_alarms,
)
from sentinel.anomaly.store import ModelRefused, load_model, save_model
from sentinel.config.loading import parse_config
from sentinel.core.decide import DecideParams, PolicyState, decide
from sentinel.core.detect import DetectParams, detect
from sentinel.core.model import (
    ANOMALY_KEY,
    AnomalyReading,
    Level,
    NodeInfo,
    NodeName,
    Ready,
    SiteName,
    SiteView,
    Snapshot,
)
from sentinel.core.ruleset import RuleSet
from sentinel.sim.signals import FEATURES, GRAY_FAULTS, GrayFault, NodeSignals

from .conftest import DOMAIN, Harness, our_taints, poll

STEP = 10.0
#: The histories here are STEP seconds apart, and so is one point of every model fitted on them.
PARAMS = AnomalyParams(step=STEP)
#: Training covers two of the fleet's daily rhythms, as a real training window should.
DAY = 300 * STEP
SITES, PER_SITE = 3, 5
#: The feature a grey fault shows in first.
SHOWS_IN = {"disk-slow": {"disk_latency"}, "memory-leak": {"memory"},
            "nic-errors": {"net_errors", "retransmits"}, "cpu-hog": {"cpu", "load"},
            "restart-loop": {"restarts"}}


def history(steps: int, faults: dict[int, list[GrayFault]] | None = None,
            seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(steps, nodes, features) from the simulator's signal model: 3 sites of 5 nodes."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps) * STEP
    cols, names, codes = [], [], []
    for s in range(SITES):
        for k in range(PER_SITE):
            i = s * PER_SITE + k
            sig = NodeSignals(seed=seed * 1000 + i, site_seed=s, day=DAY,
                              faults=list((faults or {}).get(i, [])))
            cols.append(sig.features(t, rng, STEP))
            names.append(f"n{i:02d}")
            codes.append(s)
    return np.stack(cols, axis=1), names, np.asarray(codes, dtype=np.intp)


def run(model: AnomalyModel, x: np.ndarray, names: list[str], codes: np.ndarray
        ) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Score each step as successive cycles would: (steps, nodes) scores and alarms."""
    st = AlarmState()
    sites = [f"site-{c}" for c in codes]
    scores, alarms, last = [], [], []
    for t in range(x.shape[0]):
        sc, st = score_fleet(model, tuple(names), sites, x[t], st, t * STEP)
        scores.append(sc.score)
        alarms.append(sc.alarm.copy())
        last = [sc]
    return np.asarray(scores), np.asarray(alarms), last


TRAIN, TEST = 600, 300


@pytest.mark.parametrize("kind", GRAY_FAULTS)
def test_a_grey_failure_scores_above_every_healthy_node_and_names_its_feature(
        kind: str) -> None:
    start = (TRAIN + 50) * STEP
    fault = GrayFault(kind, start, np.inf, 1.0, ramp=10 * STEP)
    x, names, codes = history(TRAIN + TEST, {0: [fault]})
    model = fit_model(x[:TRAIN], names, codes, FEATURES, PARAMS)
    scores, alarms, (last,) = run(model, x[TRAIN:], names, codes)
    after = slice(70, TEST)  # once the fault has reached full strength
    bad, healthy = scores[after, 0], scores[after, 1:]
    # At least level with the most unusual healthy node (a healthy node's first container
    # restart in days is unusual too, and both then score 1.0), above all the others.
    top = (bad >= healthy.max(axis=1)).mean()
    assert top >= 0.95, f"{kind}: the faulty node ranked first only {top:.0%} of the time"
    # Above all but one healthy node nearly always: the moving average of the evidence keeps
    # a healthy node's one-off spike (a first restart) up for a few steps, and it can then
    # tie with or pass the faulty one for as long.
    second = (bad > np.sort(healthy, axis=1)[:, -2]).mean()
    assert second >= 0.97, f"{kind}: above all but one healthy node {second:.0%} of the time"
    assert alarms[after, 0].mean() >= 0.9
    assert not alarms[:50, 0].any(), "alarm before the fault began"
    reading = last.reading("n00")
    assert reading is not None and reading.alarm
    assert reading.top and reading.top[0][0] in SHOWS_IN[kind], reading.top


def test_a_healthy_fleet_stays_under_the_target_alarm_rate() -> None:
    x, names, codes = history(TRAIN + 1000, seed=3)
    params = PARAMS
    model = fit_model(x[:TRAIN], names, codes, FEATURES, params)
    scores, alarms, _ = run(model, x[TRAIN:], names, codes)
    assert alarms.mean() <= params.target_alarm_rate, alarms.mean()
    assert (scores >= params.threshold).any(), "no point at the threshold: nothing was tested"


@pytest.mark.parametrize(("points", "score", "raised_at"), [
    (12, 0.99, 9),          # ten points at the threshold (1 in 100)
    (12, 0.999, 4),         # five at 1 in 1,000
    (12, 1 - 1e-7, 1),      # two at 1 in ten million
    (1, 1.0, None),         # one point alone, however rare: a glitch
    (2, 1.0, 1),
    (30, 0.98, None),       # just under it for long: evidence, raised only at a point at it
])
def test_the_alarm_is_raised_once_enough_evidence_has_gathered(
        points: int, score: float, raised_at: int | None) -> None:
    """`enter` (10) in points at the threshold; a rarer point counts for more, at most half."""
    params = AnomalyParams()
    scores = np.concatenate([np.full(5, 0.5), np.full(points, score), np.full(5, 0.5)])
    alarms = series_alarms(scores, params)
    if raised_at is None:
        assert not alarms.any()
    else:
        assert np.flatnonzero(alarms)[0] == 5 + raised_at
        assert not alarms[5 + points:].any(), "cleared at the first point under the threshold"


def test_a_node_quiet_for_days_needs_less_evidence_and_one_that_alarmed_a_lot_more() -> None:
    """The evidence a node needs follows the share of its time it alarmed lately against the
    budget (`target_alarm_rate`): three points at 1 in 100 are not enough at the start, nor
    for a node that alarmed through a day, but they are after four quiet days; with
    `budget_half_life` 0 the rule is the fixed `enter` for everyone."""
    params = AnomalyParams(step=300.0)  # five-minute points, as the real datasets have
    day = int(86400 / params.step)
    three = np.full(3, 0.99)
    assert not series_alarms(np.concatenate([np.full(5, 0.5), three]), params).any()
    quiet = series_alarms(np.concatenate([np.full(4 * day, 0.5), three]), params)
    assert np.flatnonzero(quiet)[0] == 4 * day + 1, "two points suffice, one never"
    fixed = replace(params, budget_half_life=0.0)
    assert not series_alarms(np.concatenate([np.full(4 * day, 0.5), three]), fixed).any()
    # A node that alarmed for a day (its score at 1 in 1,000) needs more than ten points
    # at the threshold afterwards: a day at 1 in 100 raised nothing on ten points.
    busy = np.concatenate([np.full(day, 0.999), np.full(5, 0.5), np.full(12, 0.99)])
    assert not series_alarms(busy, params)[day + 5:].any()
    assert series_alarms(busy, fixed)[day + 5:].any(), "the fixed rule raises it: nothing tested"
    st = hysteresis(np.array([0.5]), AlarmState().aligned(("n",), 1), params)
    assert needed(spent_share(st, params), params)[0] == pytest.approx(10.0, rel=1e-2)


def test_a_reading_says_how_much_evidence_the_node_needs_and_why() -> None:
    """`explain` and the journal show, for a node above the threshold and not yet alarming,
    how far its evidence has come, what it needs, and the alarm budget that set it."""
    x, names, codes = history(TRAIN + 2, seed=5)
    model = fit_model(x[:TRAIN], names, codes, FEATURES, PARAMS)
    test = x[TRAIN:].copy()
    test[1, 0, FEATURES.index("disk_latency")] *= 40  # one very rare point: half of `enter`
    st, sites = AlarmState(), [f"site-{c}" for c in codes]
    for t in range(2):
        sc, st = score_fleet(model, tuple(names), sites, test[t], st, t * STEP)
    r = sc.reading(names[0])
    assert r is not None and r.score >= r.threshold and not r.alarm, r
    assert r.needed == pytest.approx(PARAMS.enter, rel=1e-2), "a node starts at `enter`"
    assert r.evidence == pytest.approx(PARAMS.enter / 2, rel=1e-2), "one point: half at most"
    assert r.spent == pytest.approx(PARAMS.target_alarm_rate, rel=1e-2)
    assert r.budget() == ("evidence 5.0 of the 10.0 points it needs (it alarmed 1.00% of its "
                          "time lately, against a budget of 1.00%; a node just started counts "
                          "from the budget)"), r.budget()
    assert r.record()["needed"] == round(r.needed, 4)


def test_points_just_under_the_threshold_take_evidence_back() -> None:
    """Between rare points, quiet ones count back: nine at the threshold, then ten quiet
    ones (score 0.5: a tenth of a decade each below the one-decade slack), are not evidence
    for the next one."""
    params = AnomalyParams()
    rare, quiet = np.full(9, 0.99), np.full(10, 0.5)
    assert not series_alarms(np.concatenate([rare, quiet, [0.99]]), params).any()
    assert series_alarms(np.concatenate([rare, [0.99]]), params)[-1] == 1
    # What a spell just under the threshold gathered raises it at the first point at it.
    under = np.concatenate([np.full(20, 0.98), [0.99]])
    assert np.flatnonzero(series_alarms(under, params)).tolist() == [20]


def test_cycles_faster_than_the_data_gather_evidence_no_faster_in_time() -> None:
    """The live loop scores every `interval` (10 s) a model trained at `training_step`
    (60 s): between two new points the cycles see the same values again. Counted per cycle,
    one glitch seen by six cycles raised the alarm alone; counted in time, a fault is raised
    when the replay point by point raises it, and a glitch is not."""
    x, names, codes = history(TRAIN + 120, seed=4)
    model = fit_model(x[:TRAIN], names, codes, FEATURES, PARAMS)
    test = x[TRAIN:].copy()
    glitch, fault = 20, 60
    test[glitch, 0, FEATURES.index("disk_latency")] *= 40  # one point, very rare
    test[fault:, 1, FEATURES.index("disk_latency")] *= 40  # from here on
    sites = [f"site-{c}" for c in codes]

    def first_alarms(repeat: int) -> dict[int, float]:
        st, first = AlarmState(), {}
        for t in range(test.shape[0]):
            for k in range(repeat):  # `repeat` cycles a point, STEP / repeat apart
                now = (t + k / repeat) * STEP
                sc, st = score_fleet(model, tuple(names), sites, test[t], st, now)
                for i in np.flatnonzero(sc.alarm):
                    first.setdefault(int(i), now)
        return first

    by_point, by_cycle = first_alarms(1), first_alarms(6)
    assert 0 not in by_point, "the replay raised a lone glitch: nothing was tested"
    assert 0 not in by_cycle, f"one glitch, seen by six cycles, raised the alarm at " \
        f"{by_cycle[0] / STEP:.1f} points"
    assert 1 in by_point and 1 in by_cycle, (by_point, by_cycle)
    assert by_point[1] >= fault * STEP
    assert abs(by_cycle[1] - by_point[1]) <= STEP, (by_cycle[1] / STEP, by_point[1] / STEP)


def test_a_node_that_joined_after_training_is_compared_with_its_peers() -> None:
    fault = GrayFault("cpu-hog", (TRAIN + 20) * STEP, np.inf, 1.5, ramp=STEP)
    x, names, codes = history(TRAIN + 100, {4: [fault]})
    known = [i for i in range(len(names)) if i != 4]
    model = fit_model(x[:TRAIN, known], [names[i] for i in known], codes[known], FEATURES,
                      PARAMS)
    assert "n04" not in model.nodes
    scores, alarms, (last,) = run(model, x[TRAIN:], names, codes)
    assert not np.isnan(scores[:, 4]).any()
    assert alarms[60:, 4].mean() >= 0.75  # peers alone are a weaker witness than history
    r = last.reading("n04")
    assert r is not None and r.top[0][3] == "site peers"


def _shifted(x: np.ndarray, node: int, from_step: int, by: float) -> np.ndarray:
    """A level shift on every feature of one node (a new deployment, a new load), in units of
    each feature's spread over the training part."""
    x = x.copy()
    spread = np.nanstd(x[:TRAIN, node], axis=0)
    x[from_step:, node] += by * spread
    return x


def test_a_level_shift_that_persists_becomes_the_baseline_with_a_journal_note() -> None:
    """drift.py: the shifted node alarms, and once the shift has held for `accept_after` its
    recent level is its baseline; the alarm clears and it stays quiet at the new level. The
    other nodes are untouched; a fault shorter than `accept_after` is never absorbed."""
    params = replace(PARAMS, accept_after=60 * STEP, recent_window=10 * STEP)
    base, names, codes = history(TRAIN + 200, seed=2)
    model = fit_model(base[:TRAIN], names, codes, FEATURES, params)
    x = _shifted(base, 3, TRAIN + 20, 8.0)
    st, rebased_at, alarms = AlarmState(), [], []
    for t in range(TRAIN, TRAIN + 200):
        sc, st = score_fleet(model, tuple(names), [f"s{c}" for c in codes], x[t], st, t * STEP)
        alarms.append(sc.alarm.copy())
        rebased_at += [(t - TRAIN, sc.nodes[i]) for i in np.flatnonzero(sc.rebased)]
    a = np.asarray(alarms)
    assert a[25:60, 3].all(), "the shift alarms at first"
    assert rebased_at and {n for _, n in rebased_at} == {"n03"}, rebased_at
    held = rebased_at[0][0] - 20 + 1  # steps of the shift seen, the rebasing one included
    assert 60 <= held <= 120, f"rebased after {held} steps of the shift"
    first = rebased_at[0][0]
    assert not a[first + 1:, 3].any(), "the new level alarms again"
    assert st.drift is not None and st.drift.center[3, 0] > model.center[3, 0]
    np.testing.assert_array_equal(st.drift.center[:3], model.center[:3])
    # The next training's model starts from its own baselines, not from the rebased one.
    retrained = fit_model(x[TRAIN - 400: TRAIN + 200], names, codes, FEATURES, params)
    _, again = score_fleet(retrained, tuple(names), [f"s{c}" for c in codes], x[TRAIN + 199],
                           st, (TRAIN + 200) * STEP)
    assert again.drift is not None
    np.testing.assert_array_equal(again.drift.center, retrained.center)

    # A fault that ends before accept_after leaves the trained baseline as it was.
    x2 = _shifted(base, 3, TRAIN + 20, 8.0)
    x2[TRAIN + 60:, 3] = base[TRAIN + 60:, 3]
    st = AlarmState()
    for t in range(TRAIN, TRAIN + 200):
        sc, st = score_fleet(model, tuple(names), [f"s{c}" for c in codes], x2[t], st,
                             t * STEP)
        assert not sc.rebased[3], f"a 40-step fault was absorbed at step {t - TRAIN}"
    assert st.drift is not None
    np.testing.assert_array_equal(st.drift.center[3], model.center[3])


def test_the_journal_says_when_a_shift_became_the_baseline() -> None:
    site = {"n": SiteName("s")}
    notes, _ = alarm_notes({}, {"n": _r()}, site, {"n": frozenset()}, {"n"}, 6 * 3600)
    assert [n.reason for n in notes] == ["anomaly-cleared"]
    assert "stayed unusual for 6 h" in notes[0].text and "baseline" in notes[0].text


def test_evaluate_replays_in_order_and_never_reads_ahead() -> None:
    """Each test point's score and alarm depend only on the points before it: scoring a
    prefix gives the same as the start of scoring the whole (a later point, or a label,
    cannot change an earlier score)."""
    from sentinel.anomaly.score import score_series

    x, _, _ = history(TRAIN + 400, {1: [GrayFault("disk-slow", (TRAIN + 100) * STEP,
                                                  (TRAIN + 200) * STEP, 1.0)]})
    one = x[:, 1, :]
    model = fit_model(one[:TRAIN, None, :], ["entity"], np.array([-1]), FEATURES,
                      replace(PARAMS, accept_after=50 * STEP))
    full_s, full_a = score_series(model, one[TRAIN:], STEP)
    for k in (1, 150, 260):
        part_s, part_a = score_series(model, one[TRAIN: TRAIN + k], STEP)
        np.testing.assert_array_equal(part_s, full_s[:k])
        np.testing.assert_array_equal(part_a, full_a[:k])
    assert full_a[110:200].mean() > 0.5, "the fault is found at all"


def test_the_reference_distance_is_exact_for_a_point_it_holds() -> None:
    """The nearest-reference distance of a point the reference holds is 0, not the rounding
    of the fast formula (1e-5): a discrete metric's usual value must not look unusual."""
    from sentinel.anomaly.arrays import nearest

    rng = np.random.default_rng(1)
    ref = rng.normal(size=(64, 8)) * 1e3
    pts = np.vstack([ref[[3, 17, 40]], ref[[5]] + 0.5])
    d = nearest(pts, ref)
    assert (d[:3] == 0).all(), d
    assert abs(d[3] - 0.5 * np.sqrt(8)) < 1e-9


def _r(*features: str) -> AnomalyReading:
    return AnomalyReading(0.99, True, 0.98, tuple((f, 1.0, 3.0, "own history") for f in features))


def test_the_journal_names_what_an_alarm_turns_out_to_be_about_once_per_feature() -> None:
    site = {"n": SiteName("s"), "m": SiteName("s")}
    steps: list[tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]] = [
        # raised early in a ramp: nothing two spreads out yet, the note says the score
        ({"n": _r()}, {}, [("anomaly", "")]),
        ({"n": _r()}, {}, []),                      # the same: no note every cycle
        ({"n": _r("disk_latency")}, {}, [("anomaly", "disk_latency")]),  # now it is named
        ({"n": _r("disk_latency", "cpu")}, {}, [("anomaly", "cpu")]),
        ({"n": _r("cpu")}, {}, []),                 # flickering between named ones: quiet
        ({"n": _r("disk_latency")}, {}, []),
        ({}, {"n": _r()}, [("anomaly-cleared", "")]),
        ({"n": _r("disk_latency")}, {}, [("anomaly", "disk_latency")]),  # a new alarm
        ({"n": None, "m": _r("memory")}, {}, [("anomaly", "memory")]),  # n: no reading now
    ]
    named: Any = {}
    for alarmed, cleared, want in steps:
        notes, named = alarm_notes(alarmed, cleared, site, named)
        assert [n.reason for n in notes] == [r for r, _ in want], (alarmed, notes)
        for note, (_, feature) in zip(notes, want, strict=True):
            assert feature in note.text
            if note.reason == "anomaly" and not feature:
                assert note.text.startswith("anomaly score 0.990 (alarm at 0.980)")


def test_calibration_is_a_monotone_map_into_0_1() -> None:
    rng = np.random.default_rng(0)
    cal = Calibration.fit(rng.exponential(size=2000))
    x = np.linspace(-1, 100, 5000)
    p = cal(x)
    assert ((p >= 0) & (p <= 1)).all()
    assert (np.diff(p) >= 0).all()
    tail = (x > 10) & (x < 20)
    assert (np.diff(p[tail]) > 0).all(), "the tail must keep the ranking"
    assert abs(float((cal(rng.exponential(size=20000)) >= 0.99).mean()) - 0.01) < 0.005


def test_too_little_history_is_refused_with_the_reason() -> None:
    x, names, codes = history(20)
    with pytest.raises(FitError, match=r"20 time steps with data.*at least 30"):
        fit_model(x, names, codes, FEATURES)


# -- decisions ----------------------------------------------------------------------------
def _snapshot(ready: Ready) -> Snapshot:
    n = NodeInfo(NodeName("n1"), SiteName("s"), ready)
    view = SiteView(SiteName("s"), True, None, 1.0, frozenset({"n1"}))
    reading = AnomalyReading(0.9999, True, 0.99, (("disk_latency", 0.2, 40.0, "own history"),))
    return Snapshot(1000.0, {"n1": n}, {"s": view}, anomalies={"n1": reading})


@pytest.mark.parametrize("ready", list(Ready))
@pytest.mark.parametrize("action", ["alert", "isolate"])
def test_an_anomaly_alone_never_takes_level_2(ready: Ready, action: str) -> None:
    params = DetectParams(anomaly_isolates=action == "isolate", anomaly_for=0)
    snap = _snapshot(ready)
    det = detect(snap, RuleSet(()), params)
    conds = [c for f in det.findings.values() for c in f.conditions]
    assert all(c.level is Level.COMPONENT for c in conds)
    state = PolicyState()
    for now in (1000.0, 1100.0, 1200.0):  # pending conditions ripen over cycles
        plan, state = decide(replace(snap, taken_at=now), det, state, DecideParams(), now)
        assert all(a.level is Level.COMPONENT for a in plan.actions), plan.actions
    isolated = {c.key for c in conds}
    if action == "alert":
        assert ANOMALY_KEY not in isolated, "alert mode must only alert"
    elif ready is Ready.TRUE:
        assert ANOMALY_KEY in isolated


# -- persistence ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained() -> tuple[AnomalyModel, np.ndarray, list[str], np.ndarray]:
    x, names, codes = history(TRAIN + 20)
    meta = {"trained_at": 1000.0, "features_digest": "", "versions": {}}
    return (fit_model(x[:TRAIN], names, codes, FEATURES, PARAMS, meta=meta), x[TRAIN:], names,
            codes)


def _saveable(model: AnomalyModel, queries: dict[str, str]) -> AnomalyModel:
    from sentinel.anomaly.store import features_digest, library_versions

    return replace(model, meta={**model.meta, "features_digest": features_digest(queries),
                                "versions": library_versions()})


QUERIES = {f: f"sim_{f}" for f in FEATURES}


def test_a_saved_model_loads_and_scores_the_same(tmp_path: Path, trained: Any) -> None:
    model, x, names, codes = trained
    model = _saveable(model, QUERIES)
    save_model(tmp_path / "m.npz", model)
    again = load_model(tmp_path / "m.npz", QUERIES, now=1001.0, max_age=3600)
    a, _, _ = run(model, x, names, codes)
    b, _, _ = run(again, x, names, codes)
    np.testing.assert_array_equal(a, b)
    assert again.features == model.features and again.nodes == model.nodes


def test_a_model_saved_before_points_had_a_length_takes_its_training_step(
        tmp_path: Path, trained: Any) -> None:
    """A model saved by an earlier sentinel has no `step` in its params: its window's step
    (what it was trained at) is its point, not the default."""
    model, *_ = trained
    model = _saveable(replace(model, meta={**model.meta, "window": [0.0, 1000.0, 30.0]}),
                      QUERIES)
    save_model(tmp_path / "m.npz", model)
    with np.load(tmp_path / "m.npz") as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["meta"]))
    del meta["params"]["step"]
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez_compressed(tmp_path / "old.npz", **arrays)
    again = load_model(tmp_path / "old.npz", QUERIES, now=1001.0, max_age=3600)
    assert again.params.step == 30.0
    assert load_model(tmp_path / "m.npz", QUERIES, now=1001.0, max_age=3600).params.step == STEP


@pytest.mark.parametrize(("change", "why"), [
    ("features", r"trained on features .* configuration has"),
    ("library", r"trained with .*scikit-learn.* this sentinel runs"),
    ("stale", r"stale: trained 2\.0 h ago, max_model_age is 1\.0 h"),
    ("corrupt", r"not a model sentinel can read"),
    ("missing", r"no model at"),
])
def test_a_model_that_does_not_fit_is_refused_with_the_reason(
        tmp_path: Path, trained: Any, change: str, why: str) -> None:
    model = _saveable(trained[0], QUERIES)
    path = tmp_path / "m.npz"
    queries, now = dict(QUERIES), 1000.0 + 60
    if change == "features":
        queries["cpu"] = "other_cpu_query"
    elif change == "library":
        model = replace(model, meta={**model.meta, "versions": {"numpy": "1.0",
                                                               "scikit-learn": "0.1"}})
    elif change == "stale":
        now = 1000.0 + 7200
    if change != "missing":
        save_model(path, model)
    if change == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelRefused, match=why):
        load_model(path, queries, now=now, max_age=3600)


# -- evaluate ------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    r = _cli("sim", "dataset", str(root), "--sites", "1", "--nodes", "3", "--train-steps",
             "1440", "--test-steps", "1440", "--seed", "5")
    assert r.returncode == 0, r.stderr
    return root


def test_evaluate_reports_every_figure_and_the_scores_to_recompute_them(
        dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores"
    r = _cli("anomaly", "evaluate", str(dataset), "--scores-out", str(out))
    assert r.returncode == 0, r.stderr
    for col in ("auprc", "f1*", "fc1*", "f1", "fc1", "alarm%", "delay"):
        assert col in r.stdout.splitlines()[1].split()
    last = r.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"auprc=([\d.]+) fc1_best=([\d.]+) fc1_own=([\d.]+) "
                     r"alarm_rate_own=([\d.]+)", last)
    assert m, last
    assert float(m.group(1)) > 0.5
    js = json.loads(_cli("anomaly", "evaluate", str(dataset), "-o", "json").stdout)
    assert len(js["entities"]) == 3
    for ent in js["entities"]:
        assert set(ent) >= {"auprc", "f1_best", "fc1_best", "f1_own", "fc1_own",
                            "alarm_rate_own", "delay_own"}
        rows = (out / f"{ent['entity']}.txt").read_text().splitlines()
        labels = np.loadtxt(dataset / "test_label" / f"{ent['entity']}.txt")
        assert len(rows) == len(labels) == ent["steps"]
        scores = np.array([float(x.split(",")[0]) for x in rows])
        alarms = np.array([int(x.split(",")[1]) for x in rows])
        assert set(alarms) <= {0, 1}
        assert abs(average_precision_score(labels, scores) - ent["auprc"]) < 1e-3
        assert abs(alarms.mean() - ent["alarm_rate_own"]) < 1e-9
        assert alarms[labels == 0].mean() <= 0.02, "false alarms far above the 1 % target"
    mean_auprc = np.mean([e["auprc"] for e in js["entities"]])
    assert abs(mean_auprc - float(m.group(1))) < 1e-3


def test_evaluate_ranks_better_than_the_robust_z_score_baseline(dataset: Path) -> None:
    """Every estimator runs on the same data with the same calibration and alarm logic. The
    full comparison (PCA, nearest neighbours, several datasets) is in docs/anomaly.md."""
    # In this process: the command line's own output is the test above's.
    from sentinel.anomaly.dataset import read_dataset
    from sentinel.anomaly.evaluation import evaluate_entity, summarize

    ents = list(read_dataset(dataset))

    def figures(estimator: str) -> dict[str, Any]:
        return summarize([evaluate_entity(e.name, e.train, e.test, e.labels, estimator)[0]
                          for e in ents])

    ours, zscore = figures("combined"), figures("zscore")
    assert ours["auprc"] > zscore["auprc"], (ours, zscore)
    assert ours["fc1_own"] > 0.8


@pytest.mark.parametrize("name", ["asd", "nab-aws"])
def test_every_estimator_scores_a_real_dataset_or_says_why_not(name: str) -> None:
    """Real servers' metrics, as `evaluate` reads them: one entity each (the full figures are
    `bench/anomaly_real.py`'s). PCA has nothing to reconstruct from one feature: it says so
    instead of failing in scikit-learn."""
    from sentinel.anomaly.dataset import DatasetError, read_dataset, shared_datasets
    from sentinel.anomaly.evaluation import evaluate_entity

    root = shared_datasets()
    if root is None or not (root / name / "train").is_dir():
        pytest.skip(f"no shared dataset {name!r}: neither $SENTINEL_DATASETS nor a "
                    "shared/datasets folder above the project has it")
    ent = next(iter(read_dataset(root / name)))
    for est in ("combined", "zscore", "pca", "knn"):
        if est == "pca" and ent.train.shape[1] == 1:
            with pytest.raises(DatasetError, match=rf"{ent.name}: 1 feature; the pca baseline"):
                evaluate_entity(ent.name, ent.train, ent.test, ent.labels, est)
            continue
        res, scores, alarms = evaluate_entity(ent.name, ent.train, ent.test, ent.labels, est)
        assert scores.shape == ent.labels.shape and np.isfinite(scores).all(), est
        assert 0 <= res.alarm_rate_own <= 1 and alarms.mean() == res.alarm_rate_own


@pytest.mark.parametrize(("damage", "message"), [
    ("no-label-file", r"test_label: no (\S+)\.txt to go with test/\1\.txt"),
    ("bad-label", r"test_label/\S+\.txt:7: a label is 0 or 1, not '2'"),
    ("short-labels", r"labels for 1440 test rows"),
    ("ragged", r"test/\S+\.txt:3: \d+ columns, the first row has 8"),
    ("short-train", r"train/\S+\.txt: 12 time steps with data in the training window; at "
                    r"least 30 are needed"),
])
def test_evaluate_names_the_file_and_line_of_a_broken_dataset(
        dataset: Path, tmp_path: Path, damage: str, message: str) -> None:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(dataset, root)
    first = sorted((root / "test").glob("*.txt"))[0].name
    label = root / "test_label" / first
    if damage == "no-label-file":
        label.unlink()
    elif damage == "bad-label":
        lines = label.read_text().splitlines()
        lines[6] = "2"
        label.write_text("\n".join(lines) + "\n")
    elif damage == "short-labels":
        label.write_text("\n".join(label.read_text().splitlines()[:-5]) + "\n")
    elif damage == "short-train":  # reads well, but too short to fit a model on
        train = root / "train" / first
        train.write_text("\n".join(train.read_text().splitlines()[:12]) + "\n")
    else:
        test = root / "test" / first
        lines = test.read_text().splitlines()
        lines[2] = "1,2,3"
        test.write_text("\n".join(lines) + "\n")
    r = _cli("anomaly", "evaluate", str(root))
    assert r.returncode == 2
    assert re.search(message, r.stderr), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_refuses_a_scores_folder_it_cannot_make_before_any_work(
        dataset: Path, tmp_path: Path) -> None:
    taken = tmp_path / "scores"
    taken.write_text("a file, not a folder\n")
    r = _cli("anomaly", "evaluate", str(dataset), "--scores-out", str(taken))
    assert r.returncode == 2
    assert re.fullmatch(rf"error: --scores-out {re.escape(str(taken))}: cannot make a folder "
                        r"there: File exists", r.stderr.strip()), r.stderr
    assert r.stdout == "" and taken.read_text() == "a file, not a folder\n"


# -- live: real Prometheus, the emulator, sentinel's runtime --------------------------------
LIVE = {"training_window": "40s", "training_step": "1s", "rate_window": "4s",
        "retry_after": "1s", "enter": 2}


def _train(keeper: AnomalyKeeper) -> None:
    """Until the sites' Prometheus hold enough history (a young session fleet may not)."""
    def ok() -> bool:
        try:
            keeper.train()
        except FitError:
            return False
        return True

    poll(ok, 60, "enough history in the sites' Prometheus to train on")


def test_a_mismatched_model_is_refused_then_retrained_from_prometheus(
        clean_fleet: Any, tmp_path: Path) -> None:
    cfg_data = {"sites": [{"name": s, "prometheus": u}
                          for s, u in clean_fleet.prometheus_urls().items()],
                "anomaly": {**LIVE, "model_file": str(tmp_path / "model.npz")}}
    (tmp_path / "sentinel.yaml").write_text(yaml.safe_dump(cfg_data))
    other = parse_config(yaml.safe_dump({**cfg_data, "anomaly": {
        **cfg_data["anomaly"], "features": {"load": "max by (node) (node_load1)"}}}),
        str(tmp_path / "other.yaml"), {})
    _train(AnomalyKeeper(other))  # a model of other features at the same path
    cfg = parse_config(yaml.safe_dump(cfg_data), str(tmp_path / "sentinel.yaml"), {})
    keeper = AnomalyKeeper(cfg)
    assert not keeper.load()
    assert keeper.problem is not None and "trained on features ['load']" in keeper.problem
    assert keeper.due()
    _train(keeper)
    assert keeper.model is not None and keeper.model.features == tuple(FEATURES)
    assert len(keeper.model.nodes) == len(clean_fleet.nodes())
    fresh = AnomalyKeeper(cfg)
    assert fresh.load() and not fresh.due()
    # The CLI uses the same model: every node scored, the most unusual first.
    r = _cli("anomaly", "score", "-c", str(tmp_path / "sentinel.yaml"), "-o", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["nodes"]
    assert len(rows) == min(20, len(clean_fleet.nodes()))
    assert [x["score"] for x in rows] == sorted((x["score"] for x in rows), reverse=True)


def test_anomaly_cli_train_explains_a_failure(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(yaml.safe_dump({"sites": [{"name": "a", "prometheus": "http://127.0.0.1:9"}],
                                   "anomaly": LIVE}))
    r = _cli("anomaly", "train", "-c", str(cfg))
    assert r.returncode == 1
    assert "training failed: no site answered" in r.stderr
    r = _cli("anomaly", "score", "-c", str(cfg))
    assert r.returncode == 1 and "no model at" in r.stderr and "anomaly train" in r.stderr


@pytest.fixture(scope="module")
def clean_model(fleet: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model for the live grey-node cases, trained before either runs. Trained after the
    first case, its 40 s window held that case's grey fault at full strength — a tenth of the
    calibration sample — so the threshold sat on the fault, the next case's node never
    alarmed, and a healthy neighbour did (CI saw both)."""
    from .conftest import reset

    reset(fleet)
    path = tmp_path_factory.mktemp("anomaly") / "model.npz"
    cfg = parse_config(yaml.safe_dump({
        "sites": [{"name": s, "prometheus": u} for s, u in fleet.prometheus_urls().items()],
        "anomaly": {**LIVE, "model_file": str(path)}}), str(path.parent / "sentinel.yaml"), {})
    _train(AnomalyKeeper(cfg))
    return path


# A node of its own per case, in a site the earlier live tests leave alone.
@pytest.mark.parametrize(("action", "node"), [("alert", "edge-c-02"), ("isolate", "edge-c-03")])
def test_a_grey_node_in_the_live_fleet_alarms_and_at_most_takes_level_1(
        harness: Any, clean_model: Path, action: str, node: str) -> None:
    # isolate, leave 3: isolation waits for `isolate_after` of uninterrupted alarm, and on 40 s
    # of live training one quiet score would clear the alarm (with leave 1) and restart that
    # wait; CI saw the taint never come under load. A stable alarm is how `isolate` is meant to
    # run. alert keeps the default leave 1: with 3, a healthy node's one-cycle blip stays an
    # alarm three cycles longer, and CI saw three of them alarming at the checked cycle.
    leave = 3 if action == "isolate" else 1
    h: Harness = harness(anomaly={**LIVE, "action": action, "isolate_after": "2s",
                                  "leave": leave, "model_file": str(clean_model)})
    assert h.rt.anomaly is not None and h.rt.anomaly.model is not None, h.rt.anomaly.problem
    h.run_for(2)  # a baseline of cycles before the fault
    site = h.fleet.site_of[node]
    h.fleet.gray(node, "disk-slow", severity=2.0, ramp=2.0)

    def alarmed(rep: Any) -> bool:
        return node in rep.snapshot.anomalies
    h.until(alarmed, 40, f"{node}'s anomaly alarm")
    first = len(h.reports) - 1
    # The fault at full strength, long enough that a healthy node's blip (a value a 40 s
    # window never saw, held `leave` 3 points in isolate mode) does not span it: CI saw one
    # healthy node alarm on all 7 cycles of a 3 s stretch, as many as the grey node.
    h.run_for(6)
    # Take the next cycle that has the alarm rather than whichever cycle came last.
    rep = h.until(alarmed, 20, f"{node}'s anomaly alarm at full strength")
    reading = rep.snapshot.anomalies[node]
    assert reading.top[0][0] == "disk_latency"
    healthy = [rep.anomaly.reading(n) for n in h.fleet.nodes() if n != node]
    # Live, on 40 s of training history, a healthy node's rare blip can tie or pass it for a
    # moment (the offline tests check the ranking and the alarm rate strictly): among the top
    # two at this cycle. Which healthy nodes alarm at one cycle is chance (a net-error blip a
    # 40 s window never saw; CI saw two at once), so the singling out is checked over the
    # fault: it alarmed on more of its cycles than any healthy node did on the same cycles.
    above = [r for r in healthy if r is not None and r.score > reading.score]
    assert len(above) <= 1, (reading, above)
    during = h.reports[first:]
    counts = Counter(n for r in during for n in r.snapshot.anomalies)
    worst_healthy = max((c for n, c in counts.items() if n != node), default=0)
    assert counts[node] > worst_healthy, (node, len(during), counts)
    assert sum(1 for r in healthy if r is not None and r.alarm) <= len(healthy) // 2
    notes = h.rt.journal.notes(node=node)
    assert any(n["reason"] == "anomaly" and "disk_latency" in n["text"] for n in notes), notes
    metrics = generate_latest(h.rt.registry).decode()
    assert re.search(rf'sentinel_anomaly_score{{node="{node}",site="{site}"}} (0\.9|1\.0)',
                     metrics)
    assert f'sentinel_anomaly_alarm{{node="{node}",site="{site}"}} 1.0' in metrics
    assert "sentinel_anomaly_model_age_seconds " in metrics
    story = h.explain(node, anomaly=rep.anomaly.reading(node), anomaly_action=action)
    assert story["anomaly"]["alarm"] and story["anomaly"]["top"][0]["feature"] == "disk_latency"
    assert any(s.startswith("Anomaly score") and "disk_latency" in s for s in story["story"])

    if action == "alert":
        h.run_for(4)
        assert our_taints(h.fleet, node) == {}, "alert mode must never isolate"
    else:
        try:
            h.until(lambda r: ANOMALY_KEY in our_taints(h.fleet, node), 60, "the anomaly taint")
        except AssertionError:  # say why sentinel held back, for whoever reads the failure
            last = h.reports[-1]
            raise AssertionError(
                f"no anomaly taint on {node} in 60 s; alarm now: "
                f"{node in last.snapshot.anomalies}; held back: "
                f"{[(n.reason, n.text) for n in last.plan.notes if n.node == node]}; "
                f"journal: {[(j['reason'], j['text']) for j in h.rt.journal.notes(node=node)]}"
                ) from None
    n = h.fleet.node(node)
    assert not n["spec"].get("unschedulable")
    assert "NoExecute" not in our_taints(h.fleet, node).values()
    assert f"{DOMAIN}/{ANOMALY_KEY}" not in {t["key"] for t in n["spec"].get("taints", [])
                                            if t["effect"] != "NoSchedule"}
    h.fleet.heal(node)
    h.until(lambda r: node not in r.snapshot.anomalies and not our_taints(h.fleet, node), 40,
            "the alarm to clear and any anomaly taint to be released")
