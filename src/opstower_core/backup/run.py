"""Backups, as the reference backup-database.sh made them, faster and safer.

One streaming pipeline: pg_dump (custom format, no internal compression) → zstd with
content checksum (multi-threaded) → sha256 on the fly → temporary file (and, unless
--local-only, S3 multipart parts at the same time) → fsync → read back once → rename.
Nothing half-written is ever listed: a failed run removes its temporary file and aborts
the multipart upload.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import humanize

from opstower_core.alerts import send_safely
from opstower_core.artifacts.names import ArtifactName, fsync_dir, parse_name, write_metadata
from opstower_core.backup.dump import (
    BackupJob,
    BackupOptions,
    BackupResult,
)
from opstower_core.config import Settings
from opstower_core.errors import Cancelled, LockHeld, OpsError
from opstower_core.events import CancelToken, EventSink, Reporter, Status
from opstower_core.repo.retention import apply_retention
from opstower_core.runs.history import StateStore
from opstower_core.runs.lock import RunLock
from opstower_core.runs.runlog import RunLog, tee
from opstower_core.storage.local import LocalStore
from opstower_core.storage.s3 import StreamingUpload, s3_error_text


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
    """
    options = options or BackupOptions()
    if options.fmt not in ("custom", "plain"):
        raise OpsError(f"Unknown backup format {options.fmt!r}", "nothing was run", "use --format custom or plain")
    target = settings.target(target_name)
    state = state or StateStore(settings.state_dir)
    t0 = time.monotonic()
    started = time.time()
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    LocalStore(settings.backup_dir).ensure()
    log = RunLog(settings.backup_dir, "pre_restore" if options.pre_restore else "backup", stamp, settings.syslog)
    reporter = Reporter(tee(log, on_event), cancel)
    job = BackupJob(settings, target, options, reporter)
    tmp: Path | None = None
    name: ArtifactName | None = None
    try:
        log.line("INFO", f"OpsTower Database Backup - Started (database {target.dbname}, directory "
                 f"{settings.backup_dir}, local only: {options.local_only or not settings.s3.enabled})")
        with RunLock(settings.state_dir, target.dbname, "pre-restore backup" if options.pre_restore else "backup") as lock:
            if lock.took_over:
                reporter.log("prerequisites", f"Took over a stale lock left by pid {lock.took_over.get('pid', '?')}", "WARN")
            _remove_stale_temp(job.local, target.dbname, reporter)
            job.prerequisites()
            name = _fresh_name(job.local, target.dbname, options, job.enc.enabled)
            tmp = settings.backup_dir / f".{name.filename}.tmp"
            dumped = job.dump(name, tmp)
            upload: StreamingUpload | None = dumped.pop("upload")
            try:
                job.read_back(tmp, name, dumped)
                globals_ok, globals_note = job.dump_globals(name)
                if not globals_ok:
                    reporter.log("dump", f"Globals (roles, tablespaces) not dumped: {globals_note}", "WARN")
                meta = job.metadata(name, dumped, time.monotonic() - t0, globals_ok, globals_note)
                final = settings.backup_dir / name.filename
                with reporter.step("metadata", "Creating backup metadata") as out:
                    # Metadata first, artifact last: a listed artifact always has its sidecar.
                    write_metadata(settings.backup_dir / name.meta_filename, meta)
                    os.replace(tmp, final)
                    tmp = None
                    fsync_dir(settings.backup_dir)
                    out.detail = f"Metadata created: {settings.backup_dir / name.meta_filename}"
            except BaseException:
                if upload is not None:
                    upload.abort()
                raise
            result = BackupResult(name, final, meta, log.path, 0.0)
            if not name.pre_restore:
                with reporter.step("latest", "Updating latest backup symlink") as out:
                    link = job.local.update_latest(name)
                    out.detail = f"Latest backup link updated: {link}"
            if upload is not None or job.s3_problem:
                _finish_upload(job, reporter, upload, name, meta, result)
            with reporter.step("retention", f"Cleaning up old backups (retention: {settings.retention_days} days)") as out:
                report = apply_retention(settings, target.dbname, dry_run=options.dry_run_retention,
                                         s3=job.s3 if (upload is not None and result.s3_error is None) else None)
                result.deleted = report.deleted
                for line in report.lines:
                    reporter.log("retention", line)
                out.detail = report.summary
                if report.s3_error:
                    out.status = Status.WARN  # the backup is good; only old S3 copies stayed
        result.seconds = time.monotonic() - t0
        status = "success" if result.ok else "failed"
        state.record("pre_restore" if options.pre_restore else "backup", target.dbname, status,
                     artifact=name.filename, started_at=started, size_bytes=meta["size_bytes"],
                     duration_seconds=result.seconds, error=result.s3_error,
                     details={"local": True, "s3_key": result.s3_key, "s3_ok": result.s3_error is None and result.s3_key is not None,
                              "format": name.format, "sha256": meta["sha256"], "log": str(log.path)})
        send_safely(settings, "backup", status, f"OpsTower Backup {'SUCCESS' if result.ok else 'FAILED'}: {target.dbname}",
                    f"{name.filename} ({humanize.naturalsize(meta['size_bytes'], binary=True)}, {result.seconds:.0f} s)"
                    + (f". {result.s3_error}; the local backup is good" if result.s3_error else ""),
                    target.dbname, {"artifact": name.filename, "s3_key": result.s3_key})
        log.line("INFO" if result.ok else "ERROR",
                 f"OpsTower Database Backup - {'Completed Successfully' if result.ok else 'Completed with errors'} "
                 f"(duration {result.seconds:.1f} s, file {final}, size {humanize.naturalsize(meta['size_bytes'], binary=True)})")
        return result
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        failure: BaseException = exc
        if isinstance(exc, OSError):
            # The disk filling up or refusing a write mid-dump is the operator's problem to fix, not a traceback.
            failure = OpsError(f"Writing the backup in {settings.backup_dir} failed ({exc.strerror or exc})",
                               "no backup was written; the temporary file was removed",
                               "free space or fix the backup directory, then run the backup again")
        sentence = getattr(failure, "sentence", None) or f"{type(exc).__name__}: {exc}"
        log.line("ERROR", sentence)
        if not isinstance(exc, Cancelled | KeyboardInterrupt | LockHeld):
            send_safely(settings, "backup", "failed", f"OpsTower Backup FAILED: {target.dbname}", sentence,
                        target.dbname, {"log": str(log.path)})
        state.record("pre_restore" if options.pre_restore else "backup", target.dbname,
                     "cancelled" if isinstance(exc, Cancelled | KeyboardInterrupt)
                     else "refused" if isinstance(exc, LockHeld) else "failed",
                     artifact=name.filename if name else None, started_at=started,
                     duration_seconds=time.monotonic() - t0, error=sentence, details={"log": str(log.path)})
        if failure is not exc:
            raise failure from None
        raise
    finally:
        log.close()


