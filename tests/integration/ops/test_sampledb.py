"""The demo database and the kitchen-sink fixture, against the real embedded PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

from opstower_core.devenv.embedded import EmbeddedPostgres
from opstower_core.devenv.sampledb import add_activity, create_sample_database
from support.servers import admin_conn, create_database

KITCHEN_SINK = Path(__file__).resolve().parents[2] / "data" / "kitchen_sink.sql"
USER_SCHEMAS = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def scalar(pg: EmbeddedPostgres, dbname: str, query: str, params: tuple | None = None) -> Any:
    with admin_conn(pg, dbname) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def relkind_count(pg: EmbeddedPostgres, dbname: str, relkind: str) -> int:
    return scalar(pg, dbname, f"""
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = %s AND {USER_SCHEMAS}""", (relkind,))


def table_row_counts(pg: EmbeddedPostgres, dbname: str) -> dict[str, int]:
    """Exact row count of every ordinary table in user schemas."""
    with admin_conn(pg, dbname) as conn:
        tables = conn.execute(f"""
            SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND {USER_SCHEMAS} ORDER BY 1""").fetchall()
        return {name: conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for (name,) in tables}


def drop_database(pg: EmbeddedPostgres, dbname: str) -> None:
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# ---------------------------------------------------------------- the demo database


def test_sample_database_shape(pg: EmbeddedPostgres) -> None:
    dbname = unique_name("opstower")
    create_sample_database(pg.conninfo("postgres"), dbname)
    try:
        counts = table_row_counts(pg, dbname)
        assert len(counts) == 47
        schemas = {name.split(".")[0] for name in counts}
        assert schemas == {"public", "billing", "audit"}
        assert all(n > 0 for n in counts.values()), [t for t, n in counts.items() if n == 0]
        assert 3_000 <= sum(counts.values()) <= 20_000

        assert relkind_count(pg, dbname, "v") >= 3
        assert relkind_count(pg, dbname, "m") == 1
        assert relkind_count(pg, dbname, "p") == 0  # partitions would count as extra tables
        assert scalar(pg, dbname, "SELECT count(*) FROM pg_constraint WHERE contype = 'f'") >= 40
        assert scalar(pg, dbname, "SELECT count(*) FROM pg_type WHERE typtype = 'e'") >= 2
        assert scalar(pg, dbname, "SELECT count(*) FROM pg_attribute WHERE attidentity <> ''") >= 30
        # Every table has a primary key.
        assert scalar(pg, dbname, f"""
            SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND {USER_SCHEMAS}
              AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = c.oid AND contype = 'p')""") == 0
        # ANALYZE ran: the planner's estimates are filled in.
        assert scalar(pg, dbname, "SELECT reltuples FROM pg_class WHERE oid = 'public.bookings'::regclass") > 0
        # The materialized view was populated from the data.
        assert scalar(pg, dbname, "SELECT count(*) FROM billing.monthly_revenue_by_region") > 0
    finally:
        drop_database(pg, dbname)


def test_sample_data_is_deterministic(pg: EmbeddedPostgres) -> None:
    first, second = unique_name("opstower"), unique_name("opstower")
    digest = "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM public.trips t"
    try:
        create_sample_database(pg.conninfo("postgres"), first)
        create_sample_database(pg.conninfo("postgres"), second)
        assert scalar(pg, first, digest) == scalar(pg, second, digest)
    finally:
        drop_database(pg, first)
        drop_database(pg, second)


def test_existing_database_is_left_alone_unless_replace(pg: EmbeddedPostgres) -> None:
    dbname = unique_name("opstower")
    create_database(pg, dbname, "CREATE TABLE marker (id int); INSERT INTO marker VALUES (1);")
    try:
        create_sample_database(pg.conninfo("postgres"), dbname, replace=False)
        assert table_row_counts(pg, dbname) == {"public.marker": 1}

        create_sample_database(pg.conninfo("postgres"), dbname, replace=True)
        counts = table_row_counts(pg, dbname)
        assert "public.marker" not in counts
        assert len(counts) == 47
    finally:
        drop_database(pg, dbname)


def test_add_activity_grows_the_database(pg: EmbeddedPostgres) -> None:
    dbname = unique_name("opstower")
    create_sample_database(pg.conninfo("postgres"), dbname)
    try:
        before = table_row_counts(pg, dbname)
        add_activity(pg.conninfo("postgres"), dbname, rows=50)
        after = table_row_counts(pg, dbname)
        assert after["public.bookings"] == before["public.bookings"] + 50
        assert after["audit.log"] == before["audit.log"] + 50
        assert after["public.booking_status_history"] == before["public.booking_status_history"] + 50
        assert after["public.trips"] > before["public.trips"]
        new_trips = after["public.trips"] - before["public.trips"]
        assert after["billing.payments"] == before["billing.payments"] + new_trips
        # A second call keeps going (identity columns, unique provider refs).
        add_activity(pg.conninfo("postgres"), dbname, rows=10)
        assert table_row_counts(pg, dbname)["public.bookings"] == before["public.bookings"] + 60
    finally:
        drop_database(pg, dbname)


# ---------------------------------------------------------------- the kitchen-sink fixture


def test_kitchen_sink_has_every_object_kind(pg: EmbeddedPostgres) -> None:
    dbname = unique_name("sink")
    create_database(pg, dbname, KITCHEN_SINK.read_text(encoding="utf-8"))
    try:
        def q(query: str) -> Any:
            return scalar(pg, dbname, query)

        assert q("SELECT count(*) FROM pg_namespace WHERE nspname IN ('public', 'inventory')") == 2
        # Sequences made on purpose (not only those owned by serial/identity columns).
        assert q("""SELECT count(*) FROM pg_class c WHERE c.relkind = 'S' AND NOT EXISTS (
                        SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))""") >= 2
        assert q("SELECT count(*) FROM pg_attribute WHERE attidentity = 'a' AND NOT attisdropped") >= 1
        assert q("SELECT count(*) FROM pg_attribute WHERE attidentity = 'd' AND NOT attisdropped") >= 1
        assert q("SELECT count(*) FROM pg_attribute WHERE attgenerated = 's' AND NOT attisdropped") >= 2
        assert relkind_count(pg, dbname, "v") >= 2
        assert relkind_count(pg, dbname, "m") == 1
        assert q("""SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                    JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE l.lanname = 'plpgsql' AND n.nspname IN ('public', 'inventory')""") >= 3
        assert q("""SELECT count(*) FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
                    JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE l.lanname = 'sql' AND n.nspname IN ('public', 'inventory')""") >= 2
        assert q("SELECT count(*) FROM pg_proc WHERE prokind = 'p' AND proname = 'restock'") == 1
        assert q("SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") >= 2
        assert q("SELECT count(*) FROM pg_type WHERE typtype = 'e' AND typnamespace <> 'pg_catalog'::regnamespace") >= 2
        assert q("SELECT count(*) FROM pg_type WHERE typtype = 'd' AND typnamespace <> 'pg_catalog'::regnamespace") >= 2

        # Partitioned table: three range partitions and a default one.
        assert relkind_count(pg, dbname, "p") == 1
        assert q("SELECT count(*) FROM pg_inherits WHERE inhparent = 'inventory.orders'::regclass") == 4
        assert q("SELECT partdefid <> 0 FROM pg_partitioned_table WHERE partrelid = 'inventory.orders'::regclass")
        assert q("SELECT count(*) FROM inventory.orders_default") > 0
        assert q("SELECT count(*) FROM inventory.orders") == 400

        # Values.
        assert q("SELECT count(*) FROM public.people WHERE profile ? 'nested'") > 0
        assert q("SELECT count(*) FROM public.blobs WHERE position('\\x00'::bytea IN data) > 0") >= 3
        assert q("SELECT bool_and(md5(data) = md5) FROM public.blobs")
        assert q("SELECT count(*) FROM public.people WHERE cardinality(tags) > 0 AND matrix IS NOT NULL") > 0
        assert q("SELECT max(length(body)) FROM public.documents") >= 1_000_000
        for text in ("Zürich", "東京", "🚀"):
            assert q(f"SELECT count(*) FROM public.documents WHERE body LIKE '%{text}%'") == 1
        assert q("SELECT count(*) FROM public.people WHERE city = '東京'") > 0
        assert q("SELECT count(*) FROM public.empty_table") == 0
        assert q('SELECT count(*) FROM public."MixedCase" WHERE "order" > 0') == 100
        assert q("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.\"MixedCase\"'::regclass "
                 "AND attname = 'order'") == 1

        # Comments and constraints.
        assert q("SELECT count(*) FROM pg_description WHERE objoid >= 16384") >= 8
        assert q("SELECT count(*) FROM pg_constraint WHERE contype = 'c' AND connamespace <> 'pg_catalog'::regnamespace") >= 3
        assert q("SELECT count(*) FROM pg_constraint WHERE contype = 'x'") == 1
        assert q("SELECT count(*) FROM pg_constraint WHERE contype = 'u'") >= 2
        assert q("SELECT count(*) FROM pg_constraint WHERE contype = 'f'") >= 2
    finally:
        drop_database(pg, dbname)


def test_kitchen_sink_survives_pg_dump_and_pg_restore(pg: EmbeddedPostgres, tmp_path: Path) -> None:
    """The fixture itself must round-trip cleanly, or the engine's round-trip tests prove nothing."""
    source, target = unique_name("sink"), unique_name("sink_restored")
    create_database(pg, source, KITCHEN_SINK.read_text(encoding="utf-8"))
    create_database(pg, target)
    env = {**os.environ, **pg.libpq_env()}
    dump = tmp_path / "sink.dump"
    try:
        subprocess.run([str(pg.bin_dir / "pg_dump"), "-Fc", "-f", str(dump), source], env=env, check=True)
        subprocess.run([str(pg.bin_dir / "pg_restore"), "--exit-on-error", "-d", target, str(dump)],
                       env=env, check=True)
        digest = f"""
            SELECT string_agg(c.oid::regclass::text || ':' || c.relkind::text, ',' ORDER BY c.oid::regclass::text)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 'v', 'p', 'S') AND {USER_SCHEMAS}"""
        assert scalar(pg, source, digest) == scalar(pg, target, digest)
        assert table_row_counts(pg, source) == table_row_counts(pg, target)
        for query in ("SELECT md5(string_agg(p::text, '|' ORDER BY p.id)) FROM public.people p",
                      "SELECT md5(string_agg(md5(data), '|' ORDER BY id)) FROM public.blobs",
                      "SELECT md5(string_agg(body, '|' ORDER BY id)) FROM public.documents",
                      "SELECT last_value FROM inventory.order_no_seq"):
            assert scalar(pg, source, query) == scalar(pg, target, query)
    finally:
        drop_database(pg, source)
        drop_database(pg, target)
