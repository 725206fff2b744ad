"""Live, with real Prometheus: a symptom a whole site shares is the site's problem, and a site
Prometheus that has just (re)started is no witness yet (issue: healthy nodes tainted while the
first scrapes of a big fleet failed)."""

from __future__ import annotations

from typing import Any

from sentinel.core.model import NoteReason
from sentinel.sim.fleet import Fleet

from .conftest import our_taints

SLOW_NODE_DOWN = """
rules:
  - {name: node-down, level: node, component: node-exporter,
     expr: 'up{job="node-exporter"} == 0', for: 6s}
  - {name: kube-proxy-down, level: component, component: kube-proxy,
     expr: 'up{job="kube-proxy"} == 0', for: 2s}
"""


def test_a_site_wide_symptom_isolates_no_node_and_a_lone_fault_is_still_found(
        harness: Any) -> None:
    h = harness()
    f: Fleet = h.fleet
    site = "site-b"
    nodes = f.nodes(site)
    for n in nodes[:4]:  # 4 of 5: kube-proxy broken on most of the site at once
        f.component(n, "kube-proxy")
    rep = h.until(lambda r: "kube-proxy" in r.detection.sites[site].widespread, 15,
                  "kube-proxy seen site-wide")
    # every node's series are older than the rules' `for`: all of them are witnesses
    assert rep.snapshot.sites[site].established == set(nodes)
    reports = [rep, *h.run_for(4)]  # twice the rule's `for`, and more
    assert all(our_taints(f, n) == {} for n in nodes)
    assert not any(a.site == site for r in reports for a in r.plan.actions)
    notes = [n for n in reports[-1].plan.notes if n.reason is NoteReason.SITE_WIDE]
    assert {n.node for n in notes} == set(nodes[:4])
    assert "kube-proxy failing on 80 % of site site-b (4 of 5 nodes): site-wide" in notes[0].text
    reg = h.sentinel.metrics.registry
    assert reg.get_sample_value("sentinel_site_wide_symptom_nodes",
                                {"site": site, "key": "kube-proxy"}) == 4
    # three heal; the one still broken is a node's own fault: level 1 on it alone
    for n in nodes[1:4]:
        f.heal_node(n)
    h.until(lambda r: our_taints(f, nodes[0]) == {"kube-proxy": "NoSchedule"}, 20,
            "kube-proxy taint on the one node still broken")
    assert all(our_taints(f, n) == {} for n in nodes[1:])
    assert reg.get_sample_value("sentinel_site_wide_symptom_nodes",
                                {"site": site, "key": "kube-proxy"}) is None


def test_a_restarted_site_prometheus_is_no_witness_until_it_has_run_for_the_rules_for(
        harness: Any, tmp_path: Any) -> None:
    (tmp_path / "rules.yaml").write_text(SLOW_NODE_DOWN)
    h = harness()
    f: Fleet = h.fleet
    site, node = "site-c", "edge-c-03"
    h.until(lambda r: r.snapshot.sites[site].uptime is not None
            and r.snapshot.sites[site].uptime > 6, 20, "the site's Prometheus uptime read")
    f.crash(node)
    f.restart_prometheus(site)
    young = h.until(lambda r: r.snapshot.sites[site].reachable
                    and r.snapshot.sites[site].uptime is not None, 20,
                    "the restarted Prometheus answering")
    uptime = young.snapshot.sites[site].uptime
    assert uptime is not None and uptime < 6
    assert "node-down" in young.detection.sites[site].young_rules
    # while it is younger than node-down's `for`, the crash is not acted on
    while h.reports[-1].snapshot.sites[site].uptime is not None and \
            (h.reports[-1].snapshot.sites[site].uptime or 0) < 6:
        assert our_taints(f, node) == {}
        h.cycle()
    # old enough: both witnesses count again, and the dead node is isolated
    h.until(lambda r: our_taints(f, node).get("node") == "NoExecute", 20, "level 2 after")
    assert all(our_taints(f, n) == {} for n in f.nodes() if n != node)


def test_a_scrape_storm_over_a_site_isolates_none_of_its_healthy_nodes(harness: Any) -> None:
    """Half the site's scrapes fail at random, on every node and job (an overloaded site
    Prometheus): each node's `up == 0` outlasts the rules' 2 s `for` again and again."""
    h = harness()
    f: Fleet = h.fleet
    site = "site-a"
    f.scrape_storm(site, 0.5)
    h.until(lambda r: r.detection.sites[site].broad > 0, 15, "checks failing broadly")
    reports = h.run_for(12)
    f.heal(site)
    reports += h.run_for(4)
    assert not any(a.site == site for r in reports for a in r.plan.actions), \
        [a.reason for r in reports for a in r.plan.actions]
    assert all(our_taints(f, n) == {} for n in f.nodes(site))
    assert sum(1 for r in reports if r.detection.sites[site].broad) >= len(reports) // 2
    assert any(n.reason is NoteReason.SITE_WIDE and "fail checks at once" in n.text
               for r in reports for n in r.plan.notes)
