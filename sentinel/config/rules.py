"""Isolation rules: declarative YAML, validated at load with file and line in every error."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sentinel.config.yamlsrc import Duration, Source, SourceError, validate
from sentinel.core.model import NODE_KEY, Level
from sentinel.core.ruleset import Rule, RuleSet

__all__ = ["load_rules", "parse_rules"]

_KEY_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    level: Literal["component", "node"]
    expr: str = Field(min_length=1)
    for_: Duration = Field(0.0, alias="for")
    component: str | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    description: str = ""
    site_wide: float | bool = True
    """true: the configured default (`guard.site_wide_threshold`); a fraction in (0, 1]: this
    rule's own; false: never treat it as site-wide (a rule that really is per node)."""

    @field_validator("site_wide")
    @classmethod
    def _site_wide(cls, v: float | bool) -> float | bool:
        if not isinstance(v, bool) and not 0 < v <= 1:
            raise ValueError("site_wide is true, false or a fraction of the site in (0, 1]")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _KEY_NAME.match(v) or len(v) > 63:
            raise ValueError("rule names are 1-63 letters, digits, '-', '_' or '.' "
                             "(they become taint values)")
        return v

    @field_validator("component")
    @classmethod
    def _component(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not _KEY_NAME.match(v) or len(v) > 63:
            raise ValueError("component names are 1-63 letters, digits, '-', '_' or '.' "
                             "(they become taint keys)")
        if v == NODE_KEY:
            raise ValueError(f"{NODE_KEY!r} is reserved for level-2 isolation")
        return v

    @field_validator("expr")
    @classmethod
    def _expr(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("expr is empty")
        return v.strip()

    @model_validator(mode="after")
    def _component_needed(self) -> _RuleSpec:
        if self.level == "component" and not self.component:
            raise ValueError("a level: component rule must name its component "
                             "(edgecore, kube-proxy, coredns, ...)")
        return self


class _RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[dict[str, object]]


def _site_wide_value(v: float | bool) -> float | None:
    if v is True:
        return -1.0
    return None if v is False else float(v)


def parse_rules(text: str, filename: str) -> list[Rule]:
    source = Source.parse(text, filename)
    if source.data is None:
        return []
    head = validate(_RuleFile, source)
    problems: list[str] = []
    out: list[Rule] = []
    for i, raw in enumerate(head.rules):
        if not isinstance(raw, dict):
            problems.append(f"{source.where(('rules', i))}: rules.{i}: each rule is a mapping "
                            "with name, level, expr")
            continue
        try:
            spec = validate(_RuleSpec, source, raw, prefix=("rules", i))
        except SourceError as e:
            problems.extend(e.problems)
            continue
        out.append(Rule(
            name=spec.name, level=Level(spec.level), expr=spec.expr, for_seconds=spec.for_,
            component=spec.component, severity=spec.severity, description=spec.description,
            origin=source.where(("rules", i)),
            site_wide=_site_wide_value(spec.site_wide),
        ))
    if problems:
        raise SourceError(problems)
    return out


def _rule_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            files.append(p)
    return files


def load_rules(paths: Sequence[Path]) -> RuleSet:
    """Every rule of every file; all problems of all files reported together."""
    problems: list[str] = []
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    files = _rule_files(paths)
    for f in files:
        try:
            text = f.read_text()
        except OSError as e:
            problems.append(f"{f}: cannot read rules: {e.strerror}")
            continue
        try:
            parsed = parse_rules(text, str(f))
        except SourceError as e:
            problems.extend(e.problems)
            continue
        for r in parsed:
            if r.name in seen:
                problems.append(f"{r.origin}: rule {r.name!r} is already defined at {seen[r.name]}")
                continue
            seen[r.name] = r.origin
            rules.append(r)
    if not files:
        problems.append(f"no rule files found in {', '.join(str(p) for p in paths)}")
    elif not rules and not problems:
        problems.append(f"no rules defined in {', '.join(str(f) for f in files)}")
    if problems:
        raise SourceError(problems)
    return RuleSet(tuple(rules))
