"""Round trips: back up, restore with the stock PostgreSQL tools, compare schema and contents.

The artifact is restored without our code (zstandard + pg_restore, gunzip + psql), as an
operator would at 3 a.m. with only the file, so these tests prove the artifacts themselves.
"""

from __future__ import annotations

import gzip
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
import zstandard

from opstower_core.backup import BackupOptions, run_backup
from support.servers import admin_conn, create_database, unique

KITCHEN_SINK = Path(__file__).resolve().parents[2] / "data" / "kitchen_sink.sql"


def restore(pg, artifact: Path, dbname: str) -> None:
    """Load an artifact into a new database with the bundled client tools only."""
    create_database(pg, dbname)
    env = {"PATH": "/usr/bin:/bin", **pg.libpq_env()}
    if artifact.name.endswith(".dump.zst"):
        cmd = [str(pg.bin_dir / "pg_restore"), "--exit-on-error", f"--dbname={dbname}"]
        with open(artifact, "rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read()
    else:
        cmd = [str(pg.bin_dir / "psql"), "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", f"--dbname={dbname}"]
        data = gzip.decompress(artifact.read_bytes())
    proc = subprocess.run(cmd, input=data, capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]


def schema(pg, dbname: str) -> list[str]:
    """`pg_dump --schema-only`, without the lines that differ by database name or per run."""
    out = subprocess.run([str(pg.bin_dir / "pg_dump"), "--schema-only", f"--dbname={dbname}"], capture_output=True,
                         text=True, env=pg.libpq_env(), check=True).stdout
    return [line.replace(dbname, "<db>") for line in out.splitlines()
            if not line.startswith(("\\restrict ", "\\unrestrict "))]


def contents(pg, dbname: str) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the rows in a stable order) of every table, partition and materialized view,
    plus every sequence's state."""
    with admin_conn(pg, dbname) as conn:
        rels = conn.execute("""
            SELECT format('%I.%I', n.nspname, c.relname), c.relkind
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg_toast%'
            ORDER BY 1""").fetchall()
        result = {}
        for rel, kind in rels:
            if kind == "S":
                row = conn.execute(f"SELECT last_value, is_called FROM {rel}").fetchone()
                result[rel] = (1, repr(row))
                continue
            n, digest = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), ''))"
                f" FROM ONLY {rel} AS t").fetchone()
            result[rel] = (n, digest)
    return result


@pytest.fixture(scope="module")
def kitchen_sink(pg) -> str:
    db = unique("rt_src")
    create_database(pg, db, KITCHEN_SINK.read_text(encoding="utf-8"))
    return db


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_round_trip_keeps_schema_and_contents(pg, make_settings, kitchen_sink, fmt: str) -> None:
    settings = make_settings(kitchen_sink)
    result = run_backup(settings, options=BackupOptions(fmt=fmt, local_only=True))
    assert result.path.name.endswith(".dump.zst" if fmt == "custom" else ".sql.gz")
    if fmt == "plain":  # the reference's flags: --no-owner --no-acl
        sql = gzip.decompress(result.path.read_bytes()).decode()
        assert "PostgreSQL database dump" in sql and " OWNER TO " not in sql and "\nGRANT " not in sql
    copy = unique(f"rt_{fmt}")
    restore(pg, result.path, copy)

    source_schema, copy_schema = schema(pg, kitchen_sink), schema(pg, copy)
    assert len(source_schema) > 500  # a real schema, not an empty dump
    assert copy_schema == source_schema

    source, restored = contents(pg, kitchen_sink), contents(pg, copy)
    assert restored == source
    assert sum(n for n, _ in source.values()) > 1000
    # The metadata's row counts are the restored counts of every table and partition (the data holders).
    with admin_conn(pg, copy) as conn:
        tables = {f"{schema}.{name}": conn.execute(f'SELECT count(*) FROM ONLY "{schema}"."{name}"').fetchone()[0]
                  for schema, name in conn.execute(
                      "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')").fetchall()}
    assert result.meta["row_counts"] == tables
    assert result.meta["table_count"] == len(result.meta["row_counts"]) >= 10
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{copy}"')


WRITER_SQL = """
CREATE TABLE public.orders (id bigserial PRIMARY KEY, note text NOT NULL);
CREATE TABLE public.order_lines (id bigserial PRIMARY KEY, order_id bigint NOT NULL, payload text NOT NULL);
INSERT INTO public.orders (note) SELECT 'seed ' || g FROM generate_series(1, 2000) AS g;
INSERT INTO public.order_lines (order_id, payload) SELECT g, repeat(md5(g::text), 64) FROM generate_series(1, 2000) AS g;
"""


def test_row_counts_are_taken_in_the_dump_snapshot_under_concurrent_writes(pg, make_settings) -> None:
    db = unique("rt_busy")
    create_database(pg, db, WRITER_SQL)
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        # One order and one line per transaction: any consistent snapshot has equal counts.
        with psycopg.connect(**pg.conninfo(db), autocommit=True) as conn:
            while not stop.is_set():
                with conn.transaction():
                    oid = conn.execute("INSERT INTO public.orders (note) VALUES ('live') RETURNING id").fetchone()[0]
                    conn.execute("INSERT INTO public.order_lines (order_id, payload) VALUES (%s, repeat('x', 500))",
                                 (oid,))
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while written[0] < 50:
            time.sleep(0.01)
        before = written[0]
        result = run_backup(make_settings(db), options=BackupOptions(local_only=True))
        during = written[0] - before
        while written[0] < before + during + 50:  # and it keeps writing after the backup
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert during > 0, "the writer must have been writing while the backup ran"
    counts = result.meta["row_counts"]
    assert counts["public.orders"] == counts["public.order_lines"] > 2000
    copy = unique("rt_busy_copy")
    restore(pg, result.path, copy)
    with admin_conn(pg, copy) as conn:
        restored = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                    for t in ("public.orders", "public.order_lines")}
    with admin_conn(pg, db) as conn:
        now = conn.execute("SELECT count(*) FROM public.orders").fetchone()[0]
    assert restored == {"public.orders": counts["public.orders"], "public.order_lines": counts["public.order_lines"]}
    assert now > counts["public.orders"]  # rows committed after the snapshot are not claimed
