"""`opstower health [--json]`: backup health for monitoring systems.

Nagios plugin convention: the first line is the verdict ("CRITICAL: opstower latest backup
is 5h12m old (critical > 4h; …) | perfdata"), then one line per check; exit 0 OK,
1 WARNING, 2 CRITICAL, 3 UNKNOWN. Any failure of the check itself (bad config, a crash)
is UNKNOWN too, never a traceback and never a misleading 1 or 2.
"""

from __future__ import annotations

import argparse
import json

from opstower_core.cli.common import add_target, settings_from
from opstower_core.errors import OpsError
from opstower_core.health import HealthState, run_health


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "health", help="backup health for monitoring (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)",
        description="Backup age, 7-day success rate, size trend, S3 upload, last verification and free space, "
        "from the backup directory, S3 and the state file only (works while the database is down). "
        "Notifies the configured channels when the overall state changes.",
    )
    add_target(p)
    p.add_argument("--json", action="store_true", help="one JSON object with every check, for scrapers")
    p.add_argument("--local-only", action="store_true", help="do not list S3")
    p.add_argument("--no-notify", action="store_true", help="do not send a notification on a state change")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from(args)
        report = run_health(settings, args.database, notify=not args.no_notify, include_s3=not args.local_only)
    except Exception as exc:  # noqa: BLE001 - a monitoring plugin that fails must say UNKNOWN, exit 3
        reason = exc.sentence if isinstance(exc, OpsError) else f"{type(exc).__name__}: {exc}"
        if args.json:
            print(json.dumps({"state": "UNKNOWN", "exit_code": 3, "summary": f"UNKNOWN: {reason}", "checks": []}))
        else:
            print(f"UNKNOWN: opstower health could not run: {reason}")
        return int(HealthState.UNKNOWN)
    if args.json:
        print(json.dumps(report.as_dict(), default=str))
    else:
        for line in report.lines():
            print(line)
        if report.changed and report.previous:
            print(f"state changed: {report.previous} -> {report.state.name}")
        for n in report.notifications:
            if not n["ok"]:
                print(f"note: {n['channel']} notification to {n['destination']} failed: {n['error']}")
        if report.notify_error:
            print(f"note: notification not sent: {report.notify_error}")
    return report.exit_code
