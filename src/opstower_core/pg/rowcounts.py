"""Exact per-table row counts, keyed "schema.table".

Taken in the dump's own snapshot at backup time and compared after every restore, they
prove a restored database complete.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import psycopg.sql


def user_tables_sql() -> str:
    # Leaf tables with data in user schemas: what pg_dump writes TABLE DATA entries for.
    return """
        SELECT n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
          AND n.nspname NOT LIKE 'pg_temp%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2"""


def count_rows(conn: psycopg.Connection, known: Mapping[str, int] | None = None) -> dict[str, int]:
    """Exact per-table row counts, keyed "schema.table", in the connection's snapshot.

    `known`: counts already established another way (a restore proof's digests read every row):
    those tables are listed but not scanned again."""
    counts: dict[str, int] = {}
    known = known or {}
    for schema, table in conn.execute(user_tables_sql()).fetchall():
        if f"{schema}.{table}" in known:
            counts[f"{schema}.{table}"] = known[f"{schema}.{table}"]
            continue
        q = f'SELECT count(*) FROM ONLY "{schema.replace(chr(34), chr(34) * 2)}"."{table.replace(chr(34), chr(34) * 2)}"'
        counts[f"{schema}.{table}"] = int(conn.execute(q).fetchone()[0])
    return counts
