"""Table tests for each phase of decide (core/phases.py, core/budgets.py), one table a phase."""

from __future__ import annotations

from collections import Counter

import pytest

from sentinel.core.budgets import BudgetKind, Budgets, recheck, spend
from sentinel.core.detect import Detection
from sentinel.core.model import (
    NODE_KEY,
    Action,
    ActionKind,
    Condition,
    Finding,
    Held,
    HeldKey,
    Level,
    NodeInfo,
    NodeName,
    Note,
    NoteReason,
    Override,
    OverrideKind,
    Ready,
    SiteName,
    SiteSees,
    SiteState,
    SiteStatus,
    Verdict,
)
from sentinel.core.phases import (
    NO_EXECUTE,
    NO_SCHEDULE,
    Candidate,
    Matured,
    guard,
    hand_back,
    manual_candidate,
    mature,
    releases,
    wanted,
)

S = SiteName("s")
NOW = 1000.0
PROXY = Condition("kube-proxy", Level.COMPONENT, "proxy-down", 60.0, 0.0, "up == 0")
DOWN = Condition(NODE_KEY, Level.NODE, "node-down", 30.0, 0.0, "up == 0")


def node(name: str = "n1", held: dict[str, HeldKey] | None = None, **kw: object) -> NodeInfo:
    return NodeInfo(NodeName(name), S, kw.pop("ready", Ready.TRUE), held=Held(held or {}),
                    **kw)  # type: ignore[arg-type]


def finding(*conds: Condition, unknown: frozenset[str] = frozenset()) -> Finding:
    return Finding(NodeName("n1"), S, Verdict.COMPONENT_FAULT, Ready.TRUE, SiteSees.UP, True,
                   conds, unknown)


def override(kind: OverrideKind, key: str = "", force: bool = False) -> Override:
    return Override("o1", kind, "a reason", "alice", NOW - 10, NOW + 3600, node="n1", key=key,
                    force=force)


def held(key: str, effect: str = NO_SCHEDULE, rule: str = "proxy-down") -> dict[str, HeldKey]:
    return {key: HeldKey(key, effect, rule, NOW - 500)}


def detection(state: SiteState = SiteState.OK, nodes: int = 10, failing: int = 1) -> Detection:
    return Detection({}, {S: SiteStatus(S, state, True, 1.0, nodes, failing)})


@pytest.mark.parametrize(("n", "ov", "exempt", "released", "reason"), [
    (node(), None, False, None, None),
    (node(held=held("kube-proxy")), None, True, ["kube-proxy"], None),
    (node(held=held("kube-proxy")), override(OverrideKind.RELEASE), False, ["kube-proxy"],
     NoteReason.OVERRIDE),
    (node(), override(OverrideKind.EXEMPT), False, [], NoteReason.OVERRIDE),
    (node(held=held("kube-proxy")), override(OverrideKind.ISOLATE, "x"), False, None, None),
], ids=["nothing", "exempt", "released-by-hand", "exempted-by-hand", "isolate-is-not-hand-back"])
def test_hand_back(n: NodeInfo, ov: Override | None, exempt: bool, released: list[str] | None,
                   reason: NoteReason | None) -> None:
    turn = hand_back(n, finding(PROXY), ov, exempt, NOW)
    if released is None:
        assert turn is None
        return
    assert turn is not None
    assert [a.key for a in turn.releases] == released
    assert all(a.kind is ActionKind.RELEASE for a in turn.releases)
    assert turn.frees == bool(released)
    assert [nt.reason for nt in turn.notes] == ([reason] if reason else [NoteReason.EXEMPT])


@pytest.mark.parametrize(("n", "key", "effect"), [
    (node(), NODE_KEY, NO_EXECUTE),
    (node(protected=True), NODE_KEY, NO_SCHEDULE),
    (node(), "kube-proxy", NO_SCHEDULE),
    (node(held=held(NODE_KEY, NO_EXECUTE)), NODE_KEY, None),
], ids=["level2-evicts", "protected-no-evict", "level1", "already-held"])
def test_manual_candidate(n: NodeInfo, key: str, effect: str | None) -> None:
    cands = manual_candidate(n, None, override(OverrideKind.ISOLATE, key), NOW)
    assert [c.effect for c in cands] == ([effect] if effect else [])


@pytest.mark.parametrize(("since", "matured"), [
    (None, False), (NOW - 59, False), (NOW - 60, True), (NOW - 59.998, True), (NOW - 600, True),
], ids=["first-seen", "just-short", "exactly-for", "a-cycle-2ms-early", "long-ago"])
def test_mature_waits_for_for(since: float | None, matured: bool) -> None:
    pending = {} if since is None else {("n1", "proxy-down", "kube-proxy"): since}
    m = mature(node(), finding(PROXY), pending, NOW)
    assert ("kube-proxy" in m.desired) is matured
    assert m.firing == {"kube-proxy"}
    assert m.pending == {("n1", "proxy-down", "kube-proxy"): since if since else NOW}
    assert [nt.reason for nt in m.all_notes] == ([] if matured else [NoteReason.PENDING])


