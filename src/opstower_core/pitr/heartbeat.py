"""`pitr heartbeat`: a timestamp row the archive carries; a recovery to latest reads it back (measured RPO)."""

from __future__ import annotations

from datetime import datetime

from opstower_core.config import Target
from opstower_core.pg.tools import connect

TABLE = "opstower_heartbeat"


def beat(target: Target) -> datetime:
    """Write now() into the one-row heartbeat table of `target`'s database; returns the time written."""
    with connect(target) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id int PRIMARY KEY CHECK (id = 1), at timestamptz NOT NULL)")
        return conn.execute(f"INSERT INTO {TABLE} VALUES (1, clock_timestamp()) ON CONFLICT (id) DO UPDATE "
                            "SET at = excluded.at RETURNING at").fetchone()[0]


def read_heartbeat(target: Target) -> datetime | None:
    """The last heartbeat in `target`'s database (a recovered cluster's: the moment its data reaches)."""
    with connect(target) as conn:
        if conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()[0] is None:
            return None
        row = conn.execute(f"SELECT at FROM {TABLE} WHERE id = 1").fetchone()
    return row[0] if row else None
