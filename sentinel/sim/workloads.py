"""The workload controllers a real control plane runs, as far as sentinel can see their effects:
Deployments (ReplicaSets, revision numbers, rolling updates one pod per step, `spec.paused`,
rollback by restoring an old template) and DaemonSets (ControllerRevisions, rolling updates one
node per step, `updateStrategy: OnDelete`). Pods are created Ready on the nodes their template's
nodeSelector picks; no scheduler, no probes, no quota.

The semantics kept, because sentinel relies on them:
- a ReplicaSet per distinct pod template, named `<deployment>-<pod-template-hash>`, labelled
  with that hash, owned by the Deployment, and numbered by the annotation
  `deployment.kubernetes.io/revision`; returning to an old template reuses its ReplicaSet and
  gives it the next number (what `kubectl rollout undo` relies on);
- a paused Deployment starts no new ReplicaSet and moves no pods;
- a ControllerRevision per DaemonSet template (`data` holds the template, `revision` its
  number), the same reuse on return;
- `status.observedGeneration`, `updatedReplicas` / `updatedNumberScheduled`, `readyReplicas`
  / `numberReady` as the real controllers report them.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from sentinel.sim.store import RESOURCES, ApiError, Obj, Store

__all__ = ["REVISION_ANNOTATION", "WorkloadControllers", "template_hash"]

DEPLOYMENTS = RESOURCES[("apps", "v1", "deployments")]
DAEMONSETS = RESOURCES[("apps", "v1", "daemonsets")]
REPLICASETS = RESOURCES[("apps", "v1", "replicasets")]
REVISIONS = RESOURCES[("apps", "v1", "controllerrevisions")]
PODS = RESOURCES[("", "v1", "pods")]
NODES = RESOURCES[("", "v1", "nodes")]
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
DS_HASH_LABEL = "controller-revision-hash"


def template_hash(template: Obj) -> str:
    """Stable over key order; the hash labels themselves are not part of it."""
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    labels.pop(DS_HASH_LABEL, None)
    return hashlib.sha256(json.dumps(t, sort_keys=True).encode()).hexdigest()[:10]


def _owns(uid: str) -> Callable[[Obj], bool]:
    return lambda o: any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])


def _owner(o: Obj, kind: str) -> list[Obj]:
    return [{"apiVersion": "apps/v1", "kind": kind, "name": o["metadata"]["name"],
             "uid": o["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]


def _rev(rs: Obj) -> int:
    return int((rs["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) or 0)


def _ready_pod(name: str, ns: str, node: str, template: Obj, labels: dict[str, str],
               owner: list[Obj]) -> Obj:
    meta = template.get("metadata") or {}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels,
                         "annotations": dict(meta.get("annotations") or {}),
                         "ownerReferences": owner},
            "spec": {**copy.deepcopy(template.get("spec") or {}), "nodeName": node},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True"}]}}


class WorkloadControllers:
    """Reconciles every Deployment and DaemonSet each `tick` seconds in a thread; a rolling
    update moves one pod (or node) per `step` seconds."""

    def __init__(self, store: Store, step: float = 1.0, tick: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.step, self.tick, self.clock = store, step, tick, clock
        self.before: list[Callable[[], None]] = []
        """Controllers that write workloads (KubeEdge's EdgeApplication controller), run
        first in each tick, so that what they render is rolled out in the same tick."""
        self._last_step: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-controllers", daemon=True)
        self._serial = 0

    def start(self) -> WorkloadControllers:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Safe before start: a fleet that failed to start stops what it did start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with contextlib.suppress(ApiError):  # changed under us: the next tick sees it
                self.reconcile()

    def reconcile(self) -> None:
        """One workload at a time under the store's lock, so API requests interleave."""
        for render in self.before:
            render()
        for res, fn in ((DEPLOYMENTS, self._deployment), (DAEMONSETS, self._daemonset)):
            for o in self.store.list(res, None)[0]:
                with self.store.lock:
                    m = o["metadata"]
                    with contextlib.suppress(ApiError):  # deleted meanwhile
                        fn(self.store.get(res, m["namespace"], m["name"]))

    def _may_step(self, uid: str) -> bool:
        now = self.clock()
        if now - self._last_step.get(uid, -1e9) < self.step:
            return False
        self._last_step[uid] = now
        return True

    def _pod_name(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial:05x}"

    # -- Deployments -----------------------------------------------------------------------
    def _deployment(self, d: Obj) -> None:
        meta, spec = d["metadata"], d.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        template = spec.get("template") or {}
        want = int(spec.get("replicas", 1))
        h = template_hash(template)
        rss = self.store.list(REPLICASETS, ns, _owns(uid))[0]
        new = next((r for r in rss if r["metadata"]["labels"].get(HASH_LABEL) == h), None)
        top = max((_rev(r) for r in rss), default=0)
        if not spec.get("paused"):
            if new is None:
                new = self._create_rs(d, template, h, top + 1,
                                      want if not any(r["spec"]["replicas"] for r in rss) else 0)
                rss.append(new)
            elif _rev(new) < top:
                new = self._set(REPLICASETS, new, lambda o: o["metadata"].setdefault(
                    "annotations", {}).__setitem__(REVISION_ANNOTATION, str(top + 1)))
                rss = [new if r["metadata"]["uid"] == new["metadata"]["uid"] else r for r in rss]
            olds = [r for r in rss if r is not new and r["spec"]["replicas"] > 0]
            if (new["spec"]["replicas"] != want or olds) and self._may_step(uid):
                self._roll(new, olds, want)
            if (meta.get("annotations") or {}).get(REVISION_ANNOTATION) != str(_rev(new)):
                rev = str(_rev(new))
                d = self._set(DEPLOYMENTS, d, lambda o: o["metadata"].setdefault(
                    "annotations", {}).__setitem__(REVISION_ANNOTATION, rev))
        rss = self.store.list(REPLICASETS, ns, _owns(uid))[0]
        pods_of = {r["metadata"]["uid"]: self._pods(r, r["spec"]["template"],
                                                    r["spec"]["replicas"], "ReplicaSet")
                   for r in rss}
        total = sum(len(p) for p in pods_of.values())
        updated = len(pods_of.get(new["metadata"]["uid"], [])) if new is not None else 0
        status = {"observedGeneration": meta.get("generation", 1), "replicas": total,
                  "updatedReplicas": updated, "readyReplicas": total,
                  "availableReplicas": total, "unavailableReplicas": max(0, want - total)}
        if d.get("status") != status:
            self.store.mutate(DEPLOYMENTS, ns, name, lambda o: o.__setitem__("status", status),
                              subresource="status")

    def _create_rs(self, d: Obj, template: Obj, h: str, revision: int, replicas: int) -> Obj:
        meta = d["metadata"]
        t = copy.deepcopy(template)
        t.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        sel = copy.deepcopy((d["spec"].get("selector") or {}).get("matchLabels") or {})
        return self.store.create(REPLICASETS, meta["namespace"], {
            "metadata": {"name": f"{meta['name']}-{h}", "labels": dict(t["metadata"]["labels"]),
                         "annotations": {REVISION_ANNOTATION: str(revision)},
                         "ownerReferences": _owner(d, "Deployment")},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {**sel, HASH_LABEL: h}},
                     "template": t}})

    def _roll(self, new: Obj, olds: list[Obj], want: int) -> None:
        """One step: one more new pod (surge 1), then one old pod fewer."""
        n = new["spec"]["replicas"]
        if n != want:
            n = n + 1 if n < want else want
            self._set(REPLICASETS, new, lambda o: o["spec"].__setitem__("replicas", n))
        if olds and n + sum(r["spec"]["replicas"] for r in olds) > want:
            old = max(olds, key=_rev)
            left = old["spec"]["replicas"] - 1
            self._set(REPLICASETS, old, lambda o: o["spec"].__setitem__("replicas", left))

    def _set(self, res: Any, o: Obj, fn: Callable[[Obj], None]) -> Obj:
        m = o["metadata"]
        return self.store.mutate(res, m.get("namespace", ""), m["name"], fn)

    # -- pods ------------------------------------------------------------------------------
    def _nodes_for(self, template: Obj) -> list[str]:
        sel = (template.get("spec") or {}).get("nodeSelector") or {}
        return list(self.store.names(NODES, None, lambda n: all(
            (n["metadata"].get("labels") or {}).get(k) == v for k, v in sel.items())))

    def _pods(self, owner: Obj, template: Obj, replicas: int, kind: str) -> list[Obj]:
        """Bring the owner's pods to `replicas`, spread over the matching nodes; newest go
        first when scaling down."""
        ns = owner["metadata"]["namespace"]
        pods = self.store.list(PODS, ns, _owns(owner["metadata"]["uid"]))[0]
        while len(pods) > replicas:
            gone = max(pods, key=lambda p: p["metadata"]["name"])
            self.store.delete(PODS, ns, gone["metadata"]["name"])
            pods.remove(gone)
        nodes = self._nodes_for(template)
        while len(pods) < replicas and nodes:
            load = {n: 0 for n in nodes}
            for p in pods:
                if p["spec"].get("nodeName") in load:
                    load[p["spec"]["nodeName"]] += 1
            node = min(nodes, key=lambda n: (load[n], n))
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            pods.append(self.store.create(PODS, ns, _ready_pod(
                self._pod_name(owner["metadata"]["name"]), ns, node, template, labels,
                _owner(owner, kind))))
        return pods

    # -- DaemonSets ------------------------------------------------------------------------
    def _daemonset(self, ds: Obj) -> None:
        meta, spec = ds["metadata"], ds.get("spec") or {}
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        template = spec.get("template") or {}
        h = template_hash(template)
        crs = self.store.list(REVISIONS, ns, _owns(uid))[0]
        top = max((int(c.get("revision", 0)) for c in crs), default=0)
        cur = next((c for c in crs if c["metadata"]["labels"].get(DS_HASH_LABEL) == h), None)
        if cur is None:
            self.store.create(REVISIONS, ns, {
                "metadata": {"name": f"{name}-{h}", "labels": {
                    **((template.get("metadata") or {}).get("labels") or {}), DS_HASH_LABEL: h},
                    "ownerReferences": _owner(ds, "DaemonSet")},
                "data": {"spec": {"template": {**copy.deepcopy(template), "$patch": "replace"}}},
                "revision": top + 1})
        elif int(cur.get("revision", 0)) < top:
            self._set(REVISIONS, cur, lambda o: o.__setitem__("revision", top + 1))
        t = copy.deepcopy(template)
        t.setdefault("metadata", {}).setdefault("labels", {})[DS_HASH_LABEL] = h
        pods = self.store.list(PODS, ns, _owns(uid))[0]
        nodes = set(self._nodes_for(template))
        on_node = {p["spec"].get("nodeName"): p for p in pods}
        for p in pods:
            if p["spec"].get("nodeName") not in nodes:
                self.store.delete(PODS, ns, p["metadata"]["name"])
        for n in sorted(nodes - set(on_node)):
            self.store.create(PODS, ns, _ready_pod(self._pod_name(name), ns, n, t,
                                                   dict(t["metadata"]["labels"]),
                                                   _owner(ds, "DaemonSet")))
        rolling = (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "OnDelete"
        stale = sorted(n for n, p in on_node.items() if n in nodes
                       and p["metadata"]["labels"].get(DS_HASH_LABEL) != h)
        if rolling and stale and self._may_step(uid):
            n = stale[0]
            self.store.delete(PODS, ns, on_node[n]["metadata"]["name"])
            self.store.create(PODS, ns, _ready_pod(self._pod_name(name), ns, n, t,
                                                   dict(t["metadata"]["labels"]),
                                                   _owner(ds, "DaemonSet")))
        pods = self.store.list(PODS, ns, _owns(uid))[0]
        updated = sum(p["metadata"]["labels"].get(DS_HASH_LABEL) == h for p in pods)
        status = {"observedGeneration": meta.get("generation", 1),
                  "desiredNumberScheduled": len(nodes), "currentNumberScheduled": len(pods),
                  "updatedNumberScheduled": updated, "numberReady": len(pods),
                  "numberAvailable": len(pods), "numberMisscheduled": 0}
        if ds.get("status") != status:
            self.store.mutate(DAEMONSETS, ns, name, lambda o: o.__setitem__("status", status),
                              subresource="status")
