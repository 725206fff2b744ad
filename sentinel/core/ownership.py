"""What sentinel owns on a node, read from and written to the node object itself.

Sentinel owns exactly the taints whose key starts with `<taint_domain>/`, the annotation
`<taint_domain>/isolation`, and a cordon only when that annotation says sentinel made it.
Because ownership lives on the node, a restarted sentinel (or a new leader) rebuilds what it
holds from the cluster, and never edits a taint or cordon someone else made. The annotation
also keeps when a release last freed the node, so flap damping survives the loss of any
replica's disk.

Pure functions over the JSON shapes of the Kubernetes API; the adapters do the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sentinel.core.autonomy import parse_go_duration
from sentinel.core.model import (
    NODE_KEY,
    Action,
    ActionKind,
    Held,
    HeldKey,
    NodeInfo,
    NodeName,
    Ready,
    SiteName,
)

AUTONOMY_DURATION = "node.openyurt.io/autonomy-duration"

__all__ = [
    "AUTONOMY_DURATION",
    "annotation_key",
    "apply_actions",
    "held_from_node",
    "memory_from_nodes",
    "node_info",
    "render_patch",
    "unschedulable_after",
]

Obj = Mapping[str, Any]


def annotation_key(domain: str) -> str:
    return f"{domain}/isolation"


def _truthy(v: object) -> bool:
    return isinstance(v, str) and v.strip().lower() == "true"


def held_from_node(obj: Obj, domain: str) -> Held:
    """The isolations sentinel holds, taken from the node's taints (what is really in force)
    and enriched by the annotation (rule, since, decision id)."""
    meta = obj.get("metadata") or {}
    ann = (meta.get("annotations") or {}).get(annotation_key(domain))
    record: dict[str, Any] = {}
    if ann:
        try:
            loaded = json.loads(ann)
            record = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            record = {}
    raw_keys = record.get("keys")
    recorded: dict[str, Any] = raw_keys if isinstance(raw_keys, dict) else {}
    prefix = domain + "/"
    keys: dict[str, HeldKey] = {}
    for t in (obj.get("spec") or {}).get("taints") or []:
        tkey = t.get("key", "")
        if not tkey.startswith(prefix):
            continue
        key = tkey[len(prefix):]
        raw = recorded.get(key)
        rec: dict[str, Any] = raw if isinstance(raw, dict) else {}
        since = rec.get("since")
        keys[key] = HeldKey(key=key, effect=t.get("effect", ""), rule=t.get("value", ""),
                            since=float(since) if isinstance(since, int | float) else None,
                            decision=str(rec.get("decision", "")))
    cordoned = bool(record.get("cordoned")) and bool((obj.get("spec") or {}).get("unschedulable"))
    released = record.get("released")
    return Held(keys=keys, cordoned=cordoned,
                released=float(released) if isinstance(released, int | float) else None)


def slim_node(obj: Obj, domain: str, *, autonomy_key: str,
              duration_key: str = AUTONOMY_DURATION) -> dict[str, Any]:
    """The parts of a Node that `node_info` reads, and nothing else: kept on receipt by the
    cloud view, so a kubelet-sized Node (about 9.5 KB of JSON: 50 images, nodeInfo, addresses,
    managedFields) costs a few hundred bytes in memory. Change the two together."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ann = meta.get("annotations") or {}
    wanted = (autonomy_key, duration_key, annotation_key(domain))
    prefix = domain + "/"
    ready = [{k: c[k] for k in ("type", "status", "lastTransitionTime") if k in c}
             for c in (obj.get("status") or {}).get("conditions") or []
             if c.get("type") == "Ready"]
    return {
        "metadata": {"name": meta.get("name", ""),
                     "resourceVersion": meta.get("resourceVersion", ""),
                     "labels": meta.get("labels") or {},
                     "annotations": {k: ann[k] for k in wanted if k in ann}},
        "spec": {"unschedulable": bool(spec.get("unschedulable")),
                 "taints": [t for t in spec.get("taints") or []
                            if str(t.get("key", "")).startswith(prefix)]},
        "status": {"conditions": ready},
    }


def node_info(obj: Obj, site: SiteName | None, domain: str, *, autonomy_key: str,
              bound: bool, exempt: Callable[[str, Mapping[str, str]], bool],
              duration_key: str = AUTONOMY_DURATION) -> NodeInfo:
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    ready, unready_since = Ready.UNKNOWN, None
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            try:
                ready = Ready(c.get("status", "Unknown"))
            except ValueError:
                ready = Ready.UNKNOWN
            if ready is not Ready.TRUE:
                unready_since = _timestamp(c.get("lastTransitionTime"))
    name = meta.get("name", "")
    autonomous = _truthy(annotations.get(autonomy_key)) or _truthy(labels.get(autonomy_key))
    by = f"{autonomy_key}=true" if autonomous else "a pod bound to it" if bound else ""
    raw = annotations.get(duration_key)
    window = parse_go_duration(raw) if isinstance(raw, str) else None
    note = f"{duration_key}={raw!r} is not a duration: ignored, as OpenYurt ignores it" \
        if raw is not None and window is None else ""
    return NodeInfo(
        name=NodeName(name), site=site, ready=ready,
        unschedulable=bool((obj.get("spec") or {}).get("unschedulable")),
        protected=autonomous or bound, exempt=exempt(name, labels),
        held=held_from_node(obj, domain), protected_by=by, autonomy_for=window,
        unready_since=unready_since, autonomy_note=note,
    )


