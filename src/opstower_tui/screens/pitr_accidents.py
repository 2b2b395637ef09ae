"""Find the accident: the destructive commits in the archived WAL, newest first; Enter recovers to
just before one (the recovery screen, pre-filled with "just before transaction XID").

Read from the WAL archived since the newest base backup (pg_waldump, in a worker): a DROP or
TRUNCATE of a table, or a DELETE / UPDATE of at least N rows of one table in one transaction.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Input, Static

from opstower_tui.formatting import STATUS_STYLE, truncate
from opstower_tui.screens.base import OpsScreen

DEFAULT_MIN_ROWS = 1000
REL_WIDTH, WHAT_WIDTH = 18, 18
WHAT_STYLE = {"DROP": "bold red", "TRUNCATE/REWRITE": "bold red", "DELETE": "yellow", "UPDATE": "yellow"}


def what_of(accident: Any) -> str:
    """DROP / TRUNCATE / DELETE 12,000 rows / UPDATE 3,400 rows."""
    kind = "TRUNCATE" if accident.kind == "TRUNCATE/REWRITE" else accident.kind
    return f"{kind} {accident.rows:,} rows" if accident.rows else kind


def when_of(accident: Any) -> str:
    return f"{accident.time:%Y-%m-%d %H:%M:%S}" if accident.time else "?"


class AccidentsScreen(OpsScreen):
    SCREEN_NAME = "Find the accident"
    DEFAULT_CSS = """
    AccidentsScreen #acc-toolbar { height: 1; padding: 0 1; }
    AccidentsScreen #acc-label { width: auto; text-style: bold; }
    AccidentsScreen #acc-min { border: none; height: 1; padding: 0; width: 8; background: $boost; }
    AccidentsScreen #acc-min:focus { background: $accent 30%; }
    AccidentsScreen #acc-state { width: 1fr; padding: 0 0 0 1; color: $text-muted; }
    AccidentsScreen #acc-table { height: 1fr; }
    AccidentsScreen #acc-detail { height: 3; padding: 0 1; border-top: solid $primary-darken-1; }
    AccidentsScreen #acc-summary { height: auto; max-height: 2; padding: 0 1; text-style: bold; }
    """
    BINDINGS: ClassVar = [
        Binding("enter", "recover_before", "Recover to just before it", id="accidents.recover"),
        Binding("n", "threshold", "Rows threshold", id="accidents.threshold"),
        Binding("f5,ctrl+r", "refresh", "Read again", id="accidents.refresh"),
        Binding("escape", "close", "Back", id="accidents.close"),
    ]

    HELP_KEYS: ClassVar = [("↑/↓", "move between commits (the lines under the table show the whole of one)")]

    def __init__(self, target_name: str | None = None, *, min_rows: int = DEFAULT_MIN_ROWS,
                 autostart: bool = True) -> None:
        super().__init__()
        self.target_name = target_name
        self.min_rows = min_rows
        self.autostart = autostart
        self.accidents: list[Any] = []  # newest first
        self.loading = False
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="acc-toolbar"):
            yield Static("DELETE/UPDATE of at least ", id="acc-label")
            yield Input(str(self.min_rows), id="acc-min", type="integer")
            yield Static("rows · DROP and TRUNCATE always", id="acc-state")
        table: DataTable = DataTable(id="acc-table", cursor_type="row", zebra_stripes=False)
        # 80 columns: the full time, relation and LSN are in the detail lines under the table.
        table.add_column("Time (UTC)", width=14, key="time")
        table.add_column("XID", width=7, key="xid")
        table.add_column("Database", width=10, key="db")
        table.add_column("Relation", width=REL_WIDTH, key="rel")
        table.add_column("What", width=WHAT_WIDTH, key="what")
        yield table
        yield Static("", id="acc-detail")
        yield Static("", id="acc-summary")
        yield Footer(compact=True)

    def _live(self) -> Any:
        return self.ops.settings.target(self.target_name)

    def on_mount(self) -> None:
        self.query_one("#acc-table", DataTable).focus()
        if self.autostart:
            self.load()

    # -- reading -----------------------------------------------------------------------------
    def load(self) -> None:
        self.loading = True
        self.query_one("#acc-summary", Static).update(
            f"Reading the WAL archived since the newest base backup (DELETE/UPDATE ≥ {self.min_rows:,} rows)…")
        self.find()

    @work(thread=True, exclusive=True, group="accidents", exit_on_error=False)
    def find(self) -> list[Any]:
        from opstower_core.pitr import find_accidents

        return find_accidents(self.ops.settings, self._live(), min_rows=self.min_rows)

    def show_accidents(self, found: list[Any]) -> None:
        """Newest first: the accident is usually the last thing that happened."""
        self.loading, self.loaded = False, True
        self.accidents = sorted(found, key=lambda a: (a.time is not None, a.time, a.lsn), reverse=True)
        table = self.query_one("#acc-table", DataTable)
        table.clear()
        for i, a in enumerate(self.accidents):
            when = f"{a.time:%m-%d %H:%M:%S}" if a.time else "?"
            table.add_row(when, Text(str(a.xid), justify="right"), truncate(a.database, 10),
                          truncate(a.relation, REL_WIDTH), Text(truncate(what_of(a), WHAT_WIDTH), WHAT_STYLE.get(a.kind, "")),
                          key=str(i))
        n = len(self.accidents)
        if n:
            table.move_cursor(row=0)
            self._detail(0)
            text = f"{n} destructive commit{'s' if n != 1 else ''}, newest first · Enter: recover to just before it"
        else:
            self.query_one("#acc-detail", Static).update("")
            text = (f"No DROP, TRUNCATE or DELETE/UPDATE of {self.min_rows:,}+ rows since the newest base backup. "
                    "n: lower the threshold")
        self.query_one("#acc-summary", Static).update(text)
        self.refresh_bindings()

    @on(DataTable.RowHighlighted, "#acc-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row is not None and 0 <= event.cursor_row < len(self.accidents):
            self._detail(event.cursor_row)

    def _detail(self, row: int) -> None:
        """The full line of the highlighted commit (the table cuts long names at 80 columns)."""
        a = self.accidents[row]
        when = a.time.isoformat(sep=" ", timespec="seconds") if a.time else "time unknown"
        self.query_one("#acc-detail", Static).update(Text.assemble(
            (what_of(a), WHAT_STYLE.get(a.kind, "bold")), f" of {a.database}.{a.relation}\n",
            f"committed {when} by transaction {a.xid} at LSN {a.lsn}"))

    # -- keys --------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if super().check_action(action, parameters) is False:
            return False
        if action == "recover_before":
            return bool(self.accidents) and not self.loading
        return True

    def action_recover_before(self) -> None:
        table = self.query_one("#acc-table", DataTable)
        if not self.accidents or not 0 <= table.cursor_row < len(self.accidents):
            return
        from opstower_tui.screens.pitr import PitrScreen

        a = self.accidents[table.cursor_row]
        note = f"{what_of(a)} of {a.database}.{a.relation}, committed {when_of(a)} UTC"
        self.app.push_screen(PitrScreen(self.target_name, kind="xid", value=str(a.xid), exclusive=True, note=note))

    @on(DataTable.RowSelected, "#acc-table")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        self.action_recover_before()  # the table takes Enter itself: its selection is the same choice

    def action_threshold(self) -> None:
        self.query_one("#acc-min", Input).focus()

    @on(Input.Submitted, "#acc-min")
    def _threshold_set(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        if not value.isdigit() or int(value) < 1:
            self.notify(f"{value!r} is not a number of rows (1 or more)", severity="warning")
            return
        self.min_rows = int(value)
        self.query_one("#acc-table", DataTable).focus()
        self.load()

    def action_refresh(self) -> None:
        self.load()

    def action_close(self) -> None:
        if self.focused is self.query_one("#acc-min", Input):
            self.query_one("#acc-table", DataTable).focus()  # Esc leaves the box first
            return
        self.dismiss(None)

    def work_done(self, name: str, result: Any) -> None:
        if name == "find":
            self.show_accidents(result)

    def work_failed(self, name: str, error: BaseException | None) -> bool | None:
        if name != "find":
            return None
        from opstower_tui.dialogs.error import sentence_of

        self.loading = False
        self.query_one("#acc-summary", Static).update(Text.assemble(
            ("FAIL ", STATUS_STYLE["FAIL"]), sentence_of(error) if error else "Cancelled.", "  f5 to read again"))
        return True
