"""Base backups: barman-cloud-backup of the server's data directory into the bucket, and their list."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opstower_core.advice import say
from opstower_core.config import Settings, Target
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import CancelToken, Event, Status, StepFinished, StepLog, StepStarted
from opstower_core.pitr.barman import cloud_options, destination_url, last_error, run_client, upload_options


@dataclass(frozen=True)
class BaseBackup:
    backup_id: str
    begin_time: datetime | None
    end_time: datetime | None
    begin_wal: str
    end_wal: str
    begin_lsn: str
    end_lsn: str
    timeline: int
    size: int
    status: str
    name: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BaseBackup:
        def when(key: str) -> datetime | None:
            v = d.get(key)
            return datetime.strptime(v, "%a %b %d %H:%M:%S %Y").astimezone() if isinstance(v, str) and v else None

        # barman's JSON times are ctime strings in local time; begin_time_iso when present is exact.
        def iso(key: str) -> datetime | None:
            v = d.get(f"{key}_iso")
            return datetime.fromisoformat(v) if v else when(key)

        return cls(d["backup_id"], iso("begin_time"), iso("end_time"), d.get("begin_wal") or "", d.get("end_wal") or "",
                   d.get("begin_xlog") or "", d.get("end_xlog") or "", int(d.get("timeline") or 1),
                   int(d.get("size") or 0), d.get("status") or "", d.get("backup_name") or "")

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["begin_time"] = self.begin_time.isoformat() if self.begin_time else None
        out["end_time"] = self.end_time.isoformat() if self.end_time else None
        return out


def list_base_backups(settings: Settings) -> list[BaseBackup]:
    """Every base backup in the archive, oldest first (barman-cloud-backup-list --format json)."""
    proc = run_client(settings, "cloud_backup_list",
                      [*cloud_options(settings), "--format", "json", destination_url(settings), settings.pitr.server_name],
                      timeout=300)
    if proc.returncode != 0:
        raise OpsError(f"Listing base backups failed ({last_error(proc)})", "nothing was changed",
                       f"check the bucket, endpoint and credentials ({say('doctor_aside')})")
    data = json.loads(proc.stdout or "{}")
    return oldest_first([BaseBackup.from_json(b) for b in data.get("backups_list", [])])


def _sized(settings: Settings, backup: BaseBackup) -> BaseBackup:
    """The backup with its size as stored: barman-cloud's listing leaves it 0 for cloud backups, so the
    bucket is asked (a report's number only: the backup is listed DONE either way)."""
    if backup.size:
        return backup
    try:
        return dataclasses.replace(backup, size=base_backup_bytes(settings, backup.backup_id))
    except Exception:  # noqa: BLE001 - left as listed
        return backup


def base_backup_bytes(settings: Settings, backup_id: str) -> int:
    """A base backup's bytes in the bucket (barman-cloud's backup.info leaves its size empty for cloud backups)."""
    from opstower_core.pitr.barman import key_root
    from opstower_core.storage.s3 import store_for

    return sum(o.size for o in store_for(settings.s3).iter_objects(f"{key_root(settings)}base/{backup_id}/"))


def oldest_first(backups: list[BaseBackup]) -> list[BaseBackup]:
    """By end time; one without (failed, or still running) first. The stand-in must be aware and valid in
    any zone: datetime.min.astimezone() raises on a UTC host (year 0)."""
    return sorted(backups, key=lambda b: (b.end_time or datetime.min.replace(tzinfo=UTC), b.backup_id))


def take_base_backup(settings: Settings, target: Target, on_event: Callable[[Event], None] = lambda e: None,
                     name: str | None = None, jobs: int = 2, cancel: CancelToken | None = None) -> BaseBackup:
    """Take a base backup with barman-cloud-backup; returns it as listed afterwards (the proof it is whole).

    The run is recorded in the run history (kind "base-backup"), so the console's recent
    runs and `opstower history`-style readers see cron's base backups like the dumps.
    """
    if settings.pitr.read_only:
        raise OpsError(f"{destination_url(settings)}/{settings.pitr.server_name} is another system's archive "
                       "([pitr] read_only)", "nothing was changed",
                       "take base backups with the system that owns it (e.g. a CloudNativePG Backup)")
    on_event(StepStarted("base_backup", f"Base backup of {target.display_host} to {destination_url(settings)}"))
    started_at, started = time.time(), time.monotonic()
    try:
        backup = _take(settings, target, on_event, name, jobs, cancel, started)
    except OpsError as exc:
        _record(settings, target, "cancelled" if isinstance(exc, Cancelled) else "failed", started_at,
                time.monotonic() - started, error=exc.sentence)
        raise
    _record(settings, target, "success", started_at, time.monotonic() - started, backup=backup)
    return backup


def _take(settings: Settings, target: Target, on_event: Callable[[Event], None], name: str | None, jobs: int,
          cancel: CancelToken | None, started: float) -> BaseBackup:
    before = {b.backup_id for b in list_base_backups(settings)}
    conn = ["-h", target.host or "", "-p", str(target.port or 5432), "-U", target.user or "postgres", "-d", "postgres"]
    conn = [a for a in conn if a]
    args = [*cloud_options(settings), *upload_options(settings), *conn, "--immediate-checkpoint", "-J", str(jobs),
            "-v", *(["-n", name] if name else []), destination_url(settings), settings.pitr.server_name]
    proc = run_client(settings, "cloud_backup", args, on_line=lambda line: on_event(StepLog("base_backup", line)),
                      cancel=cancel)
    seconds = time.monotonic() - started
    if cancel is not None and cancel.cancelled:
        on_event(StepFinished("base_backup", Status.SKIP, "cancelled", seconds))
        raise Cancelled("the unfinished base backup is marked FAILED in the bucket and is never used for recovery")
    if proc.returncode != 0:
        on_event(StepFinished("base_backup", Status.FAIL, last_error(proc), seconds))
        raise OpsError(f"The base backup failed ({last_error(proc)})",
                       "nothing new is listed (barman-cloud lists a backup only when it is complete)",
                       say("base_backup_again"))
    new = [b for b in list_base_backups(settings) if b.backup_id not in before]
    if not new or new[-1].status != "DONE":
        on_event(StepFinished("base_backup", Status.FAIL, "not listed as DONE after the run", seconds))
        raise OpsError("The base backup ran but is not listed as DONE", "it cannot be used for recovery",
                       say("pitr_status_retake"))
    backup = _sized(settings, new[-1])
    on_event(StepFinished("base_backup", Status.PASS, f"{backup.backup_id} ({backup.size:,} bytes, WAL "
                          f"{backup.begin_wal}..{backup.end_wal}) in {seconds:.1f}s", seconds, backup.as_dict()))
    return backup


def _record(settings: Settings, target: Target, status: str, started_at: float, seconds: float,
            backup: BaseBackup | None = None, error: str | None = None) -> None:
    from opstower_core.runs.history import StateStore

    try:
        StateStore(settings.state_dir).record(
            "base-backup", target.dbname, status, artifact=backup.backup_id if backup else None, started_at=started_at,
            duration_seconds=seconds, size_bytes=backup.size if backup else None, error=error,
            details={"server_name": settings.pitr.server_name, "destination": destination_url(settings),
                     **({"begin_wal": backup.begin_wal, "end_wal": backup.end_wal} if backup else {})})
    except Exception:  # noqa: BLE001 - the history is bookkeeping: a read-only state dir must not fail the backup
        pass
