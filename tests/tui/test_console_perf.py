"""What keeps the console's first paint and `L` within issue 16's budget, as properties a change
can break: the console path parses its flags without argparse, and a screen shown again keeps its
footer (no recompose, no restyle of its keys) while showing what changed meanwhile.

No server is needed: the command log's entries are what the console's runs post.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from opstower_core.cli import _console_only
from opstower_core.config import Settings, Target
from opstower_core.events import CommandRan
from opstower_tui.app import OpsTowerApp
from opstower_tui.screens.command_log import CommandLogScreen
from opstower_tui.widgets.command_table import CommandTable
from opstower_tui.widgets.footer import KeysFooter


@pytest.mark.parametrize(("argv", "expected"), [
    ([], (None, False)),
    (["--config", "/etc/o.toml"], ("/etc/o.toml", False)),
    (["--read-only", "--config=/etc/o.toml"], ("/etc/o.toml", True)),
    (["--config"], None),  # argparse says the value is missing
    (["--config", "--read-only"], None),
    (["--help"], None),
    (["--read"], None),  # an abbreviation: argparse's to read
    (["list"], None),
    (["--config", "x.toml", "backup"], None),
])
def test_console_flags_without_argparse(argv: list[str], expected: tuple[str | None, bool] | None) -> None:
    found = _console_only(argv)
    assert (None if found is None else (found.config, found.read_only)) == expected
    if found is not None:
        assert found.command is None


def test_opening_the_console_imports_no_argparse(tmp_path: Path) -> None:
    """The console path up to the app: the CLI's parsers and the engine's commands stay unimported."""
    config = tmp_path / "c.toml"
    config.write_text(f'backup_dir = "{tmp_path}"\nstate_dir = "{tmp_path}/state"\n[targets.shop]\ndbname = "shop"\n')
    probe = ("import sys\nfrom opstower_core import cli\nseen = {}\n"
             "def open_console(settings, read_only):\n"
             "    seen['mods'] = [m for m in ('argparse', 'psycopg', 'boto3', 'opstower_core.cli.backup')"
             " if m in sys.modules]\n    return 0\n"
             f"cli.main(['--config', {str(config)!r}], open_console=open_console)\nprint(seen['mods'])\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_command_log_shown_again_keeps_its_footer(tmp_path: Path) -> None:
    settings = Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                        targets={"shop": Target(name="shop", dbname="shop")}, default_target="shop")
    (tmp_path / "backups").mkdir()
    app = OpsTowerApp(settings, warm_up=False)
    start = time.time() - 100
    app.command_log.extend(CommandRan("load", f"pg_restore --dbname=shop_{i:03d}", start + i, 0.5, "ok")
                           for i in range(100))
    seen: dict[str, object] = {}

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = CommandLogScreen()
            app.install_screen(screen, "command-log")
            await app.push_screen("command-log")
            await pilot.pause()
            footer = screen.query_one(KeysFooter)
            keys_before = list(footer.children)
            seen["first"] = [k.key for k in keys_before]
            await pilot.press("home")
            await pilot.press("escape")
            await pilot.pause()
            app.command_log.append(CommandRan("swap", 'ALTER DATABASE "shop" RENAME TO "shop_old"', time.time(),
                                              0.1, "ok"))
            await app.push_screen("command-log")
            await pilot.pause()
            table = screen.query_one("#commands", CommandTable)
            seen["rows"], seen["cursor"] = table.row_count, table.cursor_row
            seen["newest"] = table.get_row_at(table.cursor_row)[3]
            seen["same_keys"] = list(footer.children) == keys_before and all(
                k.has_class("-compact") for k in keys_before)

    asyncio.run(scenario())
    assert "w" in seen["first"]  # type: ignore[operator]
    assert (seen["rows"], seen["cursor"], seen["newest"]) == (101, 100, "swap")
    assert seen["same_keys"] is True
