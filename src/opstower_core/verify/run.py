"""The eight verification checks of the reference's verify-backup.sh, with live progress.

1 exists · 2 readable · 3 not empty · 4 compression integrity · 5 PostgreSQL dump content ·
6 metadata valid and matching · 7 S3 copy present and matching · 8 full test restore.

Checks 4–6 share one streaming pass over the artifact (decompress, sha256, header and
table of contents), so verifying costs about as much as decompressing once. What that pass
reads of the dump's content, and the verdicts of checks 5 and 6, are in `verify_content`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import humanize

from opstower_core.advice import say
from opstower_core.artifacts.scan import CHUNK, OUT_CHUNK, ScanResult, scan_stream
from opstower_core.config import Settings, Target
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status, StepResult
from opstower_core.pg.load import (  # the restore engine's loader: one way to load a dump
    open_artifact,
    restore_into,
)
from opstower_core.pg.tools import PgTools, connect, quote_ident
from opstower_core.repo.catalog import CatalogEntry, resolve
from opstower_core.runs.history import StateStore
from opstower_core.storage.s3 import store_for
from opstower_core.verify.checks import CHECKS
from opstower_core.verify.content import (
    ContentProbe,
    content_verdict,
    metadata_verdict,
    pick_tools,
)
from opstower_core.verify.proof import ArtifactProof, EarlyDigests, ProofResult, prove_restored

_READ_SIZE = 4 * CHUNK  # stored bytes per read in checks 4-6 (no tee)
_OUT_CHUNK = 4 * OUT_CHUNK  # dump bytes per chunk in checks 4-6 (no tee)
SCRATCH_DROP_WAIT = 15.0  # s the test database's drop is tried for (a session may still be leaving)


@dataclass
class VerifyResult:
    entry: CatalogEntry
    results: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    tables_in_dump: int | None = None
    proof: ArtifactProof | None = None  # what the artifact holds (digests, inventory), from checks 4-6
    restored_proof: ProofResult | None = None  # check 8's comparison of the scratch restore with it

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results if r.status == Status.FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def status(self) -> Status:
        if self.failed:
            return Status.FAIL
        return Status.WARN if any(r.status == Status.WARN for r in self.results) else Status.PASS


class _Verifier:
    def __init__(self, settings: Settings, entry: CatalogEntry, reporter: Reporter, full_test: bool, upto: int,
                 tee: Callable[[memoryview], object] | None = None, digest: bool = True) -> None:
        self.settings = settings
        self.tee = tee
        self.digest = digest or full_test  # check 8 proves the scratch restore with the digests
        self.entry = entry
        self.r = reporter
        self.full_test = full_test
        self.upto = upto
        self.total = 8
        self.scan: ScanResult | None = None
        self.probe: ContentProbe | None = None
        self.scan_problem: str | None = None
        self.result = VerifyResult(entry)
        self.size = entry.size
        self.digest_job: Any = None  # pg.digest_job.DigestJob: check 8's table digests, beside its load

    @functools.cached_property
    def tools(self) -> PgTools | None:
        """The client tools for this run's content check, load and read-back: probed once (a process start each)."""
        return pick_tools(self.settings)

    def check(self, index: int, status: Status, detail: str, t0: float, data: dict[str, Any] | None = None) -> Status:
        if index == 7 and self.settings.s3.replica is not None:  # issue 17: check 7 covers every configured copy
            from opstower_core.storage.replica import every_copy

            sha = self.scan.sha256 if self.scan else (self.entry.meta or {}).get("sha256")
            status, detail = every_copy(self.settings, self.entry.name, self.entry.meta, self.size, sha, status, detail)
        self.r.finished(CHECKS[index - 1][0], status, detail, time.monotonic() - t0, data)
        return status

    def start(self, index: int) -> float:
        self.r.cancel.check()  # honoured between any two checks, and inside the streaming ones
        step, title = CHECKS[index - 1]
        self.r.started(step, title, index, self.total)
        return time.monotonic()

    def run(self) -> VerifyResult:
        e = self.entry
        fatal = False
        t = self.start(1)
        if e.local_path is not None:
            if e.local_path.is_dir():
                self.check(1, Status.FAIL, f"{e.local_path} is a directory, not a backup file", t)
                fatal = True
            elif not e.local_path.exists():
                self.check(1, Status.FAIL, f"Backup file not found: {e.local_path}", t)
                fatal = True
            else:
                self.check(1, Status.PASS, f"Backup file exists: {e.local_path}", t)
        else:
            head = store_for(self.settings.s3).head(e.s3_key or "")
            if head is None:
                self.check(1, Status.FAIL, f"s3://{self.settings.s3.bucket}/{e.s3_key} does not exist", t)
                fatal = True
            else:
                self.size = int(head["ContentLength"])
                self.check(1, Status.PASS, f"Backup exists in S3 only: s3://{self.settings.s3.bucket}/{e.s3_key}", t)

        t = self.start(2)
        if fatal:
            self.check(2, Status.SKIP, "skipped: check 1 failed", t)
        elif e.local_path is not None and not os.access(e.local_path, os.R_OK):
            self.check(2, Status.FAIL, f"Backup file is not readable by this user (mode {oct(e.local_path.stat().st_mode & 0o777)})", t)
            fatal = True
        else:
            try:
                with open_artifact(self.settings, e) as fh:
                    fh.read(1)
                self.check(2, Status.PASS, "Backup file is readable", t)
            except OSError as exc:
                self.check(2, Status.FAIL, f"Backup file cannot be read ({exc.strerror or exc})", t)
                fatal = True

        t = self.start(3)
        if fatal:
            self.check(3, Status.SKIP, "skipped: the file cannot be read", t)
        else:
            if e.local_path is not None:
                self.size = e.local_path.stat().st_size
            if self.size == 0:
                self.check(3, Status.FAIL, "Backup file is empty (0 bytes)", t)
                fatal = True
            else:
                self.check(3, Status.PASS, f"Backup file size: {humanize.naturalsize(self.size, binary=True)}", t,
                           {"size_bytes": self.size})

        self.r.cancel.check()
        # The S3 look-up (client set-up, HEAD, tags) is network-bound: start it now so it
        # overlaps the streaming checks 4-6 instead of following them.
        s3_lookup = self._start_s3_lookup() if self.upto >= 7 else None
        loaded = None
        if self.upto >= 8 and self.full_test and not fatal and self._can_load_in_read():
            loaded = self._single_pass_loading()
        else:
            self._single_pass(fatal)
        try:
            if self.upto >= 7:
                self._s3_check(s3_lookup)
            if self.upto >= 8:
                if self.full_test:
                    self._full_restore(loaded)
                else:
                    t = self.start(8)
                    self.check(8, Status.SKIP, f"Full restoration test not requested ({say('full_test_use')})", t)
        finally:
            if loaded is not None:
                loaded.drop(self.r)  # e.g. cancelled at check 7: the test database never outlives the run
        return self.result

    # 4–6 -------------------------------------------------------------------------------
    def _single_pass(self, fatal: bool) -> None:
        e = self.entry
        t4 = self.start(4)
        if fatal:
            for i in (4, 5, 6):
                if i > 4:
                    self.start(i)
                self.check(i, Status.SKIP, "skipped: the file is missing, unreadable or empty", t4)
            return
        identities = None
        if e.name.encrypted:
            try:
                identities = self._identities()
            except OpsError as exc:
                self._hash_only(t4, exc.what)
                return
        tools = self.tools
        self.probe = ContentProbe(e.name.format, tools, self.digest)
        on_data = self.probe.feed
        if self.tee is not None:
            tee, probe_feed = self.tee, self.probe.feed

            def on_data(data: memoryview) -> None:  # the loader's copy first: it overlaps our digest
                tee(data)
                probe_feed(data)
        try:
            with open_artifact(self.settings, e) as raw:
                # Without a loader on the tee, larger chunks: fewer trips through Python per MB.
                self.scan = scan_stream(raw, e.name.compression, on_data=on_data,
                                        on_progress=lambda n: self.r.progress("compression", n, self.size),
                                        cancel=self.r.cancel, identities=identities,
                                        read_size=CHUNK if self.tee else _READ_SIZE,
                                        out_chunk=OUT_CHUNK if self.tee else _OUT_CHUNK)
        finally:
            self.probe.close()
        self.r.progress("compression", self.scan.compressed_bytes, self.size, force=True)
        scan = self.scan
        if scan.ok:
            self.result.proof = self.probe.proof.finish(e.meta, tools.psql if tools else None)
        if scan.decrypt_failed:
            self.check(4, Status.FAIL, f"Decryption failed at byte {scan.error_offset:,} of {self.size:,}: {scan.error}", t4)
        elif scan.error:
            where = f" at byte {scan.error_offset:,} of {self.size:,}" if scan.error_offset is not None else ""
            self.check(4, Status.FAIL, f"Compression integrity test failed{where}: {scan.error}", t4)
        elif e.name.compression == "none":
            self.check(4, Status.SKIP, "Uncompressed artifact: nothing to test", t4)
        else:
            self.check(4, Status.PASS, f"{e.name.compression} integrity test passed "
                       f"({humanize.naturalsize(scan.uncompressed_bytes, binary=True)} of dump)", t4)
        t5 = self.start(5)
        self._content_check(t5)
        self._metadata_check(scan)

    def _hash_only(self, t4: float, why: str) -> None:
        """An encrypted artifact without its identity: its stored bytes are still hashed, so
        check 6 compares them with the metadata's sha256; the content is named as unchecked."""
        with open_artifact(self.settings, self.entry) as raw:
            self.scan = scan_stream(raw, "none", on_progress=lambda n: self.r.progress("compression", n, self.size),
                                    cancel=self.r.cancel)
        self.check(4, Status.SKIP, f"Encrypted artifact, not decrypted: {why} (checks 4, 5 and 8 need the "
                   "identity; its bytes were hashed for check 6)", t4)
        self.start(5)
        self.check(5, Status.SKIP, "Encrypted artifact: dump content not readable without the identity", t4)
        t = self.start(6)
        status, detail = metadata_verdict(self.settings, self.entry, self.size, self.scan, None,
                                          unread="compression, dump content and database name (no identity)")
        self.check(6, status, detail, t)

    def _content_check(self, t: float) -> None:
        assert self.scan is not None and self.probe is not None
        status, detail, tables = content_verdict(self.scan, self.probe, self.entry.name.format)
        if tables is not None:
            self.result.tables_in_dump = tables
        self.check(5, status, detail, t, None if tables is None else {"tables": tables})

    def _identities(self) -> list:
        """age identities for an encrypted artifact, or OpsError saying why there are none."""
        from opstower_core.artifacts.crypto import encryption_settings, load_identities

        enc = encryption_settings(self.settings)
        if not enc.can_decrypt:
            raise OpsError("no identity configured (OPSTOWER_AGE_IDENTITY or encryption.identity_file)")
        return load_identities(enc)

    def _metadata_check(self, scan: ScanResult | None) -> None:
        t = self.start(6)
        status, detail = metadata_verdict(self.settings, self.entry, self.size, scan, self.result.tables_in_dump,
                                          self.result.proof)
        self.check(6, status, detail, t)

    # 7 ---------------------------------------------------------------------------------
    def _s3_key(self) -> str | None:
        """The key to look for, or None when no S3 copy is expected (then check 7 says why)."""
        e = self.entry
        if not self.settings.s3.enabled:
            return None
        if not e.s3_key and ((e.meta or {}).get("s3_planned") is False or not e.name.conventional):
            return None
        return e.s3_key or e.name.s3_key(self.settings.s3.prefix)

    def _start_s3_lookup(self) -> Future | None:
        key = self._s3_key()
        if key is None:
            return None

        def lookup() -> tuple[dict | None, str | None]:
            store = store_for(self.settings.s3)
            head = store.head(key)
            return head, (store.remote_sha256(key, head) if head is not None else None)

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3-check")
        future = pool.submit(lookup)
        pool.shutdown(wait=False)
        return future

    def _s3_check(self, lookup: Future | None) -> None:
        t = self.start(7)
        s3 = self.settings.s3
        e = self.entry
        if not s3.enabled:
            self.check(7, Status.SKIP, "S3 not configured (no bucket): off-site copy not checked", t)
            return
        if not e.name.conventional and not e.s3_key:
            self.check(7, Status.SKIP, f"{e.filename} does not follow the <db>_<YYYYMMDD_HHMMSS> naming: "
                       "its S3 copy cannot be located", t)
            return
        key = self._s3_key()
        if key is None or lookup is None:
            # Taken with --local-only (or a pre-restore copy): no S3 copy was ever meant to exist.
            self.check(7, Status.SKIP, "Local-only backup (no S3 upload was made for it): off-site copy not checked", t)
            return
        try:
            head, remote_sha = lookup.result()
        except OpsError as exc:
            self.check(7, Status.WARN, f"S3 not reachable, off-site copy not confirmed ({exc.what})", t)
            return
        if head is None:
            meta = e.meta or {}
            if meta.get("tool") != "opstower":
                # A legacy artifact: nothing says it was ever uploaded, so its absence is no fault.
                self.check(7, Status.SKIP, f"Not in S3 (s3://{s3.bucket}/{key}); no upload is recorded for this "
                           "legacy artifact: off-site copy not checked", t)
                return
            self.check(7, Status.FAIL, f"S3 backup missing: s3://{s3.bucket}/{key}", t)
            return
        remote = int(head["ContentLength"])
        if remote != self.size:
            self.check(7, Status.FAIL, f"S3 backup size differs: {remote:,} bytes in S3, {self.size:,} here", t)
            return
        local_sha = self.scan.sha256 if self.scan else (e.meta or {}).get("sha256")
        if remote_sha and local_sha and remote_sha != local_sha:
            self.check(7, Status.FAIL, f"S3 backup sha256 differs ({remote_sha[:12]}… in S3, {local_sha[:12]}… here)", t)
            return
        storage = head.get("StorageClass", "STANDARD")
        self.check(7, Status.PASS, f"S3 backup exists (size: {remote} bytes, {storage}"
                   f"{', sha256 matches' if remote_sha and local_sha else ''})", t, {"key": key})

    # 8 ---------------------------------------------------------------------------------
    def _can_load_in_read(self) -> bool:
        """Check 8's test restore can be fed by the checks' own read (an encrypted artifact needs its identity)."""
        if self.entry.name.encrypted:
            try:
                self._identities()
            except OpsError:
                return False
        return True

    def _single_pass_loading(self) -> _Scratch:
        """Checks 4-6 with check 8's test restore fed by the same read (issue 18): the artifact is read
        once. The scratch database is made first; when check 4 or 5 fails, the load is stopped before
        pg_restore / psql sees the end of its input, and check 8 says the artifact failed (the scratch
        database is dropped in any case)."""
        from opstower_core.pg.load import FeedRefused, ToolStopped

        scratch = self._create_scratch()
        if scratch.problem is not None:
            self._single_pass(False)
            return scratch
        early = EarlyDigests.for_load(scratch.target, scratch.name, self.entry.meta, self._psql(), self.r.cancel,
                                      lambda line: self.r.log("compression", line, "DEBUG"))
        scratch.early = early
        e = self.entry
        if e.local_path is not None and not e.name.encrypted and (e.meta or {}).get("sha256"):
            # The per-row parse for the proof is not done in this read (it would slow the load it feeds):
            # a block load's data stream is digested as it passes, else an idle-priority process reads the
            # file (pg/digest_job.py). Either counts only for the verified bytes.
            from opstower_core.pg.digest_job import DigestJob

            self.digest_job = DigestJob.beside_load(e.local_path, e.name.compression, e.name.format, self.tools,
                                                    in_blocks=early is not None)
            self.digest = False
        t0 = time.monotonic()

        def reader(sink: Callable[[memoryview], object]) -> None:
            live = [sink]

            def tee(data: memoryview) -> None:
                if live:
                    try:
                        live[0](data)
                    except ToolStopped:  # the test restore failed: checks 4-6 still read to the end
                        live.clear()

            self.tee = tee
            try:
                self._single_pass(False)
            finally:
                self.tee = None
            if any(r.status == Status.FAIL and r.step in ("compression", "content") for r in self.r.results):
                raise FeedRefused("the artifact failed an earlier check", "", "")

        try:
            self.r.log("compression", f"Restoring into the test database {scratch.name} in the same read")
            restore_into(self.settings, scratch.target, self.entry, scratch.name, self.r, "compression", reader=reader,
                         on_line=early.on_line if early is not None else None,
                         on_block=early.on_block if early is not None else None,
                         data_tap=self.digest_job.tap if self.digest_job is not None else None)
        except Cancelled:
            self._stop_digest_job()
            scratch.drop(self.r)
            raise
        except OpsError as exc:
            scratch.error = exc
        scratch.load_seconds = time.monotonic() - t0
        return scratch

    def _stop_digest_job(self) -> None:
        if self.digest_job is not None:
            self.digest_job.kill()
            self.digest_job = None

    def _job_digests(self) -> str | None:
        """Put the digest process's table digests into the artifact's proof (waits for it): None, or why
        there are none (the proof is then not made)."""
        job, proof = self.digest_job, self.result.proof
        self.digest_job = None
        if job is None or proof is None:
            return None
        sha = str((self.entry.meta or {}).get("sha256"))
        got, why = job.result(sha, self.r.cancel)
        self.r.cancel.check("the test database is dropped")
        if got is None:
            return why
        proof.tables, proof.copy_columns, proof.digested = got.tables, got.copy_columns, True
        proof.multisets = job.with_sums(sha, self.r.cancel)
        self.r.log("full_restore", got.how())
        return None

    def _psql(self) -> str | None:
        return self.tools.psql if self.tools else None

    def _create_scratch(self) -> _Scratch:
        e = self.entry
        target = _target_for(self.settings, e.database)
        name = f"{e.database[:30]}_verify_{datetime.now().strftime('%Y%m%d_%H%M%S')}"
        scratch = _Scratch(target, name)
        try:
            scratch.conn = connect(target, dbname="postgres")
            self.r.log("full_restore", f"Creating test database: {name}")
            scratch.conn.execute(f"CREATE DATABASE {quote_ident(name)}")
        except OpsError as exc:
            # The server, not the backup, is the problem: no verdict on the artifact.
            scratch.problem = f"Full restoration test not run: {exc.what}"
        except Exception as exc:  # noqa: BLE001 - e.g. no CREATEDB privilege
            scratch.problem = f"Full restoration test not run: cannot create {name} ({exc})"
        if scratch.problem is not None and scratch.conn is not None:
            scratch.conn.close()
            scratch.conn = None
        return scratch

    def _full_restore(self, loaded: _Scratch | None = None) -> None:
        t = self.start(8)
        e = self.entry
        # Only a damaged or unreadable artifact (checks 1-5) makes a test restore pointless;
        # missing metadata or a missing S3 copy do not.
        blocking = {"exists", "readable", "not_empty", "compression", "content"}
        if any(r.status == Status.FAIL and r.step in blocking for r in self.r.results):
            self._stop_digest_job()
            if loaded is not None:
                loaded.drop(self.r)
            self.check(8, Status.SKIP, "skipped: the artifact itself failed an earlier check"
                       + (f"; {loaded.fate}" if loaded is not None else ""), t)
            return
        if loaded is None and e.name.encrypted:
            try:
                self._identities()
            except OpsError as exc:
                self.check(8, Status.SKIP, f"Encrypted artifact, cannot restore: {exc.what}", t)
                return
        scratch = loaded or self._create_scratch()
        if scratch.problem is not None:
            self.check(8, Status.WARN, scratch.problem, t)
            return
        target, name = scratch.target, scratch.name
        outcome: tuple[Status, str] | None = None
        try:
            if loaded is None:
                self.r.log("full_restore", "Restoring backup to test database...")
                restore_into(self.settings, target, e, name, self.r, "full_restore")
            elif scratch.error is not None:
                raise scratch.error
            else:
                self.r.log("full_restore", f"Restored into the test database in the read of checks 4-6 "
                           f"({scratch.load_seconds:.1f} s)")
            self.r.log("full_restore", "Restoration to test database successful")
            outcome = _query_restored(target, name, self.r)
            if outcome is None:
                proved, why = self._prove(target, name, scratch.early.result() if scratch.early else None)
                if proved is not None and proved.status == Status.FAIL:
                    outcome = Status.FAIL, f"Restored database differs from the artifact: {proved.sentence}"
                else:
                    outcome = _compare_restored(target, name, e.meta, proved, why)
        except Cancelled:
            scratch.drop(self.r)  # before saying so
            self.check(8, Status.SKIP, f"cancelled; {scratch.fate}", t)
            raise
        except OpsError as exc:
            outcome = Status.FAIL, f"Full restoration test failed: {exc.what}"
        finally:
            self._stop_digest_job()  # not needed any more (a failure or cancel before the proof)
            # Always dropped, and before the verdict is reported.
            scratch.drop(self.r)
        if scratch.left is not None:  # the artifact's verdict stands; the leftover copy is named
            outcome = (Status.WARN if outcome[0] == Status.PASS else outcome[0]), f"{outcome[1]}; {scratch.left}"
        self.check(8, outcome[0], outcome[1], t, {"scratch_db": name})

    def _prove(self, target: Target, scratch: str, pre: dict | None = None) -> tuple[ProofResult | None, str]:
        """The restore proof on the scratch database: digests and inventory against the artifact's;
        (None, why) when it cannot be made."""
        missing = self._job_digests()
        if missing is not None:
            return None, missing
        proof = self.result.proof
        if proof is None:
            error = self.probe.proof.error if self.probe is not None else None
            return None, f"the dump could not be digested ({error})"
        self.r.log("full_restore", f"Comparing {len(proof.tables)} tables and the object inventory with the artifact")
        # The scratch load runs without owners and grants for a custom archive (pg_restore
        # --no-owner --no-acl) and applies no database-level settings: named as not compared.
        result = prove_restored(target, scratch, proof, cancel=self.r.cancel, no_acl=proof.format == "custom",
                                database_settings=False, pre=pre)
        self.result.restored_proof = result
        for line in result.differences:
            self.r.log("full_restore", line, "ERROR")
        return result, ""


