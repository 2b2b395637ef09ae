"""The accident of the data-deletion drill, staged in the drill database (never production).

`stage_accident` picks the tables (the chosen ones, else the largest table with a primary
key), records a digest of each (the rows as the backup holds them), writes one row "since
the backup" where it can, then deletes a deterministic 30% of the rows, in one transaction.
`check_recovered` proves, after the recovery, that every deleted row is back with its
values (count and digest equal those before the deletion, the row written since left out)
and that the row written since is still there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from opstower_core.drill.remedies import say
from opstower_core.errors import OpsError

# Every row whose rank by primary key ends in 1, 4 or 7: 30%, the same rows on every run.
_DELETED_RANKS = (1, 4, 7)
_INT_TYPES = ("smallint", "integer", "bigint", "numeric")
_TEXT_TYPES = ("text", "character varying")


@dataclass
class TableAccident:
    table: str  # "schema.table"
    key: list[str]
    rows_before: int = 0
    digest: str = ""  # of the rows before the deletion (the backup's rows)
    deleted: int = 0
    since_key: Any = None  # the key of the row written since the backup; None: none could be written
    since_note: str = ""  # why no row was written since, when none was

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Accident:
    tables: list[TableAccident] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(t.deleted for t in self.tables)


def _ident(table: str) -> sql.Composable:
    schema, _, name = table.partition(".")
    return sql.Identifier(schema, name)


def _resolve(conn: psycopg.Connection, names: list[str] | None) -> list[str]:
    """The canonical "schema.table" of each chosen table; none chosen: the largest table with a primary key."""
    if names:
        out = []
        for n in names:
            row = conn.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(%s) AND c.relkind IN ('r', 'p')",
                (n,)).fetchone()
            if row is None:
                raise OpsError(f"Table {n} is not in the restored backup", "nothing was deleted",
                               say("choose_tables"))
            out.append(row[0])
        return sorted(set(out))
    row = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%' "
        "AND EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) "
        # a plain table has no partition tree: its own size then
        "ORDER BY coalesce((SELECT sum(pg_catalog.pg_total_relation_size(p.relid)) "
        "          FROM pg_catalog.pg_partition_tree(c.oid) p), pg_catalog.pg_total_relation_size(c.oid)) DESC, 1 "
        "LIMIT 1").fetchone()
    if row is None:
        raise OpsError("The backup holds no table with a primary key to delete rows from", "nothing was deleted",
                       say("choose_other_tables"))
    return [row[0]]


def _key(conn: psycopg.Connection, table: str) -> list[tuple[str, str]]:
    """The primary key's (column, type), in key order."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = pg_catalog.to_regclass(%s) AND i.indisprimary "
        "ORDER BY pg_catalog.array_position(i.indkey::int2[], a.attnum)", (str(_ident(table).as_string(conn)),))]


def digest(conn: psycopg.Connection, table: str, key: list[str], leave_out: Any = None) -> tuple[int, str]:
    """(rows, digest): an order-independent sum of each row's md5, streaming (no big string built)."""
    where = sql.SQL("")
    params: tuple[Any, ...] = ()
    if leave_out is not None:
        where = sql.SQL(" WHERE {}::text IS DISTINCT FROM %s").format(sql.Identifier(key[0]))
        params = (str(leave_out),)
    q = sql.SQL("SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint::numeric), 0)"
                "::text FROM {} t").format(_ident(table)) + where
    n, d = conn.execute(q, params).fetchone()
    return int(n), str(d)


def _write_since(conn: psycopg.Connection, t: TableAccident, keytypes: list[str], drill_id: int) -> None:
    """A copy of one row under a new key: the row "written since the backup" the merge must keep."""
    if len(t.key) != 1 or keytypes[0] not in _INT_TYPES + _TEXT_TYPES:
        t.since_note = "its primary key is not one integer or text column"
        return
    k = sql.Identifier(t.key[0])
    cols = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (_ident(t.table).as_string(conn),))]
    new = (sql.SQL("(SELECT coalesce(max({}), 0) + 1 FROM {})").format(k, _ident(t.table))
           if keytypes[0] in _INT_TYPES else sql.Literal(f"opstower-drill-{drill_id}"))
    picks = [new if c == t.key[0] else sql.Identifier(c) for c in cols]
    q = sql.SQL("INSERT INTO {t} ({cols}) OVERRIDING SYSTEM VALUE SELECT {picks} FROM {t} ORDER BY {k} LIMIT 1 "
                "RETURNING {k}").format(t=_ident(t.table), cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                                        picks=sql.SQL(", ").join(picks), k=k)
    try:
        with conn.transaction():  # a savepoint: a unique constraint or a trigger may refuse the copy
            row = conn.execute(q).fetchone()
    except psycopg.Error as exc:
        t.since_note = f"the copy of a row was refused: {str(exc).strip().splitlines()[0]}"
        return
    if row is None:
        t.since_note = "the table is empty"
        return
    t.since_key = row[0]


