"""`opstower verify ARTIFACT [--full-test] [--json]`: the eight checks, in the reference's shape."""

from __future__ import annotations

import argparse
import gc

from opstower_core.cli.common import add_json, settings_from
from opstower_core.cli.render import JsonRenderer, renderer
from opstower_core.errors import OpsError
from opstower_core.events import CancelToken, Status
from opstower_core.runs.history import StateStore
from opstower_core.verify import VerifyResult, verify


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="run the eight verification checks on a backup",
        description="Checks: 1 exists, 2 readable, 3 not empty, 4 compression integrity, 5 PostgreSQL dump content, "
        "6 metadata, 7 S3 copy, 8 full restoration test (with --full-test). Exit 0 when nothing failed, 1 otherwise.",
    )
    p.add_argument("artifact", metavar="ARTIFACT",
                   help='a local path, a name from `opstower list`, an S3 key, or "latest"')
    p.add_argument("-d", "--dbname", "--database", dest="database", metavar="NAME",
                   help='the database (target name or database name) whose backups "latest" means '
                   "(default: PGDATABASE / first target)")
    p.add_argument("--full-test", action="store_true",
                   help="also restore into a scratch database and prove it equals the artifact")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Checks 1-7 are one short process whose garbage is acyclic: the cyclic collector would only
    # walk the import graph again and again (boto3's, imported during the read) and once more at
    # exit, ~0.3 CPU-s in all (issue 18). Off for them (a --full-test runs for minutes: it keeps
    # its collector); what is alive at the end is frozen, which the exit-time collection skips.
    if not args.full_test:
        gc.disable()
    try:
        return _run(args)
    finally:
        gc.freeze()
        gc.enable()


def _run(args: argparse.Namespace) -> int:
    render = renderer(args.json, numbered=True)
    try:
        settings = settings_from(args)
        if args.database:
            # "latest" and bare names resolve within this database's backups, never another target's.
            settings = settings.with_changes(default_target=settings.target(args.database).name)
        # Without --full-test nothing is proven against a restore: the per-table digests are not made.
        result = verify(settings, args.artifact, full_test=args.full_test, on_event=render, cancel=CancelToken(),
                        state=StateStore(settings.state_dir), digest=args.full_test)
    except OpsError as exc:
        if isinstance(render, JsonRenderer):
            render.summary({"ok": False, "error": exc.sentence})
            return 1
        print(f"[FAIL] FAIL: {exc.sentence}")
        return 1
    counts = {s: sum(1 for r in result.results if r.status == s) for s in Status}
    summary = {"ok": result.ok, "artifact": result.entry.filename, "status": result.status.value,
               "passed": counts[Status.PASS], "failed": counts[Status.FAIL], "warnings": counts[Status.WARN],
               "skipped": counts[Status.SKIP], "seconds": round(result.seconds, 2)}
    if isinstance(render, JsonRenderer):
        render.summary(summary)
    else:
        verdict = "VERIFICATION PASSED" if result.ok else "VERIFICATION FAILED"
        print(f"{verdict}: {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, {counts[Status.WARN]} warnings, "
              f"{counts[Status.SKIP]} skipped ({result.seconds:.1f} s) - {result.entry.filename}")
        if not result.ok:
            print(_advice(result))
    return 0 if result.ok else 1


def _advice(result: VerifyResult) -> str:
    """What to do after a failure. Only the off-site copy failing is no verdict on the local one."""
    failed = {r.step for r in result.failed}
    if failed == {"s3"}:
        return ("The local copy passed its checks; the off-site copy in S3 is missing or differs from it. "
                "Take a new backup (`opstower backup`) to get a good off-site copy, and check the bucket's "
                "lifecycle rules and the upload log.")
    return ("Do not rely on this backup: restore another one (`opstower list`) and take a new backup "
            "(`opstower backup`).")
