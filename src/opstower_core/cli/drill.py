"""`opstower drill …`: DR drills from a terminal or a scheduler.

    opstower drill scenarios
    opstower drill start SCENARIO --database DB [--backup NAME] [--participant "Name:Role" ...]
    opstower drill status ID
    opstower drill phase ID start|complete|skip [--note TEXT] [--reason TEXT]
    opstower drill note ID TEXT [--lesson]
    opstower drill pause ID | resume ID | abort ID --reason TEXT
    opstower drill list
    opstower drill export ID -o FILE.md
    opstower drill run SCENARIO --database DB [--backup NAME] --unattended [--report FILE.md]

`run --unattended` exits 0 when the drill passed, 1 when a phase failed or the RTO or RPO
target was missed (so cron and CI can alert on it).
"""

from __future__ import annotations

import argparse
import json
import time

from opstower_core.cli.common import add_json, settings_from
from opstower_core.cli.render import renderer
from opstower_core.config import Settings
from opstower_core.drill import (
    Drill,
    DrillOptions,
    DrillRunner,
    DrillStore,
    Participant,
    export_report,
    load_scenarios,
    phase_status,
    scenario_files,
    start_drill,
)
from opstower_core.errors import UsageError
from opstower_core.events import CancelToken
from opstower_core.fmt import duration, minutes, when

SPARK = "▁▂▃▄▅▆▇█"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("drill", help="DR drills: scenarios, phase timing against the RTO, reports",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="drill_command", metavar="ACTION", required=True)

    s = dsub.add_parser("scenarios", help="list the scenarios (built in and from your scenarios.toml)")
    add_json(s)
    s.set_defaults(func=cmd_scenarios)

    _add_start_and_run(dsub)

    s = dsub.add_parser("status", help="a drill's phases, timers and verdicts")
    s.add_argument("id", metavar="ID")
    add_json(s)
    s.set_defaults(func=cmd_status)

    s = dsub.add_parser("phase", help="start, complete or skip the current phase")
    s.add_argument("id", metavar="ID")
    s.add_argument("action", choices=("start", "complete", "skip"))
    s.add_argument("--note", metavar="TEXT", help="note for the phase")
    s.add_argument("--reason", metavar="TEXT", help="why the phase is skipped (required with skip)")
    add_json(s)
    s.set_defaults(func=cmd_phase)

    s = dsub.add_parser("note", help="add a note (or a lesson learned) to a drill")
    s.add_argument("id", metavar="ID")
    s.add_argument("text", metavar="TEXT")
    s.add_argument("--lesson", action="store_true", help="record it under lessons learned")
    s.set_defaults(func=cmd_note)

    for name, helptext in (("pause", "stop the drill clock"), ("resume", "restart the drill clock / continue")):
        s = dsub.add_parser(name, help=helptext)
        s.add_argument("id", metavar="ID")
        s.set_defaults(func=cmd_pause if name == "pause" else cmd_resume)

    s = dsub.add_parser("abort", help="end a drill without a verdict (drill databases are dropped)")
    s.add_argument("id", metavar="ID")
    s.add_argument("--reason", required=True, metavar="TEXT")
    s.set_defaults(func=cmd_abort)

    s = dsub.add_parser("list", help="past drills with their RTO trend")
    add_json(s)
    s.set_defaults(func=cmd_list)

    s = dsub.add_parser("export", help="write a drill's markdown report")
    s.add_argument("id", metavar="ID")
    s.add_argument("-o", "--output", required=True, metavar="FILE.md")
    s.set_defaults(func=cmd_export)


def _add_start_and_run(dsub: argparse._SubParsersAction) -> None:
    """`drill start` (operator-led) and `drill run --unattended` share their choices."""
    for name, helptext in (("start", "start an operator-led drill and print its id"),
                           ("run", "run a drill from start to end (--unattended, for schedulers)")):
        s = dsub.add_parser(name, help=helptext)
        s.add_argument("scenario", metavar="SCENARIO", help="scenario id or name (opstower drill scenarios)")
        s.add_argument("-d", "--database", metavar="DB", help="target or database name (default: the default target)")
        s.add_argument("--backup", metavar="NAME", help="backup to restore (default: the newest one not failing "
                       "verification)")
        s.add_argument("--participant", metavar="NAME:ROLE", action="append", default=[],
                       help='who takes part, e.g. "Ana Lima:Drill lead" (repeat)')
        s.add_argument("--table", metavar="TABLE", action="append", dest="tables",
                       help="table to delete rows from and recover in the deletion scenario (repeat; default: the "
                       "largest table with a primary key)")
        s.add_argument("--keep-databases", action="store_true", help="keep the drill databases at the end")
        s.add_argument("--into-production", action="store_true",
                       help="restore phases REPLACE the live database instead of a drill database")
        s.add_argument("--rto-minutes", type=float, metavar="N", help="RTO budget for this drill (default: target's)")
        s.add_argument("--rpo-minutes", type=float, metavar="N", help="RPO budget for this drill (default: target's)")
        if name == "run":
            s.add_argument("--unattended", action="store_true", required=True,
                           help="run the automated phases, record the manual ones as skipped")
            s.add_argument("--report", metavar="FILE.md", help="write the markdown report here")
            add_json(s)
            s.set_defaults(func=cmd_run)
        else:
            s.set_defaults(func=cmd_start)


