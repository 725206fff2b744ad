"""The `edgeapplication` registry strategy, for KubeEdge: a node group's failover written where
KubeEdge keeps a group's image overrides, in each opted-in EdgeApplication's
`spec.workloadScope.targetNodeGroups[<group>].overriders.imageOverriders`.

Why there and not on the Deployments KubeEdge generates (`<name>-<group>`): its controller
renders those from the application, and renders them again whenever the application changes
(a replica count, a new version): an image rewritten on a generated Deployment would silently
go back to the primary at the next edit. The overriders sentinel adds are recorded in the
annotation `<domain>/registry-failover` (group -> overriders), and fail-back removes exactly
those, leaving any a person wrote.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.kubeerrors import api_reason
from sentinel.config.capabilities import RegistryEndpoint
from sentinel.core.errors import KubeError
from sentinel.registry.state import Role, edgeapp_overriders, host_of

__all__ = ["EDGEAPPS", "EdgeAppOverride"]

#: group, version, plural of KubeEdge's EdgeApplication.
EDGEAPPS = ("apps.kubeedge.io", "v1alpha1", "edgeapplications")


class EdgeAppOverride:
    def __init__(self, api: client.ApiClient, label: str, domain: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.label, self.key = label, f"{domain}/registry-failover"

    def _apps(self, group: str) -> list[dict[str, Any]]:
        """The opted-in EdgeApplications that deploy to this node group."""
        g, v, plural = EDGEAPPS
        try:
            answer: Any = self.custom.list_cluster_custom_object(
                g, v, plural, label_selector=f"{self.label}=true")
        except ApiException as e:
            raise KubeError(f"EdgeApplications labelled {self.label}=true: "
                            f"{api_reason(e)}") from None
        items: list[dict[str, Any]] = answer.get("items") or []
        return [a for a in items if _entry(a, group) is not None]

    def _ours(self, app: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        raw = (app["metadata"].get("annotations") or {}).get(self.key)
        try:
            out = json.loads(raw) if raw else {}
        except ValueError:
            raise KubeError(f"{_name(app)}: annotation {self.key} is not JSON; fix or remove "
                            "it by hand (sentinel will not guess what it added)") from None
        return out if isinstance(out, dict) else {}

    def current(self, group: str) -> Role | None:
        apps = self._apps(group)
        if not apps:
            return None
        return Role.STANDBY if any(group in self._ours(a) for a in apps) else Role.PRIMARY

    def apply(self, group: str, primary: RegistryEndpoint, standby: RegistryEndpoint,
              role: Role) -> tuple[list[str], list[str]]:
        """Write every opted-in application of the group; (changed, skipped with why)."""
        changed: list[str] = []
        skipped: list[str] = []
        for app in self._apps(group):
            ours = self._ours(app)
            entry = _entry(app, group)
            assert entry is not None
            overriders = entry.setdefault("overriders", {})
            images = list(overriders.get("imageOverriders") or [])
            if role is Role.STANDBY:
                if group in ours:
                    continue
                manifests = ((app.get("spec") or {}).get("workloadTemplate") or {}).get(
                    "manifests") or []
                new, why = edgeapp_overriders(manifests, host_of(primary.url),
                                              host_of(standby.url))
                if why is not None:
                    skipped.append(f"{_name(app)}: {why}")
                    continue
                images += new
                ours[group] = new
            else:
                if group not in ours:
                    continue
                for o in ours.pop(group):
                    if o in images:
                        images.remove(o)
            overriders["imageOverriders"] = images
            self._write(app, ours)
            changed.append(_name(app))
        return changed, skipped

    def _write(self, app: dict[str, Any], ours: dict[str, Any]) -> None:
        """A merge patch of the whole group list, on the version read: a person's edit in
        between makes it 409, and the next probe round reads again."""
        g, v, plural = EDGEAPPS
        meta = app["metadata"]
        body = {"metadata": {"resourceVersion": meta["resourceVersion"],
                             "annotations": {self.key: json.dumps(ours) if ours else None}},
                "spec": {"workloadScope": {"targetNodeGroups":
                                           app["spec"]["workloadScope"]["targetNodeGroups"]}}}
        try:
            self.custom.patch_namespaced_custom_object(g, v, meta["namespace"], plural,
                                                       meta["name"], body)
        except ApiException as e:
            raise KubeError(f"{_name(app)}: {api_reason(e)}") from None


def _entry(app: dict[str, Any], group: str) -> dict[str, Any] | None:
    scope = (app.get("spec") or {}).get("workloadScope") or {}
    return next((t for t in scope.get("targetNodeGroups") or [] if t.get("name") == group),
                None)


def _name(app: dict[str, Any]) -> str:
    return f"EdgeApplication {app['metadata'].get('namespace')}/{app['metadata']['name']}"
