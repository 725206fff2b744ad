"""Sentinel's Grafana dashboards, generated with grafanalib: `python dashboards/generate.py`
writes one JSON file per dashboard next to this script (import them in Grafana: Dashboards >
New > Import). Every dashboard has a Prometheus data source variable; the per-site and per-node
views have `site` and `node` variables. Every query uses only metrics sentinel or the shipped
recording rules export (tests/test_dashboards.py parses each one and checks).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

DS = "${datasource}"
SITE = 'site=~"$site"'
RI = "$__rate_interval"

Q = tuple[str, str]  # (PromQL, legend)


def _targets(queries: list[Q], instant: bool = False) -> list[Target]:
    return [Target(expr=e, legendFormat=legend, refId=chr(ord("A") + i), datasource=DS,
                   instant=instant, format="table" if instant else "time_series")
            for i, (e, legend) in enumerate(queries)]


def ts(title: str, queries: list[Q], unit: str = "short", desc: str = "",
       stack: bool = False) -> dict[str, Any]:
    return {"kind": TimeSeries, "title": title, "targets": _targets(queries), "unit": unit,
            "description": desc, "stacking": {"mode": "normal"} if stack else {"mode": "none"}}


def stat(title: str, query: str, unit: str = "short", desc: str = "") -> dict[str, Any]:
    return {"kind": Stat, "title": title, "targets": _targets([(query, "")]), "format": unit,
            "description": desc, "reduceCalc": "lastNotNull"}


def table(title: str, queries: list[Q], desc: str = "") -> dict[str, Any]:
    return {"kind": Table, "title": title, "targets": _targets(queries, instant=True),
            "description": desc}


def _layout(specs: list[dict[str, Any]]) -> list[Any]:
    """Stats four to a row (height 4), other panels two to a row (height 8)."""
    panels, x, y, row_h = [], 0, 0, 0
    for spec in specs:
        kind = spec.pop("kind")
        w, h = (6, 4) if kind is Stat else (24, 9) if kind is Table else (12, 8)
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        panels.append(kind(dataSource=DS, gridPos=GridPos(h=h, w=w, x=x, y=y), **spec))
        x, row_h = x + w, max(row_h, h)
    return panels


def _vars(*names: str) -> Templating:
    out = [Template(name="datasource", query="prometheus", type="datasource",
                    label="Data source", default="Prometheus")]
    if "site" in names:
        out.append(Template(name="site", label="Site", dataSource=DS, includeAll=True,
                            multi=True, allValue=".*",
                            query="label_values(sentinel_site_reachable, site)"))
    if "node" in names:
        out.append(Template(name="node", label="Node", dataSource=DS,
                            query=f"label_values(sentinel_node_isolation_level{{{SITE}}}, node)"))
    return Templating(list=out)


def dashboard(uid: str, title: str, specs: list[dict[str, Any]], *variables: str) -> Any:
    return Dashboard(title=title, uid=uid, tags=["sentinel"], panels=_layout(specs),
                     templating=_vars(*variables), time=Time("now-6h", "now"),
                     refresh="30s", schemaVersion=39, timezone="utc").auto_panel_ids()


def dashboards() -> dict[str, Any]:
    return {
        "fleet": dashboard("sentinel-fleet", "Sentinel / Fleet", [
            stat("Mode (1 = enforce)", 'sentinel_mode{mode="enforce"}'),
            stat("Sites reachable", "sum(sentinel_site_reachable)"),
            stat("Sites partitioned", "sum(sentinel_site_partitioned)"),
            stat("Nodes isolated", "sum(sentinel:isolated_nodes:sum)"),
            ts("Isolated nodes by level", [("sum by (level) (sentinel_isolated_nodes)",
                                            "level {{level}}")], stack=True),
            ts("Failing nodes by site", [("sentinel_site_failing_nodes", "{{site}}")]),
            ts("Site data age", [("sentinel_site_data_age_seconds", "{{site}}")], "s",
               "How old the newest sample from each site's Prometheus is."),
            ts("Site guard and pauses", [("sentinel_site_guard_active == 1", "guard {{site}}"),
                                         ("sentinel_site_paused == 1", "paused {{site}}")]),
            table("Sites", [("sentinel_site_reachable", ""), ("sentinel_site_partitioned", ""),
                            ("sentinel_site_failing_nodes", "")]),
        ]),
        "site": dashboard("sentinel-site", "Sentinel / Site", [
            stat("Reachable", f"min(sentinel_site_reachable{{{SITE}}})"),
            stat("Partitioned", f"max(sentinel_site_partitioned{{{SITE}}})"),
            stat("Failing nodes", f"sum(sentinel_site_failing_nodes{{{SITE}}})"),
            stat("Data age", f"max(sentinel_site_data_age_seconds{{{SITE}}})", "s"),
            ts("Isolated nodes", [(f"sentinel_isolated_nodes{{{SITE}}}",
                                   "{{site}} level {{level}}")]),
            ts("Node verdicts", [(f"count by (verdict) (sentinel_node_verdict{{{SITE}}} == 1)",
                                  "{{verdict}}")], stack=True),
            ts("Actions", [(f"sum by (kind, rule) (increase(sentinel_actions_total[{RI}]))",
                            "{{kind}} {{rule}}")]),
            table("Nodes not healthy or held", [
                (f"sentinel_node_isolation_level{{{SITE}}}", ""),
                (f"sentinel_node_verdict{{{SITE}}} == 1", "")]),
        ], "site"),
        "node": dashboard("sentinel-node", "Sentinel / Node history", [
            ts("Isolation level", [(f'sentinel_node_isolation_level{{{SITE},node="$node"}}',
                                    "level")], desc="0 none, 1 component, 2 node."),
            ts("Verdict", [(f'sentinel_node_verdict{{{SITE},node="$node"}} == 1',
                            "{{verdict}}")]),
            ts("Anomaly score", [(f'sentinel_anomaly_score{{{SITE},node="$node"}}', "score"),
                                 ("sentinel_anomaly_threshold", "threshold")], "percentunit"),
            ts("Anomaly alarm", [(f'sentinel_anomaly_alarm{{{SITE},node="$node"}}', "alarm")]),
        ], "site", "node"),
        "actions": dashboard("sentinel-actions", "Sentinel / Actions and budgets", [
            stat("Budgets exhausted", "sum(sentinel_budget_exhausted)"),
            stat("Overrides in force", "sum(sentinel_overrides_active)"),
            stat("Alerts active", "sum(sentinel_alerts_active)"),
            stat("Nodes in no site", "sentinel_nodes_without_site"),
            ts("Actions by kind and outcome",
               [(f"sum by (kind, outcome) (increase(sentinel_actions_total[{RI}]))",
                 "{{kind}} {{outcome}}")]),
            ts("Actions by rule", [(f"sum by (rule, level) (increase(sentinel_actions_total"
                                    f"[{RI}]))", "{{rule}} (level {{level}})")]),
            ts("Budgets exhausted", [("sentinel_budget_exhausted", "{{budget}} {{site}}")]),
            ts("Overrides", [("sentinel_overrides_active", "{{kind}}")]),
            ts("Alerts received", [(f"sum by (outcome) (rate(sentinel_alerts_received_total"
                                    f"[{RI}]))", "{{outcome}}")], "reqps"),
        ]),
        "anomaly": dashboard("sentinel-anomaly", "Sentinel / Anomaly", [
            stat("Nodes alarming", "sum(sentinel_anomaly_alarm)"),
            stat("Model age", "sentinel_anomaly_model_age_seconds", "s"),
            stat("Last training", "sentinel_anomaly_training_duration_seconds", "s"),
            stat("Threshold", "sentinel_anomaly_threshold"),
            ts("Top anomaly scores", [(f"topk(10, sentinel_anomaly_score{{{SITE}}})",
                                       "{{site}}/{{node}}")], "percentunit"),
            ts("Alarms by site", [(f"sum by (site) (sentinel_anomaly_alarm{{{SITE}}})",
                                   "{{site}}")]),
            ts("Trainings", [(f"sum by (outcome) (increase(sentinel_anomaly_trainings_total"
                              f"[{RI}]))", "{{outcome}}")]),
        ], "site"),
        "rollouts": dashboard("sentinel-rollouts", "Sentinel / Rollouts", [
            stat("Rollouts failing", 'sum(sentinel_rollout_verdict{verdict="fail"})'),
            stat("Rollouts on hold", 'sum(sentinel_rollout_verdict{verdict="hold"})'),
            stat("Holds overdue", "sum(sentinel_rollout_hold_overdue)"),
            stat("Held by sentinel", "sum(sentinel_rollout_held_by_sentinel)"),
            ts("Verdicts", [("sentinel_rollout_verdict == 1",
                             "{{namespace}}/{{workload}} {{verdict}}")]),
            ts("Metric medians, new vs stable", [(
                "sentinel_rollout_metric_median",
                "{{namespace}}/{{workload}} {{metric}} {{version}}")]),
            ts("Hold time", [("sentinel_rollout_hold_seconds", "{{namespace}}/{{workload}}")],
               "s"),
            ts("Rollbacks and holds", [(
                f"sum by (action, outcome) (increase(sentinel_rollout_actions_total[{RI}]))",
                "{{action}} {{outcome}}")]),
        ]),
        "registries": dashboard("sentinel-registries", "Sentinel / Registries", [
            stat("Sites on the standby", 'sum(sentinel_registry_active{registry="standby"})'),
            stat("Sites without a healthy registry",
                 "sum(sentinel_registry_no_healthy_endpoint)"),
            ts("Active registry", [(f'sentinel_registry_active{{{SITE},registry="standby"}}',
                                    "{{site}} on standby")]),
            ts("Registry up", [(f"sentinel_registry_up{{{SITE}}}", "{{site}} {{registry}}")]),
            ts("Probe time p95", [(
                "histogram_quantile(0.95, sum by (site, registry, le) (rate("
                f"sentinel_registry_probe_duration_seconds_bucket{{{SITE}}}[{RI}])))",
                "{{site}} {{registry}}")], "s"),
            ts("Switches", [(f"sum by (site, to) (increase(sentinel_registry_switches_total"
                             f"{{{SITE}}}[{RI}]))", "{{site}} to {{to}}")]),
        ], "site"),
        "self": dashboard("sentinel-self", "Sentinel / Self-health", [
            stat("Replicas up", 'sum(up{job=~".*sentinel.*"})'),
            stat("Leader", "sum(sentinel_leader)",
                 desc="Replicas acting: exactly 1 with leader election."),
            stat("Since last cycle", "time() - max(sentinel_last_cycle_success_timestamp_"
                 "seconds)", "s"),
            stat("Failed cycles (1h)", 'sum(increase(sentinel_cycles_total{outcome="failed"}'
                 '[1h]))'),
            ts("Cycle time p50 / p99", [
                (f"histogram_quantile(0.5, sum by (le) (rate(sentinel_cycle_duration_seconds_"
                 f"bucket[{RI}])))", "p50"),
                (f"histogram_quantile(0.99, sum by (le) (rate(sentinel_cycle_duration_seconds_"
                 f"bucket[{RI}])))", "p99"),
                (f"histogram_quantile(0.99, sum by (le) (rate(sentinel_cycle_collect_duration_"
                 f"seconds_bucket[{RI}])))", "p99 waiting for the metrics")], "s",
               desc="A cycle mostly waiting for the metrics is the store's to speed up."),
            ts("Cycles", [(f"sum by (outcome) (rate(sentinel_cycles_total[{RI}]))",
                           "{{outcome}}")], "ops"),
            ts("Leader by replica", [("sentinel_leader", "{{instance}}")]),
            ts("Mode", [("sentinel_mode == 1", "{{mode}}")]),
        ]),
    }


def write(directory: Path) -> list[Path]:
    out = []
    for name, d in dashboards().items():
        p = directory / f"{name}.json"
        p.write_text(json.dumps(d.to_json_data(), cls=DashboardEncoder, indent=2,
                                sort_keys=True) + "\n")
        out.append(p)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for p in write(target):
        print(p)
