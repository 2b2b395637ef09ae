"""`opstower restore ARTIFACT [options]` and `opstower restore --discard-old NAME`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

import humanize

from opstower_core.cli.common import add_json, add_target, seconds_arg, settings_from
from opstower_core.cli.render import JsonRenderer, renderer
from opstower_core.config import Settings
from opstower_core.errors import OpsError, UsageError
from opstower_core.events import CancelToken
from opstower_core.restore import (
    RestoreOptions,
    RestorePlan,
    RestoreResult,
    discard_old,
    list_leftover_databases,
    list_old_databases,
    mode_text,
    plan_restore,
    recover_interrupted,
    render_incident_report,
    run_restore,
    timing_table,
)
from opstower_core.runs import signals
from opstower_core.runs.history import StateStore
from opstower_core.storage.replica import settings_for_copy

EPILOG = """\
steps:
  1 verify the backup (checks 1-7)   2 download from S3 (when needed)   3 typed confirmation
  4 pre-restore backup               5 terminate connections            6 create / drop
  7 restore                          8 verify the restored database     9 ANALYZE, VACUUM, REINDEX
  Every step is timed against the RTO budget; the result goes to the run history.

safety:
  By default the backup is restored into a staging database, checked, and then swapped in
  by renaming (live -> <db>_pre_restore_<ts>, staging -> live, in one transaction). The old
  database stays until you discard it with --discard-old. --in-place drops and recreates the
  live database (as the reference script did), relying on the pre-restore backup; if any
  step fails, the previous state is put back. Without --force you are shown what will be
  replaced and must type the database name; anything else cancels (exit 1, nothing changed).

examples:
  opstower restore latest --plan
  opstower restore /var/backups/opstower/opstower_20260207_143000.sql.gz
  opstower restore database/20260207/opstower_20260207_143000.dump.zst --from-s3 --force
  opstower restore latest --tables public.orders,public.payments
  opstower restore latest --target-db opstower_copy
  opstower restore --discard-old opstower_pre_restore_20260207_150000
  opstower restore --recover          (after a restore was killed: finish or undo it)

exit status: 0 restored; 1 failed or cancelled (the message says what state things are in);
2 bad usage; 130/143/129 interrupted by SIGINT/SIGTERM/SIGHUP (rolled back).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore", help="restore a backup (verified, staged, swapped in, timed against the RTO)",
        description="Restore a database from a backup: verify it, download it from S3 if needed, confirm, take a "
        "pre-restore backup, restore into a staging database, check it, then switch it into place.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="opstower restore <backup_file> [options]\n       opstower restore --discard-old NAME",
    )
    p.add_argument("artifact", nargs="?", metavar="ARTIFACT",
                   help='backup to restore: a local path, a name from `opstower list`, an S3 key, or "latest"')
    add_target(p)
    p.add_argument("--from-s3", action="store_true", help="download the backup from S3 before restoring")
    p.add_argument("--from", dest="from_copy", choices=("primary", "replica"),
                   help="which off-site copy to read ([s3.replica]); default: the primary, the replica when the "
                   "primary is unreachable or its copy fails the checks")
    p.add_argument("--force", action="store_true", help="skip the confirmation prompt")
    p.add_argument("--target-db", metavar="NAME",
                   help="restore under this name; an existing NAME is what gets replaced, the original is untouched")
    p.add_argument("--in-place", action="store_true",
                   help="drop and recreate the live database (no room for two copies); rollback uses the "
                   "pre-restore backup")
    p.add_argument("--tables", metavar="T1,T2",
                   help="recover these tables into the live database (--mode merge by default); --mode copy without "
                   "--into restores them into a new <db>_tables_<ts> database instead")
    from opstower_core.cli.recover_cmd import add_options as add_recover_options

    add_recover_options(p)
    p.add_argument("--plan", action="store_true", help="show the steps, commands and SQL, then stop (dry run)")
    p.add_argument("--create-roles", action="store_true",
                   help="create the roles the backup needs that the server lacks, from its globals file (without "
                   "passwords; existing roles are never altered)")
    p.add_argument("--no-acl", action="store_true",
                   help="restore without ownership and grants (when roles the backup needs are missing and are not "
                   "to be created); the result says what was left out")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel pg_restore jobs (custom format; default: automatic)")
    p.add_argument("--reindex", action="store_true",
                   help="REINDEX after the load (skipped by default: pg_restore has just built every index)")
    p.add_argument("--discard-old", metavar="NAME",
                   help="drop a database kept by an earlier swap (or an abandoned leftover of a killed run), then exit")
    p.add_argument("--list-old", action="store_true",
                   help="list the databases kept by earlier swaps and the leftovers of killed runs, then exit")
    p.add_argument("--recover", action="store_true",
                   help="finish or undo a restore that was killed (from its journal in the state directory), then exit")
    p.add_argument("--wait-for-locks", type=seconds_arg, metavar="SECONDS",
                   help="how long any step may wait for a lock another session holds before failing, naming it, "
                   "and rolling back (default: wait_for_locks_seconds in the config, else 60)")
    p.add_argument("--report", metavar="FILE.md", help="write an incident report (markdown) of this restore")
    add_json(p)
    p.set_defaults(func=run)
    from opstower_core.cli.pitr import add_restore_args

    add_restore_args(p)  # --to-time / --to-lsn / --to-xid: point-in-time recovery (cli/pitr.py)




