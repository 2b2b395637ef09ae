"""Markdown reports: a DR drill's report and a restore's incident report.

Both read well on GitHub as they are (pipe tables, task lists, headings) and in a
terminal: every status is a word, the emoji only repeat it.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opstower_core.drill import RUNNING, Drill, PhaseRun

if TYPE_CHECKING:
    from opstower_core.restore import RestoreResult

MARK = {"PASS": "✅", "MET": "✅", "WARN": "⚠️", "OVER": "⚠️", "FAIL": "❌", "MISSED": "❌", "SKIP": "⏭️",
        "RUNNING": "⏳", "PENDING": "·"}


# -- words and numbers shared with the CLI and the console ------------------------------------

def duration(seconds: float | None) -> str:
    """2.3s, 42s, 12m 03s, 2h 04m."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f}s"
    n = int(round(s))
    if n < 60:
        return f"{n}s"
    if n < 3600:
        return f"{n // 60}m {n % 60:02d}s"
    return f"{n // 3600}h {n % 3600 // 60:02d}m"


def minutes(value: float) -> str:
    """A target: "15 min", "4h", "1h 15m"; fractions of a minute as a duration."""
    if value * 60 < 60 or abs(value - round(value)) > 1e-9:
        return duration(value * 60)
    m = int(round(value))
    if m < 60:
        return f"{m} min"
    return f"{m // 60}h" if m % 60 == 0 else f"{m // 60}h {m % 60:02d}m"


