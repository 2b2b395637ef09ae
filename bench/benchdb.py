"""The benchmark database: about 600 MB, one `events` table of 2,000,000 rows.

    events(id bigserial primary key, ts timestamptz, user_id int, kind text (5 values),
           payload jsonb {"amount", "sku" (32 hex), "tags" [..]}, note text (64 hex))
    + indexes on user_id and ts

Built server-side with INSERT ... SELECT over generate_series, split into id ranges loaded by
parallel sessions (one per CPU), then the indexes in parallel with a large maintenance_work_mem.
Data is deterministic (md5/hash of the row number), so every build has the same content.

As a script: starts an EmbeddedPostgres in a directory (default bench/.work/pg), builds the
database, prints its size and the time taken. Run again, it finds the database and skips.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DEFAULT_DIR = Path(__file__).resolve().parent / ".work" / "pg"

_CREATE_TABLE = """
CREATE TABLE events (
    id      bigserial PRIMARY KEY,
    ts      timestamptz NOT NULL,
    user_id integer NOT NULL,
    kind    text NOT NULL,
    payload jsonb NOT NULL,
    note    text NOT NULL
)
"""

# Explicit ids (the sequence is set once at the end) so that ranges can load in parallel and the
# content depends only on the row number. md5()/sha256() give the "random" hex (one sha256 is 64 hex
# characters, cheaper than two md5), hashint8 the user spread.
# The payload is written as JSON text and cast: jsonb_build_object measured ~3x slower here, and
# every value is digits or hex, so there is nothing to escape.
_INSERT_RANGE = """
INSERT INTO events (id, ts, user_id, kind, payload, note)
SELECT i,
       TIMESTAMPTZ '2025-01-01 00:00+00' + i * INTERVAL '15 seconds' + (i %% 13) * INTERVAL '1 second',
       1 + abs(hashint8(i) %% 100000)::int,
       (ARRAY['view', 'click', 'cart', 'purchase', 'refund'])[1 + (i %% 5)::int],
       ('{"amount": ' || round(((i * 7919) %% 100000) / 100.0, 2)
        || ', "sku": "' || md5('sku' || i)
        || '", "tags": ["t' || (i %% 17) || '", "t' || (i %% 23) || '", "campaign-' || (i %% 7) || '"]}')::jsonb,
       encode(sha256(('n' || i)::bytea), 'hex')
FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i
"""


def _connect(conninfo: dict[str, Any], dbname: str | None = None) -> psycopg.Connection:
    params = dict(conninfo)
    if dbname is not None:
        params["dbname"] = dbname
    return psycopg.connect(**params, autocommit=True)


def _existing_rows(conninfo: dict[str, Any], dbname: str) -> int | None:
    """Rows in `dbname`.events, 0 if the table is missing, None if the database is."""
    with _connect(conninfo) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
            return None
    with _connect(conninfo, dbname) as conn:
        if conn.execute("SELECT to_regclass('public.events')").fetchone()[0] is None:
            return 0
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def _load_range(conninfo: dict[str, Any], dbname: str, first: int, last: int) -> None:
    with _connect(conninfo, dbname) as conn:
        # One transaction per range: a commit per row would dominate. No fsync wait at commit;
        # the caller runs CHECKPOINT at the end anyway.
        conn.execute("SET synchronous_commit = off")
        conn.execute(_INSERT_RANGE, {"first": first, "last": last})


def build_bench_db(conninfo: dict[str, Any], dbname: str = "bench", rows: int = 2_000_000,
                   workers: int | None = None) -> None:
    """Create `dbname` with `rows` rows in `events`, unless it already holds exactly that.

    `conninfo` (psycopg keyword arguments) names a maintenance database on the server. A
    database of that name with a different row count (e.g. an interrupted build) is rebuilt.
    `workers` parallel sessions load the rows (default: one per CPU, at most 8).
    """
    if _existing_rows(conninfo, dbname) == rows:
        return
    with _connect(conninfo) as conn:
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    with _connect(conninfo, dbname) as conn:
        conn.execute(_CREATE_TABLE)
        # Indexes (other than the primary key) are built after the load: one sort beats 2M inserts.
        conn.execute("ALTER TABLE events SET (autovacuum_enabled = off)")

    workers = max(1, min(workers or os.cpu_count() or 1, 8, rows // 100_000 or 1))
    bounds = [(rows * k // workers + 1, rows * (k + 1) // workers) for k in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(_load_range, conninfo, dbname, a, b) for a, b in bounds if a <= b]:
            future.result()

    with _connect(conninfo, dbname) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute("SET max_parallel_maintenance_workers = 4")
        conn.execute("CREATE INDEX events_user_id_idx ON events (user_id)")
        conn.execute("CREATE INDEX events_ts_idx ON events (ts)")
        conn.execute("SELECT setval(pg_get_serial_sequence('events', 'id'), greatest(%s, 1))", (rows,))
        conn.execute("ALTER TABLE events RESET (autovacuum_enabled)")
        # VACUUM sets hint bits and the visibility map now, so the first timed backup does not
        # pay for dirtying every page; ANALYZE gives the console real row estimates.
        conn.execute("VACUUM (ANALYZE) events")
        conn.execute("CHECKPOINT")


def database_size(conninfo: dict[str, Any], dbname: str = "bench") -> int:
    """pg_database_size of `dbname`, in bytes."""
    with _connect(conninfo) as conn:
        return int(conn.execute("SELECT pg_database_size(%s)", (dbname,)).fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the ~600 MB benchmark database in an embedded PostgreSQL.")
    parser.add_argument("directory", nargs="?", type=Path, default=DEFAULT_DIR,
                        help=f"EmbeddedPostgres directory (default {DEFAULT_DIR})")
    parser.add_argument("--dbname", default="bench")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workers", type=int, default=None, help="parallel loading sessions (default: CPUs)")
    args = parser.parse_args(argv)

    # Imported here so that `import benchdb` works without the package on sys.path.
    from opstower_core.devenv.embedded import EmbeddedPostgres

    with EmbeddedPostgres(args.directory) as pg:
        conninfo = pg.conninfo("postgres")
        started = time.monotonic()
        build_bench_db(conninfo, args.dbname, args.rows, workers=args.workers)
        elapsed = time.monotonic() - started
        size = database_size(conninfo, args.dbname)
        print(f"database {args.dbname!r} in {pg.directory}: {args.rows:,} rows, "
              f"{size / 1e6:,.0f} MB ({size / 2**20:,.0f} MiB), ready in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
