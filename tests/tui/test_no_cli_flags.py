"""No console screen names a CLI flag as the way to do something (issue 16).

The engine's next steps come from `opstower_core.advice`: the console's face says them as a key
on a screen. Checked three ways: every remedy's console text, the engine sentences of the
modules that speak through it (no flag or `opstower …` command written around it), and the
health screen at 80×24 with findings whose next step is a key.
"""

from __future__ import annotations

import ast
import asyncio
import re
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import RichLog

from opstower_core import advice
from opstower_core.config import Settings, Target
from opstower_tui.app import OpsTowerApp
from opstower_tui.screens.run import RunScreen

SIZE = (80, 24)
SRC = Path(__file__).resolve().parents[2] / "src" / "opstower_core"
VALUES = {"db": "shop", "artifact": "shop_20260101_000000.dump", "table": "public.orders", "mode": "merge"}
FLAG = re.compile(r"(?<![\w-])--?[a-z]")  # --full-test, -d
# Sentences the console can show, in the modules that say their next steps through advice.
SPEAKING = [*SRC.glob("health/*.py"), *SRC.glob("doctor/*.py"), SRC / "repo" / "retention.py",
            *(SRC / "restore" / f"{n}.py" for n in ("checks", "identity", "roles", "old", "recover", "journal",
                                                     "from_cluster", "run", "source", "server")),
            SRC / "verify" / "run.py",
            *SRC.glob("recover/*.py"), *SRC.glob("backup/*.py"), SRC / "pg" / "tools.py", SRC / "pg" / "admin.py",
            SRC / "repo" / "catalog.py", SRC / "repo" / "download.py", SRC / "storage" / "s3.py",
            *(SRC / "pitr" / f"{n}.py" for n in ("status", "base", "accident", "heartbeat", "barman"))]
# Console screens whose own sentences are checked: a command may be named only whole, as one to run
# in a terminal (where the console has no action for it), never a flag as the way to do something.
TUI = SRC.parent / "opstower_tui" / "screens"
SCREENS = [TUI / "base.py", TUI / "restore.py", TUI / "drill.py"]
# Read outside the console, where a shell is at hand: the health alert sent to Slack / e-mail.
OUTSIDE = {"\nRun `opstower health` on the backup host for every check."}


@pytest.fixture
def console_face():
    before = advice.current_face()
    advice.set_face("console")
    yield
    advice.set_face(before)


@pytest.mark.parametrize("name", sorted(advice.REMEDIES))
def test_no_console_remedy_names_a_flag(name: str) -> None:
    text = advice.say(name, "console", **VALUES)
    assert not FLAG.search(text), f"{name}: {text!r}"


def _sentences(path: Path) -> list[tuple[int, str]]:
    """String constants that are not docstrings and read as words (argv items like '--list' do not)."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
            and " " in node.value.strip()]


def test_engine_sentences_say_their_next_step_through_advice() -> None:
    found = []
    for path in SPEAKING:
        for line, text in _sentences(path):
            if text not in OUTSIDE and (re.search(r"(?<![\w-])--[a-z]", text) or "`opstower " in text):
                found.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
    assert not found, "a flag or command written into a sentence instead of advice.say():\n" + "\n".join(found)


def _screen_sentences(path: Path) -> list[tuple[int, str]]:
    """Each sentence of a screen whole (an f-string's parts joined, {} for its values); not docstrings, not
    words without a space (CSS classes like '-production')."""
    tree = ast.parse(path.read_text())
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    parts = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            found.append((node.lineno, "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in parts | docs:
            found.append((node.lineno, node.value))
    return [(line, text) for line, text in found if " " in text.strip()]


def test_screens_name_no_flag_as_the_way() -> None:
    found = [f"{path.name}:{line}: {text!r}" for path in SCREENS for line, text in _screen_sentences(path)
             if (re.search(r"(?<![\w-])--[a-z]", text) or "`opstower " in text) and "in a terminal" not in text]
    assert not found, "a screen names a flag or command as the way to do something:\n" + "\n".join(found)


def test_engine_sentences_speak_to_the_console(console_face) -> None:
    """A few converted sentences, said with the console's face: keys and screens (base backup is B now)."""
    from opstower_core.backup.locks import LockHolder, what_to_do

    holder = LockHolder(pid=42, user="app", application="psql", state="idle in transaction", query="LOCK t",
                        since=None, relations="public.t")
    assert what_to_do(holder).endswith("wait_for_locks_seconds in the config waits longer (read when the console "
                                       "starts)")
    assert advice.say("base_backup_take") == "take one: B (Base backup) on the Dashboard (1)"
    for name in ("wait_longer", "see_backups", "pick_backup", "check_key", "pitr_status", "copy_other_name",
                 "keep_cluster", "backup_format", "doctor_aside"):
        assert not re.search(r"(?<![\w-])--[a-z]", advice.say(name)) and "opstower" not in advice.say(name), name
    advice.set_face("cli")
    assert what_to_do(holder).endswith("then run the backup again; --wait-for-locks SECONDS waits longer")


def test_health_screen_names_the_console_keys(console_face, tmp_path: Path) -> None:
    """No backup and none verified: the findings' next steps are b and t on the Dashboard, no flag on screen."""
    # Nothing here reaches a server: health reads the (empty) backup directory and state only.
    target = Target(name="shop", dbname="shop", host="127.0.0.1", port=1, user="nobody")
    settings = Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", targets={"shop": target},
                        default_target="shop", min_free_gb=0.0)
    (tmp_path / "backups").mkdir()
    app = OpsTowerApp(settings, warm_up=False)
    shown: dict[str, Any] = {}

    async def scenario() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("H")
            deadline = time.monotonic() + 60
            while not (isinstance(app.screen, RunScreen) and app.screen.finished):
                assert time.monotonic() < deadline, "the health run did not finish"
                await pilot.pause(0.05)
            steps = app.screen.query_one("#steps").rows
            shown["details"] = {row.step.split(":")[0]: row.detail for row in steps.values()}
            # The step list cuts the sentence at 80 columns; the log below it wraps it whole. Scroll the
            # log to the verification finding, as the operator would, and read the screen.
            log = app.screen.query_one("#log", RichLog)
            line = next(i for i, strip in enumerate(log.lines) if "ever verified" in strip.text)
            log.scroll_to(y=line, animate=False, immediate=True)
            await pilot.pause()
            shown["screen"] = "\n".join(strip.text for strip in app.screen._compositor.render_strips())

    asyncio.run(scenario())
    details, screen = shown["details"], shown["screen"]
    assert details["verification"] == "no backup was ever verified: press t (Full test) on the Dashboard (1)"
    assert details["backup_age"].endswith(": press b (Back up) on the Dashboard (1)")
    # What the 80×24 screen shows (the log wraps the full sentences): keys, no flag, no command.
    assert "no backup was ever verified: press t (Full test) on the Dashboard (1)" in screen, screen
    assert not re.search(r"(?<![\w-])--[a-z]", screen) and "opstower verify" not in screen, screen
