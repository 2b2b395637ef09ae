"""`python tools/screenshots.py DIR` (`make screenshots`): SVGs of every screen at 80x24.

Taken from the real app on the real demo (embedded PostgreSQL and S3, the demo's own
directory): the dashboard, the backups list, a failed and a fully passed verification, the
restore wizard from plan to the end, help, the command palette and a DR drill. The restore really
runs against the demo database; the old copy it keeps is discarded afterwards.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SIZE = (80, 24)


async def _wait(pilot: Any, predicate: Callable[[], Any], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"screen did not get ready: {predicate}")
        await pilot.pause(0.05)
    await pilot.pause(0.2)


async def _dashboard(pilot: Any) -> None:
    screen = pilot.app.screen
    await _wait(pilot, lambda: screen.snapshot is not None and screen.snapshot.s3_status not in ("…",))


async def _backups(pilot: Any) -> Any:
    await pilot.press("2")
    screen = pilot.app.screen
    await _wait(pilot, lambda: screen.s3_state and "listing" not in screen.s3_state)
    return screen


async def _pick(pilot: Any, text: str) -> None:
    await pilot.press("slash", *text, "enter")


def _scenarios(backups: list[str], database: str) -> list[tuple[str, Callable[[Any], Awaitable[None]], bool]]:
    local_only, both, corrupted = backups

    async def dashboard(pilot: Any) -> None:
        await _dashboard(pilot)

    async def backups_list(pilot: Any) -> None:
        await _backups(pilot)

    async def verify_failed(pilot: Any) -> None:
        await _backups(pilot)
        await _pick(pilot, corrupted.split("_")[-1][:6])
        await pilot.press("v")
        verify = pilot.app.screen
        await _wait(pilot, lambda: verify.finished)

    async def verify_full(pilot: Any) -> None:
        await _backups(pilot)
        await _pick(pilot, both.split("_")[-1][:6])
        await pilot.press("t")
        verify = pilot.app.screen
        await _wait(pilot, lambda: verify.finished)

    async def restore_plan(pilot: Any) -> None:
        await _backups(pilot)
        await _pick(pilot, "both")
        await pilot.press("r")
        wizard = pilot.app.screen
        await _wait(pilot, lambda: wizard.phase in ("plan", "failed"))

    async def restore_confirm(pilot: Any) -> None:
        await restore_plan(pilot)
        await pilot.press("enter")
        await pilot.pause(0.2)
        pilot.app.screen.query_one("#typed-name").cursor_blink = False
        await pilot.press(*database)
        await pilot.pause(0.2)

    async def restore_done(pilot: Any) -> None:
        await restore_confirm(pilot)
        wizard = pilot.app.screen_stack[-2]
        await pilot.press("enter")
        await _wait(pilot, lambda: wizard.phase in ("done", "failed"))

    async def help_screen(pilot: Any) -> None:
        await _backups(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.2)

    async def palette(pilot: Any) -> None:
        await _backups(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        await pilot.press(*"ver")
        await pilot.pause(0.5)

    async def drill(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("D")
        await pilot.pause(0.5)
        await pilot.press("ctrl+s")  # start the proposed drill (scenario, database, newest good backup)
        await _wait(pilot, lambda: getattr(pilot.app.screen, "drill_id", None) is not None)

    async def command_log(pilot: Any) -> None:
        await restore_done(pilot)
        await pilot.press("L")
        await pilot.pause(0.3)

    async def table_recovery(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("T")
        screen = pilot.app.screen
        await pilot.pause(0.3)
        await pilot.press("space", "enter")  # the first table of the backup
        await _wait(pilot, lambda: screen.phase in ("preview", "failed"))

    async def health(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("H")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished)

    async def prune(pilot: Any) -> None:
        await _dashboard(pilot)
        await pilot.press("P")
        run = pilot.app.screen
        await _wait(pilot, lambda: run.finished)

    return [
        ("dashboard", dashboard, False),
        ("dashboard-read-only", dashboard, True),
        ("backups", backups_list, False),
        ("verify-failed", verify_failed, False),
        ("verify-full-test", verify_full, False),
        ("restore-plan", restore_plan, False),
        ("restore-confirm", restore_confirm, False),
        ("restore-done", restore_done, False),
        ("help", help_screen, False),
        ("command-palette", palette, False),
        ("drill", drill, False),
        ("command-log", command_log, False),
        ("table-recovery-preview", table_recovery, False),
        ("health", health, False),
        ("prune-dry-run", prune, False),
    ]


async def take_all(settings: Any, backups: list[str], out: Path) -> list[Path]:
    from opstower_tui.app import OpsTowerApp

    written = []
    for name, scenario, read_only in _scenarios(backups, settings.target().dbname):
        app = OpsTowerApp(settings, read_only=read_only, warm_up=False)
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)
            written.append(Path(app.save_screenshot(f"{name}.svg", str(out))))
            if name in ("restore-done", "command-log"):
                if name == "command-log":
                    await pilot.press("escape")
                await _discard_old(pilot)
            if name == "table-recovery-preview":
                await pilot.press("escape")  # walked away: the scratch database is dropped
                await pilot.pause(2)
            if name == "drill":
                _abort_drill(settings, pilot.app.screen.drill_id)
        print(f"  {out / (name + '.svg')}", file=sys.stderr)
    return written


def _abort_drill(settings: Any, drill_id: int) -> None:
    """Keep the demo tidy: the screenshot's drill must not wait there to be resumed."""
    from opstower_core.drill import DrillRunner

    DrillRunner.open(settings, drill_id).abort("screenshot only")


async def _discard_old(pilot: Any) -> None:
    """Keep the demo tidy: drop the copy the swap kept."""
    wizard = pilot.app.screen
    if getattr(wizard, "phase", "") == "done" and wizard.result.old_database:
        await pilot.press("x", "y")
        await _wait(pilot, lambda: wizard.old_decided, timeout=60)


def main(argv: list[str] | None = None) -> int:
    import warnings

    from opstower_core.devenv.demo import DemoEnvironment, default_demo_dir
    from opstower_core.runs.history import StateStore

    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    env = DemoEnvironment(default_demo_dir())
    try:
        print(f"Starting the demo in {env.directory}", file=sys.stderr)
        env.start()
        env.use_environment()
        env.seed()
        settings = env.settings()
        seeded = StateStore(settings.state_dir).get("demo.seeded") or {}
        backups = list(seeded.get("backups", []))
        if len(backups) != 3:
            print("The demo directory has no seeded backups; remove it and run again", file=sys.stderr)
            return 1
        written = asyncio.run(take_all(settings, backups, out))
        print(f"{len(written)} screenshots in {out}", file=sys.stderr)
        return 0
    finally:
        env.stop()


if __name__ == "__main__":
    sys.exit(main())
