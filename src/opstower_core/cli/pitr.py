"""`opstower pitr enable|status|accidents|heartbeat`: point-in-time recovery on barman-cloud."""

from __future__ import annotations

import argparse
import json
import sys

from opstower_core.cli.common import add_target, settings_from


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pitr", help="point-in-time recovery: enable WAL archiving, status, find the accident",
                       description="Continuous WAL archiving and base backups to S3 (barman-cloud layout).")
    actions = p.add_subparsers(dest="pitr_action", metavar="ACTION", required=True)
    e = actions.add_parser("enable", help="check (or with --apply set) archive_mode, archive_command, archive_timeout")
    add_target(e)
    e.add_argument("--apply", action="store_true",
                   help="write the launcher and set the settings with ALTER SYSTEM (then reload)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_enable)


def _enable(args: argparse.Namespace) -> int:
    from opstower_core.pitr import enable

    settings = settings_from(args)
    report = enable(settings, settings.target(args.database), apply=args.apply)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0 if report.ready or report.restart_needed else 1
    out = sys.stdout
    print(f"Server {report.server_version}, data directory {report.data_directory}, OS user {report.os_user}", file=out)
    for c in report.checks:
        mark = "ok " if c.ok else "FIX"
        note = f"  ({c.note})" if c.note else ""
        print(f"  {mark} {c.name:<16} {c.current or '(empty)':<40} wanted: {c.wanted}{note}", file=out)
    for line in report.applied:
        print(f"  applied: {line}", file=out)
    if report.launcher_ok is not None:
        print(f"  {'ok ' if report.launcher_ok else 'FIX'} launcher {report.launcher}: {report.launcher_detail}", file=out)
    if report.restart_needed:
        print("A server restart is needed for archive_mode / wal_level to take effect.", file=out)
    elif not args.apply and not report.ready:
        print("Run `opstower pitr enable --apply` to write the launcher and set these.", file=out)
    elif report.ready:
        print("WAL archiving is on.", file=out)
    return 0 if report.ready or report.restart_needed else 1
