"""The anomaly model's training data: every feature's history as range queries on every
site's Prometheus, assembled into one (steps, nodes, features) array.

A site that does not answer is left out and named: its nodes get no baseline of their own
(the peer comparison still covers them) until a later training reaches it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from numpy.typing import NDArray

from sentinel.adapters.prom import PromError, SiteTarget, describe
from sentinel.adapters.promhttp import PromClients
from sentinel.core.errors import AdapterError

__all__ = ["History", "fetch_history", "query_range"]

#: Prometheus refuses range queries of more points than this per series.
MAX_POINTS = 11_000


@dataclass(frozen=True)
class History:
    start: float
    step: float
    x: NDArray[np.float64]
    nodes: tuple[str, ...]
    sites: tuple[str, ...]
    """Each node's site, in the order of `nodes`."""
    errors: Mapping[str, str] = field(default_factory=dict)
    """Site -> why it is missing."""


def query_range(client: httpx.Client, url: str, expr: str, start: float, end: float, step: float,
           timeout: float) -> list[dict[str, object]]:
    status = 0  # no answer yet
    try:  # streamed into our own bytes, freed once parsed (adapters/prom.Answer says why)
        with client.stream("GET", f"{url}/api/v1/query_range", timeout=timeout, params={
                "query": expr, "start": start, "end": end, "step": step}) as r:
            status, raw = r.status_code, b"".join(r.iter_bytes())
        body = json.loads(raw)
    except httpx.HTTPError as e:
        raise PromError(describe(e)) from None
    except AdapterError as e:  # the site's credentials (a secret file) cannot be read
        raise PromError(str(e)) from None
    except ValueError:
        raise PromError(f"HTTP {status}, not JSON") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        err = body.get("error") if isinstance(body, dict) else None
        raise PromError(f"HTTP {status}: {err or 'unexpected answer'}")
    result = body["data"]["result"]
    assert isinstance(result, list)
    return result


def fetch_history(sites: Sequence[SiteTarget], queries: Mapping[str, str], start: float,
                  end: float, step: float, timeout: float = 30.0,
                  client: httpx.Client | None = None,
                  assign: Callable[[Mapping[str, str]], str | None] | None = None) -> History:
    """`assign`, for a central store (one target for every site): a series' site from its
    labels (adapters.central.series_site); a series it places nowhere is left out."""
    steps = int((end - start) // step) + 1
    if steps > MAX_POINTS:
        raise ValueError(f"{steps} points per series: Prometheus answers at most {MAX_POINTS};"
                         " shorten anomaly.training_window or lengthen anomaly.training_step")
    names = list(queries)
    per_site: dict[str, dict[str, NDArray[np.float64]]] = {}
    errors: dict[str, str] = {}
    clients = PromClients()
    try:
        for site in sites:
            c = client or clients.sync_client(site.http)
            got: dict[str, dict[str, NDArray[np.float64]]] = {}
            try:
                for f, name in enumerate(names):
                    for series in query_range(c, site.url, queries[name], start, end,
                                              step, timeout):
                        metric = series.get("metric") or {}
                        assert isinstance(metric, dict)
                        node = metric.get("node")
                        where = site.name if assign is None else assign(metric)
                        if node is None or where is None:
                            continue
                        col = got.setdefault(where, {}).setdefault(
                            node, np.full((steps, len(names)), np.nan))
                        values = series.get("values") or []
                        assert isinstance(values, list)
                        for ts, v in values:
                            k = round((float(ts) - start) / step)
                            if 0 <= k < steps:
                                col[k, f] = float(v)
            except PromError as e:
                errors[site.name] = f"its Prometheus at {site.url}: feature {name!r}: {e}"
                continue
            for where, cols in got.items():
                per_site.setdefault(where, {}).update(cols)
    finally:
        clients.close()
    nodes = [(n, s) for s, cols in sorted(per_site.items()) for n in sorted(cols)]
    x = np.full((steps, len(nodes), len(names)), np.nan)
    for i, (n, s) in enumerate(nodes):
        x[:, i, :] = per_site[s][n]
    return History(start, step, x, tuple(n for n, _ in nodes), tuple(s for _, s in nodes),
                   errors)
