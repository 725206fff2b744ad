"""The emulator keeps the real API's semantics for the calls sentinel makes, checked through
the official client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sentinel.core.ownership import render_patch
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.patch import strategic_merge_patch
from sentinel.sim.store import Store


@pytest.fixture
def api() -> Iterator[client.CoreV1Api]:
    srv = KubeApiServer(Store(history=5)).start()
    a = client.ApiClient(client.Configuration(host=srv.url))
    yield client.CoreV1Api(a)
    a.close()
    srv.stop()


def node(api: client.CoreV1Api, name: str = "n1", **spec: object) -> dict[str, object]:
    api.create_node({"metadata": {"name": name}, "spec": spec})
    return json.loads(api.read_node(name, _preload_content=False).data)


def test_strategic_merge_replaces_taints_but_merges_conditions() -> None:
    cur = {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
           "status": {"conditions": [{"type": "Ready", "status": "True"},
                                     {"type": "DiskPressure", "status": "False"}]}}
    out = strategic_merge_patch(cur, {"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]},
                                      "status": {"conditions": [{"type": "Ready",
                                                                 "status": "Unknown"}]}})
    assert out["spec"]["taints"] == [{"key": "b", "effect": "NoSchedule"}]
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "Unknown"},
                                           {"type": "DiskPressure", "status": "False"}]


def test_stale_resource_version_is_a_409(api: client.CoreV1Api) -> None:
    obj = node(api)
    api.patch_node("n1", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as e:
        api.patch_node("n1", {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                              "spec": {"unschedulable": True}})
    assert e.value.status == 409
    assert json.loads(e.value.body)["reason"] == "Conflict"


def test_render_patch_keeps_foreign_taints_and_is_idempotent(api: client.CoreV1Api) -> None:
    from sentinel.core.model import Action, ActionKind, Level, NodeName, SiteName

    obj = node(api, taints=[{"key": "human/x", "effect": "NoSchedule"}])
    a = Action("d1", ActionKind.ISOLATE, NodeName("n1"), SiteName("s"), "node", Level.NODE,
               "NoExecute", "node-down", "test")
    body = render_patch(obj, [a], "sentinel.edge.io", 0.0)
    assert body is not None
    out = json.loads(api.patch_node("n1", body, _preload_content=False).data)
    keys = [(t["key"], t["effect"]) for t in out["spec"]["taints"]]
    assert ("human/x", "NoSchedule") in keys
    assert ("sentinel.edge.io/node", "NoExecute") in keys
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in keys  # cordon taint
    assert out["spec"]["unschedulable"] is True
    again = json.loads(api.read_node("n1", _preload_content=False).data)
    assert render_patch(again, [a], "sentinel.edge.io", 1.0) is None
    release = Action("d2", ActionKind.RELEASE, NodeName("n1"), SiteName("s"), "node",
                     Level.NODE, "NoExecute", "node-down", "test")
    out = json.loads(api.patch_node("n1", render_patch(again, [release], "sentinel.edge.io",
                                                       2.0), _preload_content=False).data)
    assert [(t["key"], t["effect"]) for t in out["spec"]["taints"]] == [("human/x",
                                                                         "NoSchedule")]
    assert out["spec"]["unschedulable"] is False


def test_human_cordon_is_never_undone(api: client.CoreV1Api) -> None:
    from sentinel.core.model import Action, ActionKind, Level, NodeName, SiteName

    obj = node(api, unschedulable=True)
    iso = Action("d1", ActionKind.ISOLATE, NodeName("n1"), SiteName("s"), "node", Level.NODE,
                 "NoExecute", "node-down", "test")
    api.patch_node("n1", render_patch(obj, [iso], "sentinel.edge.io", 0.0))
    obj = json.loads(api.read_node("n1", _preload_content=False).data)
    rel = Action("d2", ActionKind.RELEASE, NodeName("n1"), SiteName("s"), "node", Level.NODE,
                 "NoExecute", "node-down", "test")
    api.patch_node("n1", render_patch(obj, [rel], "sentinel.edge.io", 1.0))
    assert api.read_node("n1").spec.unschedulable is True


def test_duplicate_taints_are_rejected(api: client.CoreV1Api) -> None:
    node(api)
    with pytest.raises(ApiException) as e:
        api.patch_node("n1", {"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}] * 2}})
    assert e.value.status == 422


def test_watch_from_an_expired_version_is_410(api: client.CoreV1Api) -> None:
    node(api)
    for i in range(10):
        api.patch_node("n1", {"metadata": {"labels": {"i": str(i)}}})
    resp = api.list_node(watch=True, resource_version="1", timeout_seconds=1,
                         _preload_content=False)
    (line,) = list(iter_resp_lines(resp))
    ev = json.loads(line)
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410


def test_unsupported_selectors_are_a_400(api: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as e:
        api.list_pod_for_all_namespaces(field_selector="status.phase=Running")
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        api.list_node(label_selector="zone in (a,b)")
    assert e.value.status == 400
