"""Table tests for the pure core: the two-witness table, the site guard, and the policy."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sentinel.config.rules import parse_rules
from sentinel.core.decide import DecideParams, PolicyState, decide
from sentinel.core.detect import DetectParams, detect
from sentinel.core.model import (
    NODE_KEY,
    ActionKind,
    Held,
    HeldKey,
    NodeInfo,
    NodeName,
    NoteReason,
    Ready,
    SiteName,
    SiteSees,
    SiteState,
    SiteView,
    Snapshot,
    Verdict,
)
from sentinel.core.ruleset import RuleSet

RULES_TEXT = """
rules:
  - {name: node-down, level: node, component: node-exporter, expr: 'up{job="ne"} == 0', for: 30s}
  - {name: proxy-down, level: component, component: kube-proxy,
     expr: 'up{job="kp"} == 0', for: 60s}
"""
RULES = RuleSet(tuple(parse_rules(RULES_TEXT, "t.yaml")))
P = DetectParams()
S = SiteName("s")


def node(name: str = "n1", ready: Ready = Ready.TRUE, **kw: object) -> NodeInfo:
    return NodeInfo(NodeName(name), S, ready, **kw)  # type: ignore[arg-type]


def view(reachable: bool = True, present: tuple[str, ...] = ("n1",),
         firing: dict[str, dict[str, float]] | None = None, age: float = 1.0,
         errors: dict[str, str] | None = None) -> SiteView:
    return SiteView(S, reachable, None if reachable else "refused", age if reachable else None,
                    frozenset(present), firing or {}, errors or {})


DOWN = {"node-down": {"n1": 0.0}}
PROXY = {"proxy-down": {"n1": 0.0}}


@pytest.mark.parametrize(("ready", "v", "verdict", "sees", "keys", "hold"), [
    (Ready.TRUE, view(), None, None, [], False),
    (Ready.TRUE, view(firing=DOWN), Verdict.COMPONENT_FAULT, SiteSees.DOWN,
     [("node-exporter", "component")], False),
    (Ready.TRUE, view(firing={**DOWN, **PROXY}), Verdict.COMPONENT_FAULT, SiteSees.DOWN,
     [("node-exporter", "component")], False),
    (Ready.TRUE, view(firing=PROXY), Verdict.COMPONENT_FAULT, SiteSees.UP,
     [("kube-proxy", "component")], False),
    (Ready.UNKNOWN, view(), Verdict.CLOUD_LINK, SiteSees.UP, [("edgecore", "component")], False),
    (Ready.FALSE, view(firing={**DOWN, **PROXY}), Verdict.NODE_FAILURE, SiteSees.DOWN,
     [(NODE_KEY, "node")], False),
    (Ready.UNKNOWN, view(reachable=False), Verdict.PARTITION, SiteSees.UNKNOWN, [], True),
    (Ready.UNKNOWN, view(present=()), Verdict.UNKNOWN, SiteSees.UNKNOWN, [], True),
    (Ready.UNKNOWN, view(age=10_000), Verdict.UNKNOWN, SiteSees.UNKNOWN, [], True),
    (Ready.UNKNOWN, view(errors={"node-down": "boom"}), Verdict.UNKNOWN, SiteSees.UNKNOWN, [],
     True),
], ids=["healthy", "exporter-fault", "exporter-fault-subsumes-components", "component-fault",
        "cloud-link", "node-failure", "partition", "site-does-not-know-node", "stale-site",
        "node-rule-failed"])
def test_two_witness_table(ready: Ready, v: SiteView, verdict: Verdict | None,
                           sees: SiteSees | None, keys: list[tuple[str, str]],
                           hold: bool) -> None:
    d = detect(Snapshot(0.0, {"n1": node(ready=ready)}, {"s": v}), RULES, P)
    f = d.findings.get("n1")
    if verdict is None:
        assert f is None
        return
    assert f is not None
    assert (f.verdict, f.site_sees, f.hold_all) == (verdict, sees, hold)
    assert [(c.key, c.level.value) for c in f.conditions] == keys


@pytest.mark.parametrize(("failing", "total", "guarded"), [
    (1, 1, False), (2, 5, False), (3, 5, True), (2, 3, True), (5, 10, False), (6, 10, True)])
def test_site_guard(failing: int, total: int, guarded: bool) -> None:
    nodes = {f"n{i}": node(f"n{i}", Ready.UNKNOWN if i < failing else Ready.TRUE)
             for i in range(total)}
    firing = {"node-down": {f"n{i}": 0.0 for i in range(failing)}}
    d = detect(Snapshot(0.0, nodes, {"s": view(present=tuple(nodes), firing=firing)}), RULES, P)
    assert (d.sites["s"].state is SiteState.GUARDED) is guarded


DEFAULTS = DecideParams()


#: Site-wide symptoms off, for the tests of what happens when many nodes of one site fail one
#: rule and the site-wide check is not what they are about.
ONE_BY_ONE = DetectParams(site_wide_threshold=1.0)


def run(nodes: dict[str, NodeInfo], v: SiteView, state: PolicyState, now: float,
        params: DecideParams = DEFAULTS,
        detect_params: DetectParams = P):  # type: ignore[no-untyped-def]
    snap = Snapshot(now, nodes, {"s": v})
    return decide(snap, detect(snap, RULES, detect_params), state, params, now)


def test_for_is_respected_then_level_2_with_evidence() -> None:
    nodes = {"n1": node(ready=Ready.UNKNOWN)}
    v = view(firing=DOWN)
    plan, st = run(nodes, v, PolicyState(), 100.0)
    assert plan.actions == () and [n.reason for n in plan.notes] == ["pending"]
    plan, st = run(nodes, v, st, 129.0)
    assert plan.actions == ()
    plan, st = run(nodes, v, st, 130.0)
    (a,) = plan.actions
    assert (a.kind, a.key, a.effect) == (ActionKind.ISOLATE, NODE_KEY, "NoExecute")
    assert a.evidence["cloud_ready"] == "Unknown" and a.evidence["matching_since"] == 100.0
    assert "both witnesses" in a.reason


def test_guard_blocks_level_2_only() -> None:
    nodes = {f"n{i}": node(f"n{i}", Ready.UNKNOWN) for i in range(3)}
    v = view(present=tuple(nodes), firing={"node-down": {n: 0.0 for n in nodes}})
    st = PolicyState(pending={(n, "node-down", NODE_KEY): 0.0
                              for n in nodes})
    plan, _ = run(nodes, v, st, 100.0, detect_params=ONE_BY_ONE)
    assert plan.actions == ()
    assert {n.reason for n in plan.notes} == {"site-guard"}


def test_release_waits_release_after_and_flap_damping() -> None:
    held = Held({"kube-proxy": HeldKey("kube-proxy", "NoSchedule", "proxy-down", 0.0)})
    nodes = {"n1": node(held=held)}
    params = DecideParams(release_after=60, flap_window=600)
    plan, st = run(nodes, view(), PolicyState(), 1000.0, params)
    assert plan.actions == ()
    plan, _ = run(nodes, view(), st, 1060.0, params)
    assert [(a.kind, a.key) for a in plan.actions] == [(ActionKind.RELEASE, "kube-proxy")]
    # freed 100 s ago and isolated again since: it flaps, the release waits for the window
    st3 = replace(st, last_release={"n1": 960.0})
    plan, _ = run(nodes, view(), st3, 1060.0, params)
    assert plan.actions == () and [n.reason for n in plan.notes] == ["flap-damping"]


def test_partial_releases_do_not_arm_flap_damping() -> None:
    held = Held({"kube-proxy": HeldKey("kube-proxy", "NoSchedule", "proxy-down", 0.0),
                 NODE_KEY: HeldKey(NODE_KEY, "NoExecute", "node-down", 0.0)}, cordoned=True)
    params = DecideParams(release_after=10, flap_window=600)
    # kube-proxy is still broken, the node key is clear: release the node key only
    st = PolicyState(pending={("n1", "proxy-down", "kube-proxy"): 0.0},
                     clear_since={("n1", NODE_KEY): 0.0})
    plan, st = run({"n1": node(held=held)}, view(firing=PROXY), st, 100.0, params)
    assert [(a.key, a.evidence["frees_node"]) for a in plan.actions] == [(NODE_KEY, False)]
    assert "n1" not in st.last_release
    # later kube-proxy heals: its release is not damped
    held2 = Held({"kube-proxy": held.keys["kube-proxy"]})
    plan, _ = run({"n1": node(held=held2)}, view(), st, 120.0, params)
    plan, st = run({"n1": node(held=held2)}, view(), replace(st, clear_since={
        ("n1", "kube-proxy"): 105.0}), 120.0, params)
    assert [(a.key, a.evidence["frees_node"]) for a in plan.actions] == [("kube-proxy", True)]
    assert st.last_release == {"n1": 120.0}


def test_unknown_state_never_releases() -> None:
    held = Held({NODE_KEY: HeldKey(NODE_KEY, "NoExecute", "node-down", 0.0)}, cordoned=True)
    nodes = {"n1": node(ready=Ready.UNKNOWN, held=held)}
    plan, _ = run(nodes, view(reachable=False), PolicyState(clear_since={("n1", NODE_KEY): 0}),
                  10_000.0, DecideParams(release_after=1, flap_window=0))
    assert plan.actions == ()


@pytest.mark.parametrize(("params", "expect", "why"), [
    (DecideParams(site_max_fraction=0.2, fleet_max_fraction=1), 2, "site:s"),
    (DecideParams(site_max_fraction=1, fleet_max_fraction=0.3), 3, "fleet"),
    (DecideParams(site_max_fraction=1, fleet_max_fraction=1, max_new_per_minute=4), 4, "rate"),
], ids=["site", "fleet", "rate"])
def test_budgets(params: DecideParams, expect: int, why: str) -> None:
    nodes = {f"n{i}": node(f"n{i}") for i in range(10)}
    firing = {"proxy-down": {n: 0.0 for n in nodes}}
    st = PolicyState(pending={(n, "proxy-down", "kube-proxy"): 0.0
                              for n in nodes})
    plan, _ = run(nodes, view(present=tuple(nodes), firing=firing), st, 100.0, params,
                  ONE_BY_ONE)
    assert len(plan.actions) == expect
    assert why in plan.budget_exhausted
    assert sum(1 for n in plan.notes if n.reason == "budget") == 10 - expect


def test_exempt_node_is_never_isolated_and_is_handed_back() -> None:
    held = Held({"kube-proxy": HeldKey("kube-proxy", "NoSchedule", "proxy-down", 0.0)})
    nodes = {"n1": node(exempt=True, held=held)}
    st = PolicyState(pending={("n1", "proxy-down", "kube-proxy"): 0.0})
    plan, _ = run(nodes, view(firing=PROXY), st, 100.0)
    assert [(a.kind, a.key) for a in plan.actions] == [(ActionKind.RELEASE, "kube-proxy")]


def test_protected_node_level_2_is_noschedule() -> None:
    nodes = {"n1": node(ready=Ready.UNKNOWN, protected=True)}
    st = PolicyState(pending={("n1", "node-down", NODE_KEY): 0.0})
    plan, _ = run(nodes, view(firing=DOWN), st, 99.0)
    (a,) = plan.actions
    assert a.effect == "NoSchedule"


def test_downgraded_rule_starts_its_own_clock() -> None:
    """On heal the cloud says Ready before the site's next scrape: the level-2 rule now only
    has one witness. Its level-2 timer must not make the level-1 downgrade act at once."""
    nodes = {"n1": node(ready=Ready.TRUE)}
    st = PolicyState(pending={("n1", "node-down", NODE_KEY): 0.0})
    plan, st = run(nodes, view(firing=DOWN), st, 100.0)
    assert plan.actions == ()
    assert st.pending == {("n1", "node-down", "node-exporter"): 100.0}
    # and the witnesses must disagree for cloud_link_for (60 s), longer than the rule's 30 s
    plan, st = run(nodes, view(firing=DOWN), st, 159.0)
    assert plan.actions == ()
    plan, _ = run(nodes, view(firing=DOWN), st, 160.0)
    assert [(a.key, a.effect) for a in plan.actions] == [("node-exporter", "NoSchedule")]


def test_the_sites_for_counts_from_its_first_sight_not_from_the_clouds_agreement() -> None:
    """A crash: the site sees the node down at once, the cloud only after its own wait (the
    Lease). Level 2 comes when the site has seen it down for `for` *and* the cloud agrees, not
    `for` after they agree; a break in the site's sight starts it again."""
    down = view(firing=DOWN)
    plan, st = run({"n1": node(ready=Ready.TRUE)}, down, PolicyState(), 100.0)
    assert plan.actions == () and st.pending == {("n1", "node-down", "node-exporter"): 100.0}
    lost = {"n1": node(ready=Ready.UNKNOWN)}
    plan, st = run(lost, down, st, 125.0)  # the cloud agrees 25 s later: `for` (30 s) not yet
    assert plan.actions == () and st.pending == {("n1", "node-down", NODE_KEY): 100.0}
    plan, _ = run(lost, down, st, 130.0)
    (a,) = plan.actions
    assert (a.key, a.effect) == (NODE_KEY, "NoExecute")
    assert a.evidence["matching_since"] == 100.0
    # the site's sight broken for one cycle: the clock starts at the agreement
    _, st = run({"n1": node(ready=Ready.TRUE)}, down, PolicyState(), 100.0)
    _, st = run({"n1": node(ready=Ready.TRUE)}, view(), st, 110.0)
    plan, st = run(lost, down, st, 125.0)
    plan, _ = run(lost, down, st, 154.0)
    assert plan.actions == ()


