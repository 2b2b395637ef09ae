"""The console walked by key presses against the real embedded PostgreSQL and S3.

One module-scoped environment (the sample database, a local-only backup, one in both
places and a corrupted copy) serves every flow: browse and filter, verify (FAIL on the
corrupted copy, 8 PASS with --full-test on the good one), cancel during a verify, the
restore wizard to the end (data back, checked with psycopg), read-only mode, errors.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.devenv.demo import corrupt_copy
from opstower_core.devenv.sampledb import add_activity, create_sample_database
from opstower_core.runs.history import StateStore
from opstower_tui.app import OpsTowerApp
from opstower_tui.commands import OpsCommands
from opstower_tui.dialogs.confirm import ChoiceDialog, TypedConfirmDialog, YesNoDialog
from opstower_tui.dialogs.error import ErrorDialog
from opstower_tui.screens.backups import BackupsScreen
from opstower_tui.screens.dashboard import DashboardScreen
from opstower_tui.screens.help import HelpScreen
from opstower_tui.screens.restore import RestoreScreen
from opstower_tui.screens.run import RunScreen
from opstower_tui.screens.verify import VerifyScreen
from opstower_tui.widgets.backup_table import BackupTable
from opstower_tui.widgets.db_card import DbCard
from opstower_tui.widgets.step_list import StepList
from support.console import drive, wait_for
from support.servers import admin_conn, create_database


def text_of(renderable: Any) -> str:
    console = Console(file=StringIO(), width=120, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.fixture(scope="module")
def env(pg, s3, tmp_path_factory):
    dbname = f"tui_{uuid.uuid4().hex[:8]}"
    create_sample_database(pg.conninfo("postgres"), dbname)
    root = tmp_path_factory.mktemp("tui")
    target = Target(name=dbname, dbname=dbname, host=pg.host, port=pg.port, user=pg.user)
    settings = Settings(
        backup_dir=root / "backups", state_dir=root / "state", pg_bin=pg.bin_dir,
        s3=S3Settings(bucket=s3.bucket, prefix=f"tui{uuid.uuid4().hex[:6]}/", endpoint_url=s3.endpoint_url,
                      region="us-east-1", part_size_mb=5),
        targets={dbname: target}, default_target=dbname, min_free_gb=0.0,
    )
    local = run_backup(settings, options=BackupOptions(local_only=True))
    add_activity(pg.conninfo("postgres"), dbname, rows=40)
    both = run_backup(settings)
    assert both.s3_key, both.s3_error
    corrupted = corrupt_copy(settings.backup_dir, both.path, local.name.created - timedelta(minutes=10))
    yield SimpleNamespace(pg=pg, settings=settings, dbname=dbname, local=local.name.filename, both=both,
                          corrupted=corrupted.name, stamp=corrupted.name[len(dbname) + 10:][:6])
    with admin_conn(pg) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (dbname + "%",)):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def open_backups(pilot: Any) -> BackupsScreen:
    await pilot.press("2")
    screen = pilot.app.screen
    assert isinstance(screen, BackupsScreen)
    await wait_for(pilot, lambda: screen.s3_state and "listing" not in screen.s3_state)
    return screen


async def select(pilot: Any, screen: BackupsScreen, text: str) -> BackupTable:
    """Filter as the operator does: `/`, type, Enter back to the table."""
    await pilot.press("slash", *text, "enter")
    table = screen.query_one(BackupTable)
    assert table.has_focus
    return table


def test_the_check_list_is_drawn_without_importing_the_engine():
    """The verify screen lists the eight checks before psycopg, boto3 or zstandard are imported."""
    import subprocess
    import sys

    code = ("import sys; import opstower_tui.jobs as j; assert len(j.VERIFY_CHECKS) == 8; "
            "heavy = [m for m in ('psycopg', 'boto3', 'zstandard') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_dashboard_shows_age_verification_drill_and_sizes(env):
    state = StateStore(env.settings.state_dir)

    async def scenario(pilot: Any) -> None:
        screen = pilot.app.screen
        assert isinstance(screen, DashboardScreen)
        card = screen.query_one(DbCard)
        await wait_for(pilot, lambda: screen.snapshot is not None and screen.snapshot.s3_status not in ("…",))
        info = text_of(card.query_one(".card-info").content)
        assert "Last backup  OK" in info and "within the RPO target of 1h 00m" in info
        assert env.both.name.filename in info
        assert "Last drill   -    none yet" in info
        assert "OK" in str(screen.query_one("#s3-line").content)
        assert str(card.query_one(".card-jumps").content).strip().startswith("3 backups")
        # A drill recorded by the drill engine appears after a refresh (f5).
        state.record("drill", env.dbname, "success", artifact=env.both.name.filename, duration_seconds=30,
                     details={"scenario_name": "Data deletion", "rto_met": True})
        await pilot.press("f5")
        await wait_for(pilot, lambda: "Data deletion" in text_of(card.query_one(".card-info").content))
        assert "Last drill   PASS" in text_of(card.query_one(".card-info").content)

    drive(OpsTowerApp(env.settings, warm_up=False), scenario)


def test_browse_filter_and_verify_the_corrupted_copy(env):
    async def scenario(pilot: Any) -> None:
        screen = await open_backups(pilot)
        table = screen.query_one(BackupTable)
        where = {r.name: r.where for r in table.rows}
        assert where == {env.local: "local", env.both.name.filename: "both", env.corrupted: "local"}
        table = await select(pilot, screen, env.stamp)
        assert [r.name for r in table.view] == [env.corrupted]
        assert "1/3" in str(screen.query_one("#counts").content)
        await pilot.press("v")
        verify = pilot.app.screen
        assert isinstance(verify, VerifyScreen) and not verify.full_test
        await wait_for(pilot, lambda: verify.finished)
        steps = verify.query_one(StepList)
        assert [steps.status_of(s) for s in ("exists", "readable", "not_empty")] == ["PASS"] * 3
        assert steps.status_of("compression") == "FAIL"
        assert steps.status_of("metadata") == "FAIL"
        assert steps.status_of("full_restore") == "SKIP"
        assert str(verify.query_one("#summary").content).startswith("VERIFICATION FAILED")
        await pilot.press("escape")
        assert pilot.app.screen is screen
        # The list is reloaded on return: the verdict shows in the VERIFIED column.
        await wait_for(pilot, lambda: {r.name: r.verified for r in table.rows}.get(env.corrupted) == "FAIL")
        # ... and S3 listed again (by a child process: the local rows come first, "both" once it has answered).
        await wait_for(pilot, lambda: screen.s3_state.endswith(" listed"))
        await pilot.press("escape")  # clears the filter
        assert len(table.view) == 3
        # "s3" finds the copy that is in both places; "local" finds all three.
        table = await select(pilot, screen, "s3")
        assert [r.name for r in table.view] == [env.both.name.filename]
        await pilot.press("escape")
        table = await select(pilot, screen, "local")
        assert len(table.view) == 3

    drive(OpsTowerApp(env.settings, warm_up=False), scenario)


def test_full_test_of_a_good_backup_passes_all_eight(env):
    async def scenario(pilot: Any) -> None:
        screen = await open_backups(pilot)
        table = await select(pilot, screen, "both")
        assert table.selected.filename == env.both.name.filename
        await pilot.press("t")
        verify = pilot.app.screen
        assert isinstance(verify, VerifyScreen) and verify.full_test
        await wait_for(pilot, lambda: verify.finished)
        steps = verify.query_one(StepList)
        assert [row.status for row in steps.rows.values()] == ["PASS"] * 8, steps.rows
        assert str(verify.query_one("#summary").content).startswith("VERIFICATION PASSED: 8 passed")

    drive(OpsTowerApp(env.settings, warm_up=False), scenario)


def test_escape_cancels_a_running_verify(env, monkeypatch):
    import threading

    from opstower_core.events import StepStarted
    from opstower_tui.jobs import verify_job
    from opstower_tui.screens import verify as verify_screen

    # Hold the worker at the start of check 8 until Esc was pressed, so the cancel lands
    # inside the full restore every time (a 200 KiB restore is otherwise over in a blink).
    at_check_8, esc_pressed = threading.Event(), threading.Event()

    def held_job(settings, entry, full_test):  # noqa: ANN001
        job = verify_job(settings, entry, full_test)

        def run(on_event, cancel):  # noqa: ANN001
            def sink(event):  # noqa: ANN001
                on_event(event)
                if isinstance(event, StepStarted) and event.step == "full_restore":
                    at_check_8.set()
                    esc_pressed.wait(30)

            return job(sink, cancel)

        return run

    monkeypatch.setattr(verify_screen, "verify_job", held_job)

    async def scenario(pilot: Any) -> None:
        screen = await open_backups(pilot)
        await select(pilot, screen, "both")
        await pilot.press("t")
        verify = pilot.app.screen
        steps = verify.query_one(StepList)
        await wait_for(pilot, lambda: at_check_8.is_set() and steps.status_of("full_restore") == "RUN")
        await pilot.press("escape")
        assert verify.cancel_token.cancelled
        esc_pressed.set()
        await wait_for(pilot, lambda: verify.finished)
        assert steps.status_of("full_restore") == "SKIP"
        assert str(verify.query_one("#summary").content).startswith("CANCELLED")
        assert not any(isinstance(s, ErrorDialog) for s in pilot.app.screen_stack)  # a cancel is no error
        await pilot.press("escape")
        assert pilot.app.screen is screen

    drive(OpsTowerApp(env.settings, warm_up=False), scenario)
    with admin_conn(env.pg) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                            (env.dbname[:30] + "_verify_%",)).fetchall()
    assert left == []  # the scratch database was dropped


def test_restore_wizard_brings_the_data_back(env):
    expected = env.both.meta["row_counts"]["audit.log"]
    with admin_conn(env.pg, env.dbname) as conn:
        conn.execute("DELETE FROM audit.log")  # the incident

    async def scenario(pilot: Any) -> None:
        screen = await open_backups(pilot)
        await select(pilot, screen, "both")
        await pilot.press("r")
        wizard = pilot.app.screen
        assert isinstance(wizard, RestoreScreen)
        await wait_for(pilot, lambda: wizard.phase == "plan")
        assert wizard.plan.mode == "swap" and wizard.plan.live_db == env.dbname
        plan_text = text_of(wizard.query_one("#plan-text").content)
        assert "Restoring database from backup" in plan_text and "$ " in plan_text
        await pilot.press("enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, TypedConfirmDialog)
        await pilot.press(*"wrong", "enter")  # a wrong name changes nothing
        assert pilot.app.screen is dialog
        assert "is not" in str(dialog.query_one("#typed-problem").content)
        dialog.query_one("#typed-name").value = ""
        await pilot.press(*env.dbname, "enter")
        assert pilot.app.screen is wizard
        await wait_for(pilot, lambda: wizard.phase in ("done", "failed"), timeout=120)
        assert wizard.phase == "done", wizard.result.sentence
        result = wizard.result
        assert result.ok and result.old_database
        assert wizard.query_one("#timing").row_count == len(result.steps)
        assert "k keep" in str(wizard.query_one("#restore-summary").content)
        assert wizard.query_one("#budget").word == "OK"
        await pilot.press("x")
        assert isinstance(pilot.app.screen, YesNoDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: wizard.old_decided)
        with admin_conn(env.pg) as conn:
            old = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (result.old_database,)).fetchone()
        assert old is None

    drive(OpsTowerApp(env.settings, warm_up=False), scenario)
    with admin_conn(env.pg, env.dbname) as conn:
        assert conn.execute("SELECT count(*) FROM audit.log").fetchone()[0] == expected


def test_missing_roles_are_a_choice_in_the_wizard_and_create_roles_brings_the_grants_back(env, tmp_path):
    """A role the backup grants to is gone: the wizard asks (create / no grants), c creates it, the grant is back."""
    tag = uuid.uuid4().hex[:6]
    db, role = f"tui_roles_{tag}", f"tui_Reader_{tag}"
    with admin_conn(env.pg) as conn:
        conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
    create_database(env.pg, db, f'CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3); '
                                f'GRANT SELECT ON t TO "{role}";')
    first = env.settings.targets[env.dbname]
    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       targets={db: replace(first, name=db, dbname=db)}, default_target=db)
    run_backup(settings, db, BackupOptions(local_only=True))
    with admin_conn(env.pg, db) as conn:
        conn.execute(f'REVOKE SELECT ON t FROM "{role}"')
        conn.execute(f'DROP ROLE "{role}"')

    async def scenario(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        await pilot.press("r")
        wizard = next(s for s in pilot.app.screen_stack if isinstance(s, RestoreScreen))
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ChoiceDialog))
        assert role in str(pilot.app.screen.query_one("Static.dialog-title").parent.children[1].content)
        await pilot.press("c")
        await wait_for(pilot, lambda: wizard.phase == "plan")
        assert wizard.plan.missing_roles == [role] and "roles" in [s.id for s in wizard.plan.steps if not s.skip]
        await pilot.press("enter")
        await pilot.press(*db, "enter")
        await wait_for(pilot, lambda: wizard.phase in ("done", "failed"), timeout=120)
        assert wizard.phase == "done", wizard.result.sentence

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    with admin_conn(env.pg, db) as conn:
        assert conn.execute("SELECT has_table_privilege(%s, 't', 'SELECT')", (role,)).fetchone()[0]
        old = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (db + "%",))]
    with admin_conn(env.pg) as conn:
        for name in old:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_arrow_keys_move_between_databases_and_r_restores_the_focused_one(env, tmp_path):
    """↓ moves the focus to the next database's card; `r` then plans a restore of that database."""
    other = f"tui2_{uuid.uuid4().hex[:6]}"
    create_database(env.pg, other, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
    first = env.settings.targets[env.dbname]
    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       targets={env.dbname: first, other: replace(first, name=other, dbname=other)})
    run_backup(settings, env.dbname, BackupOptions(local_only=True))
    run_backup(settings, other, BackupOptions(local_only=True))

    async def scenario(pilot: Any) -> None:
        cards = list(pilot.app.screen.query(DbCard))
        await wait_for(pilot, lambda: all(c.status is not None for c in cards))
        assert pilot.app.focused is cards[0]
        await pilot.press("down")
        assert pilot.app.focused is cards[1] and cards[1].target_name == other
        await pilot.press("down")  # stays on the last card
        assert pilot.app.focused is cards[1]
        await pilot.press("r")
        screen = pilot.app.screen
        assert isinstance(screen, RestoreScreen) and screen.entry.database == other
        await wait_for(pilot, lambda: screen.plan is not None)
        title = str(screen.query_one("#restore-title").content)
        target = settings.targets[other]
        assert f"→ {other} on {target.display_host}:{target.display_port}" in title
        await pilot.press("escape")
        await pilot.press("up")
        assert pilot.app.focused is cards[0]

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    with admin_conn(env.pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


def test_read_only_offers_no_destructive_action(env):
    async def scenario(pilot: Any) -> None:
        app = pilot.app
        dashboard = app.screen
        keys = {b.binding.action for b in dashboard.active_bindings.values()}
        assert "verify_latest" in keys
        assert not keys & {"backup_now", "restore_latest", "drill"}
        await pilot.press("r", "b", "D")
        assert app.screen is dashboard
        # Each refused key is answered, not silently ignored.
        said = [n.message for n in app._notifications]
        assert sum("opened read-only" in m for m in said) == 3, said
        assert any(m.startswith("Restore is not offered") for m in said)
        screen = await open_backups(pilot)
        keys = {b.binding.action for b in screen.active_bindings.values()}
        assert "verify" in keys and not keys & {"restore", "backup_now"}
        await pilot.press("r", "b", "D")
        assert app.screen is screen
        assert sum("opened read-only" in n.message for n in app._notifications) == 6
        titles = [t for t, _h, _c in OpsCommands(screen)._commands()]
        assert "Verify" in titles
        assert not [t for t in titles if "Restore" in t or "Back up" in t]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "READ-ONLY" in str(app.screen.query_one(".dialog-title").content)

    drive(OpsTowerApp(env.settings, read_only=True, warm_up=False), scenario)


def test_palette_and_remapped_keys_reach_actions(env):
    settings = env.settings.with_changes(raw={"keys": {"backups.verify": "V"}})

    async def scenario(pilot: Any) -> None:
        screen = await open_backups(pilot)
        await pilot.press("v")  # remapped away
        assert pilot.app.screen is screen
        await pilot.press("V")
        first = pilot.app.screen
        assert isinstance(first, VerifyScreen) and not first.full_test
        await wait_for(pilot, lambda: first.finished)
        await pilot.press("escape")
        await wait_for(pilot, lambda: pilot.app.screen is screen)
        await pilot.press("ctrl+p")
        await pilot.press(*"full test")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, VerifyScreen) and pilot.app.screen is not first)
        second = pilot.app.screen
        assert second.full_test
        await pilot.press("escape")  # cancel it
        await wait_for(pilot, lambda: second.finished)

    drive(OpsTowerApp(settings, warm_up=False), scenario)


