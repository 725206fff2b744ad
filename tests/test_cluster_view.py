"""The node cache against the orderings a watch and the actuator's own writes can take."""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client

from sentinel.adapters.kube import ClusterView
from sentinel.config.loading import parse_config
from sentinel.core.model import Ready

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


def test_reflector_relists_when_its_watch_version_expired() -> None:
    """A watch resumed from a version older than the server's history gets 410 Gone; the
    reflector must list again (resync), not fail or miss the changes in between."""
    from sentinel.sim.kubeapi import KubeApiServer
    from sentinel.sim.store import Store

    srv = KubeApiServer(Store(history=3)).start()
    api = client.ApiClient(client.Configuration(host=srv.url))
    try:
        core = client.CoreV1Api(api)
        core.create_node({"metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone":
                                                               "a"}}})
        v = ClusterView(api, CFG)
        rv = v.nodes_reflector._list()
        for i in range(6):  # more changes than the history holds, while nobody watches
            core.patch_node("n1", {"metadata": {"labels": {"i": str(i)}}})
        core.patch_node("n1", {"spec": {"unschedulable": True}})
        assert v.nodes_reflector._watch(rv) is None  # expired: the caller lists again
        v.nodes_reflector._list()
        assert v.nodes()["n1"].unschedulable is True
        assert v.nodes_reflector.relists == 2
    finally:
        api.close()
        srv.stop()
