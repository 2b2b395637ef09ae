"""What every console screen shares: read-only filtering, and the one worker-state handler."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from textual import events
from textual.screen import Screen
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from opstower_core.config import Settings


class Console(Protocol):
    """What screens need from the app (the app imports the screens, never the reverse)."""

    settings: Settings
    read_only: bool

    def now(self) -> datetime: ...
    def monotonic(self) -> float: ...
    def note_first_paint(self, screen: Any) -> None: ...
    def report_error(self, error: BaseException) -> None: ...
    command_log: Any  # deque of events.CommandRan

    def open_drill(self) -> None: ...
    def pitr_configured(self) -> bool: ...


# Actions that change a database, take a backup or run or advance a drill: never offered in read-only mode.
DESTRUCTIVE_ACTIONS = frozenset({"restore", "restore_latest", "backup_now", "discard", "start_restore", "drill",
                                 "start_phase", "complete_phase", "skip_phase", "pause_resume", "apply_prune",
                                 "recover_tables", "recover_interrupted", "replicate", "base_backup",
                                 "apply_pitr_enable", "restore_elsewhere"})


def strip_destructive(screen: Screen, actions: frozenset[str] = DESTRUCTIVE_ACTIONS) -> dict[str, str]:
    """Remove destructive bindings from a screen's own map: not bound, not in footer or palette.

    Returns what each removed key did, so a press of it can be answered instead of ignored.
    """
    keys = screen._bindings.key_to_bindings
    removed: dict[str, str] = {}
    for key in list(keys):
        kept = [b for b in keys[key] if b.action.split("(")[0] not in actions]
        dropped = [b for b in keys[key] if b not in kept]
        if dropped:
            removed[key] = dropped[0].description or dropped[0].action
        if kept:
            keys[key] = kept
        else:
            del keys[key]
    return removed


class OpsScreen(Screen):
    """Base screen: workers report here, errors go to the app's modal."""

    SCREEN_NAME: ClassVar[str] = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused_keys: dict[str, str] = {}  # read-only: key -> what it would have done

    @property
    def ops(self) -> Console:
        return self.app  # type: ignore[return-value]

    def on_mount(self) -> None:
        if self.ops.read_only:
            self.refused_keys = strip_destructive(self)
            self.refresh_bindings()
        self.ops.note_first_paint(self)
        if self.SCREEN_NAME:
            self.sub_title = self.subtitle()

    def subtitle(self) -> str:
        """The header's second line: the screen's name and the modes that limit it."""
        return self.SCREEN_NAME + ("  [READ-ONLY]" if self.ops.read_only else "")

    def on_key(self, event: events.Key) -> None:
        # A destructive key in read-only mode is answered, not silently ignored.
        what = self.refused_keys.get(event.key)
        if what is not None:
            event.stop()
            self.notify(f"{what} is not offered: this console was opened read-only",
                        title="Read-only", severity="warning")

    def refused_for_target(self, target_name: str | None, what: str) -> bool:
        """A target marked `read_only = true` in the config gets no change from the console: say so."""
        target = self.ops.settings.targets.get(target_name or self.ops.settings.default_target)
        if target is not None and target.read_only:
            self.notify(f"{what} is not offered for {target.name}: it is marked read_only in the config",
                        title="Read-only target", severity="warning")
            return True
        return False

    def action_drill(self) -> None:
        """The DR drill screen: resume an open drill or start one (drill databases, not the live one)."""
        self.ops.open_drill()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Second guard for read-only: the palette or a remapped key cannot reach these either.
        return not (action in DESTRUCTIVE_ACTIONS and self.ops.read_only)

    # The one place worker results and failures arrive (Worker.StateChanged does not bubble).
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.SUCCESS:
            self.work_done(worker.name, worker.result)
        elif event.state == WorkerState.ERROR:
            error = worker.error
            assert error is not None
            if not self.work_failed(worker.name, error):
                self.ops.report_error(error)
        elif event.state == WorkerState.CANCELLED:
            self.work_failed(worker.name, None)

    def work_done(self, name: str, result: Any) -> None:
        """A worker of this screen finished; `name` is its method name."""

    def work_failed(self, name: str, error: BaseException | None) -> bool | None:
        """A worker of this screen raised (error) or was cancelled (None); True: the screen has
        dealt with the error itself (no error dialog)."""
