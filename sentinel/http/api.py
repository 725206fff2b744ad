"""The on-call HTTP API, reads: what is isolated and why, the sites, the nodes, one node's story,
the history, the registries and rollouts. Writes (overrides, pauses, rollout actions) are in
writes.py, the alert webhook in webhook.py, who may call what in auth.py, the answers' models
in models.py. Every error is JSON `{"error": reason}` with a 4xx: the CLI prints the reason as
its one line. OpenAPI is served at /openapi.json and /docs.
"""

from __future__ import annotations

import re
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sentinel.adapters.overrides import OverrideStoreError
from sentinel.config.yamlsrc import parse_duration
from sentinel.core.autonomy import protection
from sentinel.core.budgets import budget_cap
from sentinel.core.errors import Refused
from sentinel.core.explain import explain_node, isolation_level
from sentinel.core.model import Finding, NodeInfo, Verdict
from sentinel.core.overrides import Overrides
from sentinel.core.timefmt import utc
from sentinel.http.auth import caller
from sentinel.http.models import (
    ErrorOut,
    ExplainOut,
    HistoryEntry,
    NodeRow,
    OverrideRecord,
    RegistryRow,
    RolloutsOut,
    SiteRow,
    StatusOut,
)

if TYPE_CHECKING:
    from sentinel.http.runtime import Runtime

__all__ = ["ERRORS", "ApiError", "SiteRows", "add_api_routes", "add_error_handlers",
           "duration", "last_report", "rollouts_of"]

#: Every error answer, in the OpenAPI document.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 409, 413, 422, 503)}


class ApiError(Refused):
    """Answered as `{"error": reason}` with its status."""


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


