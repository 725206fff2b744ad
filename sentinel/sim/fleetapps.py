"""The simulated fleet's applications: one Deployment (or DaemonSet) per site, as KubeEdge's
EdgeApplication generates them per node group, and how each version behaves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sentinel.sim.apps import VERSION_KINDS, AppPod, VersionBehaviour
from sentinel.sim.store import RESOURCES, Store
from sentinel.sim.workloads import DAEMONSETS, DEPLOYMENTS

__all__ = ["APP_LABEL", "GUARD_LABEL", "PODS", "ZONE_LABEL", "FleetApps"]

ZONE_LABEL = "topology.kubernetes.io/zone"
PODS = RESOURCES[("", "v1", "pods")]
APP_LABEL = "apps.kubeedge.io/edgeapplication-name"
"""What KubeEdge's EdgeApplication controller labels its per-node-group workloads with."""
GUARD_LABEL = "sentinel.edge.io/rollout-guard"
"""sentinel's default opt-in label for the rollout guard (`rollouts.label`)."""


class FleetApps:
    """The application half of `Fleet` (which provides the store, the sites and the nodes)."""

    store: Store
    versions: dict[str, VersionBehaviour]
    group_label: str = ZONE_LABEL
    """The node label a site's workloads select (a pool's or group's label when the sites are
    the platform's objects, as KubeEdge's EdgeApplication selects `belonging-to`)."""

    @property
    def sites(self) -> list[str]:
        raise NotImplementedError

    def nodes(self, site: str | None = None) -> list[str]:
        raise NotImplementedError

    def app_pods(self, site: str) -> list[AppPod]:
        """The pods of workloads (owned by a ReplicaSet or DaemonSet) on the site's nodes."""
        nodes = set(self.nodes(site))

        def mine(p: dict[str, Any]) -> bool:
            m = p["metadata"]
            return p["spec"].get("nodeName") in nodes and bool(m.get("ownerReferences")) and \
                "version" in (m.get("labels") or {})

        return [AppPod(p["metadata"]["namespace"], p["metadata"]["name"], p["spec"]["nodeName"],
                       p["metadata"]["labels"].get("app", ""), p["metadata"]["labels"]["version"])
                for p in self.store.list(PODS, None, mine)[0]]

    def behaviour(self, version: str) -> VersionBehaviour:
        return self.versions.get(version, VERSION_KINDS["healthy"])

    def set_version(self, version: str, kind: str) -> None:
        if kind not in VERSION_KINDS:
            raise KeyError(f"no version behaviour {kind!r}; kinds: {', '.join(VERSION_KINDS)}")
        self.versions[version] = VERSION_KINDS[kind]

    def deploy_app(self, app: str, version: str, *, sites: Iterable[str] | None = None,
                   replicas: int = 3, kind: str = "Deployment", namespace: str = "default",
                   labels: dict[str, str] | None = None) -> list[str]:
        """One workload per site (node group), named `<app>-<site>`; returns the names."""
        res = DEPLOYMENTS if kind == "Deployment" else DAEMONSETS
        names = []
        for site in sites or self.sites:
            name = f"{app}-{site}"
            spec: dict[str, Any] = {
                "selector": {"matchLabels": {"app": app, "group": site}},
                "template": self._template(app, site, version)}
            if kind == "Deployment":
                spec["replicas"] = replicas
            self.store.create(res, namespace, {
                "metadata": {"name": name, "labels": {
                    GUARD_LABEL: "true", APP_LABEL: app, **(labels or {})}},
                "spec": spec})
            names.append(name)
        return names

    def _template(self, app: str, site: str, version: str) -> dict[str, Any]:
        return {"metadata": {"labels": {"app": app, "group": site, "version": version}},
                "spec": {"nodeSelector": {self.group_label: site},
                         "containers": [{"name": "app", "image": f"registry.local/{app}:{version}",
                                         "env": [{"name": "VERSION", "value": version}]}]}}

    def upgrade(self, app: str, version: str, site: str, *, kind: str = "Deployment",
                namespace: str = "default") -> None:
        """What the EdgeApplication controller (or a person) does to one node group: a new
        pod template. A paused Deployment takes it and rolls nothing out."""
        res = DEPLOYMENTS if kind == "Deployment" else DAEMONSETS
        template = self._template(app, site, version)
        self.store.mutate(res, namespace, f"{app}-{site}",
                          lambda o: o["spec"].__setitem__("template", template))

    def remove_apps(self) -> None:
        """Every Deployment and DaemonSet and what they own (no garbage collector here)."""
        for res in (DEPLOYMENTS, DAEMONSETS):
            for o in self.store.list(res, None)[0]:
                self.store.delete(res, o["metadata"]["namespace"], o["metadata"]["name"])
        for res in (RESOURCES[("apps", "v1", "replicasets")],
                    RESOURCES[("apps", "v1", "controllerrevisions")], PODS):
            for o in self.store.list(res, None)[0]:
                if o["metadata"].get("ownerReferences"):
                    self.store.delete(res, o["metadata"]["namespace"], o["metadata"]["name"])
