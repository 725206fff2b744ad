"""A site's freshness in a central store, asked of a few of its nodes' series, not of all.

The full freshness query reads every `up` series of the fleet (400,000 at 100,000 nodes with four
jobs): on a real Prometheus at that size it took 3.6 s, as long as the presence query, and a
cycle's queries together 7.2 s against 4.0 s with the sample (bench/central_store.py). Its answer
needs far less. Every `up` series is written at each scrape by the site's Prometheus, whether its
target answered or not (0 for a dead node), so one node's series grows old only when the site's
data stops arriving, or when that node's target left service discovery. So once a presence answer
has named each site's nodes, a cycle asks for `SAMPLE` of them per site, changing which each
cycle, and the newest of their samples is an upper bound on the site's age: a site the sample
shows fresh is fresh. Before any presence answer (a cycle's first, after a start or a restart,
when the store is asked the most), the sample is picked from the nodes the cluster places in
each site. A site it shows older than `max_data_age`, or not at all, is asked again by
its site label, in full, so the verdict is always the full query's. The age shown for a fresh site
may be up to one scrape interval older than its newest sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sentinel.adapters.promql import alternation

__all__ = ["SAMPLE", "FreshnessSample", "freshness_query"]

#: Nodes asked per site: three whose targets all left discovery in the same few minutes (a
#: deleted node's series lingers in a federating store for its 5-minute lookback) only cost
#: that site a second query, and the newest of three scrapes spread over an interval is at
#: most a quarter of it older than the site's newest, on average.
SAMPLE = 3


def freshness_query(label: str, nodes: Iterable[str] | None = None,
                    sites: Iterable[str] | None = None) -> str:
    """Seconds since each site's newest `up` sample of a target that carries a node; of these
    nodes only, or of these sites only."""
    match = 'node!=""'
    if nodes is not None:
        match = f'node=~"{alternation(nodes)}"'
    if sites is not None:
        match += f', {label}=~"{alternation(sites)}"'
    return f"time() - max by ({label}) (timestamp(up{{{match}}}))"


class FreshnessSample:
    """The nodes to ask about, per site, from the last presence answer; None: ask in full."""

    def __init__(self, max_age: float, size: int = SAMPLE) -> None:
        self.max_age, self.size = max_age, size
        self.nodes: dict[str, list[str]] | None = None
        self.turn = 0

    def query(self, label: str) -> tuple[str, bool]:
        """This cycle's freshness query, and whether it asks a sample."""
        if not self.nodes:
            return freshness_query(label), False
        return freshness_query(label, [n for ns in self.nodes.values() for n in ns]), True

    def update(self, present: Mapping[str, Iterable[str]]) -> None:
        """Pick the next cycle's sample from this cycle's presence, split by site: a different
        `size` of each site's nodes each cycle, so no few stay picked whose series stopped."""
        self.turn += 1
        picked: dict[str, list[str]] = {}
        for site, names in present.items():
            ordered = sorted(names)
            if ordered:
                start = self.turn * self.size
                picked[site] = [ordered[(start + i) % len(ordered)]
                                for i in range(min(self.size, len(ordered)))]
        self.nodes = picked

    def place(self, site_of_node: Mapping[str, str]) -> None:
        """Pick the next cycle's sample from where the cluster places each node (before any
        presence answer); nothing known yet leaves the full query."""
        by_site: dict[str, list[str]] = {}
        for node, site in site_of_node.items():
            by_site.setdefault(site, []).append(node)
        if by_site:
            self.update(by_site)

    def recheck(self, ages: Mapping[str, float], sites: Sequence[str]) -> list[str]:
        """The sites whose sampled age does not prove them fresh: to be asked in full."""
        return [s for s in sites if s not in ages or ages[s] > self.max_age]
