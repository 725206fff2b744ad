"""Keep the interpreter's full garbage collections off the cloud view of a fleet.

A full collection walks every object the process holds with the GIL held. At 100,000 nodes the
cloud view and its caches are millions of objects: bench/fleet.py counted 27 full collections in
2.5 minutes, every one over 100 ms, 0.76 s on average (`sentinel_gc_pause_seconds`), 8 s of
held GIL a minute that every API request and the cycle itself waited out. Almost all of those
objects live for the whole run: walking them finds nothing to free. With the freeze below: 91
of 167 full collections under 100 ms, 2.2 s a minute.

So after each cycle whatever is alive is frozen (`gc.freeze`: moved out of the collector's
generations, at no cost), and the collector walks only what was made since. What is frozen is
still freed by reference counting as usual; only garbage in reference cycles would wait, so
every FULL_EVERY seconds, right after a cycle, one full collection runs over everything. What
is big must therefore never sit in a cycle: an httpx Response is one (with its stream), so a
Prometheus answer is read into bytes of our own (adapters/prom.Answer).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["FULL_EVERY", "HeapKeeper"]

#: Seconds between full collections over everything (one pause, between two cycles).
FULL_EVERY = 600.0


class HeapKeeper:
    def __init__(self, full_every: float = FULL_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.full_every, self.clock = full_every, clock
        self._last_full: float | None = None

    def after_cycle(self) -> None:
        now = self.clock()
        if self._last_full is None:
            self._last_full = now
        elif now - self._last_full >= self.full_every:
            gc.unfreeze()
            gc.collect()
            self._last_full = now
        gc.freeze()

    def close(self) -> None:
        """Give the collector everything back (a process that goes on after the service, as
        a test's does)."""
        gc.unfreeze()
