"""Where the metrics come from: each site's own Prometheus (the default), or one central
Prometheus-API store for every site (Prometheus with federation, Thanos Query, Mimir,
VictoriaMetrics), and how to speak to either — auth, TLS, extra headers, a path prefix.

The same settings apply to every query sentinel makes of a metrics source: the cycle's instant
queries, the anomaly model's and the rollout guard's range queries, and the probes (runtime
info).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sentinel.config.base import Strict as _Strict
from sentinel.config.yamlsrc import Duration

__all__ = ["BasicAuth", "HttpSettings", "MetricsSource", "TlsSettings"]

_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class BasicAuth(_Strict):
    username: str
    password_file: str
    """Read at start and again whenever the file changes (a rotated Secret)."""


class TlsSettings(_Strict):
    ca_file: str | None = None
    """CA bundle that signs the server's certificate; default: the system's."""
    cert_file: str | None = None
    """Client certificate (mutual TLS), with `key_file`."""
    key_file: str | None = None
    insecure_skip_verify: bool = False
    """Accept any server certificate. For a lab; never across a network you do not own."""

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS)")
        return self


class HttpSettings(_Strict):
    bearer_token_file: str | None = None
    """`Authorization: Bearer <the file's content>`, re-read whenever the file changes."""
    basic_auth: BasicAuth | None = None
    tls: TlsSettings = TlsSettings()
    headers: dict[str, str] = {}
    """Sent with every query, e.g. Mimir's tenant: `{X-Scope-OrgID: edge}`."""
    path_prefix: str = ""
    """Put before `/api/v1/...`: `/prometheus` for Mimir, `/select/0/prometheus` for a
    VictoriaMetrics cluster. A URL that already ends in its prefix needs none."""

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _HEADER.match(k)]
        if bad:
            raise ValueError(f"not HTTP header names: {', '.join(map(repr, bad))}")
        if any(k.lower() == "authorization" for k in v):
            raise ValueError("set Authorization with bearer_token_file or basic_auth, so the "
                             "secret stays in a file and out of the configuration")
        return v

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith("/"):
            raise ValueError(f"{v!r}: a path prefix starts with '/'")
        return v.rstrip("/")

    def resolved(self, resolve: Callable[[str], str]) -> HttpSettings:
        """The same settings with every file path made absolute (relative to the config)."""
        t = self.tls
        return self.model_copy(update={
            "bearer_token_file": None if self.bearer_token_file is None
            else resolve(self.bearer_token_file),
            "basic_auth": None if self.basic_auth is None else self.basic_auth.model_copy(
                update={"password_file": resolve(self.basic_auth.password_file)}),
            "tls": t.model_copy(update={k: resolve(v) for k, v in (
                ("ca_file", t.ca_file), ("cert_file", t.cert_file), ("key_file", t.key_file))
                if v is not None})})

    @model_validator(mode="after")
    def _one_auth(self) -> HttpSettings:
        if self.bearer_token_file is not None and self.basic_auth is not None:
            raise ValueError("bearer_token_file or basic_auth, not both")
        return self


class MetricsSource(_Strict):
    mode: Literal["per-site", "central"] = "per-site"
    """`per-site`: every site's own `prometheus` URL. `central`: one store (`url`) holds every
    site's series, told apart by `site_label_in_metrics`; each site's reachability is then the
    freshness of its own samples there, so a site whose data stopped arriving is stale, never
    "all nodes down"."""
    url: str | None = None
    """The central store's base URL (central mode)."""
    site_label_in_metrics: str = "site"
    """The label that names a series' site in the central store (an external label of the
    site's Prometheus, or one the federation job adds). A result that lost it in an
    aggregation (`max by (node) (...)`) is placed by its node's site in the cluster."""
    http: HttpSettings = HttpSettings()
    """Defaults for every site (per-site mode) and the central store; a site's own `http`
    replaces them."""
    timeout: Duration = Field(10.0, gt=0)
    """Per-query timeout against the central store."""

    @model_validator(mode="after")
    def _central(self) -> MetricsSource:
        if self.mode == "central" and not self.url:
            raise ValueError("central mode needs `url`: the store every site's series are in")
        if self.url is not None and not re.match(r"^https?://[^/\s]+", self.url):
            raise ValueError(f"{self.url!r} is not an http(s) URL")
        return self
