"""Engine calls the console runs in worker threads, each as `job(on_event, cancel) -> result`.

The engine is imported inside each job, never at module import, so start-up stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opstower_core.fmt import size
from opstower_core.verify import CHECKS

# The eight checks' titles, from a module light enough to import before the engine.
VERIFY_CHECKS = CHECKS


def verify_job(settings: Any, entry: Any, full_test: bool) -> Callable[[Callable[[Any], None], Any], Any]:
    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.runs.history import StateStore
        from opstower_core.verify import verify

        return verify(settings, entry, full_test=full_test, on_event=on_event, cancel=cancel,
                      state=StateStore(settings.state_dir))

    return job


def backup_job(settings: Any, target_name: str | None) -> Callable[[Callable[[Any], None], Any], Any]:
    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.backup import run_backup

        return run_backup(settings, target_name, on_event=on_event, cancel=cancel)

    return job


def download_job(settings: Any, entry: Any) -> Callable[[Callable[[Any], None], Any], Any]:
    """Fetch an S3-only backup with its metadata and globals file into the backup directory
    (the engine's one download path: temp name, sha256 checked, then rename)."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.events import Reporter, Status
        from opstower_core.repo.download import download

        reporter = Reporter(on_event, cancel)
        with reporter.step("download", f"Downloading {entry.filename} from S3") as out:
            t0 = time.monotonic()
            got = download(settings, entry, reporter=reporter)
            out.detail = (f"Downloaded {size(got.path.stat().st_size)} to {got.path} in {time.monotonic() - t0:.1f} s "
                          "(sha256 checked)")
        with reporter.step("metadata", "Fetching the metadata and globals files") as out:
            if got.missing:
                out.status = Status.WARN
                out.detail = f"Not in S3: {', '.join(got.missing)}; check 6 will fail on this copy"
            else:
                out.detail = f"Saved beside it: {', '.join(got.sidecars) or 'nothing else to fetch'}"
        return got.path

    return job


def backup_summary(result: Any) -> str:
    where = f", S3 {result.s3_key}" if result.s3_key else ""
    text = f"PASS: backup {result.name.filename} ({size(result.meta['size_bytes'])}, {result.seconds:.1f} s{where})"
    if result.s3_error:
        text = (f"WARN: {result.s3_error}. The local backup {result.name.filename} is good; fix S3 access and "
                "back up again")
    return text


def download_summary(dest: Any) -> str:
    return f"PASS: downloaded to {dest}"


# -- health, doctor, prune: the CLI's checks, in the console --------------------------------

def health_job(settings: Any) -> Callable[[Callable[[Any], None], Any], Any]:
    """`opstower health` as steps: one per check, OK/WARNING/CRITICAL/UNKNOWN as PASS/WARN/FAIL/SKIP."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.events import Reporter, Status
        from opstower_core.health import HealthState, check_health

        reporter = Reporter(on_event, cancel)
        word = {HealthState.OK: Status.PASS, HealthState.WARNING: Status.WARN,
                HealthState.CRITICAL: Status.FAIL, HealthState.UNKNOWN: Status.SKIP}
        with reporter.step("health", "Reading backups, history and S3") as out:
            report = check_health(settings)
            out.detail = report.summary
        for i, check in enumerate(report.checks, 1):
            with reporter.step(f"{check.check}:{check.subject}:{i}", f"{check.check} {check.subject}") as out:
                out.status = word[check.state]
                out.detail = check.detail
        return report

    return job


def health_summary(report: Any) -> str:
    return f"{report.state.name}: {report.summary}"


def doctor_job(settings: Any, target_name: str | None = None) -> Callable[[Callable[[Any], None], Any], Any]:
    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.doctor import run_doctor

        return run_doctor(settings, target_name, on_event=on_event, cancel=cancel)

    return job


def doctor_summary(results: Any) -> str:
    failed = [r for r in results if r.status.value == "FAIL"]
    warned = [r for r in results if r.status.value == "WARN"]
    if failed:
        return f"FAIL: {len(failed)} of {len(results)} checks failed; each says what to fix"
    return f"PASS: {len(results)} checks" + (f", {len(warned)} with a warning" if warned else "")


def prune_job(settings: Any, dry_run: bool) -> Callable[[Callable[[Any], None], Any], Any]:
    """Retention for every target; each decision (keep / delete, and why) is a step."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.events import Reporter, Status
        from opstower_core.repo.retention import apply_retention
        from opstower_core.storage.s3 import store_for

        reporter = Reporter(on_event, cancel)
        s3 = store_for(settings.s3) if settings.s3.enabled else None
        reports = []
        for target in settings.targets.values():
            report = apply_retention(settings, target.dbname, dry_run=dry_run, s3=s3)
            reports.append(report)
            for i, d in enumerate(report.decisions, 1):
                verb = ("would delete" if dry_run else "deleted") if d.action == "delete" else "keep"
                with reporter.step(f"{target.dbname}:{i}", f"{verb} {d.where} {d.artifact}") as out:
                    out.status = Status.WARN if d.action == "delete" else Status.PASS
                    out.detail = d.reason
            if report.s3_error:
                reporter.log("prune", f"S3 retention did not run: {report.s3_error}", level="WARN")
        return reports

    return job


def prune_summary(reports: Any) -> str:
    deletions = sum(1 for r in reports for d in r.decisions if d.action == "delete")
    dry = all(r.dry_run for r in reports)
    if dry:
        return (f"DRY RUN: {deletions} artifact(s) would be deleted, nothing was changed"
                + ("; a to apply" if deletions else ""))
    return f"PASS: {deletions} artifact(s) deleted"


def recover_job(settings: Any) -> Callable[[Callable[[Any], None], Any], Any]:
    """`opstower restore --recover`: finish or undo every killed restore from its journal."""

    def job(on_event: Callable[[Any], None], cancel: Any) -> Any:
        from opstower_core.restore import recover_interrupted

        return recover_interrupted(settings, on_event=on_event)

    return job
