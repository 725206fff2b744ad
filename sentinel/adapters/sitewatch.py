"""The sites as they stand: the static list, and the platform's NodePools or NodeGroups watched
through the official client (list, then watch; config/discovery.py resolves each into a site).

Every reader polls `current()` and compares its generation with the one it last applied: the
collector, the cloud view, the registry and rollout guards each pick a change up at their own
next round, and nothing runs inside the watch thread but the bookkeeping.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client

from sentinel.adapters.reflector import Reflector
from sentinel.config.discovery import Pool, Resolved, pool_of, resolve_sites
from sentinel.config.schema import Config, SiteConfig

__all__ = ["SiteCatalog"]

log = logging.getLogger("sentinel.sites")


class SiteCatalog:
    def __init__(self, cfg: Config, api: client.ApiClient | None = None) -> None:
        self.cfg = cfg
        self.discovery = cfg.site_discovery
        self._lock = threading.Lock()
        self._pools: dict[str, Pool] = {}
        self.generation = 0
        self._resolved = self._resolve()
        self.reflector: Reflector | None = None
        if self.discovery.enabled:
            if api is None:
                raise ValueError("site discovery needs the Kubernetes API")
            kind = self.discovery.target()
            custom = client.CustomObjectsApi(api)
            self.reflector = Reflector(
                f"{kind.plural}.{kind.group}",
                lambda **kw: custom.list_cluster_custom_object(
                    kind.group, kind.version, kind.plural, **kw),
                self._listed, self._event, cfg.cluster.watch_timeout,
                page_size=cfg.cluster.list_page_size, transform=_transform)

    # -- reading -------------------------------------------------------------------------
    def current(self) -> tuple[int, Resolved]:
        with self._lock:
            return self.generation, self._resolved

    def sites(self) -> tuple[SiteConfig, ...]:
        return self.current()[1].sites

    def names(self) -> list[str]:
        return [s.name for s in self.sites()]

    @property
    def synced(self) -> bool:
        return self.reflector is None or self.reflector.synced.is_set()

    @property
    def error(self) -> str | None:
        """Why the platform's objects cannot be read (the CRD missing, RBAC), if they cannot."""
        return None if self.reflector is None else self.reflector.last_error

    def describe(self) -> dict[str, Any]:
        """For /status: where the sites come from, and which are not acted on, with why."""
        with self._lock:
            gen, r, pools = self.generation, self._resolved, sorted(self._pools)
        out: dict[str, Any] = {"discover": self.discovery.discover, "generation": gen,
                               "sites": len(r.sites), "not_acted_on": dict(r.problems)}
        if self.reflector is not None:
            kind = self.discovery.target()
            out.update({"kind": f"{kind.kind} ({kind.group}/{kind.version})",
                        "synced": self.synced, "error": self.error, "discovered": pools})
        return out

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> SiteCatalog:
        if self.reflector is not None:
            self.reflector.start()
        return self

    def stop(self) -> None:
        if self.reflector is not None:
            self.reflector.stop()

    def wait_synced(self, timeout: float) -> bool:
        return self.reflector is None or self.reflector.synced.wait(timeout)

    # -- the watch -----------------------------------------------------------------------
    def _resolve(self) -> Resolved:
        return resolve_sites(self._pools.values(), self.cfg.sites, self.discovery,
                             self.cfg.taint_domain, self.cfg.metrics_source.mode == "central",
                             SiteConfig)

    def _changed(self) -> None:
        """Under the lock: resolve again, and say what changed."""
        before = {s.name for s in self._resolved.sites}
        self._resolved = self._resolve()
        self.generation += 1
        after = {s.name for s in self._resolved.sites}
        for name in sorted(after - before):
            log.info("site %s discovered%s", name, f" but not acted on: "
                     f"{self._resolved.problems[name]}" if name in self._resolved.problems
                     else "")
        for name in sorted(before - after):
            log.info("site %s is gone from the platform", name)

    def _listed(self, items: list[tuple[str, Pool | None]]) -> None:
        with self._lock:
            pools = {name: p for name, p in items if p is not None}
            if pools != self._pools or self.generation == 0:
                self._pools = pools
                self._changed()

    def _event(self, kind: str, item: tuple[str, Pool | None]) -> None:
        name, pool = item
        with self._lock:
            if kind == "DELETED" or pool is None:
                if self._pools.pop(name, None) is None:
                    return
            elif self._pools.get(name) == pool:
                return  # a status write (the platform counts its nodes): nothing for us
            else:
                self._pools[name] = pool
            self._changed()


def _transform(obj: dict[str, Any]) -> tuple[str, Pool | None]:
    """(name, pool); the pool None once its deletion began, so that it is dropped by name."""
    return (str((obj.get("metadata") or {}).get("name", "")), pool_of(obj))
