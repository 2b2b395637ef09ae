"""Backups: local and S3 in one table, filtered as you type, with the selected one's metadata.

The local list arrives first; S3 is listed in a worker and merged in page by page, so a
bucket with thousands of objects never holds up a key press.
"""

from __future__ import annotations

import gc
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Horizontal
from textual.widgets import Header, Input, Label, Static

from opstower_tui.messages import CatalogPage
from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.backup_table import BackupTable, Row
from opstower_tui.widgets.footer import KeysFooter
from opstower_tui.widgets.meta_panel import MetaPanel

S3_PAGE = 1000


class FilterInput(Input):
    """Filters in the same callback that took the key, so one frame shows the letter and the rows.

    (Through Input.Changed the table would update a message later, one frame behind.)
    """

    def __init__(self, on_change: Any, **kw: Any) -> None:
        super().__init__(**kw)
        self.on_change = on_change

    def watch_value(self, value: str) -> None:
        self.on_change(value)

WIDE = 120  # from this width the metadata panel sits beside the table


# Ages tick on screen without moving the cursor (10,000 rows: a few ms).
AGE_REFRESH_SECONDS = 5.0


class BackupsScreen(OpsScreen):
    SCREEN_NAME = "Backups"
    BINDINGS: ClassVar = [
        Binding("slash", "focus_filter", "Filter", id="backups.filter"),
        Binding("v", "verify", "Verify", id="backups.verify"),
        Binding("t", "full_test", "Full test", id="backups.full_test"),
        Binding("r", "restore", "Restore", id="backups.restore"),
        Binding("d", "download", "Download", id="backups.download"),
        Binding("b", "backup_now", "Back up", id="backups.backup_now"),
        Binding("D", "drill", "Drill", show=False, id="backups.drill"),
        Binding("T", "recover_tables", "Table recovery", show=False, id="backups.recover_tables"),
        Binding("s", "sort", "Sort", show=False, id="backups.sort"),
        Binding("S", "reverse_sort", "Reverse sort", show=False, id="backups.reverse_sort"),
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False, id="backups.refresh"),
        Binding("escape", "leave_filter", "Clear filter", show=False, id="backups.clear_filter"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.s3_state = ""
        self.stale = False
        self._meta_timer: Any = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="toolbar"):
            yield Label("Filter", id="filter-label")
            yield FilterInput(self.filter_changed, placeholder="/ to filter: name, s3, FAIL…",
                              id="filter")
            yield Static("loading…", id="counts")
        with Container(id="backups-body"):
            yield BackupTable(id="table")
            yield MetaPanel(id="meta")
        yield KeysFooter()

    def on_mount(self) -> None:
        self.query_one(BackupTable).focus()
        self._layout_for(self.size.width)
        self.load()
        self.set_interval(AGE_REFRESH_SECONDS, self._refresh_ages)

    def _refresh_ages(self) -> None:
        self.query_one(BackupTable).refresh_ages(self.ops.now())

    def on_resize(self, event: Any) -> None:
        self._layout_for(event.size.width)

    def _layout_for(self, width: int) -> None:
        self.query_one("#backups-body").set_class(width >= WIDE, "-wide")

    def on_screen_resume(self) -> None:
        if self.stale:
            self.stale = False
            self.load()

    # -- loading -------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="catalog", exit_on_error=False)
    def load(self) -> None:
        """List local backups, then S3 page by page; rows are built here, off the UI thread."""
        from dataclasses import replace

        from opstower_core.artifacts.names import parse_name
        from opstower_core.errors import OpsError
        from opstower_core.repo.catalog import CatalogEntry, list_catalog
        from opstower_core.runs.history import StateStore

        settings = self.ops.settings
        state = StateStore(settings.state_dir)
        local = list_catalog(settings, include_s3=False, state=state)
        now = self.ops.now()
        self.post_message(CatalogPage([Row.of(e, now) for e in local.entries], replace=True,
                                      done=not settings.s3.enabled))
        if not settings.s3.enabled:
            return
        verdicts: dict[str, str] = {}
        for run in state.runs("verify", limit=5000):
            if run.artifact and run.artifact not in verdicts:
                verdicts[run.artifact] = run.status
        from opstower_core.storage.listing import pages_in_child
        from opstower_core.storage.s3 import s3_error_text

        # This worker's own view of the entries: merged copies are new objects, so the UI
        # never sees an entry change under it.
        known = {e.filename: e for e in local.entries}
        batch: list[Row] = []
        listed = 0
        error = None
        try:
            # Listed by a child process: botocore's parsing would hold the interpreter lock against the
            # UI thread (a key pressed meanwhile waited for it); here only one JSON line per page is read.
            for objects in pages_in_child(settings.s3):
                for obj in objects:
                    name = parse_name(obj.key.rsplit("/", 1)[-1])
                    if name is None:
                        continue
                    entry = known.get(name.filename)
                    if entry is None:
                        entry = CatalogEntry(name, obj.size, meta_problem="metadata in S3 (not fetched yet)",
                                             verified=verdicts.get(name.filename))
                    entry = known[name.filename] = replace(entry, s3_key=obj.key, s3_size=obj.size)
                    batch.append(Row.of(entry, now))
                    listed += 1
                    if len(batch) >= S3_PAGE:
                        self.post_message(CatalogPage(batch, False, s3_listed=listed))
                        batch = []
        except OpsError as exc:
            error = exc.what
        except Exception as exc:  # noqa: BLE001 - an unreachable bucket leaves the local rows
            error = f"S3 listing failed ({s3_error_text(exc)})"
        self.post_message(CatalogPage(batch, False, s3_listed=listed, done=True, s3_error=error))

    @on(CatalogPage)
    def merge_page(self, page: CatalogPage) -> None:
        table = self.query_one(BackupTable)
        if page.replace:
            gc.unfreeze()  # the previous list may now be collected
            table.set_rows(page.rows)
        elif page.rows:
            table.upsert_rows(page.rows)
        if page.done:
            if page.s3_error:
                self.s3_state = f"S3 unreachable: {page.s3_error}"
                self.notify(f"{page.s3_error}; only local backups are shown", title="S3", severity="warning")
            elif self.ops.settings.s3.enabled:
                self.s3_state = f"S3: {page.s3_listed} listed"
            else:
                self.s3_state = "S3 not configured"
        else:
            self.s3_state = f"S3: listing… {page.s3_listed}"
        self._update_counts()
        # Rows merged from S3 replace the selected entry: redraw its panel.
        self.query_one(MetaPanel).show(table.selected, self.ops.now(), self.ops.settings.s3.bucket)
        # Thousands of long-lived rows: keep them out of full collections, which otherwise
        # take 100-300 ms at 10,000 backups and land on a keystroke now and then.
        gc.freeze()

    def _update_counts(self) -> None:
        table = self.query_one(BackupTable)
        self.query_one("#counts", Static).update(f"{len(table.view):,}/{len(table.rows):,} · {self.s3_state}")

    # -- filter and selection --------------------------------------------------------------
    def filter_changed(self, value: str) -> None:
        self.query_one(BackupTable).set_filter(value)
        self._update_counts()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.query_one(BackupTable).focus()

    @on(BackupTable.Highlighted)
    def show_meta(self, event: BackupTable.Highlighted) -> None:
        entry = event.entry
        self.query_one(MetaPanel).show(entry, self.ops.now(), self.ops.settings.s3.bucket)
        if self._meta_timer is not None:
            self._meta_timer.stop()
            self._meta_timer = None
        if entry is not None and entry.meta is None and entry.s3_key and entry.local_path is None:
            # Fetch only where the cursor rests: holding a key down must not fire an S3 GET per row.
            self._meta_timer = self.set_timer(0.3, lambda: self.fetch_meta(entry))

    @work(thread=True, exclusive=True, group="meta", exit_on_error=False)
    def fetch_meta(self, entry: Any) -> Any:
        from opstower_core.repo.catalog import fetch_s3_metadata

        fetch_s3_metadata(self.ops.settings, entry)
        return entry

    def work_done(self, name: str, result: Any) -> None:
        if name == "fetch_meta" and result is self.query_one(BackupTable).selected:
            self.query_one(MetaPanel).show(result, self.ops.now(), self.ops.settings.s3.bucket)

    @on(BackupTable.Selected)
    def selected(self) -> None:
        self.action_verify()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_leave_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.has_focus:
            self.query_one(BackupTable).focus()
        elif box.value:
            box.value = ""

    def action_sort(self) -> None:
        self.query_one(BackupTable).cycle_sort()

    def action_reverse_sort(self) -> None:
        self.query_one(BackupTable).reverse_sort()

    def action_refresh(self) -> None:
        self.load()

    # -- actions on the selected backup ------------------------------------------------------
    def _selected(self) -> Any | None:
        entry = self.query_one(BackupTable).selected
        if entry is None:
            self.notify("No backup selected", severity="warning")
        return entry

    def action_verify(self, full_test: bool = False) -> None:
        from opstower_tui.screens.verify import VerifyScreen

        entry = self._selected()
        if entry is not None:
            self.stale = True
            self.app.push_screen(VerifyScreen(entry, full_test=full_test))

    def action_full_test(self) -> None:
        self.action_verify(full_test=True)

    def action_restore(self) -> None:
        if self.ops.read_only:
            return
        from opstower_tui.screens.restore import RestoreScreen

        entry = self._selected()
        if entry is not None:
            self.stale = True
            # The target that protects this backup's database, so the plan never aims at another one.
            targets = self.ops.settings.targets.values()
            target = next((t.name for t in targets if t.dbname == entry.database), None)
            if self.refused_for_target(target, "Restore"):
                return
            self.app.push_screen(RestoreScreen(entry, target))

    def action_recover_tables(self) -> None:
        """Bring back lost rows or whole tables from the selected backup, with a preview first."""
        from opstower_tui.screens.recover import RecoverScreen

        entry = self._selected()
        if entry is None:
            return
        target = next((t.name for t in self.ops.settings.targets.values() if t.dbname == entry.database), None)
        if self.refused_for_target(target, "Table recovery"):
            return
        self.stale = True
        self.app.push_screen(RecoverScreen(entry, target))

    def action_download(self) -> None:
        from opstower_tui.jobs import download_job, download_summary
        from opstower_tui.screens.run import RunScreen

        entry = self._selected()
        if entry is None:
            return
        if entry.local_path is not None:
            self.notify(f"{entry.filename} is already in {self.ops.settings.backup_dir}", title="Download")
            return
        self.stale = True
        self.app.push_screen(RunScreen(f"Download {entry.filename}", download_job(self.ops.settings, entry),
                                       summary=download_summary))

    def action_backup_now(self) -> None:
        if self.ops.read_only:
            return
        from opstower_tui.jobs import backup_job, backup_summary
        from opstower_tui.screens.run import RunScreen

        target = self.ops.settings.default_target
        self.stale = True
        self.app.push_screen(RunScreen(f"Back up {target} now", backup_job(self.ops.settings, target),
                                       summary=backup_summary))
