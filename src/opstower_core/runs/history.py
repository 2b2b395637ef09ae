"""Run history in a local SQLite file: every backup, verification, restore and drill.

The health checks and the dashboard read it later, also while the database is down.
Nothing secret is ever written here.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,            -- backup, verify, restore, drill, health
    database TEXT NOT NULL,
    artifact TEXT,
    status TEXT NOT NULL,          -- success, failed, cancelled (verify: PASS/FAIL/WARN)
    started_at REAL NOT NULL,      -- unix seconds
    finished_at REAL,
    size_bytes INTEGER,
    duration_seconds REAL,
    error TEXT,
    details TEXT                   -- JSON
);
CREATE INDEX IF NOT EXISTS runs_kind_db ON runs(kind, database, started_at);
CREATE INDEX IF NOT EXISTS runs_kind_artifact ON runs(kind, artifact, started_at);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    database: str
    artifact: str | None
    status: str
    started_at: float
    finished_at: float | None
    size_bytes: int | None
    duration_seconds: float | None
    error: str | None
    details: dict[str, Any]


class StateStore:
    """The SQLite state file (`<state_dir>/state.sqlite3`)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "state.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        with self.connect() as db:
            db.executescript(SCHEMA)
        self.path.chmod(0o600)

    @contextmanager
    def connect(self, rows: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction on the state file (committed on success); `rows`: sqlite3.Row results."""
        db = sqlite3.connect(self.path, timeout=10)
        if rows:
            db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def record(
        self,
        kind: str,
        database: str,
        status: str,
        *,
        artifact: str | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        size_bytes: int | None = None,
        duration_seconds: float | None = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append one run; returns its id."""
        finished_at = finished_at or time.time()
        started_at = started_at or finished_at - (duration_seconds or 0.0)
        with self.connect() as db:
            cur = db.execute(
                "INSERT INTO runs(kind, database, artifact, status, started_at, finished_at, size_bytes,"
                " duration_seconds, error, details) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (kind, database, artifact, status, started_at, finished_at, size_bytes, duration_seconds, error,
                 json.dumps(details or {}, default=str)),
            )
            return int(cur.lastrowid or 0)

    def runs(
        self, kind: str | None = None, database: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[RunRecord]:
        """Newest first."""
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if database:
            where.append("database = ?")
            args.append(database)
        if since is not None:
            where.append("started_at >= ?")
            args.append(since)
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        args.append(limit)
        with self.connect() as db:
            rows = db.execute(sql, args).fetchall()
        return [RunRecord(*row[:10], json.loads(row[10] or "{}")) for row in rows]

    def last(self, kind: str, database: str | None = None, artifact: str | None = None) -> RunRecord | None:
        for run in self.runs(kind, database, limit=200):
            if artifact is None or run.artifact == artifact:
                return run
        return None

    def verdict(self, artifact: str) -> RunRecord | None:
        """The latest verification verdict (PASS, WARN or FAIL) of one artifact, by file name.

        Cancelled or crashed verifications say nothing about the artifact and are skipped.
        """
        with self.connect() as db:
            row = db.execute(
                "SELECT * FROM runs WHERE kind = 'verify' AND artifact = ? AND status IN ('PASS', 'WARN', 'FAIL')"
                " ORDER BY started_at DESC, id DESC LIMIT 1", (artifact,)).fetchone()
        return RunRecord(*row[:10], json.loads(row[10] or "{}")) if row else None

    def verdicts(self, database: str | None = None) -> dict[str, RunRecord]:
        """artifact file name -> its latest verification verdict (PASS, WARN or FAIL), one query."""
        where, args = "", []
        if database is not None:
            where, args = " AND database = ?", [database]
        with self.connect() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE kind = 'verify' AND artifact IS NOT NULL"
                " AND status IN ('PASS', 'WARN', 'FAIL')" + where + " ORDER BY started_at DESC, id DESC", args).fetchall()
        out: dict[str, RunRecord] = {}
        for row in rows:
            out.setdefault(row[3], RunRecord(*row[:10], json.loads(row[10] or "{}")))
        return out

    def get(self, key: str, default: Any = None) -> Any:
        with self.connect() as db:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, key: str, value: Any) -> None:
        with self.connect() as db:
            db.execute("INSERT INTO kv(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                       (key, json.dumps(value, default=str)))