@dataclass
class _Scratch:
    """Check 8's test database: made, loaded (maybe in the checks' read), always dropped."""

    target: Target
    name: str
    conn: Any = None  # on the postgres database: creates and drops the scratch database
    problem: str | None = None  # why it could not be made (the server, not the artifact)
    error: OpsError | None = None  # the load in the checks' read failed
    early: EarlyDigests | None = None
    load_seconds: float = 0.0
    left: str | None = None  # why the scratch database is still there after drop()

    @property
    def fate(self) -> str:
        """What became of the test database, once dropped (or tried)."""
        return self.left or "the test database was dropped"

    def drop(self, r: Reporter) -> None:
        if self.conn is None:
            return
        from opstower_core.pg.admin import drop_database, drop_sql, first_line

        r.log("full_restore", "Cleaning up test database...")
        try:
            drop_database(self.conn, self.name, SCRATCH_DROP_WAIT)
        except Exception as exc:  # noqa: BLE001 - never silent: the verdict says it is still there
            self.left = (f"the test database {self.name} could not be dropped ({first_line(exc)}): "
                         f"drop it with {drop_sql(self.name)}")
            r.log("full_restore", self.left[0].upper() + self.left[1:], "WARN")
        finally:
            self.conn.close()
            self.conn = None


def _target_for(settings: Settings, database: str) -> Target:
    try:
        return settings.target(database)
    except OpsError:
        return settings.target()