def _remove_stale_temp(local: LocalStore, database: str, r: Reporter) -> None:
    """Delete temp artifacts of `database` left by a killed run (SIGKILL, power loss).

    We hold the database's lock, so no live run is writing them; they are never listed,
    but would otherwise fill the disk one failed run at a time.
    """
    for path in local.directory.glob(".*.tmp"):
        name = parse_name(path.name[1:-len(".tmp")])
        if name is not None and name.database == database:
            path.unlink(missing_ok=True)
            r.log("prerequisites", f"Removed {path.name}, left by an interrupted run", "WARN")


def _fresh_name(local: LocalStore, database: str, options: BackupOptions, encrypted: bool) -> ArtifactName:
    """A name no artifact has yet (two backups within one second wait for the next)."""
    while True:
        name = ArtifactName.new(database, options.fmt, encrypted=encrypted, pre_restore=options.pre_restore)
        if not (local.directory / name.filename).exists() and not (local.directory / name.meta_filename).exists():
            return name
        time.sleep(0.2)


def _finish_upload(job: BackupJob, r: Reporter, upload: StreamingUpload | None, name: ArtifactName,
                   meta: dict[str, Any], result: BackupResult) -> None:
    """Complete the multipart upload, add the metadata object, verify with head_object."""
    settings = job.settings
    r.started("upload", "Uploading backup to S3")
    t0 = time.monotonic()
    if upload is None:
        result.s3_error = f"Failed to upload backup to S3 ({job.s3_problem})"
        r.finished("upload", Status.FAIL, f"{result.s3_error}; the local backup {name.filename} is good",
                   time.monotonic() - t0)
        return
    assert job.s3 is not None
    key = name.s3_key(settings.s3.prefix)
    try:
        upload.complete()
        job.s3.set_tags(key, {"sha256": meta["sha256"], "database": meta["database"], "timestamp": name.timestamp})
        r.log("upload", f"Backup uploaded to S3: s3://{job.s3.bucket}/{key}")
        meta_key = name.s3_meta_key(settings.s3.prefix)
        job.s3.put_bytes(meta_key, (json.dumps(meta, indent=2) + "\n").encode())
        r.log("upload", f"Metadata uploaded to S3: s3://{job.s3.bucket}/{meta_key}")
        if name.globals_filename and meta.get("globals_dumped"):
            job.s3.upload_file(settings.backup_dir / name.globals_filename,
                               f"{settings.s3.prefix}database/{name.day}/{name.globals_filename}")
        head = job.s3.head(key)
        remote_sha = job.s3.remote_sha256(key, head)
        if head is None or int(head["ContentLength"]) != meta["size_bytes"] or remote_sha != meta["sha256"]:
            raise OpsError("S3 upload verification failed: the object's size or sha256 differs", "", "")
        result.s3_key = key
        r.finished("upload", Status.PASS, f"S3 upload verified (s3://{job.s3.bucket}/{key}, "
                   f"{settings.s3.storage_class})", time.monotonic() - t0, {"key": key})
    except Exception as exc:  # noqa: BLE001 - e.g. tagging refused: reported, the local backup stands
        reason = exc.what if isinstance(exc, OpsError) else s3_error_text(exc)
        result.s3_error = f"Failed to upload backup to S3 ({reason})"
        r.finished("upload", Status.FAIL, f"{result.s3_error}; the local backup {name.filename} is good",
                   time.monotonic() - t0)
