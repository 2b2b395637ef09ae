"""`opstower backup [--local-only] [--format custom|plain] [--wait-for-locks SECONDS] [--json]`"""

from __future__ import annotations

import argparse
import sys

import humanize

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli.common import add_json, add_target, seconds_arg, settings_from
from opstower_core.cli.render import JsonRenderer, renderer
from opstower_core.config import DEFAULT_LOCK_WAIT
from opstower_core.errors import OpsError
from opstower_core.runs import signals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="take a backup (pg_dump, compressed, checksummed, local and S3)",
                       description="Take a backup of a database: dump, compress, checksum, metadata, S3 upload, "
                       "retention and the latest symlink.")
    add_target(p)
    p.add_argument("--local-only", action="store_true", help="skip the S3 upload")
    p.add_argument("--format", choices=("custom", "plain"), default="custom",
                   help="custom: pg_dump custom format + zstd (default); plain: SQL + gzip, as the reference scripts")
    p.add_argument("--dry-run-retention", action="store_true", help="list what retention would delete, delete nothing")
    p.add_argument("--wait-for-locks", type=seconds_arg, metavar="SECONDS",
                   help="how long to wait for a table lock another session holds before failing and naming it "
                   f"(default: wait_for_locks_seconds in the config, else {DEFAULT_LOCK_WAIT:g})")
    add_json(p)
    p.set_defaults(func=run)




def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    render = renderer(args.json)
    options = BackupOptions(fmt=args.format, local_only=args.local_only, dry_run_retention=args.dry_run_retention,
                            wait_for_locks=args.wait_for_locks)
    try:
        # SIGTERM (cron's `timeout`, `systemctl stop`, `kill`) and SIGHUP (a dropped SSH session) clean up
        # like Ctrl-C: without this the process dies on the spot, leaving its temporary file on disk and
        # the multipart upload open in S3.
        with signals.installed():
            result = run_backup(settings, args.database, options, on_event=render)
    except OpsError as exc:
        if isinstance(render, JsonRenderer):
            render.summary({"ok": False, "error": exc.sentence})
        raise
    except KeyboardInterrupt as exc:
        sentence = (f"Interrupted by {signals.signal_name(exc)}; the backup was stopped, its temporary file removed "
                    "and its S3 upload aborted; no backup was written. Run the backup again.")
        if isinstance(render, JsonRenderer):
            render.summary({"ok": False, "error": sentence})
        print(f"ERROR: {sentence}", file=sys.stderr)
        return signals.exit_code(exc)
    summary = {
        "ok": result.ok, "file": str(result.path), "size_bytes": result.meta["size_bytes"],
        "sha256": result.meta["sha256"], "seconds": round(result.seconds, 2), "s3_key": result.s3_key,
        "s3_error": result.s3_error, "deleted": result.deleted, "log": str(result.log_path),
        "replica": result.replica, "replica_error": result.replica_error, "copies": result.copies,
    }
    if isinstance(render, JsonRenderer):
        render.summary(summary)
    else:
        print(f"Backup file: {result.path}  ({humanize.naturalsize(result.meta['size_bytes'], binary=True)}, "
              f"{result.seconds:.1f} s)")
        if result.s3_key:
            print(f"S3: s3://{settings.s3.bucket}/{result.s3_key}")
        if result.replica:
            print(f"Replica: {result.replica['where']}")
    if result.replica_error:
        print(f"ERROR: {result.replica_error}. The backup {result.path} is good; the next backup or "
              "`opstower replicate` copies it to the replica.", file=sys.stderr)
    if result.s3_error:
        print(f"ERROR: {result.s3_error}. The local backup {result.path} is good. "
              "Fix S3 access, then run the backup again (or `--local-only`).", file=sys.stderr)
        return 1
    return 1 if result.replica_error else 0
