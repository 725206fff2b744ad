"""The on-call HTTP API: what is isolated and why, the history, and a person's overrides.

Reads may be open (`api.open_reads`); writes always need a `write` token from `api.tokens`,
whose name is recorded as the author. Every error is JSON `{"error": reason}` with a 4xx: the
CLI prints the reason as its one line. OpenAPI is served at /openapi.json and /docs.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentinel.adapters.secrets import read_secret
from sentinel.config.schema import Config
from sentinel.config.yamlsrc import parse_duration
from sentinel.core.budgets import budget_cap
from sentinel.core.explain import explain_node, isolation_level
from sentinel.core.model import Finding, NodeInfo, OverrideKind, Verdict
from sentinel.core.overrides import OverrideRequest, Overrides, check_request
from sentinel.core.timefmt import span
from sentinel.rollouts.guard import RolloutError, RolloutGuard

if TYPE_CHECKING:
    from sentinel.http.runtime import Runtime

__all__ = ["ApiError", "add_api_routes"]

_USER = re.compile(r"^[\w.@+-]{1,64}$")


class ApiError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class _Token:
    name: str
    secret: str
    write: bool


def _tokens(cfg: Config) -> list[_Token]:
    out = []
    for t in cfg.api.tokens:
        secret = read_secret(cfg, t.token, t.token_file)
        if secret:
            out.append(_Token(t.name, secret, t.write))
    return out


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OverrideIn(_Body):
    kind: Literal["isolate", "release", "exempt", "pause"]
    reason: str = Field(min_length=1, max_length=500)
    ttl: float | str = Field(description="Seconds, or a duration such as 30m, 2h, 1d.")
    node: str | None = None
    site: str | None = None
    key: str | None = Field(None, description="isolate: a component, or `node` for level 2.")
    force: bool = False


class PauseIn(_Body):
    reason: str = Field(min_length=1, max_length=500)
    ttl: float | str = "1h"
    site: str | None = None


class ResumeIn(_Body):
    site: str | None = None


class RolloutIn(_Body):
    workload: str = Field(min_length=1, description="NAME or NAMESPACE/NAME.")
    reason: str = Field("", max_length=500)


def _node_state(node: NodeInfo, finding: Finding | None, noted: bool) -> str:
    if node.held:
        return "isolated"
    if node.exempt:
        return "exempt"
    if finding is None or finding.verdict is Verdict.HEALTHY:
        return "held" if noted else "healthy"
    if finding.verdict in (Verdict.UNKNOWN, Verdict.PARTITION):
        return "unknown"
    return "held" if noted else "failing"


def _duration(value: float | str, what: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ApiError(422, f"{what}: {e}") from None


def add_api_routes(app: FastAPI, rt: Runtime, wake: Callable[[], None]) -> None:
    cfg = rt.cfg
    tokens = _tokens(cfg)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="sentinel"'} if e.status == 401 else None
        return JSONResponse({"error": e.reason}, e.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                    for err in e.errors()[:20]]
        return JSONResponse({"error": "invalid request: " + "; ".join(problems),
                             "problems": problems}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        reason = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404:
            reason = f"no such endpoint {request.url.path} (see /docs)"
        return JSONResponse({"error": reason}, e.status_code)

    def who(request: Request, *, write: bool) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, cred = header.partition(" ")
        if write and not any(t.write for t in tokens):
            raise ApiError(403, "writes need a token with `write: true` in api.tokens, and "
                                "none is configured")
        if not header:
            if write or not cfg.api.open_reads:
                raise ApiError(401, "this needs a token (Authorization: Bearer <token>; the "
                                    "CLI reads SENTINEL_TOKEN or --token-file)")
            return "anonymous"
        match = next((t for t in tokens if scheme.lower() == "bearer"
                      and hmac.compare_digest(cred.strip().encode(), t.secret.encode())), None)
        if match is None:
            raise ApiError(401, "the token is not one of api.tokens")
        if write and not match.write:
            raise ApiError(403, f"token {match.name!r} is read-only (api.tokens: write: false)")
        user = request.headers.get("x-sentinel-user", "")
        return f"{user} via {match.name}" if _USER.match(user) else match.name

    def last() -> Any:
        rep = rt.sentinel.last
        if rep is None:
            raise ApiError(503, "no cycle has completed yet; try again in a few seconds")
        return rep

    def site_rows(rep: Any, ovs: Overrides) -> list[dict[str, Any]]:
        iso: dict[str, list[int]] = {s: [0, 0] for s in rep.detection.sites}
        for n in rep.nodes_after.values():
            lv = isolation_level(n)
            if lv and n.site in iso:
                iso[n.site][lv - 1] += 1
        out = []
        for s in rep.detection.sites.values():
            pause = ovs.pause_for(s.site)
            out.append({"site": s.site, "state": s.state.value, "reachable": s.reachable,
                        "data_age_seconds": s.data_age, "error": s.error, "nodes": s.nodes,
                        "failing": s.failing, "isolated_level1": iso[s.site][0],
                        "isolated_level2": iso[s.site][1],
                        "paused": pause.record() if pause else None})
        return out

    @app.get("/api/v1/status", tags=["read"])
    def status(request: Request) -> JSONResponse:
        """The fleet in one screen: sites, isolations, budgets, guards, pauses, last actions."""
        who(request, write=False)
        now = time.time()
        out: dict[str, Any] = {"mode": cfg.mode, "synced": rt.cluster.synced, "now": now,
                               "last_cycle": None, "sites": [], "isolated": [],
                               "recent_actions": rt.journal.actions(limit=10)}
        rep = rt.sentinel.last
        if rep is None:
            return JSONResponse(out)
        ovs = Overrides.at(rt.overrides.active(now), now)  # include those set since the cycle
        out["last_cycle"] = {"at": rep.started_at, "duration_seconds": rep.duration,
                             "actions": len(rep.results),
                             "budget_exhausted": sorted(rep.plan.budget_exhausted)}
        out["sites"] = site_rows(rep, ovs)
        out["isolated"] = [
            {"node": n.name, "site": n.site, "level": isolation_level(n),
             "keys": {k: h.record() for k, h in n.held.keys.items()},
             "cordoned_by_sentinel": n.held.cordoned}
            for n in sorted(rep.nodes_after.values(), key=lambda n: n.name) if n.held]
        managed = [n for n in rep.nodes_after.values() if n.site in rep.detection.sites]
        b = cfg.budgets
        recent = [t for t in rep.state.recent_isolations if now - t < 60]
        out["budgets"] = {
            "fleet": {"isolated": sum(1 for n in managed if n.held), "size": len(managed),
                      "max": budget_cap(b.fleet_max_fraction, len(managed))},
            "sites": {r["site"]: {"isolated": r["isolated_level1"] + r["isolated_level2"],
                                  "size": r["nodes"],
                                  "max": budget_cap(b.site_max_fraction, r["nodes"])}
                      for r in out["sites"]},
            "rate": {"last_minute": len(recent), "max": b.max_new_per_minute},
            "exhausted": sorted(rep.plan.budget_exhausted)}
        out["guards"] = [s for s, st in rep.detection.sites.items()
                         if st.state.value == "guarded"]
        out["pauses"] = [p.record() for p in ovs.pauses.values()]
        out["overrides"] = [o.record() for o in ovs.on_node.values()]
        out["registries"] = rt.registries.status_values() if rt.registries else []
        out["anomaly"] = rt.anomaly.status() if rt.anomaly else {"enabled": False}
        out["rollouts"] = _rollouts(rt)
        out["held_back"] = [{"node": n.node, "site": n.site, "reason": n.reason, "why": n.text}
                            for n in rep.plan.notes]
        return JSONResponse(out)

    @app.get("/api/v1/sites", tags=["read"])
    def sites(request: Request) -> JSONResponse:
        who(request, write=False)
        rep = last()
        now = time.time()
        return JSONResponse(site_rows(rep, Overrides.at(rt.overrides.active(now), now)))

    @app.get("/api/v1/nodes", tags=["read"])
    def nodes(request: Request, site: str | None = None,
              level: Literal["0", "1", "2", "none", "component", "node"] | None = None,
              state: Literal["healthy", "failing", "isolated", "held", "exempt",
                             "unknown"] | None = None) -> JSONResponse:
        """Every managed node, or those of one site, isolation level or state. `held` means
        something is wrong and sentinel deliberately did not act (see explain)."""
        who(request, write=False)
        rep = last()
        if site is not None and site not in rep.detection.sites:
            raise ApiError(404, f"no site {site!r} in the configuration "
                                f"({', '.join(sorted(rep.detection.sites))})")
        want = None if level is None else {"none": 0, "component": 1, "node": 2, "0": 0,
                                           "1": 1, "2": 2}[level]
        noted = {n.node: n for n in rep.plan.notes}
        rows = []
        for n in sorted(rep.nodes_after.values(), key=lambda n: n.name):
            if n.site is None or (site is not None and n.site != site):
                continue
            f = rep.detection.findings.get(n.name)
            lv = isolation_level(n)
            st = _node_state(n, f, n.name in noted)
            if (want is not None and lv != want) or (state is not None and st != state):
                continue
            note = noted.get(n.name)
            rows.append({"node": n.name, "site": n.site, "ready": n.ready.value,
                         "verdict": f.verdict.value if f else "healthy", "state": st,
                         "level": lv, "keys": sorted(n.held.keys), "exempt": n.exempt,
                         "protected": n.protected,
                         "held_back": {"reason": note.reason, "why": note.text} if note else None})
        return JSONResponse(rows)

    @app.get("/api/v1/nodes/{name}/explain", tags=["read"])
    def explain(request: Request, name: str) -> JSONResponse:
        """One node's story: both witnesses, the rules, what was done or not and why, and
        when it releases."""
        who(request, write=False)
        rep = rt.sentinel.last
        node = rep.nodes_after.get(name) if rep is not None else None
        if rep is None or node is None:
            if not rt.cluster.known(name):
                raise ApiError(404, f"no node {name!r} in the cluster")
            return JSONResponse({"node": name, "story": ["No cycle has seen this node yet."]})
        return JSONResponse(explain_node(
            node, snapshot=rep.snapshot, detection=rep.detection, plan=rep.plan,
            state=rep.state, params=rt.sentinel.decide_params, mode=rep.mode, now=time.time(),
            journal=rt.journal.actions(node=name, limit=50),
            anomaly=rep.anomaly.reading(name) if rep.anomaly is not None else None,
            anomaly_problem=_anomaly_problem(rt), anomaly_action=cfg.anomaly.action))

    @app.get("/api/v1/history", tags=["read"])
    def history(request: Request, node: str | None = None, site: str | None = None,
                since: str | None = Query(None, description="Epoch seconds, or a duration "
                                                            "back from now such as 2h."),
                limit: int = Query(200, ge=1, le=10000)) -> JSONResponse:
        """Actions, hold reasons and overrides from the journal, oldest first."""
        who(request, write=False)
        now = time.time()
        t0 = None
        if since is not None:
            t0 = float(since) if re.fullmatch(r"\d{9,}(\.\d+)?", since) else \
                now - _duration(since, "since")
        if site is not None and site not in {s.name for s in cfg.sites}:
            raise ApiError(404, f"no site {site!r} in the configuration")
        entries = [{"type": "action", **a} for a in rt.journal.actions(
            node=node, site=site, since=t0, limit=limit)]
        entries += [{"type": "note", **n} for n in rt.journal.notes(
            node=node, site=site, since=t0, limit=limit)]
        entries += rt.overrides.history(now, node=node, site=site, since=t0, limit=limit)
        entries.sort(key=lambda e: e["ts"])
        return JSONResponse(entries[-limit:])

    @app.get("/api/v1/registries", tags=["read"])
    def registries(request: Request) -> JSONResponse:
        """Each site's registries: health, the active one and since when, and why."""
        who(request, write=False)
        guard = rt.registries
        return JSONResponse(guard.status_values() if guard is not None else [])

    @app.get("/api/v1/rollouts", tags=["read"])
    def rollouts(request: Request) -> JSONResponse:
        """Workloads under the rollout guard: state, versions, the verdict with its numbers."""
        who(request, write=False)
        return JSONResponse(_rollouts(rt))

    def guard() -> RolloutGuard:
        if rt.rollouts is None:
            raise ApiError(409, "the rollout guard is off (rollouts.enabled: false)")
        return rt.rollouts

    @app.post("/api/v1/rollouts/rollback", tags=["write"])
    async def rollout_rollback(request: Request, body: RolloutIn) -> JSONResponse:
        """Roll a workload back to its previous revision now, whatever the analysis says."""
        by = who(request, write=True)
        if not body.reason:
            raise ApiError(422, "reason: say why you roll back (journaled and in the Event)")
        g = guard()
        try:
            out = await asyncio.to_thread(g.rollback, body.workload, by, body.reason)
        except RolloutError as e:
            raise ApiError(e.status, e.reason) from None
        return JSONResponse(out)

    @app.post("/api/v1/rollouts/resume", tags=["write"])
    async def rollout_resume(request: Request, body: RolloutIn) -> JSONResponse:
        """Lift the hold sentinel put on a workload: its rollout goes on."""
        by = who(request, write=True)
        g = guard()
        try:
            out = await asyncio.to_thread(g.resume, body.workload, by)
        except RolloutError as e:
            raise ApiError(e.status, e.reason) from None
        return JSONResponse(out)

    @app.get("/api/v1/overrides", tags=["read"])
    def overrides(request: Request) -> JSONResponse:
        who(request, write=False)
        return JSONResponse([o.record() for o in rt.overrides.active(time.time())])

    async def create(request: Request, req: OverrideRequest) -> JSONResponse:
        by = who(request, write=True)
        problems = check_request(req, max_ttl=cfg.api.max_override_ttl,
                                 sites=[s.name for s in cfg.sites])
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
        o = await asyncio.to_thread(rt.overrides.create, req, by, time.time(), node_site)
        wake()
        return JSONResponse({"override": o.record(), "applies": "at the next cycle (within "
                             f"{span(cfg.interval)})"}, 201)

    @app.post("/api/v1/overrides", tags=["write"], status_code=201)
    async def create_override(request: Request, body: OverrideIn) -> JSONResponse:
        """Isolate, release or exempt a node, or pause actions, with a reason and a TTL."""
        kind = OverrideKind(body.kind)
        key = body.key if body.key is not None else (
            "manual" if kind is OverrideKind.ISOLATE else "")
        return await create(request, OverrideRequest(
            kind, body.reason, _duration(body.ttl, "ttl"), body.node, body.site, key,
            body.force))

    @app.delete("/api/v1/overrides/{oid}", tags=["write"])
    async def lift(request: Request, oid: str) -> JSONResponse:
        by = who(request, write=True)
        o = await asyncio.to_thread(rt.overrides.delete, oid, by, time.time())
        if o is None:
            raise ApiError(404, f"no override {oid!r} in force (expired, lifted or never set)")
        wake()
        return JSONResponse({"lifted": o.record(), "by": by})

    @app.post("/api/v1/pause", tags=["write"], status_code=201)
    async def pause(request: Request, body: PauseIn) -> JSONResponse:
        """Stop every rule-driven action on a site, or on the whole fleet without `site`."""
        return await create(request, OverrideRequest(
            OverrideKind.PAUSE, body.reason, _duration(body.ttl, "ttl"), site=body.site))

    @app.post("/api/v1/resume", tags=["write"])
    async def resume(request: Request, body: ResumeIn) -> JSONResponse:
        """Lift the pause of a site, or the fleet-wide pause without `site`."""
        by = who(request, write=True)
        now = time.time()
        found = [o for o in rt.overrides.active(now)
                 if o.kind is OverrideKind.PAUSE and o.site == body.site]
        if not found:
            scope = f"site {body.site}" if body.site else "the whole fleet"
            raise ApiError(404, f"{scope} is not paused")
        lifted = await asyncio.to_thread(
            lambda: [rt.overrides.delete(o.id, by, now) for o in found])
        wake()
        return JSONResponse({"lifted": [o.record() for o in lifted if o], "by": by})


def _rollouts(rt: Runtime) -> dict[str, Any]:
    g = rt.rollouts
    if g is None:
        return {"enabled": False, "workloads": []}
    return {"enabled": True, "mode": g.mode, "checked_at": g.checked_at,
            "workloads": g.status_values()}


def _anomaly_problem(rt: Runtime) -> str:
    if rt.anomaly is None:
        return "anomaly detection is off (anomaly.enabled: false)"
    if rt.anomaly.model is None:
        return rt.anomaly.problem or "no model trained yet"
    return "no feature data for this node this cycle"
