"""Table recovery in the console: pick tables, see the preview, confirm, watch the steps.

The engine is `opstower_core.recover`'s RecoverySession: open (verify, scratch restore, its
proof), preview (per table: missing, changed, written since; nothing touched), apply (typed
confirmation, pre-change copy, one transaction, proof), close (the scratch database is
dropped — always, also when the operator walks away at the preview).
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Footer, Header, Input, RichLog, SelectionList, Static

from opstower_tui.formatting import STATUS_STYLE
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.bars import TransferBar
from opstower_tui.widgets.event_view import show_event
from opstower_tui.widgets.step_list import StepList

MODES = ("merge", "replace", "copy")
MODE_HELP = {
    "merge": "put back the rows missing from live; rows written since stay",
    "replace": "make each table as it was in the backup (rows written since are removed)",
    "copy": "the backup's table under another name, for a human to compare",
}


class RecoverScreen(OpsScreen):
    SCREEN_NAME = "Table recovery"
    BINDINGS: ClassVar = [
        # priority: Space picks in the list, Enter always moves on (preview, then apply).
        Binding("enter", "next", "Preview / apply", priority=True, id="recover.next"),
        Binding("m", "change_mode", "Mode", id="recover.mode"),
        Binding("o", "toggle('overwrite_changed')", "Overwrite changed", id="recover.overwrite"),
        Binding("p", "toggle('with_parents')", "With parents", id="recover.parents"),
        Binding("escape", "cancel_or_close", "Cancel / back", id="recover.cancel"),
    ]

    def __init__(self, entry: Any, target_name: str | None = None, *, source: Any = None,
                 tables: dict[str, int] | None = None) -> None:
        """From a backup (`entry`), or from a ready `source` (a recovered PITR cluster's database, with its
        `tables` and their row counts): then `entry` is None and no scratch restore is made."""
        super().__init__()
        self.entry, self.target_name, self.source = entry, target_name, source
        self.phase = "pick"  # pick, opening, preview, applying, done, failed
        self.mode = "merge"
        self.flags = {"overwrite_changed": False, "with_parents": False}
        self.session: Any = None
        self.plan: Any = None
        self.outcomes: list[Any] | None = None
        self.cancel_token: Any = None
        counts = tables if source is not None else (entry.meta or {}).get("row_counts")
        self.tables: dict[str, int] = dict(sorted((counts or {}).items()))
        self.origin_words = "in the backup" if source is None else "then"  # "(1,234 rows then)"

    def compose(self) -> ComposeResult:
        yield Header()
        origin = self.entry.filename if self.source is None else self.source.label
        yield Static(f"Recover tables from {origin}", id="recover-title")
        yield Static("", id="recover-options")
        with Vertical(id="recover-pick"):
            yield Input(placeholder="filter tables (/ to focus)" if self.tables else
                        "tables, comma-separated (schema.table)", id="recover-filter")
            yield SelectionList[str](id="recover-tables")
        yield StepList(id="steps")
        yield TransferBar(id="transfer")
        table: DataTable = DataTable(id="recover-preview", cursor_type="row", zebra_stripes=False)
        table.add_columns("Table", "Action", "Backup", "Live", "Missing", "Changed", "Since")
        yield table
        yield RichLog(id="log", max_lines=2000, wrap=True, markup=False, highlight=False)
        yield Static("", id="recover-summary")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self._fill_tables("")
        self._show_options()
        self.query_one("#recover-preview").display = False
        self.query_one("#steps").display = False
        self.query_one("#recover-summary", Static).update(
            "Space picks tables, Enter previews (nothing is changed before the typed confirmation)")
        (self.query_one("#recover-tables") if self.tables else self.query_one("#recover-filter")).focus()

    # -- picking ----------------------------------------------------------------------------
    def _fill_tables(self, text: str) -> None:
        chosen = set(self._chosen())
        pick = self.query_one("#recover-tables", SelectionList)
        pick.clear_options()
        for name, rows in self.tables.items():
            if text.lower() in name.lower():
                pick.add_option((f"{name}  ({rows:,} rows {self.origin_words})", name, name in chosen))
        pick.display = bool(self.tables)
        if pick.option_count:
            pick.highlighted = 0  # Space picks at once

    @on(Input.Changed, "#recover-filter")
    def _filter(self, event: Input.Changed) -> None:
        if self.tables:
            self._fill_tables(event.value)

    def _chosen(self) -> list[str]:
        if not self.tables:
            text = self.query_one("#recover-filter", Input).value if self.is_mounted else ""
            return [t.strip() for t in text.split(",") if t.strip()]
        return list(self.query_one("#recover-tables", SelectionList).selected) if self.is_mounted else []

    def _show_options(self) -> None:
        flags = [name.replace("_", " ") for name, on_ in self.flags.items() if on_]
        self.query_one("#recover-options", Static).update(Text.assemble(
            ("Mode ", "bold"), (self.mode, "bold"), f": {MODE_HELP[self.mode]}",
            f" · {', '.join(flags)}" if flags else ""))

    def action_change_mode(self) -> None:
        if self.phase == "pick":
            self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
            self._show_options()

    def action_toggle(self, flag: str) -> None:
        if self.phase == "pick":
            self.flags[flag] = not self.flags[flag]
            self._show_options()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not super().check_action(action, parameters):
            return False
        if action in ("change_mode", "toggle"):
            return self.phase == "pick"
        if action == "next":
            return self.phase in ("pick", "preview")
        return True

    def action_next(self) -> None:
        if self.phase == "pick":
            tables = self._chosen()
            if not tables:
                self.notify("Pick at least one table (Space)", severity="warning")
                return
            self._start(tables)
        elif self.phase == "preview":
            self._confirm()

    # -- open + preview ---------------------------------------------------------------------
    def _start(self, tables: list[str]) -> None:
        from opstower_core.events import CancelToken

        self.phase = "opening"
        self.query_one("#recover-pick").display = False
        self.set_focus(None)  # the picker is gone: keys are the screen's (and the app's: L, ?) now
        self.query_one("#steps").display = True
        self.query_one("#recover-summary", Static).update(
            "Restoring the backup into a scratch database… Esc cancels" if self.source is None else
            "Comparing with the recovered cluster (nothing is changed yet)… Esc cancels")
        self.cancel_token = CancelToken()
        self.refresh_bindings()
        self.open_and_preview(tables)

    def _session(self, tables: list[str]) -> Any:
        from opstower_core.recover import RecoverOptions, RecoverySession

        from_s3 = self.source is None and self.entry.local_path is None
        options = RecoverOptions(tables=tables, mode=self.mode, from_s3=from_s3, **self.flags)
        # A ready source (the recovered cluster) is the caller's: the session never closes it.
        return RecoverySession(self.ops.settings, self.source or self.entry, options, self.target_name,
                               on_event=lambda e: self.post_message(EngineEvent(e, "recover")),
                               cancel=self.cancel_token)

    @work(thread=True, exclusive=True, group="recover", exit_on_error=False)
    def open_and_preview(self, tables: list[str]) -> Any:
        session = self._session(tables)
        self.session = session
        try:
            session.open()
            return session.preview()
        except BaseException:
            session.close()
            raise

    @on(EngineEvent)
    def apply_event(self, message: EngineEvent) -> None:
        show_event(message.event, self.query_one("#steps", StepList), self.query_one("#log", RichLog),
                   self.query_one("#transfer", TransferBar), self.ops.monotonic())

    def _show_preview(self, plan: Any) -> None:
        self.plan, self.phase = plan, "preview"
        table = self.query_one("#recover-preview", DataTable)
        table.display = True
        table.clear()
        table.focus()

        def n(value: int | None) -> Text:
            return Text("-" if value is None else f"{value:,}", justify="right")

        for t in plan.tables:
            word = "BLOCKED" if t.action == "blocked" else t.action
            table.add_row(t.table, Text(word, STATUS_STYLE["FAIL"] if t.action == "blocked" else ""),
                          n(t.backup_rows), n(t.live_rows), n(t.missing), n(t.changed), n(t.only_live))
        notes = [f"{t.table}: {'; '.join(t.notes)}" for t in plan.tables if t.notes]
        for line in notes + list(plan.notes):
            self.query_one("#log", RichLog).write(f"[NOTE] {line}")
        if plan.blocked:
            text = Text.assemble(("BLOCKED ", STATUS_STYLE["FAIL"]), f"{plan.blocked[0].table}: "
                                 f"{'; '.join(plan.blocked[0].notes)}. Nothing was changed. Esc to go back")
        else:
            text = Text.assemble(("PREVIEW ", "bold"), f"{plan.live_db} on {plan.host}: nothing changed yet. "
                                 "Enter to apply (typed confirmation), Esc to leave it")
        self.query_one("#recover-summary", Static).update(text)
        self.refresh_bindings()

    # -- apply --------------------------------------------------------------------------------
    def _confirm(self) -> None:
        from opstower_tui.dialogs.confirm import TypedConfirmDialog

        plan = self.plan
        if plan is None or plan.blocked:
            return
        changes = "; ".join(f"{t.table}: {t.action} (+{t.insert:,} ~{t.update:,} -{t.delete:,})" for t in plan.tables)
        self.app.push_screen(TypedConfirmDialog(plan.live_db, f"Change {plan.live_db} on {plan.host}: {changes}. "
                                                "A copy of these tables is taken first.", "Confirm table recovery"),
                             self._apply_typed)

    def _apply_typed(self, typed: str | None) -> None:
        if typed:
            self.phase = "applying"
            self.query_one("#recover-summary", Static).update("Applying in one transaction… Esc cancels")
            self.refresh_bindings()
            self.apply(typed)

    @work(thread=True, exclusive=True, group="recover", exit_on_error=False)
    def apply(self, typed: str) -> Any:
        try:
            return self.session.apply(self.plan, lambda _plan: typed)
        finally:
            self.session.close()

    # -- results ------------------------------------------------------------------------------
    def work_done(self, name: str, result: Any) -> None:
        if name == "open_and_preview":
            self._show_preview(result)
        elif name == "apply":
            self.outcomes, self.phase = result, "done"
            done = "; ".join(o.describe() for o in result)
            self.query_one("#recover-summary", Static).update(
                Text.assemble(("PASS ", STATUS_STYLE["PASS"]), f"{done}. Esc to go back"))
            self.refresh_bindings()

    def work_failed(self, name: str, error: BaseException | None) -> bool | None:
        if name not in ("open_and_preview", "apply"):
            return None
        from opstower_tui.dialogs.error import sentence_of

        self.phase = "failed"
        self.query_one("#steps", StepList).stop_running("FAIL" if error else "SKIP", "stopped")
        sentence = sentence_of(error) if error is not None else "Cancelled; the scratch database was dropped."
        self.query_one("#recover-summary", Static).update(
            Text.assemble(("FAIL ", STATUS_STYLE["FAIL"]), sentence, "  Esc to go back"))
        self.refresh_bindings()
        return True

    def action_cancel_or_close(self) -> None:
        if self.phase in ("opening", "applying") and self.cancel_token is not None:
            self.cancel_token.cancel()
            self.query_one("#recover-summary", Static).update("Cancelling… the engine stops at the next safe point")
            return
        if self.phase == "preview" and self.session is not None:
            # Walked away at the preview: drop the scratch database, off the event loop and
            # beyond this screen's life (its own workers end with it).
            threading.Thread(target=self.session.close, name="recover-close", daemon=False).start()
        self.dismiss(self.outcomes)
