"""Textual messages that carry engine events and worker results to the UI thread.

Workers never touch widgets: they post these (post_message is thread-safe) and the
screen updates its widgets in the handler, on the UI thread.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class EngineEvent(Message):
    """One core event (StepStarted / StepProgress / StepLog / StepFinished) from a run."""

    def __init__(self, event: Any, run: str = "") -> None:
        self.event = event
        self.run = run
        super().__init__()


class CatalogPage(Message):
    """Rows for the backups table: the local list (replace=True), then S3 pages merged in."""

    def __init__(self, rows: list[Any], replace: bool, *, s3_listed: int = 0, done: bool = False,
                 s3_error: str | None = None) -> None:
        self.rows = rows  # widgets.backup_table.Row, built in the worker
        self.replace = replace
        self.s3_listed = s3_listed
        self.done = done
        self.s3_error = s3_error
        super().__init__()


class DashboardData(Message):
    """A fresh snapshot for the dashboard (see screens.dashboard.gather)."""

    def __init__(self, snapshot: Any) -> None:
        self.snapshot = snapshot
        super().__init__()
