"""Label and field selectors as the API server parses them, for the emulator's lists and
watches."""

from __future__ import annotations

from collections.abc import Callable

from sentinel.sim.objects import ApiError, Obj

__all__ = ["field_selector", "parse_label_selector"]


def parse_label_selector(sel: str) -> Callable[[dict[str, str]], bool]:
    """Equality-based selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`), as the API accepts them."""
    # (key, op, value): op is "=", "!=", "exists" or "!exists"
    reqs: list[tuple[str, str, str]] = []
    for part in filter(None, (p.strip() for p in sel.split(","))):
        if " in " in part or " notin " in part or "(" in part:
            raise ApiError(400, "BadRequest", f"set-based selector {part!r} is not supported "
                           "by the emulator")
        if "!=" in part:
            k, v = (x.strip() for x in part.split("!=", 1))
            reqs.append((k, "!=", v))
        elif "=" in part:
            k, v = (x.strip() for x in part.replace("==", "=").split("=", 1))
            reqs.append((k, "=", v))
        elif part.startswith("!"):
            reqs.append((part[1:].strip(), "!exists", ""))
        else:
            reqs.append((part, "exists", ""))

    def ok(labels: dict[str, str], k: str, op: str, v: str) -> bool:
        if op == "=":
            return labels.get(k) == v
        if op == "!=":
            return labels.get(k) != v
        return (k in labels) == (op == "exists")

    return lambda labels: all(ok(labels, k, op, v) for k, op, v in reqs)


_FIELDS: dict[str, tuple[str, str]] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "spec.nodeName": ("spec", "nodeName"),
}


def field_selector(sel: str) -> Callable[[Obj], bool]:
    reqs: list[tuple[tuple[str, str], bool, str]] = []  # (path, negated, value)
    for part in filter(None, (p.strip() for p in sel.split(","))):
        neg = "!=" in part
        k, v = (x.strip() for x in part.replace("==", "=").split("!=" if neg else "=", 1))
        if k not in _FIELDS:
            raise ApiError(400, "BadRequest", f'"{k}" is not a known field selector: only '
                           f'"{", ".join(_FIELDS)}"')
        reqs.append((_FIELDS[k], neg, v))

    def match(o: Obj) -> bool:
        for (top, name), neg, v in reqs:
            got = (o.get(top) or {}).get(name)
            if (got != v) if neg else (got == v):
                continue
            return False
        return True

    return match