def when(ts: float | None) -> str:
    """Local date and time with the UTC offset (drills are read across time zones)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def phase_status(drill: Drill, p: PhaseRun, now: float | None = None) -> tuple[str, str]:
    """(word, note): PASS / WARN / FAIL / SKIP / RUNNING / PENDING, and e.g. "over budget by 3m 05s"."""
    word = {"pending": "PENDING", RUNNING: "RUNNING"}.get(p.status, p.status)
    if p.status == "pending" and p.started_at is not None:
        note = "interrupted, to be started again"
    elif p.status == "SKIP":
        note = p.reason or "skipped"
    else:
        spent = drill.phase_seconds(p, now)
        if spent is not None and spent > p.target_seconds:
            note = f"OVER BUDGET by {duration(spent - p.target_seconds)}"
        elif spent is not None and p.status == "FAIL":
            note = p.detail or "failed"
        elif spent is not None and p.status != "pending":
            note = "within target"
        else:
            note = ""
    return word, note


def _cell(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _table(headers: list[str], rows: list[list[Any]], align: str = "") -> list[str]:
    align = align or "l" * len(headers)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _verdict(met: bool) -> str:
    return "✅ MET" if met else "❌ MISSED"


def _status_cell(word: str, note: str) -> str:
    mark = MARK["OVER"] if "OVER BUDGET" in note and word == "PASS" else MARK.get(word, "")
    return f"{mark} {word}" + (f": {note}" if note else "")


# -- the drill report -------------------------------------------------------------------------

def render_drill_report(drill: Drill, now: float | None = None) -> str:
    """The whole drill as markdown: scenario, people, backup and RPO, phases, verdicts, results, sign-off."""
    d = drill
    now = time.time() if now is None else now
    s = d.summary(now)
    verdict = d.status.upper() if not d.open else f"IN PROGRESS ({d.status})"
    lines = [f"# DR Drill Report: {d.scenario.name}", ""]
    if d.scenario.description:
        lines += [f"_{d.scenario.description}_", ""]
    lines += _table(["", ""], [
        ["Drill", f"#{d.id}"],
        ["Result", f"**{verdict}**"],
        ["Date", when(d.started_at)],
        ["Ended", when(d.finished_at) if d.finished_at else "not yet"],
        ["Scenario", f"{d.scenario.name} (`{d.scenario.id}`, {d.scenario.source})"],
        ["Database", f"`{d.database}` (target `{d.target_name}`)"],
        ["Backup restored", f"`{d.backup}`, taken {when(d.backup_created)}"],
        ["Backup age at the incident", f"{duration(d.rpo_seconds)} (achieved RPO)"],
        ["Mode", "unattended (scheduler)" if d.options.get("unattended") else "operator-led"],
    ])
    lines += ["", "## Verdicts", ""]
    measured, skipped = d.clock(now), d.skipped_target_seconds()
    rto_note = duration(s["rto_seconds"])
    if skipped:
        rto_note += f" (measured {duration(measured)} + {duration(skipped)} of skipped phases' targets)"
    lines += _table(["Objective", "Target", "Achieved", "Margin", "Verdict"], [
        ["RTO (time to recover)", minutes(d.rto_minutes), rto_note,
         _margin(d.rto_seconds_target - s["rto_seconds"]), _verdict(s["rto_met"])],
        ["RPO (data that could be lost)", minutes(d.rpo_minutes), duration(d.rpo_seconds),
         _margin(d.rpo_seconds_target - d.rpo_seconds), _verdict(s["rpo_met"])],
    ])
    failed = s["failed_phases"]
    lines += ["", f"Phases failed: {', '.join(failed) if failed else 'none'}. "
              f"Over budget: {', '.join(s['over_budget_phases']) or 'none'}. "
              f"Skipped: {', '.join(s['skipped_phases']) or 'none'}.", ""]
    lines += ["## Participants", ""]
    if d.participants:
        lines += _table(["Name", "Role"], [[p.name, p.role] for p in d.participants])
    else:
        lines += ["_None recorded._"]
    lines += ["", "## Phases", ""]
    lines += _phase_table(d, now)
    lines += _verification(d)
    lines += _restores(d)
    lines += _notes(d)
    lines += _findings(d, now)
    lines += ["", "## Lessons learned", ""]
    lines += [f"- {x}" for x in d.lessons] or ["- _None recorded yet: add them before sign-off._"]
    lines += _checklist(d)
    lines += _signoff([(p.name, p.role) for p in d.participants])
    return "\n".join(lines).rstrip() + "\n"


def _margin(seconds: float) -> str:
    return f"{duration(seconds)} to spare" if seconds >= 0 else f"{duration(-seconds)} over"


def _phase_table(d: Drill, now: float) -> list[str]:
    rows, planned = [], 0.0
    for p in d.phases:
        planned += p.target_seconds
        word, note = phase_status(d, p, now)
        spent = d.phase_seconds(p, now)
        cumulative = p.clock_at_end if p.clock_at_end is not None else (d.clock(now) if p.status == RUNNING else None)
        activities = p.activities + (f" ({p.kind.replace('_', ' ')}, automated)" if p.automated else "")
        rows.append([p.idx + 1, p.name, activities, minutes(p.target_minutes), minutes(planned / 60),
                     duration(spent) if p.status != "SKIP" else "-", duration(cumulative), _status_cell(word, note)])
    out = _table(["#", "Phase", "Activities", "Target", "Planned cumulative", "Actual", "Cumulative", "Status"],
                 rows, "rllrrrrl")
    gap = d.clock(now) - sum(d.phase_seconds(p, now) or 0.0 for p in d.phases if p.status != "SKIP")
    out += ["", f"Total: {minutes(d.scenario.target_minutes)} planned, {duration(d.clock(now))} on the drill clock "
            f"({duration(max(gap, 0.0))} between phases; {duration(d.paused_seconds)} paused, not counted)."]
    return out


def _verification(d: Drill) -> list[str]:
    out: list[str] = []
    restored = [(p, step) for p in d.phases for step in p.data.get("restore", {}).get("steps", [])
                if step["step"] == "verify_restored"]
    if restored:
        out += ["", "### Restored databases", ""]
        out += [f"- {p.name}: {MARK.get(step['status'], '')} {step['status']}: {step['detail']}" for p, step in restored]
    for p in d.phases:
        v = p.data.get("verify")
        if v:
            out += ["", f"### {p.name}: backup checks with the full restoration test", ""]
            out += _table(["Check", "Status", "Detail", "Time"],
                          [[r["title"], f"{MARK.get(r['status'], '')} {r['status']}", r["detail"], duration(r["seconds"])]
                           for r in v["results"]], "lllr")
    if not out:
        return ["", "## Verification results", "", "_No verification ran in this drill._"]
    return ["", "## Verification results", *out]


def _restores(d: Drill) -> list[str]:
    out: list[str] = []
    for p in d.phases:
        r = p.data.get("restore")
        if not r:
            continue
        where = r.get("database") or "(not restored)"
        tables = p.data.get("tables")
        out += ["", f"### {p.name}: restore into `{where}`" + (f" ({len(tables)} tables)" if tables else ""), ""]
        out += _table(["Step", "Status", "Time", "Cumulative", "Detail"],
                      [[s["title"], f"{MARK.get(s['status'], '')} {s['status']}", duration(s["seconds"]),
                        duration(s["cumulative"]), s["detail"]] for s in r.get("steps", [])], "llrrl")
        out += ["", f"Restore total {duration(r.get('total_seconds'))} of the {duration(r.get('rto_seconds'))} RTO "
                f"budget. {r.get('sentence', '')}".rstrip()]
    return (["", "## Restore step timing", *out]) if out else []


def _notes(d: Drill) -> list[str]:
    rows = []
    for n in d.notes:
        idx = n.get("phase")
        phase = d.phases[idx].name if isinstance(idx, int) and 0 <= idx < len(d.phases) else "(drill)"
        rows.append([f"+{duration(max(0.0, float(n['at']) - d.started_at))}", phase, n["text"]])
    for p in d.phases:
        if p.status == "SKIP":
            rows.append(["", p.name, f"skipped: {p.reason}"])
        elif p.status == "FAIL" and p.detail:
            rows.append(["", p.name, f"failed: {p.detail}"])
        if p.data.get("old_database"):
            old = p.data["old_database"]
            rows.append(["", p.name, f"the production database was replaced; its previous copy is kept as {old} "
                         f"(discard it with `opstower restore --discard-old {old}`)"])
    cleanup = d.extra.get("cleanup") or {}
    if cleanup.get("dropped"):
        rows.append(["end", "(drill)", "drill databases dropped: " + ", ".join(cleanup["dropped"])])
    if cleanup.get("kept"):
        rows.append(["end", "(drill)", "drill databases kept on request: " + ", ".join(cleanup["kept"])])
    for e in cleanup.get("errors", []):
        rows.append(["end", "(drill)", f"could not drop: {e}"])
    out = ["", "## Notes", ""]
    return out + (_table(["When", "Phase", "Note"], rows) if rows else ["_No notes._"])


def _findings(d: Drill, now: float) -> list[str]:
    out = []
    for p in d.phases:
        spent = d.phase_seconds(p, now)
        if spent is not None and p.status != "SKIP" and spent > p.target_seconds:
            out.append(f"{p.name} took {duration(spent)} against a target of {minutes(p.target_minutes)}.")
        if p.status == "FAIL":
            out.append(f"{p.name} failed: {p.detail}")
    if d.skipped_target_seconds():
        out.append(f"{sum(p.status == 'SKIP' for p in d.phases)} phase(s) were skipped; their targets "
                   f"({duration(d.skipped_target_seconds())}) count in the RTO as if they had run on time.")
    rpo_left = d.rpo_seconds_target - d.rpo_seconds
    out.append(f"The backup was {duration(d.rpo_seconds)} old at the incident: "
               + (f"{duration(rpo_left)} inside the RPO." if rpo_left >= 0 else
                  f"{duration(-rpo_left)} beyond the RPO; back up more often or check the schedule."))
    return ["", "## Findings", "", *[f"- {x}" for x in out]]


def _checklist(d: Drill) -> list[str]:
    """The reference's quarterly drill checklist (4.4), ticked where this drill shows it was done."""
    verified = any(p.kind == "verify" and p.status in ("PASS", "WARN") for p in d.phases)
    restored = any(p.data.get("restore", {}).get("ok") for p in d.phases)

    def box(done: bool, text: str) -> str:
        return f"- [{'x' if done else ' '}] {text}"

    return ["", "## Drill checklist", "",
            box(bool(d.participants), "Assign roles"),
            box(True, "Simulate disaster scenario"),
            box(restored or verified, "Execute recovery procedures"),
            box(True, "Time each phase"),
            box(bool(d.notes), "Document all actions"),
            box(restored or verified, "Validate restored data"),
            box(verified, "Run integrity checks"),
            box(False, "Test application functionality"),
            box(not d.open, "Measure actual vs target RTO/RPO"),
            box(True, "Generate drill report"),
            box(bool(d.lessons), "Document lessons learned"),
            box(False, "Update runbook with findings"),
            box(False, "Present to management"),
            box(False, "Implement improvements")]


