"""Collect the site and link views: every rule's PromQL on every site's Prometheus, at once.

Each site has its own deadline, so a slow or dark site never stalls the others: it comes back
`reachable=False` with the reason, and detection treats it as unknown, never as down.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import httpx

from sentinel.adapters.established import established_query
from sentinel.adapters.jsonarray import loads_split
from sentinel.adapters.promdecode import NodeDecoder, NodeSamples, decode_vector
from sentinel.adapters.promhttp import PromClients
from sentinel.config.schema import Config, SiteConfig
from sentinel.config.sources import HttpSettings
from sentinel.core.errors import AdapterError
from sentinel.core.model import SiteName, SiteView
from sentinel.core.ruleset import Rule

__all__ = ["PromError", "Samples", "SiteCollector", "SiteTarget", "build_view", "describe",
           "node_names", "query_instant", "query_nodes", "serving", "site_targets",
           "unresolved_views"]

T = TypeVar("T")

Samples = list[tuple[Mapping[str, str], float]]

AGE_QUERY = "time() - max(timestamp(up))"
#: The server's own clock, against which its start time is read (no skew with ours).
NOW_QUERY = "time()"
#: Bytes of an answer above which it is parsed in a thread (a site's answers are far smaller).
LARGE_ANSWER = 1 << 16
#: Characters of a query above which it is sent in a POST body, as the HTTP API allows: nginx
#: refuses a request line over 8 KB by default, some gateways over 2 KB.
LONG_QUERY = 2000
_FRACTION = re.compile(r"(\.\d{6})\d+")


class PromError(AdapterError):
    """A query failed: the site did not answer, or answered with an error."""


def describe(e: httpx.HTTPError) -> str:
    """An HTTP failure in words. httpx leaves some empty (a ReadError when the peer closes
    the connection without an answer): never show an operator "ReadError: " and nothing."""
    text = str(e).strip()
    if text:
        return f"{type(e).__name__}: {text}"
    if isinstance(e, httpx.ReadError | httpx.RemoteProtocolError):
        return f"{type(e).__name__}: the connection closed without an answer"
    return f"{type(e).__name__}: no answer"


@dataclass(frozen=True, slots=True)
class SiteTarget:
    name: str
    url: str
    """The base URL queries go to, with the settings' `path_prefix` already on it."""
    timeout: float
    http: HttpSettings = field(default_factory=HttpSettings)


def _parse_vector(body: object, what: str) -> list[tuple[Mapping[str, str], float]]:
    if not isinstance(body, dict) or body.get("status") != "success":
        err = body.get("error") if isinstance(body, dict) else None
        raise PromError(f"{what}: {err or 'unexpected answer'}")
    data = body.get("data") or {}
    if data.get("resultType") == "scalar":
        return [({}, float(data["result"][1]))]
    if data.get("resultType") != "vector":
        raise PromError(f"{what}: expected an instant vector, got {data.get('resultType')}")
    out = []
    for s in data.get("result") or []:
        try:
            out.append((s.get("metric") or {}, float(s["value"][1])))
        except (KeyError, ValueError, TypeError, IndexError):
            raise PromError(f"{what}: malformed sample {s!r}") from None
    return out


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer's status and body, apart from httpx's Response: a Response and its stream
    refer to each other, so only the collector frees one, and after each cycle whatever is
    alive is frozen (http/heap.py) for up to FULL_EVERY. At 100,000 nodes a cycle's presence
    answer is 6.5 MB: those kept for the collector were 200 MB of bench/fleet.py's RSS. A body
    read as a stream is our own bytes, freed as soon as it is parsed."""

    status: int
    body: bytes


async def _fetch(client: httpx.AsyncClient, site: SiteTarget, expr: str,
                 timeout: float) -> Answer:
    url = f"{site.url}/api/v1/query"
    try:  # a long query in the body: a gateway refuses a URL this long (414)
        async with (client.stream("POST", url, data={"query": expr}, timeout=timeout)
                    if len(expr) > LONG_QUERY else
                    client.stream("GET", url, params={"query": expr}, timeout=timeout)) as r:
            refused = r.status_code >= 500 or r.status_code in (401, 403, 404, 405, 407, 414)
            answer = Answer(r.status_code, b"" if refused else
                            b"".join([c async for c in r.aiter_bytes()]))
    except httpx.TimeoutException:
        raise PromError(f"timed out after {timeout:g}s") from None
    except httpx.HTTPError as e:
        raise PromError(describe(e)) from None
    except AdapterError as e:  # a secret file that cannot be read
        raise PromError(str(e)) from None
    if refused:
        raise PromError(f"HTTP {answer.status} from {site.url}")
    return answer


def _samples(r: Answer, expr: str) -> Samples:
    fast = decode_vector(r.body)  # the common case, straight to the pairs
    if fast is not None:
        return fast
    try:
        body, result = loads_split(r.body, ("data", "result"))
    except ValueError:
        raise PromError(f"HTTP {r.status}, not JSON") from None
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body["data"]["result"] = result
    return _parse_vector(body, expr)


async def _parsed(r: Answer, parse: Callable[[], T]) -> T:
    # A fleet-wide answer (every node's presence, from a central store) is megabytes: parsed
    # off the event loop, which goes on serving the API and the webhook meanwhile.
    return await asyncio.to_thread(parse) if len(r.body) > LARGE_ANSWER else parse()


async def query_instant(client: httpx.AsyncClient, site: SiteTarget, expr: str,
                        timeout: float) -> Samples:
    """One instant query; every failure a PromError in words."""
    r = await _fetch(client, site, expr, timeout)
    return await _parsed(r, lambda: _samples(r, expr))


async def query_nodes(client: httpx.AsyncClient, site: SiteTarget, expr: str, timeout: float,
                      decoder: NodeDecoder) -> NodeSamples:
    """One instant query, its series as (node, site label, value) (promdecode.NodeDecoder);
    failures as `query_instant`'s."""
    r = await _fetch(client, site, expr, timeout)

    def parse() -> NodeSamples:
        fast = decoder.decode(r.body)
        return fast if fast is not None else decoder.pick(_samples(r, expr))

    return await _parsed(r, parse)