def test_worker_error_is_a_modal_with_the_engine_sentence(tmp_path):
    target = Target(name="nowhere", dbname="nowhere", host=str(tmp_path / "no-socket-here"), port=5432, user="x")
    settings = Settings(backup_dir=tmp_path / "b", state_dir=tmp_path / "s", targets={"nowhere": target},
                        default_target="nowhere", min_free_gb=0.0)

    async def scenario(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        assert "no backup yet" in text_of(pilot.app.screen.query_one(DbCard).query_one(".card-info").content)
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ErrorDialog))
        run = pilot.app.screen_stack[-2]
        assert isinstance(run, RunScreen)
        sentence = pilot.app.screen.sentence
        assert "nowhere" in sentence and sentence.endswith(".") and "Traceback" not in sentence
        await pilot.press("escape")
        assert pilot.app.screen is run
        assert str(run.query_one("#summary").content).startswith("FAIL")

    drive(OpsTowerApp(settings, warm_up=False), scenario)


def test_download_from_s3_and_back_up_now(env, s3):
    """An S3-only backup is downloaded (sha256 checked); `b` takes a new backup from the list."""
    from opstower_core.artifacts.names import parse_name

    src = parse_name(env.both.name.filename)
    only = type(src)(src.database, src.timestamp[:9] + "000001", src.ext)
    prefix = env.settings.s3.prefix
    client = s3.client()
    for a, b in ((src.s3_key(prefix), only.s3_key(prefix)), (src.s3_meta_key(prefix), only.s3_meta_key(prefix))):
        client.copy_object(Bucket=s3.bucket, Key=b, CopySource={"Bucket": s3.bucket, "Key": a},
                           MetadataDirective="COPY")

    async def scenario(pilot: Any) -> None:
        screen = await open_backups(pilot)
        table = await select(pilot, screen, only.timestamp)
        assert table.selected.where == "s3"
        await pilot.press("d")
        run = pilot.app.screen
        assert isinstance(run, RunScreen)
        await wait_for(pilot, lambda: run.finished)
        assert str(run.query_one("#summary").content).startswith("PASS: downloaded")
        assert (env.settings.backup_dir / only.filename).read_bytes() == env.both.path.read_bytes()
        await pilot.press("escape")
        await wait_for(pilot, lambda: {r.name: r.where for r in table.rows}.get(only.filename) == "both")
        count = len(table.rows)
        await pilot.press("b")
        run = pilot.app.screen
        await wait_for(pilot, lambda: run.finished)
        assert str(run.query_one("#summary").content).startswith("PASS: backup"), run.query_one("#summary").content
        assert run.query_one(StepList).status_of("upload") == "PASS"
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(table.rows) == count + 1)

    drive(OpsTowerApp(env.settings, warm_up=False), scenario)


