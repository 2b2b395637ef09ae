"""A restore's incident report, as markdown."""

from __future__ import annotations

import time

from opstower_core import markdown as md
from opstower_core.fmt import MARK, duration, minutes, when
from opstower_core.restore.model import RestoreResult


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
    lines += md.table(["", ""], [
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
    lines += md.table(["Objective", "Target", "Achieved", "Margin", "Verdict"], [
        ["RTO (restore time)", minutes(plan.rto_minutes), duration(result.total_seconds),
         md.margin(result.margin_seconds), md.verdict(rto_met) + ("" if result.ok else " (restore did not complete)")],
        ["RPO (backup age)", minutes(rpo), duration(age), md.margin(rpo * 60 - age), md.verdict(age <= rpo * 60)],
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
    lines += md.table(["Step", "Status", "Time", "Cumulative", "Detail"], rows, "llrrl")
    checks = [s for s in result.steps if s.step in ("verify", "verify_restored")]
    lines += ["", "## Verification results", ""]
    lines += [f"- {s.title}: {s.status.value}: {s.detail}" for s in checks] or ["_No verification ran._"]
    lines += ["", "## Restore proof", ""] + _proof_lines(result)
    lines += ["", "## Commands run", ""] + md.command_log(result.as_dict()["commands"])
    lines += ["", "## Notes", ""] + ([f"- {n}" for n in notes] if notes else ["_No notes._"])
    lines += ["", "## Lessons learned", "", "- _None recorded yet: add them before sign-off._"]
    lines += md.signoff([], ("Incident lead", "Database administrator", "Management"))
    return "\n".join(lines).rstrip() + "\n"


def _proof_lines(result: RestoreResult) -> list[str]:
    """The restored database against the artifact: the proof's sentence, differences, what was not compared."""
    proof = result.proof
    lines = [f"- {proof.status}: {proof.sentence}"] if proof is not None else ["_No proof was made._"]
    if proof is not None:
        lines += [f"- difference: {d}" for d in proof.differences]
        lines += [f"- not compared: {n}" for n in proof.not_compared]
    if result.left_out:
        lines.append(f"- left out on request (restored without ownership and grants): {result.left_out}")
    return lines
