"""Everything one sentinel process owns, built from the config: the composition root, the one
place that chooses between the real and the recording actuator (mode) and wires adapters into
the capabilities."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from prometheus_client import CollectorRegistry

from sentinel.adapters.acting import Recorder
from sentinel.adapters.actuate import Actuator, KubeActuator, RecordingActuator
from sentinel.adapters.alertstore import AlertStore
from sentinel.adapters.central import make_collector, retarget
from sentinel.adapters.journal import Journal
from sentinel.adapters.kube import ClusterView, make_api_client
from sentinel.adapters.lease import LeaseElector
from sentinel.adapters.metrics import Metrics
from sentinel.adapters.overrides import OverrideStore
from sentinel.adapters.sitewatch import SiteCatalog
from sentinel.anomaly.keeper import AnomalyKeeper
from sentinel.config.discovery import Resolved
from sentinel.config.schema import Config
from sentinel.core.model import Mode, SiteState
from sentinel.core.ruleset import RuleSet
from sentinel.isolation.cycle import Sentinel
from sentinel.registry.actuate import (
    KubeRegistryActuator,
    RecordingRegistryActuator,
    RegistryActuator,
)
from sentinel.registry.guard import RegistryGuard
from sentinel.rollouts.actuate import (
    KubeWorkloadActuator,
    RecordingWorkloadActuator,
    WorkloadActuator,
)
from sentinel.rollouts.guard import RolloutGuard

__all__ = ["Runtime", "build_runtime", "make_recorder", "registry_guard", "rollout_guard"]


@dataclass
class Runtime:
    """Everything one sentinel process owns; closed in reverse order of creation."""

    cfg: Config
    sentinel: Sentinel
    cluster: ClusterView
    journal: Journal
    registry: CollectorRegistry
    alerts: AlertStore
    overrides: OverrideStore
    sites: SiteCatalog
    registries: RegistryGuard | None = None
    anomaly: AnomalyKeeper | None = None
    rollouts: RolloutGuard | None = None
    elector: LeaseElector | None = None

    def leading(self) -> bool:
        """Whether this replica may act: always without leader election."""
        return self.sentinel.leading()

    async def aclose(self) -> None:
        if self.elector is not None:
            await asyncio.to_thread(self.elector.release)
        self.cluster.stop()
        self.sites.stop()
        if self.rollouts is not None:
            self.rollouts.close()
        await self.sentinel.collector.aclose()
        if self.registries is not None:
            await self.registries.aclose()
        self.overrides.close()
        self.alerts.close()
        self.journal.close()


def build_runtime(cfg: Config, rules: RuleSet,
                  registry: CollectorRegistry | None = None) -> Runtime:
    registry = registry or CollectorRegistry()
    api = make_api_client(cfg.cluster)
    cluster = ClusterView(api, cfg)
    catalog = SiteCatalog(cfg, api)
    metrics = Metrics(registry, cfg.mode)
    journal = Journal(cfg.resolve(cfg.journal), cfg.journal_busy_timeout,
                      on_error=metrics.journal_write_errors.inc)
    metrics.journal_writable = lambda: journal.writable
    recorder = make_recorder(cfg, api, journal)
    actuator: Actuator
    if Mode(cfg.mode) is Mode.ENFORCE:
        actuator = KubeActuator(api, cluster, cfg.taint_domain)
    else:
        actuator = RecordingActuator()
    def site_of_node() -> dict[str, str]:
        return {n: i.site for n, i in cluster.nodes().items() if i.site is not None}

    collector = make_collector(cfg, site_of_node)
    alerts = AlertStore(cfg.resolve(cfg.journal), cfg.alerts.stale_after,
                        busy_timeout=cfg.journal_busy_timeout)
    overrides = OverrideStore(api, cfg.api.overrides_namespace, cfg.cluster.watch_timeout)
    keeper = None
    if cfg.anomaly.enabled:
        keeper = AnomalyKeeper(cfg)
        keeper.site_of_node = site_of_node
        keeper.sites = catalog.sites
        keeper.load()
        metrics.anomaly_state.age = keeper.age
        metrics.anomaly_state.min_score = cfg.anomaly.export_min_score
    elector = None
    if cfg.leader_election.enabled:
        le = cfg.leader_election
        identity = le.identity or os.environ.get("POD_NAME") or \
            f"{socket.gethostname()}-{os.getpid()}"
        elector = LeaseElector(api, le.namespace, le.name, identity, le.lease_duration,
                               le.renew_deadline)
    leading: Callable[[], bool] = (lambda: elector.leading) if elector is not None \
        else (lambda: True)
    metrics.leading = leading
    guards: list[RegistryGuard | RolloutGuard] = []

    def apply_sites(resolved: Resolved) -> None:
        """Discovery changed the sites: everything that asks or acts per site follows."""
        retarget(collector, cfg, resolved)
        cluster.set_sites(resolved.sites)
        metrics.sites_unresolved(resolved.problems)
        for g in guards:
            g.set_sites(resolved.sites)

    sentinel = Sentinel(cfg, rules, collector, cluster, actuator, journal, metrics,
                        alerts=alerts, overrides=overrides, anomaly=keeper, leading=leading,
                        recorder=recorder, sites=catalog, apply_sites=apply_sites)
    guard = None
    if any(s.registry is not None for s in cfg.sites) or cfg.site_discovery.enabled:
        def partitioned(site: str) -> bool:
            rep = sentinel.last
            st = rep.detection.sites.get(site) if rep is not None else None
            return st is not None and st.state is SiteState.PARTITIONED

        guard = registry_guard(cfg, api, recorder, metrics, partitioned)
    rollouts = rollout_guard(cfg, api, recorder, metrics) if cfg.rollouts.enabled else None
    guards.extend(g for g in (guard, rollouts) if g is not None)
    return Runtime(cfg, sentinel, cluster, journal, registry, alerts, overrides, catalog, guard,
                   keeper, rollouts, elector)


def make_recorder(cfg: Config, api: client.ApiClient, journal: Journal) -> Recorder:
    """The shared apply-and-record path, writing Events through `api`."""
    return Recorder(journal, client.CoreV1Api(api), cfg.cluster.events_namespace)


def registry_guard(cfg: Config, api: client.ApiClient, recorder: Recorder, metrics: Metrics,
                   partitioned: Callable[[str], bool]) -> RegistryGuard:
    """The registry guard with the actuator the mode calls for."""
    r = cfg.registries
    kube = KubeRegistryActuator(api, r.namespace, cfg.taint_domain, r.workload_label,
                                cfg.site_selector)
    actuator: RegistryActuator = kube if Mode(cfg.mode) is Mode.ENFORCE \
        else RecordingRegistryActuator(kube)
    return RegistryGuard(cfg, actuator, recorder, metrics, partitioned)


def rollout_guard(cfg: Config, api: client.ApiClient, recorder: Recorder,
                  metrics: Metrics) -> RolloutGuard:
    """The rollout guard with the actuator the mode calls for."""
    actuator: WorkloadActuator = KubeWorkloadActuator(api, cfg.taint_domain) \
        if Mode(cfg.mode) is Mode.ENFORCE else RecordingWorkloadActuator()
    return RolloutGuard(cfg, api, actuator, recorder, metrics)
