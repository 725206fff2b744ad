"""The three PATCH flavours of the Kubernetes API, with the semantics the real server has.

- JSON patch (RFC 6902): `application/json-patch+json`;
- JSON merge patch (RFC 7386): `application/merge-patch+json` — lists are replaced whole;
- strategic merge patch: `application/strategic-merge-patch+json` — like merge patch, except
  for the lists the Go types mark with a patch merge key (merged item by item) and the
  `$patch` directives. Lists without one — `spec.taints` among them — are replaced whole.

Only the merge keys of the fields sentinel and the simulator touch are listed; a list not in
the table is replaced, which is what the real server does for atomic lists.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "json_patch", "merge_patch", "strategic_merge_patch"]


class PatchError(ValueError):
    """The patch cannot be applied; the server answers 422 (or 400 for malformed ones)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# Path (with list positions dropped) -> merge key, from the Kubernetes Go types' tags.
MERGE_KEYS: dict[tuple[str, ...], str] = {
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("metadata", "ownerReferences"): "uid",
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "containers", "env"): "name",
    ("spec", "containers", "ports"): "containerPort",
    ("spec", "template", "spec", "containers"): "name",
    ("spec", "template", "spec", "initContainers"): "name",
    ("spec", "template", "spec", "volumes"): "name",
    ("spec", "template", "spec", "containers", "env"): "name",
    ("spec", "template", "spec", "containers", "ports"): "containerPort",
}
# Lists of scalars that strategic merge unions instead of replacing.
MERGE_PRIMITIVES: set[tuple[str, ...]] = {("metadata", "finalizers")}


def strategic_merge_patch(target: Any, patch: Any, path: tuple[str, ...] = ()) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise PatchError(f"unknown $patch directive {directive!r} at {'.'.join(path) or '.'}")
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$"):
            if k in ("$retainKeys", "$setElementOrder") or k.startswith("$setElementOrder/") or \
                    k.startswith("$deleteFromPrimitiveList/"):
                raise PatchError(f"directive {k} is not supported by the emulator")
            continue
        sub = (*path, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, sub)
        elif isinstance(v, dict):
            merged = strategic_merge_patch(out.get(k), v, sub)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = v
    return out


def _merge_list(current: Any, patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    if path in MERGE_PRIMITIVES:
        base = list(current) if isinstance(current, list) else []
        return base + [v for v in patch if v not in base]
    key = MERGE_KEYS.get(path)
    if key is None:
        return copy.deepcopy(patch)  # atomic list: replaced whole, as for spec.taints
    base = [dict(i) for i in current] if isinstance(current, list) else []
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{'.'.join(path)}: each item needs its merge key {key!r}")
        idx = next((i for i, b in enumerate(base) if b.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                base.pop(idx)
            continue
        if idx is None:
            base.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            base[idx] = strategic_merge_patch(base[idx], item, path)
    return base


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for p in parts:
        if isinstance(doc, dict):
            if p not in doc:
                raise PatchError(f"path element {p!r} not found")
            doc = doc[p]
        elif isinstance(doc, list):
            try:
                doc = doc[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"list index {p!r} out of range") from None
        else:
            raise PatchError(f"cannot descend into {type(doc).__name__} at {p!r}")
    return doc


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch is a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError("each JSON patch operation needs 'op' and 'path'")
        kind, parts = op["op"], _pointer(op["path"])
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"test failed at {op['path']}")
            continue
        if kind in ("move", "copy"):
            value = copy.deepcopy(_walk(doc, _pointer(op.get("from", ""))))
            if kind == "move":
                doc = _remove(doc, _pointer(op["from"]))
            doc = _add(doc, parts, value)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc = _remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)  # must exist
            doc = _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        else:
            raise PatchError(f"unknown JSON patch op {kind!r}")
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise PatchError(f"bad list index {last!r}") from None
            if not 0 <= i <= len(parent):
                raise PatchError(f"list index {i} out of range")
            parent.insert(i, value)
    else:
        raise PatchError(f"cannot add into {type(parent).__name__}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path element {last!r} not found")
        del parent[last]
    elif isinstance(parent, list):
        try:
            parent.pop(int(last))
        except (ValueError, IndexError):
            raise PatchError(f"list index {last!r} out of range") from None
    return doc
