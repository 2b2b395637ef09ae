"""`opstower prune [--dry-run] [-d NAME] [--local-only]`: retention on its own, without a backup."""

from __future__ import annotations

import argparse
import json

from opstower_core.cli.common import add_json, add_target, settings_from
from opstower_core.errors import OpsError
from opstower_core.repo.retention import apply_retention
from opstower_core.storage.s3 import S3Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="apply retention now (local and S3); --dry-run lists what would go",
        description="Delete backups older than retention_days (BACKUP_RETENTION_DAYS), locally and in S3, but never "
        "the newest keep_last good ones; pre-restore copies after pre_restore_retention_days. `backup` does this "
        "after every run; prune does it alone.",
    )
    add_target(p)
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--local-only", action="store_true", help="leave S3 alone")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    target = settings.target(args.database)
    s3 = S3Store(settings.s3) if settings.s3.enabled and not args.local_only else None
    report = apply_retention(settings, target.dbname, dry_run=args.dry_run, s3=s3)
    if args.json:
        print(json.dumps({"kind": "summary", "dry_run": args.dry_run, "deleted": report.deleted,
                          "kept_for_safety": report.kept_for_safety, "s3_error": report.s3_error}))
    else:
        for line in report.lines:
            print(line)
        for name in report.deleted:
            print(f"{'would delete' if args.dry_run else 'deleted'}: {name}")
        print(report.summary)
    if report.s3_error:
        raise OpsError(report.s3_error, f"local retention was applied ({len(report.deleted)} listed above); "
                       "S3 was not touched", "fix S3 access (opstower doctor), then run prune again")
    return 0
