"""Who holds the table lock a backup is waiting for, in words an on-call engineer can act on.

pg_dump takes ACCESS SHARE on every table it dumps, and so does counting rows; only an
ACCESS EXCLUSIVE lock (LOCK TABLE, most ALTER TABLE, VACUUM FULL, TRUNCATE …) conflicts.
While our sessions wait, `pg_blocking_pids()` names the blocker exactly; once a lock
timeout has ended the wait, the sessions still holding ACCESS EXCLUSIVE locks in the
database are the ones to name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from opstower_core.advice import say
from opstower_core.config import Target
from opstower_core.pg.tools import connect

_COLUMNS = """
    b.pid, b.usename, b.application_name, b.state, b.query,
    COALESCE(b.xact_start, b.query_start, b.backend_start) AS since,
    (SELECT string_agg(DISTINCT format('%%I.%%I', n.nspname, c.relname), ', ')
       FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE l.pid = b.pid AND l.granted AND l.mode = 'AccessExclusiveLock'
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS relations
"""

BLOCKING_SQL = f"""
SELECT {_COLUMNS}
FROM pg_stat_activity b
WHERE b.pid IN (SELECT unnest(pg_blocking_pids(w.pid)) FROM pg_stat_activity w
                WHERE w.datname = current_database() AND w.wait_event_type = 'Lock'
                  AND (w.pid = ANY(%(ours)s) OR w.application_name = %(app)s))
  AND b.pid <> ALL(%(ours)s)
ORDER BY since
"""

EXCLUSIVE_SQL = f"""
SELECT {_COLUMNS}
FROM pg_stat_activity b
WHERE b.pid IN (SELECT l.pid FROM pg_locks l
                WHERE l.granted AND l.mode = 'AccessExclusiveLock' AND l.relation IS NOT NULL
                  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
  AND b.pid <> ALL(%(ours)s) AND b.pid <> pg_backend_pid()
ORDER BY since
"""


@dataclass(frozen=True)
class LockHolder:
    pid: int
    user: str
    application: str
    state: str
    query: str
    since: datetime | None
    relations: str  # the tables it holds exclusively, "" when the lock is on something else

    def describe(self) -> str:
        """`pid 4242 (user alice, application psql, idle in transaction since 12:01:05+00:00, last query "LOCK …")`."""
        when = self.since.astimezone().isoformat(sep=" ", timespec="seconds") if self.since else "?"
        query = " ".join(self.query.split())
        if len(query) > 120:
            query = query[:117] + "..."
        what = f" on {self.relations}" if self.relations else ""
        return (f"pid {self.pid}{what} (user {self.user or '?'}, application {self.application or '?'}, "
                f"{self.state or 'state unknown'} since {when}, {'last ' if self.state != 'active' else ''}"
                f"query \"{query}\")")


def _rows(conn: psycopg.Connection, sql: str, params: dict) -> list[LockHolder]:
    return [LockHolder(int(r[0]), r[1] or "", r[2] or "", r[3] or "", r[4] or "", r[5], r[6] or "")
            for r in conn.execute(sql, params).fetchall()]


def find_holders(target: Target, our_pids: list[int], our_app: str, waiting: bool = True) -> list[LockHolder]:
    """Sessions blocking ours (`waiting`), or else every other session holding an ACCESS EXCLUSIVE table lock.

    Its own short-lived connection with a statement timeout: asking must never hang too.
    """
    with connect(target) as conn:
        conn.execute("SET statement_timeout = '5s'")
        params = {"ours": our_pids, "app": our_app}
        found = _rows(conn, BLOCKING_SQL, params) if waiting else []
        return found or _rows(conn, EXCLUSIVE_SQL, params)


def what_to_do(holder: LockHolder) -> str:
    return (f"ask the owner of pid {holder.pid} to commit or roll back, or end that session "
            f"(SELECT pg_terminate_backend({holder.pid})), then run the backup again; "
            f"{say('wait_longer')}")
