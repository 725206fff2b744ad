"""The node cache against the orderings a watch and the actuator's own writes can take."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from kubernetes import client

from sentinel.adapters.kube import ClusterView
from sentinel.config.loading import parse_config
from sentinel.core.model import Ready
from sentinel.sim.store import RESOURCES

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


# -- fleet-sized lists: pages, one snapshot, only what is read ------------------------------
def _emulator(nodes: int, pods_per_node: int = 0) -> tuple[Any, client.ApiClient]:
    from sentinel.sim.kubeapi import KubeApiServer
    from sentinel.sim.nodes import kubelet_node, kubelet_pod
    from sentinel.sim.store import RESOURCES, Store

    NODES, PODS = RESOURCES[("", "v1", "nodes")], RESOURCES[("", "v1", "pods")]

    store = Store()
    for i in range(nodes):
        store.create(NODES, "", kubelet_node(f"n{i:02d}", {"topology.kubernetes.io/zone": "a"}))
        for k in range(pods_per_node):
            labels = {"app": "x", "apps.openyurt.io/binding": "true"} if k == 0 else {"app": "x"}
            store.create(PODS, "default", kubelet_pod(f"p{i:02d}-{k}", f"n{i:02d}", labels))
    srv = KubeApiServer(store).start()
    return srv, client.ApiClient(client.Configuration(host=srv.url))


def test_the_emulator_pages_one_snapshot_and_refuses_an_expired_continue_token() -> None:
    """As the API server does: every page of a list is cut from the first page's snapshot, and
    a continue token the server no longer holds is 410 Expired, carrying a token that goes on
    from the next key of the latest snapshot (a consistent client lists again instead); a
    token it never issued is 400."""
    from kubernetes.client.rest import ApiException

    srv, api = _emulator(5)
    try:
        core = client.CoreV1Api(api)
        first = core.list_node(limit=2)
        rv = first.metadata.resource_version
        assert [n.metadata.name for n in first.items] == ["n00", "n01"]
        assert first.metadata.remaining_item_count == 3
        before = {n.metadata.name: (n.metadata.resource_version, n.metadata.labels)
                  for n in core.list_node().items}
        core.delete_node("n03")
        core.create_node({"metadata": {"name": "n99"}})
        # Every way the store writes, after the snapshot: a patch, a write in place (a
        # kubelet's renewal), a controller's. The pages still show the objects as they were.
        core.patch_node("n02", {"metadata": {"labels": {"changed": "yes"}}})
        srv.store.touch(RESOURCES[("", "v1", "nodes")], "", "n04",
                               lambda o: o["metadata"].setdefault("labels", {}).update(t="1"))
        core.patch_node("n04", {"spec": {"unschedulable": True}})
        second = core.list_node(limit=2, _continue=first.metadata._continue)
        third = core.list_node(limit=2, _continue=second.metadata._continue)
        assert [n.metadata.name for n in second.items + third.items] == ["n02", "n03", "n04"]
        assert second.metadata.resource_version == third.metadata.resource_version == rv
        assert {n.metadata.name: (n.metadata.resource_version, n.metadata.labels)
                for n in second.items + third.items} == \
            {k: before[k] for k in ("n02", "n03", "n04")}
        assert not any(n.spec.unschedulable for n in third.items)
        now = {n.metadata.name: n for n in core.list_node().items}
        assert now["n02"].metadata.labels["changed"] == "yes" and "n03" not in now
        assert now["n04"].metadata.labels["t"] == "1" and now["n04"].spec.unschedulable
        assert not third.metadata._continue
        again = core.list_node(limit=2)
        srv.pages.forget()
        core.patch_node("n00", {"metadata": {"labels": {"after": "forget"}}})
        try:
            core.list_node(limit=2, _continue=again.metadata._continue)
            raise AssertionError("an expired continue token was served")
        except ApiException as e:
            assert e.status == 410 and "too old to display a consistent list" in str(e.body)
            token = json.loads(e.body)["metadata"]["continue"]
        # ...with a token that goes on from the next key (n02) of the latest snapshot.
        rest = core.list_node(limit=2, _continue=token)
        assert [n.metadata.name for n in rest.items] == ["n02", "n04"]
        assert int(rest.metadata.resource_version) > int(again.metadata.resource_version)
        last = core.list_node(limit=2, _continue=rest.metadata._continue)
        assert [n.metadata.name for n in last.items] == ["n99"] and not last.metadata._continue
        try:
            core.list_node(limit=2, _continue="not-a-token")
            raise AssertionError("a made-up continue token was served")
        except ApiException as e:
            assert e.status == 400 and "continue key is not valid" in str(e.body)
    finally:
        api.close()
        srv.stop()


def test_the_cloud_view_lists_in_pages_and_keeps_only_what_it_reads() -> None:
    import json

    cfg = parse_config(yaml.safe_dump({"sites": [{"name": "a", "prometheus": "http://x:1"}],
                                       "cluster": {"list_page_size": 3}}), "c.yaml", {})
    srv, api = _emulator(7, pods_per_node=2)
    try:
        v = ClusterView(api, cfg)
        v.nodes_reflector._list()
        v.pods_reflector._list()
        assert (v.nodes_reflector.pages, v.pods_reflector.pages) == (3, 5)  # 7 / 3, 14 / 3
        nodes = v.nodes()
        assert len(nodes) == 7 and all(i.site == "a" and i.ready is Ready.TRUE
                                       for i in nodes.values())
        full = json.dumps(client.CoreV1Api(api).read_node("n00", _preload_content=False)
                          .json())
        kept = json.dumps(v._nodes["n00"])
        assert len(full) > 9000 and len(kept) < 600, (len(full), len(kept))
        assert "images" not in kept and "managedFields" not in kept
        # Of a pod only (uid, the node it binds to) is kept; one pod per node binds.
        assert sorted(v._bound.values()) == sorted(nodes)
        assert all(i.protected and i.protected_by == "a pod bound to it"
                   for i in nodes.values())
    finally:
        api.close()
        srv.stop()


def test_a_list_whose_continue_token_expires_midway_goes_on_and_the_watch_mends_it() -> None:
    """The 410 for an expired continue token carries a token of its own, as the API server's
    does: the reflector goes on from the next key of the latest snapshot instead of starting
    again (which never ends when a list takes longer than the server keeps its snapshot), and
    the watch from the first page's version replays every change, so the cache ends exact."""
    from sentinel.adapters.reflector import Reflector

    srv, api = _emulator(7)
    try:
        core = client.CoreV1Api(api)
        calls: list[dict[str, Any]] = []

        def list_node(**kw: Any) -> Any:  # the real client; the server forgets its snapshot
            calls.append(kw)
            resp = core.list_node(**kw)
            if len(calls) == 1:
                srv.pages.forget()
                core.patch_node("n01", {"metadata": {"labels": {"v": "2"}}})  # before the cut
                core.patch_node("n05", {"metadata": {"labels": {"v": "2"}}})  # after it
                core.delete_node("n04")
                core.create_node({"metadata": {"name": "n99"}})
            return resp

        cache: dict[str, dict[str, str]] = {}

        def listed(items: list[dict[str, Any]]) -> None:
            cache.clear()
            cache.update({o["metadata"]["name"]: o["metadata"].get("labels") or {}
                          for o in items})

        def event(kind: str, o: dict[str, Any]) -> None:
            if kind == "DELETED":
                cache.pop(o["metadata"]["name"], None)
            else:
                cache[o["metadata"]["name"]] = o["metadata"].get("labels") or {}

        r = Reflector("nodes", list_node, listed, event, watch_timeout=1, page_size=3)
        rv = r._list()
        # The inconsistent list: n01 as it was, n05 as it is now, n04 gone, n99 there.
        assert sorted(cache) == ["n00", "n01", "n02", "n03", "n05", "n06", "n99"]
        assert cache["n01"].get("v") is None and cache["n05"]["v"] == "2"
        assert [bool(c.get("_continue")) for c in calls] == [False, True, True, True]
        assert r.relists == 1
        r._watch(rv)  # from the first page's version: every change since, in order
        now = {n.metadata.name: n.metadata.labels or {} for n in core.list_node().items}
        assert cache == now and cache["n01"]["v"] == "2"
    finally:
        api.close()
        srv.stop()


