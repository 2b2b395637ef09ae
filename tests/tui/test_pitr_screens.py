"""Point-in-time recovery in the console, at 80x24, against a real archiving PostgreSQL 18.

One recovery in the whole module (they cost ~30 s each): an accidental DELETE is found in the
archived WAL, Enter recovers to just before it, the database is copied out under a name with
its proof, the rows are back in the copy, the scratch cluster is discarded. The other tests
walk validation, the threshold, per-target safety and the keys without recovering; the
snapshots are fed fixed data (deterministic).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opstower_core.config import PitrSettings, Settings, Target
from opstower_core.events import Status, StepFinished, StepLog, StepProgress, StepStarted
from opstower_core.pitr import Accident, BaseBackup, PitrStatus, ScratchCluster, take_base_backup
from opstower_core.pitr.launcher import OsUser
from opstower_tui.app import OpsTowerApp
from opstower_tui.commands import OpsCommands
from opstower_tui.dialogs.confirm import TypedConfirmDialog, YesNoDialog
from opstower_tui.messages import EngineEvent
from opstower_tui.screens.dashboard import DashboardScreen
from opstower_tui.screens.pitr import CopyOutDialog, PitrScreen, parse_target
from opstower_tui.screens.pitr_accidents import AccidentsScreen
from opstower_tui.screens.recover import RecoverScreen
from support import pitr as pitr_support
from support.console import SIZE, drive, said, wait_for

pitr_env = pitr_support.pitr_env  # the archiving server (tests/support/pitr.py), one per module



def plain(widget: Any) -> str:
    from io import StringIO

    from rich.console import Console

    console = Console(file=StringIO(), width=200, record=True, color_system=None)
    console.print(widget.content if hasattr(widget, "content") else widget.renderable)
    return console.export_text()


@dataclasses.dataclass
class History:
    delete_xid: int


@pytest.fixture(scope="module")
def history(pitr_env) -> History:
    """A base backup, 3,000 orders, then the accident: 2,000 of them deleted in one transaction;
    after it a table created and dropped (a newer DROP)."""
    s = pitr_env.settings
    take_base_backup(s, s.target())
    with pitr_env.conn("app") as c:
        c.execute("CREATE TABLE orders (id int PRIMARY KEY, v text)")
        c.execute("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 3000) g")
        with c.transaction():
            xid = c.execute("SELECT txid_current()").fetchone()[0]
            c.execute("DELETE FROM orders WHERE id <= 2000")
        c.execute("CREATE TABLE leftovers (n int)")
        c.execute("DROP TABLE leftovers")
    pitr_env.switch_wal()
    return History(int(xid))


def test_accident_found_recovered_just_before_copied_out_with_rows_back(pitr_env, history):
    """The one full recovery: A → the DELETE → Enter → Enter → c (copy out: the rows are back in the copy)
    → t (table recovery from the same cluster: the rows are back in live) → x y (discarded)."""
    app = OpsTowerApp(pitr_env.settings, warm_up=False)
    scratch = Path(pitr_env.settings.pitr.scratch_dir)

    async def scenario(pilot: Any) -> None:
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("A")
        accidents = app.screen
        assert isinstance(accidents, AccidentsScreen)
        await wait_for(pilot, lambda: accidents.loaded, timeout=120)
        found = accidents.accidents
        assert found[0].kind == "DROP", [a.line() for a in found]  # newest first
        times = [a.time for a in found]
        assert times == sorted(times, reverse=True)
        index = next(i for i, a in enumerate(found) if a.xid == history.delete_xid)
        assert found[index].kind == "DELETE" and found[index].rows == 2000 and found[index].database == "app"
        assert "orders" in found[index].relation
        for _ in range(index):
            await pilot.press("down")
        assert "DELETE 2,000 rows" in plain(accidents.query_one("#acc-detail"))
        await pilot.press("enter")
        recovery = app.screen
        assert isinstance(recovery, PitrScreen)
        assert recovery.kind == "xid" and recovery.exclusive
        await wait_for(pilot, lambda: recovery.status is not None, timeout=60)
        plan = plain(recovery.query_one("#pitr-plan-text"))
        assert f"just before transaction {history.delete_xid}" in plan and "Base" in plan and "WAL" in plan
        await pilot.press("enter")
        assert recovery.phase == "recovering"
        await pilot.press("escape")  # refused while it runs: nothing half-made is left behind
        assert app.screen is recovery and any("Wait for it to finish" in m for m in said(app))
        await wait_for(pilot, lambda: recovery.phase != "recovering", timeout=600)
        assert recovery.phase == "recovered", plain(recovery.query_one("#pitr-summary"))
        assert "LSN" in plain(recovery.query_one("#replay")) and recovery.reached > 0
        assert recovery.query_one("#budget").elapsed > 0  # the RTO clock ran
        assert "app" in recovery.databases
        await pilot.press("c")
        dialog = app.screen
        assert isinstance(dialog, CopyOutDialog)
        assert dialog.query_one("#copy-name").value == f"app_pitr_{history.delete_xid}"
        await pilot.press("enter")
        await wait_for(pilot, lambda: recovery.copies or recovery.phase == "recovered", timeout=300)
        await wait_for(pilot, lambda: recovery.phase == "recovered", timeout=300)
        assert recovery.copies, plain(recovery.query_one("#pitr-summary"))
        copy = recovery.copies[0]
        done = plain(recovery.query_one("#pitr-done-text"))
        assert copy.database in done and copy.proof and copy.proof.split(":")[0][:20] in done
        with pitr_env.conn(copy.database) as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone()[0] == 3000  # the deleted rows are back
        with pitr_env.conn("app") as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone()[0] == 1000  # live untouched
        # (b) table recovery from the same recovered cluster: merge the lost orders back into live.
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, RecoverScreen), timeout=60)
        tables = app.screen
        assert tables.tables.get("public.orders") == 3000 and "as it was just before transaction" in plain(
            tables.query_one("#recover-title"))
        await pilot.press("space", "enter")  # the first (only) table, then the preview
        await wait_for(pilot, lambda: tables.phase in ("preview", "failed"), timeout=300)
        assert tables.phase == "preview", plain(tables.query_one("#recover-summary"))
        await pilot.press("enter")
        assert isinstance(app.screen, TypedConfirmDialog)
        await pilot.press(*"app", "enter")
        await wait_for(pilot, lambda: tables.phase in ("done", "failed"), timeout=300)
        assert tables.phase == "done", plain(tables.query_one("#recover-summary"))
        with pitr_env.conn("app") as c:
            assert c.execute("SELECT count(*) FROM orders").fetchone()[0] == 3000  # merged back
        await pilot.press("escape")
        assert app.screen is recovery and recovery.cluster is not None  # the cluster is still the operator's
        await pilot.press("x")
        assert isinstance(app.screen, YesNoDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: recovery.cluster is None, timeout=120)
        assert not list(scratch.iterdir())  # stopped and deleted
        await pilot.press("escape")
        assert app.screen is accidents
        with pitr_env.conn() as c:
            c.execute(f'DROP DATABASE "{copy.database}"')

    drive(app, scenario)


def test_threshold_hides_small_deletes_and_keeps_drops(pitr_env, history):
    async def scenario(pilot: Any) -> None:
        await pilot.press("A")
        accidents = pilot.app.screen
        await wait_for(pilot, lambda: accidents.loaded, timeout=120)
        assert any(a.xid == history.delete_xid for a in accidents.accidents)
        await pilot.press("n")
        await pilot.press("ctrl+a", "ctrl+k", *"5000", "enter")  # select all, cut, type
        await wait_for(pilot, lambda: accidents.min_rows == 5000 and not accidents.loading, timeout=120)
        kinds = {a.kind for a in accidents.accidents}
        assert "DROP" in kinds and not any(a.xid == history.delete_xid for a in accidents.accidents)

    drive(OpsTowerApp(pitr_env.settings, warm_up=False), scenario)


def test_recovery_screen_validates_in_one_line_and_starts_nothing(pitr_env, history):
    scratch = Path(pitr_env.settings.pitr.scratch_dir)

    async def scenario(pilot: Any) -> None:
        app = pilot.app
        await pilot.press("M")
        screen = app.screen
        assert isinstance(screen, PitrScreen) and screen.kind == "latest"
        await wait_for(pilot, lambda: screen.status is not None, timeout=60)
        assert "to the end of the archive" in plain(screen.query_one("#pitr-plan-text"))
        await pilot.press("right", "space")  # "a time"
        assert screen.kind == "time"
        assert screen.focused is screen.query_one("#pitr-value")
        for typed, problem in [("yesterday 3pm", "is not a time: write it as YYYY-MM-DD HH:MM:SS+ZZ"),
                               ("2000-01-01 00:00:00+00", "is before the recoverable window")]:
            await pilot.press("ctrl+a", "ctrl+k", *typed, "enter")
            await pilot.pause()
            line = plain(screen.query_one("#pitr-problem"))
            assert problem in line and line.count("\n") <= 2, line
            assert screen.phase == "choose" and screen.cluster is None
        await pilot.press("shift+tab", "right", "space")  # "an LSN"
        assert screen.kind == "lsn"
        await pilot.press("tab", "ctrl+a", "ctrl+k", *"zz", "enter")
        await pilot.pause()
        assert "is not an LSN" in plain(screen.query_one("#pitr-problem"))
        assert screen.phase == "choose"
        assert not scratch.exists() or not list(scratch.iterdir())
        # No screen sends the operator to the CLI for an action.
        for selector in ("#pitr-plan-text", "#pitr-summary", "#pitr-problem"):
            assert "--" not in plain(screen.query_one(selector))

    drive(OpsTowerApp(pitr_env.settings, warm_up=False), scenario)


def _with_target(settings: Settings, **flags: Any) -> Settings:
    app = dataclasses.replace(settings.targets["app"], **flags)
    return settings.with_changes(targets={**settings.targets, "app": app})


def test_production_asks_for_the_typed_name_read_only_refuses_aloud(pitr_env, history):
    async def production(pilot: Any) -> None:
        app = pilot.app
        await pilot.press("M")
        screen = app.screen
        assert "PRODUCTION app" in screen.sub_title
        await pilot.press("enter")  # latest
        assert isinstance(app.screen, TypedConfirmDialog)
        await pilot.press("escape")
        assert app.screen is screen and screen.phase == "choose" and screen.cluster is None
        assert any("Recovery not started" in m for m in said(app))

    drive(OpsTowerApp(_with_target(pitr_env.settings, production=True), warm_up=False), production)

    async def read_only_target(pilot: Any) -> None:
        await pilot.press("M", "enter")
        assert pilot.app.screen.phase == "choose"
        assert any("not offered for app: it is marked read_only" in m for m in said(pilot.app))

    drive(OpsTowerApp(_with_target(pitr_env.settings, read_only=True), warm_up=False), read_only_target)

    async def read_only_console(pilot: Any) -> None:
        titles = [t for t, _h, _c in OpsCommands(pilot.app.screen)._commands()]
        assert "Recover to a moment (PITR)" in titles and "Find the accident (PITR)" in titles
        await pilot.press("M", "enter")
        assert pilot.app.screen.phase == "choose"
        assert any("opened read-only" in m for m in said(pilot.app))

    drive(OpsTowerApp(pitr_env.settings, read_only=True, warm_up=False), read_only_console)


def test_without_pitr_the_keys_say_it_is_not_set_up(tmp_path):
    settings = Settings(backup_dir=tmp_path / "b", state_dir=tmp_path / "s", default_target="x",
                        targets={"x": Target(name="x", dbname="x", host=str(tmp_path), port=1)})

    async def scenario(pilot: Any) -> None:
        await pilot.press("M", "A")
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert sum("not set up" in m for m in said(pilot.app)) == 2

    drive(OpsTowerApp(settings, warm_up=False), scenario)


def test_parse_target_words():
    zone = UTC
    assert parse_target("latest", "ignored", True, zone).describe() == "the end of the archive (latest)"
    t = parse_target("time", "2026-11-30 03:12:00", False, zone)
    assert t.time == datetime(2026, 11, 30, 3, 12, tzinfo=UTC) and not t.exclusive
    assert parse_target("xid", " 1234 ", True, zone).xid == 1234
    assert parse_target("lsn", "0/3000060", True, zone).lsn == "0/3000060"


# --- snapshots (fixed data; no server) ----------------------------------------------------------

ROOT = Path("/tmp/opstower-pitr-snapshots")
NOW = datetime(2026, 11, 30, 4, 20, tzinfo=UTC)
MONO = 1000.0


def snap_settings() -> Settings:
    return Settings(backup_dir=ROOT / "backups", state_dir=ROOT / "state", default_target="app",
                    targets={"app": Target(name="app", dbname="app", host="db1", port=5432, rto_minutes=240)},
                    pitr=PitrSettings(server_name="db1", enabled=True, scratch_dir=ROOT / "scratch"))


def snap_status() -> PitrStatus:
    backup = BaseBackup("20261130T010000", NOW - timedelta(hours=3, minutes=20), NOW - timedelta(hours=3, minutes=19),
                        "000000010000000000000003", "000000010000000000000003", "0/3000028", "0/3000138", 1,
                        35_200_000, "DONE")
    return PitrStatus(backups=[backup], segments=9, timelines=[1], earliest=backup.end_time,
                      latest=NOW - timedelta(seconds=40), latest_segment="00000001000000000000000B")


SNAP_ACCIDENTS = [
    Accident(1201, NOW - timedelta(minutes=50), "0/9000100", "DELETE", "app", "public.customers", 12000),
    Accident(1234, NOW - timedelta(minutes=12), "0/B0001A0", "DROP", "app", "public.orders (+2 index/TOAST files)"),
    Accident(1100, NOW - timedelta(hours=2), "0/6000100", "UPDATE", "billing", "public.invoices", 3400),
    Accident(1190, NOW - timedelta(hours=1), "0/8000100", "TRUNCATE/REWRITE", "app", "public.audit_log"),
]


def snap_app() -> OpsTowerApp:
    return OpsTowerApp(snap_settings(), now=lambda: NOW, monotonic=lambda: MONO, warm_up=False)


async def footer_shows(pilot: Any, key: str) -> None:
    """The footer is recomposed after the bindings change: wait for it, so the snapshot is stable."""
    from textual.widgets._footer import FooterKey

    await wait_for(pilot, lambda: any(k.key == key for k in pilot.app.screen.query(FooterKey)), timeout=10)
    await pilot.pause(0.3)


def test_snapshot_accidents(snap_compare):
    app = snap_app()

    async def run_before(pilot: Any) -> None:
        screen = AccidentsScreen("app", autostart=False)
        await app.push_screen(screen)
        screen.show_accidents(SNAP_ACCIDENTS)
        await footer_shows(pilot, "n")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_recovery_plan_from_an_accident(snap_compare):
    app = snap_app()

    async def run_before(pilot: Any) -> None:
        screen = PitrScreen("app", kind="xid", value="1234", autostart=False,
                            note="DROP of app.public.orders, committed 11-30 04:08:00 UTC")
        await app.push_screen(screen)
        screen.show_status(snap_status())
        screen.query_one("#pitr-value").cursor_blink = False
        await footer_shows(pilot, "enter")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_recovered_outcomes(snap_compare):
    app = snap_app()

    async def run_before(pilot: Any) -> None:
        screen = PitrScreen("app", kind="xid", value="1234", autostart=False)
        await app.push_screen(screen)
        screen.show_status(snap_status())
        screen.enter_run_view(parse_target("xid", "1234", True, UTC))
        screen.started_at = MONO - 74.0
        events = [StepStarted("fetch_base", "Downloading base backup 20261130T010000 (35200000 bytes)"),
                  StepLog("fetch_base", "Starting restore for backup 20261130T010000"),
                  StepFinished("fetch_base", Status.PASS, "20261130T010000 into …/pgdata", 21.4),
                  StepStarted("replay", "Replaying WAL to just before transaction 1234 (port 45123)"),
                  StepProgress("replay", 0xB000190, 0, "lsn"),
                  StepFinished("replay", Status.PASS, "recovered just before transaction 1234: LSN 0/B000190 on "
                               "timeline 1; promoted", 51.2)]
        for event in events:
            screen.apply_event(EngineEvent(event))
        cluster = ScratchCluster(ROOT / "scratch" / "db1-20261130T042000-4242", 45123, OsUser("postgres", 999, 999),
                                 ROOT / "bin", "20261130T010000", "LSN 0/B000190 on timeline 2")
        screen.cluster, screen.databases = cluster, ["app", "billing"]
        screen.heartbeat = NOW - timedelta(minutes=12, seconds=20)
        screen.ended_at = MONO
        screen.work_done("recover", cluster)
        await footer_shows(pilot, "c")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def _recovered_screen(directory: Path) -> tuple[PitrScreen, ScratchCluster]:
    screen = PitrScreen("app", kind="latest", autostart=False)
    cluster = ScratchCluster(directory, 45123, OsUser("postgres", 999, 999), ROOT / "bin", "20261130T010000",
                             "LSN 0/B000190 on timeline 2")
    return screen, cluster


def test_leaving_asks_keep_or_discard_never_silently_running(tmp_path):
    """Esc with a recovered cluster: k keeps it (the replacement steps are shown, and leaving says it still
    runs), x discards it (its directory is gone). No real cluster: a stopped one's directory."""
    from opstower_tui.dialogs.confirm import ChoiceDialog

    async def scenario(pilot: Any) -> None:
        app = pilot.app
        for choice in ("k", "x"):
            directory = tmp_path / f"cluster-{choice}"
            (directory / "sock").mkdir(parents=True)
            screen, cluster = _recovered_screen(directory)
            await app.push_screen(screen)
            screen.show_status(snap_status())
            screen.enter_run_view(parse_target("latest", "", True, UTC))
            screen.cluster, screen.databases = cluster, ["app"]
            screen.work_done("recover", cluster)
            await pilot.press("escape")
            assert isinstance(app.screen, ChoiceDialog)
            await pilot.press(choice)
            if choice == "k":
                assert screen.kept and app.screen is screen
                assert str(cluster.pgdata) in plain(screen.query_one("#pitr-done-text"))  # the replacement steps
                await pilot.press("escape")
                assert app.screen is not screen
                assert any("keeps running on 127.0.0.1:45123" in m for m in said(app))
                assert directory.exists()
            else:
                await wait_for(pilot, lambda s=screen: app.screen is not s, timeout=30)
                assert not directory.exists() and screen.cluster is None
                assert any("stopped and deleted" in m for m in said(app))

    drive(snap_app(), scenario)
