"""A DR drill's report, as markdown."""

from __future__ import annotations

import time
from typing import Any

from opstower_core import markdown as md
from opstower_core.drill.remedies import say
from opstower_core.drill.state import RUNNING, Drill, PhaseRun
from opstower_core.fmt import MARK, duration, minutes, when


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


def render_drill_report(drill: Drill, now: float | None = None) -> str:
    """The whole drill as markdown: scenario, people, backup and RPO, phases, verdicts, results, sign-off."""
    d = drill
    now = time.time() if now is None else now
    s = d.summary(now)
    verdict = d.status.upper() if not d.open else f"IN PROGRESS ({d.status})"
    lines = [f"# DR Drill Report: {d.scenario.name}", ""]
    if d.scenario.description:
        lines += [f"_{d.scenario.description}_", ""]
    lines += md.table(["", ""], [
        ["Drill", f"#{d.id}"],
        ["Result", f"**{verdict}**"],
        ["Date", when(d.started_at)],
        ["Ended", when(d.finished_at) if d.finished_at else "not yet"],
        ["Scenario", f"{d.scenario.name} (`{d.scenario.id}`, {d.scenario.source})"],
        ["Database", f"`{d.database}` (target `{d.target_name}`)"],
        ["Backup restored", f"`{d.backup}`, taken {when(d.backup_created)}"],
        ["Backup age at the incident", f"{duration(d.backup_age_seconds)}"
         + (" (what a restore of it loses; the RPO below is measured)" if d.rpo_measured else " (assumed RPO)")],
        ["Mode", "unattended (scheduler)" if d.options.get("unattended") else "operator-led"],
    ])
    lines += ["", "## Verdicts", ""]
    measured, skipped = d.clock(now), d.skipped_target_seconds()
    rto_note = duration(s["rto_seconds"])
    if skipped:
        rto_note += f" (measured {duration(measured)} + {duration(skipped)} of skipped phases' targets)"
    lines += md.table(["Objective", "Target", "Achieved", "Margin", "Verdict"], [
        ["RTO (time to recover)", minutes(d.rto_minutes), rto_note,
         md.margin(d.rto_seconds_target - s["rto_seconds"]), md.verdict(s["rto_met"])],
        ["RPO (data that could be lost)", minutes(d.rpo_minutes),
         f"{duration(d.rpo_seconds)} ({'measured' if d.rpo_measured else 'assumed, not measured'})",
         md.margin(d.rpo_seconds_target - d.rpo_seconds), md.verdict(s["rpo_met"])],
    ])
    lines += ["", f"{d.rpo_basis}."]
    failed = s["failed_phases"]
    lines += ["", f"Phases failed: {', '.join(failed) if failed else 'none'}. "
              f"Over budget: {', '.join(s['over_budget_phases']) or 'none'}. "
              f"Skipped: {', '.join(s['skipped_phases']) or 'none'}.", ""]
    lines += ["## Participants", ""]
    if d.participants:
        lines += md.table(["Name", "Role"], [[p.name, p.role] for p in d.participants])
    else:
        lines += ["_None recorded._"]
    lines += ["", "## Phases", ""]
    lines += _phase_table(d, now)
    lines += _verification(d)
    lines += _restores(d)
    lines += _recoveries(d)
    lines += _pitr(d)
    lines += _notes(d)
    lines += _findings(d, now)
    lines += ["", "## Lessons learned", ""]
    lines += [f"- {x}" for x in d.lessons] or ["- _None recorded yet: add them before sign-off._"]
    lines += _checklist(d)
    lines += md.signoff([(p.name, p.role) for p in d.participants])
    return "\n".join(lines).rstrip() + "\n"


