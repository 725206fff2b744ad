"""Sentinel's configuration schema: what isolation reads (sites, cluster, durations, guards,
budgets, exemptions, alerts, the API) and the whole Config. The capabilities' settings are in
capabilities.py, loading in loading.py.

Every field says its unit and why its default is what it is. Validation reports every problem
at once, each with file:line and the key's path, before sentinel touches anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sentinel.config.base import Strict as _Strict
from sentinel.config.capabilities import (
    Anomaly,
    LeaderElection,
    Registries,
    Rollouts,
    SiteRegistry,
)
from sentinel.config.discovery import SiteDiscovery
from sentinel.config.sources import HttpSettings, MetricsSource
from sentinel.config.yamlsrc import Duration

__all__ = [
    "AlertLabels",
    "Alerts",
    "Api",
    "ApiToken",
    "Budgets",
    "ClusterConfig",
    "Config",
    "Durations",
    "Exempt",
    "Guard",
    "Protect",
    "SiteConfig",
]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_SITE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class SiteConfig(_Strict):
    name: str
    prometheus: str | None = None
    """Base URL of the site's Prometheus (or any Prometheus-compatible query API). Required
    in the default per-site mode; none in central mode (`metrics_source`)."""
    http: HttpSettings | None = None
    """How to speak to this site's Prometheus; default `metrics_source.http`."""
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
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
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
    lease_witness_after: Duration = Field(20.0, ge=0)
    """A Ready node whose kubelet has not renewed its Lease (in `node_lease_namespace`) for this
    long counts as lost to the cloud (s), before the node lifecycle controller's grace period
    (50 s) marks it. Two of the kubelet's renewal intervals (10 s, jittered by up to 4 %): the
    renewal due after the last one is ten seconds overdue, so a kubelet that renews late, even
    by several seconds every time, is not a death. Level 2 still needs the site's Prometheus
    to agree. 0: wait for the controller (Ready only)."""
    node_lease_namespace: str = "kube-node-lease"
    list_page_size: int = Field(500, ge=1, le=10_000)
    """Objects per page when nodes and pods are listed (limit/continue, client-go's default 500):
    no list body of the whole fleet is ever held in memory."""


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
    autonomy_duration_key: str = "node.openyurt.io/autonomy-duration"
    """Node annotation (current OpenYurt): a Go duration the control plane waits before it
    evicts a node out of contact, "0" for ever. Level 2 does not evict inside that window."""
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
    alertmanager_urls: list[str] = []
    """Alertmanager API URLs (http://alertmanager-operated.monitoring.svc:9093) to read the
    firing alerts routed to `receiver` from at start: a replica that starts with an empty disk
    knows them at once, not at the route's repeat_interval. Any one that answers will do."""
    receiver: str = "sentinel"
    """The Alertmanager receiver that delivers to sentinel (alertmanager/alertmanager.yml)."""


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
    overrides_namespace: str = "sentinel"
    """Where the people's overrides live, as SentinelOverride objects (deploy/crds/): in the
    cluster, so every replica sees the same ones and `kubectl get sov -n sentinel` lists them."""
    max_override_ttl: Duration = Field(7 * 86400.0, gt=0)
    """No override outlives this (s): a forgotten pause must end by itself."""
    max_body_bytes: int = Field(65_536, ge=1024)
    """Larger request bodies get 413 before they are read: an override or a pause is a few
    hundred bytes, and a 50 MiB body must not cost the pod 150 MiB (the alert webhook has
    its own, `alerts.max_body_bytes`)."""


class Config(_Strict):
    mode: Literal["enforce", "dry-run"] = "dry-run"
    """`dry-run` by default: a new install plans and explains before it may touch a node."""
    interval: Duration = Field(5.0, gt=0)
    """Seconds between cycles. Every wait of the isolation rules is rounded up to a cycle:
    5 s keeps a crash's level 2 within 30 s (bench/crash_to_l2.py). A cycle still running
    when the next is due makes that one skipped: two never run at once."""
    query_timeout: Duration = Field(3.0, gt=0)
    site_discovery: SiteDiscovery = SiteDiscovery()
    """Sites from the edge platform's NodePools or NodeGroups (config/discovery.py)."""
    sites: list[SiteConfig] = Field(default_factory=list, validate_default=True)
    """The sites written here. At least one, unless `site_discovery` finds them; an entry
    here wins over a discovered site of the same name."""
    metrics_source: MetricsSource = MetricsSource()
    """Where the sites' metrics come from and how to ask (config/sources.py)."""
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
    journal_busy_timeout: Duration = Field(10.0, gt=0)
    """How long a write waits for another writer's lock on the journal before it fails. A
    cycle whose write-ahead fails acts on nothing (status, `sentinel_journal_writable` and
    SentinelJournalUnwritable say why) and the next cycle tries again."""
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
    def _unique_sites(cls, sites: list[SiteConfig], info: ValidationInfo) -> list[SiteConfig]:
        d = info.data.get("site_discovery")
        # site_discovery absent from the data: it failed, and says why itself.
        if not sites and d is not None and not d.enabled:
            raise PydanticCustomError(
                "too_short", "List should have at least 1 item: list the sites here, or "
                "discover them from the platform (site_discovery.discover: "
                "openyurt-nodepools or kubeedge-nodegroups)")
        seen: set[str] = set()
        for s in sites:
            if s.name in seen:
                raise ValueError(f"site {s.name!r} is listed twice")
            seen.add(s.name)
        return sites

    @model_validator(mode="after")
    def _standby_for_every_registry(self) -> Config:
        tmpl = self.site_discovery.registry
        for s in [*self.sites, *([] if tmpl is None else [SiteConfig(name="site_discovery",
                                                                       registry=tmpl)])]:
            if s.registry is not None and s.registry.standby is None and \
                    self.registries.standby is None:
                raise ValueError(f"site {s.name!r} has a registry but no standby: set "
                                 "registries.standby or the site's registry.standby")
        return self

    @model_validator(mode="after")
    def _a_source_for_every_site(self) -> Config:
        if self.metrics_source.mode == "per-site":
            missing = [s.name for s in self.sites if s.prometheus is None]
            if missing:
                raise ValueError(f"site(s) {', '.join(missing)} have no `prometheus` URL: give "
                                 "each site its Prometheus, or set metrics_source.mode: "
                                 "central and metrics_source.url")
        return self

    def site_http(self, site: SiteConfig) -> HttpSettings:
        """How to speak to the site's Prometheus: its own settings, else the default."""
        return site.http if site.http is not None else self.metrics_source.http

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
