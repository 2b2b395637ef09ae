"""Shared helpers for the restore tests (no tests here): a live database with a backup,
a content snapshot to compare databases, and crafted artifacts."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import shutil
import threading
import time
import uuid
from pathlib import Path

import psycopg

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.events import StepStarted
from support.servers import admin_conn, create_database

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int NOT NULL REFERENCES customers, total numeric(10,2), note text);
CREATE INDEX orders_customer_idx ON orders (customer_id);
INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 300) g;
INSERT INTO orders (customer_id, total, note) SELECT 1 + g % 300, (g % 97) * 1.25, md5(g::text)
  FROM generate_series(1, 3000) g;
CREATE SCHEMA audit;
CREATE TABLE audit.events (id serial PRIMARY KEY, at timestamptz DEFAULT '2026-01-01', what text);
INSERT INTO audit.events (what) SELECT 'event ' || g FROM generate_series(1, 50) g;
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
"""

# What an incident does to the live database after the backup was taken.
DAMAGE = """
DELETE FROM orders WHERE id % 3 = 0;
UPDATE customers SET name = 'overwritten' WHERE id <= 10;
DROP TABLE audit.events;
CREATE TABLE stray (x int); INSERT INTO stray VALUES (1);
"""


def contents(pg, db: str) -> dict:
    """Every user table's row count and content hash, plus index and constraint names."""
    out: dict = {}
    with admin_conn(pg, db) as c:
        tables = c.execute(
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
            " ORDER BY 1, 2").fetchall()
        for schema, table in tables:
            out[f"{schema}.{table}"] = c.execute(
                f'SELECT count(*), md5(coalesce(string_agg(x::text, \'|\' ORDER BY x::text), \'\')) FROM "{schema}"."{table}" x'
            ).fetchone()
        out["_indexes"] = sorted(r[0] for r in c.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"))
        out["_constraints"] = sorted(r[0] for r in c.execute(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"))
        out["_views"] = sorted(r[0] for r in c.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'"))
        out["_sequences"] = sorted(c.execute("SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences"
                                             ).fetchall())
    return out


def schema_sql(pg, db: str) -> list[str]:
    """`pg_dump --schema-only` of a database, without the per-run \\restrict key lines."""
    import os
    import subprocess

    out = subprocess.run([str(pg.bin_dir / "pg_dump"), "--schema-only", f"--dbname={db}"], capture_output=True,
                         check=True, env={**os.environ, **pg.libpq_env()}).stdout.decode()
    return [ln for ln in out.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict"))]


def databases(pg, prefix: str) -> set[str]:
    with admin_conn(pg) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",))}


def allows_connections(pg, db: str) -> bool:
    with admin_conn(pg) as c:
        return c.execute("SELECT datallowconn AND datconnlimit <> 0 FROM pg_database WHERE datname = %s",
                         (db,)).fetchone()[0]


class Live:
    """A live database with a backup taken before DAMAGE; `backed_up` / `damaged` are its two states."""

    def __init__(self, pg, settings, db: str, backup, backed_up: dict, damaged: dict) -> None:
        self.pg, self.settings, self.db, self.backup = pg, settings, db, backup
        self.backed_up, self.damaged = backed_up, damaged

    def damage(self) -> None:
        with admin_conn(self.pg, self.db) as c:
            c.execute(DAMAGE)
        self.damaged = contents(self.pg, self.db)

    def now(self) -> dict:
        return contents(self.pg, self.db)

    def only_live_databases(self) -> bool:
        """No staging / rollback database left behind (kept old databases are counted separately)."""
        return {d for d in databases(self.pg, self.db) if "_pre_restore_" not in d} == {self.db}


class Source:
    """One database with SCHEMA and a custom-format backup of it, made once and cloned per test
    (CREATE DATABASE … TEMPLATE is much faster than loading the schema again).

    A restore refuses a backup of another database, so every test's live database carries the
    name the backup was taken under (`live_name`); the backed-up database itself is renamed to
    `db` and serves as the template, and each clone first drops the previous test's leftovers."""

    def __init__(self, pg, root: Path) -> None:
        from opstower_core.config import Settings, Target

        tag = uuid.uuid4().hex[:8]
        self.live_name, self.db = f"rs_{tag}", f"rsrc_{tag}"
        create_database(pg, self.live_name, SCHEMA)
        settings = Settings(backup_dir=root / "backups", state_dir=root / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
                            targets={self.live_name: Target(self.live_name, self.live_name, host=pg.host, port=pg.port,
                                                            user=pg.user)},
                            default_target=self.live_name)
        self.backup = run_backup(settings, options=BackupOptions(local_only=True))
        self.contents = contents(pg, self.live_name)
        with admin_conn(pg) as c:
            c.execute(f'ALTER DATABASE "{self.live_name}" RENAME TO "{self.db}"')

    def clone_into(self, pg, backup_dir: Path):
        with admin_conn(pg) as c:
            for (name,) in c.execute("SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                                     (self.live_name, self.live_name + "\\_%")).fetchall():
                c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{self.live_name}" TEMPLATE "{self.db}"')
        backup_dir.mkdir(parents=True, exist_ok=True)
        name = self.backup.name
        for fn in (name.filename, name.meta_filename, name.globals_filename):
            shutil.copyfile(self.backup.path.with_name(fn), backup_dir / fn)
        return dataclasses.replace(self.backup, path=backup_dir / name.filename)


def make_live(pg, make_settings, s3=None, fmt: str = "custom", damage: bool = True, source: Source | None = None
              ) -> Live:
    """A live database and a backup of it (its own, or a clone of `source`'s), then DAMAGE."""
    db = source.live_name if source is not None else f"rs_{uuid.uuid4().hex[:8]}"
    settings = make_settings(db, s3=s3) if s3 is not None else make_settings(db)
    if source is not None:
        backup = source.clone_into(pg, settings.backup_dir)
        result = Live(pg, settings, db, backup, source.contents, {})
    else:
        create_database(pg, db, SCHEMA)
        backup = run_backup(settings, options=BackupOptions(fmt=fmt, local_only=s3 is None))
        result = Live(pg, settings, db, backup, contents(pg, db), {})
    if damage:
        result.damage()
    return result


def cancel_when_started(step: str, cancel, seen: list | None = None):
    """An on_event callback that cancels the run when `step` starts (and records events)."""

    def on_event(event) -> None:
        if seen is not None:
            seen.append(event)
        if isinstance(event, StepStarted) and event.step == step:
            cancel.cancel()

    return on_event


def write_artifact(directory: Path, db: str, stamp: str, sql: bytes, meta_base: dict, legacy: bool = False) -> Path:
    """A plain .sql.gz artifact with metadata matching its bytes (legacy: the reference's fields only)."""
    path = directory / f"{db}_{stamp}.sql.gz"
    data = gzip.compress(sql)
    path.write_bytes(data)
    meta = dict(meta_base)
    meta.update(timestamp=stamp, backup_file=path.name, backup_size=str(len(data)), compression="gzip")
    if legacy:
        keep = ("timestamp", "date", "database", "host", "port", "backup_file", "backup_size", "database_size",
                "table_count", "compression", "postgresql_version", "backup_script_version", "retention_days")
        meta = {k: meta[k] for k in keep}
        meta["backup_script_version"] = "1.0.0"
    else:
        meta.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), format="plain",
                    uncompressed_bytes=len(sql))
    (directory / f"{db}_{stamp}.meta.json").write_text(json.dumps(meta))
    return path


def plain_sql(live: Live) -> tuple[bytes, dict]:
    """The SQL of a fresh plain backup of the live database (call before damage()) and its metadata."""
    b = run_backup(live.settings, options=BackupOptions(fmt="plain", local_only=True))
    sql = gzip.decompress(b.path.read_bytes())
    meta = dict(b.meta)
    for p in (b.path, b.path.with_name(b.name.meta_filename), b.path.with_name(b.name.globals_filename)):
        p.unlink(missing_ok=True)
    return sql, meta


def insert_midway(sql: bytes, statement: bytes) -> bytes:
    """`statement` inserted after the first complete COPY block past the middle of the dump."""
    cut = sql.index(b"\n\\.\n", len(sql) // 2 if b"\n\\.\n" in sql[len(sql) // 2:] else 0) + 4
    return sql[:cut] + statement + b"\n" + sql[cut:]


def kill_when_running(pg, pattern: str, timeout: float = 20.0) -> threading.Thread:
    """Terminate the restore's own session once it runs a query matching `pattern`."""

    def killer() -> None:
        deadline = time.monotonic() + timeout
        with admin_conn(pg) as c:
            while time.monotonic() < deadline:
                row = c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'opstower-restore'"
                                " AND query LIKE %s AND state = 'active'", (pattern,)).fetchone()
                if row:
                    c.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                    return
                time.sleep(0.05)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    return t


def client_sessions(pg, db: str, n: int = 2) -> list[psycopg.Connection]:
    """Application sessions on the live database: one idle, one idle in a transaction holding a lock."""
    conns = []
    for i in range(n):
        info = pg.conninfo(db)
        info["application_name"] = f"app-{i}"
        conn = psycopg.connect(**info, autocommit=i == 0)
        conn.execute("SELECT count(*) FROM customers")  # the second one stays idle in transaction
        conns.append(conn)
    return conns


def change_scratch_after_load(pg, sql: str):
    """An on_event for `verify(full_test=True)`: runs `sql` in the test database once it is loaded,
    before the proof reads it."""
    from opstower_core.events import StepLog

    scratch: list[str] = []

    def on_event(event) -> None:
        if isinstance(event, StepLog) and event.line.startswith("Creating test database: "):
            scratch.append(event.line.split(": ", 1)[1])
        if isinstance(event, StepLog) and event.line == "Restoration to test database successful":
            with admin_conn(pg, scratch[0]) as conn:
                conn.execute(sql)

    return on_event
