"""Kept old databases (K on the Dashboard): the copies earlier swaps kept (`<db>_pre_restore_<ts>`)
and the leftovers of killed runs, for the focused card's database; `x` discards the selected one.

A kept copy is the fastest way back after a restore; dropping it is confirmed (typed name on a
production target). A leftover is dropped only when the engine proves its run is gone.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header, Static

from opstower_core.fmt import size
from opstower_tui.screens.base import OpsScreen


def _belongs(name: str, marker: str, dbname: str) -> bool:
    """Whether `name` (`<prefix><marker>…`) is one of `dbname`'s; long names are cut to fit 63 bytes."""
    at = name.rfind(marker)
    prefix = name[:at] if at >= 0 else ""
    return prefix == dbname or (len(prefix) >= 30 and dbname.startswith(prefix))


class OldDatabasesScreen(OpsScreen):
    SCREEN_NAME = "Kept old databases"
    BINDINGS: ClassVar = [
        Binding("x", "discard", "Discard (DROP)", id="old_dbs.discard"),
        Binding("f5,ctrl+r", "reload", "Refresh", show=False, id="old_dbs.refresh"),
        Binding("escape", "close", "Back", id="old_dbs.close"),
    ]

    def __init__(self, target_name: str | None) -> None:
        super().__init__()
        self.target_name = target_name
        self.rows: list[tuple[str, int, str, bool]] = []  # name, size, kind, removable

    def _target(self) -> Any:
        settings = self.ops.settings
        return settings.targets[self.target_name or settings.default_target]

    def subtitle(self) -> str:
        target = self._target()
        return super().subtitle() + (f" · PRODUCTION {target.name}" if target.production else "")

    def compose(self) -> ComposeResult:
        target = self._target()
        yield Header()
        yield Static(f"Kept by restores of {target.dbname} on {target.display_host}:{target.display_port}",
                     id="old-title")
        yield DataTable(id="old-table", cursor_type="row", zebra_stripes=False)
        yield Static("Listing…", id="old-summary")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self._target().production:
            self.add_class("-production")
        table = self.query_one("#old-table", DataTable)
        table.add_columns("Database", "Size", "Kind")
        table.focus()
        self.load()

    def action_reload(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="old-dbs", exit_on_error=False)
    def load(self) -> list[tuple[str, int, str, bool]]:
        from opstower_core.restore import list_leftover_databases, list_old_databases

        settings, dbname = self.ops.settings, self._target().dbname
        rows = [(name, sz, "kept by a swap", True) for name, sz in list_old_databases(settings, self.target_name)
                if _belongs(name, "_pre_restore_", dbname)]
        for lo in list_leftover_databases(settings, self.target_name):
            if _belongs(lo.name, f"_{lo.kind}_", dbname):
                rows.append((lo.name, lo.size, f"leftover ({lo.kind}): {lo.evidence}", lo.removable))
        return rows

    def _show(self, rows: list[tuple[str, int, str, bool]]) -> None:
        self.rows = rows
        table = self.query_one("#old-table", DataTable)
        table.clear()
        for name, sz, kind, removable in rows:
            table.add_row(name, Text(size(sz), justify="right"), Text(kind, style="" if removable else "dim"),
                          key=name)
        summary = self.query_one("#old-summary", Static)
        if rows:
            summary.update(f"{len(rows)} database{'s' if len(rows) != 1 else ''}: x discards the selected one "
                           "(DROP DATABASE) · Esc back")
        else:
            summary.update("No database kept by a restore, and no leftover of a killed run · Esc back")
        self.refresh_bindings()

    def _selected(self) -> tuple[str, int, str, bool] | None:
        table = self.query_one("#old-table", DataTable)
        if not self.rows or table.cursor_row < 0 or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if super().check_action(action, parameters) is False:
            return False
        if action == "discard":
            return bool(self.rows)
        return True

    def action_discard(self) -> None:
        if self.ops.read_only:
            return
        row = self._selected()
        if row is None or self.refused_for_target(self._target().name, "Discarding a kept database"):
            return
        name, sz, kind, removable = row
        if not removable:
            self.notify(f"{name} is not proven abandoned ({kind}); nothing was dropped", title="Kept old databases",
                        severity="warning")
            return
        target = self._target()
        question = (f"Drop database {name} ({size(sz)}, {kind}) on {target.display_host}:{target.display_port}? "
                    f"{target.dbname} itself is not touched.")
        if target.production:
            from opstower_tui.dialogs.confirm import TypedConfirmDialog

            self.app.push_screen(TypedConfirmDialog(name, f"PRODUCTION {target.name}: {question} A kept copy is "
                                                    "the fastest way back.", "Discard old (PRODUCTION)"),
                                 lambda typed: self.drop(name) if typed else None)
            return
        from opstower_tui.dialogs.confirm import YesNoDialog

        self.app.push_screen(YesNoDialog(question, "Discard old database"),
                             lambda yes: self.drop(name) if yes else None)

    @work(thread=True, exclusive=True, group="old-dbs-drop", exit_on_error=False)
    def drop(self, name: str) -> str:
        from opstower_core.restore import discard_old

        discard_old(self.ops.settings, name, self.target_name)
        return name

    def work_done(self, name: str, result: Any) -> None:
        if name == "load":
            self._show(result)
        elif name == "drop":
            self.notify(f"Dropped {result}", title="Kept old databases")
            self.load()

    def work_failed(self, name: str, error: BaseException | None) -> bool | None:
        if name == "load" and error is not None:
            from opstower_tui.dialogs.error import sentence_of

            self.query_one("#old-summary", Static).update(f"FAIL: {sentence_of(error)}  Esc back")
            return True
        return None

    def action_close(self) -> None:
        self.dismiss(None)
