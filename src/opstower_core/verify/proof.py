"""The restore proof: the restored database equals the artifact, table by table and by name.

source snapshot --row counts--> artifact --per-table digests, inventory--> restored database

`ProofBuilder` rides along verification's single read of the artifact (it is fed the same
decompressed chunks as checks 4-6) and yields an `ArtifactProof`: per-table digests of the
dump's COPY data, each table's COPY column list, the table of contents (the object
inventory), the database name from the archive header and the settings the dump's text
depends on. `prove_restored` computes the same digests from the restored tables (COPY under
pg_dump's session settings) and compares them and the inventory with the artifact's.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opstower_core.config import Target
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Status
from opstower_core.pg.blockload import Block
from opstower_core.pg.digest import (
    SEGMENT_ROWS,
    DumpDigester,
    DumpFormatError,
    DumpSettings,
    OrderedText,
    TableDigest,
    TocEntry,
    catalog_copy_columns,
    joined_digest,
    live_table_digest,
    psql_copy,
    timezone_sensitive_tables,
)
from opstower_core.pg.tools import connect

if TYPE_CHECKING:  # imported where the restored database is read: checks 1-7 start without them
    import psycopg

    from opstower_core.pg.inventory import Inventory

TableKey = tuple[str, str]
DigestKey = tuple[TableKey, tuple[str, ...] | None, DumpSettings]
# What shows a table read earlier is still as it was read: the oldest xid running when a whole-table
# read began, or, for a table read in committed blocks, each block's xid with its row count.
Since = int | dict[int, int]


def digest_key(key: TableKey, columns: list[str] | None, settings: DumpSettings) -> DigestKey:
    """What a restored table's dump-order digest depends on: the table, the COPY columns, the settings."""
    return key, tuple(columns) if columns is not None else None, settings


@dataclass
class ArtifactProof:
    """What the artifact itself holds, read during verification's single pass."""

    format: str  # "custom" | "plain"
    dbname: str | None  # the custom header's database name; a plain dump does not name it
    tables: dict[TableKey, TableDigest]
    copy_columns: dict[TableKey, list[str] | None]
    toc: list[TocEntry]
    encoding: str | None = None
    dump_timezone: str | None = None  # None: not recorded (a legacy dump): candidates are tried
    bytea_output: str = "hex"
    blob_count: int = 0
    psql: str | None = None  # psql for the restored side's COPY (faster than libpq in Python)
    digested: bool = True  # False: header and TOC only (checks 1-7 alone): nothing to prove a restore with
    # When `tables` came without their order-independent sums (the digest job's cheap pass): a second
    # read of the artifact that gives them, (tables, "") or (None, why not); called only when a
    # restored table's order differs from the dump's.
    multisets: Callable[[], tuple[dict[TableKey, TableDigest] | None, str]] | None = None

    @functools.cached_property
    def inventory(self) -> Inventory:
        from opstower_core.pg.inventory import artifact_inventory

        return artifact_inventory(self.toc)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.tables.values())

    @property
    def matview_data(self) -> list[str]:
        return [f"{te.namespace}.{te.tag}" for te in self.toc if te.desc == "MATERIALIZED VIEW DATA"]


class ProofBuilder:
    """Fed the dump's decompressed bytes during the verification pass; `finish()` gives the proof."""

    def __init__(self, digest: bool = True) -> None:
        # digest=False: a custom archive's header and TOC only (its identity for check 6); the
        # data blocks are not read, which makes checks 1-7 alone cost about one decompression.
        self.digester = DumpDigester(toc_only=not digest)
        self.error: str | None = None

    def feed(self, data: Any) -> None:
        if self.error is not None:
            return
        try:
            self.digester.write(data)
        except DumpFormatError as exc:
            self.error = str(exc)

    def finish(self, meta: dict[str, Any] | None, psql: str | None) -> ArtifactProof | None:
        """The proof, or None when the stream was not a readable dump (`error` says why)."""
        if self.error is None:
            try:
                self.digester.close()
            except DumpFormatError as exc:
                self.error = str(exc)
        if self.error is not None:
            return None
        d = self.digester
        meta = meta or {}
        return ArtifactProof(
            format=d.format or "plain", dbname=d.dbname, tables=dict(d.tables), copy_columns=dict(d.copy_columns),
            toc=list(d.toc), encoding=d.encoding, dump_timezone=meta.get("dump_timezone") or None,
            bytea_output=meta.get("dump_bytea_output") or "hex", blob_count=d.blob_count, psql=psql,
            digested=not (d.toc_only and d.format == "custom"),
        )


