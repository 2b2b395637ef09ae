"""One-line bars that read the same in colour, in 16 colours and with NO_COLOR.

TransferBar: bytes done / total with an ETA, for the streaming checks and downloads.
BudgetBar: elapsed time against the RTO target, with a status word.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from opstower_core.fmt import size
from opstower_tui.formatting import STATUS_STYLE, bar, clock, eta


class TransferBar(Widget):
    DEFAULT_CSS = """
    TransferBar { height: 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.label = ""
        self.done = 0
        self.total = 0
        self.unit = "bytes"
        self.started_at: float | None = None
        self.now = 0.0

    def update_progress(self, label: str, done: int, total: int, unit: str, now: float) -> None:
        if self.started_at is None or label != self.label or done < self.done:
            self.started_at = now
        self.label, self.done, self.total, self.unit, self.now = label, done, total, unit, now
        self.refresh()

    def reset(self) -> None:
        self.label, self.done, self.total, self.started_at = "", 0, 0, None
        self.refresh()

    def render(self) -> Text:
        if not self.label:
            return Text("")
        if self.unit == "bytes":
            amount = f"{size(self.done)} / {size(self.total)}" if self.total else size(self.done)
        else:
            amount = f"{self.done:,} / {self.total:,} {self.unit}" if self.total else f"{self.done:,} {self.unit}"
        elapsed = self.now - (self.started_at or self.now)
        fraction = self.done / self.total if self.total else 0.0
        tail = f" {fraction * 100:3.0f}%  {amount}  ETA {eta(self.done, self.total, elapsed)}"
        head = f"{self.label} "
        width = max(self.size.width - len(head) - len(tail), 4)
        return Text.assemble(head, (bar(fraction, width), "cyan"), tail)


class BudgetBar(Widget):
    """`RTO ████░░ 0:03:12 of 4:00:00 (1%) OK` — WARN past 80 %, OVER past the target."""

    DEFAULT_CSS = """
    BudgetBar { height: 1; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.budget_seconds = 0.0
        self.elapsed = 0.0

    def set_budget(self, seconds: float) -> None:
        self.budget_seconds = seconds
        self.refresh()

    def set_elapsed(self, seconds: float) -> None:
        self.elapsed = seconds
        self.refresh()

    @property
    def word(self) -> str:
        if not self.budget_seconds:
            return "-"
        share = self.elapsed / self.budget_seconds
        return "OVER" if share > 1 else "WARN" if share > 0.8 else "OK"

    def render(self) -> Text:
        if not self.budget_seconds:
            return Text("RTO budget: not set")
        share = self.elapsed / self.budget_seconds
        word = self.word
        head = "RTO "
        tail = f" {clock(self.elapsed)} of {clock(self.budget_seconds)} ({share * 100:.0f}%) "
        width = max(self.size.width - len(head) - len(tail) - len(word), 4)
        style = {"OVER": "bold red", "WARN": "bold yellow"}.get(word, STATUS_STYLE["OK"])
        return Text.assemble(head, (bar(share, width), style.replace("bold ", "")), tail, (word, style))
