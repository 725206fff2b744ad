"""How every `sentinel` command fails on bad input: the problems, one per line, each with its
file and line, and exit status 2, before anything is touched."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from sentinel.config.schema import Config

__all__ = ["config_or_exit", "fail"]


def fail(problems: list[str], what: str) -> NoReturn:
    typer.echo(f"error: {what}:", err=True)
    for p in problems:
        typer.echo(f"  {p}", err=True)
    raise typer.Exit(2)


def config_or_exit(path: Path) -> Config:
    # Imported here: `sentinel --help` and the on-call commands never load the schema.
    from sentinel.config.loading import load_config
    from sentinel.config.yamlsrc import SourceError

    try:
        return load_config(path)
    except SourceError as e:
        fail(e.problems, f"invalid configuration {path}")
