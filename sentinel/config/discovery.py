"""Sites from the edge platform's own objects: OpenYurt NodePools or KubeEdge NodeGroups.

`site_discovery.discover` names the kind; each object found is a site of the same name whose
nodes are the ones the platform's controller labelled into it, and whose settings come from
annotations on the object (under `taint_domain`) or, where an annotation is absent, from the
templates here. A static `sites` entry of the same name wins over what was discovered.

The resolution is pure (objects in, sites and problems out): the adapter (adapters/sitewatch.py)
watches the objects and calls it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError, field_validator

from sentinel.config.base import Strict as _Strict
from sentinel.config.capabilities import SiteRegistry
from sentinel.config.sources import HttpSettings
from sentinel.config.yamlsrc import Duration

__all__ = ["DISCOVERED_KINDS", "DiscoveredKind", "Pool", "Resolved", "SiteDiscovery",
           "pool_of", "resolve_sites"]


@dataclass(frozen=True)
class DiscoveredKind:
    """What sentinel needs to know of one platform's site object."""

    kind: str
    group: str
    version: str
    plural: str
    member_label: str
    """The label the platform's controller keeps on each member node: membership as the
    platform enacts it (one pool or group per node), not as a spec asks for it."""


DISCOVERED_KINDS: dict[str, DiscoveredKind] = {
    # v1beta1: served by every OpenYurt since 1.0, beside v1beta2 (stored since 1.6); the
    # fields read here (metadata) are the same in both.
    "openyurt-nodepools": DiscoveredKind("NodePool", "apps.openyurt.io", "v1beta1",
                                         "nodepools", "apps.openyurt.io/nodepool"),
    "kubeedge-nodegroups": DiscoveredKind("NodeGroup", "apps.kubeedge.io", "v1alpha1",
                                          "nodegroups", "apps.kubeedge.io/belonging-to"),
}


class SiteDiscovery(_Strict):
    discover: Literal["off", "openyurt-nodepools", "kubeedge-nodegroups"] = "off"
    """Where the sites come from besides `sites`: `openyurt-nodepools` (each NodePool a site,
    its nodes those labelled `apps.openyurt.io/nodepool: <pool>`), `kubeedge-nodegroups`
    (each NodeGroup, nodes labelled `apps.kubeedge.io/belonging-to: <group>` by KubeEdge's
    controller), or `off`: only the static list. Watched: a new object is a site from the
    next cycle, a deleted one's isolations are handed back."""
    version: str | None = None
    """API version to read the objects at. Default: `v1beta1` for NodePools (served by every
    OpenYurt since 1.0), `v1alpha1` for NodeGroups."""
    prometheus: str | None = None
    """Template of a discovered site's Prometheus URL, `{site}` replaced by the object's
    name, e.g. `http://prometheus.{site}.monitoring:9090`. The annotation
    `<taint_domain>/prometheus` on the object wins. A site with neither (per-site mode) is
    reported and never acted on."""
    http: HttpSettings | None = None
    """How to speak to a discovered site's Prometheus; default `metrics_source.http`. The
    annotation `<taint_domain>/http` (the same settings as JSON) wins."""
    registry: SiteRegistry | None = None
    """Template of a discovered site's registry (`{site}` in its URLs); the annotation
    `<taint_domain>/registry` (JSON, as a site's `registry`) wins. None: no registry
    failover for discovered sites without the annotation."""
    timeout: Duration | None = None
    """Per-query timeout of discovered sites; default `query_timeout`. The annotation
    `<taint_domain>/query-timeout` wins."""

    @field_validator("prometheus")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None and "{site}" not in v:
            raise ValueError("a template names the site: write {site} where its name goes, "
                             "e.g. http://prometheus.{site}.monitoring:9090")
        return v

    @property
    def enabled(self) -> bool:
        return self.discover != "off"

    def target(self) -> DiscoveredKind:
        k = DISCOVERED_KINDS[self.discover]
        return k if self.version is None else DiscoveredKind(
            k.kind, k.group, self.version, k.plural, k.member_label)


