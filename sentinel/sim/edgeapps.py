"""KubeEdge's EdgeApplication controller, as far as sentinel sees its effects: each Deployment
manifest of an application is rendered once per target node group, named `<name>-<group>`,
its pods pinned to the group (`nodeSelector: apps.kubeedge.io/belonging-to: <group>`), the
group's `replicas` and `imageOverriders` applied in order (a predicate's path, or every
container; Registry / Repository / Tag by add, replace or remove).

The semantics kept, because the registry failover relies on them: the rendering is recorded on
the generated Deployment (`apps.kubeedge.io/last-applied-template`) and the Deployment is
written again only when a new rendering differs from that record — an edit made to the
generated Deployment itself lasts until the application changes, then it is overwritten.
Not covered: other kinds than Deployment, the other overriders, status, deleting what a
removed group or manifest generated."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import yaml

from sentinel.sim.objects import CRDS, Obj
from sentinel.sim.siteobjects import KINDS
from sentinel.sim.store import ApiError, Store
from sentinel.sim.workloads import DEPLOYMENTS

__all__ = ["LAST_APPLIED", "EdgeAppController", "install_edgeapp_crd", "override_image"]

BELONGING = KINDS["nodegroups"].label
LAST_APPLIED = "apps.kubeedge.io/last-applied-template"


def install_edgeapp_crd(store: Store) -> None:
    store.create(CRDS, "", yaml.safe_load(
        resources.files("sentinel.sim").joinpath("edgeapplications.crd.yaml").read_text()))


def _split(image: str) -> tuple[str, str, str]:
    """(host, repository, ":tag" or "@digest") as a docker reference splits: the first part
    is a host when it has a dot or a colon, or is localhost."""
    first, sep, rest = image.partition("/")
    host = ""
    if sep and ("." in first or ":" in first or first == "localhost"):
        host, image = first, rest
    if "@" in image:
        repo, _, digest = image.partition("@")
        return host, repo, "@" + digest
    repo, colon, tag = image.rpartition(":")
    return (host, repo, ":" + tag) if colon and "/" not in tag else (host, image, "")


def override_image(image: str, o: dict[str, Any]) -> str:
    host, repo, tag = _split(image)
    op, value = o.get("operator"), str(o.get("value", ""))
    part = {"Registry": host, "Repository": repo, "Tag": tag.lstrip(":@")}[o["component"]]
    new = {"add": part + value, "replace": value, "remove": ""}[str(op)]
    if o["component"] == "Registry":
        host = new
    elif o["component"] == "Repository":
        repo = new
    else:
        tag = (tag[:1] or ":") + new if new else ""
    return f"{host}/{repo}{tag}" if host else f"{repo}{tag}"


def render(app: Obj, manifest: Obj, group: Obj) -> Obj:
    out = copy.deepcopy(manifest)
    meta = out.setdefault("metadata", {})
    meta["name"] = f"{meta['name']}-{group['name']}"
    meta.setdefault("namespace", app["metadata"]["namespace"])
    spec = out.setdefault("spec", {})
    pod = spec.setdefault("template", {}).setdefault("spec", {})
    pod["nodeSelector"] = {BELONGING: group["name"]}
    ovs = group.get("overriders") or {}
    if "replicas" in ovs:
        spec["replicas"] = ovs["replicas"]
    for o in ovs.get("imageOverriders") or []:
        containers = pod.get("containers") or []
        path = (o.get("predicate") or {}).get("path")
        if path is None:
            for c in containers:
                c["image"] = override_image(c["image"], o)
            continue
        parts = path.strip("/").split("/")  # spec/template/spec/containers/N/image
        i = int(parts[4])
        containers[i]["image"] = override_image(containers[i]["image"], o)
    return out


class EdgeAppController:
    """Run by the workload controllers' tick (WorkloadControllers.before)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def reconcile(self) -> None:
        res = self.store.resources.get(("apps.kubeedge.io", "v1alpha1", "edgeapplications"))
        if res is None:
            return
        for app in self.store.list(res, None)[0]:
            spec = app.get("spec") or {}
            for m in (spec.get("workloadTemplate") or {}).get("manifests") or []:
                if m.get("kind") != "Deployment":
                    continue
                for g in (spec.get("workloadScope") or {}).get("targetNodeGroups") or []:
                    self._apply(render(app, m, g))

    def _apply(self, want: Obj) -> None:
        meta = want["metadata"]
        record = json.dumps(want, sort_keys=True)
        meta.setdefault("annotations", {})[LAST_APPLIED] = record
        with self.store.lock:
            try:
                cur = self.store.get(DEPLOYMENTS, meta["namespace"], meta["name"])
            except ApiError:
                self.store.create(DEPLOYMENTS, meta["namespace"], want)
                return
            if (cur["metadata"].get("annotations") or {}).get(LAST_APPLIED) == record:
                return  # rendered as last time: whatever was edited on it stays
            cur["metadata"].setdefault("annotations", {})[LAST_APPLIED] = record
            cur["metadata"].setdefault("labels", {}).update(meta.get("labels") or {})
            cur["spec"] = want["spec"]
            cur["metadata"].pop("resourceVersion", None)
            self.store.replace(DEPLOYMENTS, meta["namespace"], meta["name"], cur)
