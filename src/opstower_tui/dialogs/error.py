"""An error from a worker, in the engine's own sentence: what failed, state, next step."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


def sentence_of(error: BaseException) -> str:
    """The operator's sentence for any exception (OpsError carries one; anything else gets one)."""
    sentence = getattr(error, "sentence", None)
    if sentence:
        return str(sentence)
    text = str(error) or type(error).__name__
    return (f"Unexpected error: {type(error).__name__}: {text}. Nothing else was started. "
            "Retry; if it happens again, run the same action with the CLI for the full log.")


class ErrorDialog(ModalScreen[None]):
    BINDINGS: ClassVar = [
        Binding("escape,enter,q", "close", "Close", id="error.close"),
    ]

    def __init__(self, sentence: str, title: str = "Error") -> None:
        super().__init__()
        self.sentence = sentence
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog -error"):
            yield Static(f"FAIL  {self.title_text}", classes="dialog-title")
            yield Static(self.sentence, id="error-sentence")
            yield Static("Enter or Esc to close", classes="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)
