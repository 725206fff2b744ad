"""OpenYurt's autonomy, all three spellings: the older flag, a bound pod, and the current
per-node window `node.openyurt.io/autonomy-duration` (Go duration syntax, "0" for ever)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sentinel.core.autonomy import parse_go_duration, protection
from sentinel.core.decide import PolicyState
from sentinel.core.model import NODE_KEY, NodeInfo, NodeName, Ready, SiteName
from sentinel.core.ownership import node_info
from sentinel.sim.fleet import Fleet

from .conftest import our_taints
from .test_core_tables import DOWN, run, view

NOW = 1_000_000.0


@pytest.mark.parametrize(("text", "seconds"), [
    ("24h", 86400.0), ("100s", 100.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("2d", 172800.0),
    ("1w", 604800.0), ("300ms", 0.3), ("0", 0.0), ("0s", 0.0), ("+10m", 600.0),
    ("invalid duration", None), ("5", None), ("", None), ("-5m", None), ("1h 30m", None),
    ("h", None), ("10x", None),
])
def test_autonomy_duration_is_read_as_go_does(text: str, seconds: float | None) -> None:
    assert parse_go_duration(text) == (pytest.approx(seconds) if seconds else seconds)


def _node(ready: Ready = Ready.UNKNOWN, **kw: Any) -> NodeInfo:
    return NodeInfo(NodeName("n1"), SiteName("s"), ready, **kw)


@pytest.mark.parametrize(("n", "protected", "words"), [
    (_node(), False, None),
    (_node(protected=True, protected_by="node.beta.openyurt.io/autonomy=true"), True,
     "node.beta.openyurt.io/autonomy=true"),
    (_node(autonomy_for=0.0, unready_since=NOW - 10 * 86400), True, "never evicts"),
    (_node(autonomy_for=3600.0, unready_since=NOW - 600), True, "waits 50 min more"),
    (_node(autonomy_for=3600.0, unready_since=NOW - 7200), False, None),
    (_node(autonomy_for=3600.0), True, "out of contact for 0 s"),
    (_node(Ready.TRUE, autonomy_for=60.0, unready_since=NOW - 7200), True, None),
], ids=["nothing", "flag", "window-0", "inside-window", "window-over", "since-unknown",
        "ready"])
def test_protection_says_why_level_2_may_not_evict_now(n: NodeInfo, protected: bool,
                                                      words: str | None) -> None:
    why = protection(n, NOW)
    assert (why is not None) is protected
    if words is not None:
        assert why is not None and words in why


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(("annotation", "window", "note"), [
    ("24h", 86400.0, ""), ("0", 0.0, ""), (None, None, ""),
    ("a day", None, "is not a duration: ignored, as OpenYurt ignores it"),
])
def test_the_node_object_gives_the_window_and_when_contact_was_lost(
        annotation: str | None, window: float | None, note: str) -> None:
    ann = {} if annotation is None else {"node.openyurt.io/autonomy-duration": annotation}
    obj = {"metadata": {"name": "n1", "annotations": ann},
           "status": {"conditions": [{"type": "Ready", "status": "Unknown",
                                      "lastTransitionTime": _ts(NOW - 90)}]}}
    info = node_info(obj, SiteName("s"), "sentinel.edge.io",
                     autonomy_key="node.beta.openyurt.io/autonomy", bound=False,
                     exempt=lambda n, labels: False)
    assert info.autonomy_for == window
    assert info.unready_since == NOW - 90
    assert note in info.autonomy_note and bool(info.autonomy_note) is bool(note)


@pytest.mark.parametrize(("window", "effect"), [
    (86400.0, "NoSchedule"), (0.0, "NoSchedule"), (60.0, "NoExecute"), (None, "NoExecute"),
])
def test_level_2_evicts_only_outside_the_autonomy_window(window: float | None,
                                                         effect: str) -> None:
    nodes = {"n1": _node(autonomy_for=window, unready_since=NOW - 600)}
    st = PolicyState(pending={("n1", "node-down", NODE_KEY): NOW - 100})
    plan, _ = run(nodes, view(firing=DOWN), st, NOW)
    (a,) = plan.actions
    assert a.effect == effect


@pytest.mark.parametrize(("duration", "effect"), [("24h", "NoSchedule"), ("1s", "NoExecute")])
def test_a_crashed_node_with_an_autonomy_duration_live(harness: Any, duration: str,
                                                       effect: str) -> None:
    """Real Prometheus, the emulator: inside its window a crashed node gets NoSchedule only
    and keeps its pods, and explain names the setting; past it (1 s is long gone when level 2
    matures), level 2 evicts as for any node."""
    h = harness()
    f: Fleet = h.fleet
    node = "edge-b-02"
    f.inject("autonomy", node, duration)
    pods_before = sorted(f.pods_on([node]))
    f.crash(node)
    h.until(lambda r: our_taints(f, node).get(NODE_KEY) == effect, 20,
            f"level 2 with {effect}")
    if effect == "NoSchedule":
        h.run_for(2)
        assert our_taints(f, node) == {NODE_KEY: "NoSchedule"}
        assert sorted(f.pods_on([node])) == pods_before, "an autonomous node lost pods"
        story = " ".join(h.explain(node)["story"])
        assert "OpenYurt autonomy-duration 1 d" in story, story
