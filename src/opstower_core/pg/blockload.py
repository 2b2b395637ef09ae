"""A custom archive's data loaded in committed blocks, so the proof can read each block while the
next one loads (issue 18).

On 2 cores a one-job load keeps about one core busy during the COPY phase and both during the
index builds; the proof's read-back of a big table, done after its COPY, runs beside the index
builds and slows them. Loaded in blocks, every block is committed and announced on its own, and
the read of block k runs beside the COPY of block k+1 (bench/chunked_load_spike.py measured
1.13x a bare restore against 1.24x).

`pg_restore --section=data --file=-` writes the data section as SQL (with the statistics
that come in it); `Splitter` copies it to psql,
cutting every COPY into blocks of BLOCK_ROWS rows, each in a transaction of its own followed by
two marker queries: the transaction's id before its COMMIT, its sequence number after it. psql
prints query results in order, so a "committed" marker is read only once the block is committed
(`Markers`). The markers are plain SQL, allowed under pg_restore's `\\restrict` mode.

Only for a database nobody uses yet (a new database, a staging copy, a scratch database): the
load itself is what one pg_restore would do (pre-data, data, post-data: pg_restore --section).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import IO

from opstower_core.pg.digest import SEGMENT_ROWS, DumpFormatError, TableKey, parse_copy_stmt

# Rows per committed block: a whole number of the ordered digest's segments, so the segment
# hashes of the block reads join into one read's digest.
BLOCK_ROWS = 4 * SEGMENT_ROWS

_BLOCK, _COMMITTED = "opstower-block", "opstower-committed"


@dataclass(frozen=True)
class Block:
    """One committed block of a table's rows."""

    seq: int  # its place in the load (0, 1, ...)
    table: TableKey | None  # None: a COPY statement we could not parse (its data is still loaded)
    index: int  # its place within its COPY statement
    rows: int
    last: bool  # the last block of its COPY statement
    xid: int = 0  # the 32-bit id of the transaction that committed it (the rows' xmin)
    pages: int = -1  # the table's size in pages once the block was in, before its COMMIT (-1: not known)


class Splitter:
    """Copies pg_restore's data-section SQL from `src` to `dst`, each COPY cut into committed blocks."""

    def __init__(self, src: IO[bytes], dst: IO[bytes], rows: int = BLOCK_ROWS,
                 tap: Callable[[bytes], object] | None = None) -> None:
        """`tap`: given every chunk of `src` as read, before it is cut (e.g. the artifact's digests)."""
        self.src, self.dst, self.rows, self.tap = src, dst, rows, tap
        self.blocks: list[Block] = []  # in order, each listed before its markers are written

    def _close_block(self, table: TableKey | None, name: bytes | None, index: int, rows: int, last: bool) -> bytes:
        seq = len(self.blocks)
        self.blocks.append(Block(seq, table, index, rows, last))
        # The table's size tells a reader where the block's rows are (rows are appended; the reader
        # still filters on the block's xmin, so a row placed elsewhere is missed, never taken wrongly).
        size = b"NULL" if name is None else b"pg_catalog.pg_relation_size(pg_catalog.to_regclass(" + name + b"))"
        return (f"\\.\nSELECT '{_BLOCK}', {seq}, pg_catalog.txid_current(), coalesce(".encode() + size
                + f" / pg_catalog.current_setting('block_size')::bigint, -1);\nCOMMIT;\n"
                  f"SELECT '{_COMMITTED}', {seq};\n".encode())

    def run(self) -> None:
        """Until `src` ends. The caller closes `dst` (only once the dump is known to be whole)."""
        buf = b""
        pos = 0
        header: bytes | None = None  # the COPY statement being cut
        table: TableKey | None = None
        name: bytes | None = None
        index = rows = 0
        write = self.dst.write
        read = getattr(self.src, "read1", self.src.read)
        tap = self.tap
        while data := read(1 << 20):
            if tap is not None:
                tap(data)
            buf = buf[pos:] + data
            pos = 0
            while True:
                if header is None:
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        break
                    line = buf[pos:nl + 1]
                    pos = nl + 1
                    if line.startswith(b"COPY ") and line.rstrip().endswith(b" FROM stdin;"):
                        header, index, rows = line, 0, 0
                        table, name = _names(line)
                        write(b"BEGIN;\n" + line)
                    else:
                        write(line)
                    continue
                # Inside a COPY: whole rows up to its end marker (a line "\." alone) or the last newline.
                end = buf.find(b"\\.\n", pos)
                while end > pos and buf[end - 1] != 0x0A:
                    end = buf.find(b"\\.\n", end + 1)
                limit = end if end >= 0 else buf.rfind(b"\n", pos) + 1
                while pos < limit:
                    n = buf.count(b"\n", pos, limit)
                    if rows + n < self.rows:
                        write(buf[pos:limit])
                        rows, pos = rows + n, limit
                        break
                    cut = pos
                    for _ in range(self.rows - rows):
                        cut = buf.index(b"\n", cut) + 1
                    write(buf[pos:cut])
                    write(self._close_block(table, name, index, self.rows, False) + b"BEGIN;\n" + header)
                    index, rows, pos = index + 1, 0, cut
                if end < 0:
                    break  # more rows to come
                write(self._close_block(table, name, index, rows, True))
                pos, header = end + 3, None
        if pos < len(buf):
            write(buf[pos:])


def _names(header: bytes) -> tuple[TableKey | None, bytes | None]:
    """A COPY statement's table: its name (as the catalog gives it, for the reader) and an SQL
    string literal of its quoted name in the script's own bytes (for to_regclass: whatever the
    script's client_encoding, the bytes are the script's). (None, None) when it does not parse."""
    try:
        table = parse_copy_stmt(header.decode("utf-8", "replace"))[0]
        raw = parse_copy_stmt(header.decode("latin-1"))[0]  # byte for byte, in any encoding
    except DumpFormatError:
        return None, None
    quoted = ".".join('"' + part.replace('"', '""') + '"' for part in raw)
    return table, ("'" + quoted.replace("'", "''") + "'").encode("latin-1")


class Markers:
    """Reads psql's output of the split script: each block, with its transaction id, once committed."""

    def __init__(self, splitter: Splitter, on_block: Callable[[Block], object],
                 on_other: Callable[[str], object]) -> None:
        self.splitter, self.on_block, self.on_other = splitter, on_block, on_other
        self._marks: dict[int, tuple[int, int]] = {}

    def line(self, text: str) -> None:
        parts = text.split("|")
        if len(parts) == 4 and parts[0] == _BLOCK:
            self._marks[int(parts[1])] = (int(parts[2]) % (1 << 32), int(parts[3]))
        elif len(parts) == 2 and parts[0] == _COMMITTED:
            seq = int(parts[1])
            block = self.splitter.blocks[seq]
            xid, pages = self._marks.pop(seq, (0, -1))
            self.on_block(replace(block, xid=xid, pages=pages))
        elif text.strip():
            self.on_other(text)
