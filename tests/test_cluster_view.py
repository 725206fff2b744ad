"""The node cache against the orderings a watch and the actuator's own writes can take."""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client

from sentinel.adapters.kube import ClusterView
from sentinel.config import parse_config
from sentinel.model import Ready

CFG = parse_config(yaml.safe_dump({"sites": [{"name": "a", "prometheus": "http://x:1"}]}),
                   "c.yaml", {})


def obj(rv: str, ready: str = "True") -> dict[str, Any]:
    return {"metadata": {"name": "n1", "resourceVersion": rv,
                         "labels": {"topology.kubernetes.io/zone": "a"}},
            "spec": {}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def view() -> ClusterView:
    v = ClusterView(client.ApiClient(client.Configuration(host="http://127.0.0.1:9")), CFG)
    v._nodes_listed([obj("1", "Unknown")])
    return v


def test_own_write_seen_by_the_watch_first_does_not_freeze_the_node() -> None:
    v = view()
    v._node_event("MODIFIED", obj("2", "Unknown"))  # our patch, delivered by the watch...
    v.written(obj("2", "Unknown"))  # ...before the actuator recorded its answer
    v._node_event("MODIFIED", obj("3", "True"))  # the node heals
    assert v.nodes()["n1"].ready is Ready.TRUE


def test_lagging_watch_does_not_roll_back_our_write() -> None:
    v = view()
    v.written(obj("5", "Unknown"))
    v._node_event("MODIFIED", obj("4", "True"))  # older than our write: skipped
    assert v.nodes()["n1"].ready is Ready.UNKNOWN
    v._node_event("MODIFIED", obj("5", "Unknown"))
    v._node_event("MODIFIED", obj("6", "True"))
    assert v.nodes()["n1"].ready is Ready.TRUE


def test_newer_event_already_delivered_wins_over_a_late_answer() -> None:
    v = view()
    v._node_event("MODIFIED", obj("2", "Unknown"))
    v._node_event("MODIFIED", obj("3", "True"))
    v.written(obj("2", "Unknown"))
    assert v.nodes()["n1"].ready is Ready.TRUE
