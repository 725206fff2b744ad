"""Overrides on disk, in the journal's SQLite file: they survive a restart and are visible to
every replica. Rows are never removed, only marked lifted, so `history` tells who did what by
hand, and when."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Any

from sentinel.adapters.journal import open_sqlite
from sentinel.core.model import Override, OverrideKind
from sentinel.core.overrides import OverrideRequest
from sentinel.core.timefmt import span

__all__ = ["OverrideStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS overrides (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, node TEXT, site TEXT, key TEXT NOT NULL,
    force INTEGER NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, deleted REAL, deleted_by TEXT, node_site TEXT
);
CREATE INDEX IF NOT EXISTS overrides_expires ON overrides(expires);
"""

_COLS = "id, kind, reason, by, created, expires, node, site, key, force"


def _row(r: tuple[object, ...]) -> Override:
    oid, kind, reason, by, created, expires, node, site, key, force = r
    return Override(str(oid), OverrideKind(str(kind)), str(reason), str(by), float(str(created)),
                    float(str(expires)), None if node is None else str(node),
                    None if site is None else str(site), str(key), bool(force))


class OverrideStore:
    def __init__(self, path: str | Path, busy_timeout: float = 10.0) -> None:
        self._db = open_sqlite(str(path), _SCHEMA, busy_timeout)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, req: OverrideRequest, by: str, now: float, site: str | None) -> Override:
        """`site` is the node's site, for the history's site filter."""
        o = Override(secrets.token_hex(4), req.kind, req.reason.strip(), by, now, now + req.ttl,
                     req.node, req.site, req.key, req.force)
        with self._lock:
            self._db.execute(f"INSERT INTO overrides ({_COLS}, node_site) "
                             "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                             (o.id, o.kind.value, o.reason, o.by, o.created, o.expires, o.node,
                              o.site, o.key, int(o.force), site or o.site))
        return o

    def delete(self, oid: str, by: str, now: float) -> Override | None:
        """Lift an override; None if there is none in force with that id."""
        with self._lock:
            cur = self._db.execute(f"SELECT {_COLS} FROM overrides WHERE id = ? AND deleted IS "
                                   "NULL AND expires > ?", (oid, now))
            r = cur.fetchone()
            if r is None:
                return None
            self._db.execute("UPDATE overrides SET deleted = ?, deleted_by = ? WHERE id = ?",
                             (now, by, oid))
        return _row(r)

    def active(self, now: float) -> tuple[Override, ...]:
        with self._lock:
            cur = self._db.execute(f"SELECT {_COLS} FROM overrides WHERE deleted IS NULL AND "
                                   "expires > ? ORDER BY created, id", (now,))
            return tuple(_row(r) for r in cur.fetchall())

    def get(self, oid: str) -> Override | None:
        with self._lock:
            r = self._db.execute(f"SELECT {_COLS} FROM overrides WHERE id = ?",
                                 (oid,)).fetchone()
        return None if r is None else _row(r)

    def history(self, now: float, *, node: str | None = None, site: str | None = None,
                since: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Each override's creation and its end (lifted by someone, or expired once its time
        has passed), as history entries."""
        q = f"SELECT {_COLS}, deleted, deleted_by, node_site FROM overrides WHERE 1=1"
        args: list[Any] = []
        if node:
            q += " AND node = ?"
            args.append(node)
        if site:
            q += " AND (node_site = ? OR site = ? OR (site IS NULL AND node IS NULL))"
            args += [site, site]
        q += " ORDER BY created DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        out: list[dict[str, Any]] = []
        for r in rows:
            o, deleted, deleted_by, node_site = _row(r[:10]), r[10], r[11], r[12]
            base = {"type": "override", "node": o.node or "", "site": node_site or "",
                    "override": o.record()}
            out.append({**base, "ts": o.created, "event": "created",
                        "text": f"{o.by} set override {o.id}: {_describe(o)}"})
            if deleted is not None:
                out.append({**base, "ts": float(deleted), "event": "lifted",
                            "text": f"{deleted_by} lifted override {o.id} ({_describe(o)})"})
            elif o.expires <= now:
                out.append({**base, "ts": o.expires, "event": "expired",
                            "text": f"override {o.id} expired ({_describe(o)})"})
        return [e for e in out if since is None or e["ts"] >= since]


def _describe(o: Override) -> str:
    key = f" {o.key}" if o.key else ""
    force = " --force" if o.force else ""
    return f"{o.kind.value}{key}{force} {o.target} for {span(o.expires - o.created)}: {o.reason}"