def _timestamp(v: object) -> float | None:
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def pod_binds(pod: Obj, binding_key: str) -> str | None:
    """The node a pod is bound to, if it carries the binding mark; else None."""
    meta = pod.get("metadata") or {}
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        return None
    if _truthy((meta.get("labels") or {}).get(binding_key)) or \
            _truthy((meta.get("annotations") or {}).get(binding_key)):
        return str(node)
    return None


def apply_actions(held: Held, actions: Iterable[Action], now: float,
                  *, already_unschedulable: bool) -> Held:
    """What sentinel will hold after these actions. Shared by the real and dry-run actuators,
    so dry-run simulates exactly what enforce would do."""
    keys = dict(held.keys)
    released = held.released
    for a in actions:
        if a.kind is ActionKind.ISOLATE:
            prev = keys.get(a.key)
            since = prev.since if prev is not None and prev.since is not None else now
            keys[a.key] = HeldKey(a.key, a.effect, a.rule, since, a.id)
        else:
            keys.pop(a.key, None)
            if a.evidence.get("frees_node") is True:
                released = now
    level2 = NODE_KEY in keys
    # Cordon only if nobody else did: a human's cordon stays theirs.
    cordoned = level2 and (held.cordoned or not already_unschedulable)
    return Held(keys=keys, cordoned=cordoned, released=released)


def memory_from_nodes(nodes: Iterable[NodeInfo], now: float,
                      flap_window: float) -> tuple[dict[str, float], tuple[float, ...]]:
    """Decide's memory as the nodes carry it: the last release that freed each node within
    the flap window, and the isolations (held keys) of the last minute, for the rate budget.
    What any replica reads the same, whatever its own disk holds."""
    last = {str(n.name): n.held.released for n in nodes
            if n.held.released is not None and now - n.held.released < flap_window}
    recent = sorted(k.since for n in nodes for k in n.held.keys.values()
                    if k.since is not None and now - k.since < 60.0)
    return last, tuple(recent)


def unschedulable_after(before: Held, after: Held, unschedulable: bool) -> bool:
    """The node's `spec.unschedulable` once `after` is in force: sentinel uncordons only what it
    cordoned, and leaves anyone else's cordon as it is."""
    if before.cordoned and not after.cordoned:
        return False
    return True if after.cordoned else unschedulable


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _record(held: Held) -> str | None:
    if not held.keys and not held.cordoned and held.released is None:
        return None
    record: dict[str, Any] = {
        "keys": {k: h.record() for k, h in sorted(held.keys.items())},
        "cordoned": held.cordoned,
    }
    if held.released is not None:
        record["released"] = held.released
    return json.dumps(record, sort_keys=True)


def render_patch(obj: Obj, actions: Sequence[Action], domain: str,
                 now: float) -> dict[str, Any] | None:
    """A strategic-merge patch that makes the node show `actions` applied, or None if it
    already does.

    `spec.taints` has no patch merge key in the Kubernetes API: a patch replaces the whole
    list. So the patch carries every foreign taint unchanged plus ours, and the node's
    resourceVersion as a precondition: if anyone changed the node since we read it, the API
    answers 409 and the caller reads again. Nobody's taint is ever lost.
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    taints = list(spec.get("taints") or [])
    unschedulable = bool(spec.get("unschedulable"))
    held = held_from_node(obj, domain)
    new = apply_actions(held, actions, now, already_unschedulable=unschedulable)

    prefix = domain + "/"

    def ours(key: str, old: Mapping[str, Any] | None) -> dict[str, Any]:
        h = new.keys[key]
        t: dict[str, Any] = {"key": prefix + key, "value": h.rule, "effect": h.effect}
        if h.effect == "NoExecute":
            same = old is not None and old.get("effect") == "NoExecute"
            t["timeAdded"] = old.get("timeAdded") if same and old else _iso(now)
        return t

    # Keep every taint where it stands (foreign ones untouched), edit ours in place, append
    # new ones: an unchanged node then renders to exactly its current list.
    new_taints: list[Mapping[str, Any]] = []
    done: set[str] = set()
    for t in taints:
        tkey = t.get("key", "")
        if not tkey.startswith(prefix):
            new_taints.append(t)
        elif tkey[len(prefix):] in new.keys and tkey not in done:
            new_taints.append(ours(tkey[len(prefix):], t))
            done.add(tkey)
    new_taints += [ours(k, None) for k in sorted(new.keys) if prefix + k not in done]

    new_unsched = unschedulable_after(held, new, unschedulable)

    def strip(ts: Iterable[Mapping[str, Any]]) -> list[tuple[Any, Any, Any]]:
        return [(t.get("key"), t.get("value"), t.get("effect")) for t in ts]

    # What is in force is the taints and the cordon; an action replayed because the node
    # cache lagged must not rewrite the node (nor its decision record).
    if strip(new_taints) == strip(taints) and new_unsched == unschedulable:
        return None
    return {
        "metadata": {"resourceVersion": meta.get("resourceVersion"),
                     "annotations": {annotation_key(domain): _record(new)}},
        "spec": {"taints": new_taints, "unschedulable": new_unsched},
    }