def _signoff(people: list[tuple[str, str]], roles_needed: tuple[str, ...] = ("Drill lead", "Management")) -> list[str]:
    rows = [[name, role, "", ""] for name, role in people]
    roles = {r.lower() for _, r in people}
    for role in roles_needed:
        if role.lower() not in roles:
            rows.append(["", role, "", ""])
    return ["", "## Sign-off", "", *_table(["Name", "Role", "Signature", "Date"], rows)]


# -- the incident report --------------------------------------------------------------------------

def render_incident_report(result: RestoreResult, started_at: float | None = None, notes: list[str] | None = None,
                           rpo_minutes: float | None = None) -> str:
    """A restore run outside a drill, as markdown: backup and its age, step timing, RTO and RPO verdicts.

    `started_at` is when the restore began (unix seconds; default: now minus its duration).
    """
    plan = result.plan
    start = started_at if started_at is not None else time.time() - result.total_seconds
    created = plan.entry.created.timestamp()
    age = max(0.0, start - created)
    rpo = float(rpo_minutes if rpo_minutes is not None else plan.target.rpo_minutes)
    rto_met = result.ok and result.total_seconds <= result.rto_seconds
    lines = [f"# Incident Restore Report: {plan.live_db}", ""]
    lines += _table(["", ""], [
        ["Result", f"**{result.status.upper()}**" + (" (rolled back)" if result.rolled_back else "")],
        ["Date", when(start)],
        ["Database", f"`{plan.live_db}` on {plan.target.display_host}:{plan.target.display_port}"],
        ["Mode", plan.mode],
        ["Backup restored", f"`{plan.entry.filename}`, taken {when(created)}"],
        ["Backup age at the restore", f"{duration(age)} (achieved RPO)"],
        ["Database now holding the data", f"`{result.database}`" if result.database else "-"],
        ["Previous database kept as", f"`{result.old_database}`" if result.old_database else "-"],
        ["Pre-restore backup", f"`{result.pre_restore_artifact}`" if result.pre_restore_artifact else "-"],
    ])
    lines += ["", "## Verdicts", ""]
    lines += _table(["Objective", "Target", "Achieved", "Margin", "Verdict"], [
        ["RTO (restore time)", minutes(plan.rto_minutes), duration(result.total_seconds),
         _margin(result.margin_seconds), _verdict(rto_met) + ("" if result.ok else " (restore did not complete)")],
        ["RPO (backup age)", minutes(rpo), duration(age), _margin(rpo * 60 - age), _verdict(age <= rpo * 60)],
    ])
    lines += ["", "## What happened", "", result.sentence or "-"]
    if plan.notes:
        lines += ["", *[f"- {n}" for n in plan.notes]]
    lines += ["", "## Restore step timing", ""]
    rows, total = [], 0.0
    for s in result.steps:
        total += s.seconds
        rows.append([s.title, f"{MARK.get(s.status.value, '')} {s.status.value}", duration(s.seconds),
                     duration(total), s.detail])
    lines += _table(["Step", "Status", "Time", "Cumulative", "Detail"], rows, "llrrl")
    checks = [s for s in result.steps if s.step in ("verify", "verify_restored")]
    lines += ["", "## Verification results", ""]
    lines += [f"- {s.title}: {s.status.value}: {s.detail}" for s in checks] or ["_No verification ran._"]
    lines += ["", "## Notes", ""] + ([f"- {n}" for n in notes] if notes else ["_No notes._"])
    lines += ["", "## Lessons learned", "", "- _None recorded yet: add them before sign-off._"]
    lines += _signoff([], ("Incident lead", "Database administrator", "Management"))
    return "\n".join(lines).rstrip() + "\n"
