"""The command log: every client tool and server-changing statement a restore ran, in order, with outcomes."""

from __future__ import annotations

from opstower_core.events import CommandRan
from opstower_core.restore import RestoreOptions, plan_restore, render_incident_report, run_restore


def test_a_restore_records_its_commands_and_the_report_lists_them(live) -> None:
    seen: list[CommandRan] = []
    plan = plan_restore(live.settings, str(live.backup.path), options=RestoreOptions(force=True))
    result = run_restore(live.settings, plan, on_event=lambda e: seen.append(e) if isinstance(e, CommandRan) else None)
    assert result.ok, result.sentence
    text = [c.command for c in result.commands]
    assert any(t.startswith(("pg_restore", "/")) and "pg_restore" in t for t in text)  # the client tool
    assert any(t.startswith("CREATE DATABASE") for t in text)  # the staging database
    assert any("RENAME TO" in t for t in text)  # the swap
    assert all(c.outcome == "ok" and c.seconds >= 0 for c in result.commands)
    assert [c.command for c in seen] == text  # the same log reaches the console and the CLI's --json
    assert not any(t.lstrip().upper().startswith("SELECT COUNT") for t in text)  # reads are not logged
    report = render_incident_report(result)
    assert "## Commands run" in report and "RENAME TO" in report
