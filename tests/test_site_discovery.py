"""Sites from the edge platform's own objects (OpenYurt NodePools, KubeEdge NodeGroups): the
resolution of each object into a site, the emulator serving the platforms' CRDs as the real
API server does, and sentinel following sites that appear, disappear, lack a Prometheus, or
lose a node, against real Prometheus servers."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel.config.discovery import Pool, SiteDiscovery, pool_of, resolve_sites
from sentinel.config.loading import parse_config
from sentinel.config.schema import SiteConfig
from sentinel.config.yamlsrc import SourceError
from sentinel.core.decide import DecideParams, PolicyState, decide, forget, site_moves
from sentinel.core.detect import DetectParams, detect
from sentinel.core.model import NODE_KEY, ActionKind, Held, HeldKey, NodeInfo, Ready, Snapshot
from sentinel.core.ruleset import RuleSet
from sentinel.registry.state import edgeapp_overriders
from sentinel.sim.edgeapps import override_image
from sentinel.sim.fleet import Fleet
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.siteobjects import KINDS, install_site_crd
from sentinel.sim.store import ApiError, Store
from tests.conftest import DOMAIN, Harness, our_taints, poll, reset, scraped_fleet

NP = SiteDiscovery(discover="openyurt-nodepools")
NP_LABEL = "apps.openyurt.io/nodepool"


def _resolve(pools: list[Pool], static: list[SiteConfig] | None = None,
             d: SiteDiscovery = NP, central: bool = False) -> Any:
    return resolve_sites(pools, static or [], d, DOMAIN, central, SiteConfig)


# -- resolution: objects in, sites and problems out -------------------------------------------
def test_an_annotation_wins_over_the_template_and_the_template_fills_the_rest() -> None:
    d = SiteDiscovery(discover="openyurt-nodepools", prometheus="http://prom.{site}.mon:9090",
                      timeout=4)
    r = _resolve([Pool("hz-1", {f"{DOMAIN}/prometheus": "http://10.0.0.9:9090/"}),
                  Pool("hz-2", {})], d=d)
    a, b = r.sites
    assert (a.name, a.prometheus, a.selector) == ("hz-1", "http://10.0.0.9:9090",
                                                  {NP_LABEL: "hz-1"})
    assert (b.prometheus, b.timeout) == ("http://prom.hz-2.mon:9090", 4.0)
    assert r.problems == {}


def test_a_pool_without_prometheus_is_a_site_with_a_problem_not_a_target() -> None:
    r = _resolve([Pool("bare", {})])
    (site,) = r.sites
    assert site.prometheus is None and site.selector == {NP_LABEL: "bare"}
    assert "NodePool bare: no Prometheus" in r.problems["bare"]
    assert f"{DOMAIN}/prometheus" in r.problems["bare"]
    # In central mode one store speaks for every site: nothing is missing.
    assert _resolve([Pool("bare", {})], central=True).problems == {}


@pytest.mark.parametrize(("key", "value", "says"), [
    ("prometheus", "ftp://x", "prometheus: 'ftp://x' is not an http(s) URL"),
    ("http", "{not json", f"annotation {DOMAIN}/http: Expecting property name"),
    ("http", '{"headers": {"Authorization": "x"}}', "bearer_token_file or basic_auth"),
    ("registry", '{"primary": {"url": "http://r:5000/path"}}', "is not an http(s) URL of a"),
    ("query-timeout", "soon", "timeout"),
])
def test_an_unreadable_annotation_names_itself_and_the_site_is_not_acted_on(
        key: str, value: str, says: str) -> None:
    r = _resolve([Pool("p", {f"{DOMAIN}/prometheus": "http://p:9090", f"{DOMAIN}/{key}": value})])
    (site,) = r.sites
    assert says in r.problems["p"], r.problems
    assert r.problems["p"].startswith("NodePool p: ")
    assert site.prometheus is None and site.registry is None  # never asked, never switched


def test_registry_and_http_from_annotations_and_templates() -> None:
    d = SiteDiscovery.model_validate({
        "discover": "kubeedge-nodegroups", "prometheus": "http://p.{site}:9090",
        "registry": {"primary": {"url": "http://registry.{site}.edge:5000"}}})
    r = _resolve([Pool("g1", {}), Pool("g2", {
        f"{DOMAIN}/registry": json.dumps({"primary": {"url": "http://10.1.1.1:5000"},
                                          "strategy": "image-override"}),
        f"{DOMAIN}/http": json.dumps({"headers": {"X-Scope-OrgID": "g2"}})})], d=d)
    g1, g2 = r.sites
    assert g1.selector == {"apps.kubeedge.io/belonging-to": "g1"}
    assert g1.registry.primary.url == "http://registry.g1.edge:5000"
    assert g2.registry.primary.url == "http://10.1.1.1:5000"
    assert g2.registry.strategy == "image-override"
    assert g2.http.headers == {"X-Scope-OrgID": "g2"}


def test_a_static_entry_wins_and_a_pool_being_deleted_is_no_site() -> None:
    static = [SiteConfig(name="hz-1", prometheus="http://static:9090")]
    r = _resolve([Pool("hz-1", {f"{DOMAIN}/prometheus": "http://found:9090"})], static)
    assert [(s.name, s.prometheus) for s in r.sites] == [("hz-1", "http://static:9090")]
    assert pool_of({"metadata": {"name": "x", "deletionTimestamp": "2026-12-01T00:00:00Z",
                                 "finalizers": ["apps.kubeedge.io/nodegroup-controller"]}}) \
        is None
    assert pool_of({"metadata": {"name": "x"}}) == Pool("x", {})


def test_a_pool_name_too_long_for_a_site_is_reported() -> None:
    r = _resolve([Pool("p" * 70, {})])
    assert "cannot be a site name" in r.problems["p" * 70]


def test_config_without_sites_needs_discovery_and_a_template_names_the_site(
        tmp_path: Path) -> None:
    ok = parse_config("site_discovery: {discover: openyurt-nodepools}\n", "c.yaml", {})
    assert ok.sites == [] and ok.site_discovery.enabled
    with pytest.raises(SourceError) as e:
        parse_config("site_discovery:\n  discover: kubeedge-nodegroups\n"
                     "  prometheus: http://prometheus.monitoring:9090\n", "c.yaml", {})
    assert e.value.problems[0].startswith("c.yaml:3: site_discovery.prometheus: ")
    assert "{site}" in e.value.problems[0]
    with pytest.raises(SourceError) as e:
        parse_config("site_discovery: {discover: nodepools}\n", "c.yaml", {})
    assert "c.yaml:1: site_discovery.discover: Input should be 'off'" in e.value.problems[0]


# -- the pure core: a node whose site is gone, and a node that changed site ---------------------
def _node(name: str, site: str | None, held: bool) -> NodeInfo:
    keys = {NODE_KEY: HeldKey(NODE_KEY, "NoExecute", "node-down", 1.0, "d1")} if held else {}
    return NodeInfo(name, site, Ready.UNKNOWN, unschedulable=held, held=Held(keys, held))


def test_a_held_node_whose_site_is_gone_is_handed_back_and_others_are_left_alone() -> None:
    nodes = {"n1": _node("n1", None, True), "n2": _node("n2", None, True),
             "n3": _node("n3", "a", False)}
    snap = Snapshot(100.0, nodes, {}, retired={"n1": "hz-1"})
    detection = detect(snap, RuleSet(()), DetectParams())
    plan, _ = decide(snap, detection, PolicyState(), DecideParams(), 100.0)
    (a,) = plan.actions
    assert (a.kind, a.node, a.site, a.key) == (ActionKind.RELEASE, "n1", "hz-1", NODE_KEY)
    assert "site hz-1 is gone from the platform" in a.reason
    # n2 is in no site but was never seen to leave one: left alone, as today.


def test_site_moves_sees_who_left_and_keeps_them_until_they_hold_nothing() -> None:
    nodes = {"held-left": _node("held-left", None, True), "free-left": _node("free-left", None,
                                                                             False),
             "moved": _node("moved", "b", True), "new": _node("new", None, True),
             "stays": _node("stays", "a", True)}
    before = {"held-left": "a", "free-left": "a", "moved": "a", "stays": "a"}
    moved, retired = site_moves(before, nodes, {})
    assert moved == {"held-left", "free-left", "moved"}  # "new" was not seen before
    assert retired == {"held-left": "a"}, "only a held node that left every site"
    # next cycle: still held and in no site, so kept; once released, or in a site, dropped
    assert site_moves({n: i.site for n, i in nodes.items()}, nodes, retired)[1] == retired
    nodes["held-left"] = _node("held-left", None, False)
    assert site_moves({}, nodes, retired)[1] == {}


def test_a_node_that_changed_site_starts_its_clocks_again() -> None:
    st = PolicyState(pending={("n1", "node-down", NODE_KEY): 1.0,
                              ("n2", "node-down", NODE_KEY): 2.0},
                     clear_since={("n1", "kube-proxy"): 3.0}, last_release={"n1": 4.0})
    out = forget(st, frozenset({"n1"}))
    assert out.pending == {("n2", "node-down", NODE_KEY): 2.0}
    assert out.clear_since == {} and out.last_release == {"n1": 4.0}  # flap damping stays


# -- the emulator serves the platforms' CRDs as the API server does ----------------------------
def test_the_nodepool_crd_serves_both_versions_over_the_same_pools() -> None:
    from kubernetes import client

    store = Store()
    install_site_crd(store, KINDS["nodepools"])
    api = KubeApiServer(store).start()
    try:
        c = client.ApiClient(client.Configuration(host=api.url))
        custom = client.CustomObjectsApi(c)
        custom.create_cluster_custom_object("apps.openyurt.io", "v1beta2", "nodepools", {
            "apiVersion": "apps.openyurt.io/v1beta2", "kind": "NodePool",
            "metadata": {"name": "hz", "annotations": {f"{DOMAIN}/prometheus": "http://p"}},
            "spec": {"type": "Edge", "labels": {"tier": "edge"}, "bogus": 1}})
        got = custom.list_cluster_custom_object("apps.openyurt.io", "v1beta1", "nodepools")
        (pool,) = got["items"]
        assert pool["apiVersion"] == "apps.openyurt.io/v1beta1"
        assert pool["spec"] == {"type": "Edge", "labels": {"tier": "edge"}}  # pruned, map kept
        assert pool["metadata"]["annotations"] == {f"{DOMAIN}/prometheus": "http://p"}
        with pytest.raises(client.ApiException) as e:
            custom.create_cluster_custom_object("apps.openyurt.io", "v1beta1", "nodepools", {
                "metadata": {"name": "bad"}, "spec": {"labels": {"tier": 3}}})
        assert e.value.status == 422 and "spec.labels.tier" in e.value.body
        # The status subresource: a write of the main resource leaves status alone.
        custom.patch_cluster_custom_object_status("apps.openyurt.io", "v1beta2", "nodepools",
                                                  "hz", {"status": {"nodes": ["n1"]}})
        custom.patch_cluster_custom_object("apps.openyurt.io", "v1beta1", "nodepools", "hz",
                                           {"status": {"nodes": []}, "spec": {"type": "Cloud"}})
        pool = custom.get_cluster_custom_object("apps.openyurt.io", "v1beta2", "nodepools", "hz")
        assert pool["status"] == {"nodes": ["n1"]} and pool["spec"]["type"] == "Cloud"
    finally:
        api.stop()


def test_a_watch_at_one_version_sees_writes_at_the_other() -> None:
    store = Store()
    install_site_crd(store, KINDS["nodepools"])
    v1 = store.resources[("apps.openyurt.io", "v1beta1", "nodepools")]
    v2 = store.resources[("apps.openyurt.io", "v1beta2", "nodepools")]
    rv = store.resource_version
    store.create(v2, "", {"metadata": {"name": "hz"}, "spec": {}})
    events = list(store.watch(v1, None, rv, 0.2, lambda o: True, lambda: False))
    assert [(e.type, e.obj["metadata"]["name"]) for e in events] == [("ADDED", "hz")]
    with pytest.raises(ApiError):
        store.get(store.resources[("apps.openyurt.io", "v1beta1", "nodepools")], "", "nope")


# -- live: sentinel follows the platform's sites, real Prometheus per site ---------------------
@pytest.fixture(scope="module")
def pools() -> Iterator[Fleet]:
    with scraped_fleet(3, 4, "nodepools") as f:
        yield f


def _harness(fleet: Fleet, tmp: Path, kind: str = "openyurt-nodepools",
             **extra: Any) -> Harness:
    return Harness(fleet, tmp, sites=[], site_discovery={"discover": kind}, **extra)


def _held(rep: Any, node: str) -> bool:
    return bool(rep.nodes_after[node].held)


def test_sites_appear_and_disappear_live_and_a_removed_sites_isolations_are_handed_back(
        pools: Fleet, tmp_path: Path) -> None:
    f = pools
    f.remove_site_object("site-c")  # not a pool yet: its nodes are in no site
    h = _harness(f, tmp_path)
    try:
        rep = h.until(lambda r: set(r.detection.sites) == {"site-a", "site-b"}, 15,
                      "the two pools are the sites")
        assert rep.nodes_after["edge-c-01"].site is None
        f.crash("edge-a-01")
        h.until(lambda r: our_taints(f, "edge-a-01").get("node") == "NoExecute", 20,
                "a crash in a discovered site: level 2")

        f.add_site_object("site-c", f.uplinks["site-c"].url)  # a new pool, live
        h.until(lambda r: "site-c" in r.detection.sites and
                r.nodes_after["edge-c-01"].site == "site-c", 10, "the new pool is a site")
        f.crash("edge-c-02")
        h.until(lambda r: our_taints(f, "edge-c-02").get("node") == "NoExecute", 20,
                "a crash in the pool that appeared: level 2")

        f.remove_site_object("site-a")  # deleted, with an isolated node in it
        rep = h.until(lambda r: "site-a" not in r.detection.sites and
                      not our_taints(f, "edge-a-01"), 10,
                      "the removed site's isolation handed back")
        assert not f.node("edge-a-01")["spec"].get("unschedulable")
        assert rep.nodes_after["edge-a-01"].site is None
        rows = h.rt.journal.actions(node="edge-a-01")
        assert [r["kind"] for r in rows] == ["isolate", "release"]
        assert "site site-a is gone from the platform" in rows[-1]["reason"]
        assert rows[-1]["site"] == "site-a"
        # Nothing else is touched: site-c's isolation stays.
        h.run_for(2)
        assert our_taints(f, "edge-c-02").get("node") == "NoExecute"
        assert h.rt.registry.get_sample_value("sentinel_nodes_without_site") == 4.0
    finally:
        h.close()
        f.heal()
        f.add_site_object("site-a", f.uplinks["site-a"].url)
        reset(f)


def test_a_pool_without_prometheus_is_reported_and_never_acted_on(
        pools: Fleet, tmp_path: Path) -> None:
    f = pools
    f.remove_site_object("site-b")
    f.add_site_object("site-b", None)
    h = _harness(f, tmp_path)
    try:
        rep = h.until(lambda r: "site-b" in r.detection.sites, 10, "the bare pool is a site")
        st = rep.detection.sites["site-b"]
        assert st.state.value == "unresolved" and "no Prometheus" in (st.error or "")
        assert h.rt.registry.get_sample_value("sentinel_site_partitioned",
                                              {"site": "site-b"}) == 0.0, "not a partition"
        assert "site-b" in h.rt.sites.describe()["not_acted_on"]
        assert h.rt.registry.get_sample_value("sentinel_site_unresolved",
                                              {"site": "site-b"}) == 1.0
        f.crash("edge-b-01")
        f.crash("edge-a-02")
        h.until(lambda r: our_taints(f, "edge-a-02").get("node") == "NoExecute", 20,
                "the site with a Prometheus acts")
        h.run_for(2)
        assert our_taints(f, "edge-b-01") == {}, "never acted on"
        story = " ".join(str(v) for v in h.explain("edge-b-01").values())
        assert "Site site-b is NOT ACTED ON: NodePool site-b: no Prometheus" in story, story
        assert "sees it serving" not in story

        # The annotation arrives: the site is acted on from then on.
        f.remove_site_object("site-b")
        f.add_site_object("site-b", f.uplinks["site-b"].url)
        h.until(lambda r: our_taints(f, "edge-b-01").get("node") == "NoExecute", 25,
                "acted on once its Prometheus is known")
        assert h.rt.registry.get_sample_value("sentinel_site_unresolved",
                                              {"site": "site-b"}) is None
    finally:
        h.close()
        f.heal()
        reset(f)


def test_a_node_moved_out_of_every_pool_is_handed_back_and_one_moved_in_is_judged_there(
        pools: Fleet, tmp_path: Path) -> None:
    f = pools
    h = _harness(f, tmp_path)
    try:
        f.crash("edge-a-03")
        h.until(lambda r: our_taints(f, "edge-a-03").get("node") == "NoExecute", 20,
                "isolated")
        f.move_node("edge-a-03", None)
        h.until(lambda r: not our_taints(f, "edge-a-03"), 10, "handed back when it left")
        (row,) = [r for r in h.rt.journal.actions(node="edge-a-03") if r["kind"] == "release"]
        assert "site site-a is gone" in row["reason"] or "left it" in row["reason"]
        # Into another pool: site-b's Prometheus does not know it, so it is unknown there and
        # nothing is done, however dead it is.
        f.move_node("edge-a-03", "site-b")
        rep = h.until(lambda r: r.nodes_after["edge-a-03"].site == "site-b", 10, "moved")
        h.run_for(2)
        assert our_taints(f, "edge-a-03") == {}
        assert rep.detection.findings.get("edge-a-03") is None or \
            rep.detection.findings["edge-a-03"].site_sees.value != "down"
    finally:
        h.close()
        f.heal()
        f.move_node("edge-a-03", "site-a")
        reset(f)


@pytest.fixture(scope="module")
def groups() -> Iterator[Fleet]:
    with scraped_fleet(2, 3, "nodegroups") as f:
        yield f


def test_nodegroups_are_sites_too(groups: Fleet, tmp_path: Path) -> None:
    f = groups
    group = f.store.get(KINDS["nodegroups"].resource, "", "site-a")
    assert group["spec"]["nodes"] == ["edge-a-01", "edge-a-02", "edge-a-03"]
    h = _harness(f, tmp_path, kind="kubeedge-nodegroups")
    try:
        rep = h.until(lambda r: set(r.detection.sites) == {"site-a", "site-b"}, 15,
                      "each NodeGroup a site")
        assert rep.nodes_after["edge-b-02"].site == "site-b"
        f.crash("edge-b-02")
        h.until(lambda r: our_taints(f, "edge-b-02").get("node") == "NoExecute", 20,
                "level 2 in a NodeGroup")
    finally:
        h.close()
        f.heal()
        reset(f)


# -- KubeEdge: the registry failover written into the EdgeApplications -------------------------
def test_overriders_move_only_the_sites_images() -> None:
    def dep(*images: str) -> dict[str, Any]:
        return {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": f"c{i}", "image": img} for i, img in enumerate(images)]}}}}

    svc = {"kind": "Service", "spec": {}}
    ovs, why = edgeapp_overriders([dep("r1:5000/shop:1", "r1:5000/log:2"), svc],
                                  "r1:5000", "sb:5000")
    assert why is None and ovs == [{"component": "Registry", "operator": "replace",
                                    "value": "sb:5000"}]
    ovs, why = edgeapp_overriders([dep("r1:5000/shop:1", "docker.io/library/busybox:1"),
                                   dep("r1:5000/cart:1")], "r1:5000", "sb:5000")
    assert why is None and ovs == [{"component": "Registry", "operator": "replace",
                                    "value": "sb:5000", "predicate": {
                                        "path": "/spec/template/spec/containers/0/image"}}]
    ovs, why = edgeapp_overriders([dep("docker.io/x:1", "r1:5000/shop:1"), dep("r1:5000/a:1")],
                                  "r1:5000", "sb:5000")
    assert ovs == [] and why is not None and "different container positions" in why
    assert edgeapp_overriders([dep("docker.io/x:1")], "r1:5000", "sb:5000")[1] == \
        "no image from r1:5000 in its workloads"


@pytest.mark.parametrize(("image", "o", "out"), [
    ("r1:5000/shop:1.0", {"component": "Registry", "operator": "replace", "value": "sb:5000"},
     "sb:5000/shop:1.0"),
    ("shop:1.0", {"component": "Registry", "operator": "add", "value": "sb:5000"},
     "sb:5000/shop:1.0"),
    ("r1:5000/team/shop@sha256:ab", {"component": "Registry", "operator": "remove"},
     "team/shop@sha256:ab"),
    ("r1:5000/shop:1.0", {"component": "Tag", "operator": "replace", "value": "2.0"},
     "r1:5000/shop:2.0"),
    ("localhost/shop", {"component": "Repository", "operator": "replace", "value": "cart"},
     "localhost/cart"),
])
def test_the_simulated_overrider_splits_images_as_kubeedge_does(
        image: str, o: dict[str, Any], out: str) -> None:
    assert override_image(image, o) == out


def test_edgeapplication_failover_survives_the_apps_next_rendering_and_fails_back(
        groups: Fleet, tmp_path: Path) -> None:
    from sentinel.sim.registry import RegistryProcess
    from sentinel.sim.store import RESOURCES

    f = groups
    deployments = RESOURCES[("apps", "v1", "deployments")]
    apps = f.store.resources[("apps.kubeedge.io", "v1alpha1", "edgeapplications")]
    primary, standby = RegistryProcess().start(), RegistryProcess().start()
    f.remove_site_object("site-a")
    f.add_site_object("site-a", f.uplinks["site-a"].url, registry={
        "primary": {"url": primary.url}, "strategy": "edgeapplication"})
    mine = {"component": "Tag", "operator": "replace", "value": "1.1",  # a person's
            "predicate": {"path": "/spec/template/spec/containers/0/image"}}
    f.store.create(apps, "default", {
        "metadata": {"name": "shop", "labels": {"sentinel.edge.io/registry-failover": "true"}},
        "spec": {"workloadTemplate": {"manifests": [{
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "shop"}},
                     "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {
                         "containers": [
                             {"name": "app", "image": f"{primary.host}/shop:1.0"},
                             {"name": "log", "image": "docker.io/fluent/fluent-bit:3"}]}}}}]},
                 "workloadScope": {"targetNodeGroups": [
                     {"name": "site-a", "overriders": {"imageOverriders": [mine]}},
                     {"name": "site-b"}]}}})

    def images(group: str) -> list[str]:
        d = f.store.get(deployments, "default", f"shop-{group}")
        return [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]

    poll(lambda: _exists(f, deployments, "shop-site-b"), 10, "KubeEdge rendered the groups")
    assert images("site-a") == [f"{primary.host}/shop:1.1", "docker.io/fluent/fluent-bit:3"]
    h = _harness(f, tmp_path, kind="kubeedge-nodegroups", registries={
        "standby": {"url": standby.url}, "probe_timeout": "1s", "namespace": "default",
        "healthy_for_failback": "1s"})
    guard = h.rt.registries
    assert guard is not None
    rnd = lambda: h.loop.run_until_complete(guard.run_round())  # noqa: E731
    try:
        h.until(lambda r: "site-a" in guard.sites, 10, "site-a's registry known")
        assert rnd() == [] and guard.sites["site-a"].state.active.value == "primary"
        primary.down()
        poll(lambda: bool(rnd()), 10, "failover")
        poll(lambda: images("site-a")[0] == f"{standby.host}/shop:1.1", 10,
             "the group's workload re-rendered from the standby")
        assert images("site-a")[1] == "docker.io/fluent/fluent-bit:3", "not the site's image"
        assert images("site-b") == [f"{primary.host}/shop:1.0", "docker.io/fluent/fluent-bit:3"]

        # A person edits the application: KubeEdge renders the group again, from the
        # application, where the failover is: it stays.
        def edit(o: dict[str, Any]) -> None:
            o["spec"]["workloadScope"]["targetNodeGroups"][0]["overriders"]["replicas"] = 2
        f.store.mutate(apps, "default", "shop", edit)
        poll(lambda: f.store.get(deployments, "default", "shop-site-a")["spec"]["replicas"] == 2,
             10, "re-rendered after the edit")
        assert images("site-a")[0] == f"{standby.host}/shop:1.1"

        primary.up()
        poll(lambda: bool(rnd()), 15, "failback")
        poll(lambda: images("site-a")[0] == f"{primary.host}/shop:1.1", 10, "back")
        app = f.store.get(apps, "default", "shop")
        a = app["spec"]["workloadScope"]["targetNodeGroups"][0]["overriders"]
        assert a["imageOverriders"] == [mine] and a["replicas"] == 2, "the person's kept"
        assert f"{DOMAIN}/registry-failover" not in (app["metadata"].get("annotations") or {})
        rows = h.rt.journal.actions(site="site-a")
        assert [(r["kind"], r["outcome"]) for r in rows] == [
            ("registry-failover", "applied"), ("registry-failback", "applied")]
        (ev,) = [e for e in f.store.list(RESOURCES[("", "v1", "events")], None)[0]
                 if e.get("reason") == "SentinelRegistryFailover"
                 and e["involvedObject"]["kind"] == "EdgeApplication"]
        assert ev["involvedObject"]["name"] == "shop"
        assert "EdgeApplications: EdgeApplication default/shop" in ev["message"]
    finally:
        h.close()
        primary.stop()
        standby.stop()
        f.store.delete(apps, "default", "shop")
        for g in ("site-a", "site-b"):
            with contextlib.suppress(ApiError):
                f.store.delete(deployments, "default", f"shop-{g}")


def _exists(f: Fleet, res: Any, name: str) -> bool:
    try:
        f.store.get(res, "default", name)
    except ApiError:
        return False
    return True


def test_registry_failover_on_a_discovered_site_and_handed_back_when_it_goes(
        pools: Fleet, tmp_path: Path) -> None:
    from sentinel.sim.registry import RegistryProcess
    from sentinel.sim.store import RESOURCES

    f = pools
    primary, standby = RegistryProcess().start(), RegistryProcess().start()
    f.remove_site_object("site-c")
    f.add_site_object("site-c", f.uplinks["site-c"].url,
                      registry={"primary": {"url": primary.url}})
    h = _harness(f, tmp_path, registries={
        "standby": {"url": standby.url}, "probe_timeout": "1s", "namespace": "default",
        "healthy_for_failback": "1s"})
    cms = RESOURCES[("", "v1", "configmaps")]

    def active() -> str | None:
        try:
            cm = f.store.get(cms, "default", "sentinel-registry-site-c")
        except ApiError:
            return None
        return str(cm["metadata"]["annotations"][f"{DOMAIN}/registry-active"])

    guard = h.rt.registries
    assert guard is not None, "discovery may bring registries: the guard is always there"
    try:
        h.until(lambda r: "site-c" in r.detection.sites, 10, "site-c discovered")
        assert list(guard.sites) == ["site-c"], "only the pool with a registry"
        h.loop.run_until_complete(guard.run_round())
        primary.down()
        for _ in range(5):
            if h.loop.run_until_complete(guard.run_round()):
                break
        assert active() == "standby", "failed over like a configured site"

        f.remove_site_object("site-c")
        h.until(lambda r: "site-c" not in r.detection.sites, 10, "site-c gone")
        assert guard.sites == {}
        h.loop.run_until_complete(guard.run_round())
        assert active() == "primary", "what sentinel switched there is handed back"
        rows = h.rt.journal.actions(site="site-c")
        assert [(r["kind"], r["outcome"]) for r in rows] == [
            ("registry-failover", "applied"), ("registry-failback", "applied")]
        assert "gone from the platform" in rows[-1]["reason"]
        h.loop.run_until_complete(guard.run_round())
        assert len(h.rt.journal.actions(site="site-c")) == 2, "handed back once"
    finally:
        h.close()
        primary.stop()
        standby.stop()
        f.add_site_object("site-c", f.uplinks["site-c"].url)
        with contextlib.suppress(ApiError):
            f.store.delete(cms, "default", "sentinel-registry-site-c")


def test_the_rollout_guard_rolls_back_in_a_discovered_node_group(
        pools: Fleet, tmp_path: Path) -> None:
    from tests.test_rollouts import GUARD, _history, _settled

    f = pools
    h = _harness(f, tmp_path, rollouts=GUARD)
    g = h.rt.rollouts
    assert g is not None
    g.start()
    try:
        assert g.view.wait_synced(10)
        h.until(lambda r: set(r.detection.sites) == set(f.sites), 10, "the pools")
        assert sorted(s.name for s in g.sites) == f.sites
        assert {s.name: dict(s.selector) for s in g.sites}["site-a"] == {NP_LABEL: "site-a"}
        f.deploy_app("shop", "1.0")  # per group, selecting the pool's label (EdgeApplication)

        def rows() -> dict[str, Any]:
            g.run_round()
            return {w["name"]: w for w in g.status_values()}

        poll(lambda: all(_settled(f"shop-{s}")(rows()) for s in f.sites), 20, "stable")
        _history(f, "shop")
        f.set_version("2.0", "bad-errors")
        f.upgrade("shop", "2.0", "site-a")
        poll(lambda: rows()["shop-site-a"]["state"] == "rolled-back", 60,
             "the bad version rolled back in its node group")
        r = rows()
        assert r["shop-site-a"]["current"]["version"] == "1.0"
        assert "error-ratio worse" in r["shop-site-a"]["record"]["reason"]
        assert all(r[f"shop-{s}"]["current"]["version"] == "1.0" for s in f.sites)
    finally:
        h.close()
        f.remove_apps()
        f.versions.clear()


def test_the_simulated_edgeapplication_controller_keeps_kubeedges_last_applied_rule() -> None:
    """Why the failover goes into the application: an edit of a generated Deployment lasts
    only until the application changes (KubeEdge compares its rendering with the
    last-applied record, not with the live object)."""
    from sentinel.sim.edgeapps import EdgeAppController, install_edgeapp_crd
    from sentinel.sim.store import RESOURCES

    store = Store()
    install_edgeapp_crd(store)
    apps = store.resources[("apps.kubeedge.io", "v1alpha1", "edgeapplications")]
    deployments = RESOURCES[("apps", "v1", "deployments")]
    store.create(apps, "default", {"metadata": {"name": "shop"}, "spec": {
        "workloadTemplate": {"manifests": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                            "metadata": {"name": "shop"}, "spec": {
                                                "template": {"spec": {"containers": [
                                                    {"name": "a", "image": "r1:5000/s:1"}]}}}}]},
        "workloadScope": {"targetNodeGroups": [{"name": "g1"}]}}})
    c = EdgeAppController(store)
    c.reconcile()
    d = store.get(deployments, "default", "shop-g1")
    assert d["spec"]["template"]["spec"]["nodeSelector"] == {
        "apps.kubeedge.io/belonging-to": "g1"}

    def image() -> str:
        return str(store.get(deployments, "default", "shop-g1")["spec"]["template"]["spec"][
            "containers"][0]["image"])

    store.mutate(deployments, "default", "shop-g1", lambda o: o["spec"]["template"]["spec"][
        "containers"][0].__setitem__("image", "sb:5000/s:1"))
    c.reconcile()
    assert image() == "sb:5000/s:1", "an edit of the generated Deployment stays..."
    store.mutate(apps, "default", "shop", lambda o: o["spec"]["workloadScope"][
        "targetNodeGroups"][0].__setitem__("overriders", {"replicas": 3}))
    c.reconcile()
    assert image() == "r1:5000/s:1", "...until the application changes"