def test_what_the_cloud_view_keeps_of_a_node_tells_the_same_story_as_the_whole_node() -> None:
    """`slim_node` keeps what `node_info` reads: for every kind of node the two must agree."""
    from sentinel.adapters.kubedecode import ListDecoder, NodeSchema
    from sentinel.core.ownership import annotation_key, node_info, slim_node
    from sentinel.sim.nodes import kubelet_node, set_ready

    domain, auto, dur = "sentinel.example", "node.beta.openyurt.io/autonomy", \
        "node.openyurt.io/autonomy-duration"

    def node(**change: Any) -> dict[str, Any]:
        o = kubelet_node("n1", {"topology.kubernetes.io/zone": "a", **change.get("labels", {})})
        o["metadata"]["annotations"].update(change.get("annotations", {}))
        o["spec"].update(change.get("spec", {}))
        if "ready" in change:
            set_ready(o, change["ready"])
        return o

    held = json.dumps({"keys": {"node": {"since": 100.0, "decision": "abc"}}, "cordoned": True})
    cases = [
        node(),
        node(ready="False"), node(ready="Unknown"),
        node(spec={"unschedulable": True,
                   "taints": [{"key": f"{domain}/node", "value": "r", "effect": "NoExecute"},
                              {"key": "other/x", "effect": "NoSchedule"}]},
             annotations={annotation_key(domain): held}),
        node(labels={auto: "true"}), node(annotations={auto: "true"}),
        node(annotations={dur: "24h"}), node(annotations={dur: "soon"}),
        node(labels={"exempt": "yes"}),
    ]
    cases.append({"metadata": {"name": "bare"}})
    cases.append({"metadata": {"name": "nulls", "labels": None, "annotations": None},
                  "spec": {"taints": None, "unschedulable": None}, "status": None})
    # What the reflector decodes of a list page and of a watch event (only the schema's
    # fields, adapters/kubedecode.py) must tell the same story too.
    dec = ListDecoder(NodeSchema)
    _, paged = dec.page(json.dumps({"metadata": {"resourceVersion": "5"},
                                    "items": cases}).encode())
    for o, listed in zip(cases, paged, strict=True):
        watched = dec.event(json.dumps({"type": "MODIFIED", "object": o}))["object"]
        kw: dict[str, Any] = dict(autonomy_key=auto, bound=False, duration_key=dur,
                                  exempt=lambda n, labels: labels.get("exempt") == "yes")
        whole = node_info(o, None, domain, **kw)
        for got in (o, listed, watched):
            slim = slim_node(got, domain, autonomy_key=auto, duration_key=dur)
            assert node_info(slim, None, domain, **kw) == whole, o
        assert slim_node(listed, domain, autonomy_key=auto, duration_key=dur) == \
            slim_node(o, domain, autonomy_key=auto, duration_key=dur)


