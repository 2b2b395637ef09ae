"""`opstower doctor [--json]`: pre-flight checks, one line each, with the fix.

Exit 0 when nothing FAILed (warnings included), 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from opstower_core.cli.common import add_json, add_target, settings_from
from opstower_core.cli.render import JsonRenderer
from opstower_core.doctor import run_doctor
from opstower_core.events import Event, Status, StepFinished, StepStarted


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="pre-flight: tools, connection, privileges, S3 round trip, permissions, clock, alerts",
        description="Check everything backups and restores need, without changing anything: client tool versions, "
        "the connection and the role's privileges, an S3 put/multipart/get/list/delete round trip, storage class "
        "and encryption, backup directory permissions and free space, clock skew, secrets in readable files. "
        "Exit 0 when nothing FAILs, 1 otherwise.",
    )
    add_target(p)
    add_json(p)
    p.set_defaults(func=run)


class _Lines:
    """One line per check: `[WARN] Title: finding — fix: …`."""

    def __init__(self) -> None:
        self.titles: dict[str, str] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, StepStarted):
            self.titles[event.step] = event.title
        elif isinstance(event, StepFinished):
            print(f"[{event.status.value}] {self.titles.get(event.step, event.step)}: {event.detail}", flush=True)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    render = JsonRenderer() if args.json else _Lines()
    results = run_doctor(settings, args.database, on_event=render)
    counts = {s: sum(1 for r in results if r.status == s) for s in Status}
    ok = counts[Status.FAIL] == 0
    if isinstance(render, JsonRenderer):
        render.summary({"ok": ok, "passed": counts[Status.PASS], "warnings": counts[Status.WARN],
                        "failed": counts[Status.FAIL], "skipped": counts[Status.SKIP]})
    else:
        verdict = "READY" if ok else "NOT READY"
        print(f"{verdict}: {counts[Status.PASS]} passed, {counts[Status.WARN]} warnings, {counts[Status.FAIL]} failed, "
              f"{counts[Status.SKIP]} skipped", file=sys.stdout)
    return 0 if ok else 1
