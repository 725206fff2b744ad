"""http/heap.py: after a cycle what is alive is frozen out of the collector's walks, and
garbage in reference cycles is still collected, by the periodic full collection."""

from __future__ import annotations

import gc
import weakref


class _Node:
    other: _Node | None = None


def test_frozen_after_a_cycle_and_cyclic_garbage_collected_at_the_full_collection() -> None:
    from sentinel.http.heap import HeapKeeper

    now = [1000.0]
    keeper = HeapKeeper(full_every=600.0, clock=lambda: now[0])
    gc.disable()  # no automatic collection may free the cycle before the keeper's
    try:
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        dead = weakref.ref(a)
        del a, b  # garbage, but only a collection can tell: they hold each other
        keeper.after_cycle()
        assert gc.get_freeze_count() > 0
        gc.collect()
        assert dead() is not None  # frozen: the collector no longer walks it
        now[0] += 599.0
        keeper.after_cycle()
        gc.collect()
        assert dead() is not None  # not yet time for the full collection
        now[0] += 1.0
        keeper.after_cycle()  # FULL_EVERY since the first: everything is walked once
        assert dead() is None
        assert gc.get_freeze_count() > 0  # and what is alive frozen again
    finally:
        keeper.close()
        gc.enable()
    assert gc.get_freeze_count() == 0