def test_what_the_cloud_view_decodes_of_pods_and_leases_is_what_it_reads() -> None:
    from sentinel.adapters.kubedecode import LeaseSchema, ListDecoder, PodSchema
    from sentinel.core.ownership import pod_binds
    from sentinel.sim.nodes import kubelet_pod

    key = "apps.openyurt.io/binding"
    pods = [kubelet_pod("p0", "n1", {"app": "x"}), kubelet_pod("p1", "n1", {key: "true"}),
            kubelet_pod("p2", "n2", {"app": "y"}),
            {"metadata": {"name": "pending", "uid": "u", "annotations": {key: "true"}},
             "spec": {"nodeName": None}}]
    pods[2]["metadata"]["annotations"][key] = "true"  # bound by annotation, as OpenYurt does
    dec = ListDecoder(PodSchema)
    _, paged = dec.page(json.dumps({"metadata": {"resourceVersion": "5"},
                                    "items": pods}).encode())
    assert [pod_binds(p, key) for p in paged] == [pod_binds(p, key) for p in pods] == \
        [None, "n1", "n2", None]
    assert [p["metadata"].get("uid") for p in paged] == [p["metadata"].get("uid") for p in pods]
    lease = {"metadata": {"name": "n1", "namespace": "kube-node-lease", "resourceVersion": "9"},
             "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                      "renewTime": "2026-12-01T10:00:00.123456Z"}}
    got = ListDecoder(LeaseSchema).event(json.dumps({"type": "ADDED", "object": lease}))
    assert got["object"]["spec"]["renewTime"] == lease["spec"]["renewTime"]
    assert got["object"]["metadata"]["resourceVersion"] == "9"


def test_a_failed_call_to_the_api_server_is_said_in_an_operators_words() -> None:
    """The client's own text for an unreachable server is urllib3's retry state, 300
    characters; the reflector's warning and `/readyz` say which server and why."""
    from sentinel.adapters.kubeerrors import describe_error
    from sentinel.sim.kubeapi import KubeApiServer
    from sentinel.sim.process import free_port
    from sentinel.sim.store import Store

    port = free_port()
    nowhere = client.CoreV1Api(client.ApiClient(client.Configuration(
        host=f"http://127.0.0.1:{port}")))
    with pytest.raises(Exception) as failed:  # whatever the client raises is described
        nowhere.list_node(limit=500)
    said = describe_error(failed.value)
    assert said.startswith(f"the Kubernetes API server at 127.0.0.1:{port} is unreachable: "), said
    assert said.endswith("Connection refused") and "Retry(" not in said, said
    srv = KubeApiServer(Store()).start()
    try:
        core = client.CoreV1Api(client.ApiClient(client.Configuration(host=srv.url)))
        with pytest.raises(Exception) as failed:
            core.read_node("no-such-node")
        said = describe_error(failed.value)
        assert said == 'the Kubernetes API server answered 404: nodes "no-such-node" not found'
    finally:
        srv.stop()


def test_the_snapshot_reads_again_only_what_changed_and_agrees_with_a_full_read() -> None:
    """`nodes()` keeps its last answer and reads again only the nodes whose object or bound
    pods changed since: after any mix of node, pod and site changes, it says what a view
    that read everything at once says."""
    import random

    from sentinel.config.schema import SiteConfig

    cfg = parse_config(yaml.safe_dump({"sites": [{"name": s, "prometheus": "http://x:1"}
                                                 for s in ("a", "b")]}), "c.yaml", {})
    api = client.ApiClient(client.Configuration(host="http://127.0.0.1:9"))
    rng = random.Random(3)
    rv = iter(range(10, 100_000))

    def node(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": str(next(rv)),
                             "labels": {"topology.kubernetes.io/zone": rng.choice("abc")}},
                "spec": {}, "status": {"conditions": [{"type": "Ready", "status": rng.choice(
                    ["True", "False", "Unknown"])}]}}

    nodes = {f"n{i}": node(f"n{i}") for i in range(12)}
    pods: dict[str, str] = {f"p{i}": f"n{i % 6}" for i in range(10)}
    sites = [SiteConfig(name="a"), SiteConfig(name="b")]
    v = ClusterView(api, cfg)
    v._nodes_listed(list(nodes.values()))
    v._pods_listed(list(pods.items()))
    changed = 0
    for step in range(300):
        before = v.nodes()
        what = rng.random()
        name = rng.choice(sorted(nodes))
        if what < 0.3:
            nodes[name] = node(name)
            v._node_event("MODIFIED", nodes[name])
        elif what < 0.4:
            v._node_event("DELETED", nodes.pop(name))
            nodes[name] = node(name)  # and created again
            v._node_event("ADDED", nodes[name])
        elif what < 0.8:
            uid = f"p{rng.randrange(14)}"
            if rng.random() < 0.4:
                v._pod_event("DELETED", (uid, pods.pop(uid, None)))
            else:
                pods[uid] = name
                v._pod_event("MODIFIED", (uid, name))
        elif what < 0.9:
            uid = f"p{rng.randrange(14)}"
            pods.pop(uid, None)
            v._pod_event("MODIFIED", (uid, None))  # bound to no node: pending
        elif what < 0.95:  # a site discovered, or gone: its zone's nodes move
            sites = sites[:2] if len(sites) == 3 else [*sites, SiteConfig(name="c")]
            v.set_sites(sites)
        else:  # changes missed by a watch that expired, then a relist
            for n in rng.sample(sorted(nodes), 3):
                nodes[n] = node(n)
            v._nodes_listed(list(nodes.values()))
        ref = ClusterView(api, cfg)
        ref.set_sites(sites)
        ref._nodes_listed(list(nodes.values()))
        ref._pods_listed(list(pods.items()))
        got = v.nodes()
        assert got == ref.nodes(), f"step {step}"
        changed += got != before
    assert changed > 100, "the sequence changed the answer often enough to test it"