def _query_restored(target: Target, dbname: str, r: Reporter) -> tuple[Status, str] | None:
    """A query on every table of the scratch database; a FAIL when it holds no tables, else None."""
    from opstower_core.pg.rowcounts import user_tables_sql

    with connect(target, dbname=dbname) as conn:
        tables = conn.execute(user_tables_sql()).fetchall()
        r.log("full_restore", f"Tables in restored database: {len(tables)}")
        if not tables:
            return Status.FAIL, "Restored database contains no tables"
        for schema, table in tables:
            conn.execute(f"SELECT * FROM {quote_ident(schema)}.{quote_ident(table)} LIMIT 1").fetchall()
    r.log("full_restore", "Basic query successful on every table")
    return None


def _compare_restored(target: Target, dbname: str, meta: dict[str, Any] | None, proved: ProofResult | None,
                      missing: str) -> tuple[Status, str]:
    """Row counts of the scratch database against the metadata (the tables the proof read are not
    scanned again), with the proof's sentence, or why it was not made."""
    from opstower_core.pg.rowcounts import count_rows

    with connect(target, dbname=dbname) as conn:
        counts = count_rows(conn, proved.counts if proved is not None else None)
    proof = f"; restore proof not made: {missing}" if proved is None else ""
    if not meta or not isinstance(meta.get("row_counts"), dict):
        if proved is not None:
            return proved.status, (f"Full restoration test completed: {proved.sentence}; no row counts in the "
                                   "metadata to compare; test database dropped")
        return Status.WARN, (f"Full restoration test completed: {len(counts)} tables restored and queried "
                             f"(no row counts in the metadata to compare){proof}")
    expected: dict[str, int] = meta["row_counts"]
    diffs = [f"{t}: {expected.get(t)} expected, {counts.get(t)} restored"
             for t in sorted(set(expected) | set(counts)) if expected.get(t) != counts.get(t)]
    if diffs:
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        return Status.FAIL, f"Restored data differs from the metadata: {'; '.join(diffs[:3])}{more}"
    if proved is not None:
        return proved.status, (f"Full restoration test completed: {proved.sentence}; row counts match the "
                               "metadata; test database dropped")
    return Status.WARN, (f"Full restoration test completed: {len(counts)} tables and {sum(counts.values()):,} rows "
                         f"match the metadata; test database dropped{proof}")