class SiteCollector:
    """Owns its pooled HTTP clients (one per distinct http setting) for the life of the
    process, not one per cycle."""

    def __init__(self, sites: Sequence[SiteTarget], presence_query: str,
                 client: httpx.AsyncClient | None = None, max_concurrency: int = 64,
                 clients: PromClients | None = None) -> None:
        self.sites = list(sites)
        self.unresolved: dict[str, str] = {}
        """Site -> why it has no Prometheus to ask: unreachable by definition, never acted
        on (a discovered pool without one)."""
        self.presence_query = presence_query
        self._client = client
        self._clients = clients or PromClients(limits=httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=64))
        self._sem = asyncio.Semaphore(max_concurrency)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        await self._clients.aclose()

    async def _query(self, site: SiteTarget, expr: str, timeout: float) -> Samples:
        async with self._sem:
            return await query_instant(self._client_for(site), site, expr, timeout)

    def _client_for(self, site: SiteTarget) -> httpx.AsyncClient:
        return self._client if self._client is not None else \
            self._clients.async_client(site.http)

    async def _started(self, site: SiteTarget, timeout: float) -> float | None:
        """The Prometheus process' start time (runtime info), or None where the server does
        not say: Thanos, Mimir and VictoriaMetrics answer 404 or leave it out. A failure here
        is never a reason to call the site unreachable."""
        async with self._sem:
            try:
                r = await self._client_for(site).get(f"{site.url}/api/v1/status/runtimeinfo",
                                                     timeout=timeout)
                raw = r.json().get("data", {}).get("startTime") if r.status_code == 200 \
                    else None
            # RuntimeError: the client closed under it, when sentinel stops mid-cycle.
            except (httpx.HTTPError, ValueError, AttributeError, AdapterError, RuntimeError):
                return None
        if not isinstance(raw, str) or raw.startswith("0001-"):
            return None
        try:
            return datetime.fromisoformat(_FRACTION.sub(r"\1", raw.replace("Z", "+00:00")))\
                .timestamp()
        except ValueError:
            return None

    async def collect_site(self, site: SiteTarget, rules: Sequence[Rule],
                           features: Sequence[tuple[str, str]] = ()) -> SiteView:
        name = SiteName(site.name)
        deadline = time.monotonic() + site.timeout

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        try:
            # Presence first: if the site does not answer it, it is unreachable as a whole.
            presence = await asyncio.wait_for(
                self._query(site, self.presence_query, site.timeout), site.timeout)
        except (PromError, TimeoutError) as e:
            return SiteView(name, reachable=False, error=str(e) or "timed out")
        longest = max((r.for_seconds for r in rules), default=0.0)
        exprs = [AGE_QUERY, NOW_QUERY, established_query(longest),
                 *(r.expr for r in rules), *(e for _, e in features)]
        start_task = asyncio.ensure_future(asyncio.wait_for(self._started(site, left()), left()))
        try:
            results = await asyncio.gather(
                *(asyncio.wait_for(self._query(site, e, left()), left()) for e in exprs),
                return_exceptions=True)
            try:
                started = await start_task
            except TimeoutError:
                started = None
        finally:  # a cycle cut short (shutdown) must not leave it running on a closed client
            if not start_task.done():
                start_task.cancel()
            elif not start_task.cancelled():
                # Its failure is taken here, so that asyncio never logs "Task exception was
                # never retrieved" with a traceback when the task is collected (Ctrl-C while
                # a slow site's probe had already timed out).
                start_task.exception()
        age_res, now_res = results[0], results[1]
        age = None
        if isinstance(age_res, list) and age_res:
            age = max(0.0, age_res[0][1])
        uptime = None
        if started is not None and isinstance(now_res, list) and now_res:
            uptime = max(0.0, now_res[0][1] - started)
        est = results[2]
        return build_view(name, age, uptime,
                          serving((m["node"], v) for m, v in presence if "node" in m),
                          est if isinstance(est, BaseException) else node_names(est), rules,
                          results[3:3 + len(rules)], features, results[3 + len(rules):])

    async def collect(self, rules: Sequence[Rule],
                      features: Sequence[tuple[str, str]] = ()) -> dict[str, SiteView]:
        """Every site at once; `features` are (name, PromQL) of the anomaly model."""
        views = await asyncio.gather(*(self.collect_site(s, rules, features)
                                       for s in self.sites))
        return {**unresolved_views(self.unresolved), **{v.site: v for v in views}}

    def retarget(self, sites: Sequence[SiteTarget], unresolved: Mapping[str, str]) -> None:
        """The sites changed (discovery): ask these from the next cycle on."""
        self.sites, self.unresolved = list(sites), dict(unresolved)


