"""The emulator keeps the real API's semantics for the calls sentinel makes, checked through
the official client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from sentinel.core.ownership import render_patch
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.patch import strategic_merge_patch
from sentinel.sim.store import RESOURCES, ApiError, Store

NODES = RESOURCES[("", "v1", "nodes")]


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


def test_a_release_that_frees_the_node_is_kept_on_the_node_for_flap_damping(
        api: client.CoreV1Api) -> None:
    """Whichever replica leads next reads it from the node: no replica's disk is needed."""
    from sentinel.core.model import Action, ActionKind, Level, NodeName, SiteName
    from sentinel.core.ownership import held_from_node, memory_from_nodes, node_info

    def act(kind: ActionKind, key: str, now: float, frees: bool = False) -> dict[str, Any]:
        obj = json.loads(api.read_node("n1", _preload_content=False).data)
        a = Action(f"d{now:g}", kind, NodeName("n1"), SiteName("s"), key, Level.COMPONENT,
                   "NoSchedule", "r", "test", {"frees_node": frees})
        body = render_patch(obj, [a], "sentinel.edge.io", now)
        assert body is not None
        return json.loads(api.patch_node("n1", body, _preload_content=False).data)

    node(api)
    act(ActionKind.ISOLATE, "edgecore", 100.0)
    act(ActionKind.ISOLATE, "kube-proxy", 101.0)
    out = act(ActionKind.RELEASE, "edgecore", 200.0)
    assert held_from_node(out, "sentinel.edge.io").released is None, "kube-proxy still held"
    out = act(ActionKind.RELEASE, "kube-proxy", 300.0, frees=True)
    assert out["spec"].get("taints", []) == []
    assert held_from_node(out, "sentinel.edge.io").released == 300.0
    info = node_info(out, None, "sentinel.edge.io", autonomy_key="a", bound=False,
                     exempt=lambda n, labels: False)
    assert memory_from_nodes([info], 350.0, 1800.0) == ({"n1": 300.0}, ())
    assert memory_from_nodes([info], 2200.0, 1800.0) == ({}, ()), "past the flap window"
    out = act(ActionKind.ISOLATE, "edgecore", 400.0)
    info = node_info(out, None, "sentinel.edge.io", autonomy_key="a", bound=False,
                     exempt=lambda n, labels: False)
    assert memory_from_nodes([info], 430.0, 1800.0) == ({"n1": 300.0}, (400.0,)), \
        "isolated again: the release is still remembered, the isolation counts for the rate"


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


def test_a_noexecute_taint_evicts_the_intolerant_pods_bound_to_that_node_only(
        api: client.CoreV1Api) -> None:
    """The taint manager reads the pods bound to the tainted node, as they stand after pods
    were deleted and created again elsewhere (its index must follow them)."""
    node(api, "n1")
    node(api, "n2")

    def pod(name: str, on: str, tolerate: bool = False) -> None:
        tol = [{"key": "x", "operator": "Exists", "effect": "NoExecute"}] if tolerate else []
        api.create_namespaced_pod("default", {"metadata": {"name": name}, "spec": {
            "nodeName": on, "tolerations": tol, "containers": [{"name": "c", "image": "i"}]}})
    pod("a", "n1")
    pod("b", "n1", tolerate=True)
    pod("c", "n2")
    pod("moved", "n1")
    api.delete_namespaced_pod("moved", "default")
    pod("moved", "n2")
    pod("gone", "n1")
    api.delete_namespaced_pod("gone", "default")
    api.patch_node("n1", {"spec": {"taints": [{"key": "x", "effect": "NoExecute"}]}})
    left = {(p.metadata.name, p.spec.node_name)
            for p in api.list_namespaced_pod("default").items}
    assert left == {("b", "n1"), ("c", "n2"), ("moved", "n2")}


def test_watch_from_an_expired_version_is_410(api: client.CoreV1Api) -> None:
    node(api)
    for i in range(10):
        api.patch_node("n1", {"metadata": {"labels": {"i": str(i)}}})
    resp = api.list_node(watch=True, resource_version="1", timeout_seconds=1,
                         _preload_content=False)
    (line,) = list(iter_resp_lines(resp))
    ev = json.loads(line)
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410


def test_a_watcher_that_falls_behind_the_history_gets_410_not_a_gap() -> None:
    """At fleet size Leases renew thousands of times a second: a watcher that reads slower
    than that must be told (410, list again), never handed the newest events as if none had
    been missed in between."""
    store = Store(history=5)
    store.create(NODES, "", {"metadata": {"name": "n1"}, "spec": {}})
    w = store.watch(NODES, None, store.resource_version, 5.0, lambda o: True, lambda: False)

    def label(i: int) -> None:
        store.mutate(NODES, "", "n1", lambda o: o["metadata"].setdefault("labels", {})
                     .__setitem__("i", str(i)))

    label(0)
    assert next(w).obj["metadata"]["labels"] == {"i": "0"}
    for i in range(1, 9):  # eight writes while the watcher does not read: five are kept
        label(i)
    with pytest.raises(ApiError) as e:
        next(w)
    assert e.value.code == 410