def verify(
    settings: Settings,
    artifact: str | os.PathLike[str] | CatalogEntry,
    full_test: bool = False,
    on_event: EventSink | None = None,
    cancel: CancelToken | None = None,
    state: StateStore | None = None,
    upto: int = 8,
    tee: Callable[[memoryview], object] | None = None,
    digest: bool = True,
) -> VerifyResult:
    """Run checks 1..upto on an artifact (a path, catalog name, S3 key, "latest" or entry).

    `tee`: also handed every decompressed chunk of the streaming pass (checks 4-6), in order,
    so a loader can consume the same read (the restore's verification in the load, issue 18).
    The chunk is a reused buffer: copy what is kept. Only a result without failed checks 4-6
    means the tee saw the whole dump, intact.

    `digest=False`: checks 1-7 without the per-table digests of a custom archive (its header and
    table of contents are still read for checks 5 and 6); `result.proof` is then not digested
    and cannot prove a restore. The checks' verdicts are the same either way."""
    entry = artifact if isinstance(artifact, CatalogEntry) else resolve(settings, os.fspath(artifact))
    reporter = Reporter(on_event, cancel)
    t0 = time.monotonic()
    started = time.time()
    verifier = _Verifier(settings, entry, reporter, full_test, upto, tee, digest)
    status = "cancelled"
    try:
        result = verifier.run()
        result.results = reporter.results
        status = result.status.value
        return result
    finally:
        verifier.result.results = reporter.results
        verifier.result.seconds = time.monotonic() - t0
        if state is None:
            with contextlib.suppress(Exception):
                state = StateStore(settings.state_dir)
        if status == "FAIL":
            from opstower_core.alerts import send_safely

            failed = "; ".join(f"{r.title}: {r.detail}" for r in verifier.result.failed)
            send_safely(settings, "verify", "failed", f"OpsTower Verification FAILED: {entry.filename}", failed,
                        entry.database, {"artifact": entry.filename})
        if state is not None:
            state.record("verify", entry.database, status, artifact=entry.filename, started_at=started,
                         duration_seconds=verifier.result.seconds, size_bytes=verifier.size or None,
                         error="; ".join(r.detail for r in verifier.result.failed) or None,
                         details={"full_test": full_test, "upto": upto,
                                  "checks": {r.step: r.status.value for r in reporter.results},
                                  # For the restore-time forecast: a full test is a measured load.
                                  "seconds": {r.step: round(r.seconds, 3) for r in reporter.results},
                                  "uncompressed_bytes": (entry.meta or {}).get("uncompressed_bytes")})
