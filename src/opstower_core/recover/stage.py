"""The backup's rows of the chosen tables, staged in TEMP tables of one live session, compared
with the live rows, and (when applying) written into the live tables: set-based SQL, all in
the session's one transaction. The preview runs the same code and rolls back.

Each table's backup rows go into `pg_temp._rec_N` (the live table's columns that the backup
also has, with the live types), then `pg_temp._ins_N` holds the rows to insert: backup rows
whose key is absent live (for a parent pulled in by --with-parents: only those referenced
by the rows to insert of its children).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field

import psycopg

from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Reporter
from opstower_core.pg.tools import PgTools
from opstower_core.recover.model import RecoverOptions, TablePlan
from opstower_core.recover.move import copy_rows
from opstower_core.recover.source import RecoverySource
from opstower_core.recover.tables import TableInfo, TableKey, label, qi, qname


@dataclass
class Work:
    """One table of the set: what is known of it on both sides and what will be done."""

    key: TableKey
    src: TableInfo | None  # in the backup (None: only live)
    live: TableInfo | None  # live (None: dropped since the backup)
    action: str  # merge | replace | restore | copy | blocked
    requested: bool
    n: int
    columns: list[str] = field(default_factory=list)  # written: in both, not generated
    plan: TablePlan | None = None
    disabled: list[str] = field(default_factory=list)  # triggers we disabled for the load

    @property
    def temp(self) -> str:
        return f"pg_temp._rec_{self.n}"

    @property
    def ins(self) -> str:
        return f"pg_temp._ins_{self.n}"

    @property
    def keyed(self) -> bool:
        return self.live is not None and self.live.key_columns is not None

    def match(self, a: str, b: str) -> str:
        assert self.live is not None and self.live.key_columns is not None
        return " AND ".join(f"{a}.{qi(c)} = {b}.{qi(c)}" for c in self.live.key_columns)

    def row_text(self, alias: str) -> str:
        return f"ROW({', '.join(f'{alias}.{qi(c)}' for c in self.columns)})::text"

    def cols(self, alias: str | None = None) -> str:
        return ", ".join(f"{alias}.{qi(c)}" if alias else qi(c) for c in self.columns)


class Stage:
    def __init__(self, conn: psycopg.Connection, source: RecoverySource, tools: PgTools, works: list[Work],
                 options: RecoverOptions, r: Reporter, step: str, cancel: CancelToken) -> None:
        self.conn, self.source, self.tools, self.works = conn, source, tools, works
        self.o, self.r, self.step, self.cancel = options, r, step, cancel
        self.by_key = {w.key: w for w in works}

    # -- staging ---------------------------------------------------------------------------
    def load(self) -> None:
        """The backup's rows of every merged / replaced table into its TEMP table."""
        for w in self.works:
            self.cancel.check("the live tables were not changed")
            if w.action not in ("merge", "replace") or w.src is None or w.live is None:
                continue
            self.conn.execute(f"CREATE TEMP TABLE {w.temp.split('.')[1]} ON COMMIT DROP AS "
                              f"SELECT {w.cols()} FROM {qname(w.key)} WITH NO DATA")
            rows = copy_rows(self.source, _select(w), self.conn, f"COPY {w.temp} ({w.cols()}) FROM STDIN",
                             self.tools.psql, self.cancel)
            if w.keyed:
                self.conn.execute(f"CREATE INDEX ON {w.temp} ({', '.join(qi(c) for c in w.live.key_columns or [])})")
            self.conn.execute(f"ANALYZE {w.temp}")
            self.r.log(self.step, f"{label(w.key)}: {rows:,} backup rows staged")

    def compare(self) -> None:
        """Per table: rows in the backup, live, missing, changed, only live; then the rows to insert."""
        for w in self.works:
            p = w.plan
            assert p is not None
            if w.action in ("restore", "copy"):
                p.backup_rows = self._count_source(w)
                p.insert = p.backup_rows
                continue
            if w.action == "blocked" or w.live is None:
                continue
            p.live_rows = self._one(f"SELECT count(*) FROM {qname(w.key)}")
            if w.src is not None:
                p.backup_rows = self._one(f"SELECT count(*) FROM {w.temp}")
            if not w.keyed:
                if w.action == "replace":
                    p.delete, p.insert = p.live_rows, p.backup_rows
                continue
            live = qname(w.key)
            p.missing, p.changed = self.conn.execute(
                f"SELECT count(*) FILTER (WHERE l.ctid IS NULL), "
                f"count(*) FILTER (WHERE l.ctid IS NOT NULL AND {w.row_text('b')} IS DISTINCT FROM {w.row_text('l')}) "
                f"FROM {w.temp} b LEFT JOIN {live} l ON {w.match('l', 'b')}").fetchone()
            p.only_live = self._one(f"SELECT count(*) FROM {live} l WHERE NOT EXISTS "
                                    f"(SELECT 1 FROM {w.temp} b WHERE {w.match('b', 'l')})")
            if w.action == "replace" or self.o.overwrite_changed:
                p.update = p.changed
            if w.action == "replace":
                p.delete = p.only_live
        self._insert_sets()

    def _insert_sets(self) -> None:
        # Children before parents: a parent pulled in takes the rows its children's inserts reference.
        for w in reversed(self.works):
            if w.action not in ("merge", "replace") or not w.keyed:
                continue
            where = f"NOT EXISTS (SELECT 1 FROM {qname(w.key)} l WHERE {w.match('l', 'b')})"
            if not w.requested:
                refs = [self._referenced_by(c, fk) for c in self.works if c.plan and c.keyed
                        for fk in (c.live.fks if c.live else []) if fk.parent == w.key and c is not w]
                where += " AND (" + (" OR ".join(refs) or "false") + ")"
            self.conn.execute(f"CREATE TEMP TABLE {w.ins.split('.')[1]} ON COMMIT DROP AS "
                              f"SELECT b.* FROM {w.temp} b WHERE {where}")
            assert w.plan is not None
            w.plan.insert = self._one(f"SELECT count(*) FROM {w.ins}")

    def _referenced_by(self, child: Work, fk) -> str:  # noqa: ANN001 - tables.ForeignKey
        on = " AND ".join(f"c.{qi(cc)} = b.{qi(pc)}" for cc, pc in zip(fk.columns, fk.parent_columns, strict=True))
        return f"EXISTS (SELECT 1 FROM {child.ins} c WHERE {on})"

    def _count_source(self, w: Work) -> int:
        from opstower_core.pg.tools import connect

        with connect(self.source.target, dbname=self.source.dbname) as src:
            return int(src.execute(f"SELECT count(*) FROM {qname(w.key)}").fetchone()[0])

    def _one(self, sql: str) -> int:
        return int(self.conn.execute(sql).fetchone()[0])

    # -- applying --------------------------------------------------------------------------
    def lock(self) -> None:
        """No writes to the live tables between the comparison and the commit; reads go on."""
        names = [qname(w.key) for w in self.works if w.live is not None and w.action in ("merge", "replace")]
        if names:
            self.r.log(self.step, f"LOCK TABLE {', '.join(names)} IN SHARE ROW EXCLUSIVE MODE")
            self.conn.execute(f"LOCK TABLE {', '.join(names)} IN SHARE ROW EXCLUSIVE MODE")

    def apply(self) -> None:
        """Deletes children first, then updates, then inserts and restores parent first."""
        self.conn.execute("SET CONSTRAINTS ALL DEFERRED")  # helps DEFERRABLE keys between tables of a cycle
        if self.o.disable_triggers:
            self._triggers("DISABLE")
        for w in reversed(self.works):
            if w.action == "replace" and w.live is not None:
                self._delete(w)
        for w in self.works:
            if w.live is not None and w.keyed and (w.action == "replace" or
                                                   (w.action == "merge" and self.o.overwrite_changed)):
                self._update(w)
        for w in self.works:
            self.cancel.check("the transaction was rolled back; the live tables were not changed")
            if w.action in ("merge", "replace") and w.live is not None:
                self._insert(w)
            elif w.action == "restore":
                self._restore(w)
            elif w.action == "copy":
                self._copy(w)
        if self.o.disable_triggers:
            self._triggers("ENABLE")
        for w in self.works:
            if w.action in ("merge", "replace", "restore"):
                self._sequences(w)

    def _delete(self, w: Work) -> None:
        assert w.plan is not None
        if w.keyed:
            sql = (f"DELETE FROM {qname(w.key)} l WHERE NOT EXISTS (SELECT 1 FROM {w.temp} b "
                   f"WHERE {w.match('b', 'l')})")
        else:
            sql = f"DELETE FROM {qname(w.key)}"
        w.plan.delete = self._run(sql)

    def _update(self, w: Work) -> None:
        assert w.plan is not None and w.live is not None
        keys = set(w.live.key_columns or [])
        always = {c.name for c in w.live.columns if c.identity_always}
        sets = [c for c in w.columns if c not in keys and c not in always]
        if not sets:
            return
        sql = (f"UPDATE {qname(w.key)} l SET {', '.join(f'{qi(c)} = b.{qi(c)}' for c in sets)} FROM {w.temp} b "
               f"WHERE {w.match('l', 'b')} AND {w.row_text('b')} IS DISTINCT FROM {w.row_text('l')}")
        w.plan.update = self._run(sql)

    def _insert(self, w: Work) -> None:
        assert w.plan is not None and w.live is not None
        overriding = " OVERRIDING SYSTEM VALUE" if any(c.identity_always for c in w.live.columns
                                                       if c.name in w.columns) else ""
        src = w.ins if w.keyed else w.temp
        w.plan.insert = self._run(f"INSERT INTO {qname(w.key)} ({w.cols()}){overriding} SELECT {w.cols()} FROM {src}")

    def _restore(self, w: Work) -> None:
        """A table dropped since the backup: its definition from the source (pg_dump -t: indexes,
        constraints, triggers, owned sequences, grants, comments), its rows, and the foreign keys
        of live tables that pointed at it."""
        assert w.src is not None and w.plan is not None
        members = self._partition_members(w)
        self._run_script(self._definition(members))
        cols = ", ".join(qi(c.name) for c in w.src.columns if not c.generated)
        # COPY writes identity columns as given (OVERRIDING SYSTEM VALUE is for INSERT only).
        w.plan.insert = copy_rows(self.source, f"SELECT {cols} FROM {qname(w.key)}", self.conn,
                                  f"COPY {qname(w.key)} ({cols}) FROM STDIN", self.tools.psql, self.cancel)
        self.r.log(self.step, f"{label(w.key)}: {w.plan.insert:,} rows restored")
        for fk in w.src.children:
            self._add_child_fk(fk)

    def _copy(self, w: Work) -> None:
        assert w.src is not None and w.plan is not None and w.plan.into
        schema, _, name = w.plan.into.partition(".")
        into = qname((schema, name))
        cols = [c for c in w.src.columns if not c.generated]
        ddl = ", ".join(f"{qi(c.name)} {c.type}{' NOT NULL' if c.not_null else ''}" for c in cols)
        self.conn.execute(f"CREATE TABLE {into} ({ddl})")
        self.r.log(self.step, f"CREATE TABLE {into} ({ddl})")
        names = ", ".join(qi(c.name) for c in cols)
        w.plan.insert = copy_rows(self.source, f"SELECT {names} FROM {qname(w.key)}", self.conn,
                                  f"COPY {into} ({names}) FROM STDIN", self.tools.psql, self.cancel)

    def _partition_members(self, w: Work) -> list[TableKey]:
        if w.src is None or w.src.kind != "partitioned":
            return [w.key]
        from opstower_core.pg.tools import connect

        with connect(self.source.target, dbname=self.source.dbname) as src:
            rows = src.execute("SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_tree(%s::regclass) t "
                               "JOIN pg_catalog.pg_class c ON c.oid = t.relid "
                               "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ORDER BY t.level",
                               (qname(w.key),)).fetchall()
        return [(s, t) for s, t in rows]

    def _definition(self, members: list[TableKey]) -> str:
        env = self.source.target.libpq_env()
        env["PGDATABASE"] = self.source.dbname
        args = [self.tools.pg_dump, "--schema-only", "--format=plain", f"--dbname={self.source.dbname}"]
        for s, t in members:
            args.append('--table="' + s.replace('"', '""') + '"."' + t.replace('"', '""') + '"')
        proc = subprocess.run(args, capture_output=True, env=env, check=False)
        if proc.returncode != 0:
            raise OpsError(f"Reading the definition of {label(members[0])} from the source failed "
                           f"({proc.stderr.decode('utf-8', 'replace').strip().splitlines()[-1:]})",
                           "the live tables were not changed", "")
        return proc.stdout.decode("utf-8")

    def _run_script(self, script: str) -> None:
        # psql's own meta-commands (\restrict) are not SQL; lock_timeout stays ours.
        lines = [ln for ln in script.splitlines() if not ln.startswith("\\")
                 and not re.match(r"SET (lock_timeout|statement_timeout|transaction_timeout|"
                                  r"idle_in_transaction_session_timeout) ", ln)]
        self.conn.execute("\n".join(lines))
        self.conn.execute("SET search_path = pg_catalog, public")  # the dump emptied it; keep names resolvable

    def _add_child_fk(self, fk) -> None:  # noqa: ANN001 - tables.ForeignKey
        """A live table's foreign key to the restored table (DROP TABLE … CASCADE removed it): added
        NOT VALID, then validated; rows written since that point nowhere leave it NOT VALID, said so."""
        from opstower_core.pg.tools import connect

        exists = self.conn.execute("SELECT 1 FROM pg_catalog.pg_constraint WHERE conrelid = %s::regclass "
                                   "AND conname = %s", (qname(fk.table), fk.name)).fetchone()
        present = self.conn.execute("SELECT to_regclass(%s)", (qname(fk.table),)).fetchone()[0]
        if exists or present is None:
            return
        with connect(self.source.target, dbname=self.source.dbname) as src:
            src.execute("SET search_path = ''")
            row = src.execute("SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint "
                              "WHERE conrelid = %s::regclass AND conname = %s", (qname(fk.table), fk.name)).fetchone()
        if row is None:
            return
        add = f"ALTER TABLE {qname(fk.table)} ADD CONSTRAINT {qi(fk.name)} {row[0]} NOT VALID"
        self.conn.execute(add)
        self.r.log(self.step, add)
        try:
            with self.conn.transaction():  # a savepoint: a failed validation keeps the rest
                self.conn.execute(f"ALTER TABLE {qname(fk.table)} VALIDATE CONSTRAINT {qi(fk.name)}")
        except psycopg.errors.ForeignKeyViolation as exc:
            self.r.log(self.step, f"Foreign key {fk.name} of {label(fk.table)} is back but NOT VALID: some of its "
                                  f"rows point at rows the backup does not have ({str(exc).splitlines()[0]})", "WARN")

    def _triggers(self, verb: str) -> None:
        for w in self.works:
            if w.live is None or w.action not in ("merge", "replace"):
                continue
            if verb == "DISABLE":
                w.disabled = [t.name for t in w.live.triggers if t.enabled]
            for name in w.disabled:
                sql = f"ALTER TABLE {qname(w.key)} {verb} TRIGGER {qi(name)}"
                self.conn.execute(sql)
                self.r.log(self.step, sql)

    def _sequences(self, w: Work) -> None:
        """After explicit ids went in: an owned sequence behind its column's maximum is moved up."""
        info = w.live or w.src
        assert info is not None
        seqs = dict(info.sequences)
        if w.live is None:  # restored: the sequence came back with the definition
            seqs = self._live_sequences(w.key)
            self._source_sequence_values(w, seqs)
        for col, seq in seqs.items():
            row = self.conn.execute(
                f"SELECT m, s.last_value, s.is_called FROM (SELECT max({qi(col)})::bigint AS m FROM {qname(w.key)}) x, "
                f"{seq} s").fetchone()
            m, last, called = row
            if m is not None and (m > last or (m == last and not called)):
                self.conn.execute("SELECT pg_catalog.setval(%s, %s, true)", (seq, m))
                self.r.log(self.step, f"SELECT setval('{seq}', {m})  -- was {last}: behind the inserted ids")

    def _live_sequences(self, key: TableKey) -> dict[str, str]:
        from opstower_core.recover.tables import _SEQUENCES_SQL

        return dict(self.conn.execute(_SEQUENCES_SQL, (qname(key),)).fetchall())

    def _source_sequence_values(self, w: Work, seqs: dict[str, str]) -> None:
        from opstower_core.pg.tools import connect

        with connect(self.source.target, dbname=self.source.dbname) as src:
            for seq in seqs.values():
                last, called = src.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
                self.conn.execute("SELECT pg_catalog.setval(%s, %s, %s)", (seq, last, called))

    def _run(self, sql: str) -> int:
        self.r.log(self.step, sql)
        cur = self.conn.execute(sql)
        return max(cur.rowcount, 0)


def _select(w: Work) -> str:
    only = "" if w.src is not None and w.src.kind == "partitioned" else "ONLY "
    return f"SELECT {w.cols()} FROM {only}{qname(w.key)}"
