"""`explain` from the real detect and decide: each verdict of the two-witness table, a budget
stop, a site-guard hold, an exemption, an override, a pause and dry-run, told in plain words;
and the override rules in decide."""

from __future__ import annotations

from typing import Any

import pytest

from sentinel.core.decide import DecideParams, PolicyState, decide
from sentinel.core.detect import DetectParams, detect
from sentinel.core.explain import VERDICT_MEANING, explain_node
from sentinel.core.model import (
    NODE_KEY,
    ActionKind,
    Held,
    HeldKey,
    NodeInfo,
    Override,
    OverrideKind,
    Ready,
    SiteView,
    Snapshot,
    Verdict,
)
from sentinel.core.overrides import OverrideRequest, check_request, replaced_by
from sentinel.core.timefmt import ago, span

from .test_core_tables import DOWN, PROXY, RULES, P, S, node, view

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
DEFAULT = DecideParams()


def run(nodes: dict[str, NodeInfo], v: SiteView, *, params: DecideParams = DEFAULT,
        overrides: tuple[Override, ...] = (), mode: str = "enforce", steps: int = 2,
        who: str = "n1", detect_params: DetectParams = P) -> dict[str, Any]:
    """Cycles 100 s apart (past every `for`), then explain `who` after the last one."""
    state = PolicyState()
    now = T0
    for _ in range(steps):
        snap = Snapshot(now, nodes, {"s": v}, {}, overrides)
        det = detect(snap, RULES, detect_params)
        plan, state = decide(snap, det, state, params, now)
        now += 100
    return explain_node(nodes[who], snapshot=snap, detection=det, plan=plan, state=state,
                        params=params, mode=mode, now=now - 100, journal=[])


def text(out: dict[str, Any]) -> str:
    return "\n".join(out["story"])


@pytest.mark.parametrize(("ready", "v", "verdict", "planned"), [
    (Ready.TRUE, view(), Verdict.HEALTHY, []),
    (Ready.TRUE, view(firing=PROXY), Verdict.COMPONENT_FAULT, ["isolate kube-proxy"]),
    (Ready.UNKNOWN, view(), Verdict.CLOUD_LINK, ["isolate edgecore"]),
    (Ready.FALSE, view(firing=DOWN), Verdict.NODE_FAILURE, ["isolate node"]),
    (Ready.UNKNOWN, view(reachable=False), Verdict.PARTITION, []),
    (Ready.UNKNOWN, view(present=()), Verdict.UNKNOWN, []),
], ids=lambda x: x.value if isinstance(x, Verdict) else None)
def test_each_verdict_is_explained(ready: Ready, v: SiteView, verdict: Verdict,
                                   planned: list[str]) -> None:
    out = run({"n1": node(ready=ready)}, v)
    story = text(out)
    assert out["evidence"]["verdict"] == verdict.value
    assert f"Verdict {verdict.value}: {VERDICT_MEANING[verdict]}." in story
    assert [f"{p['kind']} {p['key']}" for p in out["planned"]] == planned
    for p in planned:
        assert f"This cycle sentinel did {p}" in story
    if verdict is Verdict.PARTITION:
        assert "UNREACHABLE (refused)" in story
        assert "Not done (partition suspected)" in story
    if verdict is Verdict.UNKNOWN:
        assert "Not done (no trustworthy data)" in story
    if verdict is Verdict.NODE_FAILURE:
        assert "Rule node-down matches (value 0)" in story
        assert "-> level 2 (node), needs 30 s, matching for 1 min 40 s." in story


