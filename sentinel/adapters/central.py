"""Central-store mode: every site's series in one Prometheus-API store (a Prometheus that
federates the sites, Thanos Query, Mimir, VictoriaMetrics). Each query is asked once, of the
store, and its answer split by site: by the series' site label where it kept one, else by its
node's site in the cluster (an aggregation `by (node)` drops the label, node names do not).

A site's freshness is the age of its own newest samples in the store (its nodes' `up`, asked of
a few of them: freshness.py). A site whose data stopped arriving (its uplink, its Prometheus,
the federation) grows old — federated and remote-written samples keep their timestamps, so the
store writes no staleness marker and the age is the only sign — and detection calls it stale
past `max_data_age`; once its samples have left the store it is unreachable. Never a site
whose every node is down. The store not answering makes every site unreachable, for the same
reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import cast

from sentinel.adapters.established import EstablishedMemory, established_query
from sentinel.adapters.freshness import FreshnessSample, freshness_query
from sentinel.adapters.prom import (
    PromError,
    Samples,
    SiteCollector,
    SiteTarget,
    build_view,
    node_names,
    query_instant,
    query_nodes,
    serving,
    site_targets,
    unresolved_views,
)
from sentinel.adapters.promdecode import NodeDecoder, NodeSamples
from sentinel.adapters.promhttp import PromClients
from sentinel.config.discovery import Resolved
from sentinel.config.schema import Config
from sentinel.core.model import SiteName, SiteView
from sentinel.core.ruleset import Rule

__all__ = ["CentralCollector", "make_collector", "retarget", "series_site"]


class CentralCollector:
    def __init__(self, store: SiteTarget, sites: Sequence[str], label: str,
                 presence_query: str, clients: PromClients,
                 site_of_node: Callable[[], Mapping[str, str]],
                 max_data_age: float = 120.0) -> None:
        self.store, self.sites, self.label = store, list(sites), label
        self.presence_query, self.clients = presence_query, clients
        self.site_of_node = site_of_node
        self.unresolved: dict[str, str] = {}
        self.established = EstablishedMemory()
        self.freshness = FreshnessSample(max_data_age)
        self._presence = NodeDecoder(label)

    def retarget(self, sites: Sequence[str], unresolved: Mapping[str, str]) -> None:
        """The sites changed (discovery): split the answers by these from the next cycle."""
        self.sites = [s for s in sites if s not in unresolved]
        self.unresolved = dict(unresolved)

    async def aclose(self) -> None:
        await self.clients.aclose()

    async def collect(self, rules: Sequence[Rule],
                      features: Sequence[tuple[str, str]] = ()) -> dict[str, SiteView]:
        client = self.clients.async_client(self.store.http)
        longest = max((r.for_seconds for r in rules), default=0.0)
        t = self.store.timeout
        start = time.monotonic()

        async def ask(expr: str, timeout: float = t) -> Samples:
            return await asyncio.wait_for(query_instant(client, self.store, expr, timeout),
                                          timeout)

        async def ask_nodes(expr: str) -> NodeSamples:
            return await asyncio.wait_for(query_nodes(client, self.store, expr, t,
                                                      self._presence), t)

        whole = self.established.whole(longest)
        if not self.freshness.nodes:
            # A first cycle: its sample from the cluster's nodes, not every `up` series of
            # the fleet in the cycle that already asks the most (freshness.py).
            await asyncio.to_thread(lambda: self.freshness.place(self.site_of_node()))
        fresh, sampled = self.freshness.query(self.label)
        exprs = [fresh, *([established_query(longest)] if whole else []),
                 *(r.expr for r in rules), *(e for _, e in features)]
        answers = await asyncio.gather(
            ask_nodes(self.presence_query), *(ask(e) for e in exprs), return_exceptions=True)
        presence = cast("NodeSamples | BaseException", answers[0])
        results = cast("list[Samples | BaseException]", answers[1:])
        if sampled and isinstance(results[0], list):
            # What is left of the cycle's timeout, and never less than a quarter of it.
            left = max(t / 4, t - (time.monotonic() - start))
            results[0] = await self._recheck(results[0], lambda e: ask(e, left))
        if whole:
            established = results.pop(1)
        else:  # remembered (established.py): only nodes matching a rule, new to it, are asked
            matched = {m["node"] for r in results[1: 1 + len(rules)] if isinstance(r, list)
                       for m, _ in r if "node" in m}
            names = self.established.to_ask(matched)
            established = [] if names == set() else (await asyncio.gather(
                ask(established_query(longest, names)), return_exceptions=True))[0]
        # Splitting every node's answers by site is proportional to the fleet: off the loop.
        views = await asyncio.to_thread(self._views, presence, results, established, rules,
                                        features)
        return {**unresolved_views(self.unresolved), **views}

    async def _recheck(self, fresh: Samples,
                       ask: Callable[[str], Awaitable[Samples]]) -> Samples | BaseException:
        """The sampled answer, with the sites it does not prove fresh asked in full (every
        site at once when most are); a failure is the freshness query's, as before."""
        ages = {m[self.label]: v for m, v in fresh if self.label in m}
        again = self.freshness.recheck(ages, self.sites)
        if not again:
            return fresh
        most = len(again) > len(self.sites) // 2
        try:
            answer = await ask(freshness_query(self.label, sites=None if most else again))
        except (PromError, TimeoutError) as e:
            return e
        if most:
            return answer
        asked = set(again)
        return [(m, v) for m, v in fresh if m.get(self.label) not in asked] + answer

    def _established(self, presence: NodeSamples,
                     answer: Samples | BaseException) -> frozenset[str] | BaseException:
        """This cycle's established nodes: the store's answer and what is remembered."""
        if isinstance(answer, BaseException):
            return answer  # as a failed query always was: nobody filtered as new this cycle
        return self.established.update((n for n, _, _ in presence), node_names(answer))

    def _views(self, presence: NodeSamples | BaseException,
               results: Sequence[Samples | BaseException],
               established: Samples | BaseException, rules: Sequence[Rule],
               features: Sequence[tuple[str, str]]) -> dict[str, SiteView]:
        fresh = results[0]
        if isinstance(presence, BaseException):
            self.established.forget()  # presence unknown: continuity cannot be vouched for
            names: frozenset[str] | BaseException = presence  # unreachable views below
        else:  # remembered even when the freshness query fails (the views below then do)
            names = self._established(presence, established)
        for what, res in (("presence query", presence), ("freshness query", fresh)):
            if isinstance(res, BaseException):  # named: at 3 a.m., which one is slow
                why = f"central store {self.store.url}: its {what}: {res or 'timed out'}"
                return {s: SiteView(SiteName(s), reachable=False, error=why)
                        for s in self.sites}
        assert isinstance(presence, list) and isinstance(fresh, list)
        nodes = self.site_of_node()
        split = [self._split(r, nodes) for r in results[1:]]
        mine_established = self._split_names(names, nodes)
        ages = {m[self.label]: v for m, v in fresh if self.label in m}
        present: dict[str, list[tuple[str, float]]] = {}
        for node, label, v in presence:
            site = place_series(label, node, nodes)
            if site is not None:
                present.setdefault(site, []).append((node, v))
        self.freshness.update({s: [n for n, _ in present.get(s, [])] for s in self.sites})
        out: dict[str, SiteView] = {}
        for s in self.sites:
            if s not in ages:
                out[s] = SiteView(SiteName(s), reachable=False, error=(
                    f"no recent samples of site {s} in the central store {self.store.url} "
                    f"({self.label}={s!r}): its data stopped arriving"))
                continue
            mine: list[Samples | BaseException] = [
                r if isinstance(r, BaseException) else r.get(s, []) for r in split]
            est = mine_established if isinstance(mine_established, BaseException) \
                else mine_established.get(s, frozenset())
            out[s] = build_view(SiteName(s), max(0.0, ages[s]), None,
                                serving(present.get(s, ())),
                                est, rules, mine[:len(rules)], features, mine[len(rules):])
        return out

    def _split(self, res: Samples | BaseException,
               nodes: Mapping[str, str]) -> dict[str, Samples] | BaseException:
        if isinstance(res, BaseException):
            return res
        where = series_site(self.label, nodes)
        out: dict[str, Samples] = {}
        for pair in res:  # the answer's own pairs, not copies (see _split_names)
            site = where(pair[0])
            if site is not None:
                out.setdefault(site, []).append(pair)
        return out

    def _split_names(self, names: frozenset[str] | BaseException,
                     nodes: Mapping[str, str]) -> dict[str, frozenset[str]] | BaseException:
        """Established nodes by site, where _split would put a series `{node=...}`. Kept as
        names: a pair whose labels are a dict is never untracked by the garbage collector, and
        100,000 of them made each cycle (one per node) were walked by every collection
        until the next (http/heap.py)."""
        if isinstance(names, BaseException):
            return names
        named = self.label == "node"  # a series {node=n} has the site label n only then
        out: dict[str, set[str]] = {}
        for n in names:
            site = place_series(n if named else None, n, nodes)
            if site is not None:
                out.setdefault(site, set()).add(n)
        return {s: frozenset(v) for s, v in out.items()}


