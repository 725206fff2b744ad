"""The registry adapters: the probe (`GET /v2/`, optionally `HEAD` of a canary manifest), and
the two ways of pointing a site's nodes at the active registry: a ConfigMap holding containerd's
hosts.toml (`mirror-config`), or rewriting the images of the site's opted-in Deployments
(`image-override`). Both record on the objects themselves which registry is active, so a
restarted sentinel picks up where it was."""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Mapping
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sentinel.adapters.kubeerrors import api_reason
from sentinel.adapters.secrets import read_secret
from sentinel.config.capabilities import RegistryEndpoint
from sentinel.config.schema import Config, SiteConfig
from sentinel.core.errors import KubeError
from sentinel.registry.state import Probe, Role, host_of, render_hosts_toml, rewrite_image

__all__ = ["ImageOverride", "MirrorConfig", "RegistryProber"]

log = logging.getLogger("sentinel.registry")

_MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"))


class RegistryProber:
    """One async client per endpoint (each may have its own CA and credentials)."""

    def __init__(self, cfg: Config, endpoints: list[RegistryEndpoint]) -> None:
        """Reads every CA and password file now: a missing one is a configuration error at
        startup, never a failed probe that would fail a healthy registry over."""
        self.cfg = cfg
        self.timeout = cfg.registries.probe_timeout
        self.canary = cfg.registries.canary
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.add(endpoints)

    def add(self, endpoints: list[RegistryEndpoint]) -> None:
        """Clients for endpoints not probed yet (a discovered site's); OSError names a CA or
        password file that cannot be read."""
        cfg = self.cfg
        for ep in endpoints:
            if ep.url in self._clients:
                continue
            verify: bool | ssl.SSLContext = not ep.skip_verify
            if ep.ca_file and not ep.skip_verify:
                ca = cfg.resolve(ep.ca_file).read_text()  # names the file if missing
                verify = ssl.create_default_context(cadata=ca)
            pw = read_secret(cfg, None, ep.password_file)
            auth = httpx.BasicAuth(ep.username, pw) if ep.username and pw else None
            self._clients[ep.url] = httpx.AsyncClient(base_url=ep.url, timeout=self.timeout,
                                                      verify=verify, auth=auth)

    def _client(self, ep: RegistryEndpoint) -> httpx.AsyncClient:
        return self._clients[ep.url]

    async def probe(self, ep: RegistryEndpoint) -> Probe:
        """200 or 401 on /v2/ is a live registry; anything else, or no answer in time, not."""
        t0 = time.monotonic()
        try:
            c = self._client(ep)
            r = await c.get("/v2/")
            if r.status_code not in (200, 401):
                return Probe(False, time.monotonic() - t0, f"GET /v2/: HTTP {r.status_code}")
            if self.canary:
                repo, _, tag = self.canary.rpartition(":")
                m = await c.head(f"/v2/{repo}/manifests/{tag}",
                                 headers={"accept": _MANIFEST_TYPES})
                if m.status_code != 200:
                    return Probe(False, time.monotonic() - t0,
                                 f"HEAD canary {self.canary}: HTTP {m.status_code}")
        except httpx.TimeoutException:
            return Probe(False, time.monotonic() - t0, f"no answer in {self.timeout:g}s")
        except (httpx.HTTPError, OSError) as e:
            return Probe(False, time.monotonic() - t0, type(e).__name__)
        return Probe(True, time.monotonic() - t0)

    async def aclose(self) -> None:
        for c in self._clients.values():
            await c.aclose()


