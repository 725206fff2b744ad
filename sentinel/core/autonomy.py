"""When level 2 may evict: never from a node the edge platform keeps autonomous.

OpenYurt has said it three ways over its releases, and a fleet mid-upgrade carries all three:
the older flag `node.beta.openyurt.io/autonomy: "true"` (annotation or label), a pod pinned by
`apps.openyurt.io/binding`, and the current per-node window
`node.openyurt.io/autonomy-duration` — the control plane waits that long after the node lost
contact before it evicts, and `"0"` means never. The window's value is the Go duration syntax
of `maze.io/x/duration` (Go's units plus `d`, `w`, `y`); a value OpenYurt cannot parse it
ignores, and so does sentinel (`explain` says so).
"""

from __future__ import annotations

import math
import re

from sentinel.core.model import NodeInfo, Ready
from sentinel.core.timefmt import span

__all__ = ["parse_go_duration", "protection"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")


def parse_go_duration(text: str) -> float | None:
    """Seconds, or None if `text` is not a duration: `"24h"`, `"1h30m"`, `"100s"`, `"2d"`;
    `"0"` (no unit) is 0. Negative windows are not durations here (OpenYurt cannot wait less
    than nothing)."""
    s = text.strip()
    if s in ("0", "+0"):
        return 0.0
    s = s.removeprefix("+")
    if not s:
        return None
    total, pos = 0.0, 0
    for m in _PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(s) and pos > 0 else None


def protection(node: NodeInfo, now: float) -> str | None:
    """Why level 2 may not evict this node now (NoSchedule instead of NoExecute), in words;
    None when nothing protects it."""
    if node.protected:
        return node.protected_by or "the node is autonomous or holds a bound pod"
    window = node.autonomy_for
    if window is None:
        return None
    if window == 0 or math.isinf(window):
        return "OpenYurt autonomy-duration 0: the control plane never evicts it"
    away = 0.0 if node.ready is Ready.TRUE or node.unready_since is None \
        else max(0.0, now - node.unready_since)
    if away < window:
        return (f"OpenYurt autonomy-duration {span(window)}: out of contact for "
                f"{span(away)}, the control plane waits {span(window - away)} more")
    return None
