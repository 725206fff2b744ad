"""Continue tokens for paginated lists, as the API server hands them out."""

from __future__ import annotations

import base64
import json
import threading
import time

from sentinel.sim.store import ApiError, Obj

__all__ = ["Pages"]


class Pages:
    """Paginated lists as the API server serves them: every page of one list comes from the
    snapshot its first page was cut from (the same resourceVersion however the objects change
    meanwhile), and a continue token older than `ttl` is refused with 410 Expired, after which
    a client that needs a consistent list starts again (as client-go's pager does)."""

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._snaps: dict[int, tuple[float, list[Obj], int]] = {}
        self._next = 0
        self._lock = threading.Lock()

    def keep(self, items: list[Obj], rv: int, start: int) -> str:
        now = time.monotonic()
        with self._lock:
            for k in [k for k, (t, _, _) in self._snaps.items() if now - t > self.ttl]:
                del self._snaps[k]
            snap = next((k for k, (_, i, _) in self._snaps.items() if i is items), None)
            if snap is None:
                snap, self._next = self._next, self._next + 1
                self._snaps[snap] = (now, items, rv)
        raw = json.dumps({"rv": rv, "snap": snap, "start": start}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    def resume(self, token: str) -> tuple[list[Obj], int, int]:
        try:
            c = json.loads(base64.urlsafe_b64decode(token.encode()))
            snap, start = int(c["snap"]), int(c["start"])
        except (ValueError, KeyError, TypeError):
            raise ApiError(400, "BadRequest", "continue key is not valid") from None
        with self._lock:
            kept = self._snaps.get(snap)
            if kept is None or time.monotonic() - kept[0] > self.ttl:
                self._snaps.pop(snap, None)
                raise ApiError(410, "Expired", "The provided continue parameter is too old to "
                               "display a consistent list result. You can start a new list "
                               "without the continue parameter.")
            return kept[1], kept[2], start

    def forget(self) -> None:
        """Expire every continue token now (a test's compaction)."""
        with self._lock:
            self._snaps.clear()
