"""The running service: builds the adapters from the config, schedules cycles, serves HTTP.

`/healthz` says the process is alive and cycling; `/readyz` that it has synced the nodes and
completed a cycle; `/metrics` the sentinel_* series; `/api/v1/...` the on-call API (api.py)
and the alert webhook (webhook.py).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import Depends, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sentinel.adapters.alertstore import StoreError
from sentinel.adapters.alertsync import firing_alerts
from sentinel.core.alerts import map_alert
from sentinel.core.errors import AdapterError
from sentinel.http.api import add_api_routes, add_error_handlers
from sentinel.http.auth import Access, AccessTable, AuthGate, Credentials, access_table, caller
from sentinel.http.heap import HeapKeeper
from sentinel.http.models import HealthOut, ReadyOut
from sentinel.http.runtime import Runtime, build_runtime
from sentinel.http.webhook import add_alert_routes
from sentinel.http.writes import add_write_routes

__all__ = ["Runtime", "build_runtime", "create_app"]

log = logging.getLogger("sentinel")
T = TypeVar("T")


async def in_daemon_thread(fn: Callable[[], T]) -> T:
    """Run `fn` off the event loop in a daemon thread: unlike asyncio.to_thread's pool, whose
    threads the interpreter joins at exit, it never holds a stopping sentinel (a training
    reading hours of history from 26 sites' Prometheus kept Ctrl-C waiting). Only for work that
    may be dropped half-way: the model file is replaced atomically or not at all."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def run() -> None:
        try:
            result = fn()
        except BaseException as e:  # handed to the awaiting coroutine, raised there
            loop.call_soon_threadsafe(_settle, done, None, e)
        else:
            loop.call_soon_threadsafe(_settle, done, result, None)

    threading.Thread(target=run, name="sentinel-train", daemon=True).start()
    return await done


def _settle(fut: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


def create_app(rt: Runtime, *, schedule: bool = True, sync_timeout: float = 60.0) -> FastAPI:
    interval = rt.cfg.interval
    heap = HeapKeeper()

    async def tick() -> None:
        # Discovered sites first: a cycle without them would see every node in no site.
        if not rt.sites.synced and \
                not await asyncio.to_thread(rt.sites.wait_synced, min(interval, 30.0)):
            log.warning("%s: not listed yet (%s); no cycle yet",
                        rt.cfg.site_discovery.discover, rt.sites.error or "no answer")
            return
        if not rt.cluster.synced:
            # Wait (bounded) rather than skip: a skipped tick would delay readiness by a whole
            # interval. Nothing is decided without the node list.
            log.info("waiting for the cloud view's lists before the first cycle")
            if not await asyncio.to_thread(rt.cluster.wait_synced, min(interval, 30.0)):
                log.warning("not listed yet: %s; no cycle yet", rt.cluster.unsynced())
                return
        started = time.monotonic()
        try:
            await rt.sentinel.run_cycle()
        except asyncio.CancelledError:
            log.info("cycle cut short: sentinel is stopping")
            return
        except Exception:  # logged and counted in run_cycle; keep going
            return
        heap.after_cycle()  # what is alive now is no longer walked by the collector
        took = time.monotonic() - started
        if took > interval:
            waited = rt.sentinel.last.collect_seconds if rt.sentinel.last else 0.0
            log.warning("cycle took %.1fs (%.1fs of it waiting for the metrics), longer than "
                        "the interval (%.1fs): the next starts late; raise `interval` or the "
                        "sites' timeouts", took, waited, interval)

    scheduler = AsyncIOScheduler()
    # Its "skipped: maximum number of running instances" is said once per overrun, in our
    # words, by tick() itself.
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)

    async def elect() -> None:
        assert rt.elector is not None
        was = rt.elector.leading
        try:
            now_leading = await asyncio.to_thread(rt.elector.step)
        except Exception:
            log.exception("lease step failed; the next one retries")
            return
        if now_leading and not was:
            # The nodes and our journal are the memory now (flap damping, rate budget).
            await rt.sentinel.take_over()
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
            result = await in_daemon_thread(keeper.train)
        except asyncio.CancelledError:  # sentinel stopping mid-training: nothing to report
            log.info("anomaly training abandoned: sentinel is stopping")
            return
        except Exception as e:
            rt.sentinel.metrics.trained("failed")
            log.warning("anomaly training failed: %s; next try in %.0fs", e,
                        rt.cfg.anomaly.retry_after)
            return
        rt.sentinel.metrics.trained("ok", result.seconds)

    unread_said: list[bool] = []

    async def read_firing_alerts() -> None:
        """Once the node list is known: the alerts Alertmanager has firing for sentinel, from
        the first of `alerts.alertmanager_urls` that answers; then this job ends."""
        ac = rt.cfg.alerts
        if not rt.cluster.synced:
            return
        problems = []
        for url in ac.alertmanager_urls:
            try:
                alerts = await asyncio.to_thread(firing_alerts, url, ac.receiver)
                mapped = [map_alert(a, ac) for a in alerts]
                acc = await asyncio.to_thread(rt.alerts.accept, mapped, receiver=ac.receiver,
                                              group_key="alertmanager-api",
                                              known=rt.cluster.known)
            except (AdapterError, StoreError) as e:
                problems.append(str(e))
                continue
            log.info("%d firing alerts read from Alertmanager at %s (%d new to this replica)",
                     len(alerts), url, acc.new)
            scheduler.remove_job("alerts-from-alertmanager")
            return
        if not unread_said:  # once: the job retries every 5 s until one answers
            log.warning("firing alerts not read at start (retrying every 5 s): %s",
                        "; ".join(problems))
            unread_said.append(True)

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
        rt.sites.start()
        rt.overrides.start()
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
            if rt.cfg.alerts.alertmanager_urls:
                scheduler.add_job(read_firing_alerts, "interval", seconds=5, max_instances=1,
                                  coalesce=True, id="alerts-from-alertmanager",
                                  next_run_time=datetime.now().astimezone())
            if rt.anomaly is not None:
                a = rt.cfg.anomaly
                scheduler.add_job(train, "interval", seconds=min(60.0, a.retry_after),
                                  max_instances=1, coalesce=True, id="anomaly-train",
                                  next_run_time=datetime.now().astimezone())
            scheduler.start()
        log.info("sentinel up: mode=%s, %d sites listed%s, %d rules, interval %.1fs",
                 rt.cfg.mode, len(rt.cfg.sites), f" plus those discovered "
                 f"({rt.cfg.site_discovery.discover})" if rt.cfg.site_discovery.enabled else "",
                 len(rt.sentinel.rules.rules), interval)
        gc.callbacks.append(rt.sentinel.metrics.gc_callback)
        try:
            yield
        finally:
            gc.callbacks.remove(rt.sentinel.metrics.gc_callback)
            heap.close()
            if schedule:
                scheduler.shutdown(wait=False)
            await rt.aclose()

    app = FastAPI(title="sentinel", lifespan=lifespan)

    open_route: dict[str, Any] = {"tags": [Access.OPEN.value],
                                  "dependencies": [Depends(caller)]}

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}},
             **open_route)
    def healthz() -> JSONResponse:
        last = rt.sentinel.last
        stale = last is not None and time.time() - last.finished_at > max(60.0, 6 * interval)
        if stale:
            return JSONResponse({"ok": False, "reason": "no cycle completed recently"}, 503)
        return JSONResponse({"ok": True})

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}}, **open_route)
    def readyz() -> JSONResponse:
        if not rt.sites.synced:
            return JSONResponse({"ready": False, "reason": f"{rt.cfg.site_discovery.discover}"
                                 f" not listed yet: {rt.sites.error or 'no answer yet'}"}, 503)
        if not rt.cluster.synced:
            return JSONResponse({"ready": False,
                                 "reason": f"not listed yet: {rt.cluster.unsynced()}"}, 503)
        if rt.sentinel.last is None:
            return JSONResponse({"ready": False, "reason": "no cycle completed yet"}, 503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", response_class=Response, **open_route)
    def metrics() -> Response:
        return Response(generate_latest(rt.registry), media_type=CONTENT_TYPE_LATEST)

    def wake() -> None:
        """After a person's change: run the next cycle now rather than in `interval`."""
        if schedule and scheduler.running:
            scheduler.modify_job("cycle", next_run_time=datetime.now().astimezone())

    add_error_handlers(app)
    add_api_routes(app, rt)
    add_write_routes(app, rt, wake)
    add_alert_routes(app, rt.cfg, rt.alerts, rt.sentinel.metrics, rt.cluster.known)

    def refused(access: Access, status: int) -> None:
        if access is Access.ALERTS and status < 500:
            rt.sentinel.metrics.alerts.labels("rejected").inc()

    table: list[AccessTable] = []

    def access() -> AccessTable:
        if not table:  # once, after every route is declared
            table.append(access_table(app.openapi()))
        return table[0]

    app.add_middleware(AuthGate, table=access, credentials=Credentials.of(rt.cfg),
                       on_refused=refused)
    return app