def _five(failing: int, rules: RuleSet = RULES) -> tuple[dict[str, NodeInfo], SiteView]:
    nodes = {f"n{i}": node(f"n{i}") for i in range(5)}
    hits = {f"n{i}": 0.0 for i in range(failing)}
    return nodes, view(present=tuple(nodes), firing={"proxy-down": hits} if hits else {})


@pytest.mark.parametrize(("failing", "rule_says", "wide"), [
    (1, True, {}), (2, True, {}), (3, True, {"kube-proxy": 3}), (5, True, {"kube-proxy": 5}),
    (5, False, {}), (2, 0.3, {}), (3, 0.5, {"kube-proxy": 3}), (3, 0.7, {}),
], ids=["alone", "two-of-five", "three-of-five", "all", "rule-opts-out",
        "own-threshold-min-nodes", "own-threshold-met", "own-threshold-not-met"])
def test_site_wide_symptom_thresholds(failing: int, rule_says: float | bool,
                                      wide: dict[str, int]) -> None:
    text = RULES_TEXT.replace("for: 60s}", f"for: 60s, site_wide: {str(rule_says).lower()}}}")
    rules = RuleSet(tuple(parse_rules(text, "t.yaml")))
    nodes, v = _five(failing)
    det = detect(Snapshot(0.0, nodes, {"s": v}), rules, P)
    assert dict(det.sites["s"].widespread) == wide


