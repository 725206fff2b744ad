"""The emulator's object store: resourceVersions, watch history, selectors, conflicts.

It keeps the semantics sentinel relies on: one global, increasing resourceVersion; a patch or
update carrying a stale `metadata.resourceVersion` fails with 409; `status` is only written
through `/status`; a watch whose next events have left the history fails with 410 Gone. The
history is kept per resource, as the API server's watch cache is, so a fleet's Lease renewals
never push node or pod events out of it. Two controllers of a real control plane are emulated
because their effects are visible to sentinel: the cordon taint
(`node.kubernetes.io/unschedulable`) and the NoExecute taint manager (pods that do not tolerate
a NoExecute taint are evicted, i.e. deleted, immediately; `tolerationSeconds` are not
honoured). `metadata.generation` counts changes of `spec` for the objects with a status (not
Nodes), as the real API does; the workload controllers (workloads.py) report
`status.observedGeneration` against it.

A stored object is never changed after it is written (every write stores a new one), so lists
and their pages, and the watch history, share the stored objects instead of copying them.
"""

from __future__ import annotations

import pickle
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

from sentinel.sim.crds import resource_of, served_resources, validate_custom
from sentinel.sim.objects import CRDS, RESOURCES, ApiError, Key, Obj, Resource, WatchEvent
from sentinel.sim.taints import UNSCHEDULABLE_TAINT, PodsByNode, tolerates, validate_taints

__all__ = ["RESOURCES", "ApiError", "Obj", "Resource", "Store", "WatchEvent"]


T = TypeVar("T")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clone(obj: T) -> T:
    """A deep copy of plain API data: a pickle round trip is three times as fast as
    `copy.deepcopy` on a kubelet-sized Node (140 us against 480), and every read and write
    copies."""
    out: T = pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))
    return out


def _without_rv(obj: Obj) -> Obj:
    return {**obj, "metadata": {k: v for k, v in obj.get("metadata", {}).items()
                                if k != "resourceVersion"}}