def series_site(label: str,
                nodes: Mapping[str, str]) -> Callable[[Mapping[str, str]], str | None]:
    """A central series' site: its site label, else its node's site in the cluster."""
    def where(m: Mapping[str, str]) -> str | None:
        return place_series(m.get(label), m.get("node", ""), nodes)
    return where


def place_series(site_label: str | None, node: str, nodes: Mapping[str, str]) -> str | None:
    """A central series' site from its site label and `node` label: the label, else where
    the cluster places the node."""
    return site_label or nodes.get(node)


def make_collector(cfg: Config, site_of_node: Callable[[], Mapping[str, str]] = dict,
                   clients: PromClients | None = None) -> SiteCollector | CentralCollector:
    """The collector the configuration asks for: every site's own Prometheus, or the store."""
    clients = clients or PromClients()
    ms = cfg.metrics_source
    if ms.mode == "central":
        assert ms.url is not None
        store = SiteTarget("central", ms.url.rstrip("/") + ms.http.path_prefix, ms.timeout,
                           ms.http.resolved(lambda f: str(cfg.resolve(f))))
        return CentralCollector(store, [s.name for s in cfg.sites], ms.site_label_in_metrics,
                                cfg.presence_query, clients, site_of_node,
                                cfg.durations.max_data_age)
    return SiteCollector(site_targets(cfg), cfg.presence_query, clients=clients)



def retarget(collector: SiteCollector | CentralCollector, cfg: Config, sites: Resolved) -> None:
    """Point the collector at the sites as they stand now (discovery changed them)."""
    if isinstance(collector, CentralCollector):
        collector.retarget([s.name for s in sites.sites], sites.problems)
    else:
        collector.retarget(site_targets(cfg, sites=sites.sites), sites.problems)
