"""The backups table's AGE column follows the clock (issue 16: it never refreshed) without
recomputing every row: the rows on screen are drawn from the latest `now`, and the order by
age stays right."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from opstower_core.config import Settings, Target
from opstower_tui.app import OpsTowerApp
from opstower_tui.screens.backups import BackupsScreen
from opstower_tui.widgets.backup_table import BackupTable


def test_ages_follow_the_clock_and_keep_their_order(tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    backups.mkdir()
    for stamp in ("20261130_100000Z", "20261130_113000Z", "20261130_090000Z"):
        (backups / f"shop_{stamp}.dump.zst").write_bytes(b"x" * 100)
    clock = [datetime(2026, 11, 30, 12, 0, tzinfo=UTC)]
    settings = Settings(backup_dir=backups, state_dir=tmp_path / "state",
                        targets={"shop": Target(name="shop", dbname="shop")}, default_target="shop")
    app = OpsTowerApp(settings, warm_up=False, now=lambda: clock[0])
    seen: dict[str, list[str]] = {}

    def ages(table: BackupTable) -> list[str]:
        rows = [table.render_line(y).text[2:].split() for y in range(1, 4)]  # after the cursor mark
        return [f"{cells[1]} {cells[2]}" for cells in rows]

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("2")
            screen = app.screen
            assert isinstance(screen, BackupsScreen)
            table = screen.query_one(BackupTable)
            while len(table.rows) < 3:
                await pilot.pause(0.05)
            seen["names"] = [r.name for r in table.view]
            seen["before"] = ages(table)
            clock[0] += timedelta(hours=2)
            table.refresh_ages(app.now())
            seen["after"] = ages(table)

    asyncio.run(scenario())
    assert seen["names"] == ["shop_20261130_113000Z.dump.zst", "shop_20261130_100000Z.dump.zst",
                             "shop_20261130_090000Z.dump.zst"]  # youngest first
    assert seen["before"] == ["30m 00s", "2h 00m", "3h 00m"]
    assert seen["after"] == ["2h 30m", "4h 00m", "5h 00m"]