def test_release_time_is_told() -> None:
    held = Held({"kube-proxy": HeldKey("kube-proxy", "NoSchedule", "proxy-down", T0 - 50, "d1")})
    out = run({"n1": node(held=held)}, view(), params=DecideParams(release_after=300), steps=1)
    assert out["level"] == 1
    assert "n1 is isolated at level 1: kube-proxy (NoSchedule)." in text(out)
    assert out["release"]["kube-proxy"] == (
        "kube-proxy: clear since just now, 08:00 UTC; released in 5 min, 08:05 UTC if it "
        "stays clear (release_after 5 min).")
    out = run({"n1": node(held=held)}, view(), params=DecideParams(release_after=300), steps=2)
    assert f"released {ago(T0 + 300, T0 + 100)}" in out["release"]["kube-proxy"]
    out = run({"n1": node(held=held)}, view(firing=PROXY), steps=1)
    assert out["release"]["kube-proxy"] == "kube-proxy: still matching; no release while it does."


def test_budget_stop_is_explained() -> None:
    nodes = {f"n{i}": node(f"n{i}", Ready.TRUE) for i in range(1, 5)}
    v = view(present=tuple(nodes), firing={"proxy-down": dict.fromkeys(nodes, 0.0)})
    out = run(nodes, v, params=DecideParams(site_max_fraction=0.25), who="n4",
              detect_params=DetectParams(site_wide_threshold=1.0))
    assert out["planned"] == []
    assert "Not done (budget stop): would isolate (proxy-down" in text(out)
    assert "1 of 4 nodes of site s isolated (max 1)" in text(out)


def test_site_guard_hold_is_explained() -> None:
    nodes = {f"n{i}": node(f"n{i}", Ready.FALSE) for i in range(1, 4)}
    v = view(present=(), firing={"node-down": dict.fromkeys(nodes, 0.0)})
    out = run(nodes, v, detect_params=DetectParams(site_wide_threshold=1.0))
    assert out["site_state"] == "guarded"
    assert "GUARDED: 3 of 3 nodes fail together" in text(out)
    assert "Not done (site guard): 3 of 3 nodes of site s fail together" in text(out)
    assert all(p["key"] != NODE_KEY for p in out["planned"])


def test_site_wide_symptom_is_explained() -> None:
    nodes = {f"n{i}": node(f"n{i}", Ready.TRUE) for i in range(1, 6)}
    failing = {n: 0.0 for n in list(nodes)[:4]}
    out = run(nodes, view(present=tuple(nodes), firing={"proxy-down": failing}))
    assert out["planned"] == []
    assert "Not done (site-wide symptom): kube-proxy failing on 80 % of site s (4 of 5 " \
        "nodes): site-wide, not isolating nodes one by one" in text(out)


def test_exemption_is_explained() -> None:
    out = run({"n1": node(exempt=True)}, view(firing=PROXY))
    assert out["planned"] == []
    assert "exempt by its labels" in text(out)
    assert "Not done (exemption): node is exempt" in text(out)


def _ov(kind: OverrideKind, **kw: Any) -> Override:
    return Override(kw.pop("id", "ab12cd34"), kind, kw.pop("reason", "disk swap at 09:00"),
                    "alice via oncall", T0 - 10, T0 + 3600, **kw)


def test_manual_isolation_beats_the_rules_and_is_explained() -> None:
    ov = _ov(OverrideKind.ISOLATE, node="n1", key=NODE_KEY)
    out = run({"n1": node()}, view(), overrides=(ov,))
    assert [(p["kind"], p["key"]) for p in out["planned"]] == [("isolate", NODE_KEY)]
    story = text(out)
    assert "isolated by hand (node) by alice via oncall until 09:00 UTC (override ab12cd34): " \
           "disk swap at 09:00" in story
    assert "Override ab12cd34 (isolate) by alice via oncall" in story
    assert out["override"]["id"] == "ab12cd34"


def test_release_override_frees_the_node_and_is_explained() -> None:
    held = Held({NODE_KEY: HeldKey(NODE_KEY, "NoExecute", "node-down", T0 - 500, "d1")})
    ov = _ov(OverrideKind.RELEASE, node="n1")
    out = run({"n1": node(ready=Ready.FALSE, held=held)}, view(firing=DOWN), overrides=(ov,),
              steps=1)
    assert [(p["kind"], p["key"]) for p in out["planned"]] == [("release", NODE_KEY)]
    assert "Not done (override): released by hand by alice" in text(out)


