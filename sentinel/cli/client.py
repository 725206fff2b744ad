"""The CLI's HTTP client for a running sentinel. Every failure becomes one `ClientError` whose
message is the single line the on-call reads, and whose code is the exit status."""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Any

from sentinel.core.errors import SentinelError, WiringError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

__all__ = ["EXIT_AUTH", "EXIT_NOT_FOUND", "EXIT_UNREACHABLE", "Client", "ClientError",
           "answer_model", "answers"]

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_ERROR, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND = 1, 3, 4, 5


class ClientError(SentinelError):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code


@cache
def answers() -> tuple[tuple[str, re.Pattern[str], Any], ...]:
    """The model of every answer, by method and path: the same models the server answers
    with (http/models.py); tests/test_http_contract.py checks that this covers every route.
    Built on first use: `sentinel --help` loads neither pydantic's models nor httpx."""
    from sentinel.http import models

    return tuple((m, re.compile(f"^/api/v1/{p}$"), t) for m, p, t in (
        ("GET", "status", models.StatusOut),
        ("GET", "sites", list[models.SiteRow]),
        ("GET", "nodes", list[models.NodeRow]),
        ("GET", r"nodes/[^/]+/explain", models.ExplainOut),
        ("GET", "history", list[models.HistoryEntry]),
        ("GET", "registries", list[models.RegistryRow]),
        ("GET", "rollouts", models.RolloutsOut),
        ("POST", "rollouts/rollback", models.RolloutActionOut),
        ("POST", "rollouts/resume", models.RolloutActionOut),
        ("GET", "overrides", list[models.OverrideRecord]),
        ("POST", "overrides", models.OverrideCreated),
        ("DELETE", r"overrides/[^/]+", models.Lifted),
        ("POST", "pause", models.OverrideCreated),
        ("POST", "resume", models.LiftedMany),
        ("POST", "alerts", models.AlertsAccepted),
    ))


def answer_model(method: str, path: str) -> TypeAdapter[Any]:
    from pydantic import TypeAdapter

    for m, pattern, model in answers():
        if m == method and pattern.match(path):
            return TypeAdapter(model)
    raise WiringError(f"the CLI has no model for {method} {path}")


class Client:
    def __init__(self, server: str, token: str | None = None, user: str | None = None,
                 timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if user:
            headers["x-sentinel-user"] = user
        import httpx  # here: `sentinel --help` does not pay for it

        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, params={k: v for k, v in params.items()
                                               if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        body = self._request(method, path, **kw)
        from pydantic import ValidationError

        adapter = answer_model(method, path)
        try:
            parsed = adapter.validate_python(body)
        except ValidationError as e:
            raise ClientError(f"{self.server} answered {method} {path} with something this CLI "
                              f"does not understand (is it another version of sentinel?): "
                              f"{e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
        return adapter.dump_python(parsed, mode="json", exclude_unset=True)

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self._http.request(method, path, **kw)
        except httpx.TimeoutException:
            raise ClientError(f"sentinel at {self.server} did not answer in time",
                              EXIT_UNREACHABLE) from None
        except httpx.HTTPError as e:
            raise ClientError(f"cannot reach sentinel at {self.server} ({type(e).__name__}); "
                              "is it running? (--server or SENTINEL_URL)",
                              EXIT_UNREACHABLE) from None
        try:
            body = r.json()
        except ValueError:
            raise ClientError(f"{self.server} answered {r.status_code} without JSON: is it a "
                              "sentinel server?") from None
        if r.is_success:
            return body
        reason = body.get("error") if isinstance(body, dict) else None
        reason = reason or f"HTTP {r.status_code}"
        if r.status_code in (401, 403):
            raise ClientError(f"sentinel refused: {reason}", EXIT_AUTH)
        if r.status_code == 404:
            raise ClientError(reason, EXIT_NOT_FOUND)
        raise ClientError(reason)
