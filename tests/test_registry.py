"""Registry failover: the pure step as a table, the rendered hosts.toml parsed as TOML, and
the guard against real docker-registry processes and the Kubernetes emulator, both strategies,
and through a real `sentinel serve` and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from sentinel.adapters.journal import Journal
from sentinel.adapters.kube import make_api_client
from sentinel.adapters.metrics import Metrics
from sentinel.config.capabilities import Registries
from sentinel.config.loading import parse_config
from sentinel.config.schema import Config
from sentinel.http.runtime import make_recorder, registry_guard
from sentinel.registry.probe import MirrorConfig
from sentinel.registry.state import (
    Probe,
    RegistryParams,
    RegistryState,
    Role,
    render_hosts_toml,
    rewrite_image,
    step,
)
from sentinel.sim.fleet import Fleet
from sentinel.sim.registry import RegistryProcess
from sentinel.sim.store import RESOURCES

from .conftest import Serve, poll
from .test_oncall import js, ok

CONFIGMAPS = RESOURCES[("", "v1", "configmaps")]
DEPLOYMENTS = RESOURCES[("apps", "v1", "deployments")]
UP, DOWN = Probe(True, 0.01), Probe(False, 2.0, "ConnectError")
P = RegistryParams(failures=2, healthy_for=60, max_failbacks=2, window=3600)


def run(probes: list[tuple[Probe, Probe]], *, partitioned: bool = False,
        st: RegistryState | None = None, t0: float = 0.0,
        dt: float = 5.0) -> tuple[RegistryState, list[tuple[float, Role]]]:
    st = st or RegistryState()
    switches = []
    for i, (p, s) in enumerate(probes):
        st, sw = step(st, p, s, partitioned=partitioned, now=t0 + i * dt, params=P)
        if sw is not None:
            switches.append((t0 + i * dt, sw.to))
    return st, switches


def test_failover_after_consecutive_failures_only() -> None:
    st, sw = run([(UP, UP), (DOWN, UP), (UP, UP), (DOWN, UP)])
    assert sw == [] and st.active is Role.PRIMARY, "two failures, but not in a row"
    st, sw = run([(UP, UP), (DOWN, UP), (DOWN, UP)])
    assert sw == [(10.0, Role.STANDBY)] and "2 probes in a row (ConnectError)" in st.note


def test_no_failover_to_a_dead_standby() -> None:
    st, sw = run([(DOWN, DOWN)] * 5)
    assert sw == [] and st.active is Role.PRIMARY
    assert "no healthy registry" in st.note


def test_a_partitioned_site_is_not_a_dead_registry() -> None:
    st, sw = run([(DOWN, UP)] * 5, partitioned=True)
    assert sw == [] and st.primary_failures == 0 and "partition" in st.note


def test_failback_after_the_healthy_period_and_not_before() -> None:
    st, sw = run([(DOWN, UP)] * 2 + [(UP, UP)] * 13)  # healthy from t=10 to t=70
    assert sw == [(5.0, Role.STANDBY), (70.0, Role.PRIMARY)]
    st, sw = run([(DOWN, UP)] * 2 + [(UP, UP)] * 11 + [(DOWN, UP)] + [(UP, UP)] * 3)
    assert sw == [(5.0, Role.STANDBY)], "one failed probe restarts the healthy period"
    assert "healthy for 10s of 60s" in st.note


def test_a_dead_standby_is_left_at_once_for_a_live_primary() -> None:
    _st, sw = run([(DOWN, UP)] * 2 + [(UP, DOWN)])
    assert sw == [(5.0, Role.STANDBY), (10.0, Role.PRIMARY)]


def test_a_flapping_primary_makes_bounded_switches() -> None:
    # down 2 probes, up 65 s, for 6 hours: unbounded, that is a switch pair every 75 s
    cycle = [(DOWN, UP)] * 2 + [(UP, UP)] * 13
    probes = cycle * (6 * 3600 // (len(cycle) * 5))
    _, sw = run(probes)
    per_window: dict[int, int] = {}
    for t, role in sw:
        if role is Role.PRIMARY:
            per_window[int(t // 3600)] = per_window.get(int(t // 3600), 0) + 1
    assert max(per_window.values()) <= P.max_failbacks + 1  # a window can straddle two hours
    assert len(sw) <= 2 * (6 * P.max_failbacks + 1)
    assert len(sw) < len(probes) // 15 * 2 / 4, "not bounded"


def test_hosts_toml_is_containerds_format() -> None:
    text = render_hosts_toml("https://reg.site-a:5000", "http://standby:5000",
                             "https://reg.site-a:5000", comment="managed\nby sentinel",
                             ca={"https://reg.site-a:5000": "/etc/certs/site-a.pem"},
                             skip_verify={"http://standby:5000": True})
    doc = tomllib.loads(text)
    assert doc["server"] == "https://reg.site-a:5000"
    assert list(doc["host"]) == ["http://standby:5000", "https://reg.site-a:5000"]
    assert doc["host"]["http://standby:5000"] == {"capabilities": ["pull", "resolve"],
                                                  "skip_verify": True}
    assert doc["host"]["https://reg.site-a:5000"]["ca"] == "/etc/certs/site-a.pem"
    assert text.startswith("# managed\n# by sentinel\n")


@pytest.mark.parametrize(("image", "out"), [
    ("reg.a:5000/app/web:1", "standby:5000/app/web:1"),
    ("reg.a:5000/web@sha256:abc", "standby:5000/web@sha256:abc"),
    ("docker.io/library/nginx", None), ("nginx:1.25", None), ("reg.a:5001/web", None),
])
def test_rewrite_image(image: str, out: str | None) -> None:
    assert rewrite_image(image, "reg.a:5000", "standby:5000") == out


# -- against real registries and the emulator --------------------------------------------

@pytest.fixture(scope="module")
def registries() -> Iterator[dict[str, RegistryProcess]]:
    regs = {n: RegistryProcess().start() for n in ("site-a", "site-b", "standby")}
    yield regs
    for r in regs.values():
        r.stop()


@pytest.fixture
def regs(registries: dict[str, RegistryProcess]) -> Iterator[dict[str, RegistryProcess]]:
    for r in registries.values():
        if not r.running:
            r.up()
    yield registries
    for r in registries.values():
        if not r.running:
            r.up()


def config(fleet: Fleet, regs: dict[str, RegistryProcess], tmp: Path,
           **registries: Any) -> Config:
    sites = []
    for s, url in fleet.prometheus_urls().items():
        site: dict[str, Any] = {"name": s, "prometheus": url}
        if s == "site-a":
            site["registry"] = {"primary": {"url": regs["site-a"].url}}
        if s == "site-b":
            site["registry"] = {"primary": {"url": regs["site-b"].url},
                                "strategy": "image-override"}
        sites.append(site)
    cfg = {"mode": "enforce", "sites": sites, "rules": [], "cluster": {"url": fleet.api.url},
           "journal": str(tmp / "journal.db"),
           "registries": {"standby": {"url": regs["standby"].url}, "probe_timeout": "1s",
                          "namespace": "default", "healthy_for_failback": "1s",
                          **registries}}
    return parse_config(yaml.safe_dump(cfg), str(tmp / "sentinel.yaml"), {})


class Guard:
    def __init__(self, cfg: Config, tmp: Path, partitioned: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.registry = CollectorRegistry()
        self.journal = Journal(tmp / "journal.db")
        api = make_api_client(cfg.cluster)
        self.guard = registry_guard(cfg, api, make_recorder(cfg, api, self.journal),
                                    Metrics(self.registry, cfg.mode), lambda s: partitioned)

    def round(self) -> list[tuple[str, Any]]:
        return self.loop.run_until_complete(self.guard.run_round())

    def rounds_until_switch(self, limit: int) -> int:
        for n in range(1, limit + 1):
            if self.round():
                return n
        raise AssertionError(f"no switch in {limit} probe rounds")

    def metric(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def close(self) -> None:
        self.loop.run_until_complete(self.guard.aclose())
        self.loop.close()
        self.journal.close()


@pytest.fixture
def guard(fleet: Fleet, regs: dict[str, RegistryProcess],
          tmp_path: Path) -> Iterator[Any]:
    made: list[Guard] = []

    def make(partitioned: bool = False, **registries: Any) -> Guard:
        g = Guard(config(fleet, regs, tmp_path, **registries), tmp_path, partitioned)
        made.append(g)
        return g

    yield make
    for g in made:
        g.close()
    for name in ("sentinel-registry-site-a",):
        with contextlib.suppress(Exception):
            fleet.store.delete(CONFIGMAPS, "default", name)
    for d in fleet.store.list(DEPLOYMENTS, None)[0]:
        fleet.store.delete(DEPLOYMENTS, d["metadata"]["namespace"], d["metadata"]["name"])


def hosts_toml(fleet: Fleet) -> dict[str, Any]:
    cm = fleet.store.get(CONFIGMAPS, "default", "sentinel-registry-site-a")
    return tomllib.loads(cm["data"]["hosts.toml"])


def test_mirror_config_fails_over_and_back(guard: Any, regs: dict[str, RegistryProcess],
                                           fleet: Fleet) -> None:
    g = guard()
    assert g.round() == [] and g.metric("sentinel_registry_active", site="site-a",
                                        registry="primary") == 1.0
    regs["site-a"].down()
    assert g.rounds_until_switch(3) <= 3, "failover within 3 probe intervals"
    doc = hosts_toml(fleet)
    assert list(doc["host"]) == [regs["standby"].url, regs["site-a"].url]
    assert doc["server"] == regs["site-a"].url
    cm = fleet.store.get(CONFIGMAPS, "default", "sentinel-registry-site-a")
    assert cm["metadata"]["annotations"]["sentinel.edge.io/registry-active"] == "standby"
    assert cm["data"]["host"] == regs["site-a"].host
    assert g.metric("sentinel_registry_active", site="site-a", registry="standby") == 1.0
    assert g.metric("sentinel_registry_up", site="site-a", registry="primary") == 0.0
    events = [e for e in fleet.store.list(RESOURCES[("", "v1", "events")], None)[0]
              if e.get("reason") == "SentinelRegistryFailover"]
    assert events and "site site-a" in events[-1]["message"]

    regs["site-a"].up()
    assert g.round() == [], "no failback before the primary is healthy for healthy_for"
    poll(lambda: bool(g.round()), 10, "failback after the healthy period")
    assert next(iter(hosts_toml(fleet)["host"])) == regs["site-a"].url
    rows = g.journal.actions(site="site-a")
    assert [(r["kind"], r["outcome"], r["effect"]) for r in rows] == [
        ("registry-failover", "applied", "standby"), ("registry-failback", "applied", "primary")]
    assert g.metric("sentinel_registry_switches_total", site="site-a", to="standby",
                    outcome="applied") == 1.0


def test_a_restarted_guard_picks_up_the_active_registry(guard: Any, fleet: Fleet,
                                                        regs: dict[str, RegistryProcess]) -> None:
    from sentinel.core.effects import Effect, JournalKind

    g = guard()
    regs["site-a"].down()
    g.rounds_until_switch(3)
    # a predecessor killed in the middle of a switch left its row `planned`
    g.journal.write_ahead([Effect("cut-switch", JournalKind.REGISTRY_FAILBACK, "site-a",
                                  "registry", "registry", "primary", "registry-failover",
                                  "killed mid-switch")], "enforce", 1.0)
    again = guard()
    assert again.round() == [], "the new guard switched again"
    status = {s["site"]: s for s in again.guard.status_values()}
    assert status["site-a"]["active"] == "standby"
    rows = {r["id"]: r["outcome"] for r in again.journal.actions(site="site-a")}
    assert len(rows) == 2 and rows["cut-switch"] == "interrupted", rows


def test_standby_down_means_no_switch_and_an_alert_metric(guard: Any,
                                                          regs: dict[str, RegistryProcess],
                                                          fleet: Fleet) -> None:
    g = guard()
    regs["standby"].down()
    regs["site-a"].down()
    for _ in range(4):
        assert g.round() == []
    assert g.metric("sentinel_registry_no_healthy_endpoint", site="site-a") == 1.0
    assert "no healthy registry" in g.guard.status_values()[0]["note"]
    regs["standby"].up()
    assert [(site, sw.to) for site, sw in g.round()] == [("site-a", Role.STANDBY)]


def test_canary_manifest_proves_content_is_served(guard: Any, regs: dict[str, RegistryProcess],
                                                   fleet: Fleet) -> None:
    for r in regs.values():
        r.push("sentinel/canary", "v1")
    g = guard(canary="sentinel/canary:v1")
    for _ in range(3):
        assert g.round() == [], "all serve the canary: nothing to do"
    g2 = guard(canary="sentinel/canary:v2")  # a tag nobody has: no healthy endpoint
    for _ in range(3):
        assert g2.round() == []
    status = {s["site"]: s for s in g2.guard.status_values()}
    assert status["site-a"]["primary"]["error"] == "HEAD canary sentinel/canary:v2: HTTP 404"
    assert status["site-a"]["no_healthy_endpoint"] is True
    regs["standby"].push("sentinel/canary", "v2")
    assert [(site, sw.to) for site, sw in g2.round()] == \
        [("site-a", Role.STANDBY), ("site-b", Role.STANDBY)]


def test_partitioned_site_does_not_fail_over(guard: Any, regs: dict[str, RegistryProcess]) -> None:
    g = guard(partitioned=True)
    regs["site-a"].down()
    for _ in range(4):
        assert g.round() == []
    assert "partition" in g.guard.status_values()[0]["note"]


def test_flapping_primary_bounded(guard: Any, regs: dict[str, RegistryProcess]) -> None:
    g = guard(healthy_for_failback="0s", max_failbacks=2)
    switches = 0
    for _ in range(8):  # down for 2 probes, up for 1, eight times
        regs["site-a"].down()
        switches += len(g.round()) + len(g.round())
        regs["site-a"].up()
        switches += len(g.round())
    assert switches == 2 * 2 + 1, "two failovers and failbacks, then it stays on the standby"
    assert g.guard.sites["site-a"].state.active is Role.STANDBY
    assert "the primary flaps" in g.guard.status_values()[0]["note"]


def test_image_override_rewrites_and_restores(guard: Any, regs: dict[str, RegistryProcess],
                                              fleet: Fleet) -> None:
    primary, standby = regs["site-b"].host, regs["standby"].host

    def deploy(name: str, labels: dict[str, str], zone: str) -> None:
        fleet.store.create(DEPLOYMENTS, "edge", {
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"nodeSelector": {"topology.kubernetes.io/zone": zone}, "containers": [
                    {"name": "web", "image": f"{primary}/shop/web:1"},
                    {"name": "proxy", "image": "docker.io/library/envoy:1.30"}]}}}})

    optin = {"sentinel.edge.io/registry-failover": "true"}
    deploy("shop-b", optin, "site-b")
    deploy("shop-c", optin, "site-c")      # another node group
    deploy("other-b", {}, "site-b")        # not opted in

    def images(name: str) -> list[str]:
        d = fleet.store.get(DEPLOYMENTS, "edge", name)
        return [c["image"] for c in d["spec"]["template"]["spec"]["containers"]]

    g = guard()
    regs["site-b"].down()
    g.rounds_until_switch(3)
    assert images("shop-b") == [f"{standby}/shop/web:1", "docker.io/library/envoy:1.30"]
    assert images("shop-c") == images("other-b") == [f"{primary}/shop/web:1",
                                                     "docker.io/library/envoy:1.30"]
    ann = fleet.store.get(DEPLOYMENTS, "edge", "shop-b")["metadata"]["annotations"]
    assert json.loads(ann["sentinel.edge.io/registry-original-images"]) == \
        {"web": f"{primary}/shop/web:1"}
    regs["site-b"].up()
    poll(lambda: bool(g.round()), 10, "failback")
    assert images("shop-b") == [f"{primary}/shop/web:1", "docker.io/library/envoy:1.30"]
    meta = fleet.store.get(DEPLOYMENTS, "edge", "shop-b")["metadata"]
    assert "sentinel.edge.io/registry-original-images" not in meta.get("annotations", {})


def test_serve_and_cli(fleet: Fleet, regs: dict[str, RegistryProcess], tmp_path: Path) -> None:
    srv = Serve(fleet, tmp_path, registries={
        "standby": {"url": regs["standby"].url}, "probe_interval": "500ms",
        "probe_timeout": "400ms", "healthy_for_failback": "1s", "namespace": "default"})
    cfg = yaml.safe_load(srv.config.read_text())
    cfg["sites"][0]["registry"] = {"primary": {"url": regs["site-a"].url}}
    srv.config.write_text(yaml.safe_dump(cfg))
    srv.start()
    try:
        poll(lambda: js(srv, "registries", token=None)[0]["primary"]["up"] is True, 10, "probed")
        regs["site-a"].down()
        poll(lambda: js(srv, "registries", token=None)[0]["active"] == "standby", 10, "failover")
        assert next(iter(hosts_toml(fleet)["host"])) == regs["standby"].url
        assert "STANDBY" in ok(srv, "registries", token=None)
        assert "Registry site site-a: STANDBY active since" in ok(srv, "status", token=None)
        assert 'sentinel_registry_active{registry="standby",site="site-a"} 1.0' in \
            srv.get("/metrics").text
        regs["site-a"].up()
        poll(lambda: js(srv, "registries", token=None)[0]["active"] == "primary", 15, "failback")
        hist = js(srv, "history", "--site", "site-a", token=None)
        assert [e["kind"] for e in hist if e["type"] == "action"] == \
            ["registry-failover", "registry-failback"]
    finally:
        srv.kill()
        fleet.store.delete(CONFIGMAPS, "default", "sentinel-registry-site-a")


def test_the_daemonset_reads_what_mirror_config_writes() -> None:
    docs = list(yaml.safe_load_all(Path("deploy/registry-hosts/daemonset.yaml").read_text()))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    script = c["args"][0]
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0, "shell syntax"
    assert 'cm="sentinel-registry-$site"' in script and "tr 'A-Z' 'a-z'" in script
    assert MirrorConfig.name("Site-A") == "sentinel-registry-site-a"
    assert "{.data.host}" in script and "{.data.hosts\\.toml}" in script
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["NAMESPACE"] == Registries().namespace
    assert env["SITE_LABEL"] == Config.model_fields["site_label"].default
    assert pod["volumes"][0]["hostPath"]["path"] == "/etc/containerd/certs.d"
    assert c["volumeMounts"][0]["mountPath"] == "/host/etc/containerd/certs.d"
    role = next(d for d in docs if d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "verbs": ["get", "list", "watch"]}]
    assert {"operator": "Exists"} in pod["tolerations"], "must run on isolated nodes too"
