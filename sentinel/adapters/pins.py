"""Read-your-writes over a watched cache, shared by the node cache (adapters/kube.py) and the
override cache (adapters/overrides.py)."""

from __future__ import annotations

import time
from collections import deque

__all__ = ["PIN_SECONDS", "WritePins"]

PIN_SECONDS = 30.0
"""How long a write of ours is preferred to older watch events, at most."""


class WritePins:
    """Read-your-writes over a watched cache: a write's answer is used until the watch brings
    that version, older events skipped meanwhile (or until PIN_SECONDS pass).

    resourceVersions are opaque, so "newer" cannot be compared: a version the watch already
    delivered (it can beat the write's own answer) means the cache is as new or newer, and
    the write is not pinned. Not locked: its owner calls it under its own lock."""

    def __init__(self) -> None:
        self._pinned: dict[str, tuple[str, float]] = {}  # name -> (rv we wrote, when)
        self._watched: dict[str, deque[str]] = {}  # name -> last versions the watch delivered

    def clear(self) -> None:
        """A new list: everything the watch delivered before it is moot."""
        self._pinned.clear()
        self._watched.clear()

    def deleted(self, name: str) -> None:
        self._pinned.pop(name, None)
        self._watched.pop(name, None)

    def delivered(self, name: str, rv: str) -> bool:
        """The watch brings version `rv` of `name`: whether to apply it."""
        self._watched.setdefault(name, deque(maxlen=16)).append(rv)
        pinned = self._pinned.get(name)
        if pinned is not None:
            if rv != pinned[0] and time.monotonic() - pinned[1] < PIN_SECONDS:
                return False  # older than what we wrote (the watch delivers in order)
            del self._pinned[name]
        return True

    def written(self, name: str, rv: str) -> bool:
        """Our write answered version `rv`: whether to put the answer in the cache."""
        if rv in self._watched.get(name, ()):
            return False
        self._pinned[name] = (rv, time.monotonic())
        return True