def test_a_relist_keeps_the_nodes_it_holds_at_the_same_version_and_reads_the_changed() -> None:
    """After 410 Gone the list brings back nearly every node unchanged: the held object is
    kept (one copy of the fleet, not two, at the relist's peak); a node changed meanwhile is
    read from its new version, and the snapshot says so."""
    srv, api = _emulator(5, pods_per_node=1)
    try:
        core = client.CoreV1Api(api)
        v = ClusterView(api, CFG)
        v.nodes_reflector._list()
        v.pods_reflector._list()
        held = dict(v._nodes)
        assert v.nodes()["n02"].unschedulable is False
        core.patch_node("n02", {"spec": {"unschedulable": True}})
        v.nodes_reflector._list()
        assert all(v._nodes[n] is held[n] for n in held if n != "n02")
        assert v._nodes["n02"] is not held["n02"]
        assert v.nodes()["n02"].unschedulable is True
        assert v._nodes["n02"]["metadata"]["resourceVersion"] == \
            core.read_node("n02").metadata.resource_version
        # One string per node name, whichever object names it.
        name = next(k for k in v._nodes if k == "n03")
        assert next(n for n in v._bound.values() if n == "n03") is name
        assert v._nodes["n03"]["metadata"]["name"] is name
    finally:
        api.close()
        srv.stop()


