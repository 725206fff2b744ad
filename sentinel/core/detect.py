"""Detection: a purely computational function from a Snapshot to per-node Findings.

It applies the two-witness table of DESIGN.md and the site guard. No I/O, no clock: the
snapshot carries everything, so the same snapshot always gives the same findings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
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
    site_wide_threshold: float = 0.5
    site_wide_min_nodes: int = 3
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

    def widespread(self, site: str, key: str) -> int | None:
        """How many of the site's nodes fail `key` when that is a site-level condition."""
        st = self.sites.get(site)
        return None if st is None else st.widespread.get(key)

    def broad(self, site: str) -> int:
        """How many of the site's nodes fail some check, when that is a site-level
        condition (0 otherwise)."""
        st = self.sites.get(site)
        return 0 if st is None else st.broad


@dataclass(frozen=True, slots=True)
class _SiteInput:
    """One site's answer, prepared for classifying its nodes."""

    view: SiteView
    usable: bool
    hits: Mapping[str, list[tuple[Rule, float]]]
    node_unknown: bool
    comp_unknown: frozenset[str]
    young: frozenset[str]
    new_nodes: frozenset[str]
    """Nodes with matches whose series are younger than the longest `for`: no witness yet."""


def _prepare(view: SiteView, rules: RuleSet, by_name: Mapping[str, Rule],
             params: DetectParams) -> _SiteInput:
    """A rule whose `for` is longer than the site's Prometheus has run is not a witness yet:
    its matches are dropped and its keys unknown (held, never released), like a failed query."""
    fresh = view.data_age is None or view.data_age <= params.max_data_age
    young = frozenset() if view.uptime is None else frozenset(
        r.name for r in rules.rules if r.for_seconds > view.uptime)
    blind = {**view.rule_errors, **dict.fromkeys(young, "too young")}
    firing = {k: v for k, v in view.firing.items() if k not in young}
    node_rule_names = {r.name for r in rules.node_rules}
    hits = _site_hits(firing, by_name)
    new_nodes = frozenset() if view.established is None else \
        frozenset(n for n in hits if n not in view.established)
    return _SiteInput(
        view, view.reachable and fresh, {n: h for n, h in hits.items() if n not in new_nodes},
        any(r in node_rule_names for r in blind),
        frozenset(by_name[r].key for r in blind if r in by_name and r not in node_rule_names),
        young, new_nodes)


def _site_hits(firing: Mapping[str, Mapping[str, float]],
               by_name: Mapping[str, Rule]) -> dict[str, list[tuple[Rule, float]]]:
    """Invert rule -> node -> value into node -> [(rule, value)]; results are sparse."""
    hits: dict[str, list[tuple[Rule, float]]] = {}
    for rule_name, per_node in firing.items():
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
    inputs = {name: _prepare(view, rules, by_name, params)
              for name, view in snapshot.sites.items()}
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
        f = _node_finding(node, SiteName(site), inputs[site], snapshot, params, cloud_link)
        if f is None:
            continue
        if not inputs[site].usable:
            failing[site] += node.ready is not Ready.TRUE  # the cloud's word is all there is
        elif f.verdict in (Verdict.NODE_FAILURE, Verdict.CLOUD_LINK) or \
                f.site_sees is SiteSees.DOWN:
            failing[site] += 1
        if f.verdict is not Verdict.HEALTHY or node.held:
            findings[node.name] = f
    wide = _widespread(findings.values(), totals, by_name, params)
    sites = {name: _site_status(inp, totals[name], failing[name], wide.get(name, _CALM), params)
             for name, inp in inputs.items()}
    return Detection(findings, sites)