def test_site_wide_symptom_isolates_no_node_and_a_lone_fault_after_its_own_for() -> None:
    nodes, v = _five(4)
    st = PolicyState(pending={(f"n{i}", "proxy-down", "kube-proxy"): 0.0 for i in range(4)})
    plan, st = run(nodes, v, st, 100.0)
    assert plan.actions == ()
    assert {n.reason for n in plan.notes} == {NoteReason.SITE_WIDE}
    assert not st.pending  # the clocks start again once it is no longer site-wide
    # the site recovers but n0: alone, it is a node's fault, isolated after a whole `for`
    nodes, v = _five(1)
    plan, st = run(nodes, v, st, 110.0)
    assert plan.actions == () and [n.reason for n in plan.notes] == [NoteReason.PENDING]
    plan, _ = run(nodes, v, st, 170.0)
    assert [(a.node, a.key) for a in plan.actions] == [("n0", "kube-proxy")]


@pytest.mark.parametrize(("uptime", "ready", "verdict", "young"), [
    (None, Ready.UNKNOWN, Verdict.NODE_FAILURE, set()),
    (20.0, Ready.UNKNOWN, Verdict.UNKNOWN, {"node-down", "proxy-down"}),
    (45.0, Ready.UNKNOWN, Verdict.NODE_FAILURE, {"proxy-down"}),
    (20.0, Ready.TRUE, None, {"node-down", "proxy-down"}),
    (3600.0, Ready.TRUE, Verdict.COMPONENT_FAULT, set()),
], ids=["store-without-uptime", "young-prometheus-is-no-witness", "old-enough-for-node-down",
        "young-up-0-on-a-ready-node-is-nothing", "old-prometheus"])
