"""Sentinel's version, as the installed distribution says it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

__all__ = ["version"]


def version() -> str:
    try:
        return _dist_version("sentinel-edge")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
