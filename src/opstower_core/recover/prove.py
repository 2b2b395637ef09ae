"""The proof of a table recovery, checked in the transaction that is about to commit (a failed
proof rolls everything back): after a merge, every source key is present live (and, with
--overwrite-changed, no row differs from the source); after a replace or a restore, the live
table's content digest equals the source's (pg/digest, pg_dump's COPY text).

What it is compared with is the source's tables, named by `source.record`: a scratch copy
proven against the backup before ("the backup"), or a recovered cluster's tables, which are
themselves the independent record ("the recovered cluster": there is no file to prove them by)."""

from __future__ import annotations

import psycopg

from opstower_core.pg.digest import TableDigest, live_table_digest
from opstower_core.pg.tools import connect
from opstower_core.recover.model import RecoverOptions, TableOutcome
from opstower_core.recover.source import RecoverySource
from opstower_core.recover.stage import Work
from opstower_core.recover.tables import TableKey, label, qname

_LEAVES_SQL = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_partition_tree(%s::regclass) t
  JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE t.isleaf ORDER BY 1, 2"""


def prove(conn: psycopg.Connection, source: RecoverySource, works: list[Work], o: RecoverOptions) -> list[TableOutcome]:
    """One outcome per table with what was done and what proves it; `proven` False names the gap."""
    out = []
    with connect(source.target, dbname=source.dbname) as src:
        for w in works:
            if w.action == "blocked" or w.plan is None:
                continue
            p = w.plan
            t = TableOutcome(p.table, w.action, inserted=p.insert, updated=p.update, deleted=p.delete)
            if w.action == "merge" and w.keyed:
                t.proven, t.proof = _keys_present(conn, w, o.overwrite_changed, source.record)
            elif w.action in ("replace", "restore"):
                t.proven, t.proof = _digests_equal(conn, src, w, source.record)
            elif w.action == "copy":
                n = int(conn.execute(f"SELECT count(*) FROM {_into(w)}").fetchone()[0])
                t.proven = n == p.backup_rows
                t.proof = f"{n:,} rows in {p.into}, {p.backup_rows:,} in {source.record}"
            out.append(t)
    return out


def _into(w: Work) -> str:
    assert w.plan is not None and w.plan.into
    schema, _, name = w.plan.into.partition(".")
    return qname((schema, name))


def _keys_present(conn: psycopg.Connection, w: Work, values_too: bool, record: str) -> tuple[bool, str]:
    live = qname(w.key)
    missing = int(conn.execute(f"SELECT count(*) FROM {w.temp} b WHERE NOT EXISTS "
                               f"(SELECT 1 FROM {live} l WHERE {w.match('l', 'b')})").fetchone()[0])
    total = int(conn.execute(f"SELECT count(*) FROM {w.temp}").fetchone()[0])
    if not w.requested:  # a parent pulled in: only the rows its children needed
        missing = int(conn.execute(f"SELECT count(*) FROM {w.ins} b WHERE NOT EXISTS "
                                   f"(SELECT 1 FROM {live} l WHERE {w.match('l', 'b')})").fetchone()[0])
        return missing == 0, ("every parent row the recovered rows reference is present live" if missing == 0 else
                              f"{missing:,} referenced parent rows are still missing live")
    text = (f"all {total:,} keys of {record} present live" if missing == 0 else
            f"{missing:,} of {total:,} keys of {record} missing live")
    ok = missing == 0
    if values_too:
        differ = int(conn.execute(
            f"SELECT count(*) FROM {w.temp} b JOIN {live} l ON {w.match('l', 'b')} "
            f"WHERE {w.row_text('b')} IS DISTINCT FROM {w.row_text('l')}").fetchone()[0])
        ok = ok and differ == 0
        text += f", every one with {record}'s values" if differ == 0 else f", {differ:,} with other values"
    return ok, text


def _digests_equal(conn: psycopg.Connection, src: psycopg.Connection, w: Work, record: str) -> tuple[bool, str]:
    info = w.src
    assert info is not None
    cols = w.columns if w.live is not None else [c.name for c in info.columns if not c.generated]
    # pg_partition_tree returns no row for a plain table: then the table is its own one leaf
    # (without this, a plain table's proof compared nothing and said "0 rows, equal").
    leaves = [tuple(r) for r in src.execute(_LEAVES_SQL, (qname(w.key),)).fetchall()] or [w.key]
    live_leaves = [tuple(r) for r in conn.execute(_LEAVES_SQL, (qname(w.key),)).fetchall()] or [w.key]
    if leaves != live_leaves:
        return False, (f"partitions differ: {record} {', '.join(label(k) for k in leaves)}; live "
                       f"{', '.join(label(k) for k in live_leaves)} (digests not compared)")
    rows = 0
    for leaf in leaves:
        want = _digest(src, leaf, cols)
        got = _digest(conn, leaf, cols)
        if got.compare(want) == "different":
            return False, (f"digest of {label(leaf)} differs from {record}'s ({got.rows:,} rows live, "
                           f"{want.rows:,} in {record})")
        rows += got.rows
    return True, f"content digest equal to {record}'s ({rows:,} rows, {len(cols)} columns)"


def _digest(conn: psycopg.Connection, key: TableKey, cols: list[str]) -> TableDigest:
    # Through this session: the live side must see its own uncommitted changes.
    return live_table_digest(conn, key[0], key[1], columns=cols)