@dataclass(frozen=True)
class Pool:
    """Of a NodePool or NodeGroup, what sentinel reads: its name and annotations."""

    name: str
    annotations: Mapping[str, str]


def pool_of(obj: Mapping[str, Any]) -> Pool | None:
    """The transform on receipt; None for an object being deleted (a finalizer holds KubeEdge's
    NodeGroups while its controller unlabels the members): it is no site any more."""
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return None
    return Pool(str(meta.get("name", "")), dict(meta.get("annotations") or {}))


@dataclass(frozen=True)
class Resolved:
    """The sites as they stand: the static ones, then those discovered."""

    sites: tuple[Any, ...]
    """SiteConfig values, static entries first; a discovered site without a Prometheus is
    among them (its nodes are its own) with `prometheus` None and its problem below."""
    problems: Mapping[str, str]
    """Site -> why it is not acted on (no Prometheus, an unreadable annotation)."""


def resolve_sites(pools: Iterable[Pool], static: Iterable[Any], d: SiteDiscovery, domain: str,
                  central: bool, site_config: type[Any]) -> Resolved:
    """Each pool a site: annotations first, templates second. `site_config` is the SiteConfig
    class (passed in: schema.py imports this module)."""
    statics = list(static)
    if not d.enabled:
        return Resolved(tuple(statics), {})
    kind = d.target()
    taken = {s.name for s in statics}
    sites: list[Any] = list(statics)
    problems: dict[str, str] = {}
    for pool in sorted(pools, key=lambda p: p.name):
        if pool.name in taken:
            continue  # the static entry wins
        site, problem = _site(pool, kind, d, domain, central, site_config)
        sites.append(site)
        if problem is not None:
            problems[pool.name] = problem
    return Resolved(tuple(sites), problems)


def _site(pool: Pool, kind: DiscoveredKind, d: SiteDiscovery, domain: str, central: bool,
          site_config: type[Any]) -> tuple[Any, str | None]:
    where = f"{kind.kind} {pool.name}"
    ann = pool.annotations
    problems: list[str] = []
    fields: dict[str, Any] = {"name": pool.name, "selector": {kind.member_label: pool.name}}

    def take(key: str, parse: Any, template: Any) -> Any:
        raw = ann.get(f"{domain}/{key}")
        if raw is None:
            return template
        try:
            return parse(raw)
        except (ValueError, ValidationError) as e:
            problems.append(f"annotation {domain}/{key}: {_why(e)}")
            return None

    url = take("prometheus", str, None if d.prometheus is None
               else d.prometheus.replace("{site}", pool.name))
    http = take("http", lambda r: HttpSettings.model_validate(json.loads(r)), d.http)
    registry = take("registry", lambda r: SiteRegistry.model_validate(json.loads(r)),
                    None if d.registry is None else SiteRegistry.model_validate(json.loads(
                        json.dumps(d.registry.model_dump()).replace("{site}", pool.name))))
    timeout = take("query-timeout", str, d.timeout)
    for key, value in (("prometheus", url), ("http", http), ("registry", registry),
                       ("timeout", timeout)):
        if value is not None:
            fields[key] = value
    try:
        site = site_config.model_validate(fields)
    except ValidationError as e:
        problems.append(_why(e))
        try:  # the site without what failed: its nodes stay its own
            site = site_config.model_validate({"name": pool.name,
                                               "selector": fields["selector"]})
        except ValidationError:
            return site_config.model_construct(name=pool.name, selector=fields["selector"]), \
                f"{where}: its name cannot be a site name (1-63 letters, digits, '-', '_', '.')"
    if not central and site.prometheus is None and not problems:
        problems.append(f"no Prometheus: annotate it {domain}/prometheus: <url>, or set "
                        "site_discovery.prometheus (a template with {site})")
    if problems:
        # Reported, never acted on: its nodes stay its own, and no query is made.
        site = site.model_copy(update={"prometheus": None, "registry": None})
        return site, f"{where}: " + "; ".join(problems)
    return site, None


def _why(e: Exception) -> str:
    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'value'}: "
                         f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
    return str(e)
