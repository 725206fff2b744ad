"""A simulated cloud-edge fleet: K sites x N nodes, one real Prometheus per site behind an
uplink, the Kubernetes API emulator, and a fault injector (Python API and HTTP control).

Faults, as DESIGN.md's witnesses see them:

| fault          | node's exporters at the site | cloud Ready | site Prometheus from sentinel |
|----------------|------------------------------|-------------|-------------------------------|
| crash          | all down                     | Unknown*    | reachable                     |
| component JOB  | that job down                | True        | reachable                     |
| link-loss      | up                           | Unknown*    | reachable                     |
| partition SITE | up                           | Unknown*    | unreachable                   |
| flap           | crash and heal in turn       |             |                               |
| gray KIND      | up, one signal going bad     | True        | reachable                     |

*once the node lifecycle controller's grace period has passed (lifecycle.py).

Grey faults (signals.GRAY_FAULTS): disk-slow, memory-leak, nic-errors, cpu-hog, restart-loop.

Applications (`deploy_app`, `upgrade`): one Deployment (or DaemonSet) per site, as KubeEdge's
EdgeApplication generates them per node group, run by the emulated workload controllers
(workloads.py); their pods' request metrics are scraped by the site's Prometheus (apps.py).
`version VERSION KIND` makes every pod of that version behave as KIND (apps.VERSION_KINDS).
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from http.server import ThreadingHTTPServer
from importlib import resources
from typing import Any

import yaml

from sentinel.sim.apps import AppPods, VersionBehaviour
from sentinel.sim.control import serve_control
from sentinel.sim.edgeapps import EdgeAppController, install_edgeapp_crd
from sentinel.sim.exporters import JOBS, SiteExporters
from sentinel.sim.faults import FAULTS, inject
from sentinel.sim.fleetapps import APP_LABEL, GUARD_LABEL, PODS, ZONE_LABEL, FleetApps
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.lifecycle import NodeLifecycle, NodeTiming
from sentinel.sim.nodes import kubelet_node, kubelet_pod, set_ready
from sentinel.sim.objects import CRDS
from sentinel.sim.process import wait_until
from sentinel.sim.prometheus import PrometheusProcess, all_up
from sentinel.sim.siteobjects import KINDS, FleetSites, install_site_crd
from sentinel.sim.store import RESOURCES, Store
from sentinel.sim.uplink import Uplink
from sentinel.sim.workloads import WorkloadControllers

__all__ = ["APP_LABEL", "FAULTS", "GUARD_LABEL", "ZONE_LABEL", "Fleet", "FleetSpec", "install_crds"]

#: The CRD of deploy/crds/, packaged (a test keeps the two equal).
OVERRIDES_CRD = "sentineloverrides.crd.yaml"
NODES = RESOURCES[("", "v1", "nodes")]


@dataclass(frozen=True)
class FleetSpec:
    sites: int = 3
    nodes_per_site: int = 5
    scrape_interval: float = 5.0
    pods_per_node: int = 2
    rollout_step: float = 2.0
    """Seconds between two steps (one pod, or one node) of a simulated rolling update."""
    timing: NodeTiming = field(default_factory=NodeTiming)
    """Lease renewals and the node lifecycle controller's grace period (a real cluster's by
    default: a crashed node goes Unknown 50-55 s after it died)."""
    discover: str | None = None
    """`nodepools` (OpenYurt) or `nodegroups` (KubeEdge): each site is also the platform's own
    object, its nodes labelled as the platform's controller labels them, its Prometheus in an
    annotation under `domain` (sim/siteobjects.py). None: the zone label only."""
    domain: str = "sentinel.edge.io"

    def site_names(self) -> list[str]:
        return [f"site-{chr(ord('a') + i)}" if i < 26 else f"site-{i}" for i in range(self.sites)]

    def node_names(self, site: str) -> list[str]:
        short = site.removeprefix("site-")
        return [f"edge-{short}-{j:02d}" for j in range(1, self.nodes_per_site + 1)]


def install_crds(store: Store) -> None:
    """As `kubectl apply -k deploy/` installs them: sentinel keeps its overrides there."""
    store.create(CRDS, "", yaml.safe_load(
        resources.files("sentinel.sim").joinpath(OVERRIDES_CRD).read_text()))


class Fleet(FleetApps, FleetSites):
    spec: FleetSpec

    def __init__(self, spec: FleetSpec = FleetSpec()) -> None:
        self.spec = spec
        self.store = Store()
        self.api = KubeApiServer(self.store)
        self.exporters: dict[str, SiteExporters] = {}
        self.proms: dict[str, PrometheusProcess] = {}
        self.uplinks: dict[str, Uplink] = {}
        self.site_of: dict[str, str] = {}
        self._flappers: dict[str, threading.Event] = {}
        self._control: ThreadingHTTPServer | None = None
        self.controllers = WorkloadControllers(self.store, step=spec.rollout_step)
        self._silent: set[str] = set()
        """Nodes whose kubelet cannot reach the API server (crashed, or their link lost)."""
        self._cut: set[str] = set()
        """Sites whose uplink is cut: none of their kubelets reaches the API server."""
        self.lifecycle = NodeLifecycle(self.store, self.nodes, self._reaches, spec.timing)
        self.versions: dict[str, VersionBehaviour] = {}
        if spec.discover is not None:
            self.group_label = KINDS[spec.discover].label
        self.edgeapps: EdgeAppController | None = None
        """KubeEdge's EdgeApplication controller, played when the sites are NodeGroups."""

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> Fleet:
        try:
            self.api.start()
            install_crds(self.store)
            # A kubelet-sized fleet is a million small dicts and lists that live as long as the
            # fleet: left to the cyclic collector, every full collection walks them all with
            # the GIL held (and collections come ever more often while they are made), and
            # the exporters in this process miss their scrapes (26 x 40 did not start).
            # Frozen, the collector skips them; being acyclic, a replaced object is still
            # freed by its reference count.
            gc.disable()
            try:
                for site in self.spec.site_names():
                    for n in self.spec.node_names(site):
                        self.site_of[n] = site
                        self._create_node(site, n)
            finally:
                gc.enable()
            gc.collect()
            gc.freeze()
            if self.spec.discover is not None:
                install_site_crd(self.store, KINDS[self.spec.discover])
            if self.spec.discover == "nodegroups":
                install_edgeapp_crd(self.store)
                self.edgeapps = EdgeAppController(self.store)
                self.controllers.before.append(self.edgeapps.reconcile)
            self.lifecycle.start()
            for i, site in enumerate(self.spec.site_names()):
                nodes = self.spec.node_names(site)
                exp = SiteExporters(site, nodes, seed=i)
                exp.apps = AppPods(partial(self.app_pods, site), self.behaviour, seed=i)
                self.exporters[site] = exp.start()
                targets = [(n, job, exp.address) for n in nodes for job in JOBS]
                targets.append(("", "apps", exp.address))
                prom = PrometheusProcess(site, targets, self.spec.scrape_interval).start()
                self.proms[site] = prom
                self.uplinks[site] = Uplink(prom.port).start()
            for prom in self.proms.values():
                prom.wait_ready()
            if self.spec.discover is not None:
                for site in self.spec.site_names():
                    self.add_site_object(site, self.uplinks[site].url)
            self.controllers.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for ev in self._flappers.values():
            ev.set()
        self.lifecycle.stop()
        self.controllers.stop()
        if self._control is not None:
            self._control.shutdown()
            self._control.server_close()
        for prom in self.proms.values():
            prom.signal_stop()
        for up in self.uplinks.values():
            up.stop()
        for prom in self.proms.values():
            prom.stop()
        for exp in self.exporters.values():
            exp.stop()
        self.api.stop()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def sites(self) -> list[str]:
        return self.spec.site_names()

    def nodes(self, site: str | None = None) -> list[str]:
        return [n for n, s in self.site_of.items() if site is None or s == site]

    def prometheus_urls(self) -> dict[str, str]:
        """What sentinel is configured with: each site's Prometheus through its uplink."""
        return {s: u.url for s, u in self.uplinks.items()}

    def _create_node(self, site: str, name: str) -> None:
        labels = {ZONE_LABEL: site, "node-role.kubernetes.io/edge": ""}
        if self.spec.discover is not None:
            labels[KINDS[self.spec.discover].label] = site
        self.store.create(NODES, "", kubelet_node(name, labels))
        for k in range(self.spec.pods_per_node):
            self.store.create(PODS, "default", kubelet_pod(f"app-{name}-{k}", name,
                                                           {"app": "demo"}))

    def set_ready(self, node: str, status: str) -> None:
        self.store.mutate(NODES, "", node, lambda o: set_ready(o, status), subresource="status")

    # -- faults --------------------------------------------------------------------------
    def _site(self, node: str) -> str:
        if node not in self.site_of:
            some = ", ".join(sorted(self.site_of)[:5])
            raise KeyError(f"no node {node!r} in the fleet (nodes: {some}, ...)")
        return self.site_of[node]

    def _reaches(self, node: str) -> bool:
        return node not in self._silent and self.site_of.get(node) not in self._cut

    def crash(self, node: str) -> None:
        """The node dies: its exporters stop answering at once; the cloud sees it only when
        the node lifecycle controller's grace period has passed without a Lease renewal."""
        self.exporters[self._site(node)].set_crashed(node, True)
        self._silent.add(node)

    def component(self, node: str, job: str) -> None:
        if job not in JOBS:
            raise KeyError(f"no component {job!r}; the simulated ones are {', '.join(JOBS)}")
        self.exporters[self._site(node)].set_component(node, job, True)

    def gray(self, node: str, kind: str, severity: float = 1.0, ramp: float = 5.0) -> None:
        self.exporters[self._site(node)].gray(node, kind, severity, ramp)

    def link_loss(self, node: str) -> None:
        self._site(node)
        self._silent.add(node)

    def partition(self, site: str, mode: str = "refuse") -> None:
        if site not in self.uplinks:
            raise KeyError(f"no site {site!r}; sites: {', '.join(self.sites)}")
        self.uplinks[site].cut(mode)
        self._cut.add(site)

    def restore_uplink(self, site: str) -> None:
        """The site's uplink only: its kubelets reach the API server again (a crashed node's
        does not)."""
        self.uplinks[site].restore()
        self._cut.discard(site)
        for n in self.nodes(site):
            if self._reaches(n):
                self.lifecycle.post_ready(n)

    def scrape_storm(self, site: str, fraction: float) -> None:
        """A fraction of the site's scrapes fail at random, on every node and job: what an
        overloaded site Prometheus (or its scrape network) looks like. Healing the site ends
        it."""
        if site not in self.exporters:
            raise KeyError(f"no site {site!r}; sites: {', '.join(self.sites)}")
        if not 0 <= fraction <= 1:
            raise ValueError("a scrape storm fails a fraction of the scrapes, from 0 to 1")
        self.exporters[site].flaky = fraction

    def restart_prometheus(self, site: str) -> None:
        """Stop the site's Prometheus and start it again on the same port and data: what a
        rescheduled or OOM-killed edge Prometheus does. Returns once it answers again."""
        if site not in self.proms:
            raise KeyError(f"no site {site!r}; sites: {', '.join(self.sites)}")
        prom = self.proms[site]
        prom.terminate()
        prom.start().wait_ready()

    def flap(self, node: str, period: float = 10.0, count: int | None = None) -> None:
        """Crash and heal the node in turn, each state for `period` seconds; after `count`
        crashes it stays healthy (None: until healed)."""
        self._site(node)
        if period <= 0 or (count is not None and count < 1):
            raise ValueError("flap needs a period above 0 s and a count of at least 1")
        self.stop_flapping(node)
        stop = threading.Event()
        self._flappers[node] = stop

        def run() -> None:
            crashes = 0
            while not stop.is_set():
                self.crash(node)
                crashes += 1
                if stop.wait(period):
                    return
                self.heal_node(node)
                if count is not None and crashes >= count:
                    if self._flappers.get(node) is stop:
                        del self._flappers[node]  # done: it serves from now on
                    return
                if stop.wait(period):
                    return
        threading.Thread(target=run, daemon=True, name=f"flap-{node}").start()

    def flapping(self, node: str) -> bool:
        return node in self._flappers

    def stop_flapping(self, node: str) -> None:
        ev = self._flappers.pop(node, None)
        if ev is not None:
            ev.set()

    def heal_node(self, node: str) -> None:
        self.exporters[self._site(node)].heal(node)
        self._silent.discard(node)
        if self._reaches(node):
            self.lifecycle.post_ready(node)

    def heal(self, target: str | None = None) -> None:
        """Heal one node, one site (its uplink too), or everything."""
        if target in self.uplinks or target is None:
            sites = [target] if target else self.sites
            for s in sites:
                self.uplinks[s].restore()
                self._cut.discard(s)
                self.exporters[s].flaky = 0.0
                for n in self.nodes(s):
                    self.stop_flapping(n)
                    self.heal_node(n)
            return
        self.stop_flapping(target)
        self.heal_node(target)

    def set_autonomy(self, node: str, on: bool = True, duration: str | None = None) -> None:
        """The older flag, or with `duration` OpenYurt's current per-node window."""
        def fn(o: dict[str, Any]) -> None:
            key, value = ("node.openyurt.io/autonomy-duration", duration) if duration \
                is not None else ("node.beta.openyurt.io/autonomy", "true" if on else "false")
            o["metadata"].setdefault("annotations", {})[key] = value
        self._site(node)
        self.store.mutate(NODES, "", node, fn)

    def bind_pod(self, node: str) -> str:
        self._site(node)
        name = f"camera-{node}"
        self.store.create(PODS, "default", {
            "metadata": {"name": name, "annotations": {"apps.openyurt.io/binding": "true"}},
            "spec": {"nodeName": node,
                     "containers": [{"name": "cam", "image": "camera:1"}]},
        })
        return name

    def inject(self, kind: str, target: str, arg: str | None = None, *,
               period: float | None = None, count: int | None = None) -> str:
        """The one entry point of `sentinel sim inject`; returns what it did, in words."""
        return inject(self, kind, target, arg, period=period, count=count)

    # -- for tests -----------------------------------------------------------------------
    def node(self, name: str) -> dict[str, Any]:
        return self.store.get(NODES, "", name)

    def pods_on(self, nodes: Iterable[str]) -> list[str]:
        wanted = set(nodes)
        return list(self.store.names(PODS, None, lambda p: p["spec"].get("nodeName") in wanted))

    # -- control over HTTP ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"sites": {s: self.nodes(s) for s in self.sites}, "kube_api": self.api.url,
                "prometheus": {s: p.url for s, p in self.proms.items()},
                "uplinks": self.prometheus_urls()}

    def serve_control(self, port: int = 0) -> str:
        self._control = serve_control(self, port)
        return f"http://127.0.0.1:{self._control.server_address[1]}"

    def wait_scraped(self, timeout: float = 30.0) -> None:
        """Until every site's Prometheus has a healthy scrape of every node."""
        deadline = time.monotonic() + timeout
        for site, prom in self.proms.items():
            wait_until(partial(all_up, prom.url, set(self.nodes(site))),
                       max(0.0, deadline - time.monotonic()),
                       f"site {site}: not every node scraped healthy in time")
