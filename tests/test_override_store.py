"""The people's overrides as SentinelOverride objects, read from a watched cache: what one
replica writes the other sees through its watch, the writer reads its own write at once, and
reads cost no API request once listed (at fleet size every `/status` used to list them)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from sentinel.adapters.overrides import OverrideStore, OverrideStoreError
from sentinel.core.model import OverrideKind
from sentinel.core.overrides import OverrideRequest
from sentinel.sim.fleet import install_crds
from sentinel.sim.kubeapi import KubeApiServer
from sentinel.sim.process import free_port
from sentinel.sim.store import Store
from tests.conftest import poll


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    store = Store()
    install_crds(store)
    srv = KubeApiServer(store).start()
    yield srv
    srv.stop()


def _store(srv: KubeApiServer) -> OverrideStore:
    return OverrideStore(client.ApiClient(client.Configuration(host=srv.url)), "sentinel", 5)


def test_a_write_is_read_at_once_by_its_writer_and_soon_by_the_other_replica(
        server: KubeApiServer) -> None:
    a, b = _store(server).start(), _store(server).start()
    try:
        poll(lambda: a.reflector.synced.is_set() and b.reflector.synced.is_set(), 10, "listed")
        now = time.time()
        o = a.create(OverrideRequest(OverrideKind.PAUSE, "maintenance", 600, site="s1"),
                     "alice", now, None)
        assert [x.id for x in a.active(time.time())] == [o.id], "read-after-write"
        poll(lambda: [x.id for x in b.active(time.time())] == [o.id], 10,
             "the other replica sees it through its watch")
        assert b.delete(o.id, "bob", time.time()) is not None
        assert b.active(time.time()) == ()
        poll(lambda: a.active(time.time()) == (), 10, "the lift reaches the first replica")
        assert [e["event"] for e in a.history(time.time())] == ["created", "lifted"]

        before = server.requests.get("GET", 0)
        for _ in range(50):
            a.active(time.time())
        assert server.requests.get("GET", 0) == before, "no API request per read"
    finally:
        a.close()
        b.close()


def test_before_the_cache_has_listed_a_read_asks_the_api_and_says_why_it_cannot() -> None:
    srv = KubeApiServer(Store()).start()  # no CRD installed
    s = _store(srv)
    try:
        with pytest.raises(OverrideStoreError) as e:
            s.active(time.time())
        assert "CRD is not installed" in str(e.value)
    finally:
        s.close()
        srv.stop()



def test_a_replaced_override_that_cannot_be_lifted_is_told_not_raised(
        server: KubeApiServer) -> None:
    """The new override is set by then: an error would read as if nothing had been, and
    invite a second one. What could not be lifted is named, with how to lift it."""
    from sentinel.http.writes import lift_replaced

    writer = _store(server).start()
    # the same store's view, from a replica that has lost the API server since
    nowhere = client.Configuration(host=f"http://127.0.0.1:{free_port()}")
    cut = OverrideStore(client.ApiClient(nowhere), "sentinel", 5)
    try:
        poll(lambda: writer.reflector.synced.is_set(), 10, "listed")
        now = time.time()
        iso = writer.create(OverrideRequest(OverrideKind.ISOLATE, "disk swap", 3600, node="n1",
                                            key="manual"), "alice", now, "s1")
        lifted, warnings = lift_replaced(cut, [iso], "cafe0001", "bob", now)
        assert lifted == []
        assert len(warnings) == 1 and warnings[0].startswith(
            f"override {iso.id} (isolate) is still in force: it could not be lifted ("), warnings
        assert warnings[0].endswith(f"lift it with `sentinel overrides lift {iso.id}`")
        assert [o.id for o in writer.active(time.time())] == [iso.id]
    finally:
        writer.close()
        cut.close()