@dataclass
class ProofResult:
    status: Status
    sentence: str
    differences: list[str] = field(default_factory=list)
    not_compared: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0
    objects: int = 0
    # Restored row counts the digests established ("schema.table": rows): a check of the counts
    # against the metadata needs no count(*) scan of these tables.
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != Status.FAIL


def prove_restored(
    target: Target,
    dbname: str,
    proof: ArtifactProof,
    *,
    tables: list[str] | None = None,
    cancel: CancelToken | None = None,
    no_acl: bool = False,
    database_settings: bool = True,
    before_inventory: Callable[[], object] | None = None,
    pre: dict[DigestKey, tuple[TableDigest, Since]] | None = None,
) -> ProofResult:
    """Compare the restored database `dbname` on `target`'s server with the artifact.

    `tables`: a selective restore of these tables ("schema.table" or "table"): only they are
    compared. `no_acl`: the restore left out owners and grants (`--no-owner --no-acl`), so
    they are named as not compared. `database_settings=False`: the restore did not apply the
    dump's database-level settings (pg_restore applies them only with --create).
    `before_inventory`: called after the table digests, before the catalog is read (a caller's
    check running beside the digests that may change the catalog meanwhile, e.g. amcheck's
    CREATE/DROP EXTENSION, is waited for there).
    `pre`: restored tables' digests taken earlier (`digest_key` -> (digest, `Since`)), e.g. while
    pg_restore built the indexes; one is used only where table, columns and settings are exactly
    the proof's and the table has not changed since (`_unchanged_since`); else the table is read
    again.
    """
    from opstower_core.pg.inventory import compare_inventories, live_inventory

    if not proof.digested:
        raise ValueError("the artifact was read without its table digests (verify(..., digest=False))")
    cancel = cancel or CancelToken()
    keys = _selected(proof, tables)
    env = target.libpq_env()
    env["PGDATABASE"] = dbname
    differences: list[str] = []
    not_compared: list[str] = []
    with connect(target, dbname=dbname) as conn:
        present = {(s, t) for s, t in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm', 'f')")}
        digests = _TableProver(conn, proof, env, cancel, pre or {})
        for key in keys:
            cancel.check("the restored database was left as it is")
            want = proof.tables[key]
            if key not in present:
                differences.append(f"table {_name(key)}: {want.rows:,} rows in the artifact, missing from "
                                   "the restored database")
                continue
            problem = digests.compare(key, want)
            if problem is None:
                continue
            (not_compared if problem.startswith("~") else differences).append(problem.lstrip("~"))
        cancel.check("the restored database was left as it is")
        if before_inventory is not None:
            before_inventory()
        inv = compare_inventories(proof.inventory, live_inventory(conn), owners=not no_acl, grants=not no_acl,
                                  settings=database_settings,
                                  tables=None if tables is None else set(keys) | _parents(proof, tables))
    differences += inv.differences
    not_compared += digests.notes + inv.not_compared
    if proof.matview_data:
        not_compared.append(f"data of {len(proof.matview_data)} materialized views (refreshed, not digested)")
    if proof.blob_count:
        not_compared.append(f"{proof.blob_count} large objects")
    result = _result(keys, proof, differences, not_compared, inv.compared, digests.unverified)
    result.counts = digests.counted
    return result


class EarlyDigests:
    """The restored tables' dump-order digests, taken while pg_restore still loads and builds indexes.

    A streamed one-job pg_restore follows the archive's order: every table's data (each COPY
    committed before the next entry starts), then the PRIMARY KEY / UNIQUE constraints, then the
    other indexes. So a table is complete once pg_restore has moved on to the next table's data
    ("processing data for table" lines, `on_line`): it is read then, beside the rest of the load.
    From the first "creating INDEX" line every table holds its data, and what the load still does
    either does not conflict with a COPY TO's ACCESS SHARE lock or waits for it (nothing in
    post-data changes table rows): the tables not read yet are read then. The last table in data
    order is therefore read only beside the index builds, so its own PRIMARY KEY is not held up.
    A load in committed blocks (pg/blockload.py, `on_block`) announces each block once committed:
    it is read then, `WHERE xmin` = the block's transaction, beside the next block's COPY. The
    blocks' segment hashes join into the table's dump-order digest; the table counts as unchanged
    only if, at the proof, its rows are exactly the blocks' (every xmin one of theirs, each with
    their row count). A table whose blocks do not read back whole is left to the proof.
    `prove_restored(pre=result())` uses a digest only where table, columns and settings are
    exactly the proof's (`digest_key`) and the table has not changed since; any other table is
    read there as before, so the proof is unchanged. A failure here is only logged.
    """

    TRIGGER = "pg_restore: creating INDEX "
    DATA = "pg_restore: processing data for table "
    _ALL, _STOP = object(), object()

    def __init__(self, target: Target, dbname: str, zone: str, bytea_output: str, psql: str | None,
                 cancel: CancelToken, log: Callable[[str], object]) -> None:
        import queue

        self.target, self.dbname, self.zone, self.bytea, self.psql = target, dbname, zone, bytea_output, psql
        self.cancel, self.log = cancel, log
        self.digests: dict[DigestKey, tuple[TableDigest, Since]] = {}
        self.thread: threading.Thread | None = None
        self.seconds = 0.0
        self.loading: str | None = None  # the table whose data pg_restore is loading ("schema.table")
        self.queue: queue.Queue[object] = queue.Queue()
        self.all_queued = False

    @classmethod
    def for_load(cls, target: Target, dbname: str, meta: dict[str, Any] | None, psql: str | None,
                 cancel: CancelToken, log: Callable[[str], object]) -> EarlyDigests | None:
        """None for a dump whose zone is not recorded (the proof then tries candidate zones itself)."""
        meta = meta or {}
        zone = meta.get("dump_timezone")
        if not zone:
            return None
        return cls(target, dbname, str(zone), meta.get("dump_bytea_output") or "hex", psql, cancel, log)

    def on_line(self, text: str) -> None:
        if self.all_queued:
            return
        if text.startswith(self.DATA):
            if self.thread is None:  # connected and ready while the first table loads, not after it
                self._start()
            if self.loading is not None:
                self._put(self.loading)  # its COPY has committed: pg_restore moved on
            self.loading = text[len(self.DATA):].strip().strip('"')
        elif text.startswith(self.TRIGGER):
            self.all_queued = True
            self._put(self._ALL)

    def on_block(self, block: Block) -> None:
        """A block of rows committed by a block load: read it beside the next one."""
        if not self.all_queued:
            self._put(block)

    def _start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="early-digests", daemon=True)
        self.thread.start()

    def _put(self, item: object) -> None:
        self.queue.put(item)
        if self.thread is None:
            self._start()

    def _run(self) -> None:
        import queue

        t0 = time.monotonic()
        env = self.target.libpq_env()
        env["PGDATABASE"] = self.dbname
        try:
            with connect(self.target, dbname=self.dbname) as conn:
                enc = conn.execute("SELECT pg_catalog.pg_encoding_to_char(encoding) FROM pg_catalog.pg_database "
                                   "WHERE datname = pg_catalog.current_database()").fetchone()[0]
                settings = DumpSettings(timezone=self.zone, client_encoding=enc, bytea_output=self.bytea)
                done: set[TableKey] = set()
                # Listed once, at the first table's data: pre-data (every CREATE TABLE) ran before any data.
                tables = self._tables(conn)

                def read(key: TableKey) -> None:
                    cols = catalog_copy_columns(conn, *key)
                    # The oldest running xid before the COPY's snapshot: row versions from it or later
                    # may not be in the digest (see _unchanged_since).
                    xmin = conn.execute("SELECT pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())"
                                        "::text::bigint % 4294967296").fetchone()[0]
                    digest = live_table_digest(conn, *key, columns=cols, settings=settings, psql=self.psql,
                                               psql_env=env, multiset=False, parts=read_parts())
                    self.digests[digest_key(key, cols, settings)] = (digest, int(xmin))
                    done.add(key)

                blocks = _BlockReads(conn, settings, self.psql, env, set(tables), self.log)
                while not self.cancel.cancelled:
                    try:
                        item = self.queue.get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if item is self._STOP:
                        return
                    if isinstance(item, Block):
                        if (got := blocks.read(item)) is not None and item.table is not None:
                            self.digests[got[0]] = got[1]
                            done.add(item.table)
                        continue
                    if item is self._ALL:
                        for key in tables:
                            if self.cancel.cancelled:
                                return
                            if key not in done:
                                read(key)
                        return
                    named = [k for k in tables if f"{k[0]}.{k[1]}" == item]
                    if len(named) == 1 and named[0] not in done:  # an ambiguous name waits for the trigger
                        read(named[0])
        except Exception as exc:  # noqa: BLE001 - the proof reads whatever is missing after the load
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.log(f"Reading the restored tables beside the load stopped ({first}); the proof reads "
                     "the rest after the load")
        finally:
            self.seconds = time.monotonic() - t0

    @staticmethod
    def _tables(conn: psycopg.Connection) -> list[TableKey]:
        return [tuple(row) for row in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND c.relpersistence = 'p' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2").fetchall()]

    def result(self) -> dict[DigestKey, tuple[TableDigest, Since]]:
        """The digests taken: a reading still going on is finished (the proof would do it anyway);
        tables not started are left to the proof."""
        if self.thread is None:
            return {}
        if not self.all_queued:
            self.queue.put(self._STOP)  # no index builds came: what is queued is read, then it stops
        while self.thread.is_alive():
            self.thread.join(0.1)
        return self.digests


class _BlockReads:
    """Reads committed blocks of a block load (`EarlyDigests.on_block`), joining each table's."""

    def __init__(self, conn: psycopg.Connection, settings: DumpSettings, psql: str | None, env: dict[str, str],
                 tables: set[TableKey], log: Callable[[str], object]) -> None:
        self.conn, self.settings, self.psql, self.env, self.tables = conn, settings, psql, env, tables
        self.hashes: dict[TableKey, list[bytes]] = {}
        self.xids: dict[TableKey, dict[int, int]] = {}
        self.columns: dict[TableKey, list[str]] = {}
        self.pages: dict[TableKey, list[int]] = {}  # the table's size in pages after each of its blocks
        self.given_up: set[TableKey] = set()
        self.log = log

    def _give_up(self, key: TableKey, why: str) -> None:
        """The table is read again as a whole (right, only slower): the run log says why."""
        self.given_up.add(key)
        self.log(f"Table {_name(key)}: {why}; it is read again as a whole")

    def read(self, block: Block) -> tuple[DigestKey, tuple[TableDigest, Since]] | None:
        """The table's digest once its last block is read; None before, or when it cannot be joined."""
        from psycopg import sql

        key = block.table
        if key is None or key not in self.tables or key in self.given_up or self.psql is None:
            return None
        if block.xid < 3:  # its marker was not seen: the rows cannot be told from any other
            self._give_up(key, f"block {block.index + 1} came without its transaction id")
            return None
        if block.index != len(self.xids.get(key, {})) or (not block.last and block.rows % SEGMENT_ROWS):
            # Its data came in pieces we cannot join (e.g. twice, via a partition root).
            self._give_up(key, f"its data came in pieces the block reads cannot join (block {block.index + 1})")
            return None
        if key not in self.columns:
            self.columns[key] = catalog_copy_columns(self.conn, *key)
        cols = self.columns[key]
        # Only the pages the block can be on. Rows are appended, but a COPY extends the table ahead
        # of its rows (up to 64 pages at a time), so the size after the previous block may lie past
        # this block's first rows; the size after the block before that cannot (a full block spans
        # hundreds of pages). A row placed elsewhere is missed, and the count below gives the table
        # to the proof: never a wrong digest.
        where = [sql.SQL("xmin = {}::pg_catalog.xid").format(sql.Literal(str(block.xid)))]
        sizes = self.pages.setdefault(key, [])
        if len(sizes) >= 2 and min(sizes[-2:]) > 0:
            where.append(sql.SQL("ctid >= {}::pg_catalog.tid").format(sql.Literal(f"({sizes[-2] - 1},0)")))
        if block.pages >= 0:
            where.append(sql.SQL("ctid < {}::pg_catalog.tid").format(sql.Literal(f"({block.pages},0)")))
        sizes.append(block.pages)
        stmt = sql.SQL("COPY (SELECT {} FROM ONLY {}.{} WHERE {}) TO STDOUT").format(
            sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(key[0]), sql.Identifier(key[1]),
            sql.SQL(" AND ").join(where))
        text = OrderedText()
        psql_copy(self.conn, stmt, self.settings, self.psql, self.env, text,
                  begin="BEGIN READ ONLY; SET max_parallel_workers_per_gather = 0;")
        text.check_end()
        if text.rows != block.rows:  # changed before it was read, or rows outside its pages
            self._give_up(key, f"block {block.index + 1} read back {text.rows:,} of its {block.rows:,} rows")
            return None
        self.hashes.setdefault(key, []).extend(text.segment_hashes())
        self.xids.setdefault(key, {})[block.xid] = block.rows
        if not block.last:
            return None
        xids = self.xids[key]
        digest = TableDigest(sum(xids.values()), joined_digest(self.hashes.pop(key)), None)
        return digest_key(key, cols, self.settings), (digest, {x: n for x, n in xids.items() if n})


def read_parts() -> int:
    """Row ranges one big restored table is read in at once: one per core, up to 4 (the read is the
    server's output functions, one core per backend; on 2 cores it fills the one the load left idle)."""
    return max(1, min(4, os.cpu_count() or 1))


def _selected(proof: ArtifactProof, tables: list[str] | None) -> list[TableKey]:
    if tables is None:
        return sorted(proof.tables)
    wanted = set(tables)
    return sorted(k for k in proof.tables if f"{k[0]}.{k[1]}" in wanted or k[1] in wanted)


def _parents(proof: ArtifactProof, tables: list[str]) -> set[TableKey]:
    """Requested tables without data of their own (partitioned parents) are still expected."""
    wanted = set(tables)
    return {(te.namespace or "", te.tag or "") for te in proof.toc if te.desc == "TABLE"
            and (f"{te.namespace}.{te.tag}" in wanted or te.tag in wanted)}


def _name(key: TableKey) -> str:
    return f"{key[0]}.{key[1]}"


class _TableProver:
    """Digests restored tables under the dump's settings; finds the dump's zone when unknown."""

    def __init__(self, conn: psycopg.Connection, proof: ArtifactProof, env: dict[str, str],
                 cancel: CancelToken, pre: dict[DigestKey, tuple[TableDigest, Since]]) -> None:
        self.conn, self.proof, self.env, self.pre = conn, proof, env, pre
        self.notes: list[str] = []
        self.unverified = 0
        self.counted: dict[str, int] = {}  # tables whose restored row count equals the artifact's
        self._sums: tuple[dict[TableKey, TableDigest] | None, str] | None = None
        zone = proof.dump_timezone
        self.zones = [zone] if zone else _candidate_zones(conn)
        # Tables whose COPY text depends on the zone: only they need the candidates.
        self.tz_tables = {} if zone else timezone_sensitive_tables(conn)

    def digest(self, key: TableKey, zone: str, multiset: bool = False) -> TableDigest:
        settings = DumpSettings(timezone=zone, client_encoding=self.proof.encoding or "UTF8",
                                bytea_output=self.proof.bytea_output)
        columns = self.proof.copy_columns.get(key)
        early = self.pre.get(digest_key(key, columns, settings)) if not multiset else None
        if early is not None and _unchanged_since(self.conn, key, *early):
            return early[0]
        import psycopg

        try:
            return live_table_digest(self.conn, *key, columns=columns, settings=settings,
                                     psql=self.proof.psql, psql_env=self.env, multiset=multiset, parts=read_parts())
        except (psycopg.Error, DumpFormatError) as exc:
            raise OpsError(f"Reading table {_name(key)} of the restored database failed ({exc})",
                           "the restored database was left as it is", "check the server log") from None

    def compare(self, key: TableKey, want: TableDigest) -> str | None:
        """None when equal; else a difference, or a "~"-prefixed note of what was not compared.

        First pass: rows and the dump-order sha256 only (C speed; a freshly loaded table returns
        its rows in load order, so this settles it). Only when no zone gives the dump's order is
        the table read again with the order-independent sum: same rows in another order pass
        (noted), anything else is a difference."""
        zones = self.zones if key in self.tz_tables else self.zones[:1]
        got = None
        for zone in zones:
            got = self.digest(key, zone)
            if got.rows != want.rows:
                break  # the count does not depend on the zone
            self.counted[_name(key)] = got.rows
            if got.ordered == want.ordered:
                self._found(zone)
                return None
        assert got is not None
        if got.rows == want.rows and want.multiset is None and self.proof.multisets is not None:
            if self._sums is None:  # one second read of the artifact, for every reordered table
                self._sums = self.proof.multisets()
            sums, why = self._sums
            if sums is None or key not in sums or sums[key].ordered != want.ordered:
                self.unverified += 1
                return (f"~table {_name(key)} ({want.rows:,} rows, counts equal): restored in another order, and "
                        f"the artifact's order-independent sums could not be computed ({why or 'not found'})")
            want = sums[key]
        if got.rows == want.rows and want.multiset is not None:
            for zone in zones:
                full = self.digest(key, zone, multiset=True)
                if full.compare(want) != "different":
                    self._found(zone)
                    self.notes.append(f"row order of {_name(key)} (same rows in another order: compared by "
                                      "a 64-bit checksum)")
                    return None
        if got.rows != want.rows:
            return (f"table {_name(key)}: {want.rows:,} rows in the artifact, {got.rows:,} restored, "
                    "content differs")
        if key in self.tz_tables:
            self.unverified += 1
            cols = ", ".join(self.tz_tables[key])
            return (f"~table {_name(key)} ({want.rows:,} rows, counts equal): its {cols} text depends on the "
                    f"dump's time zone, which the metadata does not record (tried {', '.join(zones)})")
        return f"table {_name(key)}: {want.rows:,} rows in the artifact and restored, content differs"

    def _found(self, zone: str) -> None:
        if zone != self.zones[0]:  # the dump's zone, found: try it first from now on
            self.zones.remove(zone)
            self.zones.insert(0, zone)


def _unchanged_since(conn: psycopg.Connection, key: TableKey, digest: TableDigest, since: Since) -> bool:
    """Whether a table digested earlier is still as it was: as many rows, and none written by a
    transaction that was running or not yet started when the digest began (an INSERT or UPDATE
    leaves a row version with a newer xmin; a DELETE alone changes the count). For a table read
    in blocks: its rows by xmin are exactly the blocks' (a row changed, added or removed since
    shows as another xmin or a count off). One scan, no COPY.

    The blocks' check needs no count per xmin: a block's transaction wrote exactly its block's
    rows to this table (a load has no triggers or rules yet: they come in post-data) and no later
    transaction can write rows with its xmin, so no block's xmin can count more than its block.
    All rows, and the rows with a block's xmin, both equal to the blocks' sum therefore means each
    block's count exactly and no other row, without hashing every row's xmin (0.26 s instead of
    0.5 s for 2 million rows, on the restore's clock)."""
    from psycopg import sql

    if isinstance(since, dict):
        want = sum(since.values())
        xids = "{" + ",".join(str(x) for x in since) + "}"
        row = conn.execute(sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE xmin = ANY({}::pg_catalog.xid[])) FROM ONLY {}.{}").format(
            sql.Literal(xids), sql.Identifier(key[0]), sql.Identifier(key[1]))).fetchone()
        return want == digest.rows and row is not None and row[0] == want and row[1] == want
    xmin = since
    if xmin < 3:  # a special xid: no usable horizon
        return False
    row = conn.execute(sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE pg_catalog.age(xmin) <= pg_catalog.age({}::text::xid)) "
        "FROM ONLY {}.{}").format(sql.Literal(str(xmin)), sql.Identifier(key[0]), sql.Identifier(key[1]))).fetchone()
    return row is not None and row[0] == digest.rows and row[1] == 0


