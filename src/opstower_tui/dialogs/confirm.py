"""Confirmations: yes/no, a choice by key, and the restore's typed database name (k9s-style consent)."""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class YesNoDialog(ModalScreen[bool]):
    BINDINGS: ClassVar = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, title: str = "Confirm") -> None:
        super().__init__()
        self.question = question
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.question)
            yield Static("y = yes, n / Esc = no", classes="dialog-hint")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class TypedConfirmDialog(ModalScreen[str | None]):
    """Returns the typed name when it equals `expected`, None on Esc."""

    BINDINGS: ClassVar = [
        Binding("escape", "cancel", "Cancel", id="confirm.cancel"),
    ]

    def __init__(self, expected: str, message: str, title: str = "Confirm restore") -> None:
        super().__init__()
        self.expected = expected
        self.message = message
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog -danger"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message)
            yield Static(f"Type the database name ({self.expected}) and press Enter:")
            yield Input(placeholder=self.expected, id="typed-name")
            yield Static("", id="typed-problem")
            yield Static("Esc cancels; nothing has been changed yet", classes="dialog-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.value.strip() == self.expected:
            self.dismiss(event.value.strip())
        else:
            self.query_one("#typed-problem", Static).update(
                f"FAIL: {event.value.strip()!r} is not {self.expected!r}; nothing was changed. Type it exactly.")

    def action_cancel(self) -> None:
        self.dismiss(None)


class ChoiceDialog(ModalScreen[str | None]):
    """One of a few named choices by key (e.g. create the missing roles, or restore without grants);
    each line says what the choice does. Esc returns None."""

    BINDINGS: ClassVar = [Binding("escape", "cancel", "Cancel", id="choice.cancel")]

    def __init__(self, title: str, message: str, choices: list[tuple[str, str, str]]) -> None:
        """`choices`: (key, value returned, what it does)."""
        super().__init__()
        self.title_text, self.message, self.choices = title, message, choices

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message)
            for key, _value, text in self.choices:
                yield Static(f"{key}  {text}")
            yield Static("Esc cancels; nothing has been changed yet", classes="dialog-hint")

    def on_key(self, event: events.Key) -> None:
        for key, value, _text in self.choices:
            if event.key == key:
                event.stop()
                self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