def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.wait_for_locks:
        settings = settings.with_changes(wait_for_locks_seconds=args.wait_for_locks)
    if args.recover:
        sentence = recover_interrupted(settings, args.database)
        _emit(args, {"ok": True, "recovered": sentence}, sentence)
        return 0
    if args.discard_old:
        return _discard_old(args, settings)
    if args.list_old:
        return _list_old(args, settings)
    if not args.artifact:
        raise UsageError("Which backup? Give ARTIFACT (a path, a name from `opstower list`, an S3 key or \"latest\")",
                         "nothing was changed", "see `opstower restore --help`")
    # Issue 17: the replica stands in when asked for, or when the primary is unreachable (said on stderr).
    settings, copy_note = settings_for_copy(settings, args.from_copy)
    args.from_s3 = args.from_s3 or args.from_copy == "replica"
    if copy_note:
        print(f"NOTE: {copy_note}", file=sys.stderr)
    from opstower_core.cli.recover_cmd import wants_recovery

    if wants_recovery(args):  # --tables in merge / replace / copy --into: the table recovery engine
        from opstower_core.cli.recover_cmd import run_recovery_command

        return run_recovery_command(args, settings)
    plan = _plan(args, settings)
    if args.plan:
        if args.json:
            print(json.dumps({"kind": "plan", **plan.as_dict()}, default=str))
        else:
            print_plan(plan, sys.stdout)
        return 0
    if plan.needs_confirmation and not sys.stdin.isatty():
        raise OpsError(f"Refusing to replace {plan.live_db} without a typed confirmation: no terminal to ask on",
                       "nothing was changed", "run it on a terminal or pass --force")
    return _restore(args, settings, plan)


def _discard_old(args: argparse.Namespace, settings: Settings) -> int:
    if not args.force:
        # The kept database is the only way back after a swap: as deliberate as a restore.
        if not sys.stdin.isatty():
            raise OpsError(f"Refusing to drop {args.discard_old} without a typed confirmation: no terminal to ask on",
                           "nothing was dropped", "run it on a terminal or add --force")
        print(f"This DROPS {args.discard_old}, the copy kept to go back to. Type its name to continue: ",
              end="", flush=True)
        if sys.stdin.readline().strip() != args.discard_old:
            raise OpsError("The name typed did not match", f"{args.discard_old} was not dropped", "")
    discard_old(settings, args.discard_old, args.database)
    _emit(args, {"ok": True, "discarded": args.discard_old}, f"Dropped {args.discard_old}.")
    return 0


def _list_old(args: argparse.Namespace, settings: Settings) -> int:
    rows = list_old_databases(settings, args.database)
    leftovers = list_leftover_databases(settings, args.database)
    if args.json:
        for name, size in rows:
            print(json.dumps({"name": name, "size_bytes": size, "kind": "kept_by_swap"}))
        for lo in leftovers:
            print(json.dumps(lo.as_dict()))
        return 0
    for name, size in rows:
        print(f"{name}  {humanize.naturalsize(size, binary=True)}")
    if not rows:
        print("No databases kept by earlier restores.")
    for lo in leftovers:
        what = "removable with --discard-old" if lo.removable else "kept"
        print(f"{lo.name}  {humanize.naturalsize(lo.size, binary=True)}  LEFTOVER of a killed {lo.kind} run "
              f"({lo.evidence}; {what})")
    return 0


def _plan(args: argparse.Namespace, settings: Settings) -> RestorePlan:
    options = RestoreOptions(
        from_s3=args.from_s3, force=args.force, target_db=args.target_db, in_place=args.in_place,
        tables=args.tables.split(",") if args.tables else None, jobs=args.jobs, create_roles=args.create_roles,
        no_acl=args.no_acl, reindex=args.reindex,
    )
    try:
        return plan_restore(settings, args.artifact, args.database, options)
    except OpsError as exc:
        if args.json:
            _emit(args, {"ok": False, "error": exc.sentence}, "")
        raise


def _restore(args: argparse.Namespace, settings: Settings, plan: RestorePlan) -> int:
    """Run the plan with Ctrl-C wired to a clean cancel; print the result; write the report if asked."""
    render = renderer(args.json)
    out = sys.stderr if args.json else sys.stdout
    if not args.json:
        print_plan(plan, out, brief=True)
    cancel = CancelToken()
    started = time.time()
    # Ctrl-C, SIGTERM (kill, systemctl stop) and SIGHUP (a dropped SSH session) all roll back cleanly:
    # they set the cancel flag, which the run polls and which cancels whatever waits on the server.
    with signals.cancelling(cancel) as flag:
        result = run_restore(settings, plan, confirm=lambda p: ask(p, out), on_event=render,
                             cancel=cancel, state=StateStore(settings.state_dir))
    if isinstance(render, JsonRenderer):
        render.summary(result.as_dict())
    else:
        print_result(result, sys.stdout)
    if args.report:
        Path(args.report).write_text(render_incident_report(result, started_at=started), encoding="utf-8")
        print(f"Incident report written to {args.report}", file=out)
    if not result.ok:
        print(f"ERROR: {result.sentence}", file=sys.stderr)
        return flag.exit_code if result.status == "cancelled" and cancel.cancelled else 1
    return 0


