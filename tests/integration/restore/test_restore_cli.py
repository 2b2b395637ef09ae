"""`opstower restore` on the command line: help, the typed confirmation, no-TTY refusal,
--plan, --json and --discard-old."""

from __future__ import annotations

import io
import json

import pytest

from opstower_core.cli import main
from support.restore import databases


class FakeTerminal(io.StringIO):
    """Standard input as a terminal on which the operator types `text`."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def cfg(live, tmp_path):
    s, t = live.settings, live.settings.target()
    path = tmp_path / "opstower.toml"
    path.write_text(
        f'backup_dir = "{s.backup_dir}"\nstate_dir = "{s.state_dir}"\npg_bin = "{s.pg_bin}"\nmin_free_gb = 0\n'
        f'[targets.{t.name}]\nhost = "{t.host}"\nport = {t.port}\nuser = "{t.user}"\nrto_minutes = 30\n'
    )
    return str(path)


def test_help_covers_the_reference_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["restore", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "opstower restore <backup_file> [options]" in out
    for flag in ("--from-s3", "--force", "-h, --help", "--target-db", "--in-place", "--tables", "--plan",
                 "--create-roles", "--jobs", "--json", "--discard-old"):
        assert flag in out, flag
    assert "Download the backup from S3 before restoring".lower() in out.lower()
    assert "skip the confirmation prompt" in out and "type the database name" in out


def test_wrong_name_at_the_prompt_cancels_with_nothing_changed(live, cfg, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTerminal("yes\n"))
    assert main(["--config", cfg, "restore", str(live.backup.path)]) == 1
    out = capsys.readouterr()
    assert "[WARN] WARNING: This will COMPLETELY REPLACE the current database!" in out.out
    assert f"[WARN] Database: {live.db}" in out.out and f"Backup File: {live.backup.path}" in out.out
    assert "Type the database name to continue:" in out.out
    assert "did not match" in out.err and "nothing was changed" in out.err
    assert live.now() == live.damaged and not list(live.settings.backup_dir.glob("pre_restore_*"))


def test_typed_name_restores_and_prints_the_timing_table(live, cfg, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", FakeTerminal(f"{live.db}\n"))
    assert main(["--config", cfg, "restore", str(live.backup.path)]) == 0
    out = capsys.readouterr().out
    assert live.now() == live.backed_up
    assert "STEP" in out and "CUMULATIVE" in out and "Restoring database from backup" in out
    assert "of the 30-minute RTO budget: margin" in out
    assert "--discard-old" in out
    assert "[INFO]" in out and "Database restore completed successfully" in out


def test_no_terminal_and_no_force_refuses_in_one_line(live, cfg, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{live.db}\n"))
    assert main(["--config", cfg, "restore", str(live.backup.path)]) == 1
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: Refusing") and "--force" in lines[0]
    assert out.out == "" and live.now() == live.damaged


def test_plan_json_then_forced_json_run(live, cfg, capsys, monkeypatch):
    assert main(["--config", cfg, "restore", str(live.backup.path), "--plan", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["kind"] == "plan" and plan["mode"] == "swap" and plan["rto_minutes"] == 30
    assert [s["id"] for s in plan["steps"]][:3] == ["verify", "download", "confirm"]
    assert live.now() == live.damaged  # --plan changes nothing

    assert main(["--config", cfg, "restore", str(live.backup.path), "--force", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = {ln["kind"] for ln in lines[:-1]}
    assert kinds <= {"step_started", "step_progress", "step_log", "step_finished", "command_ran"}
    # The command log travels in the JSON stream too: what ran, when, how long, with what outcome.
    commands = [ln for ln in lines if ln["kind"] == "command_ran"]
    assert any("RENAME TO" in c["command"] for c in commands) and all(c["outcome"] == "ok" for c in commands)
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["ok"] is True and summary["rto_seconds"] == 1800
    assert [s["step"] for s in summary["steps"]] == [s["id"] for s in plan["steps"]]
    # A step beside the load adds only what the run waited for it; one after the switch (the pre-restore
    # copy of the kept database, VACUUM) adds nothing.
    clock = sum(0 if s.get("after_service") else s.get("waited", s["seconds"]) if s.get("parallel_with")
                else s["seconds"] for s in summary["steps"])
    assert summary["steps"][-1]["cumulative"] == pytest.approx(clock, abs=0.01)
    assert live.now() == live.backed_up

    old = summary["old_database"]
    assert main(["--config", cfg, "restore", "--list-old"]) == 0
    assert old in capsys.readouterr().out
    # Dropping the way back is confirmed like a restore: refused without a terminal, wrong name keeps it.
    assert main(["--config", cfg, "restore", "--discard-old", old]) == 1
    assert old in databases(live.pg, live.db)
    monkeypatch.setattr("sys.stdin", FakeTerminal("nope\n"))
    assert main(["--config", cfg, "restore", "--discard-old", old]) == 1
    assert old in databases(live.pg, live.db)
    monkeypatch.setattr("sys.stdin", FakeTerminal(old + "\n"))
    assert main(["--config", cfg, "restore", "--discard-old", old]) == 0
    assert old not in databases(live.pg, live.db)
    assert main(["--config", cfg, "restore", "--discard-old", live.db, "--force"]) == 2  # never a live database
    assert main(["--config", cfg, "restore", str(live.backup.path), "--force", "--target-db", "template1"]) == 2


def test_report_writes_an_incident_report(live, cfg, tmp_path, capsys):
    report = tmp_path / "incident.md"
    assert main(["--config", cfg, "restore", str(live.backup.path), "--force", "--report", str(report)]) == 0
    text = report.read_text()
    assert text.startswith("# Incident Restore Report")
    assert live.backup.path.name in text and "RTO (restore time)" in text and "RPO (backup age)" in text
    assert "## Restore step timing" in text and "| Step | Status | Time | Cumulative | Detail |" in text
    assert "PASS" in text.split("## Restore step timing")[1]
