"""Overrides as SentinelOverride objects in the cluster (deploy/crds/): every replica reads the
same ones, whichever replica a person's write reached; they survive the loss of any replica
with its disk; `kubectl get sentineloverrides -n sentinel` shows them. Lifting one marks it
(`spec.lifted`) rather than deleting it, so `history` tells who did what by hand, and when;
objects that ended more than `KEEP_ENDED` ago are removed when a new override is set.

Read from a watched cache once `start()`ed (list, then watch, as the nodes are): every cycle
and every `/status` used to list them from the API server, which at fleet size put an API
round trip under each request. A write is seen by the next read at once (the written object
is put in the cache, and older watch events for it are skipped until the watch delivers it).
Until the cache has listed, a read asks the API server itself.

A read that fails (the API server briefly unreachable) answers what was last read, and says
so once in the log; with nothing ever read it raises, and the cycle acts on nothing, since a
pause it cannot see may be in force."""

from __future__ import annotations

import logging
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError, MaxRetryError

from sentinel.adapters.kubeerrors import api_reason, describe_error
from sentinel.adapters.pins import WritePins
from sentinel.adapters.reflector import Reflector
from sentinel.core.errors import AdapterError
from sentinel.core.model import Override, OverrideKind
from sentinel.core.overrides import OverrideRequest
from sentinel.core.timefmt import span

__all__ = ["GROUP", "KEEP_ENDED", "PLURAL", "VERSION", "OverrideStore", "OverrideStoreError"]

log = logging.getLogger("sentinel.overrides")

GROUP, VERSION, PLURAL = "sentinel.edge.io", "v1alpha1", "sentineloverrides"
KEEP_ENDED = 7 * 86400.0
"""How long an override that ended (expired or lifted) stays in the cluster for the history."""
_CRD_HINT = ("the SentinelOverride CRD is not installed (kubectl apply -k deploy/, or "
             "kubectl apply -f deploy/crds/)")


