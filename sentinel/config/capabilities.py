"""Settings of the capabilities beside isolation: registry failover, anomaly models, the
rollout guard, leader election. Each field says its unit and why its default is what it is."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from sentinel.config.base import Strict as _Strict
from sentinel.config.yamlsrc import Duration

__all__ = ["DEFAULT_FEATURES", "DEFAULT_ROLLOUT_METRICS", "Anomaly", "LeaderElection",
           "Registries", "RegistryEndpoint", "RolloutMetric", "Rollouts", "SiteRegistry"]


class RegistryEndpoint(_Strict):
    url: str
    """http(s)://host[:port] of a registry speaking the distribution API (`GET /v2/`)."""
    ca_file: str | None = None
    """CA bundle for the probe and for containerd (`ca` in hosts.toml, a path on the node)."""
    skip_verify: bool = False
    username: str | None = None
    password_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+$", v.rstrip("/")):
            raise ValueError(f"{v!r} is not an http(s) URL of a registry (no path)")
        return v.rstrip("/")


class SiteRegistry(_Strict):
    primary: RegistryEndpoint
    standby: RegistryEndpoint | None = None
    """Default: `registries.standby`, the center's."""
    strategy: Literal["mirror-config", "image-override", "edgeapplication"] = "mirror-config"
    """mirror-config: a ConfigMap with containerd's hosts.toml, written to the nodes by the
    DaemonSet in deploy/; image-override: rewrite the images of the site's opted-in
    Deployments, restored on fail-back; edgeapplication (KubeEdge): add a Registry image
    override to the site's node group (a NodeGroup of the site's name) in each opted-in
    EdgeApplication, removed on fail-back — where KubeEdge keeps a group's image overrides,
    so that its controller's next rendering of the group's workloads keeps them
    (registry/edgeapps.py)."""


class Registries(_Strict):
    standby: RegistryEndpoint | None = None
    """The center's standby registry, for every site that names none."""
    probe_interval: Duration = Field(5.0, gt=0)
    probe_timeout: Duration = Field(2.0, gt=0)
    failures_to_failover: int = Field(2, ge=1)
    """Consecutive failed probes of the primary before failing over: 2 x 5 s keeps the switch
    well under containerd's own 30 s dial timeout on every pull."""
    healthy_for_failback: Duration = Field(120.0, ge=0)
    """The primary must answer every probe this long before the site fails back."""
    max_failbacks: int = Field(3, ge=1)
    """At most this many fail-backs per `failback_window`: a flapping primary is left alone."""
    failback_window: Duration = Field(3600.0, gt=0)
    canary: str | None = None
    """Optional `repository:tag` whose manifest must answer `HEAD` too: content is served."""
    namespace: str = "sentinel"
    """Where the mirror-config ConfigMaps live (`sentinel-registry-<site>`): sentinel's own
    namespace, where deploy/ grants it ConfigMaps and the registry-hosts DaemonSet reads."""
    workload_label: str = "sentinel.edge.io/registry-failover"
    """Deployments with this label "true" are rewritten by the image-override strategy."""


