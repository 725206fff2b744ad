"""The API's vocabulary shared by the store and the HTTP layer: resources, the error that
becomes a `Status`, watch events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CRDS", "RESOURCES", "ApiError", "Key", "Obj", "Resource", "WatchEvent"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool = False
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                "CustomResourceDefinition", False, True, ("crd", "crds"))

#: The built-in resources; a store serves these and the custom ones its CRDs define.
RESOURCES: dict[tuple[str, str, str], Resource] = {
    (r.group, r.version, r.plural): r for r in [
        Resource("", "v1", "nodes", "Node", False, True, ("no",)),
        Resource("", "v1", "pods", "Pod", True, True, ("po",)),
        Resource("", "v1", "events", "Event", True),
        Resource("", "v1", "configmaps", "ConfigMap", True, False, ("cm",)),
        Resource("events.k8s.io", "v1", "events", "Event", True),
        Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
        Resource("apps", "v1", "deployments", "Deployment", True, True, ("deploy",)),
        Resource("apps", "v1", "daemonsets", "DaemonSet", True, True, ("ds",)),
        Resource("apps", "v1", "replicasets", "ReplicaSet", True, True, ("rs",)),
        Resource("apps", "v1", "controllerrevisions", "ControllerRevision", True),
        Resource("apps", "v1", "statefulsets", "StatefulSet", True, True, ("sts",)),
        # stored as given, for `kubectl apply -k deploy/`: no semantics emulated
        Resource("", "v1", "namespaces", "Namespace", False, True, ("ns",)),
        Resource("", "v1", "serviceaccounts", "ServiceAccount", True, False, ("sa",)),
        Resource("", "v1", "services", "Service", True, True, ("svc",)),
        Resource("", "v1", "secrets", "Secret", True),
        Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True,
                 ("pdb",)),
        Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, False,
                 ("netpol",)),
        Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
        Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings",
                 "ClusterRoleBinding", False),
        Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
        Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
        CRDS,
    ]
}

Key = tuple[str, str, str, str]  # group, plural, namespace, name


class ApiError(Exception):
    """Becomes a `Status` object with this code and reason, as the real server sends."""

    def __init__(self, code: int, reason: str, message: str,
                 continue_token: str = "") -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.continue_token = continue_token
        """Set on an expired list continuation: where an inconsistent list goes on."""

    def status(self) -> Obj:
        meta = {"continue": self.continue_token} if self.continue_token else {}
        return {"kind": "Status", "apiVersion": "v1", "metadata": meta, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str
    res: Resource
    obj: Obj