class OverrideStoreError(AdapterError):
    """The overrides could not be read or written; `status` for the HTTP answer."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(v: object) -> float:
    return datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()


def _override(obj: dict[str, Any]) -> Override:
    s = obj["spec"]
    return Override(obj["metadata"]["name"], OverrideKind(s["kind"]), s["reason"], s["by"],
                    _parse(s["created"]), _parse(s["expires"]), s.get("node") or None,
                    s.get("site") or None, s.get("key", ""), bool(s.get("force")))


def _lifted(obj: dict[str, Any]) -> tuple[float, str] | None:
    lifted = obj["spec"].get("lifted")
    return None if not lifted else (_parse(lifted["at"]), str(lifted["by"]))


class OverrideStore:
    def __init__(self, api: client.ApiClient, namespace: str,
                 watch_timeout: float = 300.0) -> None:
        self.api = client.CustomObjectsApi(api)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._last: list[dict[str, Any]] | None = None
        self._failing = False
        self._cache: dict[str, dict[str, Any]] = {}
        self._pins = WritePins()
        self.reflector = Reflector(
            "sentineloverrides",
            lambda **kw: self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **kw),
            self._listed, self._event, watch_timeout)

    def start(self) -> OverrideStore:
        self.reflector.start()
        return self

    def close(self) -> None:
        """The watch stops; the client belongs to the runtime."""
        self.reflector.stop()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._cache = {o["metadata"]["name"]: o for o in items
                           if isinstance(o.get("spec"), dict)}
            self._pins.clear()

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._cache.pop(name, None)
                self._pins.deleted(name)
            elif self._pins.delivered(name, str(obj["metadata"].get("resourceVersion"))) and \
                    isinstance(obj.get("spec"), dict):
                self._cache[name] = obj

    def _written(self, obj: dict[str, Any]) -> None:
        """Our own write, readable at once (read-after-write for the person who made it)."""
        name = obj["metadata"]["name"]
        with self._lock:
            if self.reflector.synced.is_set() and \
                    self._pins.written(name, str(obj["metadata"]["resourceVersion"])):
                self._cache[name] = obj

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(GROUP, VERSION, self.namespace, PLURAL, *args, **kw)
        except ApiException as e:
            reason = api_reason(e)
            if e.status == 404 and "sentineloverrides" in reason and "not find" in reason:
                raise OverrideStoreError(f"cannot {what}: {_CRD_HINT}") from None
            status = 422 if e.status == 422 else 503
            raise OverrideStoreError(f"cannot {what}: the API server answered {e.status}: "
                                     f"{reason}", status) from None
        except (HTTPError, OSError) as e:
            detail = describe_error(e) if isinstance(e, MaxRetryError) else \
                f"the API server is unreachable: {e}"
            raise OverrideStoreError(f"cannot {what}: {detail}") from None

    def _objects(self) -> list[dict[str, Any]]:
        """Every SentinelOverride: from the watched cache once it has listed, else from the API
        server, else the last list read if the API fails now."""
        if self.reflector.synced.is_set():
            with self._lock:
                return list(self._cache.values())
        try:
            items = self._call("read the overrides", self.api.list_namespaced_custom_object)
        except OverrideStoreError as e:
            with self._lock:
                if self._last is None:
                    raise
                if not self._failing:
                    log.warning("%s; using the %d read before", e, len(self._last))
                self._failing = True
                return self._last
        out = [o for o in items.get("items", []) if isinstance(o.get("spec"), dict)]
        with self._lock:
            if self._failing:
                log.warning("the overrides can be read again")
            self._last, self._failing = out, False
        return out

    def create(self, req: OverrideRequest, by: str, now: float, site: str | None) -> Override:
        """`site` is the node's site, for the history's site filter."""
        o = Override(secrets.token_hex(4), req.kind, req.reason.strip(), by, now, now + req.ttl,
                     req.node, req.site, req.key, req.force)
        spec: dict[str, Any] = {"kind": o.kind.value, "reason": o.reason, "by": o.by,
                                "created": _ts(o.created), "expires": _ts(o.expires),
                                "key": o.key, "force": o.force}
        for k, v in (("node", o.node), ("site", o.site), ("nodeSite", site or o.site)):
            if v:
                spec[k] = v
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "SentinelOverride",
                "metadata": {"name": o.id, "labels": {"app.kubernetes.io/part-of": "sentinel"}},
                "spec": spec}
        self._written(self._call("set the override", self.api.create_namespaced_custom_object,
                                 body))
        self._prune(now)
        return o

    def _prune(self, now: float) -> None:
        """Remove what ended more than KEEP_ENDED ago; a failure here costs nothing."""
        try:
            for obj in self._objects():
                o, lifted = _override(obj), _lifted(obj)
                ended = lifted[0] if lifted else o.expires
                if now - ended > KEEP_ENDED:
                    self._call("remove an old override",
                               self.api.delete_namespaced_custom_object, o.id)
                    with self._lock:
                        self._cache.pop(o.id, None)
        except OverrideStoreError as e:
            log.info("old overrides not removed now: %s", e)

    def delete(self, oid: str, by: str, now: float,
               replaced_by: str | None = None) -> Override | None:
        """Lift an override; None if there is none in force with that id. `replaced_by`: the
        later override on the same node that lifts it (core/overrides.py, `replaced_by`)."""
        found = self._find(oid)
        if found is None or _lifted(found) is not None or not _override(found).active(now):
            return None
        lifted = {"at": _ts(now), "by": by, **({"replacedBy": replaced_by} if replaced_by
                                                else {})}
        patch = {"metadata": {"resourceVersion": found["metadata"]["resourceVersion"]},
                 "spec": {"lifted": lifted}}
        try:
            self._written(self._call("lift the override",
                                     self.api.patch_namespaced_custom_object, oid, patch))
        except OverrideStoreError:
            # 409: someone else changed it meanwhile (lifted it too): read again once
            again = self._call("read the override", self.api.get_namespaced_custom_object, oid)
            if _lifted(again) is not None:
                return None
            raise
        return _override(found)

    def active(self, now: float) -> tuple[Override, ...]:
        found = [_override(obj) for obj in self._objects() if _lifted(obj) is None]
        return tuple(sorted((o for o in found if o.active(now)), key=lambda o: (o.created, o.id)))

    def get(self, oid: str) -> Override | None:
        found = self._find(oid)
        return None if found is None else _override(found)

    def _find(self, oid: str) -> dict[str, Any] | None:
        return next((obj for obj in self._objects() if obj["metadata"]["name"] == oid), None)

    def history(self, now: float, *, node: str | None = None, site: str | None = None,
                since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Each override's creation and its end (lifted by someone, or expired once its time
        has passed), as history entries."""
        out: list[dict[str, Any]] = []
        objs = sorted(self._objects(), key=lambda obj: _override(obj).created, reverse=True)
        for obj in objs:
            o, lifted = _override(obj), _lifted(obj)
            node_site = obj["spec"].get("nodeSite") or ""
            if node and o.node != node:
                continue
            if site and not (node_site == site or o.site == site
                             or (o.site is None and o.node is None)):
                continue
            base = {"type": "override", "node": o.node or "", "site": node_site,
                    "override": o.record()}
            out.append({**base, "ts": o.created, "event": "created",
                        "text": f"{o.by} set override {o.id}: {_describe(o)}"})
            if lifted is not None:
                by_new = obj["spec"]["lifted"].get("replacedBy")
                out.append({**base, "ts": lifted[0], "event": "lifted",
                            "text": f"{lifted[1]} lifted override {o.id} ({_describe(o)})" + (
                                f", replaced by override {by_new}" if by_new else "")})
            elif o.expires <= now:
                out.append({**base, "ts": o.expires, "event": "expired",
                            "text": f"override {o.id} expired ({_describe(o)})"})
            if len(out) >= limit:
                break
        return [e for e in out if since is None or e["ts"] >= since]


def _describe(o: Override) -> str:
    key = f" {o.key}" if o.key else ""
    force = " --force" if o.force else ""
    return f"{o.kind.value}{key}{force} {o.target} for {span(o.expires - o.created)}: {o.reason}"