#: The anomaly features: one value per node from node-exporter and kube-state-metrics, with
#: the `node` label the sites' scrape configs attach. `$rate_window` is `anomaly.rate_window`.
DEFAULT_FEATURES: dict[str, str] = {
    "cpu": '1 - avg by (node) (rate(node_cpu_seconds_total{mode="idle"}[$rate_window]))',
    "load": "max by (node) (node_load1)",
    "memory": "max by (node) (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "disk_latency": "max by (node) (rate(node_disk_io_time_weighted_seconds_total[$rate_window])"
                    " / clamp_min(rate(node_disk_io_time_seconds_total[$rate_window]), 0.001))",
    "disk_full": "max by (node) (1 - node_filesystem_avail_bytes / node_filesystem_size_bytes)",
    "net_errors": "sum by (node) (rate(node_network_receive_errs_total[$rate_window])"
                  " + rate(node_network_transmit_errs_total[$rate_window]))",
    "retransmits": "sum by (node) (rate(node_netstat_Tcp_RetransSegs[$rate_window]))",
    "restarts": "sum by (node) (increase(kube_pod_container_status_restarts_total[10m]))",
}
_FEATURE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _prom_duration(seconds: float) -> str:
    """Prometheus takes whole numbers of one unit."""
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{int(seconds * 1000)}ms"


class Anomaly(_Strict):
    enabled: bool = True
    model_file: str = "sentinel-anomaly.npz"
    """Where the trained model is kept (relative to the config file), with its metadata."""
    features: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FEATURES),
                                     min_length=1)
    """Feature name -> PromQL giving one value per node (a `node` label). Changing them
    makes the saved model refused and retrained."""
    rate_window: Duration = Field(120.0, gt=0)
    """Replaces `$rate_window` in the features: at least four scrape intervals."""
    training_window: Duration = Field(6 * 3600.0, gt=0)
    """History each training reads from the sites' Prometheus (range queries)."""
    training_step: Duration = Field(60.0, gt=0)
    retrain_every: Duration = Field(86400.0, gt=0)
    retry_after: Duration = Field(600.0, gt=0)
    """After a failed training (a site dark, too little history), try again this much later."""
    max_model_age: Duration = Field(3 * 86400.0, gt=0)
    """An older model is stale: refused (no scores) and retrained."""
    target_alarm_rate: float = Field(0.01, gt=0, lt=0.5)
    """The label-free threshold: the fraction of healthy points allowed to alarm."""
    enter: float = Field(10.0, gt=0)
    """Evidence that raises the alarm, in points at the threshold, a point being one
    `training_step` of time whatever the `interval`: 10 minutes at it (at 60 s steps), 5 at
    ten times rarer, 2 at a hundred-thousandth of it; a point just under it counts for less,
    not nothing (docs/anomaly.md). It used to count cycles in a row (default 3): a
    configuration that still says 3 is now raised at least as soon, and more often."""
    budget_half_life: Duration = Field(2 * 86400.0, ge=0)
    """A node that alarmed less than `target_alarm_rate` of its time lately needs less
    evidence (down to a fifth of `enter`), one that alarmed more needs more (up to five
    times): this is the half-life of that "lately". 0 keeps `enter` fixed for every node."""
    leave: int = Field(1, ge=1)
    """Points (`training_step`s of time) in a row under the threshold that clear the alarm."""
    smoothing: float = Field(0.7, gt=0, le=1)
    """Weight of the newest point in a moving average of the evidence; 1 is none."""
    accept_after: Duration = Field(6 * 3600.0, gt=0)
    """A node whose score stays at or above the threshold this long (leaky: time below counts
    back) takes its recent level as its baseline and the alarm clears, with a journal note:
    a level shift is the new normal, not an alarm until the next training. Shorter than the
    faults you want to keep alarming on, and it would absorb them."""
    min_peers: int = Field(3, ge=2)
    """Fewer nodes with data at a site and the peer comparison is left out there."""
    action: Literal["alert", "isolate"] = "alert"
    """alert: metric, journal and explain only. isolate: an alarm may also take level 1 (the
    `anomaly` taint, after `isolate_after`); an anomaly alone never takes level 2."""
    isolate_after: Duration = Field(300.0, ge=0)
    export_min_score: float = Field(0.0, ge=0, le=1)
    """Export `sentinel_anomaly_score` only for nodes at or above this (cardinality)."""

    @field_validator("features")
    @classmethod
    def _features(cls, v: dict[str, str]) -> dict[str, str]:
        for name, expr in v.items():
            if not _FEATURE_NAME.match(name):
                raise ValueError(f"feature name {name!r}: lower-case letters, digits and _")
            if not expr.strip():
                raise ValueError(f"feature {name!r} has an empty query")
        return v

    def queries(self) -> dict[str, str]:
        """The features' PromQL as sent, `$rate_window` filled in."""
        w = _prom_duration(self.rate_window)
        return {k: v.replace("$rate_window", w) for k, v in self.features.items()}


_POD_SEL = 'namespace="$namespace",pod=~"$pods"'
#: The rollout guard's metrics: PromQL giving one value per pod with `pod` and `version`
#: labels. `$namespace`, `$pods` (a regex of the workload's pod names) and `$window`
#: (`rollouts.rate_window`) are filled in. Error ratio and latency from the app's own request
#: metrics (`version` from the pod label, as a `labelmap` of kubernetes_sd gives it);
#: restarts from kube-state-metrics, joined to the pod's `version` label.
DEFAULT_ROLLOUT_METRICS: dict[str, dict[str, Any]] = {
    "error-ratio": {
        "query": f"(sum by (pod, version) (rate(app_requests_total{{{_POD_SEL},code=~\"5..\"}}"
                 f"[$window])) or sum by (pod, version) (rate(app_requests_total{{{_POD_SEL}}}"
                 f"[$window])) * 0) / sum by (pod, version) (rate(app_requests_total"
                 f"{{{_POD_SEL}}}[$window]))",
        "margin": 0.02, "relative": 1.0},
    "latency-p95": {
        "query": "histogram_quantile(0.95, sum by (pod, version, le) (rate("
                 f"app_request_duration_seconds_bucket{{{_POD_SEL}}}[$window])))",
        "margin": 0.025, "relative": 0.5},
    "restarts": {
        "query": "sum by (pod, version) (increase(kube_pod_container_status_restarts_total"
                 f"{{{_POD_SEL}}}[$window]) * on (namespace, pod) group_left (version) "
                 f"label_replace(kube_pod_labels{{{_POD_SEL}}}, \"version\", \"$1\", "
                 "\"label_version\", \"(.*)\"))",
        "margin": 1.0, "relative": 0.0},
}
_METRIC_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class RolloutMetric(_Strict):
    query: str = Field(min_length=1)
    margin: float = Field(ge=0)
    """The new version's median must exceed the stable one's by more than this to fail."""
    relative: float = Field(0.0, ge=0)
    """...and by more than this fraction of the stable median."""


