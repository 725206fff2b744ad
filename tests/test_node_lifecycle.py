"""Node heartbeats as a real cluster has them: a kubelet renews its Lease, and the node
lifecycle controller marks Ready Unknown only once the Lease is older than the grace period."""

from __future__ import annotations

import time
from datetime import datetime

from kubernetes import client

from sentinel.sim.fleet import Fleet
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.lifecycle import LEASE_NS, NodeLifecycle, NodeTiming
from sentinel.sim.nodes import kubelet_node
from sentinel.sim.store import RESOURCES, Store

from .conftest import poll

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
