"""Retention in the console: the dry run first (every decision with its reason), then `a` applies it."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.binding import Binding

from opstower_tui.jobs import prune_job, prune_summary
from opstower_tui.screens.run import RunScreen
from opstower_tui.widgets.step_list import StepList


class PruneScreen(RunScreen):
    SCREEN_NAME = "Prune"
    BINDINGS: ClassVar = [
        Binding("a", "apply_prune", "Apply", id="prune.apply"),
    ]

    def __init__(self, settings: Any) -> None:
        super().__init__("Retention: dry run (nothing is deleted)", prune_job(settings, dry_run=True),
                         summary=prune_summary)
        self.settings = settings
        self.applied = False

    def _deletions(self) -> int:
        reports = self.result or []
        return sum(1 for r in reports for d in r.decisions if d.action == "delete")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not super().check_action(action, parameters):
            return False
        if action == "apply_prune":
            return self.finished and not self.applied and self._deletions() > 0
        return True

    def work_done(self, name: str, result: Any) -> None:
        super().work_done(name, result)
        self.refresh_bindings()

    def action_apply_prune(self) -> None:
        from opstower_tui.dialogs.confirm import YesNoDialog

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            self.applied = True
            self.job = prune_job(self.settings, dry_run=False)
            self.query_one("#run-name").update("Retention: applying")
            self.query_one("#steps", StepList).set_steps([])
            self.refresh_bindings()
            self.start()

        self.app.push_screen(YesNoDialog(f"Delete the {self._deletions()} artifact(s) the dry run listed? "
                                         "Retention decides again at this moment, with the same rules.",
                                         "Apply retention"), answered)
