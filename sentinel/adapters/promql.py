"""PromQL text built from values that are not ours (node and site names)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["alternation"]

#: RE2's metacharacters outside a character class. Python's re.escape also escapes `-`, which
#: every node name has: Prometheus then no longer sees the alternation as a set of literal
#: values, and matched 1,500 node names in 0.34 s instead of 0.09-0.22 s among 100,000.
_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def alternation(values: Iterable[str]) -> str:
    """A regular expression matching exactly these values, as a PromQL string's contents
    (its backslashes escaped once more, as the string's own escaping takes one away)."""
    return "|".join(_META.sub(r"\\\1", v).replace("\\", "\\\\") for v in sorted(values))
