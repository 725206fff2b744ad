"""Continue tokens for paginated lists, as the API server hands them out."""

from __future__ import annotations

import base64
import bisect
import json
import threading
import time
from collections.abc import Callable

from sentinel.sim.store import ApiError, Obj

__all__ = ["Pages"]


def _key(o: Obj) -> tuple[str, str]:
    """An object's place in a list: lists are in (namespace, name) order, as etcd's keys."""
    return (o["metadata"].get("namespace") or "", o["metadata"]["name"])


def _encode(c: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(c).encode()).decode()


class Pages:
    """Paginated lists as the API server serves them: every page of one list comes from the
    snapshot its first page was cut from (the same resourceVersion however the objects change
    meanwhile), and a continue token older than `ttl` is refused with 410 Expired. As the real
    server's does, that 410 carries a continue token of its own: a client that needs a
    consistent list starts again; one that does not goes on with it, from the next key of
    the latest snapshot (an inconsistent list)."""

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._snaps: dict[int, tuple[float, list[Obj], int]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def keep(self, items: list[Obj], rv: int, start: int) -> str:
        """A token for the page from `start` on of this snapshot."""
        now = time.monotonic()
        with self._lock:
            for k in [k for k, (t, _, _) in self._snaps.items() if now - t > self.ttl]:
                del self._snaps[k]
            snap = next((k for k, (_, i, _) in self._snaps.items() if i is items), None)
            if snap is None:
                snap, self._next = self._next, self._next + 1
                self._snaps[snap] = (now, items, rv)
        return _encode({"rv": rv, "snap": snap, "start": start, "key": _key(items[start])})

    def resume(self, token: str, latest: Callable[[], tuple[list[Obj], int]]) -> tuple[
            list[Obj], int, int]:
        """(snapshot, its version, where the page starts). `latest()` is the list as it is
        now, for a token that goes on inconsistently."""
        try:
            c = json.loads(base64.urlsafe_b64decode(token.encode()))
            key = tuple(c["key"])
            snap, start = (int(c["snap"]), int(c["start"])) if c["rv"] != -1 else (-1, 0)
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "BadRequest", "continue key is not valid") from None
        if snap == -1:  # from the next key on, of the latest snapshot
            items, rv = latest()
            return items, rv, bisect.bisect_left([_key(o) for o in items], key)
        with self._lock:
            kept = self._snaps.get(snap)
            if kept is None or time.monotonic() - kept[0] > self.ttl:
                self._snaps.pop(snap, None)
                raise ApiError(410, "Expired", "The provided continue parameter is too old to "
                               "display a consistent list result. You can start a new list "
                               "without the continue parameter, or use the continue token in "
                               "this response to retrieve the remainder of the results. "
                               "Continuing with the provided token results in an inconsistent "
                               "list - objects that were created, modified, or deleted between "
                               "the time the first chunk was returned and now may show up in "
                               "the list.", _encode({"rv": -1, "key": key}))
            return kept[1], kept[2], start

    def forget(self) -> None:
        """Expire every continue token now (a test's compaction)."""
        with self._lock:
            self._snaps.clear()
