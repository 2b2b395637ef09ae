"""The individual checks behind `opstower health`, and the verdict each one returns.

Each check reads what `health.check_health` has already gathered (catalog entries, run
records from the state file, the disk usage) and returns one `HealthCheck`; none of them
connects to the database or writes anything. Checks, per target database unless noted:

| check         | source                                        | WARNING                 | CRITICAL            |
|---------------|-----------------------------------------------|-------------------------|---------------------|
| backup_age    | newest non-pre_restore artifact (local + S3), | older than              | older than          |
|               | else the state file's last successful backup  | backup_age_warn_hours   | backup_age_crit_hours |
| success_rate  | state file, backup runs of the last 7 days    | under 95 %              | -                   |
| size_trend    | latest vs previous backup of the same format  | a change beyond ±30 %   | -                   |
| s3_upload     | S3 listing now + the last attempted upload    | unreachable / failed /  | -                   |
|               |                                               | latest has no S3 copy   |                     |
| replica       | replica listing now ([s3.replica] only)       | unreachable / newest    | -                   |
|               |                                               | backup not on it after  |                     |
|               |                                               | max_lag_minutes (60)    |                     |
| verification  | last verification run (state file)            | WARN                    | FAIL                |
| free_space    | backup directory (once, not per target)       | < 2x latest or < 10 %   | < latest backup     |
| future_dated  | catalog (only when one exists)                | name or metadata dated  | -                   |
|               |                                               | > 5 min ahead of now    |                     |
| pitr_archive  | [pitr] only, once: the WAL archive in S3      | no DONE base backup     | a gap in the WAL    |
|               | (pitr.pitr_status)                            | / archive unreadable    | after the oldest one |
| pitr_archiver | [pitr] only: the default target's             | archive lag > 5 min     | the archiver is     |
|               | pg_stat_archiver (the one database read)      |                         | failing (last try)  |
| pitr_replica  | [pitr] + [s3.replica] only: both PITR roots   | unreachable / objects   | -                   |
|               | listed (storage.replica.pitr_replica_lag)     | missing, the oldest     |                     |
|               |                                               | > max_lag_minutes old   |                     |

A backup dated in the future is left out of every other check: it must never pass for the
latest backup and turn a stale-backup CRITICAL into "OK 0s old".
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from opstower_core import fmt
from opstower_core.advice import say
from opstower_core.config import Settings
from opstower_core.repo.catalog import Catalog, CatalogEntry
from opstower_core.runs.history import RunRecord

WEEK = 7 * 24 * 3600
SUCCESS_RATE_WARN = 95.0
SIZE_CHANGE_WARN = 0.30
FREE_RATIO_WARN = 0.10


class HealthState(IntEnum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    def __str__(self) -> str:
        return self.name


@dataclass
class HealthCheck:
    """One check's verdict. `detail` reads after the subject: "opstower" + " latest backup is …"."""

    check: str
    subject: str  # database name, or the backup directory for free_space
    state: HealthState
    detail: str
    essential: bool = False  # UNKNOWN here makes the overall result UNKNOWN
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> bool:
        return self.state != HealthState.UNKNOWN or self.essential

    def line(self) -> str:
        return f"[{self.state.name}] {self.subject} {self.check}: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["state"] = self.state.name
        return d


def span(seconds: float) -> str:
    """5h12m, 12m, 45s, 3d4h: compact for a monitoring line."""
    s = int(max(seconds, 0))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{secs}s"


def entry_size(entry: CatalogEntry) -> int:
    """The artifact's size in bytes as its metadata records it, else as the store lists it."""
    if entry.meta and isinstance(entry.meta.get("size_bytes"), int):
        return int(entry.meta["size_bytes"])
    return int(entry.size)


