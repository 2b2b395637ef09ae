"""`opstower restore ARTIFACT --tables T1,T2 [--mode merge|replace|copy] [--into NAME] …`: the table
recovery (recover/), reached through `opstower restore` (cli/restore.py dispatches here); with
--to-time/--to-lsn/--to-xid/--to-latest instead of ARTIFACT, cli/pitr.py recovers a cluster to
that moment and hands it here as the source."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from opstower_core.cli.render import JsonRenderer, renderer
from opstower_core.config import Settings
from opstower_core.errors import OpsError, UsageError
from opstower_core.events import CancelToken
from opstower_core.runs import signals

EXAMPLES = """\
  opstower restore latest --tables public.orders --plan            preview: what is missing, changed, new
  opstower restore latest --tables public.orders                   merge: put the missing rows back
  opstower restore latest --tables orders --overwrite-changed      … and the backup's values for changed rows
  opstower restore latest --tables orders --with-parents           … and the parent rows they reference
  opstower restore latest --tables orders --mode replace           the table as it was (or a dropped table)
  opstower restore latest --tables orders --into public.orders_restored   a copy to compare by hand
  opstower restore --to-xid 1234 --tables orders                   merge from the data as it was just before
                                                                    transaction 1234 (point-in-time recovery)"""


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("table recovery (with --tables)", EXAMPLES)
    g.add_argument("--mode", choices=("merge", "replace", "copy"),
                   help="merge (default): insert the backup's rows missing live, rows written since stay; replace: "
                   "the table as it was (a dropped table comes back with its indexes, keys, triggers, grants); copy: "
                   "with --into, the backup's table under another name; without, into a new <db>_tables_<ts> database")
    g.add_argument("--into", metavar="SCHEMA.TABLE", help="--mode copy: create this table from the backup's rows")
    g.add_argument("--overwrite-changed", action="store_true",
                   help="merge: also put back the backup's values of rows that differ live")
    g.add_argument("--with-parents", action="store_true",
                   help="merge: also insert the missing parent rows the recovered rows reference (foreign keys)")
    g.add_argument("--disable-triggers", action="store_true",
                   help="the live tables' user triggers do not fire for the recovered rows (re-enabled in the same "
                   "transaction)")


def wants_recovery(args: argparse.Namespace) -> bool:
    """--tables in merge or replace mode, or copy --into: the recovery engine; copy alone: the old selective restore."""
    extras = [flag for flag, on in (("--mode", args.mode), ("--into", args.into),
                                    ("--overwrite-changed", args.overwrite_changed),
                                    ("--with-parents", args.with_parents),
                                    ("--disable-triggers", args.disable_triggers)) if on]
    if extras and not args.tables:
        raise UsageError(f"{extras[0]} belongs to a table recovery", "nothing was changed",
                         "name the tables with --tables T1,T2")
    if not args.tables:
        return False
    return bool(args.into) or (args.mode or "merge") != "copy"


def recovery_options(args: argparse.Namespace):  # noqa: ANN201 - recover.RecoverOptions (imported late)
    """The table recovery's options from the command line; usage errors before anything is touched."""
    from opstower_core.recover import RecoverOptions

    if args.in_place:
        raise UsageError("--tables and --in-place cannot be combined", "nothing was changed", "drop --in-place")
    return RecoverOptions(
        tables=[t.strip() for t in args.tables.split(",") if t.strip()],
        mode=args.mode or ("copy" if args.into else "merge"), into=args.into,
        overwrite_changed=args.overwrite_changed, with_parents=args.with_parents,
        disable_triggers=args.disable_triggers, force=args.force, from_s3=args.from_s3, target_db=args.target_db)


def check_can_confirm(args: argparse.Namespace) -> None:
    if not args.plan and not args.force and not sys.stdin.isatty():
        raise OpsError("Refusing to change live tables without a typed confirmation: no terminal to ask on",
                       "nothing was changed", "run it on a terminal or pass --force")