def _phase_table(d: Drill, now: float) -> list[str]:
    rows, planned = [], 0.0
    for p in d.phases:
        planned += p.target_seconds
        word, note = phase_status(d, p, now)
        spent = d.phase_seconds(p, now)
        cumulative = p.clock_at_end if p.clock_at_end is not None else (d.clock(now) if p.status == RUNNING else None)
        activities = p.activities + (f" ({p.kind.replace('_', ' ')}, automated)" if p.automated else "")
        rows.append([p.idx + 1, p.name, activities, minutes(p.target_minutes), minutes(planned / 60),
                     duration(spent) if p.status != "SKIP" else "-", duration(cumulative), md.status_cell(word, note)])
    out = md.table(["#", "Phase", "Activities", "Target", "Planned cumulative", "Actual", "Cumulative", "Status"],
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
            out += md.table(["Check", "Status", "Detail", "Time"],
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
        tables = None if p.data.get("deletion") else p.data.get("tables")  # the rehearsal restores every table
        out += ["", f"### {p.name}: restore into `{where}`" + (f" ({len(tables)} tables)" if tables else ""), ""]
        out += md.table(["Step", "Status", "Time", "Cumulative", "Detail"],
                      [[s["title"], f"{MARK.get(s['status'], '')} {s['status']}", duration(s["seconds"]),
                        duration(s["cumulative"]), s["detail"]] for s in r.get("steps", [])], "llrrl")
        out += ["", f"Restore total {duration(r.get('total_seconds'))} of the {duration(r.get('rto_seconds'))} RTO "
                f"budget. {r.get('sentence', '')}".rstrip()]
        out += _forecast_line(p.data.get("forecast"), r.get("total_seconds"))
        out += _proof_lines(r.get("proof"))
        if r.get("commands"):
            out += ["", "Commands run:", "", *md.command_log(r["commands"])]
    return (["", "## Restore step timing", *out]) if out else []


def _forecast_line(fc: dict | None, actual: float | None) -> list[str]:
    """Forecast (made before the restore ran, from past restores) against what the drill measured."""
    if fc is None:
        return []
    if fc.get("seconds") is None or not actual:
        return ["", f"Restore-time forecast: none: {fc.get('reason') or 'nothing measured'}."]
    off = (fc["seconds"] - actual) / actual * 100
    runs = fc.get("runs", 0)
    return ["", f"Restore-time forecast: {duration(fc['seconds'])} (from {runs} past run{'' if runs == 1 else 's'}), actual "
                f"{duration(actual)}: {off:+.0f}% ({'within' if abs(off) <= 25 else 'outside'} the 25% the forecast "
                "aims at)."]


def _recoveries(d: Drill) -> list[str]:
    """The deletion rehearsal: rows deleted and back per table, the rows written since, the recovery point."""
    out: list[str] = []
    for p in d.phases:
        r, dele = p.data.get("recovery"), p.data.get("deletion")
        if not r or not dele:
            continue
        outcomes = {t["table"]: t for t in r.get("tables", [])}
        rows, kept = [], []
        for t in dele["tables"]:
            o = outcomes.get(t["table"], {})
            back = o.get("inserted", 0) + o.get("updated", 0)
            since = (f"kept ({t['key'][0]} = {t['since_key']})" if t.get("since_key") is not None
                     else f"none staged: {t.get('since_note') or 'not possible'}")
            rows.append([f"`{t['table']}`", f"{t['rows_before']:,}", f"{t['deleted']:,}", f"{back:,}", since])
            if t.get("since_key") is not None:
                kept.append(t["table"])
        rp = p.data.get("recovery_point") or {}
        out += ["", f"### {p.name}: deleted rows recovered into `{p.data.get('database')}` (merge)", ""]
        out += md.table(["Table", "Rows in the backup", "Deleted", "Came back", "Row written since the backup"],
                        rows, "lrrrl")
        problems = dele.get("problems") or []
        out += ["", f"**{p.data.get('rows_back', 0):,} of {dele['deleted']:,} deleted rows came back**"
                + (" (every deleted row back with its values: row count and content digest equal the backup's)."
                   if r.get("ok") and not problems else "."),
                (f"The rows written since the backup were kept ({', '.join(kept)})." if kept
                 else "No row written since the backup could be staged, so keeping them was not checked.")]
        out += [f"- problem: {x}" for x in problems]
        if rp:
            out += [f"Recovery point: `{rp.get('backup')}`, taken {when(rp.get('taken_at'))}, "
                    f"{duration(rp.get('age_seconds'))} before the incident: rows written in that window exist "
                    "only in production and cannot come from this backup."]
        if r.get("pre_change_artifact"):
            gone = r["pre_change_artifact"] in ((d.extra.get("cleanup") or {}).get("removed") or [])
            out += [f"Pre-change copy of the tables: `{r['pre_change_artifact']}`"
                    + (" (removed with the drill database at the end)." if gone else ".")]
        out += ["", *md.table(["Recovery step", "Status", "Time", "Detail"],
                              [[s["title"], f"{MARK.get(s['status'], '')} {s['status']}", duration(s["seconds"]),
                                s["detail"]] for s in r.get("steps", [])], "llrl")]
        out += ["", f"Recovery total {duration(r.get('total_seconds'))} (in the phase's time and the drill's RTO). "
                f"{r.get('sentence', '')}".rstrip()]
    return (["", "## Recovery of deleted rows", *out]) if out else []


def _pitr(d: Drill) -> list[str]:
    """The recovery to latest: its steps, the heartbeat read back and the live server's beside it."""
    out: list[str] = []
    for p in d.phases:
        m = p.data.get("pitr")
        if p.kind != "pitr_latest" or not m:
            continue
        out += ["", f"### {p.name}: the WAL archive recovered to latest in a scratch cluster", ""]
        if not m.get("configured", True):
            out += ["RPO not measured: point-in-time recovery not configured (no [pitr] in the configuration), so "
                    "the RPO is the logical dump's age, assumed."]
            continue
        if m.get("steps"):
            out += md.table(["Step", "Status", "Time", "Detail"],
                            [[s["title"], f"{MARK.get(s['status'], '')} {s['status']}", duration(s["seconds"]),
                              s["detail"]] for s in m["steps"]], "llrl")
            out += [""]
        if m.get("error"):
            out += [f"**Not measured:** {m['error']}"]
            continue
        rows = [["Base backup", f"`{m.get('backup_id')}` (archive `{m.get('server_name')}`)"],
                ["Recovery reached", f"{m.get('reached')} in {duration(m.get('recovery_seconds'))}"],
                ["Newest heartbeat recovered", m.get("heartbeat") or "none: the heartbeat is not written there"],
                ["Live server's heartbeat at that moment", m.get("live_heartbeat") or m.get("live_note") or "-"],
                ["Read at", f"{m.get('read_at')} ({m.get('clock')} clock)"]]
        if m.get("window_seconds") is not None:
            rows.append(["**Data-loss window (measured RPO)**", f"**{duration(m['window_seconds'])}**"])
        if m.get("live_age_seconds") is not None:
            rows.append(["Live server's heartbeat age at that moment", duration(m["live_age_seconds"])])
        if m.get("behind_live_seconds") is not None:
            rows.append(["Recovered data behind the live server (the archive's lag)",
                         duration(m["behind_live_seconds"])])
        out += md.table(["", ""], rows)
        out += ["", "The scratch cluster was discarded; the live server was only read."]
    return (["", "## Point-in-time recovery (measured RPO)", *out]) if out else []


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
                         f"({say('discard_old', db=old)})"])
    cleanup = d.extra.get("cleanup") or {}
    if cleanup.get("dropped"):
        rows.append(["end", "(drill)", "drill databases dropped: " + ", ".join(cleanup["dropped"])])
    if cleanup.get("kept"):
        rows.append(["end", "(drill)", "drill databases kept on request: " + ", ".join(cleanup["kept"])])
    if cleanup.get("removed"):
        rows.append(["end", "(drill)", "pre-change copies of drill tables removed: " + ", ".join(cleanup["removed"])])
    for e in cleanup.get("errors", []):
        rows.append(["end", "(drill)", f"could not drop: {e}"])
    out = ["", "## Notes", ""]
    return out + (md.table(["When", "Phase", "Note"], rows) if rows else ["_No notes._"])


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
    if d.rpo_measured:
        out.append(f"Measured data-loss window {duration(d.rpo_seconds)} (a recovery to latest from the WAL archive): "
                   + (f"{duration(rpo_left)} inside the RPO." if rpo_left >= 0 else
                      f"{duration(-rpo_left)} beyond the RPO; check the archiver's lag and archive_timeout."))
        out.append(f"The logical dump {d.backup} was {duration(d.backup_age_seconds)} old at the incident: "
                   "what a restore of it alone would have lost.")
    else:
        out.append(f"The backup was {duration(d.rpo_seconds)} old at the incident: "
                   + (f"{duration(rpo_left)} inside the RPO." if rpo_left >= 0 else
                      f"{duration(-rpo_left)} beyond the RPO; back up more often or check the schedule.")
                   + f" {d.rpo_basis.split(';')[0]} (assumed from the dump's age).")
    return ["", "## Findings", "", *[f"- {x}" for x in out]]


