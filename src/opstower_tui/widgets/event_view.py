"""The one way a screen shows the engine's events: step list, transfer bar and log."""

from __future__ import annotations

from typing import Any

from textual.widgets import RichLog

from opstower_tui.widgets.bars import TransferBar
from opstower_tui.widgets.step_list import StepList


def show_event(event: Any, steps: StepList, log: RichLog, transfer: TransferBar, now: float,
               numbered: bool = False) -> None:
    """Apply one engine event; `numbered` prefixes started steps with "Test i/n" (the eight checks)."""
    from opstower_core.events import StepFinished, StepLog, StepProgress, StepStarted

    if isinstance(event, StepStarted):
        steps.started(event.step, event.title)
        prefix = f"Test {event.index}/{event.total}: " if numbered and event.total else ""
        log.write(f"[INFO] {prefix}{event.title}...")
    elif isinstance(event, StepProgress):
        title = steps.rows[event.step].title if event.step in steps.rows else event.step
        transfer.update_progress(title, event.done, event.total, event.unit, now)
    elif isinstance(event, StepLog):
        log.write(f"[{event.level}] {event.line}")
    elif isinstance(event, StepFinished):
        steps.finished(event.step, event.status.value, event.detail, event.seconds)
        log.write(f"[{event.status.value}] {event.detail} ({event.seconds:.1f}s)")
