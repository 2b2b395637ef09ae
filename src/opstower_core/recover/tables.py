"""What a table is made of, read from a database's catalog: columns, key, foreign keys,
triggers, owned sequences. Read on both sides (the source and live) to plan a recovery."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from opstower_core.advice import say
from opstower_core.errors import UsageError

TableKey = tuple[str, str]


def qname(key: TableKey) -> str:
    """Quoted schema.table for SQL."""
    return ".".join('"' + p.replace('"', '""') + '"' for p in key)


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def label(key: TableKey) -> str:
    return f"{key[0]}.{key[1]}"


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): "integer", "public.email", "public.vector(3)"
    not_null: bool
    has_default: bool
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never written
    identity_always: bool  # GENERATED ALWAYS AS IDENTITY: written with OVERRIDING SYSTEM VALUE


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: TableKey  # the referencing table
    columns: tuple[str, ...]
    parent: TableKey
    parent_columns: tuple[str, ...]
    deferrable: bool
    on_delete: str  # a=no action, r=restrict, c=cascade, n=set null, d=set default


@dataclass(frozen=True)
class Trigger:
    name: str
    events: tuple[str, ...]  # INSERT, UPDATE, DELETE, TRUNCATE
    timing: str  # BEFORE / AFTER / INSTEAD OF
    enabled: bool


@dataclass
class TableInfo:
    key: TableKey
    kind: str  # "table" | "partitioned" | "partition"
    columns: list[Column]
    key_columns: list[str] | None  # primary key, else a unique key of NOT NULL columns; None: no usable key
    key_name: str | None
    fks: list[ForeignKey] = field(default_factory=list)  # this table references
    children: list[ForeignKey] = field(default_factory=list)  # other tables reference this one
    triggers: list[Trigger] = field(default_factory=list)
    sequences: dict[str, str] = field(default_factory=dict)  # column -> owned sequence (schema-qualified, quoted)

    @property
    def name(self) -> str:
        return label(self.key)

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relkind, c.relispartition FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_%'"""

