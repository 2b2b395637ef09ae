"""Measured RPO: a drill phase recovers the WAL archive to latest, reads the heartbeat back and
reports the achieved data-loss window; without [pitr] the drill says the RPO is assumed.

One recovery in this module (about 30 s); the other drills here run no engine phase.
"""

from __future__ import annotations

import dataclasses
import time

import pytest

from opstower_core.backup import run_backup
from opstower_core.cli import main
from opstower_core.drill import DrillOptions, Phase, Scenario, render_drill_report, start_drill
from opstower_core.events import StepFinished, StepProgress, StepStarted
from opstower_core.pitr import beat, take_base_backup

TO_LATEST = Scenario("rpo_latest", "Recovery to latest", (Phase("Recovery to latest", 10, "pitr_latest"),))
MANUAL_ONLY = Scenario("manual_only", "Manual only", (Phase("Assessment", 5),))


@pytest.fixture(scope="module")
def drill_env(pitr_env):
    """A logical dump of `app` (a drill starts from one) and a base backup to recover from."""
    s = pitr_env.settings
    with pitr_env.conn("app") as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, note text)")
        c.execute("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 500) g")
    dump = run_backup(s)
    take_base_backup(s, s.target())
    return pitr_env, dump


def test_without_pitr_configured_the_phase_is_skipped_and_the_rpo_is_said_to_be_assumed(drill_env, capsys):
    env, dump = drill_env
    s = env.settings
    off = dataclasses.replace(s, pitr=dataclasses.replace(s.pitr, enabled=False))
    drill = start_drill(off, TO_LATEST, options=DrillOptions(unattended=True)).run_unattended()
    p = drill.phases[0]
    assert p.status == "SKIP" and p.reason == "RPO not measured: point-in-time recovery not configured"
    assert not drill.rpo_measured and drill.rpo_seconds == drill.backup_age_seconds
    assert drill.rpo_basis.startswith("RPO not measured: point-in-time recovery not configured; assumed from "
                                      f"the age of the logical dump {dump.name.filename}")
    md = render_drill_report(drill)
    assert "(assumed, not measured)" in md.split("RPO (data that could be lost)")[1].splitlines()[0]
    assert "\nRPO not measured: point-in-time recovery not configured; assumed from" in md
    assert "(assumed RPO)" in md and "## Point-in-time recovery (measured RPO)" in md
    # The CLI's status says the same.
    capsys.readouterr()
    assert main(["--config", str(env.config), "drill", "status", str(drill.id)]) == 0
    assert "RPO not measured: point-in-time recovery not configured" in capsys.readouterr().out


def test_a_scenario_without_a_recovery_to_latest_says_what_its_rpo_is_based_on(drill_env):
    env, _dump = drill_env
    drill = start_drill(env.settings, MANUAL_ONLY, options=DrillOptions(unattended=True)).run_unattended()
    assert not drill.rpo_measured
    assert drill.rpo_basis.startswith("RPO not measured: this scenario has no recovery to latest")
    assert drill.summary()["rpo_measured"] is False


def test_recovery_to_latest_measures_the_data_loss_window_from_the_recovered_heartbeat(drill_env, capsys):
    """Heartbeat 1 is archived, heartbeat 2 is not (archive_timeout off): the recovered data holds 1,
    the live server 2, and the window is counted from 1, on the live server's clock."""
    env, _dump = drill_env
    s = env.settings
    with env.conn() as c:
        c.execute("ALTER SYSTEM SET archive_timeout = 0")
        c.execute("SELECT pg_reload_conf()")
    try:
        archived = beat(s.target())
        env.switch_wal()
        time.sleep(2.0)
        unarchived = beat(s.target())
        events: list = []
        drill = start_drill(s, TO_LATEST, options=DrillOptions(unattended=True, rpo_minutes=30)) \
            .run_unattended(on_event=events.append)
        ended = time.time()
    finally:
        with env.conn() as c:
            c.execute("ALTER SYSTEM SET archive_timeout = 60")
            c.execute("SELECT pg_reload_conf()")
    p = drill.phases[0]
    assert p.status == "PASS", p.detail
    m = p.data["pitr"]
    assert m["heartbeat_ts"] == pytest.approx(archived.timestamp(), abs=1e-6)  # not the unarchived one
    assert m["live_heartbeat"] == unarchived.isoformat(sep=" ", timespec="seconds") and m["clock"] == "live server"
    gap = (unarchived - archived).total_seconds()
    assert m["behind_live_seconds"] == pytest.approx(gap, abs=0.01)
    assert m["window_seconds"] - m["live_age_seconds"] == pytest.approx(gap, abs=0.01)
    # The window runs from heartbeat 1 to the read-back, which came after the recovery.
    assert m["recovery_seconds"] < m["window_seconds"] <= ended - archived.timestamp() + 1
    assert drill.rpo_measured and drill.rpo_seconds == pytest.approx(m["window_seconds"])
    assert drill.rpo_basis.startswith("RPO measured: the newest heartbeat recovered from the WAL archive")
    assert drill.status == "passed" and drill.summary()["rpo_measured"] is True
    # Timed like any phase, with the recovery's steps inside it; the scratch cluster is gone.
    assert drill.phase_seconds(p) >= m["recovery_seconds"]
    started = [e.step for e in events if isinstance(e, StepStarted)]
    assert started[0] == "phase1" and {"fetch_base", "replay", "heartbeat", "discard"} <= set(started)
    assert any(isinstance(e, StepProgress) and e.unit == "lsn" for e in events)
    assert [e.status.value for e in events if isinstance(e, StepFinished) and e.step == "discard"] == ["PASS"]
    assert [st["step"] for st in m["steps"]] == ["fetch_base", "replay", "heartbeat", "discard"]
    scratch = s.pitr.scratch_dir
    assert scratch is not None and not any(scratch.iterdir())
    md = render_drill_report(drill)
    assert "(measured)" in md.split("RPO (data that could be lost)")[1].splitlines()[0]
    assert "\nRPO measured: the newest heartbeat recovered" in md
    assert "## Point-in-time recovery (measured RPO)" in md and "**Data-loss window (measured RPO)**" in md
    assert "Measured data-loss window" in md and "what a restore of it alone would have lost" in md
    capsys.readouterr()
    assert main(["--config", str(env.config), "drill", "status", str(drill.id)]) == 0
    out = capsys.readouterr().out
    assert "MET\n  RPO measured: the newest heartbeat" in out, out


def test_drill_sentences_name_no_cli_flag_in_the_console(drill_env):
    """Issue 16: the drill's next steps are said for the face in use (a flag in the CLI, a key in the console)."""
    from opstower_core import advice
    from opstower_core.drill import DrillStore, parse_scenarios
    from opstower_core.errors import OpsError

    env, _dump = drill_env
    runner = start_drill(env.settings, MANUAL_ONLY)

    def sentences() -> list[str]:
        out = []
        for attempt in (lambda: runner.skip_phase(" "), lambda: parse_scenarios("[scenarios.x]\nname = 1\n", "f.toml"),
                        lambda: DrillStore(env.settings.state_dir).load(99999)):
            with pytest.raises(OpsError) as caught:
                attempt()
            out.append(caught.value.sentence)
        return out

    cli = sentences()
    assert "pass --reason TEXT" in cli[0] and "--help" in cli[1] and "opstower drill list" in cli[2]
    advice.set_face("console")
    try:
        console = sentences()
    finally:
        advice.set_face("cli")
    assert not [s for s in console if "--" in s or "opstower " in s], console
    assert "k (Skip)" in console[0] and "drill screen (D)" in console[2]
    runner.abort("test done")
