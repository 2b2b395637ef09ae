"""Steps of a run with live status words (PASS / FAIL / WARN / SKIP, RUN while running)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.widget import Widget

from opstower_tui.formatting import STATUS_STYLE


@dataclass
class StepRow:
    step: str
    title: str
    index: int
    status: str = "WAIT"
    detail: str = ""
    seconds: float | None = None


class StepList(Widget):
    """One line per step: number, status word, title, detail, seconds."""

    DEFAULT_CSS = """
    StepList { height: auto; }
    """

    def __init__(self, steps: Iterable[tuple[str, str]] = (), *, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows: dict[str, StepRow] = {}
        self.set_steps(steps)

    def set_steps(self, steps: Iterable[tuple[str, str]]) -> None:
        self.rows = {step: StepRow(step, title, i) for i, (step, title) in enumerate(steps, 1)}
        self.refresh(layout=True)

    def _row(self, step: str, title: str = "") -> StepRow:
        if step not in self.rows:
            self.rows[step] = StepRow(step, title or step, len(self.rows) + 1)
            self.refresh(layout=True)
        return self.rows[step]

    def started(self, step: str, title: str) -> None:
        row = self._row(step, title)
        row.title = title or row.title
        row.status = "RUN"
        self.refresh()

    def finished(self, step: str, status: str, detail: str, seconds: float) -> None:
        row = self._row(step)
        row.status, row.detail, row.seconds = status, detail, seconds
        self.refresh()

    def stop_running(self, status: str = "SKIP", detail: str = "cancelled") -> None:
        """Mark a step left running (cancelled or failed run) so nothing says RUN forever."""
        for row in self.rows.values():
            if row.status == "RUN":
                row.status, row.detail = status, detail
        self.refresh()

    def status_of(self, step: str) -> str:
        return self.rows[step].status if step in self.rows else "WAIT"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            out[row.status] = out.get(row.status, 0) + 1
        return out

    def get_content_height(self, container, viewport, width: int) -> int:  # noqa: ANN001 - Textual signature
        return max(len(self.rows), 1)

    def render(self) -> Table:
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(width=2, justify="right")
        table.add_column(width=4)
        title_width = min(max((len(r.title) for r in self.rows.values()), default=10), 34)
        table.add_column(width=title_width, no_wrap=True, overflow="ellipsis")
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(width=6, justify="right")
        for row in self.rows.values():
            secs = f"{row.seconds:.1f}s" if row.seconds is not None else ""
            table.add_row(str(row.index), Text(row.status, style=STATUS_STYLE.get(row.status, "")),
                          row.title, Text(row.detail, style="dim" if row.status == "SKIP" else ""), secs)
        return table