def unresolved_views(unresolved: Mapping[str, str]) -> dict[str, SiteView]:
    return {s: SiteView(SiteName(s), reachable=False, error=why, unresolved=True)
            for s, why in unresolved.items()}


def node_names(res: Samples) -> frozenset[str]:
    """The nodes an answer names (its series' `node` labels)."""
    return frozenset(m["node"] for m, _ in res if "node" in m)


def serving(presence: Iterable[tuple[str, float]]) -> frozenset[str]:
    """Nodes seen serving at the site, from (node, presence value): at least one of the node's
    targets scraped fine. A node whose targets are all down is not "serving"; without a node
    rule matching it, it is unknown — never taken for healthy."""
    return frozenset(n for n, v in presence if v > 0)


def build_view(name: SiteName, age: float | None, uptime: float | None,
               present: frozenset[str],
               established_res: frozenset[str] | BaseException, rules: Sequence[Rule],
               rule_res: Sequence[Samples | BaseException],
               features: Sequence[tuple[str, str]],
               feature_res: Sequence[Samples | BaseException]) -> SiteView:
    """One site's view from its answers, whichever store gave them (per-site or central);
    `present`: the nodes seen serving (`serving`)."""
    established = None if isinstance(established_res, BaseException) else established_res
    firing: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    for rule, res in zip(rules, rule_res, strict=True):
        if isinstance(res, BaseException):
            errors[rule.name] = str(res) or type(res).__name__
            continue
        hits = {m["node"]: v for m, v in res if "node" in m}
        if res and not hits:
            # The rule is misconfigured for this site: its state is unknown, not clear.
            errors[rule.name] = f"{len(res)} series, none with a `node` label"
        if hits:
            firing[rule.name] = hits
    values: dict[str, dict[str, float]] = {}
    feature_errors: dict[str, str] = {}
    for (fname, _), res in zip(features, feature_res, strict=True):
        if isinstance(res, BaseException):
            feature_errors[fname] = str(res) or type(res).__name__
            continue
        values[fname] = {m["node"]: v for m, v in res if "node" in m}
        if res and not values[fname]:
            feature_errors[fname] = f"{len(res)} series, none with a `node` label"
    return SiteView(name, reachable=True, data_age=age, present=present, firing=firing,
                    rule_errors=errors, features=values, feature_errors=feature_errors,
                    uptime=uptime, established=established)


def site_targets(cfg: Config, timeout: float | None = None,
                 sites: Sequence[SiteConfig] | None = None) -> list[SiteTarget]:
    """Where each site's metrics are asked, and how: its own Prometheus (per-site mode) or the
    central store (central mode, for the range queries that filter by site themselves).
    `sites` default to the configured ones; a discovered site with no Prometheus has none."""
    ms = cfg.metrics_source
    out = []
    for s in cfg.sites if sites is None else sites:
        if ms.mode == "central":
            assert ms.url is not None  # the config validator saw to it
            url, http = ms.url, ms.http
        elif s.prometheus is None:
            continue  # reported by the site catalog, never asked
        else:
            url, http = s.prometheus, cfg.site_http(s)
        out.append(SiteTarget(s.name, url.rstrip("/") + http.path_prefix,
                              timeout or s.timeout or cfg.query_timeout,
                              http.resolved(lambda f: str(cfg.resolve(f)))))
    return out
