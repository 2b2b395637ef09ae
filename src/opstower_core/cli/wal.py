"""`opstower wal-push PATH` / `opstower wal-fetch NAME DEST`: PostgreSQL's archive and restore commands.

The server calls them through the launcher `pitr enable` writes (launcher_main below), as its
own OS user; they print to stderr (the server log) and return PostgreSQL's exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from opstower_core.cli.common import settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("wal-push", help="archive_command: archive one WAL file to S3 (barman-cloud layout)",
                       description="Archive a WAL file (%%p). Refuses to overwrite an archived segment with "
                       "different content. Exit 0 only when archived.")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=_push)
    f = sub.add_parser("wal-fetch", help="restore_command: fetch one WAL file from S3",
                       description="Fetch WAL file NAME (%%f) to DEST (%%p). Exit 1 when the archive does not have it.")
    f.add_argument("name", metavar="NAME")
    f.add_argument("dest", metavar="DEST")
    f.add_argument("--spool", metavar="DIR", help="a directory of prefetched segments private to one recovery")
    f.add_argument("--prefetch", metavar="K", type=int, default=0,
                   help="with --spool: keep the next K segments downloaded ahead (default 0: none)")
    f.set_defaults(func=_fetch)


def _push(args: argparse.Namespace) -> int:
    from opstower_core.pitr import wal_push

    return wal_push(settings_from(args), args.path)


def _fetch(args: argparse.Namespace) -> int:
    from opstower_core.pitr import wal_fetch

    return wal_fetch(settings_from(args), args.name, args.dest, args.spool, args.prefetch)


def launcher_main(argv: Sequence[str]) -> int:
    """Entry point of the launcher script: wal-push, wal-fetch or check, with few imports."""
    from opstower_core.config import load_settings
    from opstower_core.errors import OpsError
    from opstower_core.pitr import barman, wal

    try:
        settings = load_settings()
        os.environ.update(barman.cloud_env(settings))  # before the S3 client reads the credential chain
        match list(argv):
            case ["wal-push", path]:
                return wal.wal_push(settings, path)
            case ["wal-fetch", name, dest]:
                return wal.wal_fetch(settings, name, dest)
            case ["wal-fetch", name, dest, "--spool", spool, "--prefetch", k]:
                return wal.wal_fetch(settings, name, dest, spool, int(k))
            case ["check"]:
                print(wal.check_archive_access(settings))
                return 0
            case _:
                print("usage: opstower-pitr wal-push PATH | wal-fetch NAME DEST [--spool DIR --prefetch K] | check", file=sys.stderr)
                return 3
    except OpsError as exc:
        print(f"opstower: ERROR: {exc.sentence}", file=sys.stderr)
        return 3
    except Exception as exc:  # noqa: BLE001 - the server log gets one line; PostgreSQL retries
        print(f"opstower: ERROR: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
