"""The OpsTower console: dashboard, backups, verify, restore wizard — by keyboard, over SSH.

Start-up stays fast: only Textual and this package's screens are imported here; the
engine (psycopg, boto3, zstandard) is imported by worker threads, and warmed up in the
background right after the first paint.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import App
from textual.binding import Binding

from opstower_tui.commands import OpsCommands
from opstower_tui.dialogs.error import ErrorDialog, sentence_of
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.dashboard import DashboardScreen
from opstower_tui.screens.help import HelpScreen

if TYPE_CHECKING:
    from opstower_core.config import Settings

# Written with the wall-clock time of the first paint (for bench/tui_bench.py).
FIRST_PAINT_ENV = "OPSTOWER_FIRST_PAINT_FILE"
EXIT_AFTER_PAINT_ENV = "OPSTOWER_EXIT_AFTER_PAINT"
COMMAND_LOG_SIZE = 10_000



def _backups_screen() -> Any:
    # Imported when first shown, not before the first paint (the backups table and the catalog
    # are ~75 ms of imports the dashboard does not need).
    from opstower_tui.screens.backups import BackupsScreen

    return BackupsScreen()

class OpsTowerApp(App[int]):
    CSS_PATH = "opstower.tcss"
    TITLE = "OpsTower DR"
    MODES: ClassVar = {"dashboard": DashboardScreen, "backups": _backups_screen}
    DEFAULT_MODE = "dashboard"
    COMMANDS: ClassVar = App.COMMANDS | {OpsCommands}
    BINDINGS: ClassVar = [
        Binding("1", "switch_mode('dashboard')", "Dashboard", show=False, id="app.dashboard"),
        Binding("2", "switch_mode('backups')", "Backups", show=False, id="app.backups"),
        Binding("question_mark,f1", "help", "Help", key_display="?", id="app.help"),
        Binding("H", "health", "Health", show=False, id="app.health"),
        Binding("O", "doctor", "Doctor (pre-flight)", show=False, id="app.doctor"),
        Binding("P", "prune", "Prune (dry run first)", show=False, id="app.prune"),
        Binding("L", "command_log", "Command log", show=False, id="app.command_log"),
        Binding("M", "pitr_recover", "Recover to a moment (PITR)", show=False, id="app.pitr_recover"),
        Binding("A", "pitr_accidents", "Find the accident (PITR)", show=False, id="app.pitr_accidents"),
        Binding("q", "quit", "Quit", show=False, id="app.quit"),
    ]

    def __init__(self, settings: Settings, read_only: bool = False, *,
                 now: Callable[[], datetime] | None = None, monotonic: Callable[[], float] | None = None,
                 warm_up: bool = True, notice: str | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.read_only = read_only
        self._now = now or (lambda: datetime.now().astimezone())
        self._monotonic = monotonic or time.monotonic
        self._warm_up = warm_up
        self._painted = False
        self._notice = notice
        # What the console ran (events.CommandRan), newest last; bounded like a terminal's scrollback.
        self.command_log: deque[Any] = deque(maxlen=COMMAND_LOG_SIZE)

    # -- clocks (frozen in snapshot tests) -------------------------------------------------
    def now(self) -> datetime:
        return self._now()

    def monotonic(self) -> float:
        return self._monotonic()

    # -- start-up --------------------------------------------------------------------------
    def on_mount(self) -> None:
        # While the console runs, the engine's next steps name its keys, not CLI flags (its engine
        # calls run in worker threads of this process); when it closes, the face before comes back.
        from opstower_core import advice

        self._face_before = advice.current_face()
        advice.set_face("console")
        keys = self.settings.section("keys")
        if keys:
            # [keys] in the config: binding id = "key", e.g. "backups.verify" = "V".
            self.set_keymap({str(k): str(v) for k, v in keys.items()})
        if self._notice:
            self.notify(self._notice, title="Demo", timeout=60)

    def on_unmount(self) -> None:
        from opstower_core import advice

        advice.set_face(getattr(self, "_face_before", "cli"))

    def note_first_paint(self, screen: Any) -> None:
        if self._painted:
            return
        self._painted = True
        self.call_after_refresh(self._after_first_paint)

    def _after_first_paint(self) -> None:
        path = os.environ.get(FIRST_PAINT_ENV)
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(f"{time.time():.6f}\n")
            if os.environ.get(EXIT_AFTER_PAINT_ENV):
                self.exit(0)
                return
        if self._warm_up:
            self.warm_imports()

    @work(thread=True, exclusive=True, group="warm-up", exit_on_error=False)
    def warm_imports(self) -> None:
        """Import the engine off the UI thread, so the first key press does not pay for it."""
        import importlib

        for module in ("opstower_core.repo.catalog", "opstower_core.verify.run", "opstower_core.backup.run",
                       "opstower_core.restore.api", "opstower_core.storage.s3", "boto3"):
            try:
                importlib.import_module(module)
            except ImportError:
                pass

    # -- errors ----------------------------------------------------------------------------
    def report_error(self, error: BaseException) -> None:
        """A worker's error as the engine's sentence in a modal; a cancel is only a notice."""
        from opstower_core.errors import Cancelled

        if isinstance(error, Cancelled):
            self.notify(sentence_of(error), title="Cancelled", severity="warning")
            return
        self.push_screen(ErrorDialog(sentence_of(error)))

    # -- actions ---------------------------------------------------------------------------
    def open_drill(self) -> None:
        """The DR drill screen, from any screen's D (the screens do not import each other)."""
        from opstower_tui.screens.drill import DrillScreen

        self.push_screen(DrillScreen(self.settings, None))

    def pitr_configured(self) -> bool:
        if self.settings.pitr.enabled:
            return True
        self.notify("Point-in-time recovery is not set up: add a [pitr] table to the config (WAL archiving "
                    "and base backups to S3)", title="PITR", severity="warning")
        return False

    def open_pitr_recovery(self, target_name: str | None = None) -> None:
        """Recover to a moment (the server's WAL archive), for `target_name`'s server."""
        if self.pitr_configured():
            from opstower_tui.screens.pitr import PitrScreen

            self.push_screen(PitrScreen(target_name))

    def open_accidents(self, target_name: str | None = None) -> None:
        """Find the accident: destructive commits in the archived WAL, Enter recovers to just before one."""
        if self.pitr_configured():
            from opstower_tui.screens.pitr_accidents import AccidentsScreen

            self.push_screen(AccidentsScreen(target_name))

    def action_pitr_recover(self) -> None:
        self.open_pitr_recovery()

    def action_pitr_accidents(self) -> None:
        self.open_accidents()

    def action_health(self) -> None:
        from opstower_tui.jobs import health_job, health_summary
        from opstower_tui.screens.run import RunScreen

        self.push_screen(RunScreen("Health (as monitoring sees it)", health_job(self.settings), summary=health_summary))

    def action_doctor(self) -> None:
        from opstower_tui.jobs import doctor_job, doctor_summary
        from opstower_tui.screens.run import RunScreen

        self.push_screen(RunScreen("Doctor: pre-flight checks", doctor_job(self.settings), summary=doctor_summary))

    @on(EngineEvent)
    def keep_command(self, message: EngineEvent) -> None:
        """Every screen's run events bubble here: the commands go into the console's command log."""
        if getattr(message.event, "kind", "") == "command_ran":
            self.command_log.append(message.event)

    def action_command_log(self) -> None:
        from opstower_tui.screens.command_log import CommandLogScreen

        if isinstance(self.screen, CommandLogScreen):
            return
        # One log screen, pushed again on each L: no compose and style pass of new widgets (it
        # re-reads the log when shown, CommandLogScreen.on_screen_resume).
        if not self.is_screen_installed("command-log"):
            self.install_screen(CommandLogScreen(), "command-log")
        self.push_screen("command-log")

    def action_prune(self) -> None:
        from opstower_tui.screens.prune import PruneScreen

        self.push_screen(PruneScreen(self.settings))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))


def run_console(settings: Settings, read_only: bool = False, notice: str | None = None) -> int:
    """Run the console until the operator quits; returns the exit code. `notice` is shown at start
    (the demo's lines for driving it from another shell: the console covers the terminal)."""
    from opstower_core import advice

    before = advice.current_face()
    app = OpsTowerApp(settings, read_only=read_only, notice=notice)
    try:
        result = app.run()
    finally:
        advice.set_face(before)  # whatever way the app ended: the CLI speaks in flags again (the demo goes on)
    return int(result or app.return_code or 0)
