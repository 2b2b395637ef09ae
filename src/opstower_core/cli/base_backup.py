"""`opstower base-backup [--json]`: a physical base backup to S3 (barman-cloud), the start of a recovery window."""

from __future__ import annotations

import argparse
import json

from opstower_core.cli.common import add_json, add_target, settings_from
from opstower_core.events import Event, StepFinished, StepLog, StepStarted, event_to_dict


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
    return 0
