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
                   help="write the launcher and set the settings with ALTER SYSTEM (then reload); refused with "
                   "[pitr] read_only (another system's archive)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_enable)
    st = actions.add_parser("status", help="base backups, recoverable window, WAL gaps, archiver failures and lag")
    add_target(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_status)
    a = actions.add_parser("accidents", help="commits since the newest base backup that dropped, truncated or "
                           "changed many rows (pg_waldump of the archived WAL)")
    add_target(a)
    a.add_argument("--min-rows", type=int, default=1000, help="report DELETE/UPDATE of at least N rows (default 1000)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_accidents)
    h = actions.add_parser("heartbeat", help="write a timestamp row (opstower_heartbeat); a recovery reads it back")
    add_target(h)
    h.set_defaults(func=_heartbeat)


def add_restore_args(p: argparse.ArgumentParser) -> None:
    """`opstower restore --to-time/--to-lsn/--to-xid`: point-in-time recovery (wraps restore's own func)."""
    g = p.add_argument_group("point-in-time recovery (barman-cloud archive)",
                             "recover a scratch cluster to the moment, then: --copy-db DB (a database copied out), "
                             "--tables T1,T2 [--mode merge|replace] [--plan] (table recovery from it into the live "
                             "database; the table-recovery options above apply) and/or --keep")
    when = g.add_mutually_exclusive_group()
    when.add_argument("--to-time", metavar='"YYYY-MM-DD HH:MM:SS+ZZ"', help="recover to this moment")
    when.add_argument("--to-lsn", metavar="LSN", help="recover to this WAL position")
    when.add_argument("--to-xid", metavar="XID", type=int, help="recover to this transaction (see `pitr accidents`)")
    when.add_argument("--to-latest", action="store_true", help="recover to the end of the archive")
    g.add_argument("--inclusive", action="store_true", help="include the target (default: stop just before it)")
    g.add_argument("--exclusive", action="store_true", help="stop just before the target (the default)")
    g.add_argument("--copy-db", metavar="DB", help="copy database DB out of the recovered cluster into the live server")
    g.add_argument("--as", dest="copy_as", metavar="NAME", help="name of the copy (default DB_pitr_YYYYMMDDHHMMSS)")
    g.add_argument("--keep", action="store_true", help="keep the recovered cluster running and print how to use it")
    # --tables T1,T2 [--mode …] [--plan] (the table recovery's own arguments) take the rows from the
    # recovered cluster's database of the same name into the live one, then the cluster is discarded.
    plain = p.get_default("func")

    def dispatch(args: argparse.Namespace) -> int:
        if args.to_time or args.to_lsn or args.to_xid is not None or args.to_latest:
            return run_pitr_restore(args)
        return plain(args)

    p.set_defaults(func=dispatch)


def run_pitr_restore(args: argparse.Namespace) -> int:
    from datetime import datetime

    from opstower_core.cli.recover_cmd import wants_recovery
    from opstower_core.errors import UsageError
    from opstower_core.pitr import RecoveryTarget, read_heartbeat, recover_to
    from opstower_core.restore import copy_from_cluster

    settings = settings_from(args)
    when = None
    if args.to_time:
        try:
            when = datetime.fromisoformat(args.to_time)
        except ValueError:
            raise UsageError(f"--to-time {args.to_time!r} is not a time", "nothing was changed",
                             'write it as "YYYY-MM-DD HH:MM:SS+ZZ"') from None
        if when.tzinfo is None:
            when = when.astimezone()  # the operator's zone, said in the output below
    target = RecoveryTarget(time=when, lsn=args.to_lsn, xid=args.to_xid, exclusive=not args.inclusive)
    if args.artifact:
        raise UsageError(f"Two sources: the backup {args.artifact} and a point in time", "nothing was changed",
                         "give either ARTIFACT or --to-time/--to-lsn/--to-xid/--to-latest")
    wants_recovery(args)  # --mode, --into, … without --tables: said before anything else
    if not args.keep and not args.copy_db and not args.tables:
        raise UsageError("What should happen with the recovered data?", "nothing was changed",
                         "add --copy-db DB [--as NAME] (copy one database into the live server), --tables T1,T2 "
                         "(merge or replace tables of the live database from it) or --keep (keep the recovered "
                         "cluster as a server)")
    if args.tables:
        _check_tables_args(args)
    if args.wait_for_locks:
        settings = settings.with_changes(wait_for_locks_seconds=args.wait_for_locks)
    live = settings.target(args.database)
    show = _printer(args)
    cluster = recover_to(settings, live, target, show)
    try:
        beat = read_heartbeat(cluster.target(live.dbname)) if live.dbname else None
        if beat is not None:
            print(f"Heartbeat in the recovered data: {beat.isoformat(sep=' ', timespec='seconds')}"
                  f" (data-loss window: {(datetime.now(beat.tzinfo) - beat).total_seconds():.0f}s before now)")
        if args.copy_db:
            copied = copy_from_cluster(settings, cluster, args.copy_db, live, args.copy_as, show)
            if getattr(args, "json", False):
                print(json.dumps({"copied": {**copied.as_dict(), "as_it_was": target.describe()}}), flush=True)
            else:
                print(f"Copied {args.copy_db} as it was {target.describe()} into {copied.database} on "
                      f"{live.display_host} in {copied.seconds:.1f}s: {copied.proof}")
        code = 0
        if args.tables:
            code = _recover_tables(args, settings, cluster, target.describe())
        if args.keep:
            cluster.keep()
            for line in cluster.replacement_steps():
                print(line)
    finally:
        if not args.keep:
            cluster.discard()
    return code


def _check_tables_args(args: argparse.Namespace) -> None:
    """The table recovery's usage errors before a cluster is recovered (that takes minutes)."""
    from opstower_core.cli.recover_cmd import check_can_confirm, recovery_options, wants_recovery
    from opstower_core.errors import UsageError
    from opstower_core.recover import check_options

    if not wants_recovery(args):  # --mode copy without --into: a database of tables is --copy-db's job here
        raise UsageError("--mode copy from a point in time needs --into SCHEMA.TABLE", "nothing was changed",
                         "add --into, or copy the whole database with --copy-db DB")
    if args.plan and args.copy_db:
        raise UsageError("--plan previews the table recovery only", "nothing was changed", "drop --copy-db or --plan")
    check_options(recovery_options(args))
    check_can_confirm(args)


def _recover_tables(args: argparse.Namespace, settings, cluster, moment: str) -> int:  # noqa: ANN001
    """Merge / replace / copy tables from the recovered cluster's database into the live one."""
    from opstower_core.cli.recover_cmd import run_recovery_command
    from opstower_core.pitr import PitrSource

    live = settings.target(args.database)
    source = PitrSource(cluster, args.target_db or live.dbname, moment)
    return run_recovery_command(args, settings, source)


def _printer(args: argparse.Namespace):
    from opstower_core.events import StepFinished, StepProgress, StepStarted, event_to_dict

    def show(event) -> None:
        if getattr(args, "json", False):
            print(json.dumps(event_to_dict(event), default=str), flush=True)
        elif isinstance(event, StepStarted):
            print(f"{event.title} ...", flush=True)
        elif isinstance(event, StepProgress) and event.unit == "lsn" and event.total:
            print(f"  replayed {event.done * 100 // event.total}%", flush=True)
        elif isinstance(event, StepFinished):
            print(f"{event.status}: {event.detail} ({event.seconds:.1f}s)", flush=True)

    return show


def _status(args: argparse.Namespace) -> int:
    from opstower_core.pitr import pitr_status

    settings = settings_from(args)
    st = pitr_status(settings, settings.target(args.database))
    if args.json:
        print(json.dumps(st.as_dict(), default=str))
    else:
        print(f"Base backups: {len(st.backups)}")
        for b in st.backups:
            print(f"  {b.backup_id}  {b.status:<6} ended {b.end_time}  WAL {b.begin_wal}..{b.end_wal}  {b.size} bytes")
        print(f"Recoverable window: {st.earliest or '-'} .. {st.latest or '-'} (newest segment {st.latest_segment or '-'})")
        print(f"Archived segments: {st.segments}; timelines: {', '.join(map(str, st.timelines)) or '-'}")
        for h in st.history:  # the window follows the newest timeline
            print(f"  timeline {h['timeline']} branched from {h['parent']} at {h['switch_lsn']} ({h['reason']})")
        for a, b in st.gaps:
            print(f"  GAP: segments missing after {a} up to {b}: recovery cannot pass it")
        if st.archiver:
            a = st.archiver
            print(f"Archiver: {a['archived_count']} archived (last {a['last_archived_wal']}), {a['failed_count']} failed"
                  f"{' (FAILING now: ' + str(a['last_failed_wal']) + ')' if a['failing'] else ''}; lag {st.lag_seconds:.0f}s")
        elif st.archiver_error:
            print(f"Archiver: not read ({st.archiver_error})")
    bad = bool(st.gaps) or bool(st.archiver and st.archiver.get("failing"))
    return 2 if bad else 0


def _accidents(args: argparse.Namespace) -> int:
    from opstower_core.pitr import find_accidents

    settings = settings_from(args)
    found = find_accidents(settings, settings.target(args.database), min_rows=args.min_rows)
    if args.json:
        print(json.dumps([a.as_dict() for a in found]))
    elif not found:
        print("No drop, truncate or large delete/update since the newest base backup.")
    else:
        for a in found:
            print(a.line())
        print("Recover to just before one: opstower restore --to-xid XID --copy-db DB, --tables T1,T2 or --keep")
    return 0


def _heartbeat(args: argparse.Namespace) -> int:
    from opstower_core.pitr import beat

    settings = settings_from(args)
    print(f"heartbeat {beat(settings.target(args.database)).isoformat()}")
    return 0


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
    elif not args.apply and not report.ready and settings.pitr.read_only:
        # --apply would point this server's WAL into another system's archive: it is refused.
        print("The archive is another system's ([pitr] read_only): this server is not set to archive into it.",
              file=out)
    elif not args.apply and not report.ready:
        print("Run `opstower pitr enable --apply` to write the launcher and set these.", file=out)
    elif report.ready:
        print("WAL archiving is on.", file=out)
    return 0 if report.ready or report.restart_needed else 1
