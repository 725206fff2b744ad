"""Detection: a purely computational function from a Snapshot to per-node Findings.

It applies the two-witness table of DESIGN.md and the site guard. No I/O, no clock: the
snapshot carries everything, so the same snapshot always gives the same findings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sentinel.core.model import (
    ANOMALY_KEY,
    NODE_KEY,
    AlertEvidence,
    Condition,
    Finding,
    Level,
    NodeInfo,
    NodeName,
    Ready,
    SiteName,
    SiteSees,
    SiteState,
    SiteStatus,
    SiteView,
    Snapshot,
    Verdict,
)
from sentinel.core.ruleset import Rule, RuleSet

__all__ = ["CLOUD_LINK_RULE", "DetectParams", "Detection", "alert_rule", "anomaly_rule",
           "detect"]

#: The built-in check behind the "cloud link or edgecore broken" row of the table.
CLOUD_LINK_RULE = "cloud-link"


@dataclass(frozen=True, slots=True)
class DetectParams:
    max_data_age: float = 120.0
    cloud_link_for: float = 60.0
    cloud_link_component: str = "edgecore"
    site_disruption_threshold: float = 0.55
    min_failing: int = 2
    anomaly_isolates: bool = False
    """`anomaly.action: isolate`: a raised anomaly alarm is a level-1 condition."""
    anomaly_for: float = 300.0


@dataclass(frozen=True, slots=True)
class Detection:
    findings: Mapping[str, Finding]
    """Only nodes that are not plainly healthy; absent means healthy by both witnesses."""
    sites: Mapping[str, SiteStatus]

    def guarded(self, site: str) -> bool:
        st = self.sites.get(site)
        return st is not None and st.state is SiteState.GUARDED


def _site_hits(view: SiteView, by_name: Mapping[str, Rule]) -> dict[str, list[tuple[Rule, float]]]:
    """Invert rule -> node -> value into node -> [(rule, value)]; results are sparse."""
    hits: dict[str, list[tuple[Rule, float]]] = {}
    for rule_name, per_node in view.firing.items():
        rule = by_name.get(rule_name)
        if rule is None:
            continue
        for node, value in per_node.items():
            hits.setdefault(node, []).append((rule, value))
    return hits


_NOT_KEY = re.compile(r"[^A-Za-z0-9_.-]")


def _label_safe(text: str) -> str:
    """A Kubernetes label value (what a taint value must be): 63 chars of [A-Za-z0-9_.-]."""
    return _NOT_KEY.sub("-", text)[:63].strip("-_.") or "alert"


def alert_rule(ev: AlertEvidence) -> Rule:
    """An alert as a rule that matched: Prometheus' `for` and Alertmanager's grouping already
    waited, so it counts at once; a node-level alert is the site's witness of a dead node."""
    name = _label_safe(f"alert.{ev.alertname}")
    component = ev.key if ev.level is Level.COMPONENT else _label_safe(ev.alertname)
    return Rule(name=name, level=ev.level, expr=f"alert {ev.alertname}: {ev.summary}",
                for_seconds=0.0, component=component, severity="", description=ev.summary,
                origin=ev.source or "alertmanager")


def anomaly_rule(params: DetectParams) -> Rule:
    """An anomaly alarm as a component rule: it can only ever ask for level 1."""
    return Rule(name=ANOMALY_KEY, level=Level.COMPONENT,
                expr="anomaly score at or above the model's threshold",
                for_seconds=params.anomaly_for, component=ANOMALY_KEY, severity="warning",
                description="unlike its own history or its site's peers",
                origin="anomaly model")


def _cond(rule: Rule, value: float, *, key: str | None = None,
          level: Level | None = None) -> Condition:
    return Condition(key=key or rule.key, level=level or rule.level, rule=rule.name,
                     for_seconds=rule.for_seconds, value=value, query=rule.expr)


