"""The journal: every action and every change of a hold reason, in SQLite (WAL).

It is how an on-call learns what sentinel did at 03:14, and half of how a restarted sentinel
rebuilds its memory (flap damping and the rate budget); the nodes themselves are the other half.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sentinel.core.effects import Effect
from sentinel.core.errors import AdapterError
from sentinel.core.model import ActionKind, Note, Outcome

__all__ = ["PLANNED", "Journal", "JournalError", "open_sqlite", "transaction"]

log = logging.getLogger("sentinel.journal")

PLANNED = "planned"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS actions (
    id TEXT NOT NULL, ts REAL NOT NULL, mode TEXT NOT NULL, outcome TEXT NOT NULL,
    kind TEXT NOT NULL, node TEXT NOT NULL, site TEXT NOT NULL, key TEXT NOT NULL,
    level TEXT NOT NULL, effect TEXT NOT NULL, rule TEXT NOT NULL, reason TEXT NOT NULL,
    evidence TEXT NOT NULL, error TEXT
);
CREATE INDEX IF NOT EXISTS actions_node_ts ON actions(node, ts);
CREATE INDEX IF NOT EXISTS actions_ts ON actions(ts);
CREATE INDEX IF NOT EXISTS actions_id ON actions(id);
CREATE TABLE IF NOT EXISTS notes (
    ts REAL NOT NULL, node TEXT NOT NULL, site TEXT NOT NULL, reason TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_node_ts ON notes(node, ts);
CREATE INDEX IF NOT EXISTS notes_ts ON notes(ts);
"""


class JournalError(AdapterError):
    """The journal could not be written (disk full, the lock held past the busy timeout):
    nothing is acted on until it can be again."""


