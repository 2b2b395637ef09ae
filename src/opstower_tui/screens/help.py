"""Help (`?` / F1): the keys of the screen underneath, and what the status words mean."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from opstower_tui.formatting import STATUS_STYLE

STATUS_HELP = [
    ("PASS", "the check or step succeeded"),
    ("FAIL", "it failed: the detail says what to do next"),
    ("WARN", "it worked, with a caveat worth reading"),
    ("SKIP", "not run (not requested, or an earlier failure)"),
    ("OK", "newest backup within 2 h (RPO target 1 h)"),
    ("CRIT", "newest backup older than 4 h, or none"),
]


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar = [Binding("escape,q,question_mark,f1", "close", "Close", id="help.close")]

    def __init__(self, under: Any) -> None:
        super().__init__()
        self.under = under

    def _keys(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        seen: set[str] = set()
        for node in (self.under, self.app):
            for _key, binding in node._bindings:
                key = self.app.get_key_display(binding)
                # One line per action (f5 and ctrl+r both refresh), and a screen's binding of a key
                # shadows the app's ("2 Backups" is bound on both).
                action = binding.action.removeprefix("app.").removeprefix("screen.")
                if binding.id is None or not binding.description or action in seen or key in seen:
                    continue
                if node.check_action(binding.action.split("(")[0], ()) is False:
                    continue
                seen.update((action, key))
                table.add_row(key, binding.description)
        # Keys a screen's widgets handle (a choice picked with Space, Tab between fields) are no bindings:
        # the screen names them in HELP_KEYS.
        for key, meaning in getattr(self.under, "HELP_KEYS", ()):
            if key not in seen:
                seen.add(key)
                table.add_row(key, meaning)
        table.add_row(self.app.get_key_display(Binding("ctrl+p", "")), "Command palette: every action by name")
        return table

    def compose(self) -> ComposeResult:
        words = Table.grid(padding=(0, 2))
        words.add_column(no_wrap=True)
        words.add_column()
        for word, meaning in STATUS_HELP:
            words.add_row(Text(word, style=STATUS_STYLE[word]), meaning)
        title = getattr(self.under, "SCREEN_NAME", "") or "Console"
        read_only = getattr(self.app, "read_only", False)
        with VerticalScroll(id="dialog", classes="dialog -help"):
            yield Static(f"Help: {title}" + ("  [READ-ONLY: restore and back up are not offered]" if read_only else ""),
                         classes="dialog-title")
            yield Static(self._keys())
            yield Static("")
            yield Static(words)
            yield Static("Esc to close · keys can be remapped in the config: [keys] \"backups.verify\" = \"V\"",
                         classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
