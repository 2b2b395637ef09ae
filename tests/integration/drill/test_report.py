"""Markdown reports and drill timing: pauses, skips, over-budget phases, verdicts; the incident
report of a real restore outside a drill."""

from __future__ import annotations

import re
import uuid

from opstower_core.backup import run_backup
from opstower_core.config import Settings
from opstower_core.drill import (
    Drill,
    DrillRunner,
    DrillStore,
    Participant,
    Phase,
    PhaseRun,
    Scenario,
    render_drill_report,
)
from opstower_core.fmt import duration, minutes
from opstower_core.restore import RestoreOptions, plan_restore, render_incident_report, run_restore
from support.servers import admin_conn, create_database

T0 = 1_790_000_000.0  # a fixed incident time


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def manual_drill(tmp_path, rto=240.0, rpo=60.0, backup_age=1800.0) -> tuple[DrillRunner, FakeClock]:
    """A drill of three manual phases in a real state file, on a fake clock (no database needed)."""
    sc = Scenario("t", "Test | Scenario", (Phase("Assess", 10), Phase("Fix", 20), Phase("Check", 5)))
    drill = Drill(id=0, scenario=sc, target_name="db", database="db", backup="db_20260101_000000.dump.zst",
                  backup_created=T0 - backup_age, started_at=T0, rto_minutes=rto, rpo_minutes=rpo,
                  phases=[PhaseRun(i, p.name, p.kind, p.target_minutes, p.activities) for i, p in enumerate(sc.phases)],
                  participants=[Participant("Ana", "Drill lead")])
    store = DrillStore(tmp_path / "state")
    store.create(drill)
    clock = FakeClock()
    return DrillRunner(Settings(state_dir=tmp_path / "state"), drill, store, clock), clock


