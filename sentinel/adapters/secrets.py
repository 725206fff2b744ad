"""Secrets named in the configuration: inline, or (preferred) a file such as a mounted Secret.

Read once at start-up, so a missing file stops `serve` with a one-line error naming it."""

from __future__ import annotations

from sentinel.config.schema import Config

__all__ = ["read_secret"]


def read_secret(cfg: Config, inline: str | None, path: str | None) -> str | None:
    if path:
        return cfg.resolve(path).read_text().strip()
    return inline
