"""YAML sources that remember where each value came from, so every error names file:line.

Config and rule files are validated with pydantic; pydantic reports a path such as
`sites.1.prometheus`, and this module turns that path back into the line a person must edit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

from sentinel.core.errors import InputError

__all__ = ["Duration", "Source", "SourceError", "parse_duration", "validate"]

Path = tuple[str | int, ...]


class SourceError(InputError):
    """A file that cannot be used as written. `problems` holds every one, each with file:line."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class Source:
    """Parsed YAML plus the line of every mapping key and sequence item, by path."""

    filename: str
    data: Any
    lines: Mapping[Path, int]

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of the deepest part of `path` that exists in the file."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)

    def where(self, path: Sequence[str | int]) -> str:
        return f"{self.filename}:{self.line_of(path)}"

    @classmethod
    def parse(cls, text: str, filename: str) -> Source:
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 1 if mark is not None else 1
            problem = getattr(e, "problem", None) or str(e)
            raise SourceError([f"{filename}:{line}: not valid YAML: {problem}"]) from None
        if root is None:
            return cls(filename, None, {(): 1})
        lines: dict[Path, int] = {}
        problems: list[str] = []
        data = _build(root, (), lines, problems, filename)
        if problems:
            raise SourceError(problems)
        return cls(filename, data, lines)


def _build(node: yaml.Node, path: Path, lines: dict[Path, int], problems: list[str],
           filename: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, yaml.ScalarNode):
                problems.append(f"{filename}:{knode.start_mark.line + 1}: a key must be a plain "
                                "value, not a list or mapping")
                continue
            key = _scalar(knode)
            if key in out:
                problems.append(f"{filename}:{knode.start_mark.line + 1}: key {key!r} appears "
                                f"twice (first at line {lines[(*path, key)]})")
                continue
            child = (*path, key)
            out[key] = _build(vnode, child, lines, problems, filename)
            lines[child] = knode.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, i), lines, problems, filename) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node, deep=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from `90`, `1.5`, `"30s"`, `"5m"`, `"250ms"`: the forms Prometheus users write."""
    if isinstance(value, bool):
        raise ValueError("a duration, not true/false (write e.g. 30s, 5m)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT[m.group(2)]
    raise ValueError(f"{value!r} is not a duration (write e.g. 30s, 5m, 1h, 250ms)")


Duration = Annotated[float, BeforeValidator(parse_duration)]

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], source: Source, data: Any = None,
             prefix: Sequence[str | int] = ()) -> M:
    """Validate `data` (default: the whole file) and report every problem with its line."""
    payload = source.data if data is None else data
    try:
        return model.model_validate(payload)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = (*prefix, *err["loc"])
            dotted = ".".join(str(p) for p in loc) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            problems.append(f"{source.where(loc)}: {dotted}: {msg}")
        raise SourceError(problems) from None
