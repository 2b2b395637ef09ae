"""The newest runs of any kind (backup, verify, restore, drill) from the state file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from opstower_core.fmt import duration
from opstower_tui.formatting import STATUS_STYLE

RUN_WORDS = {"success": "PASS", "failed": "FAIL", "cancelled": "SKIP"}


def run_word(status: str) -> str:
    """The state file's run status as a status word (verify already records PASS/FAIL/WARN)."""
    return RUN_WORDS.get(status, status.upper())


class RecentRuns(Static):
    def show_runs(self, runs: list[Any], now: datetime) -> None:
        table = Table(box=None, padding=(0, 1), expand=True, show_edge=False, header_style="bold")
        table.add_column("WHEN", no_wrap=True, width=8, justify="right")
        table.add_column("RUN", no_wrap=True, width=11)
        table.add_column("", no_wrap=True, width=4)
        table.add_column("DATABASE / ARTIFACT", no_wrap=True, overflow="ellipsis", ratio=1)
        table.add_column("TOOK", no_wrap=True, width=7, justify="right")
        for run in runs:
            word = run_word(run.status)
            table.add_row(duration(now.timestamp() - run.started_at), run.kind, Text(word, STATUS_STYLE.get(word, "")),
                          what_ran(run), duration(run.duration_seconds) if run.duration_seconds else "-")
        if not runs:
            table.add_row("", "", "", Text("no runs recorded yet", style="dim"), "")
        self.update(table)


def what_ran(run: Any) -> str:
    """The subject of a run; a restore names the database it went INTO first (a drill's restore
    into `<db>_drill_…` must not read like a restore of production)."""
    if run.kind == "restore" and run.artifact and run.database:
        return f"{run.database} ← {run.artifact}"
    return run.artifact or run.database
