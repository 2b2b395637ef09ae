"""The command log's table: up to the log's 10,000 entries, with a cursor.

A Line API widget like the backups table: only the rows on screen are formatted and drawn,
so opening the log costs one copy of the list of entries, whatever its length. DataTable
measures and keys every row as it is added: seconds for 10,000.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from opstower_core.fmt import duration
from opstower_tui.formatting import truncate, truncate_middle
from opstower_tui.widgets.cursor_rows import CursorRows, cursor_bindings

# (header, width); width 0 = takes the rest (the command, cut with an ellipsis in the middle: the line
# under the table shows the cursor's command whole).
COLUMNS: list[tuple[str, int]] = [("WHEN", 8), ("TOOK", 7), ("OUTCOME", 9), ("STEP", 12), ("COMMAND", 0)]
MARK = "▶ "  # the cursor row is marked with a character too, not only a colour


def outcome_word(outcome: str) -> str:
    """"ok", "cancelled", or "failed" (the reason after the colon is in the detail line)."""
    return "ok" if outcome == "ok" else outcome.split(":")[0]


def cells_of(entry: Any) -> list[str]:
    """WHEN, TOOK, OUTCOME, STEP, COMMAND of one events.CommandRan, as shown."""
    return [time.strftime("%H:%M:%S", time.localtime(entry.started)), duration(entry.seconds),
            outcome_word(entry.outcome), entry.step, entry.command]


class CommandTable(CursorRows, ScrollView, can_focus=True):
    """Rows of the command log, oldest first; posts Highlighted when the cursor moves."""

    BINDINGS: ClassVar = cursor_bindings("commands")
    COMPONENT_CLASSES: ClassVar = {"command-table--header", "command-table--cursor", "command-table--ok",
                                   "command-table--failed"}
    DEFAULT_CSS = """
    CommandTable { overflow-x: hidden; }
    CommandTable > .command-table--header { text-style: bold; background: $panel; }
    CommandTable > .command-table--cursor { background: $secondary 40%; }
    CommandTable:focus > .command-table--cursor { background: $accent; color: $text; text-style: bold; }
    CommandTable > .command-table--ok { color: $success; }
    CommandTable > .command-table--failed { color: $error; text-style: bold; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=False, repaint=False)

    class Highlighted(Message):
        def __init__(self, table: CommandTable, entry: Any | None) -> None:
            self.table = table
            self.entry = entry
            super().__init__()

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.entries: Sequence[Any] = []

    # -- data ----------------------------------------------------------------------------
    def set_entries(self, entries: Sequence[Any], *, cursor: int | None = None) -> None:
        """Show `entries` (a list the widget may keep); the cursor goes to `cursor`, else the newest."""
        self.entries = entries
        self.virtual_size = Size(self.scrollable_content_region.width, len(entries) + 1)
        last = max(len(entries) - 1, 0)
        self.set_reactive(CommandTable.cursor_row, last if cursor is None else min(max(cursor, 0), last))
        self.watch_cursor_row()

    @property
    def row_count(self) -> int:
        return len(self.entries)

    def get_row_at(self, index: int) -> list[str]:
        return cells_of(self.entries[index])

    @property
    def selected(self) -> Any | None:
        return self.entries[self.cursor_row] if 0 <= self.cursor_row < len(self.entries) else None

    # -- cursor --------------------------------------------------------------------------
    def watch_cursor_row(self) -> None:
        self._scroll_to_cursor()
        self.refresh()
        self.post_message(self.Highlighted(self, self.selected))

    def _cursor_at(self) -> int:
        return self.cursor_row

    def _cursor_to(self, index: int) -> None:
        self.cursor_row = index

    def _row_total(self) -> int:
        return len(self.entries)

    def on_click(self, event: Any) -> None:
        if event.y >= 1:  # row 0 is the header
            self.move_cursor(int(self.scroll_y) + event.y - 1)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.entries) + 1)
        self._scroll_to_cursor()

    # -- drawing -------------------------------------------------------------------------
    def _widths(self, total: int) -> list[int]:
        fixed = sum(w for _h, w in COLUMNS) + len(COLUMNS) - 1 + len(MARK)
        return [w or max(total - fixed, 10) for _h, w in COLUMNS]

    @staticmethod
    def _line(values: list[str], widths: list[int]) -> list[str]:
        cells = [truncate(v, w).rjust(w) if i == 1 else truncate(v, w).ljust(w)
                 for i, (v, w) in enumerate(zip(values[:-1], widths, strict=False))]
        # A command's end tells it apart (the file, the database with its timestamp): cut in the middle.
        return [*cells, truncate_middle(values[-1], widths[-1]).ljust(widths[-1])]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width  # without the scroll bar
        widths = self._widths(width)
        if y == 0:
            text = " " * len(MARK) + " ".join(self._line([h for h, _w in COLUMNS], widths))
            return Strip([Segment(text.ljust(width)[:width], self.get_component_rich_style("command-table--header"))],
                         width)
        index = int(self.scroll_y) + y - 1
        if index >= len(self.entries):
            return Strip.blank(width, self.rich_style)
        cells = self._line(cells_of(self.entries[index]), widths)
        base = self.rich_style
        at_cursor = index == self.cursor_row
        if at_cursor:
            base = base + self.get_component_rich_style("command-table--cursor")
        segments = [Segment(MARK if at_cursor else " " * len(MARK), base)]
        for i, cell in enumerate(cells):
            style = base
            if i == 2 and not at_cursor:
                style = base + self.get_component_rich_style(
                    "command-table--ok" if cell.strip() == "ok" else "command-table--failed")
            segments.append(Segment(cell, style))
            if i < len(cells) - 1:
                segments.append(Segment(" ", base))
        used = sum(widths) + len(widths) - 1 + len(MARK)
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments, width).crop(0, width)
