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