def detect(snapshot: Snapshot, rules: RuleSet, params: DetectParams) -> Detection:
    by_name = {r.name: r for r in rules.rules}
    node_rule_names = {r.name for r in rules.node_rules}
    usable: dict[str, bool] = {}
    hits: dict[str, dict[str, list[tuple[Rule, float]]]] = {}
    node_unknown: dict[str, bool] = {}
    comp_unknown: dict[str, frozenset[str]] = {}
    for name, view in snapshot.sites.items():
        fresh = view.data_age is None or view.data_age <= params.max_data_age
        usable[name] = view.reachable and fresh
        hits[name] = _site_hits(view, by_name)
        node_unknown[name] = any(r in node_rule_names for r in view.rule_errors)
        comp_unknown[name] = frozenset(
            by_name[r].key for r in view.rule_errors if r in by_name and r not in node_rule_names)

    totals: dict[str, int] = dict.fromkeys(snapshot.sites, 0)
    failing: dict[str, int] = dict.fromkeys(snapshot.sites, 0)
    findings: dict[str, Finding] = {}
    cloud_link = Condition(key=params.cloud_link_component, level=Level.COMPONENT,
                           rule=CLOUD_LINK_RULE, for_seconds=params.cloud_link_for, value=None,
                           query="Kubernetes: node Ready condition")
    for node in snapshot.nodes.values():
        site = node.site
        if site is None or site not in totals:
            continue
        totals[site] += 1
        ready = node.ready is Ready.TRUE
        if not usable[site]:
            view = snapshot.sites[site]
            if not ready:
                failing[site] += 1
            if not ready or node.held:
                verdict = Verdict.PARTITION if not view.reachable and not ready else Verdict.UNKNOWN
                findings[node.name] = Finding(node.name, SiteName(site), verdict, node.ready,
                                              SiteSees.UNKNOWN, view.reachable, hold_all=True)
            continue
        h = hits[site].get(node.name)
        alerts = snapshot.alerts.get(node.name) if snapshot.alerts else None
        if alerts:
            h = [*(h or []), *((alert_rule(ev), 0.0) for ev in alerts)]
        unknown = comp_unknown[site]
        if params.anomaly_isolates:
            reading = snapshot.anomalies.get(node.name)
            if reading is not None:
                h = [*(h or []), (anomaly_rule(params), reading.score)]
            if node.name in snapshot.anomaly_unknown:
                unknown = unknown | {ANOMALY_KEY}
        if ready and h is None and not node.held:
            continue  # the common case at 100,000 nodes: nothing to say
        f = _classify(node, SiteName(site), h or [], snapshot.sites[site], node_unknown[site],
                      unknown, cloud_link)
        if f.verdict in (Verdict.NODE_FAILURE, Verdict.CLOUD_LINK) or \
                (f.site_sees is SiteSees.DOWN):
            failing[site] += 1
        if f.verdict is not Verdict.HEALTHY or node.held:
            findings[node.name] = f

    sites: dict[str, SiteStatus] = {}
    for name, view in snapshot.sites.items():
        n, bad = totals[name], failing[name]
        if not view.reachable:
            state = SiteState.PARTITIONED
        elif not usable[name]:
            state = SiteState.STALE
        elif bad >= params.min_failing and bad > params.site_disruption_threshold * n:
            state = SiteState.GUARDED
        else:
            state = SiteState.OK
        sites[name] = SiteStatus(SiteName(name), state, view.reachable, view.data_age, n, bad,
                                 view.error)
    return Detection(findings, sites)


def _classify(node: NodeInfo, site: SiteName, h: list[tuple[Rule, float]], view: SiteView,
              node_rules_unknown: bool, comp_unknown: frozenset[str],
              cloud_link: Condition) -> Finding:
    node_hits = [(r, v) for r, v in h if r.level is Level.NODE]
    comp_hits = [(r, v) for r, v in h if r.level is Level.COMPONENT]
    if node_hits:
        sees = SiteSees.DOWN
    elif node_rules_unknown or (node.name not in view.present and not h):
        sees = SiteSees.UNKNOWN
    else:
        sees = SiteSees.UP
    unknown = comp_unknown | ({NODE_KEY} if node_rules_unknown else frozenset())
    name = NodeName(node.name)

    def finding(verdict: Verdict, conds: list[Condition], hold_all: bool = False) -> Finding:
        return Finding(name, site, verdict, node.ready, sees, True, tuple(conds), unknown,
                       hold_all)

    if node.ready is Ready.TRUE:
        if sees is SiteSees.DOWN:
            # The cloud sees it serve, the site cannot scrape it: an exporter fault, or a node
            # coming back whose site has not scraped it yet. One witness is never enough for
            # level 2: downgrade to level 1, after the same grace as the opposite disagreement
            # (cloud_link_for). Component matches follow from the node being unscrapable.
            conds = [replace(_cond(r, v, key=r.downgrade_key, level=Level.COMPONENT),
                             for_seconds=max(r.for_seconds, cloud_link.for_seconds))
                     for r, v in node_hits]
            return finding(Verdict.COMPONENT_FAULT, conds)
        if comp_hits:
            return finding(Verdict.COMPONENT_FAULT, [_cond(r, v) for r, v in comp_hits])
        if sees is SiteSees.UNKNOWN:
            return finding(Verdict.UNKNOWN, [], hold_all=True)
        return finding(Verdict.HEALTHY, [])
    if sees is SiteSees.DOWN:
        # Both witnesses agree. Component rules firing too are a consequence, not a cause.
        return finding(Verdict.NODE_FAILURE, [_cond(r, v) for r, v in node_hits])
    if sees is SiteSees.UP:
        return finding(Verdict.CLOUD_LINK, [cloud_link, *(_cond(r, v) for r, v in comp_hits)])
    return finding(Verdict.UNKNOWN, [], hold_all=True)
