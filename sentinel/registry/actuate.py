"""Switch a site's registry through its strategy, and dry-run's recording twin; which one the
guard holds is chosen by the composition root (http/runtime.py), as for nodes and workloads.

Both read where the site stands from the cluster (a dry-run must start from what is true);
only the cluster's one writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from kubernetes import client

from sentinel.config.capabilities import RegistryEndpoint
from sentinel.config.schema import SiteConfig
from sentinel.core.effects import EventSpec
from sentinel.core.model import Mode
from sentinel.registry.edgeapps import EdgeAppOverride
from sentinel.registry.probe import ImageOverride, MirrorConfig
from sentinel.registry.state import Role

__all__ = ["KubeRegistryActuator", "RecordingRegistryActuator", "RegistryActuator", "Switched"]


@dataclass(frozen=True, slots=True)
class Switched:
    about: EventSpec | None
    """The object the switch changed, for its Event (with `reason` and `message` to fill);
    None when nothing was (no workload opted in), or in dry-run."""
    detail: str = ""
    planned: bool = False


class RegistryActuator(Protocol):
    mode: Mode

    def current(self, site: SiteConfig) -> Role | None:
        """The role active on the site as a previous sentinel left it; None if none."""
        ...

    def switch(self, site: SiteConfig, standby: RegistryEndpoint, to: Role, reason: str,
               now: float) -> Switched:
        """Raises AdapterError when the API refuses."""
        ...


class KubeRegistryActuator:
    mode = Mode.ENFORCE

    def __init__(self, api: client.ApiClient, namespace: str, domain: str, workload_label: str,
                 selector: Callable[[SiteConfig], Mapping[str, str]]) -> None:
        self.mirror = MirrorConfig(api, namespace, domain)
        self.images = ImageOverride(api, workload_label, domain)
        self.edgeapps = EdgeAppOverride(api, workload_label, domain)
        self.selector = selector

    def current(self, site: SiteConfig) -> Role | None:
        assert site.registry is not None
        if site.registry.strategy == "mirror-config":
            return self.mirror.current(site.name)
        if site.registry.strategy == "edgeapplication":
            return self.edgeapps.current(site.name)
        return self.images.current(self.selector(site))

    def switch(self, site: SiteConfig, standby: RegistryEndpoint, to: Role, reason: str,
               now: float) -> Switched:
        reg = site.registry
        assert reg is not None
        if reg.strategy == "mirror-config":
            ref = self.mirror.apply(site, standby, to, reason, now)
            return Switched(EventSpec("ConfigMap", ref.name or "", ref.namespace, "v1", "", ""))
        if reg.strategy == "edgeapplication":
            # The site is a KubeEdge NodeGroup of the same name (site_discovery).
            apps, skipped = self.edgeapps.apply(site.name, reg.primary, standby, to)
            detail = f"; EdgeApplications: {', '.join(apps) or 'none changed'}" + \
                "".join(f"; not moved: {s}" for s in skipped)
            if not apps:
                return Switched(None, detail)
            ns, _, name = apps[0].removeprefix("EdgeApplication ").partition("/")
            return Switched(EventSpec("EdgeApplication", name, ns, "apps.kubeedge.io/v1alpha1",
                                      "", ""), detail)
        changed = self.images.apply(self.selector(site), reg.primary, standby, to)
        detail = f"; workloads: {', '.join(changed) or 'none opted in'}"
        if not changed:
            return Switched(None, detail)
        # The Event is about a workload it changed (there is no object for a site).
        ns, _, name = changed[0].partition("/")
        return Switched(EventSpec("Deployment", name, ns, "apps/v1", "", ""), detail)


class RecordingRegistryActuator:
    """Dry-run: reads as the cluster's actuator does, records the switch, writes nothing."""

    mode = Mode.DRY_RUN

    def __init__(self, reader: KubeRegistryActuator) -> None:
        self.reader = reader

    def current(self, site: SiteConfig) -> Role | None:
        return self.reader.current(site)

    def switch(self, site: SiteConfig, standby: RegistryEndpoint, to: Role, reason: str,
               now: float) -> Switched:
        return Switched(None, planned=True)