class Store:
    def __init__(self, history: int = 10_000) -> None:
        self._lock = threading.Condition()
        self._objects: dict[Key, Obj] = {}
        self._kinds: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        """(group, plural) -> (namespace, name) -> object, in key order: a list reads one kind,
        not every object of every kind (a fleet's Leases alone are a thousand)."""
        self._rv = 0
        self._history_len = history
        self._history: dict[tuple[str, str], deque[WatchEvent]] = {}  # per (group, plural)
        self._expired: dict[tuple[str, str], int] = {}
        """The newest version each kind's history has dropped: older watches are 410 Gone."""
        self.evictions: list[tuple[str, str, str]] = []
        """(namespace, pod, node) of every pod the taint manager evicted."""
        self.writes: list[tuple[str, str, str, str]] = []
        """(verb, plural, namespace, name) of every successful write, for tests."""
        self.resources: dict[tuple[str, str, str], Resource] = dict(RESOURCES)
        """What this server serves: the built-in resources and those its CRDs define."""
        self._schemas: dict[Resource, dict[str, Any]] = {}
        self._ips, self._pods = 0, PodsByNode()

    def schema(self, res: Resource) -> dict[str, Any] | None:
        """The OpenAPI schema a CRD gave this resource; None for a built-in one."""
        return self._schemas.get(res)

    @property
    def lock(self) -> threading.Condition:
        """Re-entrant; held by every write. The HTTP layer holds it across read-patch-write."""
        return self._lock

    # -- reading -------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def get(self, res: Resource, ns: str, name: str) -> Obj:
        with self._lock:
            obj = self._objects.get((res.group, res.plural, ns, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            return _clone(obj)

    def snapshot(self, res: Resource, ns: str | None,
                 match: Callable[[Obj], bool] = lambda o: True) -> tuple[list[Obj], int]:
        """The matching objects as stored, not copies, and the version they are at: for a
        reader that only serialises them (the HTTP layer's lists and their pages). A stored
        object is never changed after it is committed — a write stores a new one — so a
        snapshot stays as it was when taken, as a paginated list's pages must. Copying a
        kubelet-sized Node costs 140 us: two thirds of serving a list went to copies."""
        with self._lock:
            return [o for _, o in self._matching(res, ns, match)], self._rv

    def list(self, res: Resource, ns: str | None,
             match: Callable[[Obj], bool] = lambda o: True) -> tuple[list[Obj], int]:
        """Copies of the matching objects (the caller may change them), and their version."""
        with self._lock:
            items, rv = self.snapshot(res, ns, match)
            return [_clone(o) for o in items], rv

    def names(self, res: Resource, ns: str | None,
              match: Callable[[Obj], bool] = lambda o: True) -> tuple[str, ...]:
        """The names of the matching objects, copying none: the simulated controllers ask this
        of every Node several times a second, and a kubelet-sized Node costs 140 us to copy."""
        with self._lock:
            return tuple(n for n, _ in self._matching(res, ns, match))

    def _matching(self, res: Resource, ns: str | None,
                  match: Callable[[Obj], bool]) -> Iterator[tuple[str, Obj]]:
        """(name, stored object) of one kind, in key order; the caller holds the lock."""
        kind = self._kinds.get((res.group, res.plural), {})
        for (ns_, name), o in sorted(kind.items()):
            if (ns is None or ns_ == ns) and match(o):
                yield name, o

    def watch(self, res: Resource, ns: str | None, since: int | None, timeout: float,
              match: Callable[[Obj], bool], stop: Callable[[], bool]) -> Iterator[WatchEvent]:
        """Events after `since` (None: the current objects as ADDED first)."""
        deadline = time.monotonic() + timeout
        kind = (res.group, res.plural)
        with self._lock:
            if since is None:
                items, since = self.list(res, ns, match)
                initial = [WatchEvent(since, "ADDED", res, o) for o in items]
            else:
                initial = []
                self._check_window(kind, since)
        yield from initial
        last = since
        while not stop():
            with self._lock:
                # A watcher slower than the writes: its next events have left the history. The
                # API server ends such a watch with 410 Gone (the client lists again); never
                # skip them silently.
                self._check_window(kind, last)
                # The new events are at the right end: walk back to `last`, not over the rest.
                batch: list[WatchEvent] = []
                for e in reversed(self._history.get(kind, ())):
                    if e.rv <= last:
                        break
                    batch.append(e)
                if not batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    self._lock.wait(min(left, 0.5))
                    continue
            for e in reversed(batch):
                if stop() or time.monotonic() >= deadline:  # cut at once, backlog or not
                    return
                last = e.rv
                # Any served version of the same objects (a CRD's versions share them).
                if (ns is None or e.obj["metadata"].get("namespace") == ns) and match(e.obj):
                    yield WatchEvent(e.rv, e.type, e.res, _clone(e.obj))

    def _check_window(self, kind: tuple[str, str], since: int) -> None:
        if since < (expired := self._expired.get(kind, 0)):
            raise ApiError(410, "Expired", f"too old resource version: {since} ({expired})")

    def history(self, res: Resource) -> tuple[WatchEvent, ...]:
        """The events of one resource a watch can still be served, oldest first (for tests)."""
        with self._lock:
            return tuple(self._history.get((res.group, res.plural), ()))

    def compact(self) -> None:
        """Forget every event, as an API server restarted after a compaction has: a watch
        from any version held before is 410 Gone."""
        with self._lock:
            for kind in set(self._history) | set(self._kinds):
                self._expired[kind] = self._rv
            self._history.clear()

    # -- writing -------------------------------------------------------------------------
    def _commit(self, res: Resource, key: Key, obj: Obj | None, kind: str, verb: str) -> Obj:
        """Store `obj` (None: delete) at the next version. `obj` is the store's from here on
        and is never changed again (snapshots and the watch history share it): a later
        write stores a new object."""
        self._rv += 1
        if obj is None:
            gone = self._objects.pop(key)
            del self._kinds[key[:2]][key[2:]]
            self._pods.put(key, None)
            # A new object for the deletion's version: a snapshot holding the old one keeps it.
            old = {**gone, "metadata": {**gone["metadata"], "resourceVersion": str(self._rv)}}
            self._record(WatchEvent(self._rv, "DELETED", res, old))
            self.writes.append((verb, res.plural, key[2], key[3]))
            self._lock.notify_all()
            return _clone(old)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._put(key, obj)
        self._record(WatchEvent(self._rv, kind, res, obj))
        self.writes.append((verb, res.plural, key[2], key[3]))
        self._lock.notify_all()
        return _clone(obj)

    def _record(self, e: WatchEvent) -> None:
        kind = (e.res.group, e.res.plural)
        hist = self._history.get(kind)
        if hist is None:
            hist = self._history[kind] = deque(maxlen=self._history_len)
        if len(hist) == self._history_len:
            self._expired[kind] = hist[0].rv
        hist.append(e)

    def _put(self, key: Key, obj: Obj) -> None:
        self._objects[key] = obj
        self._kinds.setdefault(key[:2], {})[key[2:]] = obj
        self._pods.put(key, obj)

    def create(self, res: Resource, ns: str, obj: Obj) -> Obj:
        obj = _clone(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise ApiError(422, "Invalid", f"{res.kind}: metadata.name: Required value")
        if res.namespaced:
            if meta.get("namespace") not in (None, "", ns):
                raise ApiError(400, "BadRequest", "the namespace of the object does not match "
                               "the namespace on the request")
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        with self._lock:
            key = (res.group, res.plural, ns if res.namespaced else "", meta["name"])
            if key in self._objects:
                raise ApiError(409, "AlreadyExists",
                               f'{res.plural} "{meta["name"]}" already exists')
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if res.has_status and res.kind != "Node":
                meta["generation"] = 1
            if res.kind == "Service" and "clusterIP" not in (obj.get("spec") or {}):
                self._ips += 1  # allocated from the service CIDR, as the API server does
                obj.setdefault("spec", {})["clusterIP"] = \
                    f"10.96.{self._ips // 250}.{self._ips % 250 + 2}"
            self._validate(res, obj)
            out = self._commit(res, key, obj, "ADDED", "create")
            self._controllers(res, obj)
            return _clone(self._objects.get(key, out))

    def replace(self, res: Resource, ns: str, name: str, new: Obj, *, subresource: str = "",
                precondition: str | None = None) -> Obj:
        """PUT semantics, also the last step of every PATCH."""
        with self._lock:
            key = (res.group, res.plural, ns if res.namespaced else "", name)
            cur = self._objects.get(key)
            if cur is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            want_rv = precondition if precondition is not None else \
                (new.get("metadata") or {}).get("resourceVersion")
            if want_rv not in (None, "") and str(want_rv) != cur["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict",
                               f'Operation cannot be fulfilled on {res.plural} "{name}": the '
                               "object has been modified; please apply your changes to the "
                               "latest version and try again")
            new = _clone(new)
            meta = new.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(400, "BadRequest", "metadata.name cannot be changed")
            for k in ("uid", "creationTimestamp", "namespace", "generation"):
                if k in cur["metadata"]:
                    meta[k] = cur["metadata"][k]
                else:
                    meta.pop(k, None)
            meta["name"] = name
            new["kind"], new["apiVersion"] = res.kind, res.api_version
            if res.has_status:
                # The main resource ignores status; /status ignores everything else.
                if subresource == "status":
                    keep = _clone(cur)
                    keep["status"] = new.get("status", {})
                    new = keep
                else:
                    new["status"] = _clone(cur.get("status", {}))
                    if "generation" in meta and new.get("spec") != cur.get("spec"):
                        meta["generation"] += 1  # a change of the desired state, as the API counts
            self._validate(res, new)
            if _without_rv(new) == _without_rv(cur):
                return _clone(cur)  # a no-op write does not bump the version
            out = self._commit(res, key, new, "MODIFIED", "update")
            self._controllers(res, new)
            # The answer shows the object as the controllers left it, as a real read would.
            return _clone(self._objects.get(key, out))

    def delete(self, res: Resource, ns: str, name: str) -> Obj:
        with self._lock:
            key = (res.group, res.plural, ns if res.namespaced else "", name)
            if key not in self._objects:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            out = self._commit(res, key, None, "DELETED", "delete")
            if res == CRDS:  # its resource is no longer served, its objects are gone
                versions = served_resources(out)
                for served, _ in versions:
                    self.resources.pop((served.group, served.version, served.plural), None)
                    self._schemas.pop(served, None)
                served = versions[0][0]
                for k in [k for k in self._objects if k[:2] == (served.group, served.plural)]:
                    self._commit(served, k, None, "DELETED", "delete")
            return out

    def _define(self, crd: Obj) -> None:
        """A CRD written: serve its resource, check writes against its schema, and say so in
        its status (Established), as the apiextensions controller does."""
        for res, schema in served_resources(crd):
            self.resources[(res.group, res.version, res.plural)] = res
            self._schemas[res] = schema
        key = (CRDS.group, CRDS.plural, "", crd["metadata"]["name"])
        stored = self._objects[key]
        if not (stored.get("status") or {}).get("conditions"):
            # A new object, as every write stores (snapshots share the stored one).
            self._put(key, {**stored, "status": {"conditions": [
                {"type": t, "status": "True", "lastTransitionTime": _now()}
                for t in ("NamesAccepted", "Established")],
                "acceptedNames": (crd.get("spec") or {}).get("names", {})}})

    def mutate(self, res: Resource, ns: str, name: str, fn: Callable[[Obj], None], *,
               subresource: str = "") -> Obj:
        """Read-modify-write under the lock: how the simulator itself changes objects."""
        with self._lock:
            obj = self.get(res, ns, name)
            fn(obj)
            obj["metadata"].pop("resourceVersion", None)
            return self.replace(res, ns, name, obj, subresource=subresource)

    def touch(self, res: Resource, ns: str, name: str, fn: Callable[[Obj], None]) -> None:
        """A write with no semantics to apply (a kubelet renewing its Lease): one copy,
        shared by the store and the watch history, none back. A thousand kubelets renew
        every few seconds; `mutate` copies three times and validates. ApiError 404 if
        absent."""
        with self._lock:
            key = (res.group, res.plural, ns, name)
            cur = self._objects.get(key)
            if cur is None:
                raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
            obj = _clone(cur)  # never in place: a snapshot may hold the stored one
            fn(obj)
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._put(key, obj)
            self._record(WatchEvent(self._rv, "MODIFIED", res, obj))
            self._lock.notify_all()

    # -- semantics -------------------------------------------------------------------------
    def _validate(self, res: Resource, obj: Obj) -> None:
        if res == CRDS:
            resource_of(obj)  # 422 if it cannot define a resource
        if res in self._schemas:
            validate_custom(res, self._schemas[res], obj)
        if res.kind == "Node":
            validate_taints(obj.get("spec") or {})

    def _controllers(self, res: Resource, obj: Obj) -> None:
        """Called with the lock held after a write."""
        if res == CRDS:
            self._define(obj)
        if res.kind != "Node":
            return
        name = obj["metadata"]["name"]
        spec = obj.get("spec") or {}
        taints = list(spec.get("taints") or [])
        has = any(t.get("key") == UNSCHEDULABLE_TAINT for t in taints)
        if bool(spec.get("unschedulable")) != has:
            cur = self.get(res, "", name)
            if spec.get("unschedulable"):
                taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule",
                               "timeAdded": _now()})
            else:
                taints = [t for t in taints if t.get("key") != UNSCHEDULABLE_TAINT]
            cur.setdefault("spec", {})["taints"] = taints
            cur["metadata"].pop("resourceVersion", None)
            self.replace(res, "", name, cur)
            return
        no_execute = [t for t in taints if t.get("effect") == "NoExecute"]
        if not no_execute:
            return
        pods = RESOURCES[("", "v1", "pods")]
        for key in self._pods.on(name):
            tol = (self._objects[key].get("spec") or {}).get("tolerations") or []
            if not all(tolerates(tol, t) for t in no_execute):
                self.evictions.append((key[2], key[3], name))
                self._commit(pods, key, None, "DELETED", "evict")
