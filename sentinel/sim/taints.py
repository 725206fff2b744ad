"""Node taints as the API server checks them and the taint manager reads them: what a write
may carry (422 otherwise, with the field and the reason the real API gives) and whether a
pod's tolerations let it stay."""

from __future__ import annotations

import re

from sentinel.sim.objects import ApiError, Obj

__all__ = ["UNSCHEDULABLE_TAINT", "VALID_EFFECTS", "tolerates", "validate_taints"]

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
