"""The CLI's HTTP client for a running sentinel. Every failure becomes one `ClientError` whose
message is the single line the on-call reads, and whose code is the exit status."""

from __future__ import annotations

from typing import Any

import httpx

__all__ = ["EXIT_AUTH", "EXIT_NOT_FOUND", "EXIT_UNREACHABLE", "Client", "ClientError"]

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_ERROR, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND = 1, 3, 4, 5


class ClientError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class Client:
    def __init__(self, server: str, token: str | None = None, user: str | None = None,
                 timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if user:
            headers["x-sentinel-user"] = user
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