def test_backup_table_reads_utc_names_as_utc_and_legacy_names_as_local_time(monkeypatch):
    from opstower_tui.widgets import backup_table

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    monkeypatch.setattr(backup_table, "_ZONES", {})
    try:
        assert backup_table.created_of("20261130_010000Z") == datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
        legacy = backup_table.created_of("20261130_010000")
        assert legacy.utcoffset().total_seconds() == 9 * 3600
        assert legacy == datetime(2026, 11, 29, 16, 0, tzinfo=UTC)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_health_doctor_and_prune_run_from_the_console(env, tmp_path):
    """H, O and P: the CLI's health, doctor and prune in the console; prune is a dry run until `a`, then y."""
    from opstower_tui.screens.prune import PruneScreen

    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       s3=replace(env.settings.s3, bucket=""), retention_days=30, keep_last=1)
    fresh = run_backup(settings, options=BackupOptions(local_only=True))
    # An older copy past retention: redundant, since the fresh one is proven good (sha256 re-checked).
    old_stamp = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y%m%d_%H%M%SZ")
    old = fresh.path.with_name(fresh.path.name.replace(fresh.name.timestamp, old_stamp))
    old.write_bytes(fresh.path.read_bytes())
    meta = json.loads(fresh.path.with_name(fresh.name.meta_filename).read_text())
    meta.update(timestamp=old_stamp, backup_file=old.name)
    old.with_name(old.name.replace(".dump.zst", ".meta.json")).write_text(json.dumps(meta))

    async def scenario(pilot: Any) -> None:
        for key, words in (("H", ("OK", "WARNING", "CRITICAL", "UNKNOWN")), ("O", ("PASS", "FAIL"))):
            await pilot.press(key)
            run = pilot.app.screen
            assert isinstance(run, RunScreen)
            await wait_for(pilot, lambda run=run: run.finished, timeout=60)
            assert str(run.query_one("#summary").content).split(":")[0] in words
            assert run.query_one(StepList).rows  # one line per check
            await pilot.press("escape")
        await pilot.press("P")
        prune = pilot.app.screen
        assert isinstance(prune, PruneScreen)
        await wait_for(pilot, lambda: prune.finished, timeout=60)
        assert str(prune.query_one("#summary").content).startswith("DRY RUN: 1 artifact(s) would be deleted")
        assert old.exists()  # a dry run deletes nothing
        await pilot.press("a")
        assert isinstance(pilot.app.screen, YesNoDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: prune.finished and prune.applied, timeout=60)
        assert str(prune.query_one("#summary").content).startswith("PASS: 1 artifact(s) deleted")

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    assert not old.exists() and fresh.path.exists()