def duration(value: float | str, what: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ApiError(422, f"{what}: {e}") from None


def add_error_handlers(app: FastAPI) -> None:
    """Every error as `{"error": reason}`: ours, FastAPI's validation, Starlette's 404/405."""
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="sentinel"'} if e.status == 401 else None
        return JSONResponse({"error": e.reason}, e.status, headers=headers)

    @app.exception_handler(OverrideStoreError)
    async def overrides_error(request: Request, e: OverrideStoreError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, e.status)

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


def last_report(rt: Runtime) -> Any:
    rep = rt.sentinel.last
    if rep is None:
        raise ApiError(503, "no cycle has completed yet; try again in a few seconds")
    return rep


def _cycle_rows(rep: Any) -> list[SiteRow]:
    iso: dict[str, list[int]] = {s: [0, 0] for s in rep.detection.sites}
    for n in rep.held:
        lv = isolation_level(n)
        if lv and n.site in iso:
            iso[n.site][lv - 1] += 1
    return [SiteRow(
        site=s.site, state=s.state.value, reachable=s.reachable,
        data_age_seconds=s.data_age, error=s.error, nodes=s.nodes, failing=s.failing,
        isolated_level1=iso[s.site][0], isolated_level2=iso[s.site][1], paused=None,
        site_wide=dict(s.widespread), checks_failing_broadly=s.broad,
        young_rules=sorted(s.young_rules)) for s in rep.detection.sites.values()]


class SiteRows:
    """Each site's row, built once a cycle rather than on every request: at 500 sites, building
    them for each `/status` was 8 % of the process's held GIL in a profile of bench/fleet.py
    at 100,000 nodes, while the API was asked five times a second. Pauses are read at each
    request (one may be set between cycles); the rows are never changed once built. The
    report is held weakly: an API nobody asks must not keep a fleet's old report alive."""

    def __init__(self) -> None:
        self._last: tuple[weakref.ref[Any], list[SiteRow]] | None = None

    def __call__(self, rep: Any, ovs: Overrides) -> list[SiteRow]:
        last = self._last
        if last is None or last[0]() is not rep:
            last = self._last = (weakref.ref(rep), _cycle_rows(rep))
        return [row if (pause := ovs.pause_for(row.site)) is None
                else row.model_copy(update={"paused": OverrideRecord.model_validate(
                    pause.record())}) for row in last[1]]


def _status(rt: Runtime, site_rows: SiteRows) -> StatusOut:
    cfg, now = rt.cfg, time.time()
    rep = rt.sentinel.last
    j = rt.journal
    base: dict[str, Any] = {"mode": cfg.mode, "synced": rt.cluster.synced and rt.sites.synced,
                            "now": now, "last_cycle": None, "sites": [], "isolated": [],
                            "site_discovery": rt.sites.describe()
                            if cfg.site_discovery.enabled else None,
                            "recent_actions": j.actions(limit=10),
                            "journal": {"writable": j.writable, "error": j.failure,
                                        "since": j.failing_since}}
    if rep is None:
        return StatusOut.model_validate(base)
    ovs = Overrides.at(rt.overrides.active(now), now)  # include those set since the cycle
    sites = site_rows(rep, ovs)
    b = cfg.budgets
    recent = [t for t in rep.state.recent_isolations if now - t < 60]
    return StatusOut.model_validate({
        **base, "sites": sites,
        "last_cycle": {"at": rep.started_at, "duration_seconds": rep.duration,
                       "collect_seconds": rep.collect_seconds,
                       "actions": len(rep.results),
                       "budget_exhausted": sorted(rep.plan.budget_exhausted)},
        "isolated": [{"node": n.name, "site": n.site, "level": isolation_level(n),
                      "keys": {k: h.record() for k, h in n.held.keys.items()},
                      "cordoned_by_sentinel": n.held.cordoned}
                     for n in rep.held],
        "budgets": {
            "fleet": {"isolated": sum(1 for n in rep.held if n.site in rep.detection.sites),
                      "size": rep.managed, "max": budget_cap(b.fleet_max_fraction, rep.managed)},
            "sites": {r.site: {"isolated": r.isolated_level1 + r.isolated_level2,
                               "size": r.nodes, "max": budget_cap(b.site_max_fraction, r.nodes)}
                      for r in sites},
            "rate": {"last_minute": len(recent), "max": b.max_new_per_minute},
            "exhausted": sorted(rep.plan.budget_exhausted)},
        "guards": [s for s, st in rep.detection.sites.items() if st.state.value == "guarded"],
        "pauses": [p.record() for p in ovs.pauses.values()],
        "overrides": [o.record() for o in ovs.on_node.values()],
        "registries": rt.registries.status_values() if rt.registries else [],
        "anomaly": rt.anomaly.status() if rt.anomaly else {"enabled": False},
        "rollouts": rollouts_of(rt),
        "held_back": [{"node": n.node, "site": n.site, "reason": n.reason, "why": n.text}
                      for n in rep.plan.notes]})


def _node_rows(rep: Any, site: str | None, want: int | None,
               state: str | None) -> list[NodeRow]:
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
        rows.append(NodeRow.model_validate({
            "node": n.name, "site": n.site, "ready": n.ready.value,
            "verdict": f.verdict.value if f else "healthy", "state": st, "level": lv,
            "keys": sorted(n.held.keys), "exempt": n.exempt,
            "protected": protection(n, rep.finished_at) is not None,
            "held_back": {"reason": note.reason, "why": note.text} if note else None}))
    return rows


def add_api_routes(app: FastAPI, rt: Runtime) -> None:
    cfg = rt.cfg
    api = APIRouter(prefix="/api/v1", tags=["read"], dependencies=[Depends(caller)],
                    responses=ERRORS)
    site_rows = SiteRows()

    @api.get("/status")
    def status() -> StatusOut:
        """The fleet in one screen: sites, isolations, budgets, guards, pauses, last actions."""
        return _status(rt, site_rows)

    @api.get("/sites")
    def sites() -> list[SiteRow]:
        now = time.time()
        return site_rows(last_report(rt), Overrides.at(rt.overrides.active(now), now))

    @api.get("/nodes")
    def nodes(site: str | None = None,
              level: Literal["0", "1", "2", "none", "component", "node"] | None = None,
              state: Literal["healthy", "failing", "isolated", "held", "exempt",
                             "unknown"] | None = None) -> list[NodeRow]:
        """Every managed node, or those of one site, isolation level or state. `held` means
        something is wrong and sentinel deliberately did not act (see explain)."""
        rep = last_report(rt)
        if site is not None and site not in rep.detection.sites:
            raise ApiError(404, f"no site {site!r} in the configuration "
                                f"({', '.join(sorted(rep.detection.sites))})")
        want = None if level is None else {"none": 0, "component": 1, "node": 2, "0": 0,
                                           "1": 1, "2": 2}[level]
        return _node_rows(rep, site, want, state)

    @api.get("/nodes/{name}/explain")
    def explain(name: str) -> ExplainOut:
        """One node's story: both witnesses, the rules, what was done or not and why, and
        when it releases."""
        rep = rt.sentinel.last
        node = rep.nodes_after.get(name) if rep is not None else None
        if rep is None or node is None:
            if not rt.cluster.known(name):
                raise ApiError(404, f"no node {name!r} in the cluster")
            return ExplainOut(node=name, story=["No cycle has seen this node yet."])
        return ExplainOut.model_validate(explain_node(
            node, snapshot=rep.snapshot, detection=rep.detection, plan=rep.plan,
            state=rep.state, params=rt.sentinel.decide_params, mode=rep.mode, now=time.time(),
            journal=rt.journal.actions(node=name, limit=50),
            anomaly=rep.anomaly.reading(name) if rep.anomaly is not None else None,
            anomaly_problem=_anomaly_problem(rt), anomaly_action=cfg.anomaly.action))

    @api.get("/history")
    def history(node: str | None = None, site: str | None = None,
                since: str | None = Query(None, description="Epoch seconds, or a duration "
                                                            "back from now such as 2h."),
                limit: int = Query(200, ge=1, le=10000)) -> list[HistoryEntry]:
        """Actions, hold reasons and overrides from the journal, oldest first."""
        now = time.time()
        t0 = None
        if since is not None:
            t0 = float(since) if re.fullmatch(r"\d{9,}(\.\d+)?", since) else \
                now - duration(since, "since")
        # A discovered site's history outlives the site: the journal is asked as it is.
        if site is not None and site not in rt.sites.names() and \
                not cfg.site_discovery.enabled:
            raise ApiError(404, f"no site {site!r} in the configuration")
        entries = [{"type": "action", **a} for a in rt.journal.actions(
            node=node, site=site, since=t0, limit=limit)]
        entries += [{"type": "note", **n} for n in rt.journal.notes(
            node=node, site=site, since=t0, limit=limit)]
        entries += rt.overrides.history(now, node=node, site=site, since=t0, limit=limit)
        entries.sort(key=lambda e: e["ts"])
        entries = entries[-limit:]
        notice = _unseen(rt, t0, now)
        return [HistoryEntry.model_validate(e)
                for e in ([*entries, notice] if notice else entries)]

    @api.get("/registries")
    def registries() -> list[RegistryRow]:
        """Each site's registries: health, the active one and since when, and why."""
        guard = rt.registries
        return [RegistryRow.model_validate(r)
                for r in (guard.status_values() if guard is not None else [])]

    @api.get("/rollouts")
    def rollouts() -> RolloutsOut:
        """Workloads under the rollout guard: state, versions, the verdict with its numbers."""
        return rollouts_of(rt)

    app.include_router(api)


def _unseen(rt: Runtime, t0: float | None, now: float) -> dict[str, Any] | None:
    """What this replica's journal cannot hold, said as the history's last entry: each replica
    journals only the actions it took while it led (overrides come from the cluster and are
    complete on every replica)."""
    e = rt.elector
    if e is None:
        return None
    base = {"type": "notice", "ts": now, "node": "", "site": ""}
    if not e.leading:
        return {**base, "text": f"this replica ({e.identity}) does not act now: the actions "
                                f"of the leader ({e.holder or 'none yet'}) are in its journal; "
                                "ask it (sentinel history --server ...)"}
    since = e.leading_since
    if since is not None and (t0 is None or t0 < since):
        before = e.previous or "the replica that released the lease"
        return {**base, "text": f"this replica ({e.identity}) has acted since {utc(since)}; "
                                f"actions before that were taken and journaled by {before}"}
    return None


def rollouts_of(rt: Runtime) -> RolloutsOut:
    g = rt.rollouts
    if g is None:
        return RolloutsOut(enabled=False, workloads=[])
    return RolloutsOut(enabled=True, mode=g.actuator.mode, checked_at=g.checked_at,
                       workloads=g.status_values())


def _anomaly_problem(rt: Runtime) -> str:
    if rt.anomaly is None:
        return "anomaly detection is off (anomaly.enabled: false)"
    if rt.anomaly.model is None:
        return rt.anomaly.problem or "no model trained yet"
    return "no feature data for this node this cycle"
