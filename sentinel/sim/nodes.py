"""Nodes and pods the size the kubelet and the API server make them, and a Node's Ready
condition as the kubelet and the node lifecycle controller write it.

A real Node is about 9.5 KB of JSON, most of it `status.images` (the kubelet reports up to 50,
`--node-status-max-images`), with five conditions, addresses, `nodeInfo`, capacity and
`managedFields`; a real pod 4-6 KB. The simulator's objects have that shape and size, so
memory measured against it is memory a real fleet costs.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

__all__ = ["kubelet_node", "kubelet_pod", "ready_condition", "set_ready", "timestamp"]

#: The kubelet's default `--node-status-max-images`.
MAX_IMAGES = 50


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _managed(manager: str, op: str, fields: dict[str, Any], sub: str = "") -> dict[str, Any]:
    out = {"manager": manager, "operation": op, "apiVersion": "v1",
           "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields}
    if sub:
        out["subresource"] = sub
    return out


def kubelet_node(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A Node as a kubelet registers and reports it (spec, five conditions, 50 images)."""
    now = timestamp()
    images = []
    for i in range(MAX_IMAGES):
        repo = f"reg.example.com/app-{i:02d}"
        images.append({"names": [f"{repo}@sha256:{_digest(name, str(i))}", f"{repo}:v1.{i}.0"],
                       "sizeBytes": 10_000_000 + 731_113 * i})
    conds = [{"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m,
              "lastHeartbeatTime": now, "lastTransitionTime": now}
             for t, r, m in (("MemoryPressure", "SufficientMemory",
                              "kubelet has sufficient memory available"),
                             ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                             ("PIDPressure", "SufficientPID",
                              "kubelet has sufficient PID available"),
                             ("NetworkUnavailable", "RouteCreated",
                              "RouteController created a route"))]
    return {
        "metadata": {
            "name": name,
            "labels": {"beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "kubernetes.io/os": "linux",
                       "kubernetes.io/hostname": name, **labels},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                            "kubeadm.alpha.kubernetes.io/cri-socket":
                                "unix:///run/containerd/containerd.sock"},
            "managedFields": [
                _managed("kubelet", "Update", {"f:metadata": {"f:annotations": {
                    ".": {}, "f:volumes.kubernetes.io/controller-managed-attach-detach": {}},
                    "f:labels": {".": {}, **{f"f:{k}": {} for k in labels}}}}),
                _managed("kube-controller-manager", "Update", {"f:metadata": {"f:annotations": {
                    "f:node.alpha.kubernetes.io/ttl": {}}}, "f:spec": {"f:podCIDR": {},
                                                                       "f:podCIDRs": {}}}),
                _managed("kubelet", "Update", {"f:status": {
                    "f:conditions": {f'k:{{"type":"{t}"}}': {"f:lastHeartbeatTime": {}}
                                     for t in ("DiskPressure", "MemoryPressure", "PIDPressure",
                                               "Ready")},
                    "f:images": {}, "f:nodeInfo": {"f:bootID": {}}}}, "status"),
            ],
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"],
                 "providerID": f"edge://{name}"},
        "status": {
            "capacity": {"cpu": "4", "ephemeral-storage": "61202244Ki", "hugepages-1Gi": "0",
                         "hugepages-2Mi": "0", "memory": "8025424Ki", "pods": "110"},
            "allocatable": {"cpu": "4", "ephemeral-storage": "56403987978",
                            "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": "7923024Ki",
                            "pods": "110"},
            "conditions": [*conds, ready_condition("True")],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"},
                          {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": _digest(name, "machine")[:32],
                         "systemUUID": _digest(name, "uuid")[:32],
                         "bootID": _digest(name, "boot")[:32],
                         "kernelVersion": "6.1.0-26-amd64",
                         "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "containerRuntimeVersion": "containerd://1.7.22",
                         "kubeletVersion": "v1.30.5", "kubeProxyVersion": "v1.30.5",
                         "operatingSystem": "linux", "architecture": "amd64"},
            "images": images,
        },
    }


def kubelet_pod(name: str, node: str, labels: dict[str, str],
                image: str = "demo:1") -> dict[str, Any]:
    """An application pod as the API server stores it once scheduled and running."""
    now = timestamp()
    return {
        "metadata": {"name": name, "labels": labels,
                     "annotations": {"kubectl.kubernetes.io/restartedAt": now},
                     "managedFields": [_managed("kube-controller-manager", "Update", {
                         "f:metadata": {"f:labels": {".": {}, **{f"f:{k}": {} for k in labels}}},
                         "f:spec": {"f:containers": {'k:{"name":"app"}': {
                             ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                             "f:resources": {}}}}})]},
        "spec": {
            "nodeName": node, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler", "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30, "enableServiceLinks": True,
            "priority": 0, "preemptionPolicy": "PreemptLowerPriority",
            "securityContext": {},
            "containers": [{
                "name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"memory": "256Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "volumeMounts": [{"name": "kube-api-access", "readOnly": True,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            }],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300}],
        },
        "status": {
            "phase": "Running", "qosClass": "Burstable", "hostIP": "192.168.1.10",
            "podIP": "10.244.0.17", "podIPs": [{"ip": "10.244.0.17"}], "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastProbeTime": None,
                            "lastTransitionTime": now}
                           for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                     "ContainersReady", "PodScheduled")],
            "containerStatuses": [{
                "name": "app", "ready": True, "started": True, "restartCount": 0,
                "image": image, "imageID": f"{image}@sha256:{_digest(image)}",
                "containerID": f"containerd://{_digest(name, 'c')}",
                "state": {"running": {"startedAt": now}}, "lastState": {}}],
        },
    }


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ready_condition(status: str) -> dict[str, str]:
    ok = status == "True"
    return {"type": "Ready", "status": status,
            "reason": "KubeletReady" if ok else "NodeStatusUnknown",
            "message": "kubelet is posting ready status" if ok
            else "Kubelet stopped posting node status.",
            "lastHeartbeatTime": timestamp(), "lastTransitionTime": timestamp()}


def set_ready(node: dict[str, Any], status: str) -> None:
    """`lastTransitionTime` moves only when the status changes (OpenYurt's autonomy-duration
    counts from it), as the node lifecycle controller writes it."""
    conds, new = node.get("status", {}).get("conditions", []), ready_condition(status)
    for c in conds:
        if c["type"] == "Ready" and c.get("status") == status:
            new["lastTransitionTime"] = c.get("lastTransitionTime", new["lastTransitionTime"])
    node.setdefault("status", {})["conditions"] = [
        *(c for c in conds if c["type"] != "Ready"), new]
