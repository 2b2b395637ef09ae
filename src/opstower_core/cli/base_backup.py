"""`opstower base-backup [--json]`: a physical base backup to S3 (barman-cloud), the start of a recovery window.

With [s3.replica], the new base backup and any WAL the replica lacks are then copied there (exit 1
when that fails: the base backup itself is good)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

from opstower_core.cli.common import add_json, add_target, settings_from
from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.events import Event, Status, StepFinished, StepLog, StepStarted, event_to_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("base-backup", help="physical base backup of the server to S3 (point-in-time recovery)",
                       description="barman-cloud-backup of the server's data directory (run it on the server's host).")
    add_target(p)
    add_json(p)
    p.add_argument("--name", help="a name for the backup")
    p.add_argument("--jobs", type=int, default=2, help="parallel uploads (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from opstower_core.pitr import take_base_backup

    settings = settings_from(args)

    def show(event: Event) -> None:
        if args.json:
            print(json.dumps(event_to_dict(event), default=str), flush=True)
        elif isinstance(event, StepStarted):
            print(f"{event.title} ...", flush=True)
        elif isinstance(event, StepLog) and ("ERROR" in event.line or "Upload" in event.line or "backup" in event.line):
            print(f"  {event.line}", flush=True)
        elif isinstance(event, StepFinished):
            print(f"{event.status}: {event.detail}", flush=True)

    take_base_backup(settings, settings.target(args.database), show, name=args.name, jobs=args.jobs)
    return _replicate(settings, show)


def _replicate(settings: Settings, show: Callable[[Event], None]) -> int:
    """With a replica: the new base backup, and any WAL segment whose copy wal-push missed, go there
    too. A failure leaves the base backup good (exit 1, like a backup's failed replica copy)."""
    from opstower_core.storage.replica import catch_up_pitr, replica_settings

    if replica_settings(settings) is None:
        return 0
    show(StepStarted("replica", "Copying the base backup and WAL to the replica"))
    t0 = time.monotonic()
    try:
        report = catch_up_pitr(settings, lambda line: show(StepLog("replica", line)))
    except OpsError as exc:
        show(StepFinished("replica", Status.FAIL, f"{exc.what}; the base backup is good; `opstower replicate` "
                          "copies it", time.monotonic() - t0))
        print(f"ERROR: {exc.sentence}", file=sys.stderr)
        return 1
    if report is None:
        return 0
    detail = f"{report.summary} ({report.root})"
    show(StepFinished("replica", Status.PASS if report.ok else Status.FAIL, detail, time.monotonic() - t0,
                      report.as_dict()))
    for key, why in report.failed:
        print(f"ERROR: PITR object {key} was not copied to the replica ({why}); `opstower replicate` retries it",
              file=sys.stderr)
    return 0 if report.ok else 1