def open_sqlite(path: str, schema: str, busy_timeout: float = 10.0) -> sqlite3.Connection:
    """The journal file as every writer opens it: WAL, each commit on disk (synchronous=FULL),
    autocommit unless a transaction is begun, and waiting for the other writer's lock rather
    than failing (the journal and the alert store share the file)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                         timeout=busy_timeout)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, begin: str = "BEGIN") -> Iterator[None]:
    """BEGIN ... COMMIT, and ROLLBACK on any failure: a failed write (disk full, the lock
    held past the busy timeout) must not leave the connection inside a transaction, where
    every later BEGIN would fail until a restart."""
    db.execute(begin)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class Journal:
    """Thread-safe; one connection, serialised writes, committed before returning. A write
    that fails raises JournalError and is remembered (`failure`), so status, metrics and the
    alert can say why sentinel stopped acting; the next write that succeeds clears it."""

    def __init__(self, path: str | Path, busy_timeout: float = 10.0,
                 clock: Callable[[], float] = time.time,
                 on_error: Callable[[], None] = lambda: None) -> None:
        self.path = str(path)
        self._db = open_sqlite(self.path, _SCHEMA, busy_timeout)
        self._lock = threading.Lock()
        self.failure: str | None = None
        self.failing_since: float | None = None
        self._clock, self._on_error = clock, on_error
        self._backlog: list[tuple[str, str | None, str]] = []
        """Settles that could not be written: retried before the next one."""

    @property
    def writable(self) -> bool:
        return self.failure is None

    @contextlib.contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                with transaction(self._db):
                    yield self._db
            except sqlite3.Error as e:
                self._on_error()
                if self.failure is None:
                    self.failing_since = self._clock()
                    log.error("the journal cannot be written (%s: %s): sentinel acts on "
                              "nothing until it can", what, e)
                self.failure = f"{what}: {e}"
                raise JournalError(f"the journal {self.path} cannot be written ({what}): "
                                   f"{e}") from e
            if self.failure is not None:
                log.warning("the journal can be written again (it could not for %.0fs: %s)",
                            self._clock() - (self.failing_since or self._clock()),
                            self.failure)
                self.failure = self.failing_since = None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def write_ahead(self, effects: Iterable[Effect], mode: str, ts: float) -> None:
        """Every effect on disk as `planned` before anything is touched, so a crash between
        the change and its record cannot lose it (adapters/acting.py)."""
        data = [(f.id, ts, mode, PLANNED, f.kind.value, f.node, f.site, f.key, f.level,
                 f.effect, f.rule, f.reason, json.dumps(f.evidence, default=str), None)
                for f in effects]
        self._insert_planned(data)

    def unsettled_other(self, level: str) -> list[dict[str, Any]]:
        """Actions on what is not a node (`node` empty), of this level, that a dead
        predecessor left `planned`, any mode."""
        with self._lock:
            cur = self._db.execute("SELECT id, kind, key, mode FROM actions WHERE outcome = ? "
                                   "AND node = '' AND level = ?", (PLANNED, level))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def interrupt_other(self, level: str, why: str) -> list[dict[str, Any]]:
        """Close as interrupted what `unsettled_other(level)` finds; returns those rows."""
        rows = self.unsettled_other(level)
        self.settle([(r["id"], Outcome.INTERRUPTED, why) for r in rows])
        return rows

    def _insert_planned(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._writing("write-ahead") as db:
            db.executemany("INSERT INTO actions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)

    def settle(self, outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """(action id, outcome, error) for actions written ahead. What cannot be written now
        is kept and written first by the next settle, so an applied action does not stay
        `planned` until a restart."""
        data = [*self._backlog, *((outcome, err, aid) for aid, outcome, err in outcomes)]
        if not data:
            return
        try:
            with self._writing("settle") as db:
                db.executemany("UPDATE actions SET outcome = ?, error = ? WHERE id = ? "
                               f"AND outcome = '{PLANNED}'", data)
        except JournalError:
            self._backlog = data
            raise
        self._backlog = []

    def unsettled(self, mode: str) -> list[dict[str, Any]]:
        """Node actions planned by a process that died before it could say how they went.
        Only node actions: the rollout guard and the registry guard settle their own (a
        rollback this process has in flight is `planned` too, and is not the cycle's to
        close — that race closed a live rollback as interrupted)."""
        with self._lock:
            cur = self._db.execute("SELECT id, kind, node, key FROM actions WHERE outcome = ? "
                                   "AND mode = ? AND node != ''", (PLANNED, mode))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def record_notes(self, notes: Iterable[Note], ts: float) -> None:
        data = [(ts, n.node, n.site, n.reason, n.text) for n in notes]
        if not data:
            return
        with self._writing("notes") as db:
            db.executemany("INSERT INTO notes VALUES (?,?,?,?,?)", data)

    def actions(self, *, node: str | None = None, site: str | None = None,
                since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` actions matching, oldest first."""
        return self._newest("actions", node, site, since, limit)

    def notes(self, *, node: str | None = None, site: str | None = None,
              since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` changes of a hold reason matching, oldest first."""
        return self._newest("notes", node, site, since, limit)

    def _newest(self, table: str, node: str | None, site: str | None, since: float | None,
                limit: int) -> list[dict[str, Any]]:
        q = f"SELECT * FROM {table} WHERE 1=1"
        args: list[Any] = []
        for col, value in (("node", node), ("site", site)):
            if value:
                q += f" AND {col} = ?"
                args.append(value)
        if since is not None:
            q += " AND ts >= ?"
            args.append(since)
        q += " ORDER BY ts DESC, rowid DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            cur = self._db.execute(q, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in reversed(cur.fetchall())]

    def memory(self, now: float, flap_window: float,
               mode: str) -> tuple[Mapping[str, float], tuple[float, ...]]:
        """What decide must remember across a restart: the last release that freed each node
        within the flap window, and the isolations of the last minute (for the rate budget)."""
        with self._lock:
            rel = self._db.execute(
                "SELECT node, MAX(ts) FROM actions WHERE kind = ? AND outcome = 'applied' "
                "AND mode = ? AND ts >= ? AND json_extract(evidence, '$.frees_node') = 1 "
                "GROUP BY node",
                (ActionKind.RELEASE.value, mode, now - flap_window)).fetchall()
            iso = self._db.execute(
                "SELECT ts FROM actions WHERE kind = ? AND outcome = 'applied' AND mode = ? "
                "AND ts >= ? ORDER BY ts", (ActionKind.ISOLATE.value, mode, now - 60)).fetchall()
        return {n: t for n, t in rel}, tuple(t for (t,) in iso)
