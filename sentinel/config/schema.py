"""Sentinel's configuration: one YAML file, overridable by SENTINEL_* environment variables.

Every field says its unit and why its default is what it is. Validation reports every problem
at once, each with file:line and the key's path, before sentinel touches anything.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sentinel.config.yamlsrc import Duration, Source, SourceError, validate

__all__ = [
    "DEFAULT_FEATURES",
    "DEFAULT_ROLLOUT_METRICS",
    "AlertLabels",
    "Alerts",
    "Anomaly",
    "Api",
    "ApiToken",
    "Budgets",
    "ClusterConfig",
    "Config",
    "Durations",
    "Exempt",
    "LeaderElection",
    "Registries",
    "RegistryEndpoint",
    "RolloutMetric",
    "Rollouts",
    "SiteConfig",
    "SiteRegistry",
    "load_config",
    "parse_config",
]

ENV_PREFIX = "SENTINEL_"
#: Variables of the CLI and the simulator, not configuration overrides.
CLIENT_ENV = frozenset({"SENTINEL_CONFIG", "SENTINEL_URL", "SENTINEL_TOKEN",
                        "SENTINEL_TOKEN_FILE", "SENTINEL_OUTPUT", "SENTINEL_SIM",
                        "SENTINEL_USER"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SITE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    strategy: Literal["mirror-config", "image-override"] = "mirror-config"
    """mirror-config: a ConfigMap with containerd's hosts.toml, written to the nodes by the
    DaemonSet in deploy/; image-override: rewrite the images of the site's opted-in
    Deployments (as KubeEdge's EdgeApplication overrider does), restored on fail-back."""


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


class SiteConfig(_Strict):
    name: str
    prometheus: str
    """Base URL of the site's Prometheus (or any Prometheus-compatible query API)."""
    selector: dict[str, str] | None = None
    """Node labels that place a node in this site. Default: `{<site_label>: <name>}`."""
    timeout: Duration | None = None
    """Per-query timeout for this site; default `query_timeout`. A slow site never stalls others."""
    registry: SiteRegistry | None = None
    """The site's image registry, probed and failed over to the standby (`registries`)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _SITE_NAME.match(v) or len(v) > 63:
            raise ValueError("site names are 1-63 letters, digits, '-', '_' or '.'")
        return v

    @field_validator("prometheus")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL")
        return v.rstrip("/")


class ClusterConfig(_Strict):
    url: str | None = None
    """API server URL without auth (the emulator, or `kubectl proxy`). Wins over kubeconfig."""
    kubeconfig: str | None = None
    """Path to a kubeconfig. With neither set, sentinel uses the in-cluster service account."""
    events_namespace: str = "default"
    """Where Events about nodes go; `kubectl describe node` shows them from any namespace."""
    watch_timeout: Duration = 300.0
    """Server-side watch timeout (s); the watch is re-established after it, as client-go does."""


class Durations(_Strict):
    release_after: Duration = 300.0
    """How long a key must stay clear before its isolation is released (s). Longer than any
    `for`, so a node must prove itself healthy for longer than it took to condemn it."""
    flap_window: Duration = 1800.0
    """At most one release per node in this window (s): a flapping node stays isolated."""
    cloud_link_for: Duration = 60.0
    """How long the cloud must see a node NotReady while its site sees it serving, before the
    edgecore level-1 taint (s). Kubernetes' own grace period is 40 s; this waits a bit longer."""
    max_data_age: Duration = 120.0
    """A site whose newest scrape is older than this is treated as unknown, not as healthy (s)."""


class Guard(_Strict):
    site_disruption_threshold: float = Field(0.55, gt=0, le=1)
    """Above this fraction of a site's nodes failing together it is a site event: no level-2
    action there. 0.55 is Kubernetes' unhealthy-zone threshold."""
    min_failing: int = Field(2, ge=1)
    """A single failing node is never a site event, however small the site."""
    site_wide_threshold: float = Field(0.5, gt=0, le=1)
    """Above this fraction of a site's nodes failing one rule (one isolation key) at once, at
    either level, it is a site-level condition: no node of the site is isolated for it one by
    one (a site Prometheus that restarts or is overloaded, a bad config pushed to a whole
    site). A rule may set its own `site_wide`. Half: a real per-node fault is rarely shared by
    half a site at once, and a site-wide one rarely spares half of it."""
    site_wide_min_nodes: int = Field(3, ge=2)
    """Fewer matching nodes are never site-wide: in a five-node site two nodes with the same
    fault are two faults."""


class Budgets(_Strict):
    site_max_fraction: float = Field(0.5, gt=0, le=1)
    """At most this fraction of a site isolated at once (always at least one node)."""
    fleet_max_fraction: float = Field(0.2, gt=0, le=1)
    """At most this fraction of the fleet isolated at once (always at least one node)."""
    max_new_per_minute: int = Field(10, ge=0)
    """New isolations (or escalations) in any 60 s. A fleet-wide bad rule stops here."""


class Exempt(_Strict):
    nodes: list[str] = []
    selector: dict[str, str] = {}
    """Nodes with all of these labels are never isolated (and released if they were)."""


class Protect(_Strict):
    autonomy_key: str = "node.beta.openyurt.io/autonomy"
    """Node annotation or label; "true" means the node must keep its pods (no NoExecute)."""
    binding_key: str = "apps.openyurt.io/binding"
    """Pod annotation or label; "true" pins the pod to its node (no NoExecute there)."""


class AlertLabels(_Strict):
    """Which alert labels name the node, its site, the broken component and the level."""

    node: str = "node"
    site: str = "site"
    component: str = "component"
    level: str = "sentinel_level"


class Alerts(_Strict):
    token: str | None = None
    """Bearer token Alertmanager must send (`http_config.authorization`). Prefer token_file."""
    token_file: str | None = None
    basic_username: str | None = None
    """Optional HTTP basic auth instead of the token, for Alertmanagers configured that way."""
    basic_password_file: str | None = None
    max_body_bytes: int = Field(1_048_576, ge=1024)
    """Larger payloads get 413: Alertmanager sends at most `max_alerts` per group."""
    labels: AlertLabels = AlertLabels()
    default_level: Literal["component", "node"] = "component"
    """Level of an alert without a level label. An alert alone is evidence: level 2 still needs
    the cloud to agree."""
    stale_after: Duration = Field(3600.0, gt=0)
    """A firing alert not re-sent for this long stops counting: its resolve may have been lost.
    Keep it above the route's repeat_interval."""


class ApiToken(_Strict):
    name: str
    """Who holds it: recorded as the author of every override made with it."""
    token: str | None = None
    token_file: str | None = None
    """Preferred over `token`: a mounted Secret."""
    write: bool = False
    """May create and lift overrides, pause and resume. Read-only otherwise."""

    @model_validator(mode="after")
    def _one_secret(self) -> ApiToken:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token and token_file")
        return self


class Api(_Strict):
    tokens: list[ApiToken] = []
    """Bearer tokens for the HTTP API and the CLI. Writes always need a `write` token; with
    none configured, nobody can write."""
    open_reads: bool = True
    """Reads (status, nodes, explain, history) without a token. Set false to require one."""
    max_override_ttl: Duration = Field(7 * 86400.0, gt=0)
    """No override outlives this (s): a forgotten pause must end by itself."""


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
    enter: int = Field(3, ge=1)
    """Cycles in a row at or above the threshold before the alarm is raised."""
    leave: int = Field(1, ge=1)
    smoothing: float = Field(1.0, gt=0, le=1)
    """Weight of the newest point in a moving average of the evidence; 1 is none."""
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
    """One sample per pod and metric every `step` seconds (range queries)."""
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


class Config(_Strict):
    mode: Literal["enforce", "dry-run"] = "dry-run"
    """`dry-run` by default: a new install plans and explains before it may touch a node."""
    interval: Duration = Field(10.0, gt=0)
    """Seconds between cycles."""
    query_timeout: Duration = Field(3.0, gt=0)
    sites: list[SiteConfig] = Field(min_length=1)
    site_label: str = "topology.kubernetes.io/zone"
    rules: list[str] = ["rules"]
    """Rule files or directories of `*.yaml`, relative to the config file."""
    presence_query: str = "max by (node) (up)"
    """Which nodes a site's Prometheus sees serving (value > 0: some target scraped fine). A
    node it does not see serving, and no node rule condemns, is unknown: never acted on."""
    taint_domain: str = "sentinel.edge.io"
    """Prefix of every taint and annotation key sentinel owns; it touches no other."""
    cluster: ClusterConfig = ClusterConfig()
    durations: Durations = Durations()
    guard: Guard = Guard()
    budgets: Budgets = Budgets()
    exempt: Exempt = Exempt()
    protect: Protect = Protect()
    alerts: Alerts = Alerts()
    api: Api = Api()
    registries: Registries = Registries()
    anomaly: Anomaly = Anomaly()
    rollouts: Rollouts = Rollouts()
    leader_election: LeaderElection = LeaderElection()
    journal: str = "sentinel-journal.db"
    listen: str = "127.0.0.1:8080"
    base_dir: str = "."
    """Directory that relative paths are resolved against (the config file's)."""

    @field_validator("taint_domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not _DNS_SUBDOMAIN.match(v) or len(v) > 253:
            raise ValueError("must be a DNS subdomain such as sentinel.example.com")
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("write host:port, e.g. 0.0.0.0:8080")
        return v

    @field_validator("sites")
    @classmethod
    def _unique_sites(cls, sites: list[SiteConfig]) -> list[SiteConfig]:
        seen: set[str] = set()
        for s in sites:
            if s.name in seen:
                raise ValueError(f"site {s.name!r} is listed twice")
            seen.add(s.name)
        return sites

    @model_validator(mode="after")
    def _standby_for_every_registry(self) -> Config:
        for s in self.sites:
            if s.registry is not None and s.registry.standby is None and \
                    self.registries.standby is None:
                raise ValueError(f"site {s.name!r} has a registry but no standby: set "
                                 "registries.standby or the site's registry.standby")
        return self

    def site_selector(self, site: SiteConfig) -> dict[str, str]:
        return site.selector if site.selector is not None else {self.site_label: site.name}

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else Path(self.base_dir) / p

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _env_overrides(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    """Apply SENTINEL_A__B=value onto data['a']['b']; values are parsed as YAML scalars."""
    applied = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in CLIENT_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        target = data
        for part in path[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                target[part] = nxt
            target = nxt
        target[path[-1]] = value
        applied.append(name)
    return applied


def parse_config(text: str, filename: str, env: Mapping[str, str] | None = None) -> Config:
    """Config from YAML text; problems from the environment name the variable, not a line."""
    source = Source.parse(text, filename)
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise SourceError([f"{filename}:1: the config must be a mapping of keys"])
    data = dict(data)
    data.setdefault("base_dir", str(Path(filename).resolve().parent))
    applied = _env_overrides(data, env or {})
    try:
        return validate(Config, source, data)
    except SourceError as e:
        if applied:
            e.problems.append(f"(environment overrides applied: {', '.join(applied)})")
        raise


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SourceError([f"{p}: cannot read config: {e.strerror}"]) from None
    return parse_config(text, str(p), os.environ if env is None else env)
