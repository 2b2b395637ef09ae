"""Backup health for monitoring systems (report sections 6.3 and 7.2).

`opstower health` answers one question for Nagios, Icinga, Zabbix or a cron mail: are the
backups good right now? It reads only the backup directory, the S3 listing and the state
file, never the database, so it keeps answering while the database is down (which is when
the answer matters most).

Checks, per target database unless noted:

| check         | source                                        | WARNING                 | CRITICAL            |
|---------------|-----------------------------------------------|-------------------------|---------------------|
| backup_age    | newest non-pre_restore artifact (local + S3), | older than              | older than          |
|               | else the state file's last successful backup  | backup_age_warn_hours   | backup_age_crit_hours |
| success_rate  | state file, backup runs of the last 7 days    | under 95 %              | -                   |
| size_trend    | latest vs previous backup of the same format  | a change beyond ±30 %   | -                   |
| s3_upload     | S3 listing now + the last attempted upload    | unreachable / failed /  | -                   |
|               |                                               | latest has no S3 copy   |                     |
| verification  | last verification run (state file)            | WARN                    | FAIL                |
| free_space    | backup directory (once, not per target)       | < 2x latest or < 10 %   | < latest backup     |

A failed verification is CRITICAL on purpose: the newest checked backup could not be
restored, so the recovery point is not what the dashboard says; it stays CRITICAL until a
verification passes again. Exit codes follow the Nagios convention: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN. A check without data (never verified, no runs in 7 days) says
UNKNOWN on its own line but only the backup age can make the whole result UNKNOWN: if no
backup can be found anywhere, nothing else the checks say can be trusted.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from typing import Any

import humanize

from .catalog import Catalog, CatalogEntry, list_catalog
from .config import Settings
from .state import RunRecord, StateStore

WEEK = 7 * 24 * 3600
SUCCESS_RATE_WARN = 95.0
SIZE_CHANGE_WARN = 0.30
FREE_RATIO_WARN = 0.10
LAST_KEY = "health.last"


class HealthState(IntEnum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    def __str__(self) -> str:
        return self.name


# Worst-of order: a CRITICAL outranks not knowing, not knowing outranks a WARNING.
_RANK = {HealthState.OK: 0, HealthState.WARNING: 1, HealthState.UNKNOWN: 2, HealthState.CRITICAL: 3}


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


def _size(n: float) -> str:
    return humanize.naturalsize(n, binary=True)


def _entry_size(entry: CatalogEntry) -> int:
    if entry.meta and isinstance(entry.meta.get("size_bytes"), int):
        return int(entry.meta["size_bytes"])
    return int(entry.size)


# --- the checks -------------------------------------------------------------------------------


def _backup_age(settings: Settings, db: str, entries: list[CatalogEntry], runs: list[RunRecord] | None,
                catalog: Catalog, now: float, state_problem: str | None) -> HealthCheck:
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
            return HealthCheck("backup_age", db, HealthState.UNKNOWN,
                               f"has no backup that can be found ({'; '.join(why)}): run `opstower backup`",
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


def _success_rate(db: str, runs: list[RunRecord] | None, now: float, state_problem: str | None) -> HealthCheck:
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


def _size_trend(db: str, entries: list[CatalogEntry], runs: list[RunRecord] | None) -> HealthCheck:
    # (size, format, name) newest first: catalog first, the state file when the catalog has < 2.
    series = [(_entry_size(e), e.name.format, e.filename) for e in entries]
    if len(series) < 2 and runs:
        series = [(r.size_bytes, str(r.details.get("format", "")), r.artifact or "?")
                  for r in runs if r.status == "success" and r.size_bytes]
    if not series:
        return HealthCheck("size_trend", db, HealthState.UNKNOWN, "no backup size known yet")
    size, fmt, name = series[0]
    previous = next((s for s in series[1:] if s[1] == fmt), None)
    if previous is None:
        return HealthCheck("size_trend", db, HealthState.UNKNOWN,
                           f"latest backup is {_size(size)}; no previous {fmt or ''} backup to compare".replace("  ", " "),
                           metrics={"size_bytes": size})
    change = (size - previous[0]) / previous[0] if previous[0] else 0.0
    text = f"latest backup is {_size(size)}, {change * 100:+.1f}% from the previous ({_size(previous[0])})"
    state = HealthState.OK
    if abs(change) > SIZE_CHANGE_WARN:
        state = HealthState.WARNING
        text += (f" (warning beyond ±{SIZE_CHANGE_WARN * 100:.0f}%): check {name} for a bulk load or a mass delete"
                 if change > 0 else
                 f" (warning beyond ±{SIZE_CHANGE_WARN * 100:.0f}%): check for deleted data before retention removes "
                 "the older backups")
    return HealthCheck("size_trend", db, state, text,
                       metrics={"size_bytes": size, "previous_bytes": previous[0], "change_percent": round(change * 100, 1)})


def _s3_upload(settings: Settings, db: str, entries: list[CatalogEntry], runs: list[RunRecord] | None,
               catalog: Catalog, now: float, listed: bool) -> HealthCheck:
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
        problems.append(f"latest backup {entries[0].filename} has no S3 copy")
    if problems:
        return HealthCheck("s3_upload", db, HealthState.WARNING,
                           "; ".join(problems) + "; fix S3 access (opstower doctor), then run `opstower backup`")
    if last_ok is None:
        if entries and entries[0].s3_key:
            return HealthCheck("s3_upload", db, HealthState.OK, f"latest backup {entries[0].filename} is in S3")
        return HealthCheck("s3_upload", db, HealthState.UNKNOWN, "no S3 upload recorded yet")
    return HealthCheck("s3_upload", db, HealthState.OK, last_ok)


def _verification(db: str, verifies: list[RunRecord] | None, now: float, state_problem: str | None) -> HealthCheck:
    if verifies is None:
        return HealthCheck("verification", db, HealthState.UNKNOWN, f"cannot read run history ({state_problem})")
    last = next((r for r in verifies if r.status in ("PASS", "WARN", "FAIL")), None)
    if last is None:
        return HealthCheck("verification", db, HealthState.UNKNOWN,
                           "no backup was ever verified: run `opstower verify latest --full-test`")
    kind = "full test" if last.details.get("full_test") else f"checks 1-{last.details.get('upto', 7)}"
    text = f"last verification {last.status} {span(now - (last.finished_at or last.started_at))} ago ({last.artifact}, {kind})"
    metrics = {"verified_at": last.finished_at, "artifact": last.artifact, "result": last.status}
    if last.status == "FAIL":
        return HealthCheck("verification", db, HealthState.CRITICAL,
                           f"{text}: {(last.error or 'a check failed').rstrip('.')}; run `opstower verify latest "
                           "--full-test` and fix the cause", metrics=metrics)
    if last.status == "WARN":
        return HealthCheck("verification", db, HealthState.WARNING,
                           f"{text}: see `opstower verify {last.artifact}`", metrics=metrics)
    return HealthCheck("verification", db, HealthState.OK, text, metrics=metrics)


def _free_space(settings: Settings, latest_size: int) -> HealthCheck:
    d = settings.backup_dir
    try:
        usage = shutil.disk_usage(d)
    except OSError as exc:
        return HealthCheck("free_space", str(d), HealthState.UNKNOWN, f"cannot read the backup directory ({exc.strerror})")
    free, total = usage.free, usage.total
    pct = 100.0 * free / total if total else 0.0
    text = f"{_size(free)} free ({pct:.0f}%)"
    metrics: dict[str, Any] = {"free_bytes": free, "total_bytes": total, "latest_bytes": latest_size}
    if latest_size:
        metrics.update(warn_bytes=2 * latest_size, crit_bytes=latest_size)
        text += f", latest backup {_size(latest_size)}"
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


# --- putting it together ----------------------------------------------------------------------


def open_state(settings: Settings) -> tuple[StateStore | None, str | None]:
    """The state file, or (None, why not): health must answer even without one."""
    try:
        return StateStore(settings.state_dir), None
    except Exception as exc:  # noqa: BLE001 - unreadable/unwritable state is a finding, not a crash
        return None, f"state file in {settings.state_dir} unusable: {getattr(exc, 'strerror', None) or exc}"


def check_health(settings: Settings, target_name: str | None = None, *, state: StateStore | None = None,
                 now: float | None = None, include_s3: bool = True) -> HealthReport:
    """Evaluate every check; reads files and S3 only, never connects to the database, records nothing."""
    now = time.time() if now is None else now
    problem = None
    if state is None:
        state, problem = open_state(settings)
    targets = [settings.target(target_name)] if target_name else list(settings.targets.values())
    catalog = list_catalog(settings, include_s3=include_s3)
    checks: list[HealthCheck] = []
    latest_size = 0
    for target in targets:
        db = target.dbname
        entries = [e for e in catalog.entries if e.database == db and not e.name.pre_restore]
        runs = state.runs("backup", db, limit=500) if state else None
        week = state.runs("backup", db, since=now - WEEK, limit=100000) if state else None
        verifies = state.runs("verify", db, limit=50) if state else None
        checks.append(_backup_age(settings, db, entries, runs, catalog, now, problem))
        checks.append(_success_rate(db, week, now, problem))
        checks.append(_size_trend(db, entries, runs))
        checks.append(_s3_upload(settings, db, entries, runs, catalog, now, include_s3))
        checks.append(_verification(db, verifies, now, problem))
        local = [e for e in entries if e.local_path is not None]
        if local:
            latest_size = max(latest_size, _entry_size(local[0]))
    checks.append(_free_space(settings, latest_size))
    counted = [c for c in checks if c.counts]
    overall = max((c.state for c in counted), key=_RANK.__getitem__, default=HealthState.UNKNOWN)
    return HealthReport(overall, _summary(overall, checks), checks, now)


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
        from .notify import Notification, Notifier

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
