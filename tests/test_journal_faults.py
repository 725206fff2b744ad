"""The journal failing under a real `sentinel serve`: its lock held by another process past
the busy timeout, its filesystem full. While it cannot write ahead, sentinel acts on nothing
and says why (log, status, metric; the alert's rule is in tests/promtool), the webhook answers
503 so Alertmanager resends; once the fault clears it resumes by itself within a cycle, and
nothing it had acknowledged is lost."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel.core.model import NODE_KEY
from sentinel.sim.fleet import Fleet

from .conftest import Serve, our_taints, poll
from .test_webhook import TOKEN, alert, payload

HOLD_LOCK = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


def _serve(fleet: Fleet, tmp: Path, journal_dir: Path) -> Serve:
    (tmp / "token").write_text(TOKEN + "\n")
    srv = Serve(fleet, tmp, journal_busy_timeout="0.3s",
                alerts={"token_file": "token", "max_body_bytes": 65536})
    cfg = srv.config.read_text().replace("journal: journal.db",
                                         f"journal: {journal_dir / 'journal.db'}")
    srv.config.write_text(cfg)
    srv.journal = journal_dir / "journal.db"
    return srv


def _metric(srv: Serve, name: str) -> float:
    for line in srv.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def _post(srv: Serve, *alerts: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.url + "/api/v1/alerts", json=payload(*alerts), timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"})


def _status(srv: Serve) -> dict[str, Any]:
    r = srv.get("/api/v1/status")
    return r.json() if r.status_code == 200 else {}


def _acts_nothing_then_recovers(srv: Serve, fleet: Fleet, node: str, clear: Any) -> float:
    """The fault is on: crash `node`, see sentinel refuse to act for longer than the rule's
    `for`, clear the fault; returns the seconds from the clearing to the isolation."""
    errors = _metric(srv, 'sentinel_cycles_total{outcome="error"}')
    fleet.crash(node)
    poll(lambda: _status(srv).get("journal", {}).get("writable") is False, 20,
         "status says the journal is not writable")
    assert _metric(srv, "sentinel_journal_writable") == 0.0
    r = _post(srv, alert("during-fault", node))
    assert r.status_code == 503 and "resend" in r.json()["error"], r.text
    # Six failed cycles, each at least 0.5 s apart: past the rule's `for` (2 s) with the node
    # down, so each of them would have isolated it.
    poll(lambda: _metric(srv, 'sentinel_cycles_total{outcome="error"}') >= errors + 6, 60,
         "cycles failing while the journal cannot be written")
    assert our_taints(fleet, node) == {}, "sentinel acted without its write-ahead record"
    assert _metric(srv, "sentinel_journal_write_errors_total") >= 6
    cleared = time.monotonic()
    clear()
    poll(lambda: our_taints(fleet, node).get(NODE_KEY) is not None, 30,
         "the crashed node isolated once the journal can be written")
    took = time.monotonic() - cleared
    st = _status(srv)
    assert st["journal"] == {"writable": True, "error": None, "since": None}
    r = _post(srv, alert("during-fault", node))  # Alertmanager's resend
    assert r.status_code == 200, r.text
    return took


def _journal_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


@pytest.fixture
def serve_logs(tmp_path: Path) -> Iterator[list[Serve]]:
    made: list[Serve] = []
    yield made
    for s in made:
        s.kill()


def test_the_journal_lock_held_past_the_busy_timeout(clean_fleet: Fleet, tmp_path: Path,
                                                     serve_logs: list[Serve]) -> None:
    srv = _serve(clean_fleet, tmp_path, tmp_path)
    serve_logs.append(srv)
    srv.start()
    poll(lambda: srv.cycles() >= 2, 20, "cycles")
    assert _post(srv, alert("before-fault", "edge-a-01")).status_code == 200
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(srv.journal)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"

        def release() -> None:
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()

        took = _acts_nothing_then_recovers(srv, clean_fleet, "edge-b-03", release)
    finally:
        holder.kill()
        holder.wait()
    print(f"journal lock released -> isolation in {took:.2f}s")
    assert took < 10, took
    log = srv.log.read_text()
    # Whichever of the journal's writers meets the lock first says so (a cycle's write-ahead,
    # the settling of an earlier action, a note): which one is a race, not the point.
    assert re.search(r"the journal cannot be written \((write-ahead|settle|notes): database "
                     r"is locked\)", log), log[-3000:]
    assert "the journal can be written again" in log
    fps = {r[0] for r in _journal_rows(srv.journal, "SELECT fingerprint FROM alerts")}
    assert {"before-fault", "during-fault"} <= fps, "an acknowledged alert was lost"
    rows = _journal_rows(srv.journal, "SELECT outcome FROM actions WHERE node = 'edge-b-03' "
                         "AND kind = 'isolate'")
    assert rows and all(o == "applied" for (o,) in rows), rows


def test_the_journal_filesystem_full(clean_fleet: Fleet, tmp_path: Path,
                                     serve_logs: list[Serve]) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the journal here: {mount.stderr.strip()}")
    try:
        srv = _serve(clean_fleet, tmp_path, mnt)
        serve_logs.append(srv)
        srv.start()
        poll(lambda: srv.cycles() >= 2, 20, "cycles")
        assert _post(srv, alert("before-fault", "edge-a-01")).status_code == 200
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill it to the last block
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
            try:
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
            except OSError:
                pass

        def free() -> None:
            filler.unlink()

        took = _acts_nothing_then_recovers(srv, clean_fleet, "edge-c-02", free)
        print(f"journal space freed -> isolation in {took:.2f}s")
        assert took < 10, took
        log = srv.log.read_text()
        assert "database or disk is full" in log, log[-3000:]
        fps = {r[0] for r in _journal_rows(srv.journal, "SELECT fingerprint FROM alerts")}
        assert {"before-fault", "during-fault"} <= fps, "an acknowledged alert was lost"
    finally:
        for s in serve_logs:
            s.kill()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)


def test_a_failed_write_rolls_back_and_the_next_one_succeeds(tmp_path: Path) -> None:
    """The connection is not left inside a transaction: the write after a failed one works
    (before the fix every later BEGIN failed until a restart), and a settle that could not
    be written is written by the next one, so an applied action does not stay `planned`."""
    from sentinel.adapters.journal import Journal, JournalError
    from sentinel.core.effects import Effect, JournalKind
    from sentinel.core.model import NodeName, Note, NoteReason, SiteName

    errors: list[int] = []
    j = Journal(tmp_path / "j.db", busy_timeout=0.1, on_error=lambda: errors.append(1))
    j.write_ahead([Effect("a1", JournalKind.ISOLATE, "s", "kube-proxy", "component",
                          "NoSchedule", "proxy-down", "why", node="n1")], "enforce", 1.0)
    note = Note(NodeName("n1"), SiteName("s"), NoteReason.PENDING, "waiting")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "j.db")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(JournalError, match="database is locked"):
            j.record_notes([note], 1.0)
        with pytest.raises(JournalError):
            j.settle([("a1", "applied", None)])
        assert not j.writable and j.failure is not None and errors == [1, 1]
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        holder.wait(10)
    finally:
        holder.kill()
    j.settle([])
    assert [r["outcome"] for r in j.actions()] == ["applied"]
    j.record_notes([note], 2.0)
    assert j.writable and j.failure is None
    assert [n["text"] for n in j.notes()] == ["waiting"]
    j.close()
