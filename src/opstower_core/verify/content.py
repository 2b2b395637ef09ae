"""What verify's single streaming pass learns about a dump's content, and checks 5 and 6 on it.

`ContentProbe` is fed the decompressed stream while checks 4 (compression integrity) and the
sha256 run over it: it counts CREATE TABLE / COPY / INSERT statements in a plain dump, or
reads a custom archive's table of contents through `pg_restore --list`, and digests every
table's data for the restore proof (`ProofBuilder`). `content_verdict`
(check 5, PostgreSQL dump content) and `metadata_verdict` (check 6, metadata valid and
matching the artifact) turn what the pass found into a status and one line; `verify` runs
the pass and reports the steps.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading

from opstower_core.artifacts.names import missing_fields
from opstower_core.artifacts.scan import ScanResult, header_problem
from opstower_core.config import Settings
from opstower_core.events import Status
from opstower_core.pg.tools import PgTools, available_tools
from opstower_core.repo.catalog import CatalogEntry, fetch_s3_metadata
from opstower_core.verify.proof import ArtifactProof, ProofBuilder

PLAIN_KEYWORDS = {"create": b"\nCREATE TABLE ", "copy": b"\nCOPY ", "insert": b"\nINSERT INTO "}


class ContentProbe:
    """Reads the dump's content during the single pass.

    custom: feeds the decompressed stream to `pg_restore --list` until it has read the
    table of contents, and counts its TABLE DATA entries. plain: counts CREATE TABLE and
    COPY/INSERT statements across the whole stream.
    """

    def __init__(self, fmt: str, tools: PgTools | None, digest: bool = True) -> None:
        self.fmt = fmt
        self.counts = {"create": 0, "copy": 0, "insert": 0}
        self._tails: dict[str, bytes] = {}
        self.toc: list[str] = []
        self.toc_error: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._stderr = b""
        self.proof = ProofBuilder(digest)
        if fmt == "custom" and tools is not None:
            self._proc = subprocess.Popen([tools.pg_restore, "--list"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._reader = threading.Thread(target=self._read_toc, daemon=True)
            self._reader.start()

    def _read_toc(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None and self._proc.stderr is not None
        self.toc = self._proc.stdout.read().decode("utf-8", "replace").splitlines()
        self._stderr = self._proc.stderr.read()

    def feed(self, data: bytes) -> None:
        self.proof.feed(data)
        if self.fmt == "plain":
            for key, keyword in PLAIN_KEYWORDS.items():
                # Prefix with the previous chunk's last len-1 bytes: a keyword split across two
                # chunks is seen once, and the short prefix can never hold a whole keyword.
                self.counts[key] += (self._tails.get(key, b"") + data).count(keyword)
                self._tails[key] = bytes(data[-(len(keyword) - 1):])  # data is a reused buffer
            return
        if self._proc is not None and self._proc.stdin is not None:
            try:
                self._proc.stdin.write(data)
            except (BrokenPipeError, ValueError):
                self._proc.stdin = None  # pg_restore has read its table of contents and left

    def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
        try:
            rc = self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        if rc != 0:
            err = self._stderr.decode("utf-8", "replace").strip().splitlines()
            self.toc_error = err[-1] if err else f"pg_restore --list exit {rc}"

    @property
    def table_data_entries(self) -> list[str]:
        return [ln for ln in self.toc if " TABLE DATA " in ln and not ln.startswith(";")]


def pick_tools(settings: Settings) -> PgTools | None:
    """The newest client tool set found (its pg_restore reads a custom archive's contents), or None."""
    tools = available_tools(settings)
    return max(tools, key=lambda t: t.major) if tools else None


def content_verdict(scan: ScanResult, probe: ContentProbe, fmt: str) -> tuple[Status, str, int | None]:
    """Check 5: (status, detail, tables in the dump, or None when the dump is not valid)."""
    if scan.error and len(scan.head) < len(b"PGDMP") + 1:
        # Nothing of the dump could be decoded: say why, not that its header is wrong.
        return Status.FAIL, ("Dump content not checked: the artifact could not be decompressed "
                             "(see the compression check)"), None
    problem = header_problem(scan.head, fmt)
    if problem:
        return Status.FAIL, f"Invalid PostgreSQL dump: {problem}", None
    if fmt == "plain":
        c = probe.counts
        if c["create"] == 0 and c["copy"] == 0 and c["insert"] == 0:
            return Status.FAIL, "Dump header present but no SQL commands (CREATE TABLE, COPY, INSERT) found", None
        status = Status.WARN if scan.error else Status.PASS
        # Tables with data, like a custom archive's TABLE DATA entries (a partitioned parent has a
        # CREATE TABLE but no data); a dump made with --inserts has no COPY blocks to count.
        tables = c["copy"] or c["create"]
        return status, (f"Valid PostgreSQL dump detected: {c['create']} tables, {c['copy']} COPY blocks, "
                        f"{c['insert']} INSERTs" + (" (up to the corruption)" if scan.error else "")), tables
    if probe.toc_error and not probe.toc:
        return Status.FAIL, f"Table of contents unreadable: {probe.toc_error}", None
    entries = probe.table_data_entries
    if not entries:
        return Status.WARN, "Valid custom-format archive but it holds no table data", 0
    return Status.PASS, (f"Valid PostgreSQL dump detected: custom format, {len(entries)} tables with data "
                         f"in the table of contents"), len(entries)


def metadata_verdict(settings: Settings, e: CatalogEntry, size: int, scan: ScanResult | None,
                     tables: int | None, proof: ArtifactProof | None = None,
                     unread: str | None = None) -> tuple[Status, str]:
    """Check 6: the metadata against the artifact (`size` bytes, its scan, `tables` found in the
    dump, and what the dump itself says: its database name and format).

    `unread`: why the dump's content was not read (an encrypted artifact without its identity);
    the sha256 and size are still compared, and the verdict names what was not.
    Fetches the metadata from S3 first for an S3-only entry whose metadata was not read yet.
    """
    meta, problem = e.meta, e.meta_problem
    if meta is None and e.local_path is None and e.s3_key:
        fetch_s3_metadata(settings, e)
        meta, problem = e.meta, e.meta_problem
    if meta is None:
        if proof is not None and proof.dbname and e.name.conventional and proof.dbname != e.name.database:
            return Status.FAIL, (f"The file name says database {e.name.database!r}, but the artifact is a dump of "
                                 f"database {proof.dbname!r} (its archive header); there is no metadata")
        if problem in (None, "metadata file missing", "metadata object missing in S3"):
            # A legacy artifact (e.g. a hand-made `pg_dump | gzip`): the artifact itself is all there is.
            return Status.WARN, (f"No metadata file ({e.name.meta_filename}): no sha256 or row counts to compare; "
                                 "the content checks and the restore proof use what the artifact itself holds")
        return Status.FAIL, f"Metadata file problem: {problem} ({e.name.meta_filename})"
    missing = missing_fields(meta)
    if missing:
        return Status.FAIL, f"Metadata is missing required fields: {', '.join(missing)}"
    recorded_size = meta.get("size_bytes", meta.get("backup_size"))
    try:
        recorded_size = int(recorded_size)
    except (TypeError, ValueError):
        recorded_size = None
    if recorded_size is not None and recorded_size != size:
        return Status.FAIL, f"Metadata size {recorded_size:,} bytes does not match the file ({size:,} bytes)"
    info = f"Timestamp: {meta.get('timestamp')}, Database Size: {meta.get('database_size')}, Table Count: {meta.get('table_count')}"
    if meta.get("encryption") and not e.name.encrypted:
        return Status.FAIL, "Metadata says the artifact is encrypted but its name has no .age suffix"
    if e.name.encrypted and not meta.get("encryption"):
        return Status.FAIL, "Artifact is encrypted (.age) but its metadata claims it is not"
    sha = meta.get("sha256")
    if scan is not None and sha and sha != scan.sha256:
        return Status.FAIL, f"Metadata sha256 {sha[:12]}… does not match the file ({scan.sha256[:12]}…)"
    mismatch = identity_mismatch(meta, e, proof)
    if mismatch:
        return Status.FAIL, mismatch
    warnings = []
    if not sha:
        warnings.append("no sha256 recorded (legacy metadata): content not proven")
    recorded_tables = meta.get("table_count")
    if tables is not None and isinstance(recorded_tables, int) and recorded_tables != tables and meta.get("tool") == "opstower":
        return Status.FAIL, f"Metadata table_count {recorded_tables} does not match the dump ({tables} tables)"
    if tables is not None and isinstance(recorded_tables, int) and recorded_tables != tables:
        warnings.append(f"table_count {recorded_tables} differs from the {tables} tables found in the dump")
    if warnings:
        return Status.WARN, f"Metadata file is valid JSON; {'; '.join(warnings)}. {info}"
    checked = "size, sha256" if sha and scan is not None else "size"
    if proof is not None:
        checked += ", format" + (", database name" if proof.dbname else "")
    if unread:
        return Status.PASS, (f"Metadata file is valid JSON and matches the artifact ({checked}); not checked: "
                             f"{unread}. {info}")
    note = "; a plain dump does not name its database, so that was not checked" if proof and not proof.dbname else ""
    return Status.PASS, f"Metadata file is valid JSON and matches the artifact ({checked}){note}. {info}"


def identity_mismatch(meta: dict, e: CatalogEntry, proof: ArtifactProof | None) -> str | None:
    """A sentence naming both sides when the metadata's database, file name or format
    disagree with the artifact itself; None when they agree (or cannot be compared)."""
    import os

    recorded_file = meta.get("backup_file")
    if recorded_file and os.path.basename(str(recorded_file)) != e.filename and not e.name.given:
        return (f"Metadata names the file {os.path.basename(str(recorded_file))!r}, but this artifact is "
                f"{e.filename!r}: the metadata belongs to another backup")
    fmt = meta.get("format")
    actual = proof.format if proof is not None else e.name.format
    if fmt and fmt != actual:
        return f"Metadata says format {fmt!r}, but the artifact is a {actual} dump"
    database = meta.get("database")
    if proof is not None and proof.dbname and database and database != proof.dbname:
        return (f"Metadata says database {database!r}, but the artifact is a dump of database "
                f"{proof.dbname!r} (its archive header)")
    return None
