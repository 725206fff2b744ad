"""Node heartbeats and the node lifecycle controller, as a real cluster has them.

A kubelet renews its Lease in `kube-node-lease` every `renew` seconds (10 s: a quarter of the
40 s `nodeLeaseDurationSeconds`). The node lifecycle controller in kube-controller-manager looks
every `monitor_period` (5 s, `--node-monitor-period`) and marks a node Unknown ("Kubelet
stopped posting node status."; here the Ready condition, which is all sentinel reads) once its
Lease is older than `grace`
(`--node-monitor-grace-period`: 50 s since Kubernetes 1.32, 40 s before). So a crashed node
stays Ready for up to grace + period after it died, and sentinel's cloud witness sees it only
then; a kubelet that reaches the API server again posts Ready at once.

A node whose kubelet cannot reach the API server — crashed, its own link lost, or its site's
uplink cut — renews nothing; `reaches(node)` says which can.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sentinel.sim.nodes import set_ready
from sentinel.sim.store import RESOURCES, ApiError, Store

__all__ = ["NodeLifecycle", "NodeTiming"]

NODES = RESOURCES[("", "v1", "nodes")]
LEASES = RESOURCES[("coordination.k8s.io", "v1", "leases")]
LEASE_NS = "kube-node-lease"


@dataclass(frozen=True)
class NodeTiming:
    renew: float = 10.0
    """The kubelet's Lease renew interval."""
    grace: float = 50.0
    """kube-controller-manager's `--node-monitor-grace-period` (Kubernetes 1.32 and later)."""
    monitor_period: float = 5.0
    """kube-controller-manager's `--node-monitor-period`."""


def _micro(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class NodeLifecycle:
    """The kubelets' Lease renewals and the controller's verdict, in one thread."""

    def __init__(self, store: Store, nodes: Callable[[], list[str]],
                 reaches: Callable[[str], bool], timing: NodeTiming = NodeTiming()) -> None:
        self.store, self.nodes, self.reaches, self.timing = store, nodes, reaches, timing
        self._renewed: dict[str, float] = {}
        self.renew_every: dict[str, float] = {}
        """A slow kubelet: its own renew interval, instead of `timing.renew`."""
        self._unknown: set[str] = set()
        """Nodes this controller marked Unknown: their kubelet posts Ready when it renews."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="node-lifecycle", daemon=True)

    def start(self) -> NodeLifecycle:
        now = time.time()
        for n in self.nodes():
            self._renew(n, now)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def renewed(self, node: str) -> float | None:
        """When the node's kubelet last renewed its Lease (epoch seconds)."""
        return self._renewed.get(node)

    def post_ready(self, node: str) -> None:
        """What a kubelet does once it reaches the API server again: renew, and post Ready."""
        self._renew(node, time.time())
        self._unknown.discard(node)
        self._set(node, "True")

    def _run(self) -> None:
        next_monitor = time.monotonic() + self.timing.monitor_period
        while not self._stop.wait(min(self.timing.renew, self.timing.monitor_period) / 2):
            t = self.timing  # read each turn: a test may lengthen the grace period
            now = time.time()
            due = [n for n in self.nodes() if self.reaches(n) and now - self._renewed.get(
                n, 0.0) >= self.renew_every.get(n, t.renew)]
            # One write batch under the store's lock: its watchers wake once for the batch,
            # not once per Lease (a thousand kubelets renew several times a second here).
            with self.store.lock:
                for n in due:
                    self._renew(n, now)
                    if n in self._unknown:  # the kubelet's next status update
                        self._unknown.discard(n)
                        self._set(n, "True")
            if time.monotonic() >= next_monitor:
                next_monitor += t.monitor_period
                for n in self.nodes():
                    if now - self._renewed.get(n, 0.0) > t.grace and n not in self._unknown:
                        self._unknown.add(n)
                        self._set(n, "Unknown")

    def _renew(self, node: str, now: float) -> None:
        self._renewed[node] = now

        def fn(o: dict[str, Any]) -> None:
            o["spec"]["renewTime"] = _micro(now)
        try:
            self.store.touch(LEASES, LEASE_NS, node, fn)
        except ApiError as e:
            if e.code != 404:
                raise
            self.store.create(LEASES, LEASE_NS, {
                "metadata": {"name": node, "namespace": LEASE_NS},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                         "renewTime": _micro(now)}})

    def _set(self, node: str, status: str) -> None:
        def ready(o: dict[str, Any]) -> str | None:
            for c in (o.get("status") or {}).get("conditions") or []:
                if c.get("type") == "Ready":
                    return str(c.get("status"))
            return None
        try:
            with self.store.lock:
                if ready(self.store.get(NODES, "", node)) == status:
                    return  # no write when nothing changes, as the controller does
                self.store.mutate(NODES, "", node, lambda o: set_ready(o, status),
                                  subresource="status")
        except ApiError:
            pass  # the node was deleted meanwhile
