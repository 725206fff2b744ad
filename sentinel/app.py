"""The running service: builds the adapters from the config, schedules cycles, serves HTTP.

`/healthz` says the process is alive and cycling; `/readyz` that it has synced the nodes and
completed a cycle; `/metrics` the sentinel_* series; `/api/v1/...` the on-call API (api.py)
and the alert webhook (webhook.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .adapters.actuate import Actuator, KubeActuator, RecordingActuator
from .adapters.alertstore import AlertStore
from .adapters.journal import Journal
from .adapters.kube import ClusterView, make_api_client
from .adapters.lease import LeaseElector
from .adapters.overrides import OverrideStore
from .adapters.prom import SiteCollector, SiteTarget
from .api import add_api_routes
from .config import Config
from .failover import RegistryGuard
from .learning import AnomalyKeeper
from .metrics import Metrics
from .model import SiteState
from .rollouts import RolloutGuard
from .rules import RuleSet
from .service import Sentinel
from .webhook import add_alert_routes

__all__ = ["Runtime", "build_runtime", "create_app"]

log = logging.getLogger("sentinel")


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
    journal = Journal(cfg.resolve(cfg.journal))
    actuator: Actuator
    if cfg.mode == "enforce":
        actuator = KubeActuator(api, cluster, cfg.taint_domain, cfg.cluster.events_namespace)
    else:
        actuator = RecordingActuator()
    collector = SiteCollector(
        [SiteTarget(s.name, s.prometheus, s.timeout or cfg.query_timeout) for s in cfg.sites],
        cfg.presence_query)
    metrics = Metrics(registry, cfg.mode)
    alerts = AlertStore(cfg.resolve(cfg.journal), cfg.alerts.stale_after)
    overrides = OverrideStore(cfg.resolve(cfg.journal))
    keeper = None
    if cfg.anomaly.enabled:
        keeper = AnomalyKeeper(cfg)
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
    sentinel = Sentinel(cfg, rules, collector, cluster, actuator, journal, metrics,
                        alerts=alerts, overrides=overrides, anomaly=keeper, leading=leading)
    guard = None
    if any(s.registry is not None for s in cfg.sites):
        def partitioned(site: str) -> bool:
            rep = sentinel.last
            st = rep.detection.sites.get(site) if rep is not None else None
            return st is not None and st.state is SiteState.PARTITIONED

        guard = RegistryGuard(cfg, api, journal, metrics, partitioned, actuator.mode)
    rollouts = RolloutGuard(cfg, api, journal, metrics, actuator.mode) \
        if cfg.rollouts.enabled else None
    return Runtime(cfg, sentinel, cluster, journal, registry, alerts, overrides, guard, keeper,
                   rollouts, elector)


def create_app(rt: Runtime, *, schedule: bool = True, sync_timeout: float = 60.0) -> FastAPI:
    interval = rt.cfg.interval

    async def tick() -> None:
        if not rt.cluster.synced:
            # Wait (bounded) rather than skip: a skipped tick would delay readiness by a whole
            # interval. Nothing is decided without the node list.
            log.info("waiting for the node list before the first cycle")
            if not await asyncio.to_thread(rt.cluster.wait_synced, min(interval, 30.0)):
                log.warning("node list still not synced (%s); no cycle yet",
                            rt.cluster.nodes_reflector.last_error or "no answer")
                return
        with contextlib.suppress(Exception):  # logged and counted in run_cycle; keep going
            await rt.sentinel.run_cycle()

    scheduler = AsyncIOScheduler()

    async def elect() -> None:
        assert rt.elector is not None
        was = rt.elector.leading
        try:
            now_leading = await asyncio.to_thread(rt.elector.step)
        except Exception:
            log.exception("lease step failed; the next one retries")
            return
        if now_leading and not was:
            # The previous leader's journal is the memory now (flap damping, rate budget).
            await rt.sentinel.take_over(time.time())
            wake()
        elif was and not now_leading:
            log.warning("not leading any more (lease held by %s): acting on nothing",
                        rt.elector.holder)

    async def probe() -> None:
        if not rt.leading():
            return
        assert rt.registries is not None
        try:
            await rt.registries.run_round()
        except Exception:
            log.exception("registry probe round failed; the next one retries")

    async def train() -> None:
        """Off the decision path: its own job, the fitting in a worker thread."""
        keeper = rt.anomaly
        if keeper is None or keeper.training or not keeper.due() or not rt.leading():
            return
        try:
            result = await asyncio.to_thread(keeper.train)
        except Exception as e:
            rt.sentinel.metrics.trained("failed")
            log.warning("anomaly training failed: %s; next try in %.0fs", e,
                        rt.cfg.anomaly.retry_after)
            return
        rt.sentinel.metrics.trained("ok", result.seconds)

    async def analyse_rollouts() -> None:
        """Off the decision path: its own job, the queries and writes in a worker thread."""
        assert rt.rollouts is not None
        if not rt.leading():
            return
        try:
            await asyncio.to_thread(rt.rollouts.run_round)
        except Exception:
            log.exception("rollout analysis round failed; the next one retries")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.cluster.start()
        if rt.rollouts is not None:
            rt.rollouts.start()
        if schedule:
            if rt.elector is not None:
                scheduler.add_job(elect, "interval",
                                  seconds=rt.cfg.leader_election.retry_period,
                                  max_instances=1, coalesce=True, id="lease",
                                  next_run_time=datetime.now().astimezone())
            scheduler.add_job(tick, "interval", seconds=interval, max_instances=1,
                              coalesce=True, next_run_time=datetime.now().astimezone(),
                              id="cycle")
            if rt.registries is not None:
                scheduler.add_job(probe, "interval", seconds=rt.cfg.registries.probe_interval,
                                  max_instances=1, coalesce=True, id="registries",
                                  next_run_time=datetime.now().astimezone())
            if rt.rollouts is not None:
                scheduler.add_job(analyse_rollouts, "interval", seconds=rt.cfg.rollouts.interval,
                                  max_instances=1, coalesce=True, id="rollouts",
                                  next_run_time=datetime.now().astimezone())
            if rt.anomaly is not None:
                a = rt.cfg.anomaly
                scheduler.add_job(train, "interval", seconds=min(60.0, a.retry_after),
                                  max_instances=1, coalesce=True, id="anomaly-train",
                                  next_run_time=datetime.now().astimezone())
            scheduler.start()
        log.info("sentinel up: mode=%s, %d sites, %d rules, interval %.1fs", rt.cfg.mode,
                 len(rt.cfg.sites), len(rt.sentinel.rules.rules), interval)
        try:
            yield
        finally:
            if schedule:
                scheduler.shutdown(wait=False)
            await rt.aclose()

    app = FastAPI(title="sentinel", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        last = rt.sentinel.last
        stale = last is not None and time.time() - last.finished_at > max(60.0, 6 * interval)
        if stale:
            return JSONResponse({"ok": False, "reason": "no cycle completed recently"}, 503)
        return JSONResponse({"ok": True})

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        if not rt.cluster.synced:
            return JSONResponse({"ready": False, "reason": "node list not synced yet"}, 503)
        if rt.sentinel.last is None:
            return JSONResponse({"ready": False, "reason": "no cycle completed yet"}, 503)
        return JSONResponse({"ready": True})

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)

    def wake() -> None:
        """After a person's change: run the next cycle now rather than in `interval`."""
        if schedule and scheduler.running:
            scheduler.modify_job("cycle", next_run_time=datetime.now().astimezone())

    add_api_routes(app, rt, wake)
    add_alert_routes(app, rt.cfg, rt.alerts, rt.sentinel.metrics, rt.cluster.known)
    return app