def check_backup_age(settings: Settings, db: str, entries: list[CatalogEntry], runs: list[RunRecord] | None,
                     catalog: Catalog, now: float, state_problem: str | None) -> HealthCheck:
    """Age of the newest backup (else of the state file's last success); UNKNOWN, essential, if none."""
    warn, crit = settings.backup_age_warn_hours * 3600, settings.backup_age_crit_hours * 3600
    limits = f"warning > {span(warn)}, critical > {span(crit)}"
    if entries:
        newest = entries[0]
        taken, what = newest.created.timestamp(), f"{newest.filename}, {newest.where}"
    else:
        ok_runs = [r for r in runs or [] if r.status == "success"]
        if not ok_runs:
            why = [f"no backup in {settings.backup_dir}" + (" or S3" if catalog.s3_enabled else "")]
            if catalog.s3_error:
                why.append(catalog.s3_error)
            why.append(state_problem or "no successful backup in the state file")
            # An existing, readable backup directory with nothing in it is a missing backup: page.
            # No directory at all is more likely a wrong config: say UNKNOWN.
            looked = settings.backup_dir.is_dir() and not catalog.s3_error
            return HealthCheck("backup_age", db, HealthState.CRITICAL if looked else HealthState.UNKNOWN,
                               f"has no backup that can be found ({'; '.join(why)}): {say('backup_now')}",
                               essential=True)
        taken = ok_runs[0].started_at  # like an artifact name: when the backup started
        what = f"{ok_runs[0].artifact or 'artifact'} per the state file, not found in the stores"
    age = now - taken
    metrics = {"age_seconds": int(age), "warn_seconds": int(warn), "crit_seconds": int(crit), "taken_at": taken}
    if age > crit:
        state, limit = HealthState.CRITICAL, f"critical > {span(crit)}"
    elif age > warn:
        state, limit = HealthState.WARNING, f"warning > {span(warn)}"
    else:
        state, limit = HealthState.OK, limits
    return HealthCheck("backup_age", db, state, f"latest backup is {span(age)} old ({limit}; {what})",
                       essential=True, metrics=metrics)


def check_success_rate(db: str, runs: list[RunRecord] | None, now: float, state_problem: str | None) -> HealthCheck:
    """Share of the backup runs of the last 7 days that succeeded (cancelled and refused runs do not count)."""
    if runs is None:
        return HealthCheck("success_rate", db, HealthState.UNKNOWN, f"cannot read run history ({state_problem})")
    # Cancelled runs were stopped by an operator: neither a success nor a failure of the job.
    week = [r for r in runs if r.started_at >= now - WEEK and r.status not in ("cancelled", "refused")]
    if not week:
        return HealthCheck("success_rate", db, HealthState.UNKNOWN, "no backup runs recorded in the last 7 days")
    good = sum(1 for r in week if r.status == "success")
    rate = 100.0 * good / len(week)
    text = f"{good}/{len(week)} backups succeeded in 7 days ({rate:.1f}%)"
    failed = [r for r in week if r.status != "success"]
    if failed:
        last = failed[0]
        reason = (last.error or "no reason recorded").rstrip(".")
        text += f"; last failure {span(now - last.started_at)} ago: {reason}"
    state = HealthState.WARNING if rate < SUCCESS_RATE_WARN else HealthState.OK
    if state == HealthState.WARNING:
        text += f" (warning < {SUCCESS_RATE_WARN:g}%)"
    return HealthCheck("success_rate", db, state, text,
                       metrics={"success_rate": rate, "runs": len(week), "succeeded": good})


def check_size_trend(db: str, entries: list[CatalogEntry], runs: list[RunRecord] | None) -> HealthCheck:
    """Size of the latest backup against the previous one of the same format."""
    # (size, format, name) newest first: catalog first, the state file when the catalog has < 2.
    series = [(entry_size(e), e.name.format, e.filename) for e in entries]
    if len(series) < 2 and runs:
        series = [(r.size_bytes, str(r.details.get("format", "")), r.artifact or "?")
                  for r in runs if r.status == "success" and r.size_bytes]
    if not series:
        return HealthCheck("size_trend", db, HealthState.UNKNOWN, "no backup size known yet")
    latest, kind, name = series[0]
    previous = next((s for s in series[1:] if s[1] == kind), None)
    if previous is None:
        return HealthCheck("size_trend", db, HealthState.UNKNOWN,
                           f"latest backup is {fmt.size(latest)}; no previous {kind or ''} backup to compare".replace("  ", " "),
                           metrics={"size_bytes": latest})
    change = (latest - previous[0]) / previous[0] if previous[0] else 0.0
    text = f"latest backup is {fmt.size(latest)}, {change * 100:+.1f}% from the previous ({fmt.size(previous[0])})"
    state = HealthState.OK
    if abs(change) > SIZE_CHANGE_WARN:
        state = HealthState.WARNING
        text += (f" (warning beyond ±{SIZE_CHANGE_WARN * 100:.0f}%): check {name} for a bulk load or a mass delete"
                 if change > 0 else
                 f" (warning beyond ±{SIZE_CHANGE_WARN * 100:.0f}%): check for deleted data before retention removes "
                 "the older backups")
    return HealthCheck("size_trend", db, state, text,
                       metrics={"size_bytes": latest, "previous_bytes": previous[0], "change_percent": round(change * 100, 1)})


