"""The running service: builds the adapters from the config, schedules cycles, serves HTTP.

`/healthz` says the process is alive and cycling; `/readyz` that it has synced the nodes and
completed a cycle; `/metrics` the sentinel_* series; `/api/v1/status` a summary for people.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .adapters.actuate import Actuator, KubeActuator, RecordingActuator
from .adapters.alertstore import AlertStore
from .adapters.journal import Journal
from .adapters.kube import ClusterView, make_api_client
from .adapters.prom import SiteCollector, SiteTarget
from .config import Config
from .metrics import Metrics
from .model import NODE_KEY
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

    async def aclose(self) -> None:
        self.cluster.stop()
        await self.sentinel.collector.aclose()
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
    sentinel = Sentinel(cfg, rules, collector, cluster, actuator, journal, metrics,
                        alerts=alerts)
    return Runtime(cfg, sentinel, cluster, journal, registry, alerts)


def _status(rt: Runtime) -> dict[str, Any]:
    rep = rt.sentinel.last
    out: dict[str, Any] = {"mode": rt.cfg.mode, "synced": rt.cluster.synced, "last_cycle": None,
                           "sites": [], "isolated": []}
    if rep is None:
        return out
    out["last_cycle"] = {"at": rep.started_at, "duration_seconds": rep.duration,
                         "actions": len(rep.results),
                         "budget_exhausted": sorted(rep.plan.budget_exhausted)}
    out["sites"] = [{"site": s.site, "state": s.state.value, "reachable": s.reachable,
                     "data_age_seconds": s.data_age, "nodes": s.nodes, "failing": s.failing,
                     "error": s.error} for s in rep.detection.sites.values()]
    out["isolated"] = [
        {"node": n.name, "site": n.site, "level": 2 if NODE_KEY in n.held.keys else 1,
         "keys": {k: h.record() for k, h in n.held.keys.items()},
         "cordoned_by_sentinel": n.held.cordoned}
        for n in sorted(rep.nodes_after.values(), key=lambda n: n.name) if n.held]
    return out


def _explain(rt: Runtime, name: str) -> dict[str, Any] | None:
    """One node's story as of the last cycle: both witnesses, what matched, what is held and
    why anything was not done, the alerts that name it, and its journal."""
    rep = rt.sentinel.last
    node = rep.nodes_after.get(name) if rep is not None else None
    if rep is None or node is None:
        if not rt.cluster.known(name):
            return None
        return {"node": name, "note": "no cycle has seen this node yet"}
    finding = rep.detection.findings.get(name)
    site = rep.detection.sites.get(node.site or "")
    return {
        "node": name, "site": node.site, "as_of": rep.started_at, "mode": rep.mode,
        "cloud_ready": node.ready.value, "protected": node.protected, "exempt": node.exempt,
        "site_state": site.state.value if site else None,
        "evidence": finding.evidence() if finding else {"verdict": "healthy"},
        "held": {k: h.record() for k, h in node.held.keys.items()},
        "cordoned_by_sentinel": node.held.cordoned,
        "not_done": [{"reason": n.reason, "why": n.text} for n in rep.plan.notes
                     if n.node == name],
        "alerts": [{"alertname": a.alertname, "fingerprint": a.fingerprint, "key": a.key,
                    "level": a.level.value, "since": a.starts_at, "summary": a.summary,
                    "source": a.source} for a in rep.snapshot.alerts.get(name, ())],
        "actions": rt.journal.actions(node=name, limit=50),
    }


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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.cluster.start()
        scheduler = AsyncIOScheduler()
        if schedule:
            scheduler.add_job(tick, "interval", seconds=interval, max_instances=1,
                              coalesce=True, next_run_time=datetime.now().astimezone(),
                              id="cycle")
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

    @app.get("/api/v1/status")
    def status() -> JSONResponse:
        return JSONResponse(_status(rt))

    @app.get("/api/v1/nodes/{name}/explain")
    def explain(name: str) -> JSONResponse:
        out = _explain(rt, name)
        if out is None:
            return JSONResponse({"error": f"no node {name!r} in the cluster"}, 404)
        return JSONResponse(out)

    add_alert_routes(app, rt.cfg, rt.alerts, rt.sentinel.metrics, rt.cluster.known)
    return app

