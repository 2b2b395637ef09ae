"""A run of the engine on screen: steps with live status, progress, log, elapsed time.

Used for verify, back up now and download. The run happens in one thread worker that
passes a CancelToken into the engine (Esc cancels, toolong-style) and forwards every
engine event as an EngineEvent message; widgets change only in the message handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Header, RichLog, Static

from opstower_tui.formatting import clock
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.base import OpsScreen
from opstower_tui.widgets.bars import TransferBar
from opstower_tui.widgets.event_view import show_event
from opstower_tui.widgets.step_list import StepList

Job = Callable[[Callable[[Any], None], Any], Any]  # job(on_event, cancel) -> result


class RunScreen(OpsScreen):
    SCREEN_NAME = "Run"
    BINDINGS: ClassVar = [
        Binding("escape", "cancel_or_close", "Cancel / back", id="run.cancel"),
    ]

    def __init__(self, title: str, job: Job, steps: Iterable[tuple[str, str]] = (), *, autostart: bool = True,
                 summary: Callable[[Any], str] | None = None) -> None:
        super().__init__()
        self.summary_of = summary
        self.title_text = title
        self.job = job
        self.initial_steps = list(steps)
        self.autostart = autostart
        self.cancel_token: Any = None
        self.running = False
        self.finished = False
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.result: Any = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="run-title"):
            yield Static(self.title_text, id="run-name")
            yield Static("", id="elapsed")
        yield StepList(self.initial_steps, id="steps")
        yield TransferBar(id="transfer")
        yield RichLog(id="log", max_lines=5000, wrap=True, markup=False, highlight=False)
        yield Static("", id="summary")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(0.5, self._tick)
        if self.autostart:
            self.start()

    def start(self) -> None:
        from opstower_core.events import CancelToken

        self.cancel_token = CancelToken()
        self.running, self.finished = True, False
        self.started_at = self.ops.monotonic()
        self.query_one("#summary", Static).update("Running… Esc to cancel")
        self.run_job()

    @work(thread=True, exclusive=True, group="run", exit_on_error=False)
    def run_job(self) -> Any:
        return self.job(lambda event: self.post_message(EngineEvent(event, "run")), self.cancel_token)

    # -- events from the worker ------------------------------------------------------------
    @on(EngineEvent)
    def apply_event(self, message: EngineEvent) -> None:
        show_event(message.event, self.query_one("#steps", StepList), self.query_one("#log", RichLog),
                   self.query_one("#transfer", TransferBar), self.ops.monotonic(), numbered=True)

    def work_done(self, name: str, result: Any) -> None:
        if name != "run_job":
            return
        self._end()
        self.result = result
        self.query_one("#summary", Static).update(self.summarize(result))

    def work_failed(self, name: str, error: BaseException | None) -> None:
        if name != "run_job":
            return
        self._end()
        from opstower_tui.dialogs.error import sentence_of

        steps = self.query_one("#steps", StepList)
        cancelled = error is None or type(error).__name__ == "Cancelled"
        steps.stop_running("SKIP" if cancelled else "FAIL", "cancelled" if cancelled else "failed")
        text = sentence_of(error) if error is not None else "Cancelled."
        self.query_one("#summary", Static).update(f"{'CANCELLED' if cancelled else 'FAIL'}: {text}  Esc to go back")

    def _end(self) -> None:
        self.running, self.finished = False, True
        self.ended_at = self.ops.monotonic()
        self._tick()

    def summarize(self, result: Any) -> str:
        text = self.summary_of(result) if self.summary_of else "Done."
        return f"{text}  Esc to go back"

    def _tick(self) -> None:
        if self.started_at is None:
            return
        end = self.ended_at if self.ended_at is not None else self.ops.monotonic()
        self.query_one("#elapsed", Static).update(f"elapsed {clock(end - self.started_at)}")

    def action_cancel_or_close(self) -> None:
        if self.running and self.cancel_token is not None:
            if not self.cancel_token.cancelled:
                self.cancel_token.cancel()
                self.query_one("#summary", Static).update("Cancelling… the engine stops at the next safe point")
            return
        self.dismiss(self.result)
