"""Isolation rules as values: what detect runs and keys its conditions by. Loading them from
YAML, with file:line in every error, is config.rules' job."""

from __future__ import annotations

from dataclasses import dataclass

from sentinel.core.model import NODE_KEY, Level

__all__ = ["Rule", "RuleSet"]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    level: Level
    expr: str
    for_seconds: float
    component: str | None
    severity: str
    description: str
    origin: str
    """file:line of the rule, for explanations and errors."""
    site_wide: float | None = -1.0
    """Above this fraction of a site's nodes matching at once, the rule's matches are a
    site-level condition and isolate no node one by one. -1: the configured default
    (`guard.site_wide_threshold`); None: never (the rule really is per node)."""

    @property
    def key(self) -> str:
        """The isolation key this rule drives: its component at level 1, `node` at level 2."""
        return (self.component or self.name) if self.level is Level.COMPONENT else NODE_KEY

    @property
    def downgrade_key(self) -> str:
        """The level-1 key used when only one witness condemns the node (see DESIGN.md)."""
        return self.component or self.name


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]

    @property
    def node_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.level is Level.NODE)

    @property
    def component_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.level is Level.COMPONENT)

    @property
    def longest_for(self) -> float:
        return max((r.for_seconds for r in self.rules), default=0.0)