def _delete(conn: psycopg.Connection, t: TableAccident) -> None:
    """Delete 30% of the rows, leaving out the row written since and rows other tables reference
    (the foreign keys would refuse them, as they would in production)."""
    keys = sql.SQL(", ").join(map(sql.Identifier, t.key))
    cond = [sql.SQL("s.rn % 10 IN ({})").format(sql.SQL(", ").join(map(sql.Literal, _DELETED_RANKS)))]
    if t.since_key is not None:
        cond.append(sql.SQL("x.{} IS DISTINCT FROM {}").format(sql.Identifier(t.key[0]), sql.Literal(t.since_key)))
    for child, pairs in _referencing(conn, t.table):
        on = sql.SQL(" AND ").join(sql.SQL("c.{} = x.{}").format(sql.Identifier(a), sql.Identifier(b))
                                   for a, b in pairs)
        cond.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {} c WHERE {})").format(_ident(child), on))
    match = sql.SQL(" AND ").join(sql.SQL("x.{c} = s.{c}").format(c=sql.Identifier(c)) for c in t.key)
    q = sql.SQL("DELETE FROM {t} x USING (SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS rn FROM {t}) s "
                "WHERE {match} AND {cond}").format(t=_ident(t.table), keys=keys, match=match,
                                                  cond=sql.SQL(" AND ").join(cond))
    t.deleted = conn.execute(q).rowcount


def _referencing(conn: psycopg.Connection, table: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Foreign keys pointing at `table`: (child "schema.table", [(child column, parent column)])."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname, "
        "  array(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, o) JOIN pg_catalog.pg_attribute a "
        "        ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o), "
        "  array(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, o) JOIN pg_catalog.pg_attribute a "
        "        ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o) "
        "FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE k.contype = 'f' AND k.confrelid = pg_catalog.to_regclass(%s) AND k.conparentid = 0",
        (_ident(table).as_string(conn),)).fetchall()
    return [(r[0], list(zip(r[1], r[2], strict=True))) for r in rows]


def stage_accident(conn: psycopg.Connection, names: list[str] | None, drill_id: int) -> Accident:
    """In the drill database (autocommit off): digests, the row written since, the deletion; committed."""
    acc = Accident()
    for table in _resolve(conn, names):
        key = _key(conn, table)
        if not key:
            raise OpsError(f"Table {table} has no primary key, so a merge cannot tell its lost rows",
                           "nothing was deleted", "drill with tables that have a primary key")
        t = TableAccident(table, [c for c, _ in key])
        t.rows_before, t.digest = digest(conn, table, t.key)
        _write_since(conn, t, [ty for _, ty in key], drill_id)
        _delete(conn, t)
        acc.tables.append(t)
    conn.commit()
    return acc


def check_recovered(conn: psycopg.Connection, acc: Accident) -> list[str]:
    """What is wrong after the recovery, in words (empty: every deleted row back, the rows written since kept)."""
    problems = []
    for t in acc.tables:
        n, d = digest(conn, t.table, t.key, t.since_key)
        if n != t.rows_before:
            problems.append(f"{t.table} has {n:,} of its {t.rows_before:,} backup rows")
        elif d != t.digest:
            problems.append(f"{t.table} has its {n:,} backup rows but their values differ")
        if t.since_key is not None:
            q = sql.SQL("SELECT count(*) FROM {} WHERE {}::text = %s").format(_ident(t.table),
                                                                             sql.Identifier(t.key[0]))
            if conn.execute(q, (str(t.since_key),)).fetchone()[0] != 1:
                problems.append(f"{t.table}: the row written since the backup ({t.key[0]} = {t.since_key}) is gone")
    return problems
