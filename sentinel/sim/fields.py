"""`fieldValidation=Strict`, which kubectl asks of every write (its default `--validate=strict`
once the server's OpenAPI says it supports the parameter): an object with a field its schema
does not declare is refused, not silently pruned. Built-in kinds are checked against the
Kubernetes 1.30 schemas (kubernetes-validate, a development dependency: only tests send
strict writes); custom resources against their CRD's schema."""

from __future__ import annotations

import copy

from sentinel.sim.crds import validate_custom
from sentinel.sim.objects import ApiError, Obj, Resource

__all__ = ["check_strict"]

K8S = "1.30.0"


def check_strict(res: Resource, schema: dict[str, object] | None, obj: Obj) -> None:
    """400 naming an undeclared field, 422 for a value its schema refuses; else nothing."""
    if schema is not None:
        validate_custom(res, dict(schema), copy.deepcopy(obj), strict=True)
        return
    try:
        import kubernetes_validate
    except ImportError:
        raise ApiError(500, "InternalError", "strict field validation needs kubernetes-validate "
                       "(pip install -e '.[dev]')") from None
    try:
        kubernetes_validate.validate(obj, K8S, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        if "Additional properties" in e.message:
            field = e.message.split("'")[1] if "'" in e.message else "?"
            raise ApiError(400, "BadRequest", f'{res.kind} in version "{res.version}" cannot '
                           f"be handled as a {res.kind}: strict decoding error: unknown field "
                           f'"{where + "." if where else ""}{field}"') from None
        name = (obj.get("metadata") or {}).get("name", "")
        raise ApiError(422, "Invalid", f'{res.kind} "{name}" is invalid: {where}: '
                       f"{e.message}") from None