def test_other_kinds_writes_never_expire_a_watch() -> None:
    """The API server keeps a watch cache per resource: 100,000 kubelets renew 10,000 Leases a
    second, and a node watch must not be expired by them (one history shared by every kind
    turned over in 20 s at that size, and sentinel never synced)."""
    leases = RESOURCES[("coordination.k8s.io", "v1", "leases")]
    store = Store(history=5)
    store.create(NODES, "", {"metadata": {"name": "n1"}, "spec": {}})
    store.create(leases, "kube-node-lease", {"metadata": {"name": "n1"}, "spec": {}})
    w = store.watch(NODES, None, store.resource_version, 5.0, lambda o: True, lambda: False)
    for i in range(20):  # four times the history, all of another kind
        store.touch(leases, "kube-node-lease", "n1",
                    lambda o, i=i: o["spec"].__setitem__("renewTime", str(i)))
    store.mutate(NODES, "", "n1", lambda o: o["metadata"].setdefault("labels", {})
                 .__setitem__("x", "1"))
    e = next(w)
    assert (e.type, e.obj["metadata"]["labels"]) == ("MODIFIED", {"x": "1"})
    # ...while the Lease history itself has moved on: a Lease watch from then is 410.
    with pytest.raises(ApiError) as err:
        next(store.watch(leases, None, 2, 1.0, lambda o: True, lambda: False))
    assert err.value.code == 410


def test_a_stopping_server_cuts_a_watch_in_the_middle_of_its_backlog() -> None:
    """An API server's restart drops every connection at once. A watcher behind by thousands
    of Lease renewals was sent its whole backlog first, for minutes, and never listed again."""
    store = Store()
    store.create(NODES, "", {"metadata": {"name": "n1"}, "spec": {}})
    stopping = [False]
    w = store.watch(NODES, None, store.resource_version, 60.0, lambda o: True,
                    lambda: stopping[0])
    for i in range(50):  # a backlog: fifty writes before the watcher reads
        store.mutate(NODES, "", "n1", lambda o, i=i: o["metadata"].setdefault(
            "labels", {}).__setitem__("i", str(i)))
    assert next(w).obj["metadata"]["labels"] == {"i": "0"}
    stopping[0] = True
    assert list(w) == [], "the rest of the backlog is not sent once the server stops"


def test_a_compacted_store_expires_every_version_held_before() -> None:
    store = Store()
    store.create(NODES, "", {"metadata": {"name": "n1"}, "spec": {}})
    rv = store.resource_version
    store.compact()
    with pytest.raises(ApiError) as err:
        next(store.watch(NODES, None, rv - 1, 1.0, lambda o: True, lambda: False))
    assert err.value.code == 410
    # A watch from the version the store is at misses nothing and is served.
    w = store.watch(NODES, None, rv, 5.0, lambda o: True, lambda: False)
    store.mutate(NODES, "", "n1", lambda o: o.__setitem__("spec", {"unschedulable": True}))
    assert next(w).obj["spec"]["unschedulable"] is True