_COLUMNS_SQL = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef,
       a.attgenerated <> '', a.attidentity = 'a'
  FROM pg_catalog.pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum"""

# Primary key first, then unique constraints / unique indexes over NOT NULL plain columns, not partial.
_KEYS_SQL = """
SELECT ci.relname, i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey) WITH ORDINALITY k(attnum, n)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n),
       bool_and(a2.attnotnull)
  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
  JOIN pg_catalog.pg_attribute a2 ON a2.attrelid = i.indrelid AND a2.attnum = ANY(i.indkey)
 WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
       AND 0 <> ALL(i.indkey)
 GROUP BY ci.relname, i.indisprimary, i.indkey, i.indrelid
 ORDER BY i.indisprimary DESC, array_length(i.indkey, 1), ci.relname"""

_FKS_SQL = """
SELECT con.conname, cn.nspname, cc.relname,
       array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       pn.nspname, pc.relname,
       array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
               JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
       con.condeferrable, con.confdeltype
  FROM pg_catalog.pg_constraint con
  JOIN pg_catalog.pg_class cc ON cc.oid = con.conrelid JOIN pg_catalog.pg_namespace cn ON cn.oid = cc.relnamespace
  JOIN pg_catalog.pg_class pc ON pc.oid = con.confrelid JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
 WHERE con.contype = 'f' AND con.conparentid = 0 AND (con.conrelid = %s::regclass OR con.confrelid = %s::regclass)"""

_TRIGGERS_SQL = """
SELECT t.tgname, t.tgtype, t.tgenabled <> 'D' FROM pg_catalog.pg_trigger t
 WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal ORDER BY t.tgname"""

_SEQUENCES_SQL = """
SELECT a.attname, pg_catalog.quote_ident(sn.nspname) || '.' || pg_catalog.quote_ident(s.relname)
  FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
  JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
 WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = %s::regclass AND d.deptype IN ('a', 'i')"""


def list_tables(conn: psycopg.Connection) -> dict[TableKey, str]:
    """Every user table: key -> "table" | "partitioned" | "partition"."""
    out = {}
    for schema, name, relkind, is_part in conn.execute(_TABLES_SQL):
        out[(schema, name)] = "partition" if is_part else ("partitioned" if relkind == "p" else "table")
    return out


def read_table(conn: psycopg.Connection, key: TableKey, kind: str) -> TableInfo:
    reg = qname(key)
    cols = [Column(*row) for row in conn.execute(_COLUMNS_SQL, (reg,))]
    key_cols, key_name = None, None
    names = {c.name for c in cols}
    for idx, primary, columns, not_null in conn.execute(_KEYS_SQL, (reg,)):
        if (primary or not_null) and set(columns) <= names:
            key_cols, key_name = list(columns), idx
            break
    info = TableInfo(key, kind, cols, key_cols, key_name)
    for name, cs, ct, ccols, ps, pt, pcols, deferrable, on_delete in conn.execute(_FKS_SQL, (reg, reg)):
        fk = ForeignKey(name, (cs, ct), tuple(ccols), (ps, pt), tuple(pcols), deferrable, on_delete)
        if fk.table == key:
            info.fks.append(fk)
        if fk.parent == key and fk.table != key:
            info.children.append(fk)
    for name, tgtype, enabled in conn.execute(_TRIGGERS_SQL, (reg,)):
        info.triggers.append(Trigger(name, _events(tgtype), _timing(tgtype), enabled))
    info.sequences = dict(conn.execute(_SEQUENCES_SQL, (reg,)).fetchall())
    return info


def _events(tgtype: int) -> tuple[str, ...]:
    return tuple(e for bit, e in ((4, "INSERT"), (8, "DELETE"), (16, "UPDATE"), (32, "TRUNCATE")) if tgtype & bit)


def _timing(tgtype: int) -> str:
    return "INSTEAD OF" if tgtype & 64 else ("BEFORE" if tgtype & 2 else "AFTER")


def resolve_names(requested: list[str], source: dict[TableKey, str], live: dict[TableKey, str]) -> list[TableKey]:
    """Requested "schema.table" or bare "table" names as keys of the backup (or of live)."""
    out: list[TableKey] = []
    for raw in requested:
        name = raw.strip()
        if not name:
            continue
        if "." in name:
            schema, _, table = name.partition(".")
            found = [k for k in (*source, *live) if k == (schema, table)]
        else:
            found = [k for k in (*source, *live) if k[1] == name]
        found = sorted(set(found))
        if not found:
            raise UsageError(f"Table {name} is neither in the backup nor in the live database", "nothing was changed",
                             f"check the name (schema.table), {say('table_list')}")
        if len(found) > 1:
            raise UsageError(f"Table name {name} is ambiguous: {', '.join(label(k) for k in found)}",
                             "nothing was changed", "name it with its schema")
        if found[0] not in out:
            out.append(found[0])
    if not out:
        raise UsageError(f"{say('opt_tables')} needs at least one table name", "nothing was changed",
                         say("tables_example"))
    return out


def parent_first(tables: dict[TableKey, TableInfo]) -> tuple[list[TableKey], list[tuple[TableKey, TableKey]]]:
    """The tables ordered so a referenced table comes before its referencing ones; the
    foreign-key cycles found (pairs whose order could not follow both directions)."""
    order: list[TableKey] = []
    state: dict[TableKey, int] = {}
    cycles: list[tuple[TableKey, TableKey]] = []

    def visit(k: TableKey) -> None:
        state[k] = 1
        for fk in tables[k].fks:
            p = fk.parent
            if p == k or p not in tables or fk.deferrable:
                continue  # a DEFERRABLE key is checked at commit (SET CONSTRAINTS ALL DEFERRED): any order does
            if state.get(p) == 1:
                cycles.append((k, p))
            elif p not in state:
                visit(p)
        state[k] = 2
        order.append(k)

    for k in sorted(tables):
        if k not in state:
            visit(k)
    return order, cycles
