"""Backups, as the reference backup-database.sh made them, faster and safer.

One streaming pipeline: pg_dump (custom format, no internal compression) → zstd with
content checksum (multi-threaded) → sha256 on the fly → temporary file (and, unless
--local-only, S3 multipart parts at the same time; with a replica on another endpoint or
account, its multipart parts too) → fsync → read back once (the read follows the writes,
from the file, on a thread of its own) → rename. The S3 upload is opened beside the dump,
roles and tablespaces (pg_dumpall) are taken beside it too.
Nothing half-written is ever listed: a failed or interrupted run removes its temporary
file and aborts the multipart upload; one killed outright has both removed by the next.

`BackupRun` owns one run: its settings, its S3 store (one client), its upload, its
temporary file and the steps in order (prerequisites, dump, read-back, metadata and
rename, latest link, upload, retention), then the history record and the alert.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import humanize

from opstower_core import __version__
from opstower_core.advice import say
from opstower_core.alerts import send_safely
from opstower_core.artifacts.crypto import encryption_settings, fingerprint
from opstower_core.artifacts.names import ArtifactName, fsync_dir, new_stamp, write_metadata
from opstower_core.backup.dump import GlobalsDump, StreamingDump, log_sizes
from opstower_core.backup.leaks import (
    UploadLedger,
    abort_stale_uploads,
    remove_stale_temp,
    warn_readable_config,
)
from opstower_core.backup.model import (
    BackupOptions,
    BackupResult,
    DumpResult,
    required_free_bytes,
)
from opstower_core.backup.readback import ReadBack, read_back
from opstower_core.config import DEFAULT_LOCK_WAIT, Settings
from opstower_core.errors import Cancelled, LockHeld, OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status
from opstower_core.pg.tools import PgTools, connect, select_tools, server_info
from opstower_core.repo.retention import apply_retention
from opstower_core.runs.history import StateStore
from opstower_core.runs.lock import RunLock
from opstower_core.runs.runlog import RunLog, tee
from opstower_core.runs.signals import signal_name
from opstower_core.storage.local import LocalStore
from opstower_core.storage.replica import (
    ReplicaCopy,
    ReplicaFeed,
    catch_up,
    copy_backup,
    replica_settings,
    replica_store,
    same_account,
)
from opstower_core.storage.s3 import S3Store, StreamingUpload, s3_error_text, store_for


def run_backup(
    settings: Settings,
    target_name: str | None = None,
    options: BackupOptions | None = None,
    on_event: EventSink | None = None,
    cancel: CancelToken | None = None,
    state: StateStore | None = None,
) -> BackupResult:
    """Take one backup of a target. Raises OpsError (nothing half-written left) on failure.

    An S3 failure after a good local artifact does not raise: the result carries
    `s3_error` and the caller reports it (exit non-zero) while the local backup stays.
    KeyboardInterrupt (Ctrl-C, and SIGTERM/SIGHUP under `runs.signals`) and a cancel
    leave nothing behind either and are recorded as cancelled.
    """
    return BackupRun(settings, target_name, options, on_event, cancel, state).execute()


class BackupRun:
    """One backup of one database, from the lock to the alert."""

    def __init__(self, settings: Settings, target_name: str | None, options: BackupOptions | None,
                 on_event: EventSink | None, cancel: CancelToken | None, state: StateStore | None) -> None:
        self.options = options or BackupOptions()
        if self.options.fmt not in ("custom", "plain"):
            raise OpsError(f"Unknown backup format {self.options.fmt!r}", "nothing was run",
                           say("backup_format"))
        self.settings = settings
        self.target = settings.target(target_name)
        self.database = self.target.dbname
        self.state = state or StateStore(settings.state_dir)
        self.kind = "pre_restore" if self.options.pre_restore else "backup"
        self.on_event = on_event
        self.cancel = cancel
        self.local = LocalStore(settings.backup_dir)
        self.enc = encryption_settings(settings)
        self.ledger = UploadLedger(settings.state_dir, self.database)
        self.replica_ledger = UploadLedger(settings.state_dir, self.database, "replica")
        self.lock_wait = (self.options.wait_for_locks or settings.wait_for_locks_seconds or DEFAULT_LOCK_WAIT)
        self.t0 = time.monotonic()
        self.started = time.time()
        # Set as the run goes.
        self.log: RunLog | None = None
        self.r = Reporter(on_event, cancel)
        self.tools: PgTools | None = None
        self.server_version = ""
        # pg_dump --statistics: the optimizer statistics travel with the dump (PostgreSQL 18 on both
        # sides), so a restore need not ANALYZE every table before the database is fast again.
        self.statistics = False
        self.server_major = 0
        self.database_size = 0
        self.database_size_pretty = ""
        self.s3: S3Store | None = None
        self.s3_problem: str | None = None  # why this run is local only although S3 is configured
        self.upload: StreamingUpload | None = None
        self.opening: _Opening | None = None  # the upload while the bucket is being reached
        self.s3_opened = False  # an upload was (being) opened: a failed run aborts it
        self.feed: ReplicaFeed | None = None  # the replica's copy, streamed alongside the dump
        self.name: ArtifactName | None = None
        self.tmp: Path | None = None  # the temporary artifact, until renamed
        self.readback: ReadBack | None = None  # its read-back, following the dump
        self.globals: GlobalsDump | None = None  # roles and tablespaces, taken beside the dump

    @property
    def wants_s3(self) -> bool:
        return self.settings.s3.enabled and not self.options.local_only and not self.options.pre_restore

    # -- the run -----------------------------------------------------------------------
    def execute(self) -> BackupResult:
        self.local.ensure()
        self.log = RunLog(self.settings.backup_dir, self.kind, new_stamp(),
                          self.settings.syslog)
        self.r = Reporter(tee(self.log, self.on_event), self.cancel)
        try:
            self.log.line("INFO", f"OpsTower Database Backup - Started (database {self.database}, directory "
                          f"{self.settings.backup_dir}, local only: "
                          f"{self.options.local_only or not self.settings.s3.enabled})")
            with RunLock(self.settings.state_dir, self.database,
                         "pre-restore backup" if self.options.pre_restore else "backup") as lock:
                if lock.took_over:
                    self.r.log("prerequisites", f"Took over a stale lock left by pid {lock.took_over.get('pid', '?')}",
                               "WARN")
                result = self._steps()
            self._succeeded(result)
            return result
        except BaseException as exc:
            failure = self._failed(exc)
            if failure is not exc:
                raise failure from None
            raise
        finally:
            self.log.close()

    def _steps(self) -> BackupResult:
        remove_stale_temp(self.local, self.database, self.r)
        warn_readable_config(self.settings, self.r)
        self.prerequisites()
        self.name = self._fresh_name()
        self.tmp = self.settings.backup_dir / f".{self.name.filename}.tmp"
        dumped = self.dump()
        assert self.readback is not None
        read_back(self.r, self.readback, dumped)
        meta = self.store_artifact(dumped)
        result = BackupResult(self.name, self.settings.backup_dir / self.name.filename, meta, self.log_path, 0.0)
        if not self.name.pre_restore:
            with self.r.step("latest", "Updating latest backup symlink") as out:
                link = self.local.update_latest(self.name)
                out.detail = f"Latest backup link updated: {link}"
        if self.upload is not None or self.s3_problem:
            self.finish_upload(meta, result)
        if self.wants_s3 and replica_settings(self.settings) is not None:
            self.replicate(meta, result)
        self.retention(result)
        return result

    @property
    def log_path(self) -> Path:
        assert self.log is not None
        return self.log.path

    # -- 1.1 prerequisites ---------------------------------------------------------------
    def prerequisites(self) -> None:
        with self.r.step("prerequisites", "Checking prerequisites") as out:
            with connect(self.target) as conn:
                info = server_info(conn)
                self.server_version = info.version
                self.database_size, self.database_size_pretty = conn.execute(
                    "SELECT pg_database_size(current_database()), pg_size_pretty(pg_database_size(current_database()))"
                ).fetchone()
            self.tools = select_tools(self.settings, info.major)
            self.statistics = self.options.fmt == "custom" and info.major >= 18 and self.tools.major >= 18
            self.server_major = info.major
            self.r.log("prerequisites", f"Server {info.version}; using pg_dump {self.tools.version} from {self.tools.bin_dir}")
            free = self._check_free_space()
            if not self.wants_s3 and not self.settings.s3.enabled and not self.options.local_only \
                    and not self.options.pre_restore:
                self.r.log("prerequisites", "S3 bucket not configured; local backup only", "WARN")
            out.detail = (
                f"Prerequisites check passed (pg_dump {self.tools.version}, database {self.database_size_pretty}, "
                f"{humanize.naturalsize(free, binary=True)} free)"
            )

    def _check_free_space(self) -> int:
        self.local.ensure()
        free = self.local.free_bytes()
        need = required_free_bytes(self.settings, self.database_size)
        if free < need:
            raise OpsError(
                f"Insufficient disk space in {self.settings.backup_dir}. Required: {humanize.naturalsize(need, binary=True)}, "
                f"Available: {humanize.naturalsize(free, binary=True)}",
                "no backup was started",
                "free space, point BACKUP_DIR at a larger disk, or lower min_free_gb in the config",
            )
        return free

    def _open_s3(self, stopped: Callable[[], bool]) -> StreamingUpload | None:
        """The run's one S3 store and its multipart upload (on the opening's thread, beside the dump);
        None, with the reason in s3_problem, when this is a local backup only: an unreachable bucket
        or one refusing the upload must not cost us a backup."""
        assert self.name is not None
        store = store_for(self.settings.s3)
        try:
            store.check_reachable()
        except OpsError as exc:
            self.s3_problem = exc.what
            self.r.log("dump", f"{exc.what}; taking a local backup only", "WARN")
            return None
        abort_stale_uploads(store, self.ledger, self.r, "dump")
        if stopped():
            return None  # the run failed or was interrupted meanwhile: no upload to abort later
        try:
            upload = store.start_stream(self.name.s3_key(self.settings.s3.prefix), {
                "database": self.database, "timestamp": self.name.timestamp, "format": self.options.fmt,
                "opstower-version": __version__,
            })
        except OpsError as exc:
            self.s3_problem = exc.what
            self.r.log("dump", f"{exc.what}; taking a local backup only", "WARN")
            return None
        self.s3 = store
        # Recorded until completed or aborted: a SIGKILL'ed run's upload is aborted by the next run.
        self.ledger.opened(upload.upload_id, upload.key)
        return upload

    def _fresh_name(self) -> ArtifactName:
        """A name no artifact has yet (two backups within one second wait for the next)."""
        while True:
            name = ArtifactName.new(self.database, self.options.fmt, encrypted=self.enc.enabled,
                                    pre_restore=self.options.pre_restore)
            if not (self.local.directory / name.filename).exists() and not (self.local.directory / name.meta_filename).exists():
                return name
            time.sleep(0.2)

    # -- 1.2 + 1.3 the dump --------------------------------------------------------------
    def dump(self) -> DumpResult:
        assert self.tools is not None and self.name is not None and self.tmp is not None
        fmt = self.options.fmt
        with self.r.step("dump", f"Dumping database {self.database} ({fmt} format, "
                         f"{'zstd' if fmt == 'custom' else 'gzip'})") as out:
            self.r.log("dump", f"Dumping database to: {self.settings.backup_dir / self.name.filename}")
            self.opening = _Opening(self._open_s3, self._drop_upload) if self.wants_s3 else None
            self.s3_opened = self.opening is not None
            self._start_feed()
            uploads = [u for u in (self.opening, self.feed) if u is not None]
            self.readback = ReadBack(self.tmp, self.name, self.enc, self.r.cancel)
            self.globals = GlobalsDump(self.tools, self.target)
            dumped = StreamingDump(self.target, self.tools, self.options, self.enc, self.r, self.lock_wait,
                                   self.readback, uploads, statistics=self.statistics,
                                   server_major=self.server_major).run(self.tmp)
            if self.opening is not None:
                self.upload = self.opening.wait()
                if self.upload is None and self.s3_problem is None:
                    self.s3_problem = self.opening.gave_up
            log_sizes(self.r, dumped)
            out.detail = (f"Database dump completed successfully: {len(dumped.row_counts)} tables, "
                          f"{humanize.naturalsize(dumped.size_bytes, binary=True)}")
        return dumped

    def _drop_upload(self, upload: StreamingUpload) -> None:
        """An upload opened after the run failed, or after the dump outran its opening: aborted."""
        upload.abort()
        self.ledger.closed(upload.upload_id)

    def _start_feed(self) -> None:
        """A streamed replica copy overlaps the dump like the primary's upload; a server-side copy
        (same endpoint and account) needs the primary's object, so it waits until that exists."""
        rep = replica_settings(self.settings)
        # The primary's bucket is still being reached: a replica on the same account is copied
        # server-side from the primary's object afterwards (or from the local file if there is none).
        if not self.wants_s3 or rep is None or same_account(self.settings.s3, rep):
            return
        assert self.name is not None
        # No network here: the feed opens its upload on a thread of its own, so an unreachable
        # or hung replica never holds the dump's start.
        self.feed = ReplicaFeed(self.settings, self.name, self.replica_ledger.opened, self.replica_ledger.closed)
        self.r.log("dump", f"Streaming the replica copy alongside: {self.feed.note.where}")

    def _abort_upload(self) -> None:
        opening, self.opening = self.opening, None
        if opening is not None:
            # An upload it opens from now on is aborted by its own thread; wait a little for that,
            # so an interrupted run does not exit with a request creating one still in flight.
            opening.cancel()
            opening.settle(OPENING_GRACE)
            self.upload = self.upload or opening.upload
        upload, self.upload = self.upload, None
        if upload is not None:
            upload.abort()
            self.ledger.closed(upload.upload_id)
        feed, self.feed = self.feed, None
        if feed is not None:
            feed.abort()  # bounded; an upload it could not abort stays in the ledger for the next run

    # -- 1.4 metadata, rename ------------------------------------------------------------
    def store_artifact(self, dumped: DumpResult) -> dict[str, Any]:
        """Globals, metadata, then the artifact under its real name (metadata first: a listed artifact has its sidecar)."""
        assert self.globals is not None and self.name is not None and self.tmp is not None
        globals_ok, globals_note = self.globals.write(self.settings.backup_dir, self.name)
        if not globals_ok:
            self.r.log("dump", f"Globals (roles, tablespaces) not dumped: {globals_note}", "WARN")
        meta = self.metadata(dumped, time.monotonic() - self.t0, globals_ok, globals_note)
        directory = self.settings.backup_dir
        with self.r.step("metadata", "Creating backup metadata") as out:
            write_metadata(directory / self.name.meta_filename, meta)
            os.replace(self.tmp, directory / self.name.filename)
            self.tmp = None
            fsync_dir(directory)
            out.detail = f"Metadata created: {directory / self.name.meta_filename}"
        return meta

    def metadata(self, dumped: DumpResult, seconds: float, globals_ok: bool, globals_note: str) -> dict[str, Any]:
        assert self.tools is not None and self.name is not None
        name = self.name
        return {
            # The reference's fields, same names and shapes.
            "timestamp": name.timestamp,
            "date": name.created.isoformat(),
            "database": self.database,
            "host": self.target.display_host if not self.target.display_host.startswith("/") else socket.gethostname(),
            "port": self.target.display_port,
            "backup_file": name.filename,
            "backup_size": str(dumped.size_bytes),
            "database_size": self.database_size_pretty,
            "table_count": len(dumped.row_counts),
            "compression": name.compression,
            "postgresql_version": self.server_version,
            "backup_script_version": __version__,
            "retention_days": self.settings.pre_restore_retention_days if name.pre_restore else self.settings.retention_days,
            # Ours.
            "format": name.format,
            "kind": name.kind,
            "sha256": dumped.sha256,
            "size_bytes": dumped.size_bytes,
            "uncompressed_bytes": dumped.uncompressed_bytes,
            "statistics": self.statistics,  # optimizer statistics in the archive (pg_dump --statistics)
            "database_size_bytes": int(self.database_size),
            "encryption": {"format": "age", "recipients": [fingerprint(r) for r in self.enc.recipients]}
            if name.encrypted else None,
            "pg_dump_version": self.tools.version,
            # pg_dump ran with PGTZ=UTC: timestamptz values in the dump are written in UTC.
            "dump_timezone": "UTC",
            "duration_seconds": round(seconds, 3),
            "row_counts": dumped.row_counts,
            # A partial dump (the table recovery's pre-change copy): only these tables are in it.
            "tables": self.options.tables,
            "globals_file": name.globals_filename if globals_ok else None,
            "globals_dumped": globals_ok,
            "globals_note": None if globals_ok else globals_note,
            "tool": "opstower",
            # False for --local-only and pre-restore copies: verification then expects no S3 copy.
            "s3_planned": self.wants_s3,
        }

    # -- 1.6 upload ----------------------------------------------------------------------
    def finish_upload(self, meta: dict[str, Any], result: BackupResult) -> None:
        """Complete the multipart upload, add the metadata object, verify with head_object."""
        assert self.name is not None
        r = self.r
        r.started("upload", "Uploading backup to S3")
        t0 = time.monotonic()
        upload, self.upload = self.upload, None
        if upload is None:
            result.s3_error = f"Failed to upload backup to S3 ({self.s3_problem})"
            r.finished("upload", Status.FAIL, f"{result.s3_error}; the local backup {self.name.filename} is good",
                       time.monotonic() - t0)
            return
        try:
            try:
                upload.complete()  # aborts the upload itself when it fails
            finally:
                self.ledger.closed(upload.upload_id)
            result.s3_key = self._check_upload(upload.key, meta)
            assert self.s3 is not None
            r.finished("upload", Status.PASS, f"S3 upload verified (s3://{self.s3.bucket}/{result.s3_key}, "
                       f"{self.settings.s3.storage_class})", time.monotonic() - t0, {"key": result.s3_key})
        except Exception as exc:  # noqa: BLE001 - e.g. tagging refused: reported, the local backup stands
            reason = exc.what if isinstance(exc, OpsError) else s3_error_text(exc)
            result.s3_error = f"Failed to upload backup to S3 ({reason})"
            r.finished("upload", Status.FAIL, f"{result.s3_error}; the local backup {self.name.filename} is good",
                       time.monotonic() - t0)

    def _check_upload(self, key: str, meta: dict[str, Any]) -> str:
        """Tags, the metadata object and the globals file beside the artifact; head_object proves it."""
        assert self.s3 is not None and self.name is not None
        s3, name, prefix = self.s3, self.name, self.settings.s3.prefix
        s3.set_tags(key, {"sha256": meta["sha256"], "database": meta["database"], "timestamp": name.timestamp})
        self.r.log("upload", f"Backup uploaded to S3: s3://{s3.bucket}/{key}")
        meta_key = name.s3_meta_key(prefix)
        s3.put_bytes(meta_key, (json.dumps(meta, indent=2) + "\n").encode())
        self.r.log("upload", f"Metadata uploaded to S3: s3://{s3.bucket}/{meta_key}")
        if name.globals_filename and meta.get("globals_dumped"):
            s3.upload_file(self.settings.backup_dir / name.globals_filename,
                           f"{prefix}database/{name.day}/{name.globals_filename}")
        head = s3.head(key)
        remote_sha = s3.remote_sha256(key, head)
        if head is None or int(head["ContentLength"]) != meta["size_bytes"] or remote_sha != meta["sha256"]:
            raise OpsError("S3 upload verification failed: the object's size or sha256 differs", "", "")
        return key

    # -- 1.6b the replica ([s3.replica]) ----------------------------------------------------
    def replicate(self, meta: dict[str, Any], result: BackupResult) -> None:
        """Copy this backup to the replica and check it; then catch up older backups it lacks.

        A failure keeps the backup good: it is reported (exit code, alert) and retried by the
        next run's catch-up or `opstower replicate`.
        """
        assert self.name is not None
        r = self.r
        r.started("replica", "Copying backup to the replica")
        t0 = time.monotonic()

        def log(line: str) -> None:
            r.log("replica", line)

        try:
            copy = self._replica_copy(meta, result, log)
        except OpsError as exc:
            result.replica_error = f"Failed to copy the backup to the replica ({exc.what})"
            r.finished("replica", Status.FAIL, f"{result.replica_error}; the local backup {self.name.filename} is "
                       f"good; {say('replicate_copies')}", time.monotonic() - t0)
            return
        abort_stale_uploads(replica_store(self.settings), self.replica_ledger, r, "replica")
        result.replica = copy.as_dict()
        detail = f"Replica copy verified ({copy.where}, {copy.how}; size and sha256 match)"
        status = Status.WARN if copy.lock_note else Status.PASS
        if copy.lock_note:
            detail += f"; {copy.lock_note}"
        try:
            behind = catch_up(self.settings, self.database, log, lambda: self.r.cancel.cancelled,
                              skip={self.name.filename})
            if behind.copied or behind.failed:
                detail += f"; catch-up: {behind.summary}"
            if behind.failed:
                status = Status.WARN
        except OpsError as exc:
            detail += f"; older backups not checked ({exc.what})"
            status = Status.WARN
        r.finished("replica", status, detail, time.monotonic() - t0, {"key": copy.key, "where": copy.where})

    def _replica_copy(self, meta: dict[str, Any], result: BackupResult, log: Callable[[str], None]) -> ReplicaCopy:
        """The overlapped copy finished, else a copy now (server-side, or streamed from the local file).

        A feed that failed after its upload had started (a part refused) is retried once from the
        local file; one that never reached the replica, or fell behind, is not: the replica is down
        or slow, and trying again now would only hold the run longer."""
        assert self.name is not None
        feed, self.feed = self.feed, None
        if feed is None:
            return copy_backup(self.settings, self.name, meta, result.s3_key, log)
        try:
            return feed.finish(meta, log)
        except OpsError as exc:
            if not feed.retryable:
                raise
            log(f"{exc.what}; copying it again from the local file")
            return copy_backup(self.settings, self.name, meta, result.s3_key, log)

    # -- 1.7 retention -------------------------------------------------------------------
    def retention(self, result: BackupResult) -> None:
        with self.r.step("retention", f"Cleaning up old backups (retention: {self.settings.retention_days} days)") as out:
            report = apply_retention(self.settings, self.database, dry_run=self.options.dry_run_retention,
                                     s3=self.s3 if result.s3_key is not None else None,
                                     replica=replica_store(self.settings) if result.replica is not None else None)
            result.deleted = report.deleted
            for line in report.lines:
                self.r.log("retention", line)
            out.detail = report.summary
            if report.s3_error:
                out.status = Status.WARN  # the backup is good; only old S3 copies stayed

    # -- the end: history, alert, log ----------------------------------------------------
    def _succeeded(self, result: BackupResult) -> None:
        assert self.log is not None
        result.seconds = time.monotonic() - self.t0
        name, meta = result.name, result.meta
        status = "success" if result.ok else "failed"
        size = humanize.naturalsize(meta["size_bytes"], binary=True)
        self.state.record(self.kind, self.database, status, artifact=name.filename, started_at=self.started,
                          size_bytes=meta["size_bytes"], duration_seconds=result.seconds,
                          error=result.s3_error or result.replica_error,
                          details={"local": True, "s3_key": result.s3_key,
                                   "s3_ok": result.s3_error is None and result.s3_key is not None,
                                   **({"replica_key": (result.replica or {}).get("key"),
                                       "replica_ok": result.replica is not None} if result.replica or
                                      result.replica_error else {}),
                                   "format": name.format, "sha256": meta["sha256"], "log": str(self.log.path)})
        send_safely(self.settings, "backup", status,
                    f"OpsTower Backup {'SUCCESS' if result.ok else 'FAILED'}: {self.database}",
                    f"{name.filename} ({size}, {result.seconds:.0f} s)"
                    + (f". {result.s3_error}; the local backup is good" if result.s3_error else "")
                    + (f". {result.replica_error}" if result.replica_error else ""),
                    self.database, {"artifact": name.filename, "s3_key": result.s3_key})
        self.log.line("INFO" if result.ok else "ERROR",
                      f"OpsTower Database Backup - {'Completed Successfully' if result.ok else 'Completed with errors'} "
                      f"(duration {result.seconds:.1f} s, file {result.path}, size {size})")

    def _failed(self, exc: BaseException) -> BaseException:
        """Clean up first (nothing half-written may stay), then say it: log, alert, history."""
        assert self.log is not None
        if self.globals is not None:
            self.globals.stop()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None
        try:
            self._abort_upload()
        except BaseException:  # noqa: BLE001 - the ledger lets the next run abort it
            pass
        failure: BaseException = exc
        if isinstance(exc, OSError):
            # The disk filling up or refusing a write mid-dump is the operator's problem to fix, not a traceback.
            failure = OpsError(f"Writing the backup in {self.settings.backup_dir} failed ({exc.strerror or exc})",
                               "no backup was written; the temporary file was removed",
                               "free space or fix the backup directory, then run the backup again")
        if isinstance(exc, KeyboardInterrupt):
            sentence = (f"Interrupted by {signal_name(exc)}; no backup was written, the temporary file was removed"
                        + (" and the S3 upload aborted" if self.s3 is not None or self.s3_opened else ""))
        else:
            sentence = getattr(failure, "sentence", None) or f"{type(exc).__name__}: {exc}"
        self.log.line("ERROR", sentence)
        cancelled = isinstance(exc, Cancelled | KeyboardInterrupt)
        if not cancelled:
            # A run refused by the lock of a hung run alerts like a failure: backups are not being taken.
            send_safely(self.settings, "backup", "failed", f"OpsTower Backup FAILED: {self.database}", sentence,
                        self.database, {"log": str(self.log.path)})
        self.state.record(self.kind, self.database,
                          "cancelled" if cancelled else "refused" if isinstance(exc, LockHeld) else "failed",
                          artifact=self.name.filename if self.name else None, started_at=self.started,
                          duration_seconds=time.monotonic() - self.t0, error=sentence,
                          details={"log": str(self.log.path)})
        return failure