def test_pause_is_explained_and_holds_every_rule_action() -> None:
    held = Held({"kube-proxy": HeldKey("kube-proxy", "NoSchedule", "proxy-down", T0 - 900, "d")})
    nodes = {"n1": node(ready=Ready.FALSE), "n2": node("n2", held=held)}
    pause = _ov(OverrideKind.PAUSE, site="s")
    v = view(present=("n2",), firing=DOWN)
    params = DecideParams(release_after=1, site_max_fraction=1.0, fleet_max_fraction=1.0)
    out = run(nodes, v, overrides=(pause,), params=params, steps=3)
    assert out["planned"] == []
    assert "Actions are PAUSED on site s by alice via oncall" in text(out)
    assert "Not done (paused): would isolate (node-down" in text(out)
    out2 = run(nodes, v, overrides=(pause,), params=params, steps=3, who="n2")
    assert out2["planned"] == [] and "would release kube-proxy" in text(out2)
    other_site = _ov(OverrideKind.PAUSE, site="elsewhere")
    out3 = run(nodes, v, overrides=(other_site,), params=params, steps=3)
    assert [p["key"] for p in out3["planned"]] == [NODE_KEY]


def test_dry_run_is_explained() -> None:
    out = run({"n1": node(ready=Ready.FALSE)}, view(firing=DOWN), mode="dry-run")
    assert out["dry_run"] is True
    assert out["story"][0].startswith("DRY-RUN: sentinel only plans and journals")
    assert "This cycle sentinel would isolate node" in text(out)


def test_manual_budget_and_force() -> None:
    nodes = {f"n{i}": node(f"n{i}") for i in range(1, 5)}
    v = view(present=tuple(nodes))
    ovs = tuple(_ov(OverrideKind.ISOLATE, id=f"id{i}", node=f"n{i}", key="manual",
                    force=i == 3) for i in (1, 2, 3))
    snap = Snapshot(T0, nodes, {"s": v}, {}, ovs)
    plan, _ = decide(snap, detect(snap, RULES, P), PolicyState(),
                     DecideParams(site_max_fraction=0.25), T0)
    assert sorted(a.node for a in plan.actions) == ["n1", "n3"]  # n3 forced past the budget
    assert [n.reason for n in plan.notes if n.node == "n2"] == ["budget"]


def test_ended_manual_isolation_is_released_at_once() -> None:
    held = Held({"manual": HeldKey("manual", "NoSchedule", "manual-ab12cd34", T0 - 50, "d")})
    snap = Snapshot(T0, {"n1": node(held=held)}, {"s": view()})
    plan, state = decide(snap, detect(snap, RULES, P), PolicyState(),
                         DecideParams(release_after=300), T0)
    assert [(a.kind, a.key) for a in plan.actions] == [(ActionKind.RELEASE, "manual")]
    assert "manual isolation ab12cd34 expired or was lifted" in plan.actions[0].reason
    assert state.last_release == {}  # a person's release is no flap


def test_newest_node_override_wins() -> None:
    iso = _ov(OverrideKind.ISOLATE, id="old", node="n1", key="manual")
    rel = Override("new", OverrideKind.RELEASE, "changed my mind", "bob", T0 - 5, T0 + 60,
                   node="n1")
    snap = Snapshot(T0, {"n1": node()}, {"s": view()}, {}, (rel, iso))
    plan, _ = decide(snap, detect(snap, RULES, P), PolicyState(), DecideParams(), T0)
    assert plan.actions == ()