def test_pods_bound_to_no_node_are_left_out_of_a_list_but_their_events_still_count() -> None:
    """A listed pod that binds nothing is dropped on receipt (the list replaces a state that
    would not hold it); a watched one still reaches the view, so a pod that loses its
    binding frees its node."""
    from sentinel.adapters.reflector import Reflector

    srv, api = _emulator(3, pods_per_node=3)  # one pod of each node's three binds
    try:
        core = client.CoreV1Api(api)
        listed: list[list[Any]] = []
        events: list[tuple[str, Any]] = []
        r = Reflector("pods", core.list_pod_for_all_namespaces, listed.append,
                      lambda kind, item: events.append((kind, item)), watch_timeout=1,
                      page_size=2, transform=lambda o: (o["metadata"]["name"],
                                                        o["metadata"]["labels"].get(
                                                            "apps.openyurt.io/binding")),
                      keep=lambda item: bool(item[1]))
        rv = r._list()
        assert sorted(listed[0]) == [("p00-0", "true"), ("p01-0", "true"), ("p02-0", "true")]
        assert r.pages == 5  # nine pods, two a page: all were read, three kept
        core.patch_namespaced_pod("p01-0", "default", [
            {"op": "remove", "path": "/metadata/labels/apps.openyurt.io~1binding"}])
        r._watch(rv)
        assert ("MODIFIED", ("p01-0", None)) in events
    finally:
        api.close()
        srv.stop()
