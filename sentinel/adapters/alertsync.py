"""The firing alerts routed to sentinel, read from Alertmanager's API when a replica starts.

Alertmanager delivers each alert to every replica, but a notification it delivered once is sent
again only at the route's `repeat_interval` (10 minutes as shipped): a replica that starts with
an empty disk — a replacement for one lost with its volume — would not know the alerts already
firing until then, and the loss of the other replica meanwhile would lose them. Read at start,
they are stored as if delivered (the same dedup key, so the next delivery is a duplicate)."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from sentinel.core.alerts import Alert
from sentinel.core.errors import AdapterError

__all__ = ["firing_alerts"]


def firing_alerts(url: str, receiver: str, timeout: float = 5.0) -> list[Alert]:
    """Active, neither silenced nor inhibited, routed to `receiver`: what Alertmanager would
    send to the webhook now. AdapterError, naming the URL, when it cannot be read."""
    api = url.rstrip("/") + "/api/v2/alerts"
    params = {"active": "true", "silenced": "false", "inhibited": "false",
              "unprocessed": "false", "receiver": f"^{receiver}$"}
    try:
        r = httpx.get(api, params=params, timeout=timeout)
        r.raise_for_status()
        raw = r.json()
    except (httpx.HTTPError, ValueError) as e:
        raise AdapterError(f"cannot read the firing alerts from {api}: {e}") from None
    if not isinstance(raw, list):
        raise AdapterError(f"{api} did not answer a list of alerts")
    out = []
    for a in raw:
        try:
            out.append(Alert.model_validate({
                "status": "firing", "labels": a.get("labels") or {},
                "annotations": a.get("annotations") or {}, "startsAt": a.get("startsAt"),
                "endsAt": a.get("endsAt") or "0001-01-01T00:00:00Z",
                "generatorURL": a.get("generatorURL") or "",
                "fingerprint": a.get("fingerprint")}))
        except (ValidationError, AttributeError) as e:
            raise AdapterError(f"{api} answered an alert that is not one: {e}") from None
    return out