# -- scenarios -----------------------------------------------------------------------------

def cmd_scenarios(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    scenarios = load_scenarios(settings)
    if args.json:
        print(json.dumps({"files": [str(f) for f in scenario_files(settings)],
                          "scenarios": [s.to_dict() for s in scenarios.values()]}, indent=2))
        return 0
    for s in scenarios.values():
        print(f"{s.id}  {s.name}  ({minutes(s.target_minutes)} planned, {s.source})")
        for i, p in enumerate(s.phases, 1):
            kind = "" if p.kind == "manual" else f"  [{p.kind.replace('_', ' ')}]"
            print(f"  {i}. {p.name:<26} {minutes(p.target_minutes):>10}{kind}")
    files = scenario_files(settings)
    print("\nUser scenario files: " + (", ".join(str(f) for f in files) if files else "none"))
    return 0


# -- start / run ---------------------------------------------------------------------------

def _options(args: argparse.Namespace, unattended: bool) -> DrillOptions:
    return DrillOptions(backup=args.backup, participants=[Participant.parse(p) for p in args.participant],
                        tables=args.tables, keep_databases=args.keep_databases, into_production=args.into_production,
                        unattended=unattended, rto_minutes=args.rto_minutes, rpo_minutes=args.rpo_minutes)


def cmd_start(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runner = start_drill(settings, args.scenario, args.database, _options(args, False))
    d = runner.drill
    print(d.id)
    first = d.phases[0]
    print(f"Drill {d.id} started: {d.scenario.name} on {d.database}, backup {d.backup} "
          f"({duration(d.backup_age_seconds)} old). Next: opstower drill phase {d.id} start   ({first.name})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    render = renderer(args.json)
    runner = start_drill(settings, args.scenario, args.database, _options(args, True))
    if not args.json:
        print(f"[INFO] Drill {runner.drill.id}: {runner.drill.scenario.name} on {runner.drill.database}, "
              f"backup {runner.drill.backup}")
    drill = runner.run_unattended(on_event=render, cancel=CancelToken())
    if args.report:
        export_report(settings, drill, args.report)
    s = drill.summary()
    if args.json:
        print(json.dumps({"kind": "summary", "ok": drill.status == "passed", **s,
                          "report": args.report}, default=str))
    else:
        print(_status_text(drill))
        if args.report:
            print(f"Report written to {args.report}")
    return 0 if drill.status == "passed" else 1


# -- one drill -----------------------------------------------------------------------------

def _status_text(d: Drill, now: float | None = None) -> str:
    now = time.time() if now is None else now
    head = "IN PROGRESS" if d.status == "running" else d.status.upper()
    lines = [f"Drill {d.id}: {d.scenario.name} on {d.database} - {head}",
             f"Started {when(d.started_at)}; drill clock {duration(d.clock(now))} of the "
             f"{minutes(d.rto_minutes)} RTO",
             f"Backup {d.backup}, {duration(d.backup_age_seconds)} old at the incident",
             f"RPO {duration(d.rpo_seconds)} of {minutes(d.rpo_minutes)}: {'MET' if d.rpo_met else 'MISSED'}",
             f"  {d.rpo_basis}",
             "",
             f" #  {'Phase':<26} {'Target':>8} {'Actual':>8} {'Cumul.':>8}  Status"]
    for p in d.phases:
        word, note = phase_status(d, p, now)
        cum = p.clock_at_end if p.clock_at_end is not None else (d.clock(now) if p.status == "running" else None)
        spent = None if p.status == "SKIP" else d.phase_seconds(p, now)
        lines.append(f"{p.idx + 1:>2}  {p.name[:26]:<26} {minutes(p.target_minutes):>8} {duration(spent):>8} "
                     f"{duration(cum):>8}  {word}{' - ' + note if note else ''}")
    s = d.summary(now)
    lines.append("")
    rto = f"RTO {duration(s['rto_seconds'])} of {minutes(d.rto_minutes)}: {'MET' if s['rto_met'] else 'MISSED'}"
    if d.skipped_target_seconds():
        rto += " (skipped phases count at their targets)"
    lines.append(rto + ("" if not d.open else " so far"))
    if s["failed_phases"]:
        lines.append("Failed phases: " + ", ".join(s["failed_phases"]))
    cur = d.current
    if d.paused:
        lines.append(f"Paused. Next: opstower drill resume {d.id}")
    elif cur is not None:
        verb = "complete" if cur.status == "running" else "start"
        lines.append(f"Next: opstower drill phase {d.id} {verb}   ({cur.name}"
                     f"{', automated' if cur.automated else ''}; or skip --reason TEXT)")
    else:
        lines.append(f"Report: opstower drill export {d.id} -o drill-{d.id}.md")
    return "\n".join(lines)


def _drill_json(d: Drill) -> dict:
    now = time.time()
    return {**d.summary(now), "started_at": d.started_at, "finished_at": d.finished_at,
            "phases": [{"name": p.name, "kind": p.kind, "target_minutes": p.target_minutes, "status": p.status,
                        "seconds": d.phase_seconds(p, now), "cumulative": p.clock_at_end, "reason": p.reason,
                        "detail": p.detail, "over_budget": d.over_budget(p, now)} for p in d.phases]}


def cmd_status(args: argparse.Namespace) -> int:
    runner = DrillRunner.open(settings_from(args), args.id)
    if args.json:
        print(json.dumps(_drill_json(runner.drill), default=str))
    else:
        print(_status_text(runner.drill))
    return 0


def cmd_phase(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    runner = DrillRunner.open(settings, args.id)
    if args.action == "start":
        p = runner.start_phase(note=args.note, on_event=renderer(args.json), cancel=CancelToken())
    elif args.action == "complete":
        p = runner.complete_phase(note=args.note)
    else:
        if not args.reason:
            raise UsageError("skip needs --reason TEXT", "nothing was changed", "say why the phase is skipped")
        p = runner.skip_phase(args.reason, note=args.note)
    d = runner.drill
    if args.json:
        print(json.dumps(_drill_json(d), default=str))
        return 0 if p.status != "FAIL" else 1
    word, note = phase_status(d, p)
    print(f"Phase {p.idx + 1} {p.name}: {word}{' - ' + note if note else ''}")
    print(_status_text(d))
    return 0 if p.status != "FAIL" else 1


def cmd_note(args: argparse.Namespace) -> int:
    runner = DrillRunner.open(settings_from(args), args.id)
    runner.add_note(args.text, lesson=args.lesson)
    print(f"{'Lesson' if args.lesson else 'Note'} added to drill {runner.drill.id}.")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    runner = DrillRunner.open(settings_from(args), args.id)
    runner.pause()
    print(f"Drill {runner.drill.id} paused at {duration(runner.drill.clock())}. Resume: opstower drill resume "
          f"{runner.drill.id}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    runner = DrillRunner.open(settings_from(args), args.id)
    runner.resume()
    print(_status_text(runner.drill))
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    runner = DrillRunner.open(settings_from(args), args.id)
    runner.abort(args.reason)
    cleanup = runner.drill.extra.get("cleanup", {})
    print(f"Drill {runner.drill.id} aborted. Dropped: {', '.join(cleanup.get('dropped', [])) or 'nothing'}.")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    out = export_report(settings, args.id, args.output)
    print(f"Report for drill {args.id} written to {out}")
    return 0


# -- history -------------------------------------------------------------------------------

def rto_trend(drills: list[Drill]) -> dict[tuple[str, str], list[Drill]]:
    """Ended drills per (scenario, database), oldest first."""
    groups: dict[tuple[str, str], list[Drill]] = {}
    for d in sorted(drills, key=lambda x: x.started_at):
        if d.status in ("passed", "failed"):
            groups.setdefault((d.scenario.id, d.database), []).append(d)
    return groups


def spark(values: list[float]) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[int((v - lo) / span * (len(SPARK) - 1))] if hi > lo else SPARK[3] for v in values)


def cmd_list(args: argparse.Namespace) -> int:
    settings: Settings = settings_from(args)
    drills = DrillStore(settings.state_dir).recent()
    groups = rto_trend(drills)
    previous: dict[int, float] = {}
    for group in groups.values():
        for before, after in zip(group, group[1:], strict=False):
            previous[after.id] = before.rto_seconds()
    if args.json:
        print(json.dumps([{**d.summary(), "started_at": d.started_at,
                           "previous_rto_seconds": previous.get(d.id)} for d in drills], default=str))
        return 0
    if not drills:
        print("No drills yet. Start one: opstower drill start SCENARIO --database DB")
        return 0
    print(f"{'ID':>4}  {'Date':<16}  {'Scenario':<24} {'Database':<14} {'Result':<8} {'RTO':>8} {'Target':>8}  Trend")
    for d in drills:
        trend = "-"
        if d.id in previous:
            delta = d.rto_seconds() - previous[d.id]
            trend = "same" if abs(delta) < 1 else f"{duration(abs(delta))} {'slower' if delta > 0 else 'faster'}"
        elif d.status in ("passed", "failed"):
            trend = "first"
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.started_at))
        print(f"{d.id:>4}  {date:<16}  {d.scenario.name[:24]:<24} {d.database[:14]:<14} {d.status:<8} "
              f"{duration(d.rto_seconds()):>8} {minutes(d.rto_minutes):>8}  {trend}")
    print()
    for (_sid, db), group in groups.items():
        values = [d.rto_seconds() for d in group]
        print(f"RTO trend, {group[0].scenario.name} on {db} (oldest to newest): {spark(values)}  "
              f"{duration(values[0])} -> {duration(values[-1])} over {len(values)} drill(s)")
    return 0
