"""The base of every settings model: unknown keys are errors (a misspelt key must not be
ignored at 3 a.m.), and settings never change once loaded."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
