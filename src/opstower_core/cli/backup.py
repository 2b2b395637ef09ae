"""`opstower backup [--local-only] [--format custom|plain] [--json]`"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import humanize

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli.common import add_json, add_target, settings_from
from opstower_core.cli.render import JsonRenderer, renderer
from opstower_core.errors import OpsError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backup", help="take a backup (pg_dump, compressed, checksummed, local and S3)",
                       description="Take a backup of a database: dump, compress, checksum, metadata, S3 upload, "
                       "retention and the latest symlink.")
    add_target(p)
    p.add_argument("--local-only", action="store_true", help="skip the S3 upload")
    p.add_argument("--format", choices=("custom", "plain"), default="custom",
                   help="custom: pg_dump custom format + zstd (default); plain: SQL + gzip, as the reference scripts")
    p.add_argument("--dry-run-retention", action="store_true", help="list what retention would delete, delete nothing")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    render = renderer(args.json)
    options = BackupOptions(fmt=args.format, local_only=args.local_only, dry_run_retention=args.dry_run_retention)
    try:
        with _sigterm_as_interrupt():
            result = run_backup(settings, args.database, options, on_event=render)
    except OpsError as exc:
        if isinstance(render, JsonRenderer):
            render.summary({"ok": False, "error": exc.sentence})
        raise
    summary = {
        "ok": result.ok, "file": str(result.path), "size_bytes": result.meta["size_bytes"],
        "sha256": result.meta["sha256"], "seconds": round(result.seconds, 2), "s3_key": result.s3_key,
        "s3_error": result.s3_error, "deleted": result.deleted, "log": str(result.log_path),
    }
    if isinstance(render, JsonRenderer):
        render.summary(summary)
    else:
        print(f"Backup file: {result.path}  ({humanize.naturalsize(result.meta['size_bytes'], binary=True)}, "
              f"{result.seconds:.1f} s)")
        if result.s3_key:
            print(f"S3: s3://{settings.s3.bucket}/{result.s3_key}")
    if result.s3_error:
        print(f"ERROR: {result.s3_error}. The local backup {result.path} is good. "
              "Fix S3 access, then run the backup again (or `--local-only`).", file=sys.stderr)
        return 1
    return 0


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """cron's `timeout`, `systemctl stop` and `kill` send SIGTERM: clean up as for Ctrl-C.

    Without this the process dies on the spot, leaving its temporary file on disk and the
    multipart upload open in S3.
    """

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: the caller handles its own signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
