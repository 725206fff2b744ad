"""The gauges of the capabilities beside isolation, exported from their last round: the
registry guard's sites and the rollout guard's workloads (their counters live in metrics.py
with the rest)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["RegistryCollector", "RolloutCollector"]


class RegistryCollector(Collector):
    def __init__(self) -> None:
        self.sites: list[dict[str, Any]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily("sentinel_registry_active", "1 for the registry the site's "
                                   "nodes pull from (primary or standby).",
                                   labels=["site", "registry"])
        up = GaugeMetricFamily("sentinel_registry_up", "1 if the last probe of the registry "
                               "succeeded.", labels=["site", "registry"])
        none = GaugeMetricFamily("sentinel_registry_no_healthy_endpoint", "1 while both the "
                                 "site's registry and its standby fail: no switch can help, "
                                 "a person must.", labels=["site"])
        for s in self.sites:
            for role in ("primary", "standby"):
                active.add_metric([s["site"], role], 1.0 if s["active"] == role else 0.0)
                if s[role]["up"] is not None:
                    up.add_metric([s["site"], role], 1.0 if s[role]["up"] else 0.0)
            none.add_metric([s["site"]], 1.0 if s["no_healthy_endpoint"] else 0.0)
        yield from (active, up, none)

    def describe(self) -> Sequence[GaugeMetricFamily]:
        return []


class RolloutCollector(Collector):
    """The rollout guard's last round (rollouts.RolloutGuard.status_values)."""

    def __init__(self) -> None:
        self.workloads: list[dict[str, Any]] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["namespace", "workload", "app"]
        verdict = GaugeMetricFamily("sentinel_rollout_verdict", "1 for the current verdict of "
                                    "a workload's rollout under analysis (pass, fail, hold).",
                                    labels=[*labels, "verdict"])
        held = GaugeMetricFamily("sentinel_rollout_hold_seconds", "How long the analysis of "
                                 "the workload's new revision has been on hold (no data, too "
                                 "few samples, a site not answering).", labels=labels)
        overdue = GaugeMetricFamily("sentinel_rollout_hold_overdue", "1 when a hold has lasted "
                                    "past rollouts.hold_deadline: a person must look.",
                                    labels=labels)
        stopped = GaugeMetricFamily("sentinel_rollout_held_by_sentinel", "1 for a workload "
                                    "sentinel paused because a sibling of the same app failed "
                                    "(until `sentinel rollouts resume`).", labels=labels)
        value = GaugeMetricFamily("sentinel_rollout_metric_median", "Median of the analysis "
                                  "samples per metric, for the new and the stable version.",
                                  labels=[*labels, "metric", "version"])
        for w in self.workloads:
            key = [w["namespace"], w["name"], w["app"]]
            a = w.get("analysis")
            if a is not None:
                for v in ("pass", "fail", "hold"):
                    verdict.add_metric([*key, v], 1.0 if a["verdict"] == v else 0.0)
                for m in a["metrics"]:
                    for side in ("new", "stable"):
                        if m[f"median_{side}"] is not None:
                            value.add_metric([*key, m["metric"], side], m[f"median_{side}"])
            if w.get("hold_seconds") is not None:
                held.add_metric(key, w["hold_seconds"])
                overdue.add_metric(key, 1.0 if w["hold_overdue"] else 0.0)
            stopped.add_metric(key, 1.0 if w.get("hold") else 0.0)
        yield from (verdict, held, overdue, stopped, value)

    def describe(self) -> Sequence[GaugeMetricFamily]:
        return []