def test_unsupported_selectors_are_a_400(api: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as e:
        api.list_pod_for_all_namespaces(field_selector="status.phase=Running")
    assert e.value.status == 400
    with pytest.raises(ApiException) as e:
        api.list_node(label_selector="zone in (a,b)")
    assert e.value.status == 400


def test_a_crd_serves_its_resource_validates_and_prunes_as_the_api_server(
        api: client.CoreV1Api) -> None:
    """Through the official client: the resource is 404 until its CRD exists; then writes
    are checked against the shipped schema (422 naming the field), unknown fields pruned,
    strategic merge refused (415, custom resources have no patch strategies), merge patch
    applied, and the CRD reports Established."""
    crd = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "crds" /
                          "sentineloverrides.yaml").read_text())
    ext = client.ApiextensionsV1Api(api.api_client)
    co = client.CustomObjectsApi(api.api_client)
    args = ("sentinel.edge.io", "v1alpha1", "sentinel", "sentineloverrides")
    with pytest.raises(ApiException) as e:
        co.list_namespaced_custom_object(*args)
    assert e.value.status == 404
    ext.create_custom_resource_definition(crd)
    got = ext.read_custom_resource_definition("sentineloverrides.sentinel.edge.io")
    assert {c.type: c.status for c in got.status.conditions}["Established"] == "True"

    spec = {"kind": "pause", "reason": "storm", "by": "alice",
            "created": "2026-11-30T10:00:00.000000Z", "expires": "2026-11-30T11:00:00Z"}
    body = {"apiVersion": "sentinel.edge.io/v1alpha1", "kind": "SentinelOverride",
            "metadata": {"name": "ab12"}, "spec": {**spec, "colour": "red"}, "extra": 1}
    out = co.create_namespaced_custom_object(*args, body)
    assert "colour" not in out["spec"] and "extra" not in out, "unknown fields pruned"
    assert out["spec"] == spec

    for bad, field in (({**spec, "kind": "evict"}, 'spec.kind: Unsupported value: "evict"'),
                       ({k: v for k, v in spec.items() if k != "reason"},
                        "spec.reason: Required value"),
                       ({**spec, "force": "yes"}, "spec.force: Invalid value"),
                       ({**spec, "expires": "tomorrow"}, "spec.expires: Invalid value")):
        with pytest.raises(ApiException) as e:
            co.create_namespaced_custom_object(
                *args, {**body, "metadata": {"name": "cd34"}, "spec": bad})
        assert e.value.status == 422, bad
        msg = json.loads(e.value.body)["message"]
        assert msg.startswith('SentinelOverride.sentinel.edge.io "cd34" is invalid: ') and \
            field in msg, msg

    # the official client always sends a merge patch to custom objects: ask as kubectl would
    r = httpx.patch(f"{api.api_client.configuration.host}/apis/sentinel.edge.io/v1alpha1/"
                    "namespaces/sentinel/sentineloverrides/ab12", json={"spec": {"reason": "x"}},
                    headers={"Content-Type": "application/strategic-merge-patch+json"})
    assert r.status_code == 415 and r.json()["reason"] == "UnsupportedMediaType"
    lifted = {"spec": {"lifted": {"at": "2026-11-30T10:30:00Z", "by": "bob"}}}
    out = co.patch_namespaced_custom_object(*args, "ab12", lifted)
    assert out["spec"]["lifted"] == {"at": "2026-11-30T10:30:00Z", "by": "bob"}
    assert out["spec"]["reason"] == "storm", "a merge patch keeps the rest"
    with pytest.raises(ApiException) as e:
        co.patch_namespaced_custom_object(*args, "ab12", {"spec": {"lifted": {"at": None}}})
    assert e.value.status == 422 and "spec.lifted.at: Required value" in e.value.body
    ext.delete_custom_resource_definition("sentineloverrides.sentinel.edge.io")
    with pytest.raises(ApiException) as e:
        co.get_namespaced_custom_object(*args, "ab12")
    assert e.value.status == 404


def test_discovery_and_strict_field_validation_as_kubectl_meets_them(
        api: client.CoreV1Api) -> None:
    """kubectl discovers resources (legacy discovery), reads the OpenAPI v3 index to learn that
    the server validates fields, then writes with fieldValidation=Strict: an undeclared field
    is refused (400, the real wording), a wrong value 422; without Strict it is accepted."""
    host = api.api_client.configuration.host
    core = httpx.get(f"{host}/api/v1").json()
    assert {"name": "services", "namespaced": True} .items() <= \
        next(r for r in core["resources"] if r["name"] == "services").items()
    assert "svc" in next(r for r in core["resources"] if r["name"] == "services")["shortNames"]
    groups = {g["name"] for g in httpx.get(f"{host}/apis").json()["groups"]}
    assert {"apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io"} <= groups
    index = httpx.get(f"{host}/openapi/v3").json()["paths"]
    doc = httpx.get(f"{host}{index['api/v1']['serverRelativeURL']}").json()
    ops = [p["patch"] for p in doc["paths"].values()]
    ns_op = next(o for o in ops if o["x-kubernetes-group-version-kind"]["kind"] == "Namespace")
    assert {"name": "fieldValidation", "in": "query"}.items() <= ns_op["parameters"][0].items()

    bad = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"},
           "spec": {"finalizers": [], "colour": "red"}}
    r = httpx.post(f"{host}/api/v1/namespaces?fieldValidation=Strict", json=bad)
    assert r.status_code == 400 and 'unknown field "spec.colour"' in r.json()["message"]
    r = httpx.post(f"{host}/api/v1/namespaces?fieldValidation=Strict",
                   json={**bad, "spec": {"finalizers": "kubernetes"}})
    assert r.status_code == 422 and "spec.finalizers" in r.json()["message"]
    r = httpx.post(f"{host}/api/v1/namespaces", json=bad)
    assert r.status_code == 201, "without Strict the server does not refuse it"
    svc = httpx.post(f"{host}/api/v1/namespaces/a/services?fieldValidation=Strict",
                     json={"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                           "spec": {"ports": [{"port": 80}]}}).json()
    assert svc["spec"]["clusterIP"].startswith("10.96."), "a cluster IP, as the server gives"


def test_a_delete_with_delete_options_leaves_the_connection_usable(
        api: client.CoreV1Api) -> None:
    """kubectl and the client send DeleteOptions as the DELETE's body: it is read (and not
    applied: no garbage collector), so the next request on the kept-alive connection is
    answered, not taken for the body's leftovers."""
    api.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="gone")))
    api.delete_namespaced_config_map("gone", "default", body=client.V1DeleteOptions(
        propagation_policy="Background"))
    names = [c.metadata.name for c in api.list_namespaced_config_map("default").items]
    assert "gone" not in names
