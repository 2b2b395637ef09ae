"""Ask for a database name (the restore wizard's "restore under another name")."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

MAX_NAME_BYTES = 63  # PostgreSQL cuts longer identifiers: refuse rather than restore under a cut name


class DatabaseNameDialog(ModalScreen[str | None]):
    """Returns the name typed (empty: back to the card's own database), None on Esc."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel", id="name.cancel")]

    def __init__(self, title: str, message: str, value: str = "") -> None:
        super().__init__()
        self.title_text, self.message, self.value = title, message, value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message)
            yield Input(value=self.value, placeholder="database name", id="db-name")
            yield Static("", id="name-problem")
            yield Static("Enter: plan it · empty: the live database again · Esc cancels", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        name = event.value.strip()
        problem = ""
        if len(name.encode()) > MAX_NAME_BYTES:
            problem = f"{len(name.encode())} bytes: PostgreSQL names are at most {MAX_NAME_BYTES}"
        elif "\x00" in name:
            problem = "a name cannot hold a NUL character"
        if problem:
            self.query_one("#name-problem", Static).update(f"FAIL: {problem}; type another name")
            return
        self.dismiss(name)

    def action_cancel(self) -> None:
        self.dismiss(None)
