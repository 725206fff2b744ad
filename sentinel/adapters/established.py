"""Which nodes' series are old enough to witness, remembered between cycles instead of asked
of a central store every cycle.

The young-node guard (core/detect.py) drops a rule's match on a node whose series are younger
than the longest `for`: `count by (node) (up offset <longest>s)`. Asked of a central store
every cycle, that query reads every `up` series of the fleet (400,000 at 100,000 nodes with
four jobs each), one of the three that do, on the store the cycles already wait for. Its
answer hardly changes: a node that was established and has been present in every answer since
is established still. So the store is asked for the whole fleet once (at start, or when the
longest `for` changes), then only for the nodes that match a rule and are not remembered, by
name. A node missing from one presence answer is forgotten, so a node deleted and created again
under the same name is asked about again. A failed presence answer cannot vouch for anyone's
continuity: every node is forgotten, and asked about by name when a rule matches it. Not the
whole fleet again: the presence query fails when the store is too slow to answer in time, and
a cycle that then asked it to read every `up` series once more would keep it too slow.
"""

from __future__ import annotations

from collections.abc import Iterable

from sentinel.adapters.promql import alternation

__all__ = ["MAX_NAMED", "EstablishedMemory", "established_query"]

#: More unremembered nodes than this matching a rule at once (a site-wide failure in the first
#: cycle): ask for the whole fleet instead of a regular expression this long.
MAX_NAMED = 500


def established_query(seconds: float, nodes: Iterable[str] | None = None) -> str:
    """Nodes whose targets already had samples `seconds` ago (the longest rule's `for`): a
    node whose series are newer is no witness yet (it just joined, its exporter starting).
    `nodes`: ask about these only."""
    offset = max(1, int(seconds))
    if nodes is None:
        return f"count by (node) (up offset {offset}s)"
    return f'count by (node) (up{{node=~"{alternation(nodes)}"}} offset {offset}s)'


class EstablishedMemory:
    """Nodes known established and present in every presence answer since; None: unknown,
    ask for the whole fleet."""

    def __init__(self) -> None:
        self.known: set[str] | None = None
        self.offset: float | None = None
        """The longest `for` the remembered nodes were vouched for at."""

    def forget(self) -> None:
        """Nobody's continuity is vouched for (a failed presence answer): each node matching a
        rule is asked about again, by name (the whole fleet when too many are)."""
        if self.known is not None:
            self.known = set()

    def whole(self, offset: float) -> bool:
        """Whether to ask for the whole fleet this cycle: nothing remembered, or the longest
        `for` changed (a node vouched for at 30 s is not at 60 s)."""
        if offset != self.offset:
            self.known, self.offset = None, offset
        return self.known is None

    def to_ask(self, matched: Iterable[str]) -> set[str] | None:
        """The nodes matching a rule that must be asked about by name; None: ask for all."""
        if self.known is None:
            return None
        ask = {n for n in matched if n not in self.known}
        return None if len(ask) > MAX_NAMED else ask

    def update(self, present: Iterable[str], established: Iterable[str]) -> frozenset[str]:
        """This cycle's answer: the remembered nodes still present, and those the store
        vouched for now. Returns what this cycle takes as established."""
        here = set(present)
        now = (self.known or set()) & here | set(established)  # set operations: 100,000 names
        self.known = now & here
        return frozenset(now)
