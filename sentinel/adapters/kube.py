"""The cloud view: nodes and pods from Kubernetes through the official client, list then watch.

Objects are kept as the API's raw JSON (deserialising 100,000 `V1Node` models each resync would
cost seconds); `NodeInfo` values are derived from them and cached per resourceVersion.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence

from kubernetes import client, config

from sentinel.adapters import kubedecode
from sentinel.adapters.pins import WritePins
from sentinel.adapters.placement import Placement, matches
from sentinel.adapters.reflector import Obj, Reflector
from sentinel.config.schema import ClusterConfig, Config, SiteConfig
from sentinel.core.model import NodeInfo, SiteName
from sentinel.core.ownership import node_info, pod_binds, slim_node

__all__ = ["ClusterView", "Placement", "make_api_client"]


def _named(node: str | None) -> str | None:
    """One string per node name, however many pods and Leases name it (65 bytes a copy)."""
    return sys.intern(node) if node else None


def make_api_client(cluster: ClusterConfig) -> client.ApiClient:
    """One ApiClient for the process: a URL (emulator, kubectl proxy), a kubeconfig, or the
    in-cluster service account, in that order."""
    cfg = client.Configuration()
    if cluster.url:
        cfg.host = cluster.url
    elif cluster.kubeconfig:
        config.load_kube_config(config_file=cluster.kubeconfig, client_configuration=cfg)
    else:
        config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


class ClusterView:
    """Nodes and the nodes that host bound pods, kept current by two reflectors."""

    def __init__(self, api: client.ApiClient, cfg: Config) -> None:
        self.cfg = cfg
        self.core = client.CoreV1Api(api)
        self._lock = threading.Lock()
        self._nodes: dict[str, Obj] = {}
        self._bound: dict[str, str] = {}  # pod uid -> node
        self._hosts: Counter[str] = Counter()  # node -> its bound pods
        self._pins = WritePins()
        self._cache: dict[str, tuple[str, bool, NodeInfo]] = {}
        """Node -> (the version and bound-ness it was read at, what was read): nodes()."""
        self._placed: Placement | None = None
        """The placement `_cache` was read with."""
        self._changed: set[str] | None = None
        """Nodes whose object or bound pods changed since `_cache`; None: every node."""
        self._snapping = threading.Lock()
        self._placement = Placement([(SiteName(s.name), cfg.site_selector(s))
                                     for s in cfg.sites])
        exempt_sel = cfg.exempt.selector
        exempt_names = set(cfg.exempt.nodes)
        self._exempt = lambda name, labels: name in exempt_names or (
            bool(exempt_sel) and matches(labels, exempt_sel))
        t, page, protect = cfg.cluster.watch_timeout, cfg.cluster.list_page_size, cfg.protect
        self.nodes_reflector = Reflector(
            "nodes", self.core.list_node, self._nodes_listed, self._node_event, t,
            page_size=page, schema=kubedecode.NodeSchema, transform=self._slim)
        self.pods_reflector = Reflector(
            "pods", self.core.list_pod_for_all_namespaces, self._pods_listed, self._pod_event,
            t, page_size=page, schema=kubedecode.PodSchema, transform=lambda o: (
                (o.get("metadata") or {}).get("uid") or o["metadata"]["name"],
                _named(pod_binds(o, protect.binding_key))), keep=lambda item: bool(item[1]))
        self._renewals: dict[str, tuple[str, float]] = {}
        """Node -> (its Lease's renewTime as written, when we saw that value arrive)."""
        self.reflectors = [self.nodes_reflector, self.pods_reflector]
        if cfg.cluster.lease_witness_after > 0:
            coord = client.CoordinationV1Api(api)
            ns = cfg.cluster.node_lease_namespace
            self.reflectors.append(Reflector(
                "node-leases", lambda **kw: coord.list_namespaced_lease(ns, **kw),
                self._leases_listed, self._lease_event, t, page_size=page,
                schema=kubedecode.LeaseSchema, transform=lambda o: (
                    sys.intern(o["metadata"]["name"]),
                    str((o.get("spec") or {}).get("renewTime")))))

    def set_sites(self, sites: Sequence[SiteConfig]) -> None:
        """The sites changed (discovery): nodes are placed by these from the next read."""
        placement = Placement([(SiteName(s.name), self.cfg.site_selector(s)) for s in sites])
        with self._lock:
            self._placement = placement
            self._changed = None

    def start(self) -> ClusterView:
        for r in self.reflectors:
            r.start()
        return self

    def stop(self) -> None:
        """Every watch is told first, then waited for: at most one wait, not three."""
        for r in self.reflectors:
            r.request_stop()
        for r in self.reflectors:
            r.stop()

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def wait_synced(self, timeout: float) -> bool:
        return all(r.synced.wait(timeout) for r in self.reflectors)

    def unsynced(self) -> str:
        """The lists not done yet, and why if one failed: at 100,000 nodes the Leases' is
        the last, and "node list not synced" sent an operator to the wrong one."""
        waiting = [r for r in self.reflectors if not r.synced.is_set()]
        why = next((r.last_error for r in waiting if r.last_error), "no answer yet")
        return f"{', '.join(r.name for r in waiting)} ({why})" if waiting else "none"

    def lease_silence(self, at_least: float = 0.0) -> dict[str, float]:
        """Seconds since each node's Lease was last seen renewed, on our clock (never the
        kubelet's `renewTime`: its clock may be skewed), as the node lifecycle controller
        measures it. A Lease first seen counts as renewed then. Only the nodes silent for
        `at_least` seconds: a cycle asks for the few past the witness, not all 100,000."""
        now = time.monotonic()
        with self._lock:
            return {n: now - seen for n, (_, seen) in self._renewals.items()
                    if now - seen >= at_least}

    # -- reflector callbacks -------------------------------------------------------------
    def _slim(self, obj: Obj) -> Obj:
        """What is kept of a Node on receipt. A relist (410 Gone, a restarted API server)
        brings back nearly every node at the version held: that object is kept, not built
        again, so a relist does not hold the fleet twice (200 MB at 100,000 nodes). A version
        names one state of an object. Held objects are never changed in place, so reading one
        without the lock is safe."""
        meta = obj.get("metadata") or {}
        rv = meta.get("resourceVersion")
        held = self._nodes.get(meta.get("name", ""))
        if rv and held is not None and held["metadata"]["resourceVersion"] == rv:
            return held
        slim = slim_node(obj, self.cfg.taint_domain, autonomy_key=self.cfg.protect.autonomy_key,
                         duration_key=self.cfg.protect.autonomy_duration_key)
        slim["metadata"]["name"] = sys.intern(slim["metadata"]["name"])
        return slim

    def _nodes_listed(self, items: list[Obj]) -> None:
        with self._lock:
            self._nodes = {o["metadata"]["name"]: o for o in items}
            self._pins.clear()
            self._changed = None

    def _node_event(self, kind: str, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        with self._lock:
            if kind == "DELETED":
                self._nodes.pop(name, None)
                self._pins.deleted(name)
            elif self._pins.delivered(name, obj["metadata"].get("resourceVersion", "")):
                self._nodes[name] = obj
            self._touch(name)

    def _leases_listed(self, items: list[tuple[str, str]]) -> None:
        now = time.monotonic()
        with self._lock:
            old = self._renewals
            self._renewals = {n: (r, old[n][1] if n in old and old[n][0] == r else now)
                              for n, r in items}

    def _lease_event(self, kind: str, item: tuple[str, str]) -> None:
        name, renewed = item
        with self._lock:
            if kind == "DELETED":
                self._renewals.pop(name, None)
            elif name not in self._renewals or self._renewals[name][0] != renewed:
                self._renewals[name] = (renewed, time.monotonic())

    def _pods_listed(self, items: list[tuple[str, str | None]]) -> None:
        """Only (uid, the node it binds to) is kept of a pod: whether a node hosts a bound pod
        is all sentinel asks of 500,000 of them."""
        with self._lock:
            self._bound = {uid: node for uid, node in items if node}
            self._hosts = Counter(self._bound.values())
            self._changed = None

    def _pod_event(self, kind: str, item: tuple[str, str | None]) -> None:
        uid, node = item
        with self._lock:
            was = self._bound.pop(uid, None)
            if node and kind != "DELETED":
                self._bound[uid] = node
            else:
                node = None
            if was != node:  # a node's bound-ness changes when its count leaves or reaches 0
                if was is not None:
                    self._hosts[was] -= 1
                    if not self._hosts[was]:
                        del self._hosts[was]
                        self._touch(was)
                if node is not None:
                    self._hosts[node] += 1
                    if self._hosts[node] == 1:
                        self._touch(node)

    def _touch(self, name: str) -> None:
        """The next snapshot computes this node again (the caller holds the lock)."""
        if self._changed is not None:
            self._changed.add(name)

    def written(self, obj: Obj) -> None:
        """The actuator's fresh copy of a node it patched: use it until the watch catches up,
        so the next cycle does not plan the same action again from a lagging cache
        (WritePins)."""
        name = obj["metadata"]["name"]
        with self._lock:
            if self._pins.written(name, obj["metadata"]["resourceVersion"]):
                self._nodes[name] = self._slim(obj)
                self._touch(name)

    def known(self, name: str) -> bool:
        with self._lock:
            return name in self._nodes

    # -- snapshot ------------------------------------------------------------------------
    def nodes(self) -> dict[str, NodeInfo]:
        """Every node as decide reads it. Only the nodes whose object or bound pods changed
        since the last call are looked at again (at 100,000 nodes looking at all took a tenth
        of the service's CPU, twice a cycle), and of those, after a relist, only the ones whose
        version or bound-ness differs are read again."""
        with self._snapping:  # one at a time: each takes the changes since the last
            with self._lock:
                changed, self._changed = self._changed, set()
                placement = self._placement
                names = list(self._nodes) if changed is None else list(changed)
                todo = [(n, self._nodes.get(n), n in self._hosts) for n in names]
            if changed is None:  # every node: reuse what was read unless the sites moved
                old, cache = self._cache if self._placed is placement else {}, {}
            else:  # the changed ones, into the last answer (read with this same placement)
                old = cache = self._cache
            for name, o, is_bound in todo:
                if o is None:
                    cache.pop(name, None)
                    continue
                rv = o["metadata"].get("resourceVersion", "")
                hit = old.get(name)
                if hit is None or hit[0] != rv or hit[1] != is_bound:
                    labels = o["metadata"].get("labels") or {}
                    hit = (rv, is_bound, node_info(
                        o, placement(labels), self.cfg.taint_domain,
                        autonomy_key=self.cfg.protect.autonomy_key, bound=is_bound,
                        exempt=self._exempt,
                        duration_key=self.cfg.protect.autonomy_duration_key))
                cache[name] = hit  # the same tuple when unchanged: no new objects
            self._cache, self._placed = cache, placement
            return {name: hit[2] for name, hit in cache.items()}
