"""Verify: the eight checks with live status words, progress with bytes and ETA, Esc cancels."""

from __future__ import annotations

from typing import Any

from opstower_tui.jobs import VERIFY_CHECKS, verify_job
from opstower_tui.screens.run import RunScreen


class VerifyScreen(RunScreen):
    SCREEN_NAME = "Verify"

    def __init__(self, entry: Any, full_test: bool = False, *, autostart: bool = True) -> None:
        self.entry = entry
        self.full_test = full_test
        title = f"Verify {entry.filename}" + ("  (full test)" if full_test else "")
        super().__init__(title, self._job, VERIFY_CHECKS, autostart=autostart)

    def _job(self, on_event: Any, cancel: Any) -> Any:
        return verify_job(self.ops.settings, self.entry, self.full_test)(on_event, cancel)

    def summarize(self, result: Any) -> str:
        counts = {s: 0 for s in ("PASS", "FAIL", "WARN", "SKIP")}
        for r in result.results:
            counts[r.status.value] = counts.get(r.status.value, 0) + 1
        verdict = "VERIFICATION PASSED" if result.ok else "VERIFICATION FAILED"
        return (f"{verdict}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings, "
                f"{counts['SKIP']} skipped ({result.seconds:.1f} s)  Esc to go back")