def check_s3_upload(settings: Settings, db: str, entries: list[CatalogEntry], runs: list[RunRecord] | None,
                    catalog: Catalog, now: float, listed: bool) -> HealthCheck:
    """S3 reachable now, the last attempted upload worked, and (if listed) the latest backup is in S3."""
    if not settings.s3.enabled:
        return HealthCheck("s3_upload", db, HealthState.OK, "S3 not configured: backups are local only")
    problems: list[str] = []
    if catalog.s3_error:
        problems.append(f"S3 not reachable now: {catalog.s3_error}")
    attempted = [r for r in runs or [] if "s3_ok" in r.details and (r.details["s3_ok"] or r.error)]
    last_ok: str | None = None
    if attempted:
        last = attempted[0]
        when = span(now - (last.finished_at or last.started_at))
        if last.details["s3_ok"]:
            last_ok = f"last upload OK {when} ago ({last.artifact})"
        else:
            problems.append(f"last upload failed {when} ago: {(last.error or 'no reason recorded').rstrip('.')}")
    if listed and entries and not catalog.s3_error and entries[0].s3_key is None:
        if (entries[0].meta or {}).get("s3_planned") is False and not problems:
            return HealthCheck("s3_upload", db, HealthState.WARNING,
                               f"latest backup {entries[0].filename} was taken {say('local_only_taken')}: no off-site copy; "
                               + say("backup_offsite"))
        problems.append(f"latest backup {entries[0].filename} has no S3 copy")
    if problems:
        return HealthCheck("s3_upload", db, HealthState.WARNING,
                           "; ".join(problems) + f"; fix S3 access ({say('doctor')}), then {say('backup_now')}")
    if last_ok is None:
        if entries and entries[0].s3_key:
            return HealthCheck("s3_upload", db, HealthState.OK, f"latest backup {entries[0].filename} is in S3")
        return HealthCheck("s3_upload", db, HealthState.UNKNOWN, "no S3 upload recorded yet")
    return HealthCheck("s3_upload", db, HealthState.OK, last_ok)


def check_replica(settings: Settings, db: str, entries: list[CatalogEntry], catalog: Catalog,
                  now: float) -> HealthCheck:
    """The replica reachable now, and the newest backup on it within max_lag_minutes of being taken."""
    rep = settings.s3.replica
    assert rep is not None
    if catalog.replica_error:
        return HealthCheck("replica", db, HealthState.WARNING,
                           f"replica not reachable: {catalog.replica_error}; fix access ({say('doctor')}), then "
                           + say("replicate"))
    offsite = [e for e in entries if (e.meta or {}).get("s3_planned") is not False]
    if not offsite:
        return HealthCheck("replica", db, HealthState.OK, f"replica s3://{rep.bucket}/{rep.prefix} reachable; "
                           "no off-site backup to hold yet")
    newest = offsite[0]
    if newest.replica_key:
        return HealthCheck("replica", db, HealthState.OK, f"latest backup {newest.filename} is on the replica",
                           metrics={"replica_lag_seconds": 0})
    lag = max(now - newest.created.timestamp(), 0.0)
    behind = next((e for e in offsite if e.replica_key), None)
    since = f"; newest on the replica: {behind.filename}" if behind else "; none of its backups is on the replica"
    if lag > rep.max_lag_minutes * 60:
        return HealthCheck("replica", db, HealthState.WARNING,
                           f"latest backup {newest.filename} not on the replica after {span(lag)} "
                           f"(limit {rep.max_lag_minutes}m){since}; {say('replicate')}",
                           metrics={"replica_lag_seconds": round(lag)})
    return HealthCheck("replica", db, HealthState.OK,
                       f"latest backup {newest.filename} not on the replica yet ({span(lag)} old, "
                       f"limit {rep.max_lag_minutes}m)", metrics={"replica_lag_seconds": round(lag)})


