"""Node heartbeats as a real cluster has them: a kubelet renews its Lease, and the node
lifecycle controller marks Ready Unknown only once the Lease is older than the grace period."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from kubernetes import client

from sentinel.core.leases import lease_witness
from sentinel.core.model import NODE_KEY, NodeInfo, NodeName, Ready, SiteName
from sentinel.sim.fleet import Fleet
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.lifecycle import LEASE_NS, NodeLifecycle, NodeTiming
from sentinel.sim.nodes import kubelet_node
from sentinel.sim.store import RESOURCES, Store

from .conftest import our_taints, poll

NODES = RESOURCES[("", "v1", "nodes")]


def _ready(node: dict[str, object]) -> str:
    conds = (node.get("status") or {}).get("conditions") or []  # type: ignore[union-attr]
    return next(c["status"] for c in conds if c["type"] == "Ready")


def test_a_silent_kubelet_goes_unknown_only_after_the_grace_period() -> None:
    store = Store()
    store.create(NODES, "", kubelet_node("n1", {}))
    reaching = {"n1": True}
    timing = NodeTiming(renew=0.2, grace=2.0, monitor_period=0.2)
    lc = NodeLifecycle(store, lambda: ["n1"], lambda n: reaching[n], timing).start()
    srv = KubeApiServer(store).start()
    api = client.ApiClient(client.Configuration(host=srv.url))
    try:
        leases = client.CoordinationV1Api(api)
        first = leases.read_namespaced_lease("n1", LEASE_NS).spec.renew_time
        poll(lambda: leases.read_namespaced_lease("n1", LEASE_NS).spec.renew_time > first, 10,
             "the kubelet renewing its Lease")
        reaching["n1"] = False
        last = lc.renewed("n1")
        assert last is not None
        core = client.CoreV1Api(api)
        poll(lambda: _ready(core.read_node("n1", _preload_content=False).json()) == "Unknown",
             10, "Ready Unknown after the grace period")
        seen = time.time()
        # The controller cannot have acted before the Lease was `grace` old.
        assert seen >= last + timing.grace
        lease = leases.read_namespaced_lease("n1", LEASE_NS)
        assert lease.spec.renew_time.timestamp() <= last + 0.001, "a silent kubelet renewed"
        assert lease.spec.holder_identity == "n1" and lease.spec.lease_duration_seconds == 40
        reaching["n1"] = True
        lc.post_ready("n1")  # it reaches the API server again and posts its status at once
        assert _ready(core.read_node("n1", _preload_content=False).json()) == "True"
        assert isinstance(lease.spec.renew_time, datetime)
    finally:
        lc.stop()
        api.close()
        srv.stop()


def test_a_crashed_node_stays_ready_in_the_cloud_until_its_grace_period_ends(
        clean_fleet: Fleet) -> None:
    """Its exporters go dark at once; the cloud's Ready changes only when the controller says
    so — the order sentinel meets in a real cluster."""
    node = "edge-b-05"
    clean_fleet.crash(node)
    last = clean_fleet.lifecycle.renewed(node)
    assert last is not None
    poll(lambda: _ready(clean_fleet.node(node)) == "Unknown", 15, f"{node} Unknown")
    assert time.time() >= last + clean_fleet.spec.timing.grace
    # the others' kubelets go on renewing; the dead one's renewed nothing since
    poll(lambda: all((clean_fleet.lifecycle.renewed(n) or 0) > last
                     for n in clean_fleet.nodes() if n != node), 10, "the others renewing")
    assert clean_fleet.lifecycle.renewed(node) == last
    clean_fleet.heal(node)
    assert _ready(clean_fleet.node(node)) == "True"


def test_the_lease_witness_table() -> None:
    """A Ready node is lost to the cloud once its Lease has been silent `after` seconds; one
    renewal late is not enough; a node already NotReady, or with no Lease seen, is as it is."""
    n = {name: NodeInfo(NodeName(name), SiteName("s"), ready)
         for name, ready in (("dead", Ready.TRUE), ("slow", Ready.TRUE),
                             ("notready", Ready.FALSE), ("nolease", Ready.TRUE))}
    out = lease_witness(n, {"dead": 31.0, "slow": 24.9, "notready": 99.0}, 25.0, 1000.0)
    assert out["dead"].ready is Ready.UNKNOWN and out["dead"].lease_silent == 31.0
    assert out["dead"].unready_since == 994.0, "since its silence passed `after`"
    assert out["slow"] == n["slow"] and out["notready"] == n["notready"]
    assert out["nolease"] == n["nolease"]
    assert lease_witness(n, {"dead": 31.0}, 0.0, 1000.0) == n, "0: the controller's word only"


def test_a_dead_kubelets_silent_lease_is_the_clouds_witness_before_the_grace_period(
        harness: Any) -> None:
    """With the controller's grace at 2 min, a crashed node is level 2 within seconds of its
    Lease going silent (both witnesses: its Lease, its site's Prometheus) while its Ready
    condition still says True. A slow kubelet (renewing late but within the limit) is never
    condemned; one that cannot reach the cloud while its site sees it serving is a cloud-link
    fault (level 1), never level 2."""
    h = harness(cluster={"lease_witness_after": 2.0})
    f: Fleet = h.fleet
    old = f.lifecycle.timing
    f.lifecycle.timing = NodeTiming(renew=0.5, grace=120.0, monitor_period=0.5)
    dead, slow, cut = f.nodes("site-a")[0], f.nodes("site-b")[0], f.nodes("site-c")[0]
    try:
        f.lifecycle.renew_every[slow] = 1.5
        f.crash(dead)
        f.link_loss(cut)
        h.until(lambda r: our_taints(f, dead).get(NODE_KEY) == "NoExecute", 20,
                "level 2 from the silent Lease and the site")
        assert _ready(f.node(dead)) == "True", "the controller has not spoken: grace 2 min"
        story = " ".join(h.explain(dead)["story"])
        assert "has not renewed its Lease" in story, story
        h.until(lambda r: "edgecore" in our_taints(f, cut), 20, "the cut node: level 1")
        for rep in h.run_for(4):
            assert NODE_KEY not in our_taints(f, cut), "a cloud-link fault is never level 2"
            assert rep.nodes_after[slow].ready is Ready.TRUE and not our_taints(f, slow), \
                "a slow but alive kubelet is not condemned"
    finally:
        f.lifecycle.timing = old
        f.lifecycle.renew_every.clear()
