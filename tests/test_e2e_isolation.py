"""End to end: the simulator breaks things, real Prometheus scrapes, sentinel's real cycle acts
on the emulated cluster through the official client."""

from __future__ import annotations

import json
import time
from typing import Any

from sentinel.core.model import NODE_KEY, SiteState
from sentinel.sim.fleet import Fleet
from sentinel.sim.store import RESOURCES

from .conftest import DOMAIN, SCRAPE, our_taints


def held(fleet: Fleet, node: str) -> dict[str, str]:
    return our_taints(fleet, node)


def test_node_crash_is_level_2_within_for_plus_two_scrapes_and_a_cycle(harness: Any) -> None:
    h = harness()
    f: Fleet = h.fleet
    node = "edge-a-01"
    pods_before = f.pods_on([node])
    h.cycle()
    t0 = time.monotonic()
    f.crash(node)
    h.until(lambda r: held(f, node).get(NODE_KEY) == "NoExecute", 15, "level 2 on the node")
    elapsed = time.monotonic() - t0
    budget = 2.0 + 2 * SCRAPE + h.cfg.interval + 1.5  # for + 2 scrapes + 1 cycle (+ query time)
    assert elapsed <= budget, f"level 2 took {elapsed:.1f}s, more than {budget:.1f}s"
    obj = f.node(node)
    assert obj["spec"]["unschedulable"] is True
    assert f"{DOMAIN}/isolation" in obj["metadata"]["annotations"]
    # the movable pods were evicted by the taint manager; other nodes untouched
    assert pods_before and not f.pods_on([node])
    for other in f.nodes():
        if other != node:
            assert held(f, other) == {}, other
    events, _ = f.store.list(RESOURCES[("", "v1", "events")], None)
    assert any(e["involvedObject"]["name"] == node and e["reason"] == "SentinelIsolated"
               for e in events)


def test_component_crash_is_level_1_on_that_node_only(harness: Any) -> None:
    h = harness()
    f: Fleet = h.fleet
    f.component("edge-b-02", "kube-proxy")
    h.until(lambda r: "kube-proxy" in held(f, "edge-b-02"), 15, "kube-proxy taint")
    assert held(f, "edge-b-02") == {"kube-proxy": "NoSchedule"}
    assert not f.node("edge-b-02")["spec"].get("unschedulable")
    assert all(held(f, n) == {} for n in f.nodes() if n != "edge-b-02")


def test_edgecore_link_loss_is_level_1_edgecore_never_cordon(harness: Any) -> None:
    h = harness()
    f: Fleet = h.fleet
    f.link_loss("edge-c-03")
    h.until(lambda r: "edgecore" in held(f, "edge-c-03"), 15, "edgecore taint")
    h.run_for(3)
    assert held(f, "edge-c-03") == {"edgecore": "NoSchedule"}
    assert not f.node("edge-c-03")["spec"].get("unschedulable")
    assert f.pods_on(["edge-c-03"])


def test_heal_releases_after_release_after(harness: Any) -> None:
    h = harness()
    f: Fleet = h.fleet
    f.component("edge-a-02", "kube-proxy")
    h.until(lambda r: held(f, "edge-a-02"), 15, "isolated")
    f.heal("edge-a-02")
    healed = time.monotonic()
    h.until(lambda r: not held(f, "edge-a-02"), 20, "released")
    assert time.monotonic() - healed >= h.cfg.durations.release_after
    ann = f.node("edge-a-02")["metadata"].get("annotations", {})
    record = json.loads(ann[f"{DOMAIN}/isolation"])
    assert record["keys"] == {} and not record["cordoned"], "nothing held any more"
    assert record["released"] >= time.time() - 30, "when the node was freed: flap damping"


def test_site_partition_never_acts_and_a_real_death_is_acted_on_after(harness: Any) -> None:
    h = harness()
    f: Fleet = h.fleet
    h.cycle()
    pods_before = sorted(f.pods_on(f.nodes("site-b")))
    f.partition("site-b")
    f.crash("edge-b-04")  # a real death inside the partition
    longest_for = max(r.for_seconds for r in h.rules.rules)
    # Six times the longest `for` once the cloud has seen the site's nodes go (after the
    # lifecycle controller's grace period): any rule would have fired several times over.
    reports = h.run_for(6 * longest_for + f.spec.timing.grace + 1)
    assert all(r.detection.sites["site-b"].state is SiteState.PARTITIONED for r in reports[1:])
    assert not any(r.nodes_after[n].held for r in reports for n in f.nodes("site-b"))
    assert not [a for a in h.rt.journal.actions() if a["site"] == "site-b"]
    assert all(held(f, n) == {} for n in f.nodes("site-b"))
    assert not any(f.node(n)["spec"].get("unschedulable") for n in f.nodes("site-b"))
    assert sorted(f.pods_on(f.nodes("site-b"))) == pods_before, "pods were evicted"
    text = h.sentinel.metrics.registry.get_sample_value(
        "sentinel_site_partitioned", {"site": "site-b"})
    assert text == 1.0
    # the link returns: the healthy nodes come back, the dead one is still dead
    f.restore_uplink("site-b")  # its kubelets post Ready again; the dead one's cannot
    h.until(lambda r: held(f, "edge-b-04").get(NODE_KEY) == "NoExecute", 20,
            "level 2 on the node that really died")
    assert all(held(f, n) == {} for n in f.nodes("site-b") if n != "edge-b-04")
