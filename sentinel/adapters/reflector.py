"""List, then watch: one kind of Kubernetes object kept current through the official client,
as client-go's reflector does (pages, a transform on receipt, relist on 410 Gone)."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import msgspec
from kubernetes.client.exceptions import ApiException

from sentinel.adapters import kubedecode
from sentinel.adapters.kubeerrors import describe_error

__all__ = ["Obj", "Reflector"]

log = logging.getLogger("sentinel.kube")
Obj = dict[str, Any]


class Reflector:
    """List, then watch from the list's resourceVersion; on 410 Gone or any error, list again.

    The list comes in pages of `page_size` (limit/continue, as client-go's pager reads it), so
    no whole list body is ever held, and every object, listed or watched, goes through
    `transform` on receipt (as a client-go informer's transform does): the cache keeps only
    what its reader needs. `on_list(items)` replaces the whole state with the transformed
    objects; `on_event(type, item)` applies one change. Listed items `keep` refuses are left
    out (400,000 unbound pods need not wait in memory for the last page).
    """

    def __init__(self, name: str, list_fn: Callable[..., Any],
                 on_list: Callable[[list[Any]], None], on_event: Callable[[str, Any], None],
                 watch_timeout: float = 300.0, *, page_size: int = 500,
                 transform: Callable[[Obj], Any] = lambda o: o,
                 keep: Callable[[Any], bool] | None = None,
                 schema: type[msgspec.Struct] | None = None) -> None:
        self.name = name
        self._decoder = kubedecode.ListDecoder(schema) if schema is not None \
            else kubedecode.WholeDecoder()
        """Decodes only the schema's fields (adapters/kubedecode.py); without one, all."""
        self._list_fn = list_fn
        self._on_list, self._on_event = on_list, on_event
        self._transform, self._keep = transform, keep
        self._page = page_size
        self._timeout = max(1, int(watch_timeout))
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._resp: Any = None
        self.relists = 0
        self.pages = 0
        self.last_error: str | None = None
        self._rng = random.Random()
        """Its own, for the retry jitter: the process' shared `random` is not touched from a
        background thread (a test generating data from it would see it move)."""
        self._thread = threading.Thread(target=self._run, name=f"reflector-{name}", daemon=True)

    def start(self) -> Reflector:
        self._thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None:
            with contextlib.suppress(Exception):  # best effort: the thread is daemonic anyway
                resp.shutdown()

    def stop(self) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                rv: str | None = self._list()
                backoff = 0.5
                while rv is not None and not self._stop.is_set():
                    rv = self._watch(rv)
                    if rv is None:
                        break  # expired: list again
            except Exception as e:  # any failure means: list again, later
                if self._stop.is_set():
                    return  # our own stop() cut the stream
                self.last_error = describe_error(e)
                log.warning("%s: list/watch failed, retrying in %.1fs: %s", self.name, backoff,
                            self.last_error)
                self._stop.wait(backoff + self._rng.uniform(0, backoff / 2))
                backoff = min(backoff * 2, 30.0)

    def _list(self) -> str:
        items: list[Any] = []
        token, rv = "", ""
        while True:
            kw: dict[str, Any] = {"limit": self._page}
            if token:
                kw["_continue"] = token
            try:
                resp = self._list_fn(_preload_content=False, **kw)
            except ApiException as e:
                if e.status != 410 or not token:
                    raise
                # The snapshot the first page was cut from is gone (the server keeps it about
                # five minutes). Starting again could repeat forever if a list takes longer
                # (500,000 pods on a loaded server did): go on with the token the 410 carries,
                # from the next key of the latest snapshot. The watch still starts from the
                # first page's version, so it replays every change since: what this
                # inconsistent list saw too early or too late is mended in order.
                token = kubedecode.continue_of(e.body)
                log.info("%s: list continue token expired after %d objects; %s", self.name,
                         len(items), "going on from the next key (inconsistent list, mended "
                         "by the watch)" if token else "listing again")
                if not token:
                    items, rv = [], ""
                continue
            meta, page = self._decoder.page(resp.data)
            del resp
            self.pages += 1
            items.extend(filter(self._keep, map(self._transform, page)) if self._keep
                         else map(self._transform, page))
            del page
            rv = rv or str(meta["resourceVersion"])  # every page is of the first's snapshot
            token = meta.get("continue") or ""
            if not token:
                break
        self._on_list(items)
        self.relists += 1
        self.last_error = None
        self.synced.set()
        return rv

    def _watch(self, rv: str) -> str | None:
        resp = self._list_fn(watch=True, resource_version=rv, timeout_seconds=self._timeout,
                             allow_watch_bookmarks=True, _preload_content=False)
        self._resp = resp
        try:
            for line in kubedecode.watch_lines(resp.stream(amt=None, decode_content=False)):
                if self._stop.is_set():
                    return rv
                ev = self._decoder.event(line)
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        log.info("%s: watch expired (%s), relisting", self.name,
                                 obj.get("message"))
                        return None
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if ev.get("type") != "BOOKMARK":
                    self._on_event(ev["type"], self._transform(obj))
        finally:
            self._resp = None
            resp.release_conn()
        return rv
