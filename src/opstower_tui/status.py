"""What the dashboard shows, gathered from the engine in one call (run in a worker thread).

No Textual here: `gather` only reads the catalog, the state file and S3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPARK_POINTS = 30
RECENT_RUNS = 12


@dataclass
class DatabaseStatus:
    name: str
    dbname: str
    rpo_minutes: int
    rto_minutes: int
    latest: Any | None = None  # newest CatalogEntry (not pre-restore)
    backups: int = 0
    sizes: list[tuple[str, int]] = field(default_factory=list)  # (timestamp, bytes), oldest first
    last_verify: Any | None = None  # RunRecord
    last_drill: Any | None = None
    last_backup_run: Any | None = None
    forecast: Any | None = None  # forecast.RestoreForecast: .sentence() "restore would take ~N min of the …RTO"


@dataclass
class Snapshot:
    databases: list[DatabaseStatus]
    s3_enabled: bool
    s3_where: str
    s3_status: str  # OK, FAIL, "-" (not configured) or "…" (not checked yet)
    s3_detail: str
    total_backups: int
    catalog: list[Any] = field(default_factory=list)
    recent: list[Any] = field(default_factory=list)  # newest RunRecords of any kind
    interrupted: str | None = None  # a killed restore's journal is left: what it may have left behind
    pitr: Any | None = None  # pitr.PitrStatus when [pitr] is configured and S3 was asked
    pitr_error: str | None = None


def gather(settings: Any, check_s3: bool = True) -> Snapshot:
    """Newest backups, last verification and drill per target, and whether S3 answers."""
    from opstower_core.forecast import forecast_target
    from opstower_core.repo.catalog import list_catalog
    from opstower_core.runs.history import StateStore

    state = StateStore(settings.state_dir)
    catalog = list_catalog(settings, include_s3=check_s3, state=state)
    s3_status, s3_detail = "-", "not configured (local backups only)"
    s3_where = ""
    if settings.s3.enabled:
        s3_where = f"s3://{settings.s3.bucket}/{settings.s3.prefix}"
        s3_status, s3_detail = "…", "checking"
        if check_s3:
            # The listing is the reachability test: it needs the same credentials and endpoint.
            if catalog.s3_error:
                s3_status, s3_detail = "FAIL", catalog.s3_error
            else:
                in_s3 = sum(1 for e in catalog.entries if e.s3_key)
                s3_status, s3_detail = "OK", f"reachable, {in_s3}/{len(catalog.entries)} backups in S3"

    databases = []
    for target in settings.targets.values():
        entries = [e for e in catalog.entries if e.database == target.dbname and not e.name.pre_restore]
        status = DatabaseStatus(target.name, target.dbname, target.rpo_minutes, target.rto_minutes,
                                latest=catalog.latest(target.dbname), backups=len(entries))  # never a future-dated one
        status.sizes = [(e.name.timestamp, e.size) for e in reversed(entries[:SPARK_POINTS])]
        status.last_verify = state.last("verify", target.dbname)
        status.last_drill = state.last("drill", target.dbname)
        status.last_backup_run = state.last("backup", target.dbname)
        status.forecast = forecast_target(settings, target.name, state=state, entries=entries)
        databases.append(status)
    snap = Snapshot(databases, settings.s3.enabled, s3_where, s3_status, s3_detail, len(catalog.entries),
                    catalog.entries, state.runs(limit=RECENT_RUNS), interrupted_restore(settings.state_dir))
    if check_s3 and "pitr" in settings.raw:
        snap.pitr, snap.pitr_error = point_in_time(settings)
    return snap


def point_in_time(settings: Any) -> tuple[Any | None, str | None]:
    """The recoverable window (base backups + archived WAL), or why it could not be read."""
    from opstower_core.errors import OpsError
    from opstower_core.pitr import pitr_status

    try:
        return pitr_status(settings), None
    except OpsError as exc:
        return None, exc.sentence


def interrupted_restore(state_dir: Path) -> str | None:
    """The restore journal's warning, read only when a journal is there (the common case: one stat)."""
    journals = state_dir / "restore_journal"
    if not journals.is_dir() or not any(journals.iterdir()):
        return None
    from opstower_core.restore import interrupted_notice

    return interrupted_notice(state_dir)