def test_a_node_override_replaces_the_ones_in_force_on_that_node_only() -> None:
    iso = _ov(OverrideKind.ISOLATE, id="iso", node="n1", key="manual")
    other = _ov(OverrideKind.ISOLATE, id="other", node="n2", key="manual")
    pause = Override("pause", OverrideKind.PAUSE, "maintenance", "bob", T0, T0 + 60, site="s")
    rel = Override("rel", OverrideKind.RELEASE, "swap done", "bob", T0 + 5, T0 + 65, node="n1")
    assert [o.id for o in replaced_by(rel, (iso, other, pause, rel))] == ["iso"]
    assert replaced_by(pause, (iso, other, pause)) == [], "a pause replaces no node's override"
    later = Override("later", OverrideKind.EXEMPT, "vendor", "carol", T0 + 6, T0 + 60, node="n1")
    assert [o.id for o in replaced_by(rel, (iso, rel, later))] == ["iso"], \
        "one set a moment later by someone else is not lifted by this one"
    # as the store gives it back: its time to the microsecond, a hair earlier than written
    stored = Override("rel", OverrideKind.RELEASE, "swap done", "bob", T0 + 5 - 4e-7, T0 + 65,
                      node="n1")
    assert [o.id for o in replaced_by(rel, (iso, stored, later))] == ["iso"], \
        "never itself"


@pytest.mark.parametrize(("req", "problem"), [
    (OverrideRequest(OverrideKind.ISOLATE, "", 60, node="n"), "reason: say why"),
    (OverrideRequest(OverrideKind.ISOLATE, "why", 0, node="n", key="x"), "ttl: must be"),
    (OverrideRequest(OverrideKind.ISOLATE, "why", 60, node="n", key="a b"), "key: 'a b'"),
    (OverrideRequest(OverrideKind.PAUSE, "why", 60, site="mars"), "no site 'mars'"),
    (OverrideRequest(OverrideKind.RELEASE, "why", 60), "node: release needs a node"),
    (OverrideRequest(OverrideKind.ISOLATE, "short", 60, node="n", key="x", force=True),
     "at least 10 characters"),
    (OverrideRequest(OverrideKind.EXEMPT, "why", 60, node="n", force=True),
     "force: only isolate"),
])
def test_bad_override_requests(req: OverrideRequest, problem: str) -> None:
    assert any(problem in p for p in check_request(req, max_ttl=3600, sites=["s"]))


def test_good_override_request() -> None:
    req = OverrideRequest(OverrideKind.ISOLATE, "disk swap", 60, node="n", key=NODE_KEY)
    assert check_request(req, max_ttl=3600, sites=[S]) == []


@pytest.mark.parametrize(("delta", "expect"), [
    (-0.2, "just now, 08:00 UTC"), (45, "45 s ago, 07:59 UTC"), (-720, "in 12 min, 08:12 UTC"),
    (3 * 3600 + 300, "3 h 05 min ago, 04:55 UTC"), (2 * 86400, "2 d ago, 2027-01-13 08:00 UTC"),
])
def test_times_read_relative_and_absolute(delta: float, expect: str) -> None:
    assert ago(T0 - delta, T0) == expect
    assert [span(s) for s in (59, 100, 600, 7200)] == ["59 s", "1 min 40 s", "10 min", "2 h"]



def test_an_unreadable_key_is_told_as_held_not_as_clear() -> None:
    held = Held({"kube-proxy": HeldKey("kube-proxy", "NoSchedule", "proxy-down", T0 - 50, "d")})
    out = run({"n1": node(ready=Ready.FALSE, held=held)}, view(reachable=False), steps=1)
    assert out["release"]["kube-proxy"] == \
        "kube-proxy: its state cannot be read this cycle; held, no release clock runs."
    out = run({"n1": node(held=held)}, view(errors={"proxy-down": "timeout"}), steps=1)
    assert "cannot read the state of 'kube-proxy'" in text(out)
    assert out["release"]["kube-proxy"].endswith("held, no release clock runs.")
