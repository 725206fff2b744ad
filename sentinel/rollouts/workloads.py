"""The rollout guard's view of the workloads and its writes to them, through the official
client.

Four reflectors (list, then watch): the opted-in Deployments and DaemonSets (by label), and the
ReplicaSets and ControllerRevisions that hold their revisions. `workloads()` turns them into
the pure `rollout.Workload` values.

What sentinel decided is written on the workload itself, in annotations under its domain:
`<domain>/rollout` (the verdict and the rollback, as JSON) and `<domain>/rollout-hold` (a hold
for a sibling's failure). A restarted sentinel reads them back: a rollback is never repeated,
and one that was cut half way is finished, once.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.kubeerrors import api_reason
from sentinel.adapters.reflector import Reflector
from sentinel.config.schema import Config
from sentinel.core.errors import KubeError
from sentinel.rollouts.analysis import Revision, Workload

__all__ = ["WorkloadView", "WorkloadWriter", "pods_regex"]

Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"
HASH_LABELS = ("pod-template-hash", "controller-revision-hash")


def _ts(s: str | None) -> float | None:
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def _strip_hash(template: Obj) -> Obj:
    """A revision's template as the workload had it: without the controller's hash label."""
    t = copy.deepcopy(template)
    labels = (t.get("metadata") or {}).get("labels") or {}
    for k in HASH_LABELS:
        labels.pop(k, None)
    return t


def pods_regex(kind: str, name: str) -> str:
    """The workload's pod names, exactly: `<deployment>-<hash>-<suffix>` or `<daemonset>-<suffix>`
    (a prefix alone would also take `web-site-a` pods for a workload named `web`)."""
    tail = "-[a-z0-9]+-[a-z0-9]+" if kind == "Deployment" else "-[a-z0-9]+"
    return name.replace(".", "\\\\.") + tail


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objs: dict[tuple[str, str], Obj] = {}

    def listed(self, items: list[Obj]) -> None:
        with self.lock:
            self.objs = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
                         for o in items}

    def event(self, kind: str, o: Obj) -> None:
        key = (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        with self.lock:
            if kind == "DELETED":
                self.objs.pop(key, None)
            else:
                self.objs[key] = o

    def values(self) -> list[Obj]:
        with self.lock:
            return list(self.objs.values())


class WorkloadView:
    def __init__(self, api: client.ApiClient, cfg: Config) -> None:
        r = cfg.rollouts
        self.cfg, self.domain = cfg, cfg.taint_domain
        self.record_key, self.hold_key = f"{self.domain}/rollout", f"{self.domain}/rollout-hold"
        apps = client.AppsV1Api(api)
        sel = f"{r.label}=true"
        t = cfg.cluster.watch_timeout
        self._caches = {k: _Cache() for k in ("Deployment", "DaemonSet", "rs", "cr")}
        lists: dict[str, Callable[..., Any]] = {
            "Deployment": functools.partial(apps.list_deployment_for_all_namespaces,
                                            label_selector=sel),
            "DaemonSet": functools.partial(apps.list_daemon_set_for_all_namespaces,
                                           label_selector=sel),
            "rs": apps.list_replica_set_for_all_namespaces,
            "cr": apps.list_controller_revision_for_all_namespaces,
        }
        self.reflectors = [Reflector(f"rollouts-{k}", fn, self._caches[k].listed,
                                     self._caches[k].event, t) for k, fn in lists.items()]

    def start(self) -> WorkloadView:
        for r in self.reflectors:
            r.start()
        return self

    def stop(self) -> None:
        for r in self.reflectors:
            r.stop()

    @property
    def synced(self) -> bool:
        return all(r.synced.is_set() for r in self.reflectors)

    def wait_synced(self, timeout: float) -> bool:
        return all(r.synced.wait(timeout) for r in self.reflectors)

    def raw(self, kind: str, namespace: str, name: str) -> Obj | None:
        c = self._caches[kind]
        with c.lock:
            return c.objs.get((namespace, name))

    # -- values ----------------------------------------------------------------------------
    def workloads(self) -> list[Workload]:
        owned: dict[str, list[Obj]] = {}
        for k in ("rs", "cr"):
            for o in self._caches[k].values():
                for ref in o["metadata"].get("ownerReferences") or []:
                    owned.setdefault(ref.get("uid", ""), []).append(o)
        out = []
        for kind in ("Deployment", "DaemonSet"):
            for o in self._caches[kind].values():
                out.append(self._workload(kind, o, owned.get(o["metadata"]["uid"], [])))
        return sorted(out, key=lambda w: w.key)

    def _revisions(self, kind: str, children: list[Obj]) -> list[Revision]:
        vl = self.cfg.rollouts.version_label
        revs = []
        for c in children:
            m = c["metadata"]
            if kind == "Deployment":
                template = (c.get("spec") or {}).get("template") or {}
                number = int((m.get("annotations") or {}).get(REVISION) or 0)
                h = (m.get("labels") or {}).get("pod-template-hash", m["name"])
            else:
                template = (((c.get("data") or {}).get("spec") or {}).get("template") or {})
                template = {k: v for k, v in template.items() if k != "$patch"}
                number = int(c.get("revision") or 0)
                h = (m.get("labels") or {}).get("controller-revision-hash", m["name"])
            t = _strip_hash(template)
            version = ((t.get("metadata") or {}).get("labels") or {}).get(vl)
            revs.append(Revision(h, number, version, t, _ts(m.get("creationTimestamp"))))
        return sorted(revs, key=lambda r: r.number)

    def _workload(self, kind: str, o: Obj, children: list[Obj]) -> Workload:
        m, spec, st = o["metadata"], o.get("spec") or {}, o.get("status") or {}
        labels, ann = m.get("labels") or {}, m.get("annotations") or {}
        app = next((labels[k] for k in self.cfg.rollouts.app_labels if labels.get(k)),
                   m["name"])
        revs = self._revisions(kind, children)
        template = _strip_hash(spec.get("template") or {})
        current = next((r for r in revs if r.template == template), None)
        record = _json(ann.get(self.record_key))
        previous = None
        if current is not None:
            older = [r for r in revs if r.hash != current.hash]
            # After a rollback the controller renumbers the restored revision as the newest;
            # the one before the current is the newest other revision that did not fail here.
            bad = {record.get("revision")} if record else set()
            good = [r for r in older if r.hash not in bad]
            previous = good[-1] if good else None
        if kind == "Deployment":
            desired = int(spec.get("replicas", 1))
            updated = int(st.get("updatedReplicas") or 0)
            total = int(st.get("replicas") or 0)
            settled = (st.get("observedGeneration") or 0) >= (m.get("generation") or 0) and \
                updated == desired == total
            paused = bool(spec.get("paused"))
        else:
            desired = int(st.get("desiredNumberScheduled") or 0)
            updated = int(st.get("updatedNumberScheduled") or 0)
            settled = (st.get("observedGeneration") or 0) >= (m.get("generation") or 0) and \
                updated == desired
            paused = (spec.get("updateStrategy") or {}).get("type") == "OnDelete"
        return Workload(kind, m["namespace"], m["name"], app, paused, current, previous,
                        desired, updated, settled and current is not None, record,
                        _json(ann.get(self.hold_key)))


def _json(s: str | None) -> dict[str, Any] | None:
    if not s:
        return None
    try:
        v = json.loads(s)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


class WorkloadWriter:
    """The guard's writes. A rollback checks that the template is still the one it judged,
    so a template changed meanwhile (a person, the EdgeApplication controller) fails the
    write instead of being overwritten; the next round decides again on what is there now.
    (Not the resourceVersion: the controllers' status updates bump it every few seconds.)"""

    def __init__(self, api: client.ApiClient, domain: str) -> None:
        self.apps = client.AppsV1Api(api)
        self.record_key, self.hold_key = f"{domain}/rollout", f"{domain}/rollout-hold"
        self.strategy_key = f"{domain}/rollout-held-strategy"

    def _patch(self, kind: str, ns: str, name: str, body: Any) -> Obj:
        fn: Callable[..., Any] = self.apps.patch_namespaced_deployment \
            if kind == "Deployment" else self.apps.patch_namespaced_daemon_set
        try:
            out = fn(name, ns, body, _preload_content=False)
        except ApiException as e:
            raise KubeError(f"{kind} {ns}/{name}: {api_reason(e)}") from None
        result: Obj = json.loads(out.data)
        return result

    def _read(self, kind: str, ns: str, name: str) -> Obj:
        fn: Callable[..., Any] = self.apps.read_namespaced_deployment \
            if kind == "Deployment" else self.apps.read_namespaced_daemon_set
        try:
            out = fn(name, ns, _preload_content=False)
        except ApiException as e:
            raise KubeError(f"{kind} {ns}/{name}: {api_reason(e)}") from None
        result: Obj = json.loads(out.data)
        return result

    def stop(self, w: Workload, record: Mapping[str, Any], hold: Mapping[str, Any] | None,
             ) -> Obj:
        """Stop the rollout where it is (Deployment: `spec.paused`; DaemonSet: the
        `OnDelete` strategy, the original kept in an annotation) and write why."""
        cur = self._read(w.kind, w.namespace, w.name)
        ann: dict[str, Any] = {self.record_key if hold is None else self.hold_key:
                               json.dumps(dict(record if hold is None else hold))}
        body: Obj = {"metadata": {"annotations": ann}}
        if w.kind == "Deployment":
            body["spec"] = {"paused": True}
        else:
            strategy = (cur.get("spec") or {}).get("updateStrategy") or {"type": "RollingUpdate"}
            if strategy.get("type") != "OnDelete":
                ann[self.strategy_key] = json.dumps(strategy)
                body["spec"] = {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}
        return self._patch(w.kind, w.namespace, w.name, body)

    def restore(self, w: Workload, to: Revision, record: Mapping[str, Any]) -> Obj:
        """Roll back: the previous revision's template, the rollout resumed so the controller
        brings the old pods back, and the record. One JSON patch, tested against the
        template read just before (as `kubectl rollout undo` replaces the template)."""
        cur = self._read(w.kind, w.namespace, w.name)
        template = (cur.get("spec") or {}).get("template") or {}
        if w.current is None or _strip_hash(template) != w.current.template:
            raise KubeError(f"{w.kind} {w.key}: its template changed since the verdict; "
                               "not rolled back (the next round judges the new one)")
        ann = dict(cur["metadata"].get("annotations") or {})
        ann[self.record_key] = json.dumps(dict(record))
        ann.pop(self.hold_key, None)  # rolled back and resumed: no longer held for a sibling
        ops: list[Obj] = [
            {"op": "test", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/spec/template", "value": dict(to.template)},
        ]
        if w.kind == "Deployment":
            ops.append({"op": "add", "path": "/spec/paused", "value": False})
        else:
            strategy = _json(ann.pop(self.strategy_key, None))
            if strategy is not None:
                ops.append({"op": "replace", "path": "/spec/updateStrategy", "value": strategy})
        ops.append({"op": "add", "path": "/metadata/annotations", "value": ann})
        return self._patch(w.kind, w.namespace, w.name, ops)

    def resume(self, w: Workload, record: Mapping[str, Any] | None) -> Obj:
        """Lift sentinel's hold (and pause): the rollout goes on as the workload says."""
        cur = self._read(w.kind, w.namespace, w.name)
        ann = cur["metadata"].get("annotations") or {}
        patch_ann: dict[str, Any] = {self.hold_key: None}
        if record is not None:
            patch_ann[self.record_key] = json.dumps(dict(record))
        body: Obj = {"metadata": {"annotations": patch_ann}}
        if w.kind == "Deployment":
            body["spec"] = {"paused": False}
        elif self.strategy_key in ann:
            strategy = _json(ann[self.strategy_key]) or {"type": "RollingUpdate"}
            patch_ann[self.strategy_key] = None
            body["spec"] = {"updateStrategy": strategy}
        return self._patch(w.kind, w.namespace, w.name, body)
