"""`opstower replicate [-d NAME] [--json]`: copy to the replica every backup it lacks.

Backups present locally or on the primary S3 bucket but missing on the replica
([s3.replica]), or held there with another size, are copied and checked (size, recorded
sha256, metadata object). Exit 0 when the replica holds every copyable backup, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys

from opstower_core.cli.common import add_json, settings_from
from opstower_core.errors import OpsError
from opstower_core.storage.replica import catch_up, replica_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replicate", help="copy backups the replica ([s3.replica]) lacks, and check them",
                       description="Copy every backup present locally or on the primary S3 bucket but missing "
                       "(or of another size) on the replica, then check each copy by size and sha256.")
    p.add_argument("-d", "--database", metavar="NAME", help="only this database")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    store = replica_store(settings)  # OpsError (one line) when no replica is configured
    database = None
    if args.database:
        database = settings.target(args.database).dbname

    def log(line: str) -> None:
        if not args.json:
            print(line)

    try:
        report = catch_up(settings, database, log)
    except OpsError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": exc.sentence}))
        raise
    if args.json:
        print(json.dumps({**report.as_dict(), "replica": store.where}))
    else:
        print(f"Replica {store.where}: {report.summary}")
    for artifact, why in report.failed:
        print(f"ERROR: {artifact} was not copied to the replica ({why})", file=sys.stderr)
    if report.primary_error:
        print(f"WARN: the primary was not listed ({report.primary_error}); only local backups were copied",
              file=sys.stderr)
    return 0 if report.ok else 1
