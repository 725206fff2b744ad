"""Leader election: the pure lease step as a table, and two real `sentinel serve` replicas
against the emulator — exactly one acts, the other serves reads; killed, the leader is
replaced within the lease duration, and nothing it finished is done again."""

from __future__ import annotations

import time
from pathlib import Path

from sentinel.core.leader import LeaseRecord, lease_step
from sentinel.sim.fleet import Fleet

from .conftest import Serve, our_taints, poll

D = 15.0


def test_the_lease_step() -> None:
    lead, w = lease_step(None, "a", 0.0, 100.0, D)
    assert lead and w == LeaseRecord("a", D, 0, 100.0, 100.0), "nobody holds it: take it"
    held = LeaseRecord("b", D, 3, 50.0, 90.0)
    assert lease_step(held, "a", 95.0, 100.0, D) == (False, None), "b renewed 5 s ago"
    assert lease_step(held, "a", 95.0, 110.0, D) == (False, None), "15 s not yet passed"
    lead, w = lease_step(held, "a", 95.0, 110.1, D)
    assert lead and w is not None and w.holder == "a" and w.transitions == 4
    lead, w = lease_step(LeaseRecord("a", D, 3, 50.0, 90.0), "a", 0.0, 500.0, D)
    assert lead and w is not None and w.renewed == 500.0 and w.acquired == 50.0, "renew"
    lead, w = lease_step(LeaseRecord(None, D, 3), "a", 99.0, 100.0, D)
    assert lead and w is not None and w.transitions == 4, "released: taken at once"
    # the holder's own clock is never compared with ours: a renewTime far in the past
    # means nothing if we saw it change just now
    assert lease_step(LeaseRecord("b", D, 0, 0.0, 0.0), "a", 99.0, 100.0, D) == (False, None)


def _leader(s: Serve) -> float | None:
    r = s.get("/metrics")
    if r.status_code != 200:
        return None
    for line in r.text.splitlines():
        if line.startswith("sentinel_leader "):
            return float(line.split()[1])
    return None


def _applied(s: Serve) -> float:
    total = 0.0
    for line in s.get("/metrics").text.splitlines():
        if line.startswith("sentinel_actions_total{") and 'outcome="applied"' in line:
            total += float(line.split()[-1])
    return total


def _node_writes(fleet: Fleet, node: str) -> int:
    return sum(1 for w in fleet.store.writes if w[1] == "nodes" and w[3] == node
               and w[0] == "update")


def test_one_replica_acts_and_a_successor_repeats_nothing(clean_fleet: Fleet,
                                                           tmp_path: Path) -> None:
    fleet = clean_fleet
    le = {"enabled": True, "namespace": "default", "name": "sentinel-test",
          "lease_duration": "4s", "renew_deadline": "3s", "retry_period": "500ms"}
    journal = str(tmp_path / "journal.db")
    reps = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        reps[name] = Serve(fleet, tmp_path / name, journal=journal,
                           leader_election={**le, "identity": name})
    a, b = reps["a"], reps["b"]
    node = fleet.nodes("site-b")[1]
    try:
        a.start()
        poll(lambda: _leader(a) == 1.0, 15, "a leads")
        b.start()
        poll(lambda: _leader(b) == 0.0, 15, "b follows")
        status = b.get("/api/v1/status").json()
        assert {s["site"] for s in status["sites"]} == set(fleet.sites), "followers serve reads"
        fleet.crash(node)
        poll(lambda: our_taints(fleet, node).get("node") == "NoExecute", 30,
             "the leader isolates the crashed node")
        writes = _node_writes(fleet, node)
        poll(lambda: b.cycles() > 4 and a.cycles() > 4, 15, "both keep cycling")
        assert _applied(a) >= 1 and _applied(b) == 0, "only the leader acts"
        assert _leader(a) == 1.0 and _leader(b) == 0.0

        t0 = time.monotonic()
        a.kill()
        poll(lambda: _leader(b) == 1.0, 10, "b takes over")
        took = time.monotonic() - t0
        assert took <= 4 + 0.5 + 1.0, f"takeover after {took:.1f}s (lease 4 s)"
        c0 = b.cycles()
        poll(lambda: b.cycles() > c0 + 6, 15, "the new leader cycles")
        assert _node_writes(fleet, node) == writes, "the new leader repeated an isolation"
        assert _applied(b) == 0
        fleet.heal_node(node)
        poll(lambda: our_taints(fleet, node) == {}, 30, "the new leader releases the node")
        poll(lambda: _applied(b) >= 1, 10, "the release counted by the new leader")
        rows = [e for e in b.get(f"/api/v1/history?node={node}").json()
                if e["type"] == "action"]
        isolations = [e for e in rows if e["kind"] == "isolate" and e["outcome"] == "applied"]
        releases = [e for e in rows if e["kind"] == "release" and e["outcome"] == "applied"]
        assert len({e["key"] for e in isolations}) == len(isolations), \
            "a key isolated twice"
        assert {e["key"] for e in releases} == {e["key"] for e in isolations}
    finally:
        a.kill()
        b.kill()