def _matured(*conds: tuple[Condition, float | None]) -> Matured:
    """Conditions with since (matured) or None (still waiting)."""
    desired = {c.key: (c, since) for c, since in conds if since is not None}
    waiting = tuple((c.key, Note(NodeName("n1"), S, NoteReason.PENDING, "waiting"))
                    for c, since in conds if since is None)
    pending = {("n1", c.rule, c.key): since or NOW for c, since in conds}
    return Matured(pending, frozenset(c.key for c, _ in conds), desired, waiting)


@pytest.mark.parametrize(("state", "wide", "kept", "clocks", "reasons"), [
    (SiteState.OK, {}, {NODE_KEY, "kube-proxy"}, {NODE_KEY, "kube-proxy", "edgecore"},
     [NoteReason.PENDING]),
    (SiteState.GUARDED, {}, {"kube-proxy"}, {NODE_KEY, "kube-proxy", "edgecore"},
     [NoteReason.PENDING, NoteReason.SITE_GUARD]),
    (SiteState.OK, {"kube-proxy": 7}, {NODE_KEY}, {NODE_KEY, "edgecore"},
     [NoteReason.PENDING, NoteReason.SITE_WIDE]),
    (SiteState.OK, {"edgecore": 9}, {NODE_KEY, "kube-proxy"}, {NODE_KEY, "kube-proxy"},
     [NoteReason.SITE_WIDE]),
    (SiteState.GUARDED, {NODE_KEY: 8}, {"kube-proxy"}, {"kube-proxy", "edgecore"},
     [NoteReason.PENDING, NoteReason.SITE_WIDE]),
], ids=["ok-site", "guarded-site-drops-level2", "site-wide-drops-that-key-at-level1",
        "site-wide-pending-key-restarts-its-clock", "site-wide-level2"])
def test_guard(state: SiteState, wide: dict[str, int], kept: set[str], clocks: set[str],
               reasons: list[NoteReason]) -> None:
    edge = Condition("edgecore", Level.COMPONENT, "cloud-link", 60.0, None, "Ready")
    m = _matured((DOWN, NOW - 40), (PROXY, NOW - 70), (edge, None))
    det = Detection({}, {S: SiteStatus(S, state, True, 1.0, 10, 8, widespread=wide)})
    out = guard(node(), m, det)
    assert set(out.desired) == kept
    assert {pk[2] for pk in out.pending} == clocks
    assert [n.reason for n in out.all_notes] == reasons
    if wide:
        key, n = next(iter(wide.items()))
        text = next(x.text for x in out.all_notes if x.reason is NoteReason.SITE_WIDE)
        assert text == (f"{key} failing on {n * 10} % of site s ({n} of 10 nodes): site-wide, "
                        "not isolating nodes one by one")


@pytest.mark.parametrize(("n", "manual", "paused", "effects", "reason"), [
    (node(), None, None, [NO_SCHEDULE], None),
    (node(), None, override(OverrideKind.PAUSE), [], NoteReason.PAUSED),
    (node(), override(OverrideKind.ISOLATE, "kube-proxy"), None, [], None),
    (node(held=held("kube-proxy")), None, None, [], None),
], ids=["wanted", "paused", "manual-beats-rule", "already-held"])
def test_wanted(n: NodeInfo, manual: Override | None, paused: Override | None,
                effects: list[str], reason: NoteReason | None) -> None:
    cands, notes = wanted(n, finding(PROXY), {"kube-proxy": (PROXY, NOW - 70)}, manual, paused,
                          NOW)
    assert [c.effect for c in cands] == effects
    assert [nt.reason for nt in notes] == ([reason] if reason else [])


@pytest.mark.parametrize(("hk", "firing", "clear", "unknown", "paused", "last", "out", "why"), [
    (held("kube-proxy"), {"kube-proxy"}, None, False, False, None, [], None),
    (held("kube-proxy"), set(), None, False, False, None, [], None),
    (held("kube-proxy"), set(), NOW - 300, False, False, None, ["kube-proxy"], None),
    (held("kube-proxy"), set(), NOW - 300, True, False, None, [], NoteReason.UNKNOWN),
    (held("kube-proxy"), set(), NOW - 300, False, True, None, [], NoteReason.PAUSED),
    (held("kube-proxy"), set(), NOW - 300, False, False, NOW - 60, [],
     NoteReason.FLAP_DAMPING),
    (held("kube-proxy", rule="manual-o1"), set(), None, False, False, None, ["kube-proxy"],
     None),
], ids=["still-firing", "clock-starts", "release-after", "unknown-holds", "paused-holds",
        "flap-damped", "manual-ended"])
