"""DR drills end to end against the embedded PostgreSQL: every built-in scenario run headlessly
with real restores and verifications, reports, resume after a restart, unattended runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.drill import (
    DrillOptions,
    DrillRunner,
    DrillStore,
    Participant,
    builtin_scenarios,
    export_report,
    start_drill,
)
from opstower_core.errors import OpsError
from opstower_core.forecast.model import full_tests
from opstower_core.runs.history import StateStore
from support.servers import admin_conn, create_database

SCHEMA = """
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                     customer_id int REFERENCES customers, note text);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 200) g;
INSERT INTO orders (customer_id, note) SELECT 1 + g % 200, md5(g::text) FROM generate_series(1, 3000) g;
"""


def databases(pg) -> set[str]:
    with admin_conn(pg) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def table_rows(pg, db: str) -> dict[str, int]:
    with admin_conn(pg, db) as conn:
        names = [f"{s}.{t}" for s, t in conn.execute(
            "SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2")]
        return {n: conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}


@pytest.fixture(scope="module")
def env(pg, tmp_path_factory):
    """One small database with one custom-format backup; a config file for the CLI."""
    db = f"drl_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, SCHEMA)
    root = tmp_path_factory.mktemp("drill")
    (root / "config.toml").write_text(
        f'backup_dir = "{root / "backups"}"\nstate_dir = "{root / "state"}"\npg_bin = "{pg.bin_dir}"\n'
        f'min_free_gb = 0\ndefault_target = "{db}"\n[targets.{db}]\nhost = "{pg.host}"\nport = {pg.port}\n'
        f'user = "{pg.user}"\n[drills]\nscenarios_file = "extra-scenarios.toml"\n'
    )
    (root / "extra-scenarios.toml").write_text(TINY)
    settings = load_settings(root / "config.toml")
    backup = run_backup(settings)
    return settings, db, backup, root


TINY = """
[scenarios.tiny]
name = "Tiny Budget"
[[scenarios.tiny.phases]]
name = "Assessment"
target_minutes = 0.001
kind = "manual"
[[scenarios.tiny.phases]]
name = "Recovery"
target_minutes = 0.001
kind = "restore"
"""


def cli(root: Path, *argv: str) -> int:
    return main(["--config", str(root / "config.toml"), *argv])


def drive(runner: DrillRunner, pg, db: str, seen: dict) -> None:
    """Advance every phase as an operator would; look at each drill database while it exists."""
    while (p := runner.drill.current) is not None:
        if p.automated:
            q = runner.start_phase(note=f"{p.name} started by the test")
            if q.kind in ("restore", "selective_restore") and runner.drill.open:
                seen[q.name] = (q.data["database"], table_rows(pg, q.data["database"]))
        else:
            runner.start_phase()
            runner.add_note(f"{p.name}: done by hand")
            runner.complete_phase(note=f"{p.name} complete")


# The pitr_latest scenario recovers a PITR archive, not a backup: tests/integration/pitr/test_drill_rpo.py.
@pytest.mark.parametrize("scenario", sorted(s for s, sc in builtin_scenarios().items()
                                            if all(p.kind != "pitr_latest" for p in sc.phases)))
def test_every_builtin_scenario_runs_headless_with_a_real_restore(env, pg, tmp_path, scenario):
    settings, db, backup, _root = env
    source_rows = table_rows(pg, db)
    tables = ["public.orders"] if scenario == "data_deletion" else None
    runner = start_drill(settings, scenario, db, DrillOptions(
        participants=[Participant.parse("Ana Lima:Drill lead"), Participant.parse("Bo Chen:DBA")], tables=tables))
    before = databases(pg)
    # What the forecast learns from: restores, or else full tests (another test in this module may
    # have run either first, whatever the order the tests are dealt in).
    state = StateStore(settings.state_dir)
    measured_before = bool(state.runs("restore", limit=1) or full_tests(state.runs("verify", db, limit=50)))
    seen: dict = {}
    drive(runner, pg, db, seen)
    drill = runner.drill

    assert drill.status == "passed", [(p.name, p.status, p.detail) for p in drill.phases]
    assert all(p.status in ("PASS", "WARN") for p in drill.phases)
    assert drill.rpo_met and drill.rto_met()
    sc = builtin_scenarios()[scenario]
    assert [p.name for p in drill.phases] == [p.name for p in sc.phases]
    # The restore went into a drill database (never production) with the backup's rows, and is gone now.
    if scenario == "data_deletion":  # the whole backup, the deleted orders back, plus the row written since
        (name, rows), = seen.values()
        assert rows == {**source_rows, "public.orders": source_rows["public.orders"] + 1}
        assert "deleted rows came back" in drill.phases[1].detail
    elif scenario != "performance_degradation":
        (name, rows), = seen.values()
        assert rows == source_rows
    else:
        assert not seen
    for name, _rows in seen.values():
        assert name.startswith(f"{db}_drill_") and name != db
        assert name not in databases(pg)
    assert databases(pg) <= before | set()  # nothing left behind
    assert table_rows(pg, db) == source_rows  # production untouched

    # Cumulative times add up and are ordered; the drill is in the run history.
    ends = [p.clock_at_end for p in drill.phases]
    assert ends == sorted(ends) and ends[-1] <= drill.clock() + 1e-6
    run = StateStore(settings.state_dir).last("drill", db)
    assert run is not None and run.status == "success" and run.details["drill_id"] == drill.id

    out = export_report(settings, drill.id, tmp_path / "drill.md")
    md = out.read_text()
    assert f"# DR Drill Report: {sc.name}" in md
    assert "| # | Phase | Activities | Target | Planned cumulative | Actual | Cumulative | Status |" in md
    for p in sc.phases:
        assert f"| {p.name} |" in md
    assert md.count("✅ MET") == 2 and "MISSED" not in md
    assert "| Ana Lima | Drill lead |" in md and "## Sign-off" in md
    assert backup.name.filename in md
    assert "Full restoration test" in md  # the verify phase's checks
    if scenario != "performance_degradation":
        assert "## Restore step timing" in md and "Restoring database from backup" in md
        # Forecast (made before the restore, from earlier ones) against the drill's actual time (issue 18).
        fc = next(p.data["forecast"] for p in drill.phases if "forecast" in p.data)
        if measured_before:
            assert fc["seconds"] and fc["seconds"] > 0, fc
            assert re.search(r"Restore-time forecast: .+ \(from \d+ past runs?\), actual .+: [+-]\d+% "
                             r"\((within|outside) the 25%", md), md
        else:
            assert fc["seconds"] is None and "Restore-time forecast: none: " in md
    assert "done by hand" in md
    assert "- [x] Time each phase" in md


def test_over_budget_drill_fails_the_rto(env, pg, tmp_path):
    settings, db, _backup, root = env
    runner = start_drill(settings, "tiny", db, DrillOptions(rto_minutes=0.002))
    runner.start_phase()
    time.sleep(0.15)  # 0.001 min = 0.06 s
    runner.complete_phase()
    runner.start_phase()  # the restore takes longer than 0.12 s
    d = runner.drill
    assert d.status == "failed" and not d.failed_phases
    assert not d.rto_met() and d.over_budget(d.phases[0]) and d.over_budget(d.phases[1])
    md = export_report(settings, d, tmp_path / "r.md").read_text()
    assert "**FAILED**" in md
    assert "❌ MISSED" in md and md.count("OVER BUDGET by") == 2
    run = StateStore(settings.state_dir).last("drill", db)
    assert run.status == "failed" and "RTO missed" in run.error


def test_unattended_run_exit_codes_and_report(env, pg, tmp_path, capsys):
    settings, db, _backup, root = env
    report = tmp_path / "unattended.md"
    rc = cli(root, "drill", "run", "database_corruption", "--database", db, "--unattended", "--report", str(report))
    out = capsys.readouterr().out
    assert rc == 0, out
    md = report.read_text()
    assert md.count("unattended run: manual phase not performed") >= 3
    assert "⏭️ SKIP" in md and "| Recovery |" in md and "✅ MET" in md
    # The drill's restore carries its proof against the artifact.
    assert "**Restore proof (PASS):**" in md and "digests equal, inventory equal" in md
    # Skipped manual phases count at their targets: 15 + 15 + 30 minutes at least.
    d = DrillStore(settings.state_dir).recent(1)[0]
    assert d.rto_seconds() >= 60 * 60 and d.phases[2].status == "PASS"

    # The RTO missed: non-zero exit, and the report says so.
    rc = cli(root, "drill", "run", "performance_degradation", "-d", db, "--unattended",
             "--rto-minutes", "0.01", "--report", str(report))
    assert rc == 1
    assert "❌ MISSED" in report.read_text()
    # The RPO missed (the backup is older than a 0.001-minute budget): non-zero too.
    rc = cli(root, "drill", "run", "tiny", "-d", db, "--unattended", "--rpo-minutes", "0.001")
    assert rc == 1
    assert "RPO" in capsys.readouterr().out


def test_drill_resumes_after_a_restart_in_a_new_process(env, pg, tmp_path, capsys):
    settings, db, _backup, root = env
    assert cli(root, "drill", "start", "server_failure", "-d", db, "--participant", "Ana:Drill lead") == 0
    drill_id = int(capsys.readouterr().out.splitlines()[0])
    assert cli(root, "drill", "phase", str(drill_id), "start", "--note", "pager fired") == 0
    assert cli(root, "drill", "pause", str(drill_id)) == 0
    paused = DrillStore(settings.state_dir).load(drill_id)
    assert paused.status == "paused"
    clock_then = paused.clock()
    time.sleep(0.3)
    assert DrillStore(settings.state_dir).load(drill_id).clock() == pytest.approx(clock_then)

    # A new process (the SSH session dropped and came back) resumes and completes the phase.
    env_vars = {**os.environ, "OPSTOWER_CONFIG": str(root / "config.toml")}
    for args in (["resume"], ["phase", "complete", "--note", "cloud status green"]):
        cmd = [sys.executable, "-m", "opstower_core", "drill", args[0], str(drill_id), *args[1:]]
        done = subprocess.run(cmd, env=env_vars, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    d = DrillStore(settings.state_dir).load(drill_id)
    assert d.status == "running" and d.phases[0].status == "PASS"
    assert d.paused_seconds >= 0.3 and d.phases[0].paused_seconds >= 0.3  # paused time not counted
    assert d.current.name == "New Server Provisioning"
    assert [n["text"] for n in d.notes] == ["pager fired", "cloud status green"]

    # An automated phase whose process died is put back to pending on the next open.
    dead = subprocess.Popen(["true"])
    dead.wait()
    runner = DrillRunner.open(settings, drill_id)
    runner.skip_phase("provisioning is out of scope for this drill")
    store = DrillStore(settings.state_dir)
    d = store.load(drill_id)
    d.phases[2].status, d.phases[2].started_at = "running", time.time()
    d.phases[2].data = {"pid": dead.pid, "host": os.uname().nodename}
    store.save(d)
    runner = DrillRunner.open(settings, drill_id)
    assert runner.drill.phases[2].status == "pending" and "interrupted" in runner.drill.phases[2].detail

    # Status text, then the drill carried on to its end by the CLI.
    assert cli(root, "drill", "status", str(drill_id)) == 0
    assert "SKIP - provisioning is out of scope" in capsys.readouterr().out
    assert cli(root, "drill", "phase", str(drill_id), "start") == 0  # the restore, for real
    for _ in range(2):
        assert cli(root, "drill", "phase", str(drill_id), "skip", "--reason", "app team absent") == 0
    assert cli(root, "drill", "phase", str(drill_id), "start") == 0  # verification
    d = DrillStore(settings.state_dir).load(drill_id)
    assert d.status == "passed" and d.phases[2].status == "PASS"
    assert not any(n.startswith(f"{db}_drill_") for n in databases(pg))
    with pytest.raises(OpsError, match="has ended"):
        DrillRunner.open(settings, drill_id).start_phase()

    capsys.readouterr()
    assert cli(root, "drill", "list") == 0
    listing = capsys.readouterr().out
    assert "Complete Server Failure" in listing and "RTO trend" in listing
    out = tmp_path / "x.md"
    assert cli(root, "drill", "export", str(drill_id), "-o", str(out)) == 0
    assert "provisioning is out of scope" in out.read_text()


def test_keep_databases_and_abort(env, pg):
    settings, db, _backup, _root = env
    runner = start_drill(settings, "database_corruption", db, DrillOptions(keep_databases=True))
    for _ in range(2):
        runner.skip_phase("not rehearsed")
    runner.start_phase()
    kept = runner.drill.phases[2].data["database"]
    runner.abort("fire alarm")
    assert runner.drill.status == "aborted"
    assert kept in databases(pg)  # kept on request
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{kept}" WITH (FORCE)')

    runner = start_drill(settings, "database_corruption", db)
    runner.skip_phase("x")
    with pytest.raises(OpsError, match="has not been started"):
        runner.complete_phase()
    runner.start_phase()
    with pytest.raises(OpsError, match="already running"):
        runner.start_phase()
    runner.complete_phase()
    with pytest.raises(OpsError, match="automated"):
        runner.complete_phase()
    runner.start_phase()
    name = runner.drill.phases[2].data["database"]
    runner.abort("done")
    assert name not in databases(pg)
    assert StateStore(settings.state_dir).last("drill", db).status == "cancelled"


def test_start_refuses_a_plain_backup_for_a_selective_scenario_and_unknown_names(env, pg, tmp_path, capsys):
    settings, db, _backup, root = env
    with pytest.raises(OpsError, match="not a scenario"):
        start_drill(settings, "no_such_scenario", db)
    with pytest.raises(OpsError, match="No backup"):
        start_drill(settings.with_changes(backup_dir=tmp_path / "empty"), "database_corruption", db)
    plain_settings = settings.with_changes(backup_dir=tmp_path / "plain")
    plain = run_backup(plain_settings, options=BackupOptions(fmt="plain"))
    with pytest.raises(OpsError, match="needs a custom-format backup"):
        start_drill(plain_settings, "data_deletion", db)
    # A whole-database scenario takes the plain backup, and --json status is machine-readable.
    runner = start_drill(plain_settings, "database_corruption", db, DrillOptions(backup=str(plain.path)))
    assert runner.drill.backup == plain.name.filename
    capsys.readouterr()
    assert cli(root, "drill", "status", str(runner.drill.id), "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["scenario"] == "database_corruption" and status["phases"][0]["status"] == "pending"
    assert status["rpo_met"] is True and status["rto_target_seconds"] == 240 * 60
    runner.abort("test over")


def test_export_sends_a_notification_and_never_fails_on_it(env, tmp_path):
    settings, db, _backup, _root = env
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        runner = start_drill(settings, "performance_degradation", db)
        runner.abort("notification test")
        hooked = settings.with_changes(raw={"notify": {"webhook": {"url": f"http://127.0.0.1:{server.server_address[1]}/h"}}})
        export_report(hooked, runner.drill.id, tmp_path / "n.md")
    finally:
        server.shutdown()
        server.server_close()
    (body,) = received
    assert body["event"] == "drill" and body["database"] == db
    assert "Performance Degradation" in body["title"] and str(tmp_path / "n.md") in body["message"]
    # A broken [notify] table or an unreachable endpoint: the report is still written.
    broken = settings.with_changes(raw={"notify": {"webhook": {"url": "http://127.0.0.1:9/nothing"}, "bogus": 1}})
    assert export_report(broken, runner.drill.id, tmp_path / "m.md").exists()


def test_deletion_rehearsal_takes_the_largest_keyed_table_when_none_chosen(env, pg):
    settings, db, _backup, _root = env
    runner = start_drill(settings, "data_deletion", db, DrillOptions(keep_databases=True, unattended=True))
    drill = runner.run_unattended()
    assert drill.status == "passed" and drill.phases[0].status == "SKIP"
    kept = drill.phases[1].data["target_db"]
    assert drill.phases[1].data["tables"] == ["public.orders"]
    live = table_rows(pg, db)
    assert table_rows(pg, kept) == {**live, "public.orders": live["public.orders"] + 1}  # + the row written since
    assert drill.extra["cleanup"] == {"kept": [kept]}
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{kept}" WITH (FORCE)')


def test_two_drills_started_in_the_same_second_never_share_a_database(env, pg):
    settings, db, _backup, _root = env
    fixed = time.time()
    runners = [start_drill(settings, "database_corruption", db, clock=lambda: fixed) for _ in range(2)]
    for r in runners:
        r.skip_phase("x")
        r.skip_phase("x")
        r.start_phase()
    first, second = (r.drill.phases[2].data["target_db"] for r in runners)
    assert first != second and second.endswith(f"_d{runners[1].drill.id}")
    assert {first, second} <= databases(pg)
    runners[0].abort("done")
    assert first not in databases(pg) and second in databases(pg)
    runners[1].abort("done")
    assert second not in databases(pg)


def test_restore_into_production_only_when_asked_and_keeps_the_old_copy(pg, make_settings, tmp_path):
    db = f"prod_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, SCHEMA)
    settings = make_settings(db)
    run_backup(settings)
    with admin_conn(pg, db) as conn:
        conn.execute("DELETE FROM orders WHERE id > 100")  # the "incident"
    runner = start_drill(settings, "database_corruption", db, DrillOptions(into_production=True))
    runner.skip_phase("x")
    runner.skip_phase("x")
    p = runner.start_phase()
    old = p.data["old_database"]
    assert p.status == "PASS" and p.data["mode"] == "swap" and old and old.startswith(f"{db}_pre_restore_")
    assert table_rows(pg, db)["public.orders"] == 3000
    runner.abort("checked")
    assert old in databases(pg)  # the operator decides about the previous copy, not the drill
    md = export_report(settings, runner.drill, tmp_path / "prod.md").read_text()
    assert f"opstower restore --discard-old {old}" in md
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
        conn.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