def test_pauses_are_not_counted_and_skips_count_at_their_target(tmp_path):
    runner, clock = manual_drill(tmp_path)
    clock.now += 60  # a minute before anyone starts
    runner.start_phase()
    clock.now += 300
    runner.pause()
    clock.now += 3600  # an hour of pause: lunch, or the SSH session dropped
    assert runner.drill.clock(clock.now) == 360
    runner.resume()
    clock.now += 420
    runner.complete_phase(note="found | the cause")
    d = runner.drill
    assert d.phase_seconds(d.phases[0]) == 720  # 12 min of a 10 min target
    assert d.over_budget(d.phases[0])
    assert d.phases[0].clock_at_end == 780
    runner.skip_phase("fixed by the vendor")
    runner.start_phase()
    clock.now += 120
    runner.add_note("Backups should run every 15 minutes", lesson=True)
    runner.complete_phase()
    d = runner.drill
    assert d.status == "passed"
    assert d.clock() == 900 and d.rto_seconds() == 900 + 20 * 60  # the skipped phase counts at 20 min
    assert d.rpo_seconds == 1800 and d.rpo_met

    # Reloaded from the state file, the numbers are the same.
    again = DrillStore(tmp_path / "state").load(d.id)
    assert again.rto_seconds() == d.rto_seconds() and again.paused_seconds == 3600

    md = render_drill_report(again, now=clock.now)
    assert "# DR Drill Report: Test | Scenario" in md
    assert "| 1 | Assess |   | 10 min | 10 min | 12m 00s | 13m 00s | ⚠️ PASS: OVER BUDGET by 2m 00s |" in md
    assert "| 2 | Fix |   | 20 min | 30 min | - | 13m 00s | ⏭️ SKIP: fixed by the vendor |" in md
    assert "| 3 | Check |   | 5 min | 35 min | 2m 00s | 15m 00s | ✅ PASS: within target |" in md
    assert "| RTO (time to recover) | 4h | 35m 00s (measured 15m 00s + 20m 00s of skipped phases' targets) |" in md
    assert "found \\| the cause" in md  # a pipe in a note does not break the table
    assert "1h 00m paused, not counted" in md
    assert "- Backups should run every 15 minutes" in md and "- [x] Document lessons learned" in md
    assert "Assess took 12m 00s against a target of 10 min." in md
    # Every table row has as many cells as its header.
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.M):
        rows = block.strip().splitlines()
        widths = {len(re.split(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, rows


def test_rto_and_rpo_missed_make_the_drill_fail(tmp_path):
    runner, clock = manual_drill(tmp_path, rto=10, rpo=15, backup_age=3600)
    for _ in range(3):
        runner.start_phase()
        clock.now += 240
        runner.complete_phase()
    d = runner.drill
    assert d.status == "failed" and not d.rto_met() and not d.rpo_met
    md = render_drill_report(d, now=clock.now)
    assert "**FAILED**" in md and md.count("❌ MISSED") == 2
    assert "| RTO (time to recover) | 10 min | 12m 00s | 2m 00s over | ❌ MISSED |" in md
    assert "45m 00s beyond the RPO" in md
    run = DrillStore(tmp_path / "state").state.last("drill", "db")
    assert run.status == "failed" and run.error == "RTO missed; RPO missed"


def test_in_progress_report_and_formatting():
    assert [duration(x) for x in (None, 0.04, 9.96, 42, 725, 7440)] == ["-", "0.0s", "10.0s", "42s", "12m 05s",
                                                                        "2h 04m"]
    assert [minutes(x) for x in (15, 60, 75, 240, 0.001, 2.5)] == ["15 min", "1h", "1h 15m", "4h", "0.1s",
                                                                    "2m 30s"]


def test_in_progress_drill_report_says_so(tmp_path):
    runner, clock = manual_drill(tmp_path)
    runner.start_phase()
    clock.now += 30
    md = render_drill_report(runner.drill, now=clock.now)
    assert "**IN PROGRESS (running)**" in md and "⏳ RUNNING" in md and "| Ended | not yet |" in md


def test_incident_report_of_a_real_restore(pg, make_settings, tmp_path):
    db = f"inc_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50);")
    settings = make_settings(db)
    backup = run_backup(settings)
    target_db = f"{db}_copy"
    plan = plan_restore(settings, backup.name.filename, db, RestoreOptions(target_db=target_db, force=True))
    result = run_restore(settings, plan)
    assert result.ok, result.sentence
    md = render_incident_report(result, notes=["restored for the audit | team"])
    assert md.startswith(f"# Incident Restore Report: {target_db}")
    assert f"`{backup.name.filename}`" in md and "(achieved RPO)" in md
    assert "| Step | Status | Time | Cumulative | Detail |" in md
    assert "| Restoring database from backup | ✅ PASS |" in md
    assert md.count("✅ MET") == 2
    assert "Verifying restored database: PASS" in md
    assert "restored for the audit \\| team" not in md and "- restored for the audit | team" in md
    assert "| Incident lead |" in md
    # The same result against a tight RPO: the backup is older than 0.001 minutes.
    assert "❌ MISSED" in render_incident_report(result, rpo_minutes=0.001)
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{target_db}" WITH (FORCE)')


def test_a_failed_automated_phase_misses_the_rto_however_fast_it_failed(tmp_path):
    """Nothing was recovered: a quick failure must not read as 'RTO met'."""
    runner, clock = manual_drill(tmp_path)
    d = runner.drill
    d.phases[1].kind = "restore"
    d.phases[1].status = "FAIL"
    d.phases[1].started_at, d.phases[1].finished_at = T0, T0 + 5
    d.phases[1].detail = "restore failed: cannot connect"
    assert not d.rto_met() and d.verdict() == "failed"
    md = render_drill_report(d, now=T0 + 10)
    assert "❌ MISSED" in md.split("RTO (time to recover)")[1].splitlines()[0]
    assert "within target" not in next(line for line in md.splitlines() if "| Fix |" in line)