def run_recovery_command(args: argparse.Namespace, settings: Settings, origin=None) -> int:  # noqa: ANN001
    """The table recovery from ARTIFACT, or from `origin` (a ready recover.RecoverySource: a recovered
    cluster's database, which the caller releases)."""
    from opstower_core.recover import preview_recovery, run_recovery
    from opstower_core.runs.history import StateStore

    options = recovery_options(args)
    origin = args.artifact if origin is None else origin
    render = renderer(args.json)
    out = sys.stderr if args.json else sys.stdout
    cancel = CancelToken()
    if args.plan:
        with signals.cancelling(cancel):
            plan = preview_recovery(settings, origin, options, args.database, on_event=render, cancel=cancel)
        if args.json:
            print(json.dumps({"kind": "plan", **plan.as_dict()}, default=str))
        else:
            print_plan(plan, sys.stdout)
        return 0
    check_can_confirm(args)
    with signals.cancelling(cancel) as flag:
        result = run_recovery(settings, origin, options, args.database, confirm=lambda p: ask(p, out),
                              on_event=render, cancel=cancel, state=StateStore(settings.state_dir))
    if isinstance(render, JsonRenderer):
        render.summary(result.as_dict())
    else:
        if result.plan is not None:
            print_plan(result.plan, sys.stdout, brief=True)
        print_result(result, sys.stdout)
    if not result.ok:
        print(f"ERROR: {result.sentence}", file=sys.stderr)
        return flag.exit_code if result.status == "cancelled" and cancel.cancelled else 1
    return 0


def _n(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def print_plan(plan, out: TextIO, brief: bool = False) -> None:  # noqa: ANN001 - recover.RecoveryPlan
    from opstower_core.recover import MODE_TEXT

    out.write(f"Table recovery: {plan.artifact or plan.source} -> {plan.live_db} on {plan.host}\n")
    out.write(f"Mode: {plan.mode} ({MODE_TEXT[plan.mode]}); RTO budget {plan.rto_minutes} min\n")
    out.write(f"Source: {plan.source}" + (" (dropped at the end)\n" if plan.artifact else "\n"))
    head = ("TABLE", "ACTION", "BACKUP", "LIVE", "MISSING", "CHANGED", "ONLY LIVE")
    rows = [(t.table, t.action, _n(t.backup_rows), _n(t.live_rows), _n(t.missing), _n(t.changed), _n(t.only_live))
            for t in plan.tables]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        out.write("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                  .rstrip() + "\n")
    out.write("Will do (parent tables first, one transaction):\n")
    for t in plan.tables:
        out.write(f"  {t.describe()}\n")
        if not brief:
            for note in t.notes:
                out.write(f"      {note}\n")
    for note in plan.notes:
        out.write(f"Note: {note}\n")
    out.flush()


def ask(plan, out: TextIO) -> str:  # noqa: ANN001 - recover.RecoveryPlan
    """The tables and counts, then the database name typed by the operator."""
    out.write("=" * 67 + "\n")
    out.write(f"[WARN] This CHANGES live tables of {plan.live_db} on {plan.host} ({plan.mode}):\n")
    for t in plan.tables:
        out.write(f"[WARN]   {t.describe()}\n")
    out.write("[WARN] A copy of these tables is taken first; everything runs in one transaction.\n")
    out.write("=" * 67 + "\n")
    out.write("Type the database name to continue: ")
    out.flush()
    with signals.installed():
        return sys.stdin.readline().strip()


def print_result(result, out: TextIO) -> None:  # noqa: ANN001 - recover.RecoveryResult
    width = max([len(s.title) for s in result.steps] + [4])
    out.write(f"\n{'STEP'.ljust(width)}  STATUS  SECONDS\n")
    for s in result.steps:
        out.write(f"{s.title.ljust(width)}  {s.status.value:<6}  {s.seconds:7.1f}\n")
    for t in result.tables:
        out.write(f"  {t.describe()} — {t.proof}\n")
    if result.ok and result.compared:
        out.write(f"Compared: {result.compared}\n")
    if result.ok:
        out.write(result.sentence + "\n")
    out.flush()