class Rollouts(_Strict):
    enabled: bool = False
    """Off by default: the guard writes to workloads (pause, roll back), so it is opted in to
    twice, here and by a label on each workload."""
    label: str = "sentinel.edge.io/rollout-guard"
    """Deployments and DaemonSets with this label "true" are analysed."""
    app_labels: list[str] = ["apps.kubeedge.io/edgeapplication-name",
                             "app.kubernetes.io/name"]
    """The first of these labels a workload has names its application: workloads of one app
    (one per node group, as KubeEdge's EdgeApplication makes them) are held together. A
    workload with none is its own application."""
    version_label: str = "version"
    """The pod label whose value tells the revisions apart. The metric queries must return
    it as the label `version` (the default templates group by it)."""
    interval: Duration = Field(10.0, gt=0)
    """Seconds between two analyses of every workload that is rolling out."""
    rate_window: Duration = Field(30.0, gt=0)
    """Replaces `$window` in the metric queries: at least four scrape intervals."""
    step: Duration = Field(10.0, gt=0)
    """One sample per pod and metric every `step` seconds (range queries). Samples closer than
    `rate_window` share requests: the rank test counts them as `rate_window / step` times
    fewer (rollouts/analysis.py, `rank_test`)."""
    baseline: Duration = Field(300.0, gt=0)
    """Stable samples reach back this far before the new revision's first pod."""
    max_window: Duration = Field(1800.0, gt=0)
    """The analysis reads at most this much history."""
    min_window: Duration = Field(60.0, ge=0)
    """No verdict but hold before the new revision has run this long."""
    min_samples: int = Field(10, ge=5)
    """Per version and metric; fewer and the verdict is hold."""
    alpha: float = Field(0.01, gt=0, lt=0.5)
    """The rank test's significance level (one-sided: is the new version worse?)."""
    hold_deadline: Duration = Field(900.0, gt=0)
    """A hold lasting longer alerts a human (`sentinel_rollout_hold_overdue`)."""
    metrics: dict[str, RolloutMetric] = Field(
        default_factory=lambda: {k: RolloutMetric(**v)
                                 for k, v in DEFAULT_ROLLOUT_METRICS.items()}, min_length=1)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: dict[str, RolloutMetric]) -> dict[str, RolloutMetric]:
        for name, m in v.items():
            if not _METRIC_NAME.match(name):
                raise ValueError(f"metric name {name!r}: lower-case letters, digits, - and _")
            if "$pods" not in m.query:
                raise ValueError(f"metric {name!r}: the query must select the workload's pods "
                                 "with $pods (and $namespace)")
        return v

    def query(self, name: str, namespace: str, pods: str) -> str:
        q = self.metrics[name].query
        return (q.replace("$namespace", namespace).replace("$pods", pods)
                .replace("$window", _prom_duration(self.rate_window)))


class LeaderElection(_Strict):
    enabled: bool = False
    """On for more than one replica: only the holder of the Lease acts; the others keep
    cycling (so they serve reads, and take over with their timers running) but change
    nothing and write no journal."""
    namespace: str = "sentinel"
    """Where the Lease lives: sentinel's own namespace (the RBAC in deploy/ grants it there)."""
    name: str = "sentinel"
    identity: str | None = None
    """Default: the POD_NAME environment variable, else host name and process id."""
    lease_duration: Duration = Field(15.0, gt=0)
    """A dead leader's lease is taken over this long after its last renewal."""
    renew_deadline: Duration = Field(10.0, gt=0)
    """A leader that has not renewed for this long stops acting: less than the duration, so
    it has stopped before anyone else may start."""
    retry_period: Duration = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _deadline_below_duration(self) -> LeaderElection:
        if self.renew_deadline >= self.lease_duration:
            raise ValueError("renew_deadline must be shorter than lease_duration, or two "
                             "replicas could act at once")
        if self.retry_period >= self.renew_deadline:
            raise ValueError("retry_period must be shorter than renew_deadline")
        return self
