"""The command log (L) holding its full 10,000 entries, at 80×24: newest under the cursor, the
cursor's command whole under the table, commands run meanwhile followed, `w` writes them all.

No server is needed: the entries are what the console's runs post (events.CommandRan).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from opstower_core.config import Settings, Target
from opstower_core.events import CommandRan
from opstower_tui.app import COMMAND_LOG_SIZE, OpsTowerApp
from opstower_tui.screens.command_log import CommandLogScreen
from opstower_tui.widgets.command_table import CommandTable

SIZE = (80, 24)


def entries(count: int) -> list[CommandRan]:
    start = time.time() - count
    return [CommandRan("load", f"pg_restore --dbname=shop_restore_{i:05d} --jobs=4 /var/backups/opstower/"
                               f"shop_20261130_{i:06d}.dump", start + i, 0.5,
                       "ok" if i % 100 else "failed: exit 1: pg_restore: error: could not connect")
            for i in range(count)]


def test_the_command_log_at_its_full_size(tmp_path: Path) -> None:
    settings = Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                        targets={"shop": Target(name="shop", dbname="shop")}, default_target="shop")
    (tmp_path / "backups").mkdir()
    app = OpsTowerApp(settings, warm_up=False)
    app.command_log.extend(entries(COMMAND_LOG_SIZE))
    seen: dict[str, Any] = {}

    def screen_text() -> str:
        return "\n".join(strip.text for strip in app.screen._compositor.render_strips())

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("L")
            await pilot.pause()
            assert isinstance(app.screen, CommandLogScreen)
            table = app.screen.query_one("#commands", CommandTable)
            seen["rows"], seen["cursor"] = table.row_count, table.cursor_row
            seen["newest"] = screen_text()
            await pilot.press("home")
            await pilot.pause()
            seen["first"] = screen_text()
            await pilot.press("end", "pageup")
            seen["after_page"] = table.cursor_row
            await pilot.press("end")
            # A run underneath posts one more command: the log follows it (the oldest drops out).
            app.command_log.append(CommandRan("swap", 'ALTER DATABASE "shop" RENAME TO "shop_pre_restore_x"',
                                              time.time(), 0.1, "ok"))
            deadline = time.monotonic() + 10
            while table.row_count and table.get_row_at(table.row_count - 1)[3] != "swap":
                assert time.monotonic() < deadline, "the new command did not appear"
                await pilot.pause(0.1)
            seen["followed"] = (table.row_count, table.cursor_row, table.get_row_at(0)[4])
            await pilot.press("w")
            reports = settings.state_dir / "reports"
            while not list(reports.glob("commands-*.md")):
                assert time.monotonic() < deadline + 20, "w wrote nothing"
                await pilot.pause(0.1)

    asyncio.run(scenario())
    n = COMMAND_LOG_SIZE
    assert (seen["rows"], seen["cursor"]) == (n, n - 1)
    newest = seen["newest"]
    # The cursor row is cut with an ellipsis at 80 columns; the line under the table holds it whole.
    assert "▶ " in newest and "…" in newest
    assert f"pg_restore --dbname=shop_restore_{n - 1:05d} --jobs=4 /var/backups/opstower/shop_20261130_" \
           f"{n - 1:06d}.dump" in " ".join(line.strip() for line in newest.splitlines())
    assert f"{n:,} command(s) this console ran" in newest
    assert "shop_restore_00000 " in seen["first"].replace("\n", " ") and "failed" in seen["first"]
    assert seen["after_page"] < n - 1
    assert seen["followed"] == (n, n - 1, entries(2)[1].command)  # bounded: the oldest one dropped out
    (written,) = (settings.state_dir / "reports").glob("commands-*.md")
    text = written.read_text()
    assert text.count("pg_restore --dbname=shop_restore_") == n - 1 and "RENAME TO" in text
