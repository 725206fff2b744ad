"""Leader election: the pure lease step as a table. Two real replicas — one acts, the other
serves reads and takes over, each with its own disk — are tests/test_replicas.py."""

from __future__ import annotations

from sentinel.core.leader import LeaseRecord, lease_step

D = 15.0


def test_the_lease_step() -> None:
    lead, w = lease_step(None, "a", 0.0, 100.0, D)
    assert lead and w == LeaseRecord("a", D, 0, 100.0, 100.0), "nobody holds it: take it"
    held = LeaseRecord("b", D, 3, 50.0, 90.0)
    assert lease_step(held, "a", 95.0, 100.0, D) == (False, None), "b renewed 5 s ago"
    assert lease_step(held, "a", 95.0, 110.0, D) == (False, None), "15 s not yet passed"
    lead, w = lease_step(held, "a", 95.0, 110.1, D)
    assert lead and w is not None and w.holder == "a" and w.transitions == 4
    lead, w = lease_step(LeaseRecord("a", D, 3, 50.0, 90.0), "a", 0.0, 500.0, D)
    assert lead and w is not None and w.renewed == 500.0 and w.acquired == 50.0, "renew"
    lead, w = lease_step(LeaseRecord(None, D, 3), "a", 99.0, 100.0, D)
    assert lead and w is not None and w.transitions == 4, "released: taken at once"
    # the holder's own clock is never compared with ours: a renewTime far in the past
    # means nothing if we saw it change just now
    assert lease_step(LeaseRecord("b", D, 0, 0.0, 0.0), "a", 99.0, 100.0, D) == (False, None)
