"""Backup health for monitoring systems (report sections 6.3 and 7.2).

`opstower health` answers one question for Nagios, Icinga, Zabbix or a cron mail: are the
backups good right now? It reads only the backup directory, the S3 listing and the state
file, never the database, so it keeps answering while the database is down (which is when
the answer matters most).

The checks themselves, with the table of what each reads and when it warns, are in
`health_checks`; this module runs them over every target and folds them into one verdict.

A failed verification is CRITICAL on purpose: the newest checked backup could not be
restored, so the recovery point is not what the dashboard says; it stays CRITICAL until a
verification passes again. Exit codes follow the Nagios convention: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN. A check without data (never verified, no runs in 7 days) says
UNKNOWN on its own line but only the backup age can make the whole result UNKNOWN: if no
backup can be found anywhere, nothing else the checks say can be trusted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from opstower_core.config import Settings
from opstower_core.health.checks import (
    PITR_LAG_WARN,
    SUCCESS_RATE_WARN,
    WEEK,
    HealthCheck,
    HealthState,
    check_backup_age,
    check_free_space,
    check_future_dated,
    check_pitr,
    check_pitr_replica,
    check_replica,
    check_s3_upload,
    check_size_trend,
    check_success_rate,
    check_verification,
    entry_size,
    span,
)
from opstower_core.health.forecast import check_restore_forecast
from opstower_core.repo.catalog import list_catalog
from opstower_core.runs.history import StateStore

LAST_KEY = "health.last"

# Worst-of order: a CRITICAL outranks not knowing, not knowing outranks a WARNING.
_RANK = {HealthState.OK: 0, HealthState.WARNING: 1, HealthState.UNKNOWN: 2, HealthState.CRITICAL: 3}


@dataclass
class HealthReport:
    state: HealthState
    summary: str  # the first output line, without perfdata
    checks: list[HealthCheck]
    checked_at: float
    previous: str | None = None  # overall state of the previous `opstower health` run
    changed: bool = False
    notifications: list[dict[str, Any]] = field(default_factory=list)
    notify_error: str | None = None

    @property
    def exit_code(self) -> int:
        return int(self.state)

    def perfdata(self) -> str:
        """Nagios performance data: label=value[UOM];warn;crit."""
        parts = []
        for c in self.checks:
            m = c.metrics
            label = c.subject if c.check != "free_space" else "backup_dir"
            if "age_seconds" in m:
                parts.append(f"'{label}_backup_age'=%ds;%d;%d" % (m["age_seconds"], m["warn_seconds"], m["crit_seconds"]))
            if "success_rate" in m:
                parts.append(f"'{label}_success_rate'={m['success_rate']:.1f}%;{SUCCESS_RATE_WARN:g};;0;100")
            if "size_bytes" in m and c.check == "size_trend":
                parts.append(f"'{label}_backup_size'={m['size_bytes']}B")
            if c.check == "pitr_archiver" and "lag_seconds" in m:
                parts.append(f"'{label}_archive_lag'=%ds;%d;" % (m["lag_seconds"], PITR_LAG_WARN))
            if c.check == "pitr_replica" and "missing" in m:
                parts.append(f"'{label}_replica_missing'={m['missing']}")
                parts.append(f"'{label}_replica_oldest_missing_age'=%ds;%d;" % (m["oldest_missing_age"],
                                                                                 m["warn_seconds"]))
            if "free_bytes" in m:  # "N:" = alert below N, in Nagios range syntax
                warn_crit = f";{m['warn_bytes']}:;{m['crit_bytes']}:" if "warn_bytes" in m else ""
                parts.append(f"'{label}_free'={m['free_bytes']}B{warn_crit}")
        return " ".join(parts)

    def lines(self) -> list[str]:
        """Summary line (with perfdata), then one line per check."""
        perf = self.perfdata()
        return [self.summary + (f" | {perf}" if perf else "")] + [c.line() for c in self.checks]

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.name, "exit_code": self.exit_code, "summary": self.summary,
            "checked_at": self.checked_at, "previous_state": self.previous, "changed": self.changed,
            "checks": [c.as_dict() for c in self.checks], "notifications": self.notifications,
            "notify_error": self.notify_error,
        }


def open_state(settings: Settings) -> tuple[StateStore | None, str | None]:
    """The state file, or (None, why not): health must answer even without one."""
    try:
        return StateStore(settings.state_dir), None
    except Exception as exc:  # noqa: BLE001 - unreadable/unwritable state is a finding, not a crash
        return None, f"state file in {settings.state_dir} unusable: {getattr(exc, 'strerror', None) or exc}"


def check_health(settings: Settings, target_name: str | None = None, *, state: StateStore | None = None,
                 now: float | None = None, include_s3: bool = True) -> HealthReport:
    """Evaluate every check; reads files and S3 (and, with [pitr], pg_stat_archiver), records nothing."""
    now = time.time() if now is None else now
    problem = None
    if state is None:
        state, problem = open_state(settings)
    targets = [settings.target(target_name)] if target_name else list(settings.targets.values())
    catalog = list_catalog(settings, include_s3=include_s3)
    at = datetime.fromtimestamp(now, UTC)
    checks: list[HealthCheck] = []
    latest_size = 0
    for target in targets:
        db = target.dbname
        entries = [e for e in catalog.entries if e.database == db and not e.name.pre_restore]
        # Dated in the future: flagged on its own, left out of the others (never "latest").
        future = [e for e in entries if e.is_future(at)]
        entries = [e for e in entries if e not in future]
        runs = state.runs("backup", db, limit=500) if state else None
        week = state.runs("backup", db, since=now - WEEK, limit=100000) if state else None
        verifies = state.runs("verify", db, limit=50) if state else None
        checks.append(check_backup_age(settings, db, entries, runs, catalog, now, problem))
        checks.append(check_success_rate(db, week, now, problem))
        checks.append(check_size_trend(db, entries, runs))
        checks.append(check_s3_upload(settings, db, entries, runs, catalog, now, include_s3))
        if include_s3 and catalog.replica_enabled:
            checks.append(check_replica(settings, db, entries, catalog, now))
        checks.append(check_verification(db, verifies, now, problem))
        checks.append(check_restore_forecast(settings, target.name, entries, state, now, problem))
        if future:
            checks.append(check_future_dated(db, future, now))
        local = [e for e in entries if e.local_path is not None]
        if local:
            latest_size = max(latest_size, entry_size(local[0]))
    checks.append(check_free_space(settings, latest_size))
    if settings.pitr.enabled and include_s3:
        checks.extend(_pitr_checks(settings))
        checks.extend(_pitr_replica_check(settings, now))
    counted = [c for c in checks if c.counts]
    overall = max((c.state for c in counted), key=_RANK.__getitem__, default=HealthState.UNKNOWN)
    return HealthReport(overall, _summary(overall, checks), checks, now)


def _pitr_checks(settings: Settings) -> list[HealthCheck]:
    """The archive and the archiver; the only database read health does (pg_stat_archiver, if reachable)."""
    from opstower_core.pitr import pitr_status

    try:
        target = settings.target() if settings.targets else None
        return check_pitr(settings, pitr_status(settings, target))
    except Exception as exc:  # noqa: BLE001 - an unreadable archive is a finding, not a crash
        return check_pitr(settings, None, getattr(exc, "sentence", None) or f"{type(exc).__name__}: {exc}")


def _pitr_replica_check(settings: Settings, now: float) -> list[HealthCheck]:
    """The PITR objects the replica lacks (one listing of each store); none without [s3.replica]."""
    from opstower_core.storage.replica import pitr_replica_lag, replica_settings

    if replica_settings(settings) is None:
        return []
    try:
        lag = pitr_replica_lag(settings, now)
    except Exception as exc:  # noqa: BLE001 - an unreachable replica is a finding, not a crash
        return [check_pitr_replica(settings, None, getattr(exc, "what", None) or f"{type(exc).__name__}: {exc}")]
    return [] if lag is None else [check_pitr_replica(settings, lag)]


def _summary(overall: HealthState, checks: list[HealthCheck]) -> str:
    if overall == HealthState.OK:
        ages = [f"{c.subject} latest backup is {span(c.metrics['age_seconds'])} old" for c in checks
                if c.check == "backup_age" and "age_seconds" in c.metrics]
        ok = sum(1 for c in checks if c.state == HealthState.OK)
        return f"OK: {'; '.join(ages)}; {ok}/{len(checks)} checks OK"
    bad = sorted((c for c in checks if c.counts and c.state != HealthState.OK), key=lambda c: -_RANK[c.state])
    return f"{overall.name}: " + "; ".join(f"{c.subject} {c.detail}" for c in bad)


def run_health(settings: Settings, target_name: str | None = None, *, now: float | None = None,
               notify: bool = True, include_s3: bool = True) -> HealthReport:
    """`opstower health`: check, remember the overall state, notify when it changed.

    The previous state is kept in the state file (kv `health.last`); a change is also
    recorded as a "health" run, so the history shows when health went bad and recovered.
    A notification that no channel delivered is retried on the next run. Nothing about
    notification can change the result or the exit code.
    """
    store, _problem = open_state(settings)
    report = check_health(settings, target_name, state=store, now=now, include_s3=include_s3)
    scope = target_name or "*"
    previous: dict[str, Any] = {}
    if store is not None:
        try:
            previous = (store.get(LAST_KEY) or {}).get(scope) or {}
        except Exception:  # noqa: BLE001 - a damaged kv row: treat as a first run
            previous = {}
    report.previous = previous.get("state")
    report.changed = report.previous != report.state.name and (report.previous is not None or report.state != HealthState.OK)
    pending = bool(previous.get("notify_pending")) and report.previous == report.state.name
    if notify and (report.changed or pending):
        pending = _notify(settings, report, targets_label(settings, target_name))
    if store is not None:
        try:
            last = store.get(LAST_KEY) or {}
            last[scope] = {"state": report.state.name, "summary": report.summary, "at": report.checked_at,
                           "notify_pending": pending}
            store.put(LAST_KEY, last)
            if report.changed:
                store.record("health", targets_label(settings, target_name), report.state.name,
                             started_at=report.checked_at, finished_at=report.checked_at,
                             details={"previous": report.previous, "summary": report.summary})
        except Exception:  # noqa: BLE001 - the check result stands even if it cannot be remembered
            pass
    return report


def targets_label(settings: Settings, target_name: str | None) -> str:
    if target_name:
        return settings.target(target_name).dbname
    return ",".join(t.dbname for t in settings.targets.values())


def _notify(settings: Settings, report: HealthReport, database: str) -> bool:
    """Send the change; True when it must be retried (channels exist but none delivered)."""
    try:
        from opstower_core.alerts import Notification, Notifier

        notifier = Notifier.from_settings(settings)
        if not notifier.channels:
            return False
        was = f" (was {report.previous})" if report.previous else ""
        bad = [c.line() for c in report.checks if c.counts and c.state != HealthState.OK]
        message = report.summary + was + ("\n" + "\n".join(bad) if bad else "") + \
            "\nRun `opstower health` on the backup host for every check."
        n = Notification("health", report.state.name.lower(), f"OpsTower health {report.state.name}{was}",
                         message, database,
                         {"state": report.state.name, "previous_state": report.previous,
                          "checks": {f"{c.subject}/{c.check}": c.state.name for c in report.checks}})
        results = notifier.notify(n, force=True)
    except Exception as exc:  # noqa: BLE001 - a broken alert path never changes the health verdict
        report.notify_error = getattr(exc, "sentence", None) or f"{type(exc).__name__}: {exc}"
        return True
    report.notifications = [asdict(r) for r in results]
    return bool(results) and not any(r.ok for r in results)