# How long a failed or interrupted run waits for an upload being opened to be aborted (one
# request or two on a reachable bucket; an unreachable one has nothing to abort).
OPENING_GRACE = 5.0


class _Opening:
    """The primary's upload while its bucket is being reached, beside the dump.

    The dump does not wait for boto3's import, the bucket check and the multipart upload's
    creation (about a second of one core here); what it writes meanwhile is held, up to HOLD
    bytes, and handed to the upload in order once it exists. A bucket slower than that makes
    this a local backup only (the upload step says why); one that never answers is waited for
    at the end of the dump, as long as the client's timeouts, like before the dump before."""

    HOLD = 64 * 1024 * 1024

    def __init__(self, open_upload: Callable[[Callable[[], bool]], StreamingUpload | None],
                 drop: Callable[[StreamingUpload], None]) -> None:
        self._drop = drop
        self._lock = threading.Lock()
        self._held: list[bytes] = []
        self._size = 0
        self._done = False
        self._cancelled = False
        self.upload: StreamingUpload | None = None
        self.gave_up: str | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._open, args=(open_upload,), name="s3-open", daemon=True)
        self._thread.start()

    def _open(self, open_upload: Callable[[Callable[[], bool]], StreamingUpload | None]) -> None:
        try:
            upload = open_upload(lambda: self._cancelled)
        except BaseException as exc:  # noqa: BLE001 - raised where the run waits for it
            upload, self.error = None, exc
        with self._lock:
            self._done = True
            held, self._held = self._held, []
            if upload is not None and (self._cancelled or self.gave_up is not None):
                self._drop(upload)
                return
            if upload is not None:
                for data in held:
                    upload.write(data)
                self.upload = upload

    def write(self, data: bytes) -> None:
        """The dump's sink thread: to the upload, or held until it exists."""
        with self._lock:
            if self.upload is not None:
                self.upload.write(data)
            elif not self._done and self.gave_up is None:
                if self._size + len(data) > self.HOLD:
                    self.gave_up = (f"the bucket did not answer before the dump had written "
                                    f"{self.HOLD // 2**20} MiB")
                    self._held = []
                    return
                self._held.append(data)
                self._size += len(data)

    def wait(self) -> StreamingUpload | None:
        """The opened upload once the dump has ended (None: local only; the reason is the run's)."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        return self.upload

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True

    def settle(self, timeout: float) -> None:
        """Wait up to `timeout` s for the opening to end (after cancel: for its upload to be aborted)."""
        self._thread.join(timeout)
