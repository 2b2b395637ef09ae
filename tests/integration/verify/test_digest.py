"""pg/digest.py on its own: any chunking gives the same digests, a truncated stream is refused,
and the multiset part tells "same rows, other order" from "other rows" (duplicates count)."""

from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest

from opstower_core.pg.digest import DumpDigester, DumpSettings, live_table_digest, timezone_sensitive_tables
from support.servers import admin_conn, create_database

SCHEMA = r"""
CREATE SCHEMA "sch.dot";
CREATE TABLE "sch.dot"."we""ird.name" (k text, v int, at timestamptz);
ALTER TABLE "sch.dot"."we""ird.name" ADD COLUMN gone text;
INSERT INTO "sch.dot"."we""ird.name" SELECT 'k' || g, g, TIMESTAMPTZ '2025-01-01 00:00+00', 'x'
  FROM generate_series(1, 50) g;
ALTER TABLE "sch.dot"."we""ird.name" DROP COLUMN gone;
INSERT INTO "sch.dot"."we""ird.name" VALUES (E'tab\there\nnl \\ \.', 51, NULL), (NULL, NULL, NULL);
CREATE TABLE public.dups (a int, b text, g int GENERATED ALWAYS AS (a * 2) STORED);
INSERT INTO public.dups VALUES (1, 'same'), (1, 'same'), (1, 'same'), (2, 'other');
CREATE TABLE public.empty (a int);
"""


@pytest.fixture(scope="module")
def db(pg):
    name = f"dig_{uuid.uuid4().hex[:6]}"
    create_database(pg, name, SCHEMA)
    yield name
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def dump(pg, db: str, *args: str) -> bytes:
    return subprocess.run([str(pg.bin_dir / "pg_dump"), *args, "-d", db], capture_output=True, check=True,
                          env={**pg.libpq_env(), "PGTZ": "UTC"}).stdout


def digest(data: bytes, size: int) -> DumpDigester:
    d = DumpDigester()
    for i in range(0, len(data), size):
        d.write(data[i: i + size])
    d.close()
    return d


@pytest.mark.parametrize("args", [("-Fc", "-Z0"), ("-Fc",), ("--format=plain",)])
def test_chunking_truncation_and_live_equality(pg, db, args):
    data = dump(pg, db, *args)
    whole = digest(data, 1 << 20)
    assert {k: v.rows for k, v in whole.tables.items()} == {
        ("sch.dot", 'we"ird.name'): 52, ("public", "dups"): 4, ("public", "empty"): 0}
    assert whole.copy_columns[("public", "dups")] == ["a", "b"]  # generated column not in COPY
    for size in (1, 7, 4096):
        assert digest(data, size).tables == whole.tables
    last = data.rfind(b"-- PostgreSQL database dump complete") if "plain" in args[0] else len(data) - 40
    for cut in (len(data) // 2, last, 200):
        d = DumpDigester()
        d.write(data[:cut])
        with pytest.raises(ValueError):
            d.close()
    with psycopg.connect(**pg.conninfo(db)) as conn:
        assert timezone_sensitive_tables(conn) == {("sch.dot", 'we"ird.name'): ["at"]}
        for key, want in whole.tables.items():
            got = live_table_digest(conn, *key, columns=whole.copy_columns[key], settings=DumpSettings("UTC"))
            assert got.compare(want) == "equal", key
            fast = live_table_digest(conn, *key, columns=whole.copy_columns[key], settings=DumpSettings("UTC"),
                                     psql=str(pg.bin_dir / "psql"), psql_env={**pg.libpq_env(), "PGDATABASE": db})
            assert fast == got


def test_reordered_rows_and_changed_duplicates(pg, db):
    want = digest(dump(pg, db, "-Fc", "-Z0"), 1 << 20).tables[("public", "dups")]
    copy = f"{db}_c"
    with admin_conn(pg) as conn:
        conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{db}"')
    try:
        with psycopg.connect(**pg.conninfo(copy), autocommit=True) as c:
            c.execute("CREATE TEMP TABLE t AS SELECT a, b FROM public.dups ORDER BY b ASC")
            c.execute("TRUNCATE public.dups")
            c.execute("INSERT INTO public.dups (a, b) SELECT * FROM t")
            assert live_table_digest(c, "public", "dups", columns=["a", "b"]).compare(want) == "equal-reordered"
            # 3x (1,'same') + 1x (2,'other') -> 2x + 2x: same distinct rows, same count, different
            c.execute("DELETE FROM public.dups WHERE ctid = (SELECT min(ctid) FROM public.dups WHERE a = 1)")
            c.execute("INSERT INTO public.dups (a, b) VALUES (2, 'other')")
            got = live_table_digest(c, "public", "dups", columns=["a", "b"])
            assert got.rows == 4 and got.compare(want) == "different"
    finally:
        with admin_conn(pg) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def test_a_big_table_read_in_row_ranges_has_the_digest_of_one_read(pg):
    """Issue 18: the restored side reads one big table as row ranges on several connections at once
    (one exported snapshot); the joined digest equals the dump's, and a change in any range shows."""
    from opstower_core.pg.digest import SEGMENT_ROWS, _live_digest_psql_parts

    name = f"dig_big_{uuid.uuid4().hex[:6]}"
    rows = 6 * SEGMENT_ROWS + 777  # 7 segments: 2 or 3 ranges of at least 2
    create_database(pg, name, f"""
        CREATE TABLE "Big Ünïcode" (id int, "Note" text, at timestamptz);
        INSERT INTO "Big Ünïcode" SELECT g, 'zeile ' || g || ' ü€', TIMESTAMPTZ '2025-01-01 00:00+00' + g * interval '1 s'
          FROM generate_series(1, {rows}) g;
        ANALYZE "Big Ünïcode";""")
    key = ("public", "Big Ünïcode")
    env = {**pg.libpq_env(), "PGDATABASE": name}
    psql = str(pg.bin_dir / "psql")
    try:
        whole = digest(dump(pg, name, "-Fc", "-Z0"), 1 << 20)
        want, cols = whole.tables[key], whole.copy_columns[key]
        assert want.rows == rows
        with psycopg.connect(**pg.conninfo(name), autocommit=True) as conn:
            settings = DumpSettings("UTC")
            one = live_table_digest(conn, *key, columns=cols, settings=settings, psql=psql, psql_env=env,
                                    multiset=False)
            for parts in (2, 3):
                split = _live_digest_psql_parts(conn, *key, cols, settings, psql, env, parts)
                assert split is not None, parts  # big enough to be split
                assert split == one and split.compare(want) == "equal", parts
            # One changed row in the last range, then one row fewer in the first: both are seen.
            conn.execute(f'UPDATE "Big Ünïcode" SET "Note" = \'x\' WHERE id = {rows - 5}')
            changed = live_table_digest(conn, *key, columns=cols, settings=settings, psql=psql, psql_env=env,
                                        multiset=False, parts=2)
            assert changed.rows == rows and changed.compare(want) == "different"
            conn.execute('DELETE FROM "Big Ünïcode" WHERE id = 10')
            fewer = live_table_digest(conn, *key, columns=cols, settings=settings, psql=psql, psql_env=env,
                                      multiset=False, parts=2)
            assert fewer.rows == rows - 1 and fewer.compare(want) == "different"
            # A table smaller than two segments per range is read in one go.
            assert _live_digest_psql_parts(conn, *key, cols, settings, psql, env, 4) is None
    finally:
        with admin_conn(pg) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