def test_a_young_site_prometheus_is_not_a_witness(uptime: float | None, ready: Ready,
                                                  verdict: Verdict | None,
                                                  young: set[str]) -> None:
    v = replace(view(present=(), firing={**DOWN, **PROXY}), uptime=uptime)
    det = detect(Snapshot(0.0, {"n1": node(ready=ready)}, {"s": v}), RULES, P)
    f = det.findings.get("n1")
    assert (f.verdict if f else None) is verdict
    assert det.sites["s"].young_rules == young


def test_checks_failing_broadly_over_a_site_isolate_no_node_there() -> None:
    """Three of five nodes each fail another check (a Prometheus that cannot keep up with its
    scrapes): no key is site-wide, but the site's checks fail broadly."""
    text = RULES_TEXT + """  - {name: dns-down, level: component, component: coredns,
     expr: 'up{job="dns"} == 0', for: 60s}
  - {name: edge-down, level: component, component: edgecore,
     expr: 'up{job="ec"} == 0', for: 60s}
"""
    rules = RuleSet(tuple(parse_rules(text, "t.yaml")))
    nodes = {f"n{i}": node(f"n{i}") for i in range(5)}
    firing = {"proxy-down": {"n0": 0.0}, "dns-down": {"n1": 0.0}, "edge-down": {"n2": 0.0}}
    v = view(present=tuple(nodes), firing=firing)
    snap = Snapshot(100.0, nodes, {"s": v})
    det = detect(snap, rules, P)
    assert det.sites["s"].widespread == {} and det.sites["s"].broad == 3
    st = PolicyState(pending={(n, r, k): 0.0 for n, r, k in (
        ("n0", "proxy-down", "kube-proxy"), ("n1", "dns-down", "coredns"),
        ("n2", "edge-down", "edgecore"))})
    plan, st = decide(snap, det, st, DEFAULTS, 100.0)
    assert plan.actions == () and not st.pending
    assert {n.reason for n in plan.notes} == {NoteReason.SITE_WIDE}
    assert "3 of 5 nodes of site s (60 %) fail checks at once" in plan.notes[0].text
    # two of five is not broad: each is its own node's fault
    two = view(present=tuple(nodes), firing={k: firing[k] for k in ("proxy-down", "dns-down")})
    det = detect(Snapshot(100.0, nodes, {"s": two}), rules, P)
    assert det.sites["s"].broad == 0


@pytest.mark.parametrize(("established", "ready", "verdict"), [
    (None, Ready.UNKNOWN, Verdict.NODE_FAILURE),
    (frozenset({"n1"}), Ready.UNKNOWN, Verdict.NODE_FAILURE),
    (frozenset(), Ready.UNKNOWN, Verdict.UNKNOWN),
    (frozenset(), Ready.TRUE, None),
    (frozenset({"n1"}), Ready.TRUE, Verdict.COMPONENT_FAULT),
], ids=["query-failed-trust", "established-node", "new-node-is-no-witness",
        "new-ready-node-up-0-is-nothing", "established-ready-node"])
def test_a_node_whose_series_are_newer_than_for_is_not_a_witness(
        established: frozenset[str] | None, ready: Ready, verdict: Verdict | None) -> None:
    v = replace(view(present=(), firing={**DOWN, **PROXY}), established=established)
    det = detect(Snapshot(0.0, {"n1": node(ready=ready)}, {"s": v}), RULES, P)
    f = det.findings.get("n1")
    assert (f.verdict if f else None) is verdict
