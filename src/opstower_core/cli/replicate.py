"""`opstower replicate [-d NAME] [--json]`: copy to the replica every backup it lacks.

Backups present locally or on the primary S3 bucket but missing on the replica
([s3.replica]), or held there with another size, are copied and checked (size, recorded
sha256, metadata object). With [pitr] configured, the objects under the point-in-time
recovery root (barman-cloud's base backups and WAL) that the replica lacks are copied too,
checked by size and, where both ETags are MD5s, by MD5. Exit 0 when the replica holds every
copyable backup and PITR object, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from opstower_core.cli.common import add_json, settings_from
from opstower_core.config import Settings
from opstower_core.errors import OpsError
from opstower_core.storage.replica import PitrCopyReport, catch_up, catch_up_pitr, replica_store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replicate", help="copy backups the replica ([s3.replica]) lacks, and check them",
                       description="Copy every backup present locally or on the primary S3 bucket but missing "
                       "(or of another size) on the replica, then check each copy by size and sha256; with [pitr], "
                       "also the base backups and WAL under its root that the replica lacks.")
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
    pitr, pitr_error = _pitr(args, settings, database, log)
    ok = report.ok and pitr_error is None and (pitr is None or pitr.ok)
    if args.json:
        print(json.dumps({**report.as_dict(), "ok": ok, "replica": store.where,
                          "pitr": pitr.as_dict() if pitr else None, "pitr_error": pitr_error}))
    else:
        print(f"Replica {store.where}: {report.summary}")
        if pitr is not None:
            print(pitr.summary)
    if pitr_error:
        print(f"ERROR: {pitr_error}", file=sys.stderr)
    for key, why in pitr.failed if pitr else []:
        print(f"ERROR: PITR object {key} was not copied to the replica ({why})", file=sys.stderr)
    for artifact, why in report.failed:
        print(f"ERROR: {artifact} was not copied to the replica ({why})", file=sys.stderr)
    if report.primary_error:
        print(f"WARN: the primary was not listed ({report.primary_error}); only local backups were copied",
              file=sys.stderr)
    return 0 if ok else 1


def _pitr(args: argparse.Namespace, settings: Settings, database: str | None,
          log: Callable[[str], None]) -> tuple[PitrCopyReport | None, str | None]:
    """The PITR objects' catch-up (not with -d: base backups and WAL belong to the whole server)."""
    if database is not None:
        return None, None
    try:
        return catch_up_pitr(settings, log), None
    except OpsError as exc:
        return None, exc.sentence
