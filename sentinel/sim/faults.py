"""The simulator's faults by name, as `sentinel sim inject` and the demo's tour name them."""

from __future__ import annotations

from typing import Protocol

__all__ = ["FAULTS", "Faulty", "inject"]


class Faulty(Protocol):
    """The faults a fleet can be given (sim.fleet.Fleet)."""

    def crash(self, node: str) -> None: ...
    def component(self, node: str, job: str) -> None: ...
    def link_loss(self, node: str) -> None: ...
    def partition(self, site: str, mode: str = "refuse") -> None: ...
    def flap(self, node: str, period: float = 10.0, count: int | None = None) -> None: ...
    def heal(self, target: str | None = None) -> None: ...
    def set_autonomy(self, node: str, on: bool = True, duration: str | None = None) -> None:
        ...
    def bind_pod(self, node: str) -> str: ...
    def set_version(self, version: str, kind: str) -> None: ...
    def gray(self, node: str, kind: str, severity: float = 1.0, ramp: float = 5.0) -> None: ...

FAULTS = ("crash", "component", "link-loss", "partition", "flap", "heal", "autonomy", "bind",
          "gray", "version")


def inject(fleet: Faulty, kind: str, target: str, arg: str | None = None, *,
           period: float | None = None, count: int | None = None) -> str:
    """The one entry point of `sentinel sim inject`; returns what it did, in words."""
    if kind == "crash":
        fleet.crash(target)
        return f"{target}: exporters down; Ready -> Unknown once its Lease is past the grace period"
    if kind == "component":
        fleet.component(target, arg or "kube-proxy")
        return f"{target}: {arg or 'kube-proxy'} down"
    if kind == "link-loss":
        fleet.link_loss(target)
        return (f"{target}: cloud link lost (Ready -> Unknown after the grace period), still "
                "serving at its site")
    if kind == "partition":
        fleet.partition(target, arg or "refuse")
        return (f"{target}: uplink cut ({arg or 'refuse'}), its nodes Ready -> Unknown after the "
                "grace period")
    if kind == "flap":
        if arg is not None:
            raise ValueError(f"flap takes --period SECONDS and --count N, not {arg!r} as "
                             "an argument")
        p = 10.0 if period is None else period
        fleet.flap(target, p, count)
        times = "until healed" if count is None else f"{count} time(s)"
        return f"{target}: crashes for {p:g}s, then serves for {p:g}s, {times}"
    if kind == "heal":
        fleet.heal(None if target == "all" else target)
        return f"{target}: healed"
    if kind == "autonomy":
        if arg is not None:  # current OpenYurt: the window before eviction ("0": for ever)
            fleet.set_autonomy(target, duration=arg)
            return f"{target}: node.openyurt.io/autonomy-duration={arg}"
        fleet.set_autonomy(target)
        return f"{target}: marked autonomous (node.beta.openyurt.io/autonomy=true)"
    if kind == "bind":
        return f"{target}: pod {fleet.bind_pod(target)} bound to it"
    if kind == "version":
        fleet.set_version(target, arg or "bad-errors")
        return f"version {target}: behaves {arg or 'bad-errors'}"
    if kind == "gray":
        fleet.gray(target, arg or "disk-slow")
        return f"{target}: grey failure {arg or 'disk-slow'} (every probe still answers)"
    raise KeyError(f"no fault {kind!r}; faults: {', '.join(FAULTS)}")
