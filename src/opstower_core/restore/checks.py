"""After the load: checks of the restored database, ANALYZE / VACUUM / REINDEX."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from opstower_core.config import Target
from opstower_core.errors import Cancelled
from opstower_core.events import CancelToken, Reporter, Status
from opstower_core.pg.admin import cancelled_on_request, first_line
from opstower_core.pg.tools import connect, quote_ident


@dataclass
class RestoredCheck:
    status: Status
    detail: str
    data: dict[str, Any]


@dataclass
class IndexCheck:
    """Index validity (and amcheck where installable) and the database's size."""

    problems: list[str]
    note: str
    size: int
    pretty: str


def check_indexes(target: Target, dbname: str, r: Reporter, step: str) -> IndexCheck:
    """Invalid indexes, amcheck's bt_index_check where available, the database size."""
    problems: list[str] = []
    with connect(target, dbname=dbname) as conn:
        invalid = [row[0] for row in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid OR NOT indisready").fetchall()]
        if invalid:
            problems.append(f"invalid indexes: {', '.join(invalid[:5])}")
        note = _amcheck(conn, r, step, problems)
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        pretty = conn.execute("SELECT pg_size_pretty(%s::bigint)", (size,)).fetchone()[0]
    return IndexCheck(problems, note, size, pretty)


def check_restored(target: Target, dbname: str, meta: dict[str, Any] | None, tables: list[str] | None,
                   r: Reporter, step: str, known: Mapping[str, int] | None = None,
                   indexes: IndexCheck | None = None) -> RestoredCheck:
    """Tables and per-table row counts against the metadata, index integrity, database size.

    `known`: restored row counts already established (the restore proof's digests): those tables
    are not scanned again. `indexes`: the index check, when it already ran (beside the proof)."""
    from opstower_core.pg.rowcounts import count_rows

    problems: list[str] = []
    notes: list[str] = []
    with connect(target, dbname=dbname) as conn:
        counts = count_rows(conn, known)
    if tables is not None:
        counts = {k: v for k, v in counts.items() if _selected(k, tables)}
    r.log(step, f"Table count: {len(counts)}")
    expected = (meta or {}).get("row_counts")
    if isinstance(expected, dict):
        if tables is not None:
            expected = {k: v for k, v in expected.items() if _selected(k, tables)}
        diffs = [f"{t}: {expected.get(t)} expected, {counts.get(t)} restored"
                 for t in sorted(set(expected) | set(counts)) if expected.get(t) != counts.get(t)]
        if diffs:
            more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
            problems.append(f"row counts differ from the backup's metadata: {'; '.join(diffs[:3])}{more}")
        else:
            r.log(step, f"Row counts match the metadata for all {len(counts)} tables ({sum(counts.values()):,} rows)")
    else:
        notes.append("no per-table row counts in the metadata (legacy backup)")
        recorded = (meta or {}).get("table_count")
        if isinstance(recorded, int) and recorded != len(counts):
            notes.append(f"metadata table_count {recorded}, {len(counts)} tables restored")
    if not counts and (tables or (isinstance(expected, dict) and expected)):
        problems.append("the restored database holds no tables")
    indexes = indexes or check_indexes(target, dbname, r, step)
    problems += indexes.problems
    r.log(step, f"Database size: {indexes.pretty}")
    data = {"tables": len(counts), "rows": sum(counts.values()), "size_bytes": indexes.size, "row_counts": counts}
    if problems:
        return RestoredCheck(Status.FAIL, "; ".join(problems), data)
    detail = f"{len(counts)} tables, {sum(counts.values()):,} rows, {indexes.pretty}; {indexes.note}"
    if notes:
        detail += "; " + "; ".join(notes)
    return RestoredCheck(Status.PASS, detail, data)


def _selected(key: str, tables: list[str]) -> bool:
    """Whether "schema.table" is one of the requested names (qualified or not)."""
    return key in tables or key.split(".", 1)[-1] in tables


def _amcheck(conn: psycopg.Connection, r: Reporter, step: str, problems: list[str]) -> str:
    """bt_index_check on every btree index when amcheck is installable; say so when it is not."""
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
    if not available:
        r.log(step, "amcheck is not available on this server: index structure not checked "
                    "(only pg_index validity)", "WARN")
        return "amcheck not available, index validity (pg_index) checked"
    existed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone() is not None
    try:
        if not existed:
            conn.execute("CREATE EXTENSION amcheck")
        schema = conn.execute("SELECT quote_ident(extnamespace::regnamespace::text) FROM pg_extension"
                              " WHERE extname = 'amcheck'"
                              ).fetchone()[0]
        indexes = conn.execute(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't'"
            " AND i.indisvalid AND i.indisready").fetchall()
        bad = []
        for oid, label in indexes:
            try:
                conn.execute(f"SELECT {schema}.bt_index_check(%s::regclass)", (oid,))
            except psycopg.Error as exc:
                bad.append(f"{label} ({first_line(exc)})")
        if bad:
            problems.append(f"amcheck found corrupt indexes: {', '.join(bad[:5])}")
        r.log(step, f"Index integrity check passed (amcheck bt_index_check on {len(indexes)} btree indexes)"
              if not bad else f"amcheck: {len(bad)} corrupt indexes", "INFO" if not bad else "ERROR")
        return f"amcheck passed on {len(indexes)} btree indexes"
    except psycopg.Error as exc:
        r.log(step, f"amcheck could not run ({first_line(exc)}): index structure not checked", "WARN")
        return "amcheck could not run, index validity checked"
    finally:
        if not existed:
            try:
                conn.execute("DROP EXTENSION IF EXISTS amcheck")  # leave the restored database as dumped
            except psycopg.Error:
                pass


def maintenance_sql(kind: str, dbname: str) -> str:
    return {"analyze": "ANALYZE", "vacuum": "VACUUM", "reindex": f"REINDEX DATABASE {quote_ident(dbname)}"}[kind]


def run_cancellable(target: Target, dbname: str, sql: str, cancel: CancelToken) -> None:
    """Run one statement in `dbname`; a cancel request cancels it on the server at once."""
    with connect(target, dbname=dbname) as conn:
        try:
            with cancelled_on_request(conn, cancel):
                conn.execute(sql)
        except psycopg.errors.QueryCanceled:
            if cancel.cancelled:
                raise Cancelled() from None
            raise
    cancel.check()


# Tables (and materialized views) the restore brought no optimizer statistics for: no pg_stats row
# at all, or an extended statistics object without its data (pg_dump 18 does not carry those).
_WITHOUT_STATISTICS = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
   AND (NOT EXISTS (SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)
        OR EXISTS (SELECT 1 FROM pg_statistic_ext e JOIN pg_namespace en ON en.oid = e.stxnamespace
                    WHERE e.stxrelid = c.oid AND NOT EXISTS (
                          SELECT 1 FROM pg_stats_ext x WHERE x.statistics_schemaname = en.nspname
                             AND x.statistics_name = e.stxname)))
 ORDER BY 1"""


def tables_without_statistics(target: Target, dbname: str) -> list[str]:
    """Tables of `dbname` that have no optimizer statistics (what ANALYZE still has to do after a load)."""
    with connect(target, dbname=dbname) as conn:
        return [row[0] for row in conn.execute(_WITHOUT_STATISTICS).fetchall()]


def analyze_sql(tables: list[str]) -> str:
    """One ANALYZE of the given (already quoted, regclass-text) tables."""
    return "ANALYZE " + ", ".join(tables)