def _node_finding(node: NodeInfo, site: SiteName, inp: _SiteInput, snapshot: Snapshot,
                  params: DetectParams, cloud_link: Condition) -> Finding | None:
    """None for the common case at 100,000 nodes: ready, nothing matching, nothing held."""
    ready = node.ready is Ready.TRUE
    if not inp.usable:
        if ready and not node.held:
            return None
        verdict = Verdict.PARTITION if not inp.view.reachable and not ready and \
            not inp.view.unresolved else Verdict.UNKNOWN
        return Finding(node.name, site, verdict, node.ready, SiteSees.UNKNOWN,
                       inp.view.reachable, hold_all=True)
    h = inp.hits.get(node.name)
    alerts = snapshot.alerts.get(node.name) if snapshot.alerts else None
    if alerts:
        h = [*(h or []), *((alert_rule(ev), 0.0) for ev in alerts)]
    unknown = inp.comp_unknown
    if params.anomaly_isolates:
        reading = snapshot.anomalies.get(node.name)
        if reading is not None:
            h = [*(h or []), (anomaly_rule(params), reading.score)]
        if node.name in snapshot.anomaly_unknown:
            unknown = unknown | {ANOMALY_KEY}
    if ready and h is None and not node.held:
        return None
    if node.name in inp.new_nodes:  # its series are too young to condemn it: not a witness
        return _classify(node, site, h or [], inp.view, True, unknown, cloud_link)
    return _classify(node, site, h or [], inp.view, inp.node_unknown, unknown, cloud_link)


@dataclass(frozen=True, slots=True)
class _Wide:
    keys: Mapping[str, int]
    """Key -> nodes failing it, for the keys over their threshold."""
    broad: int
    """Nodes failing any check, when that is over the default threshold; else 0."""


def _widespread(findings: Iterable[Finding], totals: Mapping[str, int],
                by_name: Mapping[str, Rule], params: DetectParams) -> dict[str, _Wide]:
    """Per site: the keys that fail on more than their threshold of it, and whether checks
    fail broadly (many nodes, each on some key: a Prometheus that cannot keep up with its
    scrapes fails them all over the site, a little under the threshold on each key). A key's
    threshold is the lowest of the rules that drive it on the site (built-in checks, alerts
    and anomalies take the default); a key whose every rule says `site_wide: false` is never
    site-wide, and does not count towards the broad failure."""
    counts: dict[tuple[str, str], int] = {}
    limit: dict[tuple[str, str], float] = {}
    nodes_failing: dict[str, int] = {}
    for f in findings:
        eligible = False
        for key, rule in {c.key: c.rule for c in f.conditions}.items():
            sk = (f.site, key)
            counts[sk] = counts.get(sk, 0) + 1
            r = by_name.get(rule)
            own = params.site_wide_threshold if r is None or r.site_wide == -1.0 \
                else r.site_wide
            if own is not None:
                limit[sk] = min(limit.get(sk, 1.0), own)
                eligible = True
        if eligible:
            nodes_failing[f.site] = nodes_failing.get(f.site, 0) + 1

    def over(n: int, fraction: float, site: str) -> bool:
        return n >= params.site_wide_min_nodes and n > fraction * totals[site]

    keys: dict[str, dict[str, int]] = {}
    for (site, key), n in counts.items():
        lim = limit.get((site, key))
        if lim is not None and over(n, lim, site):
            keys.setdefault(site, {})[key] = n
    return {site: _Wide(keys.get(site, {}),
                        n if over(n, params.site_wide_threshold, site) else 0)
            for site, n in nodes_failing.items()}


_CALM = _Wide({}, 0)


def _site_status(inp: _SiteInput, n: int, bad: int, wide: _Wide,
                 params: DetectParams) -> SiteStatus:
    view = inp.view
    if view.unresolved:
        state = SiteState.UNRESOLVED
    elif not view.reachable:
        state = SiteState.PARTITIONED
    elif not inp.usable:
        state = SiteState.STALE
    elif bad >= params.min_failing and bad > params.site_disruption_threshold * n:
        state = SiteState.GUARDED
    else:
        state = SiteState.OK
    if not inp.usable:
        wide = _CALM
    return SiteStatus(view.site, state, view.reachable, view.data_age, n, bad, view.error,
                      wide.keys, inp.young, wide.broad)


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
        # The site's `for` counts from its first sight, while the cloud still said Ready too
        # (not the other way: a healed node Ready before its next scrape starts afresh).
        return finding(Verdict.NODE_FAILURE, [replace(_cond(r, v), timed_with=r.downgrade_key)
                                              for r, v in node_hits])
    if sees is SiteSees.UP:
        return finding(Verdict.CLOUD_LINK, [cloud_link, *(_cond(r, v) for r, v in comp_hits)])
    return finding(Verdict.UNKNOWN, [], hold_all=True)
