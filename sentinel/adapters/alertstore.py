"""Received alerts, durable before acknowledged, each delivery counted once.

Every alert of a webhook call is committed to SQLite (WAL, synchronous=FULL) before the call is
answered, so an alert that got its 200 survives a SIGKILL. Concurrent calls share one commit
(group commit): each waits for the transaction that holds its rows, and throughput does not
pay one fsync per call. The key of a delivery is (fingerprint, status, startsAt): the same
alert sent again — by an Alertmanager HA peer or a retry — is a duplicate, not new evidence.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from sentinel.adapters.journal import open_sqlite, transaction
from sentinel.core.alerts import MappedAlert
from sentinel.core.errors import AdapterError
from sentinel.core.model import AlertEvidence, Level, NodeName

__all__ = ["Accepted", "AlertStore", "StoreError"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT NOT NULL, status TEXT NOT NULL, starts_at TEXT NOT NULL,
    received_at REAL NOT NULL, last_seen REAL NOT NULL, receiver TEXT NOT NULL,
    group_key TEXT NOT NULL, labels TEXT NOT NULL, annotations TEXT NOT NULL,
    ends_at TEXT NOT NULL, source TEXT NOT NULL, node TEXT, site TEXT, key TEXT, level TEXT,
    alertname TEXT, summary TEXT, problem TEXT,
    UNIQUE (fingerprint, status, starts_at)
);
CREATE INDEX IF NOT EXISTS alerts_node ON alerts(node, received_at);
"""


class StoreError(AdapterError):
    """The alerts could not be made durable; the caller must answer 5xx so they are resent."""


@dataclass
class Accepted:
    new: int = 0
    duplicates: int = 0
    resolved: int = 0
    unmapped: list[str] = field(default_factory=list)
    """fingerprint: why, for alerts that name no usable node (kept, never acted on)."""
    unknown_nodes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Batch:
    alerts: Sequence[MappedAlert]
    receiver: str
    group_key: str
    known: Callable[[str], bool]
    now: float


class AlertStore:
    def __init__(self, path: str | Path, stale_after: float,
                 clock: Callable[[], float] = time.time, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self.stale_after = stale_after
        self.clock = clock
        self._db = open_sqlite(self.path, _SCHEMA, busy_timeout)
        self._lock = threading.Lock()
        self._active: dict[str, tuple[AlertEvidence, float]] = {}
        self._load()
        self._queue: queue.Queue[tuple[_Batch, Future[Accepted]] | None] = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, name="alert-writer",
                                        daemon=True)
        self._writer.start()

    def close(self) -> None:
        self._queue.put(None)
        self._writer.join(timeout=10)
        self._db.close()

    # -- reading -------------------------------------------------------------------------
    def _load(self) -> None:
        """Active = firing, seen within stale_after, and no resolve for the same start."""
        rows = self._db.execute(
            "SELECT fingerprint, alertname, node, key, level, starts_at, summary, source, "
            "last_seen FROM alerts f WHERE status = 'firing' AND node IS NOT NULL "
            "AND last_seen >= ? AND NOT EXISTS (SELECT 1 FROM alerts r WHERE "
            "r.fingerprint = f.fingerprint AND r.status = 'resolved' "
            "AND r.starts_at = f.starts_at) ORDER BY starts_at",
            (self.clock() - self.stale_after,)).fetchall()
        for fp, name, node, key, level, starts, summary, source, seen in rows:
            ev = AlertEvidence(fp, name, NodeName(node), key, Level(level), starts, summary,
                               source)
            self._active[fp] = (ev, seen)

    def active(self) -> list[AlertEvidence]:
        horizon = self.clock() - self.stale_after
        with self._lock:
            return [ev for ev, seen in self._active.values() if seen >= horizon]

    def received(self, node: str | None = None) -> list[dict[str, object]]:
        q = "SELECT * FROM alerts" + (" WHERE node = ?" if node else "") + " ORDER BY rowid"
        with self._lock:
            cur = self._db.execute(q, (node,) if node else ())
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    # -- writing -------------------------------------------------------------------------
    def accept(self, alerts: Sequence[MappedAlert], *, receiver: str, group_key: str,
               known: Callable[[str], bool], timeout: float = 30.0) -> Accepted:
        """Blocks until the alerts are committed; raises StoreError if they could not be."""
        fut: Future[Accepted] = Future()
        self._queue.put((_Batch(alerts, receiver, group_key, known, self.clock()), fut))
        try:
            return fut.result(timeout=timeout)
        except StoreError:
            raise
        except Exception as e:  # timeout, or the writer died
            raise StoreError(f"{type(e).__name__}: {e}") from e

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            work = [item]
            while True:  # take everything already waiting: one transaction, one fsync
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                work.append(nxt)
            try:
                with self._lock:
                    results = self._commit([b for b, _ in work])
            except Exception as e:
                for _, fut in work:
                    fut.set_exception(StoreError(f"could not persist the alerts: {e}"))
                continue
            for (_, fut), res in zip(work, results, strict=True):
                fut.set_result(res)

    def _commit(self, batches: list[_Batch]) -> list[Accepted]:
        db = self._db
        out: list[Accepted] = []
        changes: list[tuple[str, MappedAlert, bool, float]] = []  # fp, alert, is_new, now
        with transaction(db, "BEGIN IMMEDIATE"):
            for b in batches:
                acc = Accepted()
                for m in b.alerts:
                    a, ev = m.alert, m.evidence
                    cur = db.execute(
                        "INSERT OR IGNORE INTO alerts VALUES "
                        "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (a.fingerprint, a.status, a.starts_at, b.now, b.now, b.receiver,
                         b.group_key, json.dumps(a.labels, sort_keys=True),
                         json.dumps(a.annotations, sort_keys=True), a.ends_at,
                         ev.source if ev else a.generator_url, ev.node if ev else None,
                         m.site, ev.key if ev else None, ev.level.value if ev else None,
                         ev.alertname if ev else a.labels.get("alertname"),
                         ev.summary if ev else None, m.problem))
                    is_new = cur.rowcount == 1
                    if not is_new:
                        acc.duplicates += 1
                        db.execute("UPDATE alerts SET last_seen = ? WHERE fingerprint = ? AND "
                                   "status = ? AND starts_at = ?",
                                   (b.now, a.fingerprint, a.status, a.starts_at))
                    elif a.status == "resolved":
                        acc.resolved += 1
                    else:
                        acc.new += 1
                    if ev is None:
                        acc.unmapped.append(f"{a.fingerprint}: {m.problem}")
                    elif not b.known(ev.node):
                        acc.unknown_nodes.append(ev.node)
                    resolved_first = a.status == "firing" and is_new and db.execute(
                        "SELECT 1 FROM alerts WHERE fingerprint = ? AND status = 'resolved' "
                        "AND starts_at = ?", (a.fingerprint, a.starts_at)).fetchone()
                    if not resolved_first:
                        changes.append((a.fingerprint, m, is_new, b.now))
                out.append(acc)
        for fp, m, is_new, now in changes:  # only after the commit: memory follows the disk
            if m.alert.status == "resolved":
                prev = self._active.get(fp)
                if prev is not None and prev[0].starts_at == m.alert.starts_at:
                    del self._active[fp]
            elif m.evidence is not None:
                if is_new:
                    self._active[fp] = (m.evidence, now)
                elif fp in self._active:
                    self._active[fp] = (self._active[fp][0], now)
        return out
