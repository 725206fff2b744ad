"""End to end, the safety rules: protected nodes, flap damping, budgets, dry-run, restart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sentinel.core.model import NODE_KEY
from sentinel.sim.fleet import NODES, Fleet

from .conftest import DOMAIN, our_taints


@pytest.mark.parametrize("protect", ["autonomy", "bind"])
def test_protected_node_gets_noschedule_only(harness: Any, protect: str) -> None:
    h = harness()
    f: Fleet = h.fleet
    node = "edge-a-03"
    f.inject(protect, node)
    pods_before = sorted(f.pods_on([node]))
    f.crash(node)
    h.until(lambda r: our_taints(f, node).get(NODE_KEY) == "NoSchedule", 15,
            "level 2 stopping at NoSchedule")
    h.run_for(2)
    assert our_taints(f, node) == {NODE_KEY: "NoSchedule"}
    assert sorted(f.pods_on([node])) == pods_before, "a protected node lost pods"


def test_flapping_node_isolated_and_released_at_most_once_per_window(harness: Any) -> None:
    window = 20.0
    h = harness(durations={"flap_window": window, "release_after": 1})
    f: Fleet = h.fleet
    node = "edge-c-01"
    f.flap(node, period=5)  # slower than `for` (2 s) + a scrape, so each down phase counts
    reports = h.run_for(window + 2)
    f.stop_flapping(node)
    acts = [a for a in h.rt.journal.actions(node=node)]
    isolates = [a for a in acts if a["kind"] == "isolate" and a["key"] == NODE_KEY]
    releases = [a for a in acts if a["kind"] == "release" and a["key"] == NODE_KEY]
    assert len(isolates) >= 2, "the node did not flap into isolation twice"
    assert len(isolates) <= 2
    assert len(releases) == 1, f"{len(releases)} releases within one damping window"
    assert any(n.reason == "flap-damping" for r in reports for n in r.plan.notes)
    assert our_taints(f, node), "the flapping node is held isolated"


def test_budget_stops_at_the_cap_and_says_so(harness: Any) -> None:
    h = harness(budgets={"fleet_max_fraction": 0.2, "site_max_fraction": 1.0})
    f: Fleet = h.fleet
    broken = ["edge-a-01", "edge-a-02", "edge-b-01", "edge-b-02", "edge-c-01"]
    for n in broken:
        f.component(n, "kube-proxy")
    cap = 3  # floor(0.2 * 15)
    h.until(lambda r: sum(1 for n in broken if our_taints(f, n)) >= cap, 15, "cap reached")
    h.run_for(2)
    assert sum(1 for n in broken if our_taints(f, n)) == cap
    reg = h.sentinel.metrics.registry
    assert reg.get_sample_value("sentinel_budget_exhausted", {"budget": "fleet", "site": ""}) == 1
    assert any(n.reason == "budget" for n in h.reports[-1].plan.notes)


def test_dry_run_changes_nothing_but_journal_and_metrics(harness: Any) -> None:
    h = harness(mode="dry-run")
    f: Fleet = h.fleet
    before = {n: f.node(n) for n in f.nodes()}
    writes = len(f.store.writes)
    f.crash("edge-b-03")
    h.until(lambda r: any(a.key == NODE_KEY for a in r.plan.actions), 15, "a planned level 2")
    rep = h.run_for(1)[-1]
    # the next cycles see what enforce would have made: no second plan for the same node
    assert not any(a.node == "edge-b-03" and a.kind.value == "isolate"
                   for a in rep.plan.actions)
    assert rep.nodes_after["edge-b-03"].held.keys[NODE_KEY].effect == "NoExecute"
    assert not [w for w in f.store.writes[writes:] if w[1] == "events"]
    for n in f.nodes():
        assert f.node(n)["spec"] == before[n]["spec"], f"dry-run changed {n}"
    rows = h.rt.journal.actions(node="edge-b-03")
    assert rows and all(r["mode"] == "dry-run" for r in rows)
    assert h.sentinel.metrics.registry.get_sample_value(
        "sentinel_actions_total", {"kind": "isolate", "rule": "node-down", "level": "node",
                                   "mode": "dry-run", "outcome": "applied"}) == 1


def test_restart_mid_isolation_keeps_taints_without_duplicates(harness: Any) -> None:
    h1 = harness()
    f: Fleet = h1.fleet
    f.crash("edge-a-04")
    f.component("edge-b-04", "kube-proxy")
    h1.until(lambda r: our_taints(f, "edge-a-04").get(NODE_KEY) and
             our_taints(f, "edge-b-04"), 15, "both isolated")
    taints_before = {n: f.node(n)["spec"].get("taints", []) for n in ("edge-a-04", "edge-b-04")}
    # a foreign taint added by a human meanwhile must survive everything sentinel does
    f.store.mutate(NODES, "", "edge-a-04", lambda o: o["spec"]["taints"].append(
        {"key": "test.example/human", "effect": "NoSchedule"}))
    h1.rt.cluster.stop()  # "kill" it: no goodbye, nothing cleaned up
    writes = len(f.store.writes)
    h2 = harness()
    h2.run_for(3)
    for n in ("edge-a-04", "edge-b-04"):
        taints = f.node(n)["spec"].get("taints", [])
        keys = [(t["key"], t["effect"]) for t in taints]
        assert len(keys) == len(set(keys)), f"duplicate taints on {n}: {keys}"
        ours = [t for t in taints if t["key"].startswith(DOMAIN)]
        assert ours == [t for t in taints_before[n] if t["key"].startswith(DOMAIN)]
    assert ("test.example/human", "NoSchedule") in [
        (t["key"], t["effect"]) for t in f.node("edge-a-04")["spec"]["taints"]]
    node_updates = [w for w in f.store.writes[writes:]
                    if w[1] == "nodes" and w[3] in ("edge-a-04", "edge-b-04")]
    assert node_updates == [], f"the restarted sentinel rewrote nodes: {node_updates}"
    # and it still releases what the first one made, once healthy
    f.heal("edge-b-04")
    h2.until(lambda r: not our_taints(f, "edge-b-04"), 20, "release after restart")


def test_a_slow_site_does_not_stall_the_others(harness: Any) -> None:
    h = harness(query_timeout=1.0)
    f: Fleet = h.fleet
    f.uplinks["site-c"].cut("blackhole")
    f.component("edge-a-05", "kube-proxy")
    t0 = time.monotonic()
    rep = h.until(lambda r: bool(our_taints(f, "edge-a-05")), 15, "isolation in site-a")
    assert rep.detection.sites["site-c"].reachable is False
    assert "timed out" in (rep.detection.sites["site-c"].error or "")
    assert max(r.duration for r in h.reports) < 3.0
    assert time.monotonic() - t0 < 15


def test_actions_interrupted_by_a_crash_are_settled_from_the_nodes(harness: Any) -> None:
    """Killed after patching a node but before recording how it went: the journal row stays
    `planned`; the next sentinel reads the node's decision id and settles it."""
    import sqlite3

    from sentinel.core.effects import effect_of
    from sentinel.core.model import Action, ActionKind, Level, NodeName, SiteName

    h1 = harness()
    f: Fleet = h1.fleet
    f.component("edge-c-04", "kube-proxy")
    h1.until(lambda r: bool(our_taints(f, "edge-c-04")), 15, "isolated")
    (row,) = h1.rt.journal.actions(node="edge-c-04")
    ghost = Action("feedfacecafe", ActionKind.ISOLATE, NodeName("edge-c-05"), SiteName("site-c"),
                   "kube-proxy", Level.COMPONENT, "NoSchedule", "kube-proxy-down", "never ran")
    h1.rt.journal.write_ahead([effect_of(ghost)], "enforce", time.time())
    with sqlite3.connect(h1.cfg.journal) as db:
        db.execute("UPDATE actions SET outcome = 'planned' WHERE id = ?", (row["id"],))
    h1.rt.cluster.stop()
    h2 = harness()
    h2.cycle()
    outcomes = {r["node"]: r["outcome"] for r in h2.rt.journal.actions()
                if r["node"] in ("edge-c-04", "edge-c-05")}
    assert outcomes == {"edge-c-04": "applied", "edge-c-05": "interrupted"}
    assert h2.rt.journal.unsettled("enforce") == []