def _candidate_zones(conn: psycopg.Connection) -> list[str]:
    """For a dump of unknown zone: UTC, then the server's own default (a legacy pg_dump ran with
    the server's or the database's default zone, usually the same server's)."""
    zones = ["UTC"]
    row = conn.execute("SELECT pg_catalog.current_setting('TimeZone'), "
                       "reset_val FROM pg_catalog.pg_settings WHERE name = 'TimeZone'").fetchone()
    for z in row or ():
        if z and z not in zones:
            zones.append(z)
    return zones


def _result(keys: list[TableKey], proof: ArtifactProof, differences: list[str], not_compared: list[str],
            objects: int, unverified: int) -> ProofResult:
    rows = sum(proof.tables[k].rows for k in keys)
    n = len(keys)
    if differences:
        more = f" (+{len(differences) - 3} more)" if len(differences) > 3 else ""
        sentence = f"{len(differences)} differences between the artifact and the restored database: " \
                   f"{'; '.join(differences[:3])}{more}"
        return ProofResult(Status.FAIL, sentence, differences, not_compared, n, rows, objects)
    equal = f"{n - unverified} of {n} tables" if unverified else f"{n} tables"
    sentence = f"{equal}, {rows:,} rows, digests equal, inventory equal ({objects} objects)"
    if not_compared:
        sentence += f"; not compared: {'; '.join(not_compared)}"
    status = Status.WARN if unverified else Status.PASS
    return ProofResult(status, sentence, differences, not_compared, n, rows, objects)