def _emit(args: argparse.Namespace, data: dict, text: str) -> None:
    print(json.dumps({"kind": "summary", **data}) if args.json else text)


def ask(plan: RestorePlan, out: TextIO) -> str:
    """The reference's WARNING block, then the database name typed by the operator.

    Ctrl-C here raises KeyboardInterrupt: the run reports "interrupted; nothing was changed"."""
    e, t = plan.entry, plan.target
    where = f"{t.display_host}:{t.display_port}"
    lines = ["=" * 67, "WARNING: This will COMPLETELY REPLACE the current database!", "=" * 67,
             f"Database: {plan.live_db}", f"Host: {where}"]
    if plan.artifact_database and plan.artifact_database != plan.live_db:
        lines.append(f"Backup of database: {plan.artifact_database}  ->  restored as: {plan.live_db} on {where}")
    lines += [
        f"Backup File: {e.local_path or e.s3_key}",
        f"Mode: {mode_text(plan)}",
        f"Connected sessions: {len(plan.sessions)} (they will be terminated)",
        "=" * 67,
    ]
    for line in lines:
        out.write(f"[WARN] {line}\n")
    out.write("Type the database name to continue: ")
    out.flush()
    with signals.installed():  # Ctrl-C (or SIGTERM, SIGHUP) at the prompt interrupts the read at once
        return sys.stdin.readline().strip()


def print_plan(plan: RestorePlan, out: TextIO, brief: bool = False) -> None:
    e = plan.entry
    out.write(f"Restore plan: {e.filename} ({humanize.naturalsize(plan.artifact_size, binary=True)}) -> "
              f"{plan.live_db} on {plan.target.display_host}:{plan.target.display_port} ({plan.server_version})\n")
    if plan.artifact_database:
        out.write(f"Backup of database: {plan.artifact_database} ({plan.identity_source})\n")
    out.write(f"Mode: {mode_text(plan)}; RTO budget {plan.rto_minutes} min\n")
    if plan.live_size is not None:
        out.write(f"Current {plan.live_db}: {humanize.naturalsize(plan.live_size, binary=True)}, "
                  f"{len(plan.sessions)} session(s) connected\n")
    for s in plan.sessions:
        out.write(f"  pid {s['pid']}  {s['user']}  {s['application'] or '-'}  {s['client'] or '-'}  {s['state']}  "
                  f"since {s['since'][:19]}\n")
    for note in plan.notes:
        out.write(f"Note: {note}\n")
    for i, step in enumerate(plan.steps, 1):
        if step.skip:
            out.write(f"{i:2}. {step.title}: skipped ({step.skip})\n")
            continue
        out.write(f"{i:2}. {step.title}" + (f": {step.detail}" if step.detail else "") + "\n")
        if not brief:
            for cmd in step.commands:
                out.write(f"      {cmd}\n")
    out.flush()


def print_result(result: RestoreResult, out: TextIO) -> None:
    rows = timing_table(result)
    width = max([len(t) for t, _, _ in rows] + [4])
    out.write(f"\n{'STEP'.ljust(width)}  STATUS  SECONDS  CUMULATIVE\n")
    for step, (title, seconds, total) in zip(result.steps, rows, strict=True):
        out.write(f"{title.ljust(width)}  {step.status.value:<6}  {seconds:7.1f}  {total:10.1f}\n")
    for step in result.steps:
        if step.data.get("after_service"):  # the restored database was in service: not on the clock
            out.write(f"  {step.title}: ran after the switch, with the restored database in service\n")
        elif step.data.get("parallel_with"):  # its seconds overlap others': the clock counts only the wait
            out.write(f"  {step.title}: ran in parallel with {', '.join(step.data['parallel_with'])}; the run "
                      f"waited {step.data.get('waited', 0.0):.1f} s for it\n")
    margin = result.margin_seconds
    clock = result.service_seconds if result.service_seconds is not None else result.total_seconds
    until = " until the restored database was in service" if result.service_seconds is not None else ""
    out.write(f"Total {clock:.1f} s{until} of the {result.plan.rto_minutes}-minute RTO budget: "
              f"{'margin' if margin >= 0 else 'OVER by'} {humanize.precisedelta(abs(margin), minimum_unit='seconds', format='%0.0f')}"
              + (f" ({result.total_seconds:.1f} s in all)" if until else "") + "\n")
    if result.ok:
        out.write(result.sentence + "\n")
    out.flush()
