"""Times as people read them at 3 a.m.: relative first, then the absolute UTC time that
matches the logs and the journal ("12 min ago, 03:14 UTC")."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["ago", "span", "utc"]


def utc(ts: float, *, date: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M UTC" if date else "%H:%M UTC"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def span(seconds: float) -> str:
    """A duration rounded to what matters: 45 s, 1 min 40 s, 12 min, 3 h 05 min, 2 d 4 h."""
    s = abs(seconds)
    if s < 59.5:
        return f"{s:.0f} s"
    if s < 599.5:
        m, sec = divmod(round(s), 60)
        return f"{m} min {sec:02d} s" if sec else f"{m} min"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400:
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m:02d} min" if m else f"{h} h"
    d, h = divmod(round(s / 3600), 24)
    return f"{d} d {h} h" if h else f"{d} d"


def ago(ts: float | None, now: float) -> str:
    """`12 min ago, 03:14 UTC` or `in 5 min, 03:31 UTC`; the date is added beyond a day."""
    if ts is None:
        return "never"
    delta = now - ts
    when = utc(ts, date=abs(delta) >= 86400)
    if abs(delta) < 1:
        return f"just now, {when}"
    rel = f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"
    return f"{rel}, {when}"
