"""How sentinel speaks to a metrics source (config/sources.py): one pooled HTTP client per
distinct setting, for the life of the process, with its auth, TLS and headers; secrets read
from their files and read again when a file changes (a rotated Secret needs no restart)."""

from __future__ import annotations

import base64
import os
import ssl
import threading
from collections.abc import Callable, Generator
from typing import Any

import httpx

from sentinel.config.sources import HttpSettings
from sentinel.core.errors import AdapterError

__all__ = ["FileSecret", "PromClients", "client_options"]


class FileSecret:
    """A secret in a file (a mounted Secret): read again whenever its mtime changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._mtime: float | None = None
        self._value = ""
        self._lock = threading.Lock()

    def value(self) -> str:
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as e:
            raise AdapterError(f"cannot read the secret file {self.path}: {e.strerror}") from None
        with self._lock:
            if mtime != self._mtime:
                with open(self.path, encoding="utf-8") as f:
                    self._value = f.read().strip()
                self._mtime = mtime
            return self._value


class _FileAuth(httpx.Auth):
    def __init__(self, header: Callable[[], str]) -> None:
        self.header = header

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header()
        yield request


def client_options(h: HttpSettings, resolve: Callable[[str], str] = lambda p: p,
                   ) -> dict[str, Any]:
    """httpx client arguments for one setting; `resolve` makes its file paths absolute
    (settings from `site_targets` have them absolute already)."""
    auth: httpx.Auth | None = None
    if h.bearer_token_file is not None:
        token = FileSecret(resolve(h.bearer_token_file))
        auth = _FileAuth(lambda: f"Bearer {token.value()}")
    elif h.basic_auth is not None:
        user, password = h.basic_auth.username, FileSecret(resolve(h.basic_auth.password_file))

        def basic() -> str:
            raw = f"{user}:{password.value()}".encode()
            return f"Basic {base64.b64encode(raw).decode()}"

        auth = _FileAuth(basic)
    t = h.tls
    verify: ssl.SSLContext | bool = True
    if t.insecure_skip_verify:
        verify = False
    elif t.ca_file is not None or t.cert_file is not None:
        verify = ssl.create_default_context(
            cafile=resolve(t.ca_file) if t.ca_file is not None else None)
        if t.cert_file is not None and t.key_file is not None:
            verify.load_cert_chain(resolve(t.cert_file), resolve(t.key_file))
    return {"headers": dict(h.headers), "auth": auth, "verify": verify}


class PromClients:
    """One client per distinct setting. Sites that share a setting share a connection pool."""

    def __init__(self, resolve: Callable[[str], str] = lambda p: p,
                 limits: httpx.Limits | None = None) -> None:
        self.resolve = resolve
        self.limits = limits or httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._async: dict[str, httpx.AsyncClient] = {}
        self._sync: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def async_client(self, h: HttpSettings) -> httpx.AsyncClient:
        key = h.model_dump_json()
        with self._lock:
            c = self._async.get(key)
            if c is None:
                c = self._async[key] = httpx.AsyncClient(
                    limits=self.limits, **client_options(h, self.resolve))
            return c

    def sync_client(self, h: HttpSettings) -> httpx.Client:
        key = h.model_dump_json()
        with self._lock:
            c = self._sync.get(key)
            if c is None:
                c = self._sync[key] = httpx.Client(**client_options(h, self.resolve))
            return c

    async def aclose(self) -> None:
        for c in list(self._async.values()):
            await c.aclose()
        self.close()

    def close(self) -> None:
        for s in list(self._sync.values()):
            s.close()