def test_a_backup_taken_outside_the_console_shows_on_the_dashboard_within_seconds(env, tmp_path):
    from opstower_tui.screens import dashboard

    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       s3=replace(env.settings.s3, bucket=""))

    async def scenario(pilot: Any) -> None:
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.snapshot is not None)
        assert screen.snapshot.recent == []
        started = time.monotonic()
        await asyncio.to_thread(run_backup, settings, None, BackupOptions(local_only=True))  # as cron would
        await wait_for(pilot, lambda: screen.snapshot.recent, timeout=dashboard.LOCAL_REFRESH_SECONDS + 5)
        assert time.monotonic() - started < dashboard.LOCAL_REFRESH_SECONDS + 5
        assert screen.snapshot.recent[0].kind == "backup"
        assert screen.query_one(DbCard).status.latest is not None

    drive(OpsTowerApp(settings, warm_up=False), scenario)


def test_production_and_read_only_targets_are_marked_and_guarded(env, tmp_path):
    first = env.settings.targets[env.dbname]
    targets = {"prod": replace(first, name="prod", production=True),
               "replica": replace(first, name="replica", read_only=True)}
    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       s3=replace(env.settings.s3, bucket=""), targets=targets, default_target="prod")
    run_backup(settings, "prod", BackupOptions(local_only=True))

    async def scenario(pilot: Any) -> None:
        cards = list(pilot.app.screen.query(DbCard))
        await wait_for(pilot, lambda: all(c.status is not None for c in cards))
        assert "PRODUCTION" in str(cards[0].border_title) and cards[0].has_class("-production")
        assert "read-only" in str(cards[1].border_title)
        await pilot.press("down", "r")  # the read-only target: refused, and said so
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert any("marked read_only" in n.message for n in pilot.app._notifications)
        await pilot.press("up", "r")
        wizard = next(s for s in pilot.app.screen_stack if isinstance(s, RestoreScreen))
        assert wizard.has_class("-production") and "PRODUCTION prod" in wizard.sub_title

    drive(OpsTowerApp(settings, warm_up=False), scenario)