class MirrorConfig:
    """ConfigMap `sentinel-registry-<site>`: `hosts.toml` for the site's registry host, the
    active endpoint first. The DaemonSet in deploy/ writes it to each of the site's nodes as
    /etc/containerd/certs.d/<host>/hosts.toml (containerd rereads it on the next pull)."""

    def __init__(self, api: client.ApiClient, namespace: str, domain: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace, self.domain = namespace, domain

    @staticmethod
    def name(site: str) -> str:
        return f"sentinel-registry-{site.lower()}"

    def current(self, site: str) -> Role | None:
        try:
            cm = self.core.read_namespaced_config_map(self.name(site), self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise KubeError(f"ConfigMap {self.namespace}/{self.name(site)}: "
                            f"{api_reason(e)}") from None
        ann = (cm.metadata.annotations if cm.metadata else None) or {}
        role = ann.get(f"{self.domain}/registry-active")
        return Role(role) if role in (Role.PRIMARY, Role.STANDBY) else None

    def apply(self, site: SiteConfig, standby: RegistryEndpoint, role: Role, reason: str,
              now: float) -> client.V1ObjectReference:
        reg = site.registry
        assert reg is not None
        primary = reg.primary
        active, other = (primary, standby) if role is Role.PRIMARY else (standby, primary)
        toml = render_hosts_toml(
            primary.url, active.url, other.url,
            comment=f"Managed by sentinel for site {site.name}: {role.value} active.\n{reason}",
            ca={e.url: e.ca_file for e in (primary, standby) if e.ca_file},
            skip_verify={e.url: e.skip_verify for e in (primary, standby)})
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=self.name(site.name), namespace=self.namespace,
                labels={f"{self.domain}/registry-site": site.name},
                annotations={f"{self.domain}/registry-active": role.value,
                             f"{self.domain}/registry-since": str(now),
                             f"{self.domain}/registry-reason": reason[:1000]}),
            data={"hosts.toml": toml, "host": host_of(primary.url)})
        where = f"ConfigMap {self.namespace}/{self.name(site.name)}"
        try:
            self.core.replace_namespaced_config_map(self.name(site.name), self.namespace, body)
        except ApiException as e:
            if e.status != 404:
                raise KubeError(f"{where}: {api_reason(e)}") from None
            try:
                self.core.create_namespaced_config_map(self.namespace, body)
            except ApiException as e2:
                raise KubeError(f"{where}: {api_reason(e2)}") from None
        return client.V1ObjectReference(kind="ConfigMap", name=self.name(site.name),
                                        namespace=self.namespace, api_version="v1")


class ImageOverride:
    """Rewrites the registry of the images of opted-in Deployments pinned to the site's nodes
    (their pod template's nodeSelector holds the site's selector), keeping the originals in an
    annotation; fail-back restores exactly those."""

    def __init__(self, api: client.ApiClient, label: str, domain: str) -> None:
        self.apps = client.AppsV1Api(api)
        self.label, self.key = label, f"{domain}/registry-original-images"

    def _workloads(self, selector: Mapping[str, str]) -> list[Any]:
        try:
            items = self.apps.list_deployment_for_all_namespaces(
                label_selector=f"{self.label}=true").items
        except ApiException as e:
            raise KubeError(f"Deployments labelled {self.label}=true: {api_reason(e)}") from None
        def pinned(d: Any) -> dict[str, str]:
            spec = d.spec.template.spec if d.spec and d.spec.template else None
            return (spec.node_selector if spec is not None else None) or {}

        return [d for d in items if all(pinned(d).get(k) == v for k, v in selector.items())]

    def current(self, selector: Mapping[str, str]) -> Role | None:
        ws = self._workloads(selector)
        if not ws:
            return None
        overridden = any(self.key in (d.metadata.annotations or {}) for d in ws)
        return Role.STANDBY if overridden else Role.PRIMARY

    def apply(self, selector: Mapping[str, str], primary: RegistryEndpoint,
              standby: RegistryEndpoint, role: Role) -> list[str]:
        """Patch every matching Deployment; return `namespace/name` of those changed."""
        changed = []
        for d in self._workloads(selector):
            ann = d.metadata.annotations or {}
            containers = d.spec.template.spec.containers or []
            if role is Role.STANDBY:
                if self.key in ann:
                    continue
                originals, patch = {}, []
                for c in containers:
                    new = rewrite_image(c.image, host_of(primary.url), host_of(standby.url))
                    if new is not None:
                        originals[c.name] = c.image
                        patch.append({"name": c.name, "image": new})
                if not patch:
                    continue
                body: dict[str, Any] = {
                    "metadata": {"annotations": {self.key: json.dumps(originals)}},
                    "spec": {"template": {"spec": {"containers": patch}}}}
            else:
                if self.key not in ann:
                    continue
                try:
                    originals = json.loads(ann[self.key])
                except ValueError:
                    log.error("%s/%s: unreadable %s; not restored", d.metadata.namespace,
                              d.metadata.name, self.key)
                    continue
                body = {"metadata": {"annotations": {self.key: None}},
                        "spec": {"template": {"spec": {"containers": [
                            {"name": n, "image": img} for n, img in originals.items()]}}}}
            try:
                self.apps.patch_namespaced_deployment(d.metadata.name, d.metadata.namespace,
                                                      body)
            except ApiException as e:
                raise KubeError(f"{d.metadata.namespace}/{d.metadata.name}: "
                                   f"{api_reason(e)}") from None
            changed.append(f"{d.metadata.namespace}/{d.metadata.name}")
        return changed
