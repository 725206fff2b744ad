"""The cycle's side of site discovery: the collector and the cloud view follow the site
catalog before a cycle asks anything, and nodes that changed site are told apart (their clocks
start again; one that left every site holding keys is handed back, core.decide.site_moves)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sentinel.adapters.sitewatch import SiteCatalog
from sentinel.config.discovery import Resolved
from sentinel.core.decide import site_moves
from sentinel.core.model import NodeInfo

__all__ = ["SiteFollower"]

log = logging.getLogger("sentinel.cycle")


class SiteFollower:
    def __init__(self, catalog: SiteCatalog | None,
                 apply: Callable[[Resolved], None]) -> None:
        self.catalog, self._apply = catalog, apply
        self._seen = -1
        self._node_sites: dict[str, str | None] = {}
        """Each node's site last cycle (discovery only)."""
        self.retired: dict[str, str] = {}
        """Node -> the site it left (or that was removed) while sentinel held keys on it."""

    def follow(self) -> None:
        """Apply the catalog's sites if they changed since the last cycle."""
        if self.catalog is None:
            return
        gen, resolved = self.catalog.current()
        if gen != self._seen:
            self._apply(resolved)
            self._seen = gen

    def moves(self, nodes: Mapping[str, NodeInfo]) -> frozenset[str]:
        """Nodes that changed site since last cycle; `retired` updated."""
        if self.catalog is None or not self.catalog.discovery.enabled:
            return frozenset()
        before = self._node_sites
        moved, self.retired = site_moves(before, nodes, self.retired)
        self._node_sites = {n: i.site for n, i in nodes.items()}
        for n in sorted(moved):
            log.info("node %s moved from site %s to %s: its clocks start again", n,
                     before[n] or "(none)", nodes[n].site or "(none)")
        return moved
