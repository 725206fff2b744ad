"""The on-call HTTP API, writes: a person's overrides (isolate, release, exempt, pause) and
rollout actions. Each needs a `write` token (auth.py, checked before the body is read); the
token's name, and the person the CLI names, is the author in the journal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, FastAPI

from sentinel.adapters.overrides import OverrideStore, OverrideStoreError
from sentinel.core.model import Override, OverrideKind
from sentinel.core.overrides import OverrideRequest, check_request, replaced_by
from sentinel.core.timefmt import span
from sentinel.http.api import ERRORS, ApiError, duration
from sentinel.http.auth import caller
from sentinel.http.models import (
    Lifted,
    LiftedMany,
    OverrideCreated,
    OverrideIn,
    OverrideRecord,
    PauseIn,
    ResumeIn,
    RolloutActionOut,
    RolloutIn,
)
from sentinel.rollouts.guard import RolloutError, RolloutGuard

if TYPE_CHECKING:
    from sentinel.http.runtime import Runtime

__all__ = ["add_write_routes", "lift_replaced"]

Caller = Annotated[str, Depends(caller)]
log = logging.getLogger("sentinel.overrides")


def lift_replaced(store: OverrideStore, old: list[Override], new_id: str, by: str,
                  now: float) -> tuple[list[Override], list[str]]:
    """Lift what a new node override replaces. The new one is set already: a failure here is
    told, not raised (an error would read as if nothing had been set, and invite a second)."""
    lifted, warnings = [], []
    for x in old:
        try:
            done = store.delete(x.id, by, now, replaced_by=new_id)
        except OverrideStoreError as e:
            log.warning("override %s set, but %s it replaces was not lifted: %s", new_id,
                        x.id, e)
            warnings.append(f"override {x.id} ({x.kind.value}) is still in force: it could not "
                            f"be lifted ({e}); lift it with `sentinel overrides lift {x.id}`")
            continue
        if done is not None:
            lifted.append(done)
    return lifted, warnings


def add_write_routes(app: FastAPI, rt: Runtime, wake: Callable[[], None]) -> None:
    cfg = rt.cfg
    api = APIRouter(prefix="/api/v1", tags=["write"], responses=ERRORS)

    def guard() -> RolloutGuard:
        if rt.rollouts is None:
            raise ApiError(409, "the rollout guard is off (rollouts.enabled: false)")
        return rt.rollouts

    @api.post("/rollouts/rollback")
    async def rollout_rollback(body: RolloutIn, by: Caller) -> RolloutActionOut:
        """Roll a workload back to its previous revision now, whatever the analysis says."""
        if not body.reason:
            raise ApiError(422, "reason: say why you roll back (journaled and in the Event)")
        g = guard()
        try:
            out = await asyncio.to_thread(g.rollback, body.workload, by, body.reason)
        except RolloutError as e:
            raise ApiError(e.status, e.reason) from None
        return RolloutActionOut.model_validate(out)

    @api.post("/rollouts/resume")
    async def rollout_resume(body: RolloutIn, by: Caller) -> RolloutActionOut:
        """Lift the hold sentinel put on a workload: its rollout goes on."""
        g = guard()
        try:
            out = await asyncio.to_thread(g.resume, body.workload, by)
        except RolloutError as e:
            raise ApiError(e.status, e.reason) from None
        return RolloutActionOut.model_validate(out)

    async def create(req: OverrideRequest, by: str) -> OverrideCreated:
        problems = check_request(req, max_ttl=cfg.api.max_override_ttl,
                                 sites=rt.sites.names())
        if problems:
            raise ApiError(422, "; ".join(problems))
        node_site = None
        if req.node is not None:
            if not rt.cluster.known(req.node):
                raise ApiError(404, f"no node {req.node!r} in the cluster")
            rep = rt.sentinel.last
            info = rep.nodes_after.get(req.node) if rep is not None else None
            if info is not None and info.site is None:
                raise ApiError(409, f"node {req.node!r} is in no configured site: sentinel "
                                    "does not manage it")
            node_site = info.site if info is not None else None
        now = time.time()
        o = await asyncio.to_thread(rt.overrides.create, req, by, now, node_site)
        lifted, warnings = await asyncio.to_thread(
            lift_replaced, rt.overrides, replaced_by(o, rt.overrides.active(now)), o.id, by, now)
        wake()
        return OverrideCreated.model_validate({
            "override": o.record(), "replaced": [x.record() for x in lifted],
            "warnings": warnings,
            "applies": f"at the next cycle (within {span(cfg.interval)})"})

    @api.post("/overrides", status_code=201)
    async def create_override(body: OverrideIn, by: Caller) -> OverrideCreated:
        """Isolate, release or exempt a node, or pause actions, with a reason and a TTL."""
        kind = OverrideKind(body.kind)
        key = body.key if body.key is not None else (
            "manual" if kind is OverrideKind.ISOLATE else "")
        return await create(OverrideRequest(kind, body.reason, duration(body.ttl, "ttl"),
                                            body.node, body.site, key, body.force), by)

    @api.delete("/overrides/{oid}")
    async def lift(oid: str, by: Caller) -> Lifted:
        o = await asyncio.to_thread(rt.overrides.delete, oid, by, time.time())
        if o is None:
            raise ApiError(404, f"no override {oid!r} in force (expired, lifted or never set)")
        wake()
        return Lifted.model_validate({"lifted": o.record(), "by": by})

    @api.post("/pause", status_code=201)
    async def pause(body: PauseIn, by: Caller) -> OverrideCreated:
        """Stop every rule-driven action on a site, or on the whole fleet without `site`."""
        return await create(OverrideRequest(OverrideKind.PAUSE, body.reason,
                                            duration(body.ttl, "ttl"), site=body.site), by)

    @api.post("/resume")
    async def resume(body: ResumeIn, by: Caller) -> LiftedMany:
        """Lift the pause of a site, or the fleet-wide pause without `site`."""
        now = time.time()
        found = [o for o in rt.overrides.active(now)
                 if o.kind is OverrideKind.PAUSE and o.site == body.site]
        if not found:
            scope = f"site {body.site}" if body.site else "the whole fleet"
            raise ApiError(404, f"{scope} is not paused")
        lifted = await asyncio.to_thread(
            lambda: [rt.overrides.delete(o.id, by, now) for o in found])
        wake()
        return LiftedMany.model_validate({"lifted": [o.record() for o in lifted if o],
                                          "by": by})

    app.include_router(api)

    read = APIRouter(prefix="/api/v1", tags=["read"], dependencies=[Depends(caller)],
                     responses=ERRORS)

    @read.get("/overrides")
    def overrides() -> list[OverrideRecord]:
        """The people's overrides in force."""
        return [OverrideRecord.model_validate(o.record())
                for o in rt.overrides.active(time.time())]

    app.include_router(read)
