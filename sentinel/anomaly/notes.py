"""What the journal says about anomaly alarms: when one is raised, what it turns out to be
about, and when it clears.

An alarm is often raised early in a grey fault's ramp, when the score is already rare but no
single feature is yet two spreads out: its first note names nothing, or the wrong thing. So a
still-raised alarm gets another note each time a feature its notes have not named yet joins its
top three — at most one per feature per alarm, so a flicker between two features is not noise.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sentinel.core.kinds import NoteReason
from sentinel.core.model import AnomalyReading, NodeName, Note, SiteName

Named = Mapping[str, frozenset[str]]
"""Node in alarm -> the features its notes have named so far (empty: raised, nothing named)."""


def alarm_notes(alarmed: Mapping[str, AnomalyReading | None],
                cleared: Mapping[str, AnomalyReading | None],
                sites: Mapping[str, SiteName], named: Named,
                rebased: Collection[str] = (), accept_after: float = 0.0
                ) -> tuple[list[Note], Named]:
    """`alarmed`: the nodes in alarm this cycle; `cleared`: those whose alarm ended this cycle;
    `rebased`: those whose persistent shift became their baseline (drift.py), which the
    journal must say: from now on that node is judged against another normal.
    Returns the notes to journal and what the notes have named once they are."""
    notes: list[Note] = []
    now: dict[str, frozenset[str]] = {}
    for n in sorted(alarmed):
        r = alarmed[n]
        top = frozenset(f for f, *_ in r.top) if r is not None else frozenset()
        before = named.get(n)
        if before is None or not top <= before:
            notes.append(Note(NodeName(n), sites[n], NoteReason.ANOMALY,
                              r.sentence() if r is not None else "anomaly alarm raised"))
        now[n] = (before or frozenset()) | top
    for n in sorted(set(cleared) | set(rebased)):
        if n not in sites:
            continue
        r = cleared.get(n)
        text = "anomaly alarm cleared" + (f": score {r.score:.3f}" if r is not None else "")
        if n in rebased:
            text = (("anomaly alarm cleared: " if n in cleared else "")
                    + f"its metrics stayed unusual for {accept_after / 3600:g} h; their "
                    "recent level is now this node's baseline, until the next training")
        notes.append(Note(NodeName(n), sites[n], NoteReason.ANOMALY_CLEARED, text))
    return notes, now
