"""CustomResourceDefinitions as the API server treats them: creating one serves its resource,
and every write of that resource is checked against the version's structural OpenAPI schema,
its unknown fields pruned (the default since apiextensions.k8s.io/v1), its errors a 422
`Invalid` naming the field, as the real server words them.

The subset of the schema language the project's CRDs use: type, properties, required, enum,
minLength, maxLength, pattern, items, additionalProperties (maps), nullable,
x-kubernetes-preserve-unknown-fields.
`format: date-time` is checked as the server checks it (RFC 3339)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sentinel.sim.objects import ApiError, Obj, Resource

__all__ = ["resource_of", "served_resources", "validate_custom"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float)}


def resource_of(crd: Obj) -> tuple[Resource, dict[str, Any]]:
    """The resource a CRD serves (its storage version) and that version's schema."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if v.get("served")]
    missing = [f for f, v in (("spec.group", spec.get("group")),
                              ("spec.names.plural", names.get("plural")),
                              ("spec.names.kind", names.get("kind")),
                              ("spec.versions", versions)) if not v]
    if missing:
        raise ApiError(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io '
                       f'"{(crd.get("metadata") or {}).get("name", "")}" is invalid: '
                       + ", ".join(f"{m}: Required value" for m in missing))
    version = next((v for v in versions if v.get("storage")), versions[0])
    return _served(spec, names, version)


def served_resources(crd: Obj) -> list[tuple[Resource, dict[str, Any]]]:
    """Every version the CRD serves, the storage version first. The objects are one set
    whatever the version they are read at (conversion strategy None: only `apiVersion`
    differs), as OpenYurt's NodePool serves v1beta1 and v1beta2 of the same pools."""
    storage, schema = resource_of(crd)
    spec = crd["spec"]
    out = [(storage, schema)]
    out.extend(_served(spec, spec["names"], v) for v in spec["versions"]
               if v.get("served") and v["name"] != storage.version)
    return out


def _served(spec: Obj, names: Obj, version: Obj) -> tuple[Resource, dict[str, Any]]:
    schema = ((version.get("schema") or {}).get("openAPIV3Schema")) or {}
    res = Resource(spec["group"], version["name"], names["plural"], names["kind"],
                   spec.get("scope", "Namespaced") == "Namespaced",
                   "status" in (version.get("subresources") or {}),
                   tuple(names.get("shortNames") or ()))
    return res, schema


def validate_custom(res: Resource, schema: dict[str, Any], obj: Obj,
                    strict: bool = False) -> None:
    """Prune `obj` in place to what the schema knows; 422 with every problem otherwise. With
    `strict` (the request's `fieldValidation=Strict`), an unknown field is an error instead."""
    problems: list[str] = []
    unknown: list[str] = []
    _walk(schema, obj, "", problems, top=True, unknown=unknown)
    if strict and unknown:
        raise ApiError(400, "BadRequest", f'{res.kind} in version "{res.version}" cannot be '
                       "handled as a " + res.kind + ": strict decoding error: "
                       + ", ".join(f'unknown field "{u}"' for u in unknown))
    if problems:
        name = (obj.get("metadata") or {}).get("name", "")
        raise ApiError(422, "Invalid", f'{res.kind}.{res.group} "{name}" is invalid: '
                       + ", ".join(problems))


def _walk(schema: dict[str, Any], value: Any, path: str, problems: list[str],
          top: bool = False, unknown: list[str] | None = None) -> None:
    where = path or "<root>"
    if value is None:
        if not schema.get("nullable"):
            problems.append(f'{where}: Invalid value: "null": {where} in body must be of type '
                            f'{schema.get("type", "object")}: "null"')
        return
    kind = schema.get("type")
    if kind and not (isinstance(value, _TYPES[kind])
                     and not (kind in ("integer", "number") and isinstance(value, bool))):
        problems.append(f'{where}: Invalid value: "{_typename(value)}": {where} in body must '
                        f'be of type {kind}: "{_typename(value)}"')
        return
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(f'"{v}"' for v in schema["enum"])
        problems.append(f'{where}: Unsupported value: "{value}": supported values: {allowed}')
    if isinstance(value, str):
        _string(schema, value, where, problems)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            _walk(schema["items"], item, f"{path}[{i}]", problems, unknown=unknown)
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        # A map (labels, annotations): every key kept, every value checked.
        for k, item in value.items():
            _walk(schema["additionalProperties"], item, f"{path + '.' if path else ''}{k}",
                  problems, unknown=unknown)
        return
    if isinstance(value, dict):
        props: dict[str, Any] = schema.get("properties") or {}
        for req in schema.get("required") or []:
            if req not in value:
                problems.append(f"{path + '.' if path else ''}{req}: Required value")
        if top:  # apiVersion, kind and metadata are the server's
            props = {**props, "apiVersion": {}, "kind": {}, "metadata": {}}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            for k in [k for k in value if k not in props]:
                if unknown is not None:
                    unknown.append(f"{path + '.' if path else ''}{k}")
                del value[k]  # pruned, as the server prunes unknown fields
        for k, sub in props.items():
            if k in value and sub and not (top and k in ("apiVersion", "kind", "metadata")):
                _walk(sub, value[k], f"{path + '.' if path else ''}{k}", problems,
                      unknown=unknown)


def _string(schema: dict[str, Any], value: str, where: str, problems: list[str]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{where}: Too long: may not be more than {schema['maxLength']} bytes")
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f'{where}: Invalid value: "{value}": {where} in body should be at '
                        f"least {schema['minLength']} chars long")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f'{where}: Invalid value: "{value}": {where} in body should match '
                        f"'{schema['pattern']}'")
    if schema.get("format") == "date-time":
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            problems.append(f'{where}: Invalid value: "{value}": {where} in body must be of '
                            "type date-time")


def _typename(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(v), type(v).__name__)
