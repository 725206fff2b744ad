"""The rollout guard: the rank test and verdicts as tables, the decisions, the emulated workload
controllers, and the guard against real Prometheus servers and the Kubernetes emulator — a bad
version stopped in its first node group, a noisy healthy one never rolled back, a dark site
holding the verdict, a rollback cut half way by a killed sentinel finished exactly once, dry-run,
DaemonSets, and the API and CLI through a real `sentinel serve`."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from sentinel.adapters.journal import Journal
from sentinel.adapters.kube import make_api_client
from sentinel.adapters.metrics import Metrics
from sentinel.config.loading import parse_config
from sentinel.http.runtime import make_recorder, rollout_guard
from sentinel.rollouts.analysis import (
    Analysis,
    AnalysisParams,
    MetricSpec,
    Revision,
    Verdict,
    Workload,
    analyse,
    decide_rollouts,
    judge_metric,
    rank_test,
)
from sentinel.sim.fleet import Fleet
from sentinel.sim.store import RESOURCES
from sentinel.sim.workloads import DAEMONSETS, DEPLOYMENTS, PODS, REPLICASETS, REVISIONS

from .conftest import DOMAIN, Serve, poll
from .test_oncall import WRITE, cli, js, ok

EVENTS = RESOURCES[("", "v1", "events")]
P = AnalysisParams(alpha=0.01, min_samples=10, min_window=60)
ERR = MetricSpec("error-ratio", margin=0.02, relative=1.0)


# -- the statistics ------------------------------------------------------------------------
def test_rank_test_separates_shifted_samples_and_not_equal_ones() -> None:
    p, effect = rank_test(list(range(11, 21)), list(range(1, 11)))
    assert p < 1e-3 and effect == 1.0
    p, effect = rank_test(list(range(1, 11)), list(range(11, 21)))
    assert p > 0.99 and effect == 0.0, "one-sided: a better new version is no evidence"
    rng = random.Random(3)
    same = [rank_test([rng.gauss(0, 1) for _ in range(30)], [rng.gauss(0, 1) for _ in range(30)])
            for _ in range(200)]
    assert sum(p < 0.01 for p, _ in same) <= 6, "the false-positive rate must be near alpha"
    assert rank_test([1.0] * 12, [1.0] * 12) == (1.0, 0.5), "all ties: no evidence"


def _error_ratios(rng: np.random.Generator, samples: int, window: int, step: int,
                  pods: int = 2) -> list[float]:
    """A healthy pod's error ratio as the guard's range query samples it: requests each second
    with bursty traffic (the noisy version's spread), 1 % of them failing, a rate over `window`
    seconds every `step`."""
    out = []
    for _ in range(pods):
        seconds = samples * step + window
        requests = rng.poisson(20 * rng.lognormal(-0.72, 1.2, seconds))
        errors = rng.binomial(requests, 0.01)
        for k in range(samples):
            a, b = k * step, k * step + window
            out.append(float(errors[a:b].sum() / max(1, requests[a:b].sum())))
    return out


def test_samples_of_overlapping_rate_windows_are_not_counted_as_independent() -> None:
    """A 30 s rate sampled every 10 s counts each request in three samples in a row. Counted as
    independent, healthy versions came out significant several times as often as `alpha` says;
    told the overlap, no more often than it says."""
    rng = np.random.default_rng(7)
    trials = 600

    def false_positives(window: int, step: int, overlap: float) -> float:
        hits = 0
        for _ in range(trials):
            new = _error_ratios(rng, 6, window, step)
            stable = _error_ratios(rng, 10, window, step)
            hits += rank_test(new, stable, overlap)[0] < 0.01
        return hits / trials

    assert false_positives(30, 10, 1.0) > 0.03, "the uncorrected test is overconfident"
    assert false_positives(30, 10, 3.0) <= 0.015
    assert false_positives(10, 10, 1.0) <= 0.015, "windows that do not overlap need nothing"


def test_a_real_regression_still_fails_and_too_few_overlapping_samples_never_pass() -> None:
    """At the shipped defaults: the stable pods' 5 min baseline and the new pods' first minute,
    two pods each; then as few samples as `min_samples` allows, where the overlap leaves too
    few independent ones to fail anything: hold, not a pass that could not have failed."""
    rng = np.random.default_rng(8)
    params = AnalysisParams(0.01, 10, 60, overlap=3.0)
    stable = _error_ratios(rng, 30, 30, 10)
    bad = [x + 0.14 for x in _error_ratios(rng, 6, 30, 10)]
    r = judge_metric(ERR, bad, stable, params)
    assert r.verdict is Verdict.FAIL and r.p is not None and r.p < params.alpha, r.reason
    r = judge_metric(ERR, bad[:10], stable[:10], params)
    assert r.verdict is Verdict.HOLD, r.reason
    assert r.reason.startswith("too few samples to tell: 10 new, 10 stable, each rate window "
                               "spanning 3 samples; even every new one worse would give p=0.0")
    assert judge_metric(ERR, bad[:10], stable[:10], AnalysisParams(0.01, 10, 60)).verdict \
        is Verdict.FAIL, "independent samples: ten a side are enough"


def test_a_metric_fails_only_when_significant_and_beyond_its_margin() -> None:
    stable = [0.010 + 0.001 * (i % 5) for i in range(30)]
    bad = [0.15 + 0.01 * (i % 5) for i in range(30)]
    r = judge_metric(ERR, bad, stable, P)
    assert r.verdict is Verdict.FAIL and r.p is not None and r.p < 1e-6
    assert r.median_new == pytest.approx(0.17) and r.threshold == pytest.approx(0.02)
    assert "median 0.17 new vs 0.012 stable" in r.reason and "30/30 samples" in r.reason
    slightly = [x + 0.005 for x in stable]  # significant, but within the margin
    r = judge_metric(ERR, slightly, stable, P)
    assert r.verdict is Verdict.PASS and r.p is not None and r.p < 0.01
    assert "within the margin" in r.reason
    noisy = [0.012 * (0.2 if i % 2 else 1.8) for i in range(30)]  # wide, same median area
    assert judge_metric(ERR, noisy, stable, P).verdict is Verdict.PASS
    r = judge_metric(ERR, bad[:9], stable, P)
    assert r.verdict is Verdict.HOLD and "too few samples: 9 new, 30 stable" in r.reason


def test_missing_evidence_holds_and_never_fails() -> None:
    stable = [0.01] * 20 + [0.011] * 20
    bad = [0.2] * 40
    lat = MetricSpec("latency", 0.025, 0.5)
    a = analyse([ERR, lat], {"error-ratio": (bad, stable)}, {"latency": "site-a: timeout"},
                120, P)
    assert a.verdict is Verdict.HOLD, "one metric unreadable: hold, although another fails"
    assert "latency: no data: site-a: timeout" in a.reason
    a = analyse([ERR], {"error-ratio": (bad, stable)}, {}, 30, P)
    assert a.verdict is Verdict.HOLD and a.reason == "analysis window 30s of 60s"
    a = analyse([ERR], {"error-ratio": (bad, stable)}, {}, 61, P)
    assert a.verdict is Verdict.FAIL and a.reason.startswith("error-ratio worse: median 0.2")
    a = analyse([ERR], {"error-ratio": ([], [])}, {}, 600, P)
    assert a.verdict is Verdict.HOLD and "too few samples: 0 new, 0 stable" in a.reason
    a = analyse([ERR], {"error-ratio": (stable, stable)}, {}, 61, P)
    assert a.verdict is Verdict.PASS


# -- decisions -----------------------------------------------------------------------------
def _rev(h: str, n: int, v: str) -> Revision:
    return Revision(h, n, v, {"metadata": {"labels": {"version": v}}}, 0.0)


def _w(name: str, *, app: str = "shop", cur: Revision | None = None,
       prev: Revision | None = None, settled: bool = False, **kw: Any) -> Workload:
    return Workload("Deployment", "default", name, app, kw.pop("paused", False), cur, prev,
                    3, 3 if settled else 1, settled, **kw)


V1, V2 = _rev("aaa", 1, "1.0"), _rev("bbb", 2, "2.0")
FAIL = Analysis(Verdict.FAIL, "error-ratio worse", 90)


def test_a_failed_verdict_rolls_back_and_holds_unfinished_siblings() -> None:
    ws = [_w("shop-a", cur=V2, prev=V1),
          _w("shop-b", cur=V1, settled=True),                     # not started: held
          _w("shop-c", cur=V2, prev=V1),                           # mid-rollout: held
          _w("shop-d", cur=V2, prev=V1, settled=True),             # finished on 2.0: left
          _w("shop-e", cur=V1, settled=True, hold={"by": "x"}),    # held already
          _w("other", app="other", cur=V1, settled=True)]
    acts = decide_rollouts(ws, {"default/shop-a": FAIL})
    assert [(a.kind, a.workload.name) for a in acts] == [
        ("rollback", "shop-a"), ("hold", "shop-b"), ("hold", "shop-c")]
    assert acts[0].to == V1 and acts[1].cause == "default/shop-a"
    assert "failed analysis of version 2.0" in acts[1].reason


def test_decisions_across_a_restart_and_in_dry_run() -> None:
    half = _w("shop-a", cur=V2, prev=V1, paused=True,
              record={"state": "failed", "revision": "bbb", "reason": "error-ratio worse"})
    acts = decide_rollouts([half], {})
    assert [(a.kind, a.reason) for a in acts] == [("rollback", "error-ratio worse")], \
        "a rollback cut half way is finished"
    back = _w("shop-a", cur=_rev("aaa", 3, "1.0"), prev=V2, settled=True,
              record={"state": "rolled-back", "revision": "bbb", "to": "aaa"})
    assert back.rolled_back and decide_rollouts([back], {}) == [], "never twice"
    fresh = _w("shop-a", cur=V2, prev=V1)
    assert decide_rollouts([fresh], {"default/shop-a": FAIL},
                           frozenset({"rollback:default/shop-a"})) == [], "planned in dry-run"
    assert decide_rollouts([_w("shop-a", cur=V2)], {"default/shop-a": FAIL}) == [], \
        "no earlier revision: nothing to roll back to"


# -- the emulated controllers ---------------------------------------------------------------
def test_deployment_controller_revisions_pause_and_rollback(fleet: Fleet,
                                                            apps: None) -> None:
    fleet.deploy_app("ctl", "1.0", sites=["site-a"], replicas=2)
    name = "ctl-site-a"

    def rss() -> dict[str, tuple[int, str]]:
        return {r["spec"]["template"]["metadata"]["labels"]["version"]:
                (r["spec"]["replicas"], r["metadata"]["annotations"][
                    "deployment.kubernetes.io/revision"])
                for r in fleet.store.list(REPLICASETS, "default")[0]
                if r["metadata"]["name"].startswith(name)}

    def settled() -> bool:
        d = fleet.store.get(DEPLOYMENTS, "default", name)
        st = d.get("status") or {}
        return st.get("observedGeneration") == d["metadata"]["generation"] and \
            st.get("updatedReplicas") == st.get("replicas") == 2

    poll(settled, 10, "first rollout")
    assert rss() == {"1.0": (2, "1")}
    fleet.upgrade("ctl", "2.0", "site-a")
    poll(settled, 20, "second rollout")
    assert rss() == {"1.0": (0, "1"), "2.0": (2, "2")}
    assert fleet.store.get(DEPLOYMENTS, "default", name)["metadata"]["generation"] == 2
    fleet.store.mutate(DEPLOYMENTS, "default", name,
                       lambda o: o["spec"].__setitem__("paused", True))
    fleet.upgrade("ctl", "3.0", "site-a")
    poll(lambda: fleet.store.get(DEPLOYMENTS, "default", name)["status"]["updatedReplicas"] == 0,
         5, "the paused deployment's status")
    assert "3.0" not in rss(), "a paused Deployment starts no new ReplicaSet"
    fleet.upgrade("ctl", "1.0", "site-a")  # back to the first template: its ReplicaSet, renumbered
    fleet.store.mutate(DEPLOYMENTS, "default", name,
                       lambda o: o["spec"].__setitem__("paused", False))
    poll(settled, 20, "rollback rollout")
    assert rss() == {"1.0": (2, "3"), "2.0": (0, "2")}


def test_daemonset_controller_revisions_and_on_delete(fleet: Fleet, apps: None) -> None:
    fleet.deploy_app("dsc", "1.0", sites=["site-b"], kind="DaemonSet")
    name = "dsc-site-b"

    def versions() -> list[str]:
        return sorted(p["metadata"]["labels"]["version"]
                      for p in fleet.store.list(PODS, "default")[0]
                      if p["metadata"]["name"].startswith(name + "-"))

    poll(lambda: versions() == ["1.0"] * 5, 10, "a pod on each of the site's 5 nodes")
    fleet.store.mutate(DAEMONSETS, "default", name, lambda o: o["spec"].__setitem__(
        "updateStrategy", {"type": "OnDelete"}))
    fleet.upgrade("dsc", "2.0", "site-b", kind="DaemonSet")
    crs = {c["revision"] for c in fleet.store.list(REVISIONS, "default")[0]
           if c["metadata"]["name"].startswith(name)}
    poll(lambda: len([c for c in fleet.store.list(REVISIONS, "default")[0]
                      if c["metadata"]["name"].startswith(name)]) == 2, 5, "a second revision")
    assert crs <= {1, 2}
    assert versions() == ["1.0"] * 5, "OnDelete: no pod replaced"
    fleet.store.mutate(DAEMONSETS, "default", name, lambda o: o["spec"].__setitem__(
        "updateStrategy", {"type": "RollingUpdate"}))
    poll(lambda: versions() == ["2.0"] * 5, 30, "rolling update, node by node")


# -- the guard, live -----------------------------------------------------------------------
GUARD = {"enabled": True, "min_window": 10, "step": 2, "rate_window": 4, "baseline": 60,
         "hold_deadline": 8}


@pytest.fixture
def apps(fleet: Fleet) -> Iterator[None]:
    fleet.remove_apps()
    fleet.versions.clear()
    yield
    fleet.remove_apps()
    fleet.versions.clear()


class G:
    """A guard (the production class) in this process, rounds driven by the test."""

    def __init__(self, fleet: Fleet, tmp: Path, mode: str = "enforce", **rollouts: Any) -> None:
        self.fleet = fleet
        self.cfg = parse_config(yaml.safe_dump({
            "mode": mode, "query_timeout": 1.5, "rules": [], "taint_domain": DOMAIN,
            "sites": [{"name": s, "prometheus": u} for s, u in fleet.prometheus_urls().items()],
            "cluster": {"url": fleet.api.url}, "journal": str(tmp / "journal.db"),
            "rollouts": {**GUARD, **rollouts}}), str(tmp / "sentinel.yaml"), {})
        self.registry = CollectorRegistry()
        self.journal = Journal(tmp / "journal.db")
        api = make_api_client(self.cfg.cluster)
        self.guard = rollout_guard(self.cfg, api, make_recorder(self.cfg, api, self.journal),
                                   Metrics(self.registry, mode)).start()
        assert self.guard.view.wait_synced(10)
        self.acted: list[tuple[str, str]] = []

    def round(self) -> dict[str, dict[str, Any]]:
        self.acted += [(a.kind, a.workload.name) for a in self.guard.run_round()]
        return {w["name"]: w for w in self.guard.status_values()}

    def until(self, pred: Any, timeout: float, what: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}

        def step() -> bool:
            nonlocal out
            out = self.round()
            return bool(pred(out))

        poll(step, timeout, what)
        return out

    def close(self) -> None:
        self.guard.close()
        self.journal.close()


@pytest.fixture
def guard(fleet: Fleet, apps: None, tmp_path: Path) -> Iterator[Any]:
    made: list[G] = []

    def make(**kw: Any) -> G:
        g = G(fleet, tmp_path, **kw)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()


def _history(fleet: Fleet, app: str, sites: list[str] | None = None, seconds: int = 10) -> None:
    """Until each of the sites' Prometheus holds `seconds` scrapes of every pod of the app: the
    stable version's baseline, as a long-running version has."""
    def enough() -> bool:
        q = f'min(count_over_time(app_requests_total{{app="{app}",code="200"}}[1m]))'
        for site in sites or fleet.sites:
            r = httpx.get(f"{fleet.proms[site].url}/api/v1/query", params={"query": q},
                          timeout=2).json()
            res = r["data"]["result"]
            if not res or float(res[0]["value"][1]) < seconds:
                return False
        return True

    poll(enough, seconds + 20, f"{seconds}s of {app}'s metrics in every site's Prometheus")


def _settled(name: str) -> Any:
    return lambda rows: name in rows and rows[name]["settled"] and \
        rows[name]["state"] in ("stable", "passed")


def _template_writes(fleet: Fleet, name: str) -> list[str]:
    """The version of every pod template the Deployment was given, in order."""
    out = []
    for e in fleet.store.history(DEPLOYMENTS):
        if e.obj["metadata"]["name"] == name:
            v = e.obj["spec"]["template"]["metadata"]["labels"]["version"]
            if not out or out[-1] != v:
                out.append(v)
    return out


def _started(fleet: Fleet, name: str, version: str) -> bool:
    """Whether a ReplicaSet (the start of a rollout) for that version ever existed."""
    return any(r["metadata"]["name"].startswith(name + "-") and
               r["spec"]["template"]["metadata"]["labels"]["version"] == version
               for r in fleet.store.list(REPLICASETS, "default")[0])


def test_a_bad_version_is_rolled_back_in_its_first_group_and_goes_no_further(
        fleet: Fleet, guard: Any) -> None:
    g = guard()
    fleet.deploy_app("shop", "1.0")
    g.until(lambda r: all(_settled(f"shop-{s}")(r) for s in fleet.sites), 20, "stable")
    _history(fleet, "shop")
    fleet.set_version("2.0", "bad-errors")
    fleet.upgrade("shop", "2.0", "site-a")
    # The waves go on as a person scripts them: the next node group 15 s after the one before.
    t0, later = time.monotonic(), list(fleet.sites[1:])

    def waves(r: dict[str, dict[str, Any]]) -> bool:
        if later and time.monotonic() - t0 > 15 * (len(fleet.sites) - len(later)):
            fleet.upgrade("shop", "2.0", later.pop(0))
        return not later and r["shop-site-a"]["state"] == "rolled-back"

    rows = g.until(waves, 90, "rolled back, and every wave given the new template")
    a = rows["shop-site-a"]
    assert a["state"] == "rolled-back", a
    assert a["current"]["version"] == "1.0" and a["record"]["version"] == "2.0"
    assert "error-ratio worse" in a["record"]["reason"]
    assert _template_writes(fleet, "shop-site-a") == ["1.0", "2.0", "1.0"]
    for s in fleet.sites[1:]:
        d = fleet.store.get(DEPLOYMENTS, "default", f"shop-{s}")
        assert d["spec"]["paused"] is True, s
        hold = json.loads(d["metadata"]["annotations"][f"{DOMAIN}/rollout-hold"])
        assert hold["cause"] == "default/shop-site-a"
        assert not _started(fleet, f"shop-{s}", "2.0"), f"{s} started the bad version"
    assert g.acted.count(("rollback", "shop-site-a")) == 1
    # journal, Event, metrics
    acts = g.journal.actions()
    assert [(x["kind"], x["key"], x["outcome"]) for x in acts] == [
        ("rollout-rollback", "default/shop-site-a", "applied"),
        ("rollout-hold", "default/shop-site-b", "applied"),
        ("rollout-hold", "default/shop-site-c", "applied")]
    ev = json.loads(acts[0]["evidence"])
    assert ev["analysis"]["verdict"] == "fail"
    em = next(m for m in ev["analysis"]["metrics"] if m["metric"] == "error-ratio")
    assert em["median_new"] > 0.08 and em["median_stable"] < 0.03 and em["p"] < 0.01
    events = [e for e in fleet.store.list(EVENTS, "default")[0]
              if e["reason"] == "SentinelRolloutRollback"]
    assert len(events) == 1 and "from revision 2 (version 2.0) to revision 1 (version 1.0)" \
        in events[0]["message"]
    metrics = generate_latest(g.registry).decode()
    assert ('sentinel_rollout_actions_total{action="rollback",namespace="default",'
            'outcome="applied",workload="shop-site-a"} 1.0') in metrics
    assert ('sentinel_rollout_held_by_sentinel{app="shop",namespace="default",'
            'workload="shop-site-b"} 1.0') in metrics


def test_noisy_but_healthy_versions_are_never_rolled_back(fleet: Fleet, guard: Any) -> None:
    g = guard()
    assert g.guard.params.overlap == 2.0, "a 4 s window every 2 s: two samples share each"
    names = []
    for i in range(2):
        names += fleet.deploy_app(f"noisy{i}", "1.0")
    g.until(lambda r: all(_settled(n)(r) for n in names), 20, "stable")
    _history(fleet, "noisy0")
    _history(fleet, "noisy1")
    fleet.set_version("1.1", "noisy")
    for i in range(2):
        for s in fleet.sites:
            fleet.upgrade(f"noisy{i}", "1.1", s)
    rows = g.until(lambda r: all(r[n]["state"] == "passed" for n in names), 60,
                   "every noisy rollout passed")
    assert g.acted == [], f"false rollbacks: {g.acted}"
    assert all(rows[n]["current"]["version"] == "1.1" for n in names)
    print(f"noisy healthy rollouts: {len(names)}, false rollbacks: 0/{len(names)}")
    notes = [n for n in g.journal.notes() if n["reason"] == "rollout-passed"]
    assert len(notes) == len(names) and "passed analysis against revision 1" in notes[0]["text"]


def test_a_dark_site_holds_the_verdict_and_analysis_resumes(fleet: Fleet, guard: Any) -> None:
    g = guard()
    fleet.deploy_app("dark", "1.0", sites=["site-b"])
    g.until(_settled("dark-site-b"), 20, "stable")
    _history(fleet, "dark", ["site-b"])
    fleet.set_version("2.0", "bad-latency")
    fleet.upgrade("dark", "2.0", "site-b")
    g.until(lambda r: r["dark-site-b"]["state"] == "analysing", 10, "analysing")
    fleet.uplinks["site-b"].cut("refuse")
    try:
        rows = g.until(lambda r: (r["dark-site-b"]["hold_seconds"] or 0) > 12, 40,
                       "a hold past the window and the deadline")
        a = rows["dark-site-b"]
        assert g.acted == [], "missing data must never roll back"
        assert a["analysis"]["verdict"] == "hold" and "no data: site site-b" in \
            a["analysis"]["reason"]
        assert a["hold_overdue"] and a["current"]["version"] == "2.0"
        assert any(n["reason"] == "rollout-hold-overdue" for n in g.journal.notes())
        assert ('sentinel_rollout_hold_overdue{app="dark",namespace="default",'
                'workload="dark-site-b"} 1.0') in generate_latest(g.registry).decode()
    finally:
        fleet.uplinks["site-b"].restore()
    rows = g.until(lambda r: r["dark-site-b"]["state"] == "rolled-back", 30,
                   "analysis resumed and judged")
    assert "latency-p95 worse" in rows["dark-site-b"]["record"]["reason"]
    assert g.acted == [("rollback", "dark-site-b")]


def test_dry_run_plans_once_and_touches_nothing(fleet: Fleet, guard: Any) -> None:
    g = guard(mode="dry-run")
    fleet.deploy_app("dry", "1.0", sites=["site-a", "site-c"])
    g.until(lambda r: _settled("dry-site-a")(r) and _settled("dry-site-c")(r), 20, "stable")
    _history(fleet, "dry", ["site-a", "site-c"])
    fleet.set_version("2.0", "crashloop")
    fleet.upgrade("dry", "2.0", "site-a")
    rows = g.until(lambda r: r["dry-site-a"]["state"] == "rolled-back (dry-run)", 40,
                   "the planned rollback")
    for _ in range(3):
        rows = g.round()
    assert g.acted == [("rollback", "dry-site-a"), ("hold", "dry-site-c")]
    assert rows["dry-site-c"]["state"] == "held (dry-run)"
    for name in ("dry-site-a", "dry-site-c"):
        d = fleet.store.get(DEPLOYMENTS, "default", name)
        assert not d["spec"].get("paused") and f"{DOMAIN}/rollout" not in \
            (d["metadata"].get("annotations") or {}), "dry-run wrote to the workload"
    assert _template_writes(fleet, "dry-site-a") == ["1.0", "2.0"]
    acts = g.journal.actions()
    assert {a["mode"] for a in acts} == {"dry-run"} and len(acts) == 2
    assert "restarts worse" in acts[0]["reason"]


def test_a_daemonset_is_rolled_back_from_its_controller_revision(fleet: Fleet,
                                                                 guard: Any) -> None:
    g = guard()
    fleet.deploy_app("agent", "1.0", sites=["site-c"], kind="DaemonSet")
    g.until(_settled("agent-site-c"), 20, "stable")
    _history(fleet, "agent", ["site-c"])
    fleet.set_version("2.0", "bad-errors")
    fleet.upgrade("agent", "2.0", "site-c", kind="DaemonSet")
    rows = g.until(lambda r: r["agent-site-c"]["state"] == "rolled-back", 40, "rolled back")
    ds = fleet.store.get(DAEMONSETS, "default", "agent-site-c")
    assert ds["spec"]["template"]["metadata"]["labels"]["version"] == "1.0"
    assert ds["spec"].get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    assert rows["agent-site-c"]["kind"] == "DaemonSet"
    poll(lambda: all(p["metadata"]["labels"]["version"] == "1.0"
                     for p in fleet.store.list(PODS, "default")[0]
                     if p["metadata"]["name"].startswith("agent-site-c-")), 30, "old pods back")


def test_a_rollback_cut_by_a_killed_sentinel_is_finished_once(fleet: Fleet, apps: None,
                                                              tmp_path: Path) -> None:
    (tmp_path / "write.token").write_text(WRITE + "\n")
    srv = Serve(fleet, tmp_path, rollouts={**GUARD, "interval": "1s"},
                api={"tokens": [{"name": "oncall", "token_file": "write.token",
                                 "write": True}]})
    fleet.deploy_app("cut", "1.0", sites=["site-a", "site-b"])
    stall = fleet.api.stall("PATCH", "/deployments/cut-site-a", "application/json-patch")
    try:
        srv.start()
        poll(lambda: {w["name"]: w["state"] for w in js(srv, "rollouts")["workloads"]} ==
             {"cut-site-a": "stable", "cut-site-b": "stable"}, 30, "stable")
        _history(fleet, "cut", ["site-a", "site-b"])
        fleet.set_version("2.0", "bad-errors")
        fleet.upgrade("cut", "2.0", "site-a")
        poll(lambda: stall.waiting > 0, 60, "the rollback patch in flight")
        srv.kill()  # between the pause (done) and the template restore (in flight)
    finally:
        fleet.api.unstall()
        srv.kill()
    d = fleet.store.get(DEPLOYMENTS, "default", "cut-site-a")
    assert d["spec"]["paused"] and d["spec"]["template"]["metadata"]["labels"]["version"] == \
        "2.0", "the stalled restore must not have been applied"
    srv.start()
    try:
        poll(lambda: {w["name"]: w["state"] for w in js(srv, "rollouts")["workloads"]}.get(
            "cut-site-a") == "rolled-back", 30, "the restarted sentinel finishes the rollback")
        t = js(srv, "rollouts")["checked_at"]
        poll(lambda: js(srv, "rollouts")["checked_at"] > t + 3, 20, "a few more rounds")
        assert _template_writes(fleet, "cut-site-a") == ["1.0", "2.0", "1.0"], \
            "rolled back exactly once, to the good revision"
        revs = sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                      for r in fleet.store.list(REPLICASETS, "default")[0]
                      if r["metadata"]["name"].startswith("cut-site-a-"))
        assert revs == ["2", "3"], "one renumbering of the restored revision, no second undo"
        hist = js(srv, "history")
        outcomes = [(e["kind"], e["outcome"]) for e in hist if e["type"] == "action"
                    and e["key"] == "default/cut-site-a"]
        assert outcomes == [("rollout-rollback", "interrupted"), ("rollout-rollback", "applied")]
        # the CLI: the table, resume of the held sibling, a manual rollback
        table = ok(srv, "rollouts")
        assert "cut-site-a" in table and "rolled-back" in table
        assert "held" in {w["name"]: w["state"] for w in js(srv, "rollouts")["workloads"]}[
            "cut-site-b"]
        assert "Rollout default/cut-site-b: held" in ok(srv, "status")
        out = ok(srv, "rollouts", "resume", "cut-site-b")
        assert "resume default/cut-site-b by alice via oncall: done" in out
        d = fleet.store.get(DEPLOYMENTS, "default", "cut-site-b")
        assert not d["spec"]["paused"] and f"{DOMAIN}/rollout-hold" not in \
            d["metadata"]["annotations"]
        r = cli(srv, "rollouts", "rollback", "cut-site-b", "--reason", "try it")
        assert r.exit_code != 0 and "default/cut-site-b: no earlier revision to roll back to" \
            in r.stderr
        r = cli(srv, "rollouts", "rollback", "cut-site-a")
        assert r.exit_code != 0 and "--reason" in r.stderr
    finally:
        srv.kill()
