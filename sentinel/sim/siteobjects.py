"""A site as the edge platform itself records it: an OpenYurt NodePool or a KubeEdge NodeGroup,
with the node label each platform's controller keeps on the members (the simulator plays that
controller: it labels the nodes itself, as yurt-manager and KubeEdge's nodegroup controller do).

Per-site settings ride on the object as annotations under sentinel's domain, as an operator
would write them: `<domain>/prometheus`, `<domain>/registry` (JSON)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml

from sentinel.sim.objects import CRDS, Obj, Resource
from sentinel.sim.store import Store
from sentinel.sim.workloads import NODES

__all__ = ["KINDS", "FleetSites", "SiteKind", "install_site_crd", "set_member",
           "site_annotations"]


class SiteKind:
    """One platform's site object: its CRD, the version written here, the member label."""

    def __init__(self, name: str, crd_file: str, resource: Resource, label: str) -> None:
        self.name, self.crd_file, self.resource, self.label = name, crd_file, resource, label

    def body(self, site: str, nodes: list[str], annotations: dict[str, str]) -> Obj:
        spec: dict[str, Any] = {"type": "Edge"} if self.name == "nodepools" else \
            {"nodes": sorted(nodes)}
        return {"metadata": {"name": site, "annotations": annotations}, "spec": spec}


KINDS = {
    "nodepools": SiteKind("nodepools", "nodepools.crd.yaml",
                          Resource("apps.openyurt.io", "v1beta2", "nodepools", "NodePool",
                                   False, True, ("np",)),
                          "apps.openyurt.io/nodepool"),
    "nodegroups": SiteKind("nodegroups", "nodegroups.crd.yaml",
                           Resource("apps.kubeedge.io", "v1alpha1", "nodegroups", "NodeGroup",
                                    False, True, ("ng",)),
                           "apps.kubeedge.io/belonging-to"),
}


def install_site_crd(store: Store, kind: SiteKind) -> None:
    store.create(CRDS, "", yaml.safe_load(
        resources.files("sentinel.sim").joinpath(kind.crd_file).read_text()))


def site_annotations(domain: str, prometheus: str | None,
                registry: dict[str, Any] | None = None) -> dict[str, str]:
    out = {}
    if prometheus is not None:
        out[f"{domain}/prometheus"] = prometheus
    if registry is not None:
        out[f"{domain}/registry"] = json.dumps(registry)
    return out


def set_member(store: Store, kind: SiteKind, node: str, site: str | None) -> None:
    """The platform's controller labelling a node into a pool or group (None: out of any)."""
    def fn(o: Obj) -> None:
        labels = o["metadata"].setdefault("labels", {})
        if site is None:
            labels.pop(kind.label, None)
        else:
            labels[kind.label] = site
    store.mutate(NODES, "", node, fn)


class FleetSites:
    """The site-object half of `Fleet` (which provides the store, the spec and the nodes)."""

    store: Store
    spec: Any

    def nodes(self, site: str | None = None) -> list[str]:
        raise NotImplementedError

    def _site(self, node: str) -> str:
        raise NotImplementedError

    def add_site_object(self, site: str, prometheus: str | None,
                        registry: dict[str, Any] | None = None) -> None:
        """The site's NodePool or NodeGroup, created as an operator would: named for the
        site, with the annotations sentinel reads; its nodes are the fleet's nodes of the
        site (labelled at creation)."""
        kind = KINDS[self._discover()]
        for n in self.nodes(site):
            set_member(self.store, kind, n, site)
        self.store.create(kind.resource, "", kind.body(
            site, self.nodes(site), site_annotations(self.spec.domain, prometheus, registry)))

    def remove_site_object(self, site: str) -> None:
        """The pool or group deleted, its members unlabelled as the platform's controller
        does (KubeEdge removes `belonging-to`; OpenYurt refuses to delete a pool with nodes,
        so its nodes are moved out first)."""
        kind = KINDS[self._discover()]
        for n in self.nodes(site):
            set_member(self.store, kind, n, None)
        self.store.delete(kind.resource, "", site)

    def move_node(self, node: str, site: str | None) -> None:
        """Relabel a node into another pool or group (None: out of every one). Its exporters
        stay with its old site's Prometheus: the new site's does not know it."""
        self._site(node)
        set_member(self.store, KINDS[self._discover()], node, site)

    def _discover(self) -> str:
        if self.spec.discover is None:
            raise ValueError("this fleet has no site objects (FleetSpec.discover is None)")
        return str(self.spec.discover)
