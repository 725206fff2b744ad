"""Application pods as a site's Prometheus scrapes them: every pod of a workload on the site's
nodes serves request and error counters and a latency histogram (as an instrumented app does),
and kube-state-metrics' restart counter and pod labels. Each series carries the pod's
`namespace`, `pod`, `node`, `app` and `version` labels, as Kubernetes service discovery with a
`labelmap` of the pod labels gives them.

How a version behaves is set per version label value (`Fleet.set_version`): healthy by
default; `bad-errors`, `bad-latency` and `crashloop` are degraded; `noisy` is healthy (the same
error probability and latency per request) with bursty traffic and jittery errors, so its
samples scatter far more — the version a guard must never roll back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BUCKETS", "VERSION_KINDS", "AppPod", "AppPods", "VersionBehaviour"]

BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RPS = 20.0


@dataclass(frozen=True, slots=True)
class VersionBehaviour:
    error_ratio: float = 0.01
    """Probability that one request fails."""
    latency: float = 0.05
    """Median request latency, seconds (log-normal per request, sigma 0.4)."""
    traffic_spread: float = 0.2
    """Sigma of a mean-preserving log-normal factor on the request rate, per scrape."""
    ratio_spread: float = 0.2
    """Sigma of a mean-preserving log-normal factor on the error probability, per scrape."""
    pod_spread: float = 0.15
    """The same on the error probability per pod, fixed for the pod's life."""
    restarts_per_minute: float = 0.0


def _factor(rng: np.random.Generator, sigma: float) -> float:
    """Log-normal with mean 1: noise that does not change the average."""
    return float(rng.lognormal(-sigma * sigma / 2, sigma)) if sigma else 1.0


VERSION_KINDS: dict[str, VersionBehaviour] = {
    "healthy": VersionBehaviour(),
    "bad-errors": VersionBehaviour(error_ratio=0.15),
    "bad-latency": VersionBehaviour(latency=0.3),
    "crashloop": VersionBehaviour(restarts_per_minute=30.0),
    # bursty traffic and jittery errors, the same average error rate and latency per request
    "noisy": VersionBehaviour(traffic_spread=1.2, ratio_spread=0.8, pod_spread=0.4),
}


@dataclass(frozen=True, slots=True)
class AppPod:
    namespace: str
    name: str
    node: str
    app: str
    version: str


class _Counters:
    def __init__(self, rng: np.random.Generator, pod_spread: float) -> None:
        self.rng = rng
        self.pod_factor = _factor(rng, pod_spread)
        self.last = time.monotonic()
        self.requests = 0.0
        self.errors = 0.0
        self.buckets = np.zeros(len(BUCKETS) + 1)
        self.seconds = 0.0
        self.restarts = 0.0

    def advance(self, b: VersionBehaviour) -> None:
        now = time.monotonic()
        dt, self.last = max(0.0, now - self.last), now
        n = int(self.rng.poisson(RPS * dt * _factor(self.rng, b.traffic_spread)))
        ratio = min(1.0, b.error_ratio * self.pod_factor * _factor(self.rng, b.ratio_spread))
        self.requests += n
        self.errors += int(self.rng.binomial(n, ratio)) if n else 0
        if n:
            lat = self.rng.lognormal(math.log(b.latency), 0.4, n)
            self.buckets += np.bincount(np.searchsorted(BUCKETS, lat), minlength=len(BUCKETS) + 1)
            self.seconds += float(lat.sum())
        self.restarts += b.restarts_per_minute * dt / 60.0


class AppPods:
    """Counters per pod (by name), advanced at each scrape from the pod's version behaviour."""

    def __init__(self, pods: Callable[[], list[AppPod]],
                 behaviour: Callable[[str], VersionBehaviour], seed: int = 0) -> None:
        self.pods, self.behaviour = pods, behaviour
        self._state: dict[str, _Counters] = {}
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    def render(self) -> str:
        pods = self.pods()
        out: list[str] = []
        with self._lock:
            self._state = {p.name: self._state[p.name] for p in pods if p.name in self._state} \
                | {p.name: _Counters(np.random.default_rng(self._rng.integers(1 << 32)),
                                     self.behaviour(p.version).pod_spread)
                   for p in pods if p.name not in self._state}
            for p in pods:
                c = self._state[p.name]
                c.advance(self.behaviour(p.version))
                lab = (f'namespace="{p.namespace}",pod="{p.name}",node="{p.node}",'
                       f'app="{p.app}",version="{p.version}"')
                out.append(f'app_requests_total{{{lab},code="200"}} {c.requests - c.errors:.0f}')
                out.append(f'app_requests_total{{{lab},code="500"}} {c.errors:.0f}')
                cum = np.cumsum(c.buckets)
                for le, v in zip((*BUCKETS, math.inf), cum, strict=True):
                    le_s = "+Inf" if math.isinf(le) else f"{le:g}"
                    out.append(f'app_request_duration_seconds_bucket{{{lab},le="{le_s}"}} {v:.0f}')
                out.append(f"app_request_duration_seconds_sum{{{lab}}} {c.seconds:.4f}")
                out.append(f"app_request_duration_seconds_count{{{lab}}} {c.requests:.0f}")
                out.append(f'kube_pod_container_status_restarts_total{{namespace="{p.namespace}",'
                           f'pod="{p.name}",node="{p.node}",container="app"}} '
                           f"{math.floor(c.restarts)}")
                out.append(f'kube_pod_labels{{namespace="{p.namespace}",pod="{p.name}",'
                           f'label_app="{p.app}",label_version="{p.version}"}} 1')
        return "\n".join(out) + "\n"
