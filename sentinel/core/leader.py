"""Leader election on a Lease, as values: from the Lease as read and when this process last saw
it change, whether we lead and what to write.

The expiry is judged on this process's own clock, from the moment it *observed* the holder's
last renewal (as client-go's leader election does), never by comparing the holder's
`renewTime` with our clock: two machines' clocks may disagree by more than a lease.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["LeaseRecord", "lease_step"]


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    holder: str | None
    duration: float
    transitions: int = 0
    acquired: float | None = None
    renewed: float | None = None
    """The holder's own timestamps: written for people and tools, not used for expiry."""


def lease_step(rec: LeaseRecord | None, me: str, observed_at: float, now: float,
               duration: float) -> tuple[bool, LeaseRecord | None]:
    """(we lead after this step, the record to write or None to write nothing).

    `observed_at`: when this process first saw `rec` as it is now (holder and renewal)."""
    if rec is None:
        return True, LeaseRecord(me, duration, 0, now, now)
    if rec.holder == me:
        return True, replace(rec, duration=duration, renewed=now)
    if rec.holder and now - observed_at <= rec.duration:
        return False, None
    return True, LeaseRecord(me, duration, rec.transitions + 1, now, now)
