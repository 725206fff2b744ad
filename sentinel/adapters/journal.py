"""The journal: every action and every change of a hold reason, in SQLite (WAL).

It is how an on-call learns what sentinel did at 03:14, and half of how a restarted sentinel
rebuilds its memory (flap damping and the rate budget); the nodes themselves are the other half.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sentinel.core.model import Action, ActionKind, Note

__all__ = ["PLANNED", "Journal", "open_sqlite"]

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


def open_sqlite(path: str, schema: str) -> sqlite3.Connection:
    """The journal file as every writer opens it: WAL, each commit on disk (synchronous=FULL),
    autocommit unless a transaction is begun, and waiting for the other writer's lock rather
    than failing (the journal and the alert store share the file)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class Journal:
    """Thread-safe; one connection, serialised writes, committed before returning."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = open_sqlite(self.path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def plan(self, actions: Iterable[Action], mode: str, ts: float) -> None:
        """Write-ahead: every action is on disk as `planned` before the cluster is touched, so
        a crash between the change and its record cannot lose it."""
        data = [(a.id, ts, mode, PLANNED, a.kind.value, a.node, a.site, a.key, a.level.value,
                 a.effect, a.rule, a.reason, json.dumps(a.evidence, default=str), None)
                for a in actions]
        self._insert_planned(data)

    def plan_switch(self, aid: str, ts: float, mode: str, site: str, kind: str, host: str,
                    to: str, reason: str, evidence: Mapping[str, object]) -> None:
        """A registry switch (`level` `registry`, `effect` the role switched to)."""
        self.plan_other(aid, ts, mode, kind, site, host, "registry", to, "registry-failover",
                        reason, evidence)

    def plan_other(self, aid: str, ts: float, mode: str, kind: str, site: str, key: str,
                   level: str, effect: str, rule: str, reason: str,
                   evidence: Mapping[str, object]) -> None:
        """An action on something other than a node (a registry switch, a rollback),
        write-ahead like a node action with `node` empty, so history lists it."""
        self._insert_planned([(aid, ts, mode, PLANNED, kind, "", site, key, level, effect,
                               rule, reason, json.dumps(evidence, default=str), None)])

    def unsettled_other(self, level: str) -> list[dict[str, Any]]:
        """Non-node actions of this level a dead predecessor left `planned`, any mode."""
        with self._lock:
            cur = self._db.execute("SELECT id, kind, key, mode FROM actions WHERE outcome = ? "
                                   "AND node = '' AND level = ?", (PLANNED, level))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _insert_planned(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO actions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            self._db.execute("COMMIT")

    def settle(self, outcomes: Iterable[tuple[str, str, str | None]]) -> None:
        """(action id, outcome, error) for actions written by `plan`."""
        data = [(outcome, err, aid) for aid, outcome, err in outcomes]
        if not data:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE actions SET outcome = ?, error = ? WHERE id = ? "
                                 f"AND outcome = '{PLANNED}'", data)
            self._db.execute("COMMIT")

    def unsettled(self, mode: str) -> list[dict[str, Any]]:
        """Actions planned by a process that died before it could say how they went."""
        with self._lock:
            cur = self._db.execute("SELECT id, kind, node, key FROM actions WHERE outcome = ? "
                                   "AND mode = ?", (PLANNED, mode))
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def record_notes(self, notes: Iterable[Note], ts: float) -> None:
        data = [(ts, n.node, n.site, n.reason, n.text) for n in notes]
        if not data:
            return
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO notes VALUES (?,?,?,?,?)", data)
            self._db.execute("COMMIT")

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
