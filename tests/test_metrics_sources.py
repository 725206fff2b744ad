"""Metrics sources other than a bare site Prometheus, with real processes: a central
Prometheus federating every site's Prometheus (central-store mode), and a site behind a
gateway that demands a bearer token and a tenant header."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel.adapters.central import CentralCollector
from sentinel.adapters.established import MAX_NAMED, EstablishedMemory
from sentinel.adapters.prom import SiteTarget, site_targets
from sentinel.adapters.promhttp import PromClients
from sentinel.anomaly.history import fetch_history
from sentinel.core.model import NODE_KEY, Level, SiteState, SiteView
from sentinel.core.ruleset import Rule
from sentinel.sim.fleet import Fleet
from sentinel.sim.prometheus import CentralPrometheus

from .conftest import our_taints

TOKEN = "edge-reader-token"
TENANT = ("X-Scope-OrgID", "edge")


@pytest.fixture(scope="module")
def central(fleet: Fleet) -> Iterator[CentralPrometheus]:
    c = CentralPrometheus(fleet.prometheus_urls(), scrape_interval=1.0)
    c.log_queries()
    c.start()
    try:
        c.wait_ready()
        yield c
    finally:
        c.stop()


def _central(fleet: Fleet, central: CentralPrometheus) -> dict[str, Any]:
    return {"sites": [{"name": s} for s in fleet.sites],
            "metrics_source": {"mode": "central", "url": central.url, "timeout": "1.5s"}}


def _all_arriving(fleet: Fleet, node: str) -> Any:
    site = next(s for s in fleet.sites if node in fleet.nodes(s))
    return lambda r: all(v.reachable for v in r.snapshot.sites.values()) and \
        node in r.snapshot.sites[site].present


@pytest.mark.parametrize("mode", ["per-site", "central"])
def test_a_crashed_node_reaches_level_2(clean_fleet: Fleet, harness: Any,
                                        central: CentralPrometheus, mode: str) -> None:
    """Both witnesses, whichever store the site's data comes from; the time is printed for
    the two modes side by side (central adds the federation's scrape)."""
    h = harness(**(_central(clean_fleet, central) if mode == "central" else {}))
    node = "edge-a-02"
    h.until(_all_arriving(clean_fleet, node), 30, "every site's data arriving")
    t0 = time.monotonic()
    clean_fleet.crash(node)
    h.until(lambda r: our_taints(clean_fleet, node).get(NODE_KEY) == "NoExecute", 40,
            "the crashed node at level 2")
    print(f"{mode}: crash -> level 2 in {time.monotonic() - t0:.1f}s")
    others = [n for n in clean_fleet.nodes() if n != node and our_taints(clean_fleet, n)]
    assert others == [], "only the crashed node is isolated"


def test_central_a_site_whose_data_stops_arriving_is_stale_not_down(
        clean_fleet: Fleet, harness: Any, central: CentralPrometheus) -> None:
    """The partition cuts the site's uplink, which the central Prometheus federates through.
    Federated samples keep their own timestamps, so Prometheus writes no staleness marker:
    the site's last samples stay visible for its lookback (5 min) and only their age tells
    that nothing arrives any more. Sentinel reads that age: the site is stale, never "every
    node down", and nothing there is isolated."""
    h = harness(**_central(clean_fleet, central), durations={"max_data_age": 4})
    h.until(_all_arriving(clean_fleet, "edge-b-01"), 30, "every site's data arriving")
    clean_fleet.partition("site-b")
    h.until(lambda r: r.detection.sites["site-b"].state in (SiteState.STALE,
                                                            SiteState.PARTITIONED), 30,
            "site-b stale once its data stops arriving")
    reports = h.run_for(6)  # three times the node rule's `for`
    assert all(r.detection.sites["site-b"].state in (SiteState.STALE, SiteState.PARTITIONED)
               for r in reports)
    tainted = [n for n in clean_fleet.nodes() if our_taints(clean_fleet, n)]
    assert tainted == [], "a site whose data stopped arriving had nodes isolated"
    assert all(r.detection.sites["site-a"].state is SiteState.OK for r in reports), \
        "the other sites go on"


def _asked(central: CentralPrometheus) -> list[str]:
    path = central.query_log
    assert path is not None, "the fixture asks it to log its queries"
    if not path.exists():
        return []
    return [json.loads(line)["params"]["query"] for line in path.read_text().splitlines()
            if line.strip()]


def test_central_asks_freshness_of_a_few_nodes_a_site_and_in_full_where_they_prove_nothing(
        clean_fleet: Fleet, central: CentralPrometheus) -> None:
    """The full freshness query reads every `up` series of the fleet: asked only while
    neither the cluster nor a presence answer names the nodes; else of three nodes per site
    (any node's `up` is written at each of its site's scrapes), in the first cycle those the
    cluster places there. A site whose sampled nodes have no series (they left discovery) is
    asked again by its site label, in full, and is as fresh as it is: never stale for its
    sample."""
    sites = clean_fleet.sites
    where = {n: s for s in sites for n in clean_fleet.nodes(s)}
    target = SiteTarget("central", central.url, 5.0)
    fresh = "timestamp(up"

    def sampled(asked: list[str]) -> None:
        assert len(asked) == 1 and 'node=~"' in asked[0], asked
        named = set(asked[0].split('node=~"')[1].split('"')[0].split("|"))
        for s in sites:
            mine = {x for x in named if x in clean_fleet.nodes(s)}
            assert len(mine) == min(3, len(clean_fleet.nodes(s))), (s, named)

    async def run(collector: CentralCollector, cloud: dict[str, str]) -> None:
        n = len(_asked(central))
        deadline = time.monotonic() + 30
        while not all(v.reachable for v in (await collector.collect([])).values()):
            assert time.monotonic() < deadline, "the sites' data never reached the store"
            await asyncio.sleep(0.5)
        asked = [q for q in _asked(central)[n:] if fresh in q]
        if cloud:
            sampled(asked[:1])  # the cluster's nodes: no need to read every series
        else:
            assert asked[0] == 'time() - max by (site) (timestamp(up{node!=""}))', \
                "until the cluster or a presence answer names the nodes: in full"
        cloud.update(where)
        n = len(_asked(central))
        second = await collector.collect([])
        sampled([q for q in _asked(central)[n:] if fresh in q])
        assert all(v.reachable and v.data_age is not None and v.data_age <= 30
                   for v in second.values()), second
        assert collector.freshness.nodes is not None
        collector.freshness.nodes["site-a"] = ["edge-a-gone"]  # its target left discovery
        n = len(_asked(central))
        third = await collector.collect([])
        asked = [q for q in _asked(central)[n:] if fresh in q]
        assert len(asked) == 2 and "edge-a-gone" in asked[0], asked
        assert asked[1] == 'time() - max by (site) (timestamp(up{node!="", site=~"site-a"}))'
        a = third["site-a"]
        assert a.reachable and a.data_age is not None and a.data_age <= 30, a
        assert set(a.present) == set(clean_fleet.nodes("site-a"))

    async def closing(cloud: dict[str, str]) -> None:
        collector = CentralCollector(target, sites, "site", "max by (node) (up)", clients,
                                     lambda: cloud, max_data_age=30.0)
        try:
            await run(collector, cloud)
        finally:
            await clients.aclose()

    for cloud in ({}, dict(where)):  # the cluster not listed yet, then listed
        clients = PromClients()
        asyncio.run(closing(cloud))


def test_central_names_the_query_the_store_failed(
        clean_fleet: Fleet, central: CentralPrometheus) -> None:
    """Every site is unreachable when the store cannot answer the presence or the freshness
    query; the reason names which, so that an operator knows what to look at in the store."""
    sites = clean_fleet.sites
    target = SiteTarget("central", central.url, 5.0)

    async def run() -> dict[str, SiteView]:
        clients = PromClients()
        try:
            return await CentralCollector(target, sites, "site", "max by (node) (up", clients,
                                          dict).collect([])
        finally:
            await clients.aclose()

    views = asyncio.run(run())
    assert set(views) == set(sites) and not any(v.reachable for v in views.values())
    why = views[sites[0]].error or ""
    assert why.startswith(f"central store {central.url}: its presence query: "), why
    assert "parse error" in why, why


def test_central_asks_the_fleet_wide_established_query_once_and_remembers(
        clean_fleet: Fleet, central: CentralPrometheus) -> None:
    """`count by (node) (up offset Ns)` reads every `up` series of the fleet: asked once, then
    remembered while each node stays in the presence answers. A node missing from one answer
    is forgotten, and asked about by name (a real Prometheus parses the name's regex) once a
    rule matches it; the crash is then a witness again."""
    rule = Rule(name="node-down", level=Level.NODE, component="node-exporter",
                expr='up{job="node-exporter"} == 0', for_seconds=2.0, severity="critical",
                description="", origin="test:1")
    sites = clean_fleet.sites
    where = {n: s for s in sites for n in clean_fleet.nodes(s)}
    target = SiteTarget("central", central.url, 5.0)
    node = "edge-a-02"
    without = f'max by (node) (up{{node!="{node}"}})'

    async def cycle(presence: str) -> dict[str, SiteView]:
        collector = CentralCollector(target, sites, "site", presence, clients,
                                     lambda: where)
        collector.established = memory
        return await collector.collect([rule])

    async def run() -> None:
        first = await cycle("max by (node) (up)")
        assert node in (first["site-a"].established or ()), first["site-a"]
        whole = "count by (node) (up offset 2s)"
        n = len(_asked(central))
        await cycle("max by (node) (up)")
        assert whole not in _asked(central)[n:], "the fleet-wide query asked again"
        gone = await cycle(without)  # missing from the answer: forgotten
        assert node not in (gone["site-a"].established or ())
        clean_fleet.crash(node)
        try:
            deadline = time.monotonic() + 20
            while True:
                n = len(_asked(central))
                v = (await cycle("max by (node) (up)"))["site-a"]
                if "node-down" in v.firing and node in v.firing["node-down"]:
                    break
                assert time.monotonic() < deadline, "the crash never reached the store"
                await asyncio.sleep(0.5)
            assert node in (v.established or ()), "asked by name: its series are old"
            named = [q for q in _asked(central)[n:] if "offset" in q]
            assert named == ['count by (node) (up{node=~"edge-a-02"} offset 2s)'], named
        finally:
            clean_fleet.heal_node(node)

    async def closing() -> None:
        try:
            await run()
        finally:
            await clients.aclose()

    clients = PromClients()
    memory = EstablishedMemory()
    asyncio.run(closing())


class _Gateway(BaseHTTPRequestHandler):
    """An auth gateway in front of a Prometheus (as an ingress with auth would be): a bearer
    token and the tenant header, else 401; then the request as it came."""

    upstream = ""
    delay = 0.0
    """Seconds before each answer: a slow store."""

    def do_GET(self) -> None:
        self._forward(None)

    def do_POST(self) -> None:
        self._forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def _forward(self, body: bytes | None) -> None:
        time.sleep(self.delay)  # the store's slowness, not a synchronisation
        if len(self.requestline) > 8192:  # nginx's default large_client_header_buffers
            self.send_response(414)
            self.end_headers()
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}" or \
                self.headers.get(TENANT[0]) != TENANT[1]:
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"unauthorized")
            return
        path = self.path.removeprefix("/prom")
        r = httpx.get(self.upstream + path, timeout=10) if body is None else httpx.post(
            self.upstream + path, content=body, timeout=10,
            headers={"Content-Type": self.headers.get("Content-Type", "")})
        self.send_response(r.status_code)
        self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
        self.end_headers()
        self.wfile.write(r.content)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def gateway(fleet: Fleet) -> Iterator[str]:
    handler = type("Gateway", (_Gateway,), {"upstream": fleet.prometheus_urls()["site-a"]})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_site_behind_a_gateway_that_demands_a_token_and_a_tenant(
        clean_fleet: Fleet, harness: Any, gateway: str, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    urls = clean_fleet.prometheus_urls()
    sites = [{"name": s, "prometheus": u} for s, u in urls.items() if s != "site-a"]
    h = harness(sites=[{"name": "site-a", "prometheus": gateway, "http": {
        "bearer_token_file": str(tmp_path / "token"), "headers": dict([TENANT]),
        "path_prefix": "/prom"}}, *sites])
    # The first cycle that reaches the site may see some of its queries time out on a busy
    # machine (the gateway is one more hop; CI saw the runtime-info probe among them): the
    # site must answer through the gateway, the probe included, within the deadline.
    def through(r: Any) -> bool:
        v = r.snapshot.sites["site-a"]
        return v.reachable and v.uptime is not None
    h.until(through, 20, "site-a and its runtime-info probe through the gateway")
    node = "edge-a-03"
    clean_fleet.crash(node)
    h.until(lambda r: our_taints(clean_fleet, node).get(NODE_KEY) == "NoExecute", 40,
            "a crashed node behind the gateway at level 2")
    # range queries (anomaly training, rollout analysis) go through the same settings
    now = time.time()
    hist = fetch_history([t for t in site_targets(h.cfg) if t.name == "site-a"],
                         {"up": "max by (node) (up)"}, now - 20, now, 5.0)
    assert not hist.errors and set(hist.nodes) == set(clean_fleet.nodes("site-a"))
    # without the tenant header the gateway refuses, and sentinel says so
    h2 = harness(sites=[{"name": "site-a", "prometheus": gateway, "http": {
        "bearer_token_file": str(tmp_path / "token"), "path_prefix": "/prom"}}, *sites])
    rep = h2.cycle()
    assert not rep.snapshot.sites["site-a"].reachable
    assert "HTTP 401" in (rep.snapshot.sites["site-a"].error or "")
    # a token file gone (a Secret unmounted) leaves that site out of training, not all sites
    (tmp_path / "token").unlink()
    both = [t for t in site_targets(h.cfg) if t.name in ("site-a", "site-b")]
    hist = fetch_history(both, {"up": "max by (node) (up)"}, now - 20, now, 5.0)
    assert set(hist.errors) == {"site-a"}, hist.errors
    assert "cannot read the secret file" in hist.errors["site-a"]
    assert set(hist.nodes) == set(clean_fleet.nodes("site-b"))


def test_a_long_query_goes_in_the_body_where_a_gateway_refuses_a_long_url(
        clean_fleet: Fleet, gateway: str, tmp_path: Path) -> None:
    """A central store's freshness sample names 1,500 nodes at 500 sites (over 20 KB): an
    nginx in front refuses a request line over 8 KB with 414. Sent in a POST body, as the
    HTTP API allows, it is answered; a short query stays a GET."""
    (tmp_path / "token").write_text(TOKEN)
    from sentinel.adapters.prom import LONG_QUERY, query_instant
    from sentinel.adapters.promql import alternation
    from sentinel.config.sources import HttpSettings

    http = HttpSettings.model_validate({"bearer_token_file": str(tmp_path / "token"),
                                        "headers": dict([TENANT]), "path_prefix": "/prom"})
    target = SiteTarget("site-a", gateway + "/prom", 5.0, http.resolved(str))
    nodes = clean_fleet.nodes("site-a")
    many = [*nodes, *(f"edge-a-absent-{i:05d}" for i in range(600))]
    expr = f'max by (node) (up{{node=~"{"|".join(many)}"}})'
    assert len(expr) > 8192 > LONG_QUERY

    async def ask(e: str) -> set[str]:
        clients = PromClients()
        try:
            return {m["node"] for m, _ in await query_instant(
                clients.async_client(target.http), target, e, 5.0) if "node" in m}
        finally:
            await clients.aclose()

    assert asyncio.run(ask(expr)) == set(nodes)
    assert asyncio.run(ask("max by (node) (up)")) == set(nodes)
    # a name's dots are literal: "edge.a.01" is not edge-a-01 (names go in as a set of values)
    dotted = nodes[0].replace("-", ".")
    assert asyncio.run(ask(f'max by (node) (up{{node=~"{alternation([dotted])}"}})')) == set()
    assert asyncio.run(ask(f'max by (node) (up{{node=~"{alternation(nodes)}"}})')) == set(nodes)


def test_a_cycle_says_how_long_it_waited_for_the_metrics(
        clean_fleet: Fleet, harness: Any, gateway: str, tmp_path: Path) -> None:
    """A slow cycle is the store's or sentinel's: the report and the metrics keep the wait for
    the answers apart (the status and the overrun warning read the report)."""
    (tmp_path / "token").write_text(TOKEN)
    urls = clean_fleet.prometheus_urls()
    sites = [{"name": s, "prometheus": u} for s, u in urls.items() if s != "site-a"]
    h = harness(sites=[{"name": "site-a", "prometheus": gateway, "timeout": "5s", "http": {
        "bearer_token_file": str(tmp_path / "token"), "headers": dict([TENANT]),
        "path_prefix": "/prom"}}, *sites])
    _Gateway.delay = 1.0
    try:
        rep = h.until(lambda r: r.snapshot.sites["site-a"].reachable, 20,
                      "site-a answering, slowly, through the gateway")
    finally:
        _Gateway.delay = 0.0
    assert 1.0 <= rep.collect_seconds <= rep.duration, (rep.collect_seconds, rep.duration)
    waited = h.rt.registry.get_sample_value("sentinel_cycle_collect_duration_seconds_sum")
    took = h.rt.registry.get_sample_value("sentinel_cycle_duration_seconds_sum")
    assert waited is not None and took is not None and 1.0 <= waited <= took


def test_a_rotated_secret_file_is_read_again(tmp_path: Path) -> None:
    """A Secret mounted as a file is replaced in place when it rotates: no restart needed."""
    import os

    from sentinel.adapters.promhttp import FileSecret

    f = tmp_path / "token"
    f.write_text("old\n")
    secret = FileSecret(str(f))
    assert secret.value() == "old"
    f.write_text("new\n")
    st = f.stat()
    os.utime(f, (st.st_atime, st.st_mtime + 5))  # a later mtime, as the kubelet's swap gives
    assert secret.value() == "new"


def test_established_memory_forgets_a_node_missing_once_and_asks_all_when_many() -> None:
    """Remembered nodes are not asked again; a node missing from a presence answer, or every
    node after a failed one, is asked by name when a rule matches it; the whole fleet only at
    start, when the longest `for` changes, or when too many match to name."""
    m = EstablishedMemory()
    assert m.whole(30.0) and m.to_ask({"a"}) is None, "nothing remembered: the whole fleet"
    assert m.update(present={"a", "b", "c"}, established={"a", "b"}) == {"a", "b"}
    assert not m.whole(30.0)
    assert m.to_ask({"a", "c"}) == {"c"}, "only what a rule matches and is not remembered"
    assert m.update(present={"b", "c"}, established=()) == {"b"}, "a missing from the answer"
    assert m.to_ask({"a"}) == {"a"}, "a forgotten node is asked about again"
    assert m.to_ask({f"n{i}" for i in range(MAX_NAMED + 1)}) is None, "too many to name"
    m.update(present={"a", "b"}, established={"a", "b"})
    assert m.whole(60.0), "vouched for at 30 s is not at 60 s: the whole fleet again"
    assert m.to_ask({"a"}) is None
    m.update(present={"a", "b"}, established={"a", "b"})
    m.forget()  # a failed presence answer: nobody vouched for, the fleet not asked again
    assert not m.whole(60.0) and m.to_ask({"a", "c"}) == {"a", "c"}
    assert m.to_ask({f"n{i}" for i in range(MAX_NAMED + 1)}) is None
    never = EstablishedMemory()
    never.forget()
    assert never.whole(60.0) and never.to_ask({"a"}) is None, "never asked: the whole fleet"


def test_freshness_sample_changes_its_nodes_each_cycle_and_rechecks_what_it_cannot_vouch_for(
        ) -> None:
    from sentinel.adapters.freshness import FreshnessSample

    f = FreshnessSample(max_age=120.0, size=2)
    assert f.query("site") == ('time() - max by (site) (timestamp(up{node!=""}))', False)
    present = {"a": ["a1", "a2", "a3", "a4", "a5"], "b": ["b1"], "c": []}
    seen: set[str] = set()
    for _ in range(3):
        f.update(present)
        assert f.nodes is not None and len(f.nodes["a"]) == 2 and f.nodes["b"] == ["b1"]
        assert "c" not in f.nodes, "a site without nodes has nothing to sample"
        seen |= set(f.nodes["a"])
    assert seen == set(present["a"]), "every node of the site is asked in turn"
    q, sampled = f.query("site")
    assert sampled and q.startswith('time() - max by (site) (timestamp(up{node=~"')
    assert f.recheck({"a": 119.0, "b": 121.0}, ["a", "b", "c"]) == ["b", "c"], \
        "older than max_data_age, or not in the answer: asked in full"


def test_a_site_left_out_of_training_names_its_prometheus() -> None:
    """The warning names the site, the URL sentinel asked and the feature, so that the 3 a.m.
    reader knows which server to look at."""
    from sentinel.adapters.prom import SiteTarget
    from sentinel.sim.process import free_port

    url = f"http://127.0.0.1:{free_port()}"
    now = time.time()
    hist = fetch_history([SiteTarget("site-x", url, 2.0)], {"cpu": "max by (node) (up)"},
                         now - 60, now, 5.0)
    assert hist.nodes == ()
    assert hist.errors["site-x"].startswith(f"its Prometheus at {url}: feature 'cpu': "), \
        hist.errors
