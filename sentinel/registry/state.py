"""Registry failover as values: one step of a site's registry state from one round of probes,
the containerd `hosts.toml` that points a site's nodes at the active endpoint, and the image
rewrite of the `image-override` strategy.

Pure: the probes and `now` come in, the new state and at most one switch go out. The rules:
fail over after `failures` consecutive failed probes of the active primary, never to a standby
that is itself down, never because the site is partitioned (the center cannot see the site's
registry, but the site's nodes may well); fail back once the primary has been healthy for
`healthy_for`, at most `max_failbacks` times per `window` (a flapping primary cannot make the
site flap); leave a dead standby at once for a live primary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Probe",
    "RegistryParams",
    "RegistryState",
    "Role",
    "Switch",
    "edgeapp_overriders",
    "host_of",
    "render_hosts_toml",
    "rewrite_image",
    "step",
]


class Role(StrEnum):
    PRIMARY = "primary"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    seconds: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryParams:
    failures: int = 2
    healthy_for: float = 60.0
    max_failbacks: int = 3
    window: float = 3600.0


@dataclass(frozen=True, slots=True)
class RegistryState:
    active: Role = Role.PRIMARY
    since: float | None = None
    primary_failures: int = 0
    primary_healthy_since: float | None = None
    primary_ok: bool | None = None
    standby_ok: bool | None = None
    failbacks: tuple[float, ...] = ()
    note: str = ""
    """Why the state is what it is, for `sentinel registries` and the journal."""


@dataclass(frozen=True, slots=True)
class Switch:
    to: Role
    reason: str


def step(st: RegistryState, primary: Probe, standby: Probe, *, partitioned: bool, now: float,
         params: RegistryParams) -> tuple[RegistryState, Switch | None]:
    failbacks = tuple(t for t in st.failbacks if now - t < params.window)
    st = replace(st, failbacks=failbacks, primary_ok=primary.ok, standby_ok=standby.ok)
    if partitioned:
        # The center's probe crosses the site's uplink: a failure says nothing about whether
        # the site's nodes can pull. Count nothing, change nothing.
        return replace(st, primary_failures=0, primary_healthy_since=None,
                       note="site unreachable: a partition, not a registry failure; no "
                            "switch"), None
    if primary.ok:
        st = replace(st, primary_failures=0, primary_healthy_since=st.primary_healthy_since
                     if st.primary_healthy_since is not None else now)
    else:
        st = replace(st, primary_failures=st.primary_failures + 1, primary_healthy_since=None)

    if st.active is Role.PRIMARY:
        if primary.ok:
            return replace(st, note="primary healthy"), None
        if st.primary_failures < params.failures:
            return replace(st, note=f"primary failed {st.primary_failures} of "
                                    f"{params.failures} probes ({primary.error})"), None
        if not standby.ok:
            return replace(st, note=f"primary down ({primary.error}) and the standby too "
                                    f"({standby.error}): no healthy registry, no switch"), None
        why = f"primary failed {st.primary_failures} probes in a row ({primary.error})"
        return replace(st, active=Role.STANDBY, since=now, note=why), Switch(Role.STANDBY, why)

    # on the standby
    if not standby.ok and primary.ok:
        why = f"the standby failed ({standby.error}) and the primary answers"
        return replace(st, active=Role.PRIMARY, since=now, failbacks=(*failbacks, now),
                       note=why), Switch(Role.PRIMARY, why)
    if not primary.ok:
        note = "primary still down" + ("" if standby.ok else
                                       f"; the standby too ({standby.error})")
        return replace(st, note=note), None
    healthy = now - (st.primary_healthy_since or now)
    if healthy < params.healthy_for:
        return replace(st, note=f"primary healthy for {healthy:.0f}s of "
                                f"{params.healthy_for:.0f}s before failing back"), None
    if len(failbacks) >= params.max_failbacks:
        wait = params.window - (now - failbacks[0])
        return replace(st, note=f"{len(failbacks)} failbacks in {params.window:.0f}s: the "
                                f"primary flaps; staying on the standby {wait:.0f}s more"), None
    why = f"primary healthy for {healthy:.0f}s (healthy_for {params.healthy_for:.0f}s)"
    return replace(st, active=Role.PRIMARY, since=now, failbacks=(*failbacks, now),
                   note=why), Switch(Role.PRIMARY, why)


def host_of(url: str) -> str:
    """`https://reg.site-a:5000/path` -> `reg.site-a:5000`: the name images carry and the
    directory containerd looks up under certs.d."""
    return urlsplit(url).netloc


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_hosts_toml(server: str, active: str, other: str, *, comment: str = "",
                      ca: dict[str, str] | None = None,
                      skip_verify: dict[str, bool] | None = None) -> str:
    """containerd's hosts.toml: the hosts are tried in order, the active endpoint first;
    `server` (the site's own registry) is the last resort when every host failed."""
    lines = [f"# {c}" for c in comment.splitlines()]
    lines.append(f"server = {_toml_str(server)}")
    for url in dict.fromkeys((active, other)):
        lines += ["", f"[host.{_toml_str(url)}]", '  capabilities = ["pull", "resolve"]']
        if ca and url in ca:
            lines.append(f"  ca = {_toml_str(ca[url])}")
        if skip_verify and skip_verify.get(url):
            lines.append("  skip_verify = true")
    return "\n".join(lines) + "\n"


def rewrite_image(image: str, from_host: str, to_host: str) -> str | None:
    """The image with its registry host replaced, or None when it is not from `from_host`."""
    head, sep, rest = image.partition("/")
    if not sep or head != from_host:
        return None
    return f"{to_host}/{rest}"


#: What KubeEdge's image overrider reads of a workload manifest: the pod template's containers.
_WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}


def edgeapp_overriders(manifests: list[dict[str, Any]], from_host: str,
                       to_host: str) -> tuple[list[dict[str, Any]], str | None]:
    """The imageOverriders that move one node group of a KubeEdge EdgeApplication from the
    registry `from_host` to `to_host`, or ([], why not).

    KubeEdge applies a group's overriders to every workload manifest of the application, and
    a `Registry` replace without a predicate rewrites every image, whatever its registry; one
    with a predicate rewrites the image at that path, and fails the manifest where the path is
    missing. So: no predicate where every image of every workload is from `from_host`; one
    override per container path where the same paths hold `from_host` images in every
    workload; otherwise none (said why), rather than moving an image that is not the site's
    or breaking a manifest's rendering."""
    workloads = [m for m in manifests if m.get("kind") in _WORKLOAD_KINDS]
    images: list[list[str]] = []
    for m in workloads:
        spec = ((m.get("spec") or {}).get("template") or {}).get("spec") or {}
        images.append([str(c.get("image", "")) for c in spec.get("containers") or []])
    ours = [[rewrite_image(i, from_host, to_host) is not None for i in imgs] for imgs in images]
    if not any(any(o) for o in ours):
        return [], f"no image from {from_host} in its workloads"
    if all(all(o) for o in ours):
        return [{"component": "Registry", "operator": "replace", "value": to_host}], None
    paths = {i for o in ours for i, mine in enumerate(o) if mine}
    if all(len(o) > i and o[i] for o in ours for i in paths):
        return [{"component": "Registry", "operator": "replace", "value": to_host,
                 "predicate": {"path": f"/spec/template/spec/containers/{i}/image"}}
                for i in sorted(paths)], None
    return [], (f"its workloads mix {from_host} images with others at different container "
                "positions: no KubeEdge image override can move only the site's images")
