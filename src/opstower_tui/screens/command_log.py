"""The command log (L, lazygit's habit): every client tool and server-changing SQL statement the
console ran, with start time, duration and outcome, secrets masked — what to tell the incident
channel, and `w` writes it as markdown for the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from opstower_core.fmt import duration
from opstower_tui.formatting import STATUS_STYLE
from opstower_tui.screens.base import OpsScreen


class CommandLogScreen(OpsScreen):
    SCREEN_NAME = "Command log"
    BINDINGS: ClassVar = [
        Binding("w", "write", "Write as markdown", id="commands.write"),
        Binding("escape,L", "close", "Back", id="commands.back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="commands-count")
        table: DataTable = DataTable(id="commands", cursor_type="row", zebra_stripes=False)
        table.add_columns("WHEN", "TOOK", "OUTCOME", "STEP", "COMMAND")
        yield table
        yield Footer(compact=True)

    def on_mount(self) -> None:
        log = self.ops.command_log
        table = self.query_one("#commands", DataTable)
        for c in log:
            word = "ok" if c.outcome == "ok" else c.outcome.split(":")[0]
            table.add_row(time.strftime("%H:%M:%S", time.localtime(c.started)), duration(c.seconds),
                          Text(word, STATUS_STYLE["PASS"] if word == "ok" else STATUS_STYLE["FAIL"]), c.step,
                          c.command)
        if log:
            table.move_cursor(row=len(log) - 1)
        self.query_one("#commands-count", Static).update(
            f"{len(log)} command(s) this console ran, oldest first" if log else
            "Nothing run yet: restores, recoveries, backups and drills add their commands here")

    def action_write(self) -> None:
        from opstower_core.markdown import command_log

        log = self.ops.command_log
        path = Path(self.ops.settings.state_dir) / "reports" / f"commands-{time.strftime('%Y%m%d_%H%M%S')}.md"
        rows = [{"started": c.started, "seconds": c.seconds, "outcome": c.outcome, "step": c.step,
                 "command": c.command} for c in log]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Commands run from the console\n\n" + "\n".join(command_log(rows)) + "\n")
        self.notify(f"Written to {path}", title="Command log")

    def action_close(self) -> None:
        self.dismiss(None)

    def work_done(self, name: str, result: Any) -> None:  # no workers here
        pass