def test_table_recovery_from_the_console_merges_lost_rows_back_after_a_preview(env, tmp_path):
    """T: pick a table, preview (missing / written since), type the name, the rows are back, newer rows kept."""
    from opstower_tui.screens.command_log import CommandLogScreen
    from opstower_tui.screens.recover import RecoverScreen

    db = f"tui_rec_{uuid.uuid4().hex[:6]}"
    create_database(env.pg, db, "CREATE TABLE t (id int PRIMARY KEY, note text); "
                                "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 60) g;")
    first = env.settings.targets[env.dbname]
    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       s3=replace(env.settings.s3, bucket=""), targets={db: replace(first, name=db, dbname=db)},
                       default_target=db)
    run_backup(settings, db, BackupOptions(local_only=True))
    with admin_conn(env.pg, db) as conn:
        conn.execute("DELETE FROM t WHERE id % 3 = 0")  # the accident: 20 rows
        conn.execute("INSERT INTO t VALUES (1000, 'written since the backup')")

    async def scenario(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        await pilot.press("T")
        screen = pilot.app.screen
        assert isinstance(screen, RecoverScreen) and list(screen.tables) == ["public.t"]
        await pilot.press("space", "enter")
        await wait_for(pilot, lambda: screen.phase in ("preview", "failed"), timeout=120)
        assert screen.phase == "preview", str(screen.query_one("#recover-summary").content)
        (t,) = screen.plan.tables
        assert (t.backup_rows, t.live_rows, t.missing, t.only_live) == (60, 41, 20, 1)
        await pilot.press("enter")
        assert isinstance(pilot.app.screen, TypedConfirmDialog)
        await pilot.press(*db, "enter")
        await wait_for(pilot, lambda: screen.phase in ("done", "failed"), timeout=120)
        assert screen.phase == "done", str(screen.query_one("#recover-summary").content)
        # L: what the console ran, for the incident channel; w writes it for the report.
        await pilot.press("L")
        log = pilot.app.screen
        assert isinstance(log, CommandLogScreen)
        commands = [str(log.query_one("#commands").get_row_at(i)[4]) for i in range(log.query_one("#commands").row_count)]
        assert any(c.startswith("CREATE DATABASE") for c in commands)  # the scratch copy
        assert any(c.startswith("INSERT INTO") for c in commands)  # the rows put back
        assert any(c.startswith("DROP DATABASE") for c in commands)  # the scratch copy dropped
        await pilot.press("w")  # written by a worker: the event loop does no file I/O
        await wait_for(pilot, lambda: list((settings.state_dir / "reports").glob("commands-*.md")))
        written = list((settings.state_dir / "reports").glob("commands-*.md"))
        assert len(written) == 1 and "INSERT INTO" in written[0].read_text()

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    with admin_conn(env.pg, db) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM t").fetchone() == (61, 1000)
    with admin_conn(env.pg) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (db + "_recover%",)).fetchall()
        assert left == []  # the scratch database was dropped
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def test_an_interrupted_restore_is_shown_on_the_dashboard_and_r_recovers_it(env, tmp_path):
    from support.journal import dead_restore_journal

    settings = replace(env.settings, backup_dir=tmp_path / "backups", state_dir=tmp_path / "state",
                       s3=replace(env.settings.s3, bucket=""))
    target = settings.target()
    journal = dead_restore_journal(settings.state_dir, live=target.dbname, target=target.name,
                                   server=f"{target.display_host}:{target.display_port}")

    async def scenario(pilot: Any) -> None:
        dashboard = pilot.app.screen
        line = dashboard.query_one("#interrupted-line")
        await wait_for(pilot, lambda: line.display)
        assert "interrupted restore" in str(line.content) and "press R" in str(line.content)
        await pilot.press("R")
        run = pilot.app.screen
        assert isinstance(run, RunScreen)
        await wait_for(pilot, lambda: run.finished, timeout=60)
        assert str(run.query_one("#summary").content).startswith("PASS"), str(run.query_one("#summary").content)
        await pilot.press("escape")
        await wait_for(pilot, lambda: not line.display)

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    assert not journal.exists()


def test_the_demo_notice_is_shown_inside_the_console(env):
    notice = "CLI against this demo (another shell):\nexport OPSTOWER_CONFIG=/x/config.toml"

    async def scenario(pilot: Any) -> None:
        await pilot.pause(0.2)
        assert [n.message for n in pilot.app._notifications] == [notice]

    drive(OpsTowerApp(env.settings, warm_up=False, notice=notice), scenario)


def test_the_pitr_bar_shows_the_window_and_each_logical_dump():
    from opstower_tui.formatting import pitr_bar

    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    dumps = [now - timedelta(hours=h) for h in (10, 5, 1)]
    bar = pitr_bar(now - timedelta(hours=6), now - timedelta(minutes=1), dumps, now, width=21)
    assert len(bar) == 21 and bar[0] == "|"  # the oldest dump starts the line, before the window
    # then only dumps, then WAL from 6 h ago to a minute ago; the last cell is "now", past the window
    assert bar[1:8] == "......." and bar[8:20].replace("|", "=") == "=" * 12 and bar[20] == "."
    assert bar.count("|") == 3
    assert pitr_bar(None, None, [], now, width=5) == "....."  # nothing recoverable: dots only
