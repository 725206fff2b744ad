"""API discovery as the API server answers it (the legacy, unaggregated JSON: kubectl falls
back to it), for the resources a store serves: kubectl needs it before any request."""

from __future__ import annotations

from collections.abc import Iterable

from sentinel.sim.objects import Obj, Resource

__all__ = ["discovery", "openapi_v3"]

_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resources(served: list[Resource]) -> list[Obj]:
    out: list[Obj] = []
    for r in served:
        out.append({"name": r.plural, "singularName": r.kind.lower(), "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": _VERBS, "shortNames": list(r.short_names)})
        if r.has_status:
            out.append({"name": f"{r.plural}/status", "singularName": "", "namespaced":
                        r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]})
    return out


def discovery(path: str, resources: Iterable[Resource]) -> Obj | None:
    """The body for a discovery path (/api, /apis, /api/v1, /apis/<group>/<version>), None
    for any other path."""
    served = list(resources)
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
    if path == "/apis":
        groups: dict[str, list[str]] = {}
        for r in served:
            if r.group and r.version not in groups.setdefault(r.group, []):
                groups[r.group].append(r.version)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
             "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
            for g, vs in sorted(groups.items())]}
    parts = path.strip("/").split("/")
    if parts == ["api", "v1"]:
        group, version = "", "v1"
    elif len(parts) == 3 and parts[0] == "apis":
        group, version = parts[1], parts[2]
    else:
        return None
    mine = [r for r in served if (r.group, r.version) == (group, version)]
    if not mine:
        return None
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": _resources(mine)}


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_v3(path: str, resources: Iterable[Resource]) -> Obj | None:
    """The OpenAPI v3 index (/openapi/v3) and, per group-version, a document with each kind's
    PATCH operation and its `fieldValidation` parameter: what kubectl reads to know the
    server validates fields itself (sim/fields.py does). No schemas: nothing here is
    patched with a strategic merge computed by kubectl."""
    served = list(resources)
    if path == "/openapi/v3":
        gvs = sorted({(r.group, r.version) for r in served})
        return {"paths": {_gv_path(g, v): {"serverRelativeURL":
                                            f"/openapi/v3/{_gv_path(g, v)}?hash=sim"}
                          for g, v in gvs}}
    for g, v in {(r.group, r.version) for r in served}:
        if path != f"/openapi/v3/{_gv_path(g, v)}":
            continue
        paths: dict[str, Obj] = {}
        for r in (r for r in served if (r.group, r.version) == (g, v)):
            ns = "/namespaces/{namespace}" if r.namespaced else ""
            paths[f"/{_gv_path(g, v)}{ns}/{r.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": g, "version": v, "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query",
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.30.0"},
                "paths": paths}
    return None
