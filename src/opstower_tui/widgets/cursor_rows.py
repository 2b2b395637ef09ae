"""Cursor movement shared by the console's line tables (one row per line, under one header line)."""

from __future__ import annotations

from typing import Any

from textual.binding import Binding


def cursor_bindings(prefix: str) -> list[Binding]:
    """The tables' movement keys; `prefix` keeps each table's binding ids (the config's [keys] use them)."""
    return [
        Binding("up,k", "cursor(-1)", "Up", show=False, id=f"{prefix}.up"),
        Binding("down,j", "cursor(1)", "Down", show=False, id=f"{prefix}.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id=f"{prefix}.page_up"),
        Binding("pagedown", "page(1)", "Page down", show=False, id=f"{prefix}.page_down"),
        Binding("home,g", "jump(0)", "First", show=False, id=f"{prefix}.first"),
        Binding("end,G", "jump(-1)", "Last", show=False, id=f"{prefix}.last"),
    ]


class CursorRows:
    """Mixed into a ScrollView table, which says where its cursor is, moves it, and counts its rows."""

    size: Any  # the ScrollView's, after this class in the MRO
    scroll_y: float
    scroll_to: Any

    def _cursor_at(self) -> int:
        raise NotImplementedError

    def _cursor_to(self, index: int) -> None:
        raise NotImplementedError

    def _row_total(self) -> int:
        raise NotImplementedError

    def _scroll_to_cursor(self) -> None:
        visible = max(self.size.height - 1, 1)  # the header line is not a row
        top, at = int(self.scroll_y), self._cursor_at()
        if at < top:
            self.scroll_to(y=at, animate=False, immediate=True)
        elif at >= top + visible:
            self.scroll_to(y=at - visible + 1, animate=False, immediate=True)

    def move_cursor(self, index: int) -> None:
        if self._row_total():
            self._cursor_to(min(max(index, 0), self._row_total() - 1))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self._cursor_at() + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self._cursor_at() + direction * max(self.size.height - 2, 1))

    def action_jump(self, where: int) -> None:
        self.move_cursor(where if where >= 0 else self._row_total() - 1)