def check_verification(db: str, verifies: list[RunRecord] | None, now: float, state_problem: str | None) -> HealthCheck:
    """The last verification's result: FAIL is CRITICAL until one passes again."""
    if verifies is None:
        return HealthCheck("verification", db, HealthState.UNKNOWN, f"cannot read run history ({state_problem})")
    last = next((r for r in verifies if r.status in ("PASS", "WARN", "FAIL")), None)
    if last is None:
        return HealthCheck("verification", db, HealthState.UNKNOWN,
                           f"no backup was ever verified: {say('full_test')}")
    kind = "full test" if last.details.get("full_test") else f"checks 1-{last.details.get('upto', 7)}"
    text = f"last verification {last.status} {span(now - (last.finished_at or last.started_at))} ago ({last.artifact}, {kind})"
    metrics = {"verified_at": last.finished_at, "artifact": last.artifact, "result": last.status}
    if last.status == "FAIL":
        return HealthCheck("verification", db, HealthState.CRITICAL,
                           f"{text}: {(last.error or 'a check failed').rstrip('.')}; {say('full_test')} and fix "
                           "the cause", metrics=metrics)
    if last.status == "WARN":
        return HealthCheck("verification", db, HealthState.WARNING,
                           f"{text}: {say('verify_of', artifact=last.artifact)}", metrics=metrics)
    return HealthCheck("verification", db, HealthState.OK, text, metrics=metrics)


def check_future_dated(db: str, future: list[CatalogEntry], now: float) -> HealthCheck:
    """Backups whose name or metadata lies ahead of the clock: a wrong clock here or where they were made."""
    at = datetime.fromtimestamp(now, UTC)
    first = max(future, key=lambda e: e.future_seconds(at))
    ahead = first.future_seconds(at)
    names = first.filename + (f" and {len(future) - 1} more" if len(future) > 1 else "")
    return HealthCheck("future_dated", db, HealthState.WARNING,
                       f"has {len(future)} backup(s) dated in the future ({names}, up to {span(ahead)} ahead): they are "
                       "not counted as the latest backup; check the clock of the host that made them, then rename "
                       "or delete them", metrics={"future_dated": len(future), "max_ahead_seconds": int(ahead)})


def check_free_space(settings: Settings, latest_size: int) -> HealthCheck:
    """Free space in the backup directory against the size of the latest local backup."""
    d = settings.backup_dir
    try:
        usage = shutil.disk_usage(d)
    except OSError as exc:
        return HealthCheck("free_space", str(d), HealthState.UNKNOWN, f"cannot read the backup directory ({exc.strerror})")
    free, total = usage.free, usage.total
    pct = 100.0 * free / total if total else 0.0
    text = f"{fmt.size(free)} free ({pct:.0f}%)"
    metrics: dict[str, Any] = {"free_bytes": free, "total_bytes": total, "latest_bytes": latest_size}
    if latest_size:
        metrics.update(warn_bytes=2 * latest_size, crit_bytes=latest_size)
        text += f", latest backup {fmt.size(latest_size)}"
    if latest_size and free < latest_size:
        return HealthCheck("free_space", str(d), HealthState.CRITICAL,
                           f"{text}: the next backup will not fit; free space or move BACKUP_DIR", metrics=metrics)
    if latest_size and free < 2 * latest_size:
        return HealthCheck("free_space", str(d), HealthState.WARNING,
                           f"{text}: less than two backups of room (warning < 2x latest)", metrics=metrics)
    if pct < FREE_RATIO_WARN * 100:
        return HealthCheck("free_space", str(d), HealthState.WARNING,
                           f"{text}: under {FREE_RATIO_WARN * 100:.0f}% of the disk is free", metrics=metrics)
    return HealthCheck("free_space", str(d), HealthState.OK, text, metrics=metrics)


PITR_LAG_WARN = 300.0  # seconds a closed WAL segment may wait for the archiver


