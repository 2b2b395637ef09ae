"""The command log (L, lazygit's habit): every client tool and server-changing SQL statement the
console ran, with start time, duration and outcome, secrets masked — what to tell the incident
channel, and `w` writes it as markdown for the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, Static

from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.command_table import CommandTable
from opstower_tui.widgets.footer import KeysFooter

FOLLOW_SECONDS = 1.0  # commands a screen underneath runs meanwhile appear within a second


class CommandLogScreen(OpsScreen):
    SCREEN_NAME = "Command log"
    BINDINGS: ClassVar = [
        Binding("w", "write", "Write as markdown", id="commands.write"),
        Binding("escape,L", "close", "Back", id="commands.back"),
    ]
    HELP_KEYS: ClassVar = [("↑/↓ PgUp/PgDn", "move through the log; the line under the table shows the whole command"),
                           ("Home/End", "the oldest / the newest command")]

    def __init__(self) -> None:
        super().__init__()
        self._shown: tuple[int, Any] = (0, None)  # (length, newest entry) of the log as last shown

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="commands-count")
        yield CommandTable(id="commands")
        yield Static("", id="command-detail")
        yield KeysFooter()

    def on_mount(self) -> None:
        self._show_log(follow=True)
        self.query_one("#commands", CommandTable).focus()
        self.set_interval(FOLLOW_SECONDS, self._follow)

    def on_screen_resume(self) -> None:
        # The app installs one log screen and pushes it again on each L (no compose, no style pass
        # of new widgets): it opens on the newest entry, as a new one would.
        self._show_log(follow=True)

    def _show_log(self, follow: bool) -> None:
        log = self.ops.command_log
        table = self.query_one("#commands", CommandTable)
        # A copy: the log is a deque that the app appends to (and trims at its size) meanwhile.
        entries = list(log)
        table.set_entries(entries, cursor=None if follow else table.cursor_row)
        self._shown = (len(entries), entries[-1] if entries else None)
        self.query_one("#commands-count", Static).update(
            f"{len(entries):,} command(s) this console ran, oldest first" if entries else
            "Nothing run yet: restores, recoveries, backups and drills add their commands here")

    def _follow(self) -> None:
        if not self.is_current:  # installed but not shown: the next L shows the log as it is then
            return
        log = self.ops.command_log
        if (len(log), log[-1] if log else None) == self._shown:
            return
        table = self.query_one("#commands", CommandTable)
        self._show_log(follow=table.cursor_row >= table.row_count - 1)

    @on(CommandTable.Highlighted)
    def _detail(self, message: CommandTable.Highlighted) -> None:
        """The cursor's command whole (the table cuts it at the screen's width), and why it failed."""
        entry = message.entry
        text = "" if entry is None else entry.command + ("" if entry.outcome == "ok" else f"  [{entry.outcome}]")
        self.query_one("#command-detail", Static).update(text)

    def action_write(self) -> None:
        self.write_markdown(list(self.ops.command_log))

    @work(thread=True, exclusive=True, group="command-log-write", exit_on_error=False)
    def write_markdown(self, log: list[Any]) -> Path:
        from opstower_core.markdown import command_log

        path = Path(self.ops.settings.state_dir) / "reports" / f"commands-{time.strftime('%Y%m%d_%H%M%S')}.md"
        rows = [{"started": c.started, "seconds": c.seconds, "outcome": c.outcome, "step": c.step,
                 "command": c.command} for c in log]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Commands run from the console\n\n" + "\n".join(command_log(rows)) + "\n")
        return path

    def action_close(self) -> None:
        self.dismiss(None)

    def work_done(self, name: str, result: Any) -> None:
        if name == "write_markdown":
            self.notify(f"Written to {result}", title="Command log")
