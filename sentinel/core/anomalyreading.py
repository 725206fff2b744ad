"""A node's anomaly reading as people and the journal see it: in a module of its own so that
the cycle's model stays small; `sentinel.core.model` names it with the other values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AnomalyReading"]


@dataclass(frozen=True, slots=True)
class AnomalyReading:
    """One node's anomaly score this cycle: evidence for people, never a verdict by itself."""

    score: float
    alarm: bool
    threshold: float
    top: tuple[tuple[str, float, float, str], ...]
    """Up to three (feature, value, z, against): the features that stand out most, their
    value, how many spreads out, and against what ("own history" or "site peers")."""
    evidence: float | None = None
    """Gathered towards `needed`, in points at the threshold."""
    needed: float | None = None
    """The evidence that raises this node's alarm now: `enter` scaled by `spent`."""
    spent: float | None = None
    """The share of its time this node alarmed lately (its alarm budget: 1 - threshold)."""

    def record(self) -> dict[str, object]:
        out: dict[str, object] = {
            "score": round(self.score, 4), "alarm": self.alarm,
            "threshold": round(self.threshold, 4),
            "top": [{"feature": f, "value": v, "z": round(z, 2), "against": a}
                    for f, v, z, a in self.top]}
        for k in ("evidence", "needed", "spent"):
            v = getattr(self, k)
            if v is not None:
                out[k] = round(v, 4)
        return out

    def budget(self) -> str:
        """How much evidence this node needs and why, for people; "" when not known."""
        if self.needed is None or self.evidence is None or self.spent is None:
            return ""
        return (f"evidence {self.evidence:.1f} of the {self.needed:.1f} points it needs (it "
                f"alarmed {self.spent:.2%} of its time lately, against a budget of "
                f"{1 - self.threshold:.2%}; a node just started counts from the budget)")

    def sentence(self) -> str:
        parts = [f"{f} {v:.4g} ({abs(z):.1f} spreads {'above' if z > 0 else 'below'} its "
                 f"{a})" for f, v, z, a in self.top]
        return (f"anomaly score {self.score:.3f} (alarm at {self.threshold:.3f})"
                + (": " + "; ".join(parts) if parts else ""))