def check_pitr(settings: Settings, status: Any, error: str | None = None) -> list[HealthCheck]:
    """The WAL archive (gaps, base backups) and the live archiver (failing, lag) from a `pitr.PitrStatus`.

    A gap is CRITICAL: recovery stops at the first hole, so every moment after it is not
    recoverable, whatever the window says.
    """
    subject = f"pitr:{settings.pitr.server_name}"
    if status is None:
        return [HealthCheck("pitr_archive", subject, HealthState.WARNING, f"WAL archive unreadable ({error})")]
    metrics: dict[str, Any] = {"segments": status.segments, "gaps": len(status.gaps), "timelines": status.timelines}
    if status.gaps:
        holes = ", ".join(f"after {a} before {b}" for a, b in status.gaps[:3])
        latest = status.latest.isoformat(timespec="seconds") if status.latest else "?"
        archive = HealthCheck("pitr_archive", subject, HealthState.CRITICAL,
                              f"{len(status.gaps)} gap(s) in the WAL archive ({holes}): recovery stops at {latest}; "
                              f"take a base backup now ({say('base_backup')})", metrics=metrics)
    elif not any(b.status == "DONE" for b in status.backups):
        archive = HealthCheck("pitr_archive", subject, HealthState.WARNING,
                              f"no complete base backup: nothing is recoverable ({say('base_backup')})",
                              metrics=metrics)
    else:
        window = f"{status.earliest:%Y-%m-%d %H:%M} .. {status.latest:%Y-%m-%d %H:%M}" if status.latest else "?"
        archive = HealthCheck("pitr_archive", subject, HealthState.OK,
                              f"{status.segments} WAL segments, no gap, recoverable {window}", metrics=metrics)
    return [archive, _check_archiver(subject, status)]


def _check_archiver(subject: str, status: Any) -> HealthCheck:
    a = status.archiver
    if a is None:
        return HealthCheck("pitr_archiver", subject, HealthState.UNKNOWN,
                           f"pg_stat_archiver not read ({status.archiver_error or 'no server'})")
    lag = status.lag_seconds or 0.0
    metrics = {"lag_seconds": lag, "failed_count": a.get("failed_count"), "last_archived_wal": a.get("last_archived_wal")}
    if a.get("failing"):
        return HealthCheck("pitr_archiver", subject, HealthState.CRITICAL,
                           f"archive_command is failing: {a.get('last_failed_wal')} last failed at "
                           f"{a.get('last_failed_time')}, after the last success ({a.get('last_archived_wal')}); "
                           "see the server log", metrics=metrics)
    if lag > PITR_LAG_WARN:
        return HealthCheck("pitr_archiver", subject, HealthState.WARNING,
                           f"archive lag {span(lag)} (warning > {span(PITR_LAG_WARN)})", metrics=metrics)
    return HealthCheck("pitr_archiver", subject, HealthState.OK,
                       f"archiving: last {a.get('last_archived_wal')}, lag {span(lag)}", metrics=metrics)


def check_pitr_replica(settings: Settings, lag: Any, error: str | None = None) -> HealthCheck:
    """The replica's copy of the base backups and WAL (a `storage.replica.PitrLag`): wal-push never fails
    for a replica copy, so a segment missing there is only seen here (and caught up by `replicate`)."""
    rep = settings.s3.replica
    assert rep is not None
    subject = f"pitr:{settings.pitr.server_name}"
    if lag is None:
        return HealthCheck("pitr_replica", subject, HealthState.WARNING,
                           f"PITR replica not reachable: {error}; fix access ({say('doctor')}), then "
                           + say("replicate"))
    metrics = {"missing": lag.missing, "oldest_missing_age": round(lag.oldest_missing_age),
               "warn_seconds": rep.max_lag_minutes * 60}
    if not lag.missing:
        return HealthCheck("pitr_replica", subject, HealthState.OK,
                           "the replica holds every base backup and WAL object", metrics=metrics)
    what = (f"{lag.missing} PITR object(s) not on the replica, the oldest written {span(lag.oldest_missing_age)} "
            f"ago (limit {rep.max_lag_minutes}m; newest missing: {lag.newest_missing})")
    if lag.oldest_missing_age > rep.max_lag_minutes * 60:
        return HealthCheck("pitr_replica", subject, HealthState.WARNING, f"{what}; {say('replicate')}",
                           metrics=metrics)
    return HealthCheck("pitr_replica", subject, HealthState.OK, what, metrics=metrics)
