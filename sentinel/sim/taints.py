"""Node taints as the API server checks them and the taint manager reads them: what a write
may carry (422 otherwise, with the field and the reason the real API gives) and whether a
pod's tolerations let it stay, and the index of pods by node it reads them from."""

from __future__ import annotations

import re

from sentinel.sim.objects import ApiError, Key, Obj

__all__ = ["UNSCHEDULABLE_TAINT", "VALID_EFFECTS", "PodsByNode", "tolerates", "validate_taints"]

VALID_EFFECTS = {"NoSchedule", "PreferNoSchedule", "NoExecute"}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
#: The taint the node lifecycle controller keeps in step with `spec.unschedulable`.
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


def validate_taints(spec: Obj) -> None:
    """A Node's `spec` as a write leaves it; an empty taint list is dropped (omitempty, as
    the real API serialises it)."""
    if "taints" in spec and not spec["taints"]:
        del spec["taints"]
    seen = set()
    for i, t in enumerate(spec.get("taints") or []):
        if not isinstance(t, dict) or not t.get("key"):
            raise ApiError(422, "Invalid", f"spec.taints[{i}].key: Required value")
        if t.get("effect") not in VALID_EFFECTS:
            raise ApiError(422, "Invalid", f"spec.taints[{i}].effect: Unsupported value: "
                           f"{t.get('effect')!r}")
        if not _LABEL_VALUE.match(str(t.get("value", ""))):
            raise ApiError(422, "Invalid", f"spec.taints[{i}].value: Invalid value: "
                           f"{t.get('value')!r}: a valid label must be an empty string or "
                           "consist of alphanumeric characters, '-', '_' or '.' (at most 63)")
        if (t["key"], t["effect"]) in seen:
            raise ApiError(422, "Invalid", f"spec.taints[{i}]: Duplicate value: taints must "
                           f"be unique by key and effect pair ({t['key']}, {t['effect']})")
        seen.add((t["key"], t["effect"]))


def tolerates(tolerations: list[Obj], taint: Obj) -> bool:
    for t in tolerations or []:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator", "Equal")
        if op == "Exists":
            if not t.get("key") or t.get("key") == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


class PodsByNode:
    """The pods bound to each node, kept as pods are written: the taint manager reads one
    node's pods, as the real one does from its informer's index. Scanning every object of
    the store instead, under its lock, on every write of a node with a NoExecute taint, held
    every request for seconds at fleet size (700,000 objects): twelve isolations stalled
    sentinel's cycle for 60 s in bench/fleet.py, which no API server does."""

    def __init__(self) -> None:
        self._on: dict[str, set[Key]] = {}
        self._node_of: dict[Key, str] = {}

    def put(self, key: Key, obj: Obj | None) -> None:
        """An object written (None: deleted); any other kind than a pod is not indexed."""
        if key[:2] != ("", "pods"):
            return
        node = ((obj or {}).get("spec") or {}).get("nodeName") or ""
        old = self._node_of.pop(key, "")
        if old and old != node:
            self._on[old].discard(key)
            if not self._on[old]:
                del self._on[old]
        if node:
            self._node_of[key] = node
            self._on.setdefault(node, set()).add(key)

    def on(self, node: str) -> list[Key]:
        return sorted(self._on.get(node, ()))
