"""Who may call what, decided before a byte of the body is read.

FastAPI reads and parses a request's body before it resolves the route's dependencies
(fastapi/routing.py, `get_request_handler`), so a dependency cannot refuse a 50 MiB body
early: it arrives after the body is in memory. The check is therefore an ASGI gate in front of
the app. It finds the route in the app's OpenAPI document, takes the access the route declares
(its tag: `read`, `write`, `alerts`, or `open` for /healthz, /readyz and /metrics), checks the
credentials and the body's size, and only then lets the request in; it leaves the caller's name
in the request state, where the one dependency every route uses (`caller`) reads it.

    read     api.tokens (any), or anyone with api.open_reads
    write    an api.tokens entry with write: true
    alerts   alerts.token_file (Bearer) or alerts.basic_username + basic_password_file
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastapi import Request

from sentinel.adapters.secrets import read_secret
from sentinel.config.schema import Config
from sentinel.core.errors import WiringError

__all__ = ["Access", "AccessTable", "AuthGate", "Credentials", "access_table", "caller"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_USER = re.compile(r"^[\w.@+-]{1,64}$")
_CALLER = "sentinel_caller"


class Access(StrEnum):
    """What a route needs, as its OpenAPI tag says it."""

    OPEN = "open"
    READ = "read"
    WRITE = "write"
    ALERTS = "alerts"


@dataclass(frozen=True)
class _Token:
    name: str
    secret: str
    write: bool


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Credentials:
    """The secrets, read once at start: a missing token file stops `serve` naming it."""

    tokens: tuple[_Token, ...]
    open_reads: bool
    alert_token: str | None
    alert_basic: tuple[str, str] | None
    api_limit: int
    alerts_limit: int

    @classmethod
    def of(cls, cfg: Config) -> Credentials:
        tokens = tuple(_Token(t.name, s, t.write) for t in cfg.api.tokens
                       if (s := read_secret(cfg, t.token, t.token_file)))
        ac = cfg.alerts
        pw = read_secret(cfg, None, ac.basic_password_file)
        return cls(tokens, cfg.api.open_reads, read_secret(cfg, ac.token, ac.token_file),
                   (ac.basic_username, pw) if ac.basic_username and pw else None,
                   cfg.api.max_body_bytes, ac.max_body_bytes)

    def who(self, access: Access, header: str, user: str) -> str:
        """The caller's name for the journal, or _Refused with the status and the reason."""
        if access is Access.OPEN:
            return "anonymous"
        if access is Access.ALERTS:
            return self._alerts(header)
        scheme, _, cred = header.partition(" ")
        write = access is Access.WRITE
        if write and not any(t.write for t in self.tokens):
            raise _Refused(403, "writes need a token with `write: true` in api.tokens, and "
                                "none is configured")
        if not header:
            if write or not self.open_reads:
                raise _Refused(401, "this needs a token (Authorization: Bearer <token>; the "
                                    "CLI reads SENTINEL_TOKEN or --token-file)")
            return "anonymous"
        match = next((t for t in self.tokens if scheme.lower() == "bearer"
                      and hmac.compare_digest(cred.strip().encode(), t.secret.encode())), None)
        if match is None:
            raise _Refused(401, "the token is not one of api.tokens")
        if write and not match.write:
            raise _Refused(403, f"token {match.name!r} is read-only (api.tokens: write: false)")
        return f"{user} via {match.name}" if _USER.match(user) else match.name

    def _alerts(self, header: str) -> str:
        if not self.alert_token and not self.alert_basic:
            raise _Refused(503, "the webhook has no token configured (alerts.token_file)")
        scheme, _, cred = header.partition(" ")
        if self.alert_token and scheme.lower() == "bearer" and \
                hmac.compare_digest(cred.strip().encode(), self.alert_token.encode()):
            return "alertmanager"
        if self.alert_basic and scheme.lower() == "basic":
            try:
                user, _, pw = base64.b64decode(cred.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, pw = "", ""
            if hmac.compare_digest(user.encode(), self.alert_basic[0].encode()) and \
                    hmac.compare_digest(pw.encode(), self.alert_basic[1].encode()):
                return "alertmanager"
        raise _Refused(401, "missing or wrong credentials (Authorization: Bearer <token>)")


AccessTable = list[tuple[str, re.Pattern[str], Access]]


def access_table(openapi: dict[str, Any]) -> AccessTable:
    """(method, path pattern, access) of every route, from the app's OpenAPI document: the
    routes' own declaration (their tag), whatever way the app assembled them."""
    table: AccessTable = []
    for path, ops in openapi.get("paths", {}).items():
        pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")
        for method, op in ops.items():
            tags = op.get("tags") or []
            access = next((Access(t) for t in tags if t in set(Access)), Access.OPEN)
            table.append((method.upper(), pattern, access))
    return table


def _access(table: AccessTable, scope: Scope) -> Access:
    method, path = scope.get("method", "GET"), scope.get("path", "")
    for m, pattern, access in table:
        if (m == method or (method == "HEAD" and m == "GET")) and pattern.match(path):
            return access
    return Access.OPEN  # no such route: the app answers 404 or 405 without reading a body


class AuthGate:
    """The ASGI gate in front of the app (see the module's docstring)."""

    def __init__(self, app: ASGIApp, table: Callable[[], AccessTable],
                 credentials: Credentials,
                 on_refused: Callable[[Access, int], None] = lambda access, status: None
                 ) -> None:
        self.app, self.table, self.creds, self.on_refused = app, table, credentials, on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = _access(self.table(), scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        limit = self.creds.alerts_limit if access is Access.ALERTS else self.creds.api_limit
        try:
            who = self.creds.who(access, headers.get("authorization", ""),
                                 headers.get("x-sentinel-user", ""))
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                raise _Refused(413, f"body larger than {limit} bytes (the limit)")
        except _Refused as e:
            self.on_refused(access, e.status)
            await _answer(send, e.status, e.reason)
            return
        scope.setdefault("state", {})[_CALLER] = who
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # Read the body here, at most `limit` bytes of it: a body without a Content-Length
        # (chunked) is cut at the limit too. FastAPI would turn an error raised while it reads
        # into a 400, so the app only ever sees a body already known to be small.
        body = await _read_at_most(receive, limit)
        if body is None:
            self.on_refused(access, 413)
            await _answer(send, 413, f"body larger than {limit} bytes (the limit)")
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_at_most(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` bytes."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)  # the client went away; the app will see an empty body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes
    return replayed


async def _answer(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"error": reason}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="sentinel"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def caller(request: Request) -> str:
    """The one dependency of every route: who is calling, as the gate established it."""
    who = request.scope.get("state", {}).get(_CALLER)
    if who is None:  # a route served without the gate would be a wiring bug, not a caller's
        raise WiringError("the auth gate did not run for this request")
    return str(who)