def _checklist(d: Drill) -> list[str]:
    """The reference's quarterly drill checklist (4.4), ticked where this drill shows it was done."""
    verified = any(p.kind == "verify" and p.status in ("PASS", "WARN") for p in d.phases)
    restored = any(p.data.get("restore", {}).get("ok") for p in d.phases) or d.rpo_measured
    recovered = any(p.data.get("recovery", {}).get("ok") and p.status in ("PASS", "WARN") for p in d.phases)

    def box(done: bool, text: str) -> str:
        return f"- [{'x' if done else ' '}] {text}"

    return ["", "## Drill checklist", "",
            box(bool(d.participants), "Assign roles"),
            box(True, "Simulate disaster scenario"),
            box(restored or verified, "Execute recovery procedures"),
            box(True, "Time each phase"),
            box(bool(d.notes), "Document all actions"),
            box(restored or verified or recovered, "Validate restored data"),
            box(verified, "Run integrity checks"),
            box(False, "Test application functionality"),
            box(not d.open, "Measure actual vs target RTO/RPO"),
            box(True, "Generate drill report"),
            box(bool(d.lessons), "Document lessons learned"),
            box(False, "Update runbook with findings"),
            box(False, "Present to management"),
            box(False, "Implement improvements")]


def _proof_lines(proof: dict[str, Any] | None) -> list[str]:
    """What the restore proved against the artifact (per-table digests, inventory), or that it could not."""
    if not proof:
        return ["", "**Restore proof:** none (the restored database was not compared with the artifact)."]
    out = ["", f"**Restore proof ({proof.get('status', '?')}):** {proof.get('sentence', '')}"]
    out += [f"- differs: {d}" for d in proof.get("differences", [])]
    out += [f"- not compared: {n}" for n in proof.get("not_compared", [])]
    return out
