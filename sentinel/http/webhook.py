"""`POST /api/v1/alerts`: Alertmanager's webhook receiver.

Alertmanager retries a 5xx and drops a 4xx, so: malformed or unauthorised calls get a 4xx with
the reason (resending them cannot help), and a failure to make the alerts durable gets a 503
(resending will). A 200 means every alert of the call is committed to the journal.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from sentinel.adapters.alertstore import AlertStore, StoreError
from sentinel.adapters.metrics import Metrics
from sentinel.config.schema import Config
from sentinel.core.alerts import WebhookPayload, map_alert
from sentinel.http.api import ERRORS
from sentinel.http.auth import caller
from sentinel.http.models import AlertsAccepted, ErrorOut

__all__ = ["add_alert_routes"]

log = logging.getLogger("sentinel.webhook")


def add_alert_routes(app: FastAPI, cfg: Config, store: AlertStore, metrics: Metrics,
                     known: Callable[[str], bool]) -> None:
    """Credentials and the body's size are checked before the body is read (auth.py)."""
    ac = cfg.alerts

    def reject(code: int, reason: str, **extra: object) -> JSONResponse:
        metrics.alerts.labels("rejected").inc()
        return JSONResponse({"error": reason, **extra}, code)

    @app.post("/api/v1/alerts", tags=["alerts"], dependencies=[Depends(caller)],
              response_model=AlertsAccepted, responses={**ERRORS, 400: {"model": ErrorOut}})
    async def receive(request: Request) -> AlertsAccepted | JSONResponse:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            return reject(400, f"body is not JSON: {e}")
        except RecursionError:
            return reject(400, "body is not JSON we accept: nested too deeply")
        try:
            payload = WebhookPayload.model_validate(data)
        except ValidationError as e:
            problems = [{"field": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
                        for err in e.errors()[:20]]
            return reject(422, "not an Alertmanager webhook payload (version 4)",
                          problems=problems)
        mapped = [map_alert(a, ac, payload.external_url) for a in payload.alerts]
        try:
            acc = await asyncio.to_thread(store.accept, mapped, receiver=payload.receiver,
                                          group_key=payload.group_key, known=known)
        except StoreError as e:
            log.error("could not persist %d alerts: %s", len(mapped), e)
            return JSONResponse({"error": f"could not persist the alerts, resend: {e}"}, 503)
        for outcome, n in (("new", acc.new), ("resolved", acc.resolved),
                           ("duplicate", acc.duplicates), ("unmapped", len(acc.unmapped)),
                           ("unknown_node", len(acc.unknown_nodes))):
            if n:
                metrics.alerts.labels(outcome).inc(n)
        if acc.unmapped or acc.unknown_nodes:
            log.warning("alerts kept but not used as evidence: %s",
                        "; ".join([*acc.unmapped, *(f"node {n} is not in the cluster"
                                                    for n in acc.unknown_nodes)]))
        return AlertsAccepted(accepted=len(mapped), new=acc.new, resolved=acc.resolved,
                              duplicates=acc.duplicates, unmapped=acc.unmapped,
                              unknown_nodes=acc.unknown_nodes,
                              truncated_alerts=payload.truncated_alerts)