def test_releases(hk: dict[str, HeldKey], firing: set[str], clear: float | None,
                  unknown: bool, paused: bool, last: float | None, out: list[str],
                  why: NoteReason | None) -> None:
    clocks = {} if clear is None else {("n1", "kube-proxy"): clear}
    f = finding(unknown=frozenset({"kube-proxy"}) if unknown else frozenset())
    r = releases(node(held=hk), f, {}, firing, clocks, override(OverrideKind.PAUSE) if paused
                 else None, last, 300.0, 1800.0, NOW)
    assert [a.key for a in r.actions] == out
    assert r.frees == bool(out)
    assert [nt.reason for nt in r.notes] == ([why] if why else [])


def _cand(name: str, level: Level = Level.COMPONENT, force: bool = False) -> Candidate:
    c = DOWN if level is Level.NODE else PROXY
    ov = override(OverrideKind.ISOLATE, c.key, force=force) if force else None
    return Candidate(node(name), c, NO_SCHEDULE, NOW - 100, None, ov)


@pytest.mark.parametrize(("isolated", "recent", "cands", "done", "spent"), [
    (0, 0, ["a", "b"], ["a", "b"], set()),
    (0, 10, ["a"], [], {BudgetKind.RATE}),
    (5, 0, ["a"], [], {BudgetKind.site("s")}),
    (4, 0, ["a", "b"], ["a"], {BudgetKind.site("s")}),
    (5, 0, ["f"], ["f"], set()),
], ids=["within", "rate", "site-full", "site-one-left", "forced-spends-nothing"])
def test_spend(isolated: int, recent: int, cands: list[str], done: list[str],
               spent: set[str]) -> None:
    b = Budgets(Counter({"s": isolated}), 100, 0.5, 0.9, 10)
    c = [_cand(n, force=n == "f") for n in cands]
    out = spend(c, b, detection(nodes=10), [NOW - 1] * recent, NOW)
    assert [a.node for a in out.actions] == done
    assert out.exhausted == spent
    assert len(out.notes) == len(cands) - len(done)


def test_spend_takes_level2_first_and_counts_the_fleet() -> None:
    b = Budgets(Counter(), 10, 1.0, 0.1, 10)  # fleet cap: one node
    out = spend([_cand("a"), _cand("b", Level.NODE)], b, detection(nodes=10), [], NOW)
    assert [(a.node, a.level) for a in out.actions] == [("b", Level.NODE)]
    assert out.exhausted == {BudgetKind.FLEET}


def _fleet(held_nodes: list[str], size: int = 10) -> dict[str, NodeInfo]:
    return {f"n{i}": node(f"n{i}", held("kube-proxy") if f"n{i}" in held_nodes else None)
            for i in range(size)}


def _release(name: str, key: str = "kube-proxy") -> Action:
    return Action(f"r-{name}", ActionKind.RELEASE, NodeName(name), S, key, Level.COMPONENT,
                  NO_SCHEDULE, "proxy-down", "clear")


@pytest.mark.parametrize(("held_now", "recent", "plan", "kept", "refused"), [
    # the plan as made: the site (10 nodes, max half) has room for the three
    (["n0", "n1"], 0, ["n5", "n6", "n7"], ["n5", "n6", "n7"], set()),
    # another writer isolated two more nodes meanwhile: only one fits now
    (["n0", "n1", "n2", "n3"], 0, ["n5", "n6", "n7"], ["n5"], {BudgetKind.site("s")}),
    # a node already held gets another key: no new node, no site budget spent
    (["n0", "n1", "n2", "n3", "n4"], 0, ["n4"], ["n4"], set()),
    # the plan's own release frees a node first: its place is free again
    (["n0", "n1", "n2", "n3", "n4"], 0, ["-n4", "n5"], ["-n4", "n5"], set()),
    # isolations journaled by now (by anyone) spend the rate budget
    ([], 9, ["n5", "n6"], ["n5"], {BudgetKind.RATE}),
    # a person's --force spends none
    (["n0", "n1", "n2", "n3", "n4"], 10, ["f"], ["f"], set()),
], ids=["as-planned", "spent-meanwhile", "same-node", "release-first", "rate", "forced"])
def test_recheck_counts_the_budgets_again_where_the_plan_is_applied(
        held_now: list[str], recent: int, plan: list[str], kept: list[str],
        refused: set[str]) -> None:
    nodes = _fleet(held_now)
    nodes["f"] = node("f")
    actions = []
    for name in plan:
        if name.startswith("-"):
            actions.append(_release(name[1:]))
            continue
        c = _cand(name, force=name == "f")
        ev: dict[str, object] = {"override": c.override.record()} if c.override else {}
        actions.append(Action(f"i-{name}", ActionKind.ISOLATE, NodeName(name), S,
                              "kube-proxy", Level.COMPONENT, NO_SCHEDULE, "proxy-down", "why",
                              ev))
    b = Budgets(Counter(), 11, 0.5, 0.9, 10)
    ok, no = recheck(actions, nodes, {S: 10}, b, [NOW - 5] * recent, NOW)
    assert [("-" if a.kind is ActionKind.RELEASE else "") + a.node for a in ok] == kept
    assert {r.budget for r in no} == refused
    assert all(r.why.startswith("refused where applied: ") for r in no)
    assert len(ok) + len(no) == len(actions)
