"""A failed call to the Kubernetes API server, in an operator's words: which server, and
what it answered or why it could not be reached."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

__all__ = ["api_reason", "describe_error"]


def describe_error(e: BaseException) -> str:
    """A failed call to the API server in an operator's words: the client's own text for an
    unreachable server is a 300-character repr of urllib3's retry state."""
    if isinstance(e, MaxRetryError):
        where = f"{e.pool.host}:{e.pool.port}" if e.pool is not None else "?"
        why = str(e.reason).split("): ", 1)[-1] if e.reason is not None else "no answer"
        return f"the Kubernetes API server at {where} is unreachable: {why}"
    if isinstance(e, ApiException):
        return f"the Kubernetes API server answered {e.status}: {api_reason(e)}"
    return f"{type(e).__name__}: {e}"


def api_reason(e: ApiException) -> str:
    """The API server's own message for a failed call (its Status body), else the HTTP reason."""
    try:
        body: Any = json.loads(e.body or "{}")
        return str(body.get("message") or e.reason)
    except ValueError:
        return str(e.reason)
