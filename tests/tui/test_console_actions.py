"""The console's keys for what used to need a terminal (issue 16), at 80×24, against the real servers.

Y replicates to a second copy (the session's SeaweedFS under another prefix plays the replica), K
lists the databases earlier restores kept and x drops one, the restore wizard's n restores under
another database's name (the live one untouched) with i's REINDEX on. E and B (PITR set-up and
base backup) need an archiving server of their own: tests/tui/test_console_pitr_actions.py.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.storage.s3 import store_for
from opstower_tui.app import OpsTowerApp
from opstower_tui.commands import OpsCommands
from opstower_tui.dialogs.confirm import TypedConfirmDialog
from opstower_tui.dialogs.name import DatabaseNameDialog
from opstower_tui.screens.dashboard import DashboardScreen
from opstower_tui.screens.old_dbs import OldDatabasesScreen
from opstower_tui.screens.restore import RestoreScreen
from opstower_tui.screens.run import RunScreen
from opstower_tui.widgets.db_card import DbCard
from support.console import drive, said, wait_for
from support.servers import admin_conn, create_database

SQL = "CREATE TABLE t (id int PRIMARY KEY, note text); INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 50) g;"


@pytest.fixture(scope="module")
def small(pg, s3, tmp_path_factory):
    """One small database with a local backup; S3 primary and replica on the session's store."""
    db = f"tui_act_{uuid.uuid4().hex[:6]}"
    create_database(pg, db, SQL)
    root = tmp_path_factory.mktemp("actions")
    primary = S3Settings(bucket=s3.bucket, prefix=f"act{uuid.uuid4().hex[:6]}/", endpoint_url=s3.endpoint_url,
                         region="us-east-1", part_size_mb=5)
    replica = replace(primary, prefix=f"rep{uuid.uuid4().hex[:6]}/", role="replica")
    settings = Settings(backup_dir=root / "backups", state_dir=root / "state", pg_bin=pg.bin_dir,
                        s3=replace(primary, replica=replica),
                        targets={db: Target(name=db, dbname=db, host=pg.host, port=pg.port, user=pg.user)},
                        default_target=db, min_free_gb=0.0)
    backup = run_backup(settings, options=BackupOptions(local_only=True))
    yield settings, db, backup
    with admin_conn(pg) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (db + "%",)).fetchall():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_y_copies_a_local_only_backup_to_the_replica(small):
    settings, _db, backup = small
    replica = store_for(settings.s3.replica)
    assert not [o for o in replica.iter_objects() if backup.name.filename in o.key]

    async def scenario(pilot: Any) -> None:
        dashboard = pilot.app.screen
        await wait_for(pilot, lambda: dashboard.query_one(DbCard).status is not None)
        # The palette offers it by name too (ctrl+p), with its key.
        titles = [t for t, _help, _cb in OpsCommands(dashboard, None)._commands()]  # type: ignore[arg-type]
        assert {"Replicate (second off-site copy)", "Base backup (PITR)", "Enable PITR (dry run first)",
                "Kept old databases"} <= set(titles)
        await pilot.press("Y")
        run = pilot.app.screen
        assert isinstance(run, RunScreen)
        await wait_for(pilot, lambda: run.finished, timeout=120)
        summary = str(run.query_one("#summary").content)
        assert summary.startswith("PASS: 1 copied to the replica"), summary

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    keys = [o.key for o in replica.iter_objects()]
    assert any(k.endswith(backup.name.filename) for k in keys), keys  # the dump itself is on the replica


def test_y_without_a_replica_and_in_read_only_is_refused_with_a_reason(small):
    settings, _db, _backup = small
    bare = replace(settings, s3=replace(settings.s3, replica=None))

    async def no_replica(pilot: Any) -> None:
        await pilot.press("Y")
        assert isinstance(pilot.app.screen, DashboardScreen)
        assert any("No replica is configured" in m for m in said(pilot.app))

    drive(OpsTowerApp(bare, warm_up=False), no_replica)

    async def read_only(pilot: Any) -> None:
        await pilot.press("Y")
        await pilot.press("B")
        assert isinstance(pilot.app.screen, DashboardScreen)
        refusals = [m for m in said(pilot.app) if "opened read-only" in m]
        assert [m.split(" is ")[0] for m in refusals] == ["Replicate (second off-site copy)", "Base backup (PITR)"]

    drive(OpsTowerApp(settings, read_only=True, warm_up=False), read_only)


def test_k_lists_the_kept_database_and_x_drops_it_after_the_typed_name_on_production(pg, small):
    settings, db, _backup = small
    kept, other = f"{db}_pre_restore_20260101_000000", f"{db}x_pre_restore_20260101_000000"  # another db's
    for name in (kept, other):
        create_database(pg, name)
    prod = replace(settings, targets={db: replace(settings.targets[db], production=True)})

    async def scenario(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        await pilot.press("K")
        screen = pilot.app.screen
        assert isinstance(screen, OldDatabasesScreen) and "PRODUCTION" in screen.sub_title
        await wait_for(pilot, lambda: screen.rows)
        assert [r[0] for r in screen.rows] == [kept]  # only this database's: not the other one's
        await pilot.press("x")
        dialog = pilot.app.screen
        assert isinstance(dialog, TypedConfirmDialog) and dialog.expected == kept
        assert f"{pg.host}:{pg.port}" in dialog.message and f"{db} itself is not touched" in dialog.message
        await pilot.press(*kept, "enter")
        await wait_for(pilot, lambda: not screen.rows and any(m == f"Dropped {kept}" for m in said(pilot.app)))
        assert "No database kept by a restore" in str(screen.query_one("#old-summary").content)

    drive(OpsTowerApp(prod, warm_up=False), scenario)
    with admin_conn(pg) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (db + "%",))}
    assert kept not in names and other in names and db in names  # only the chosen one was dropped

    async def read_only(pilot: Any) -> None:
        create_database(pg, kept)
        await pilot.press("K")
        screen = pilot.app.screen
        await wait_for(pilot, lambda: screen.rows)
        await pilot.press("x")
        assert pilot.app.screen is screen
        assert any("Discard (DROP) is not offered" in m for m in said(pilot.app))

    drive(OpsTowerApp(settings, read_only=True, warm_up=False), read_only)
    with admin_conn(pg) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (kept,)).fetchone()


def test_n_restores_under_another_name_with_i_reindex_and_the_live_database_is_untouched(pg, small):
    settings, db, _backup = small
    copy = f"{db}_copy"
    with admin_conn(pg, db) as conn:
        conn.execute("INSERT INTO t VALUES (1000, 'written after the backup')")  # live differs from the backup

    async def scenario(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        await pilot.press("r")
        wizard = pilot.app.screen
        assert isinstance(wizard, RestoreScreen)
        await wait_for(pilot, lambda: wizard.phase == "plan", timeout=120)
        assert "i: reindex" in str(wizard.query_one("#restore-summary").content)
        await pilot.press("n", "escape")  # Esc in the name dialog: the plan stays the card's own database
        assert pilot.app.screen is wizard and wizard.phase == "plan" and wizard.plan.live_db == db
        await pilot.press("i")
        await wait_for(pilot, lambda: wizard.phase == "plan" and wizard.plan.options.reindex, timeout=120)
        await pilot.press("n")
        assert isinstance(pilot.app.screen, DatabaseNameDialog)
        await pilot.press(*copy, "enter")
        await wait_for(pilot, lambda: wizard.phase == "plan" and wizard.plan.live_db == copy, timeout=120)
        assert wizard.plan.mode == "new_db" and wizard.plan.options.reindex
        reindex = next(s for s in wizard.plan.steps if s.id == "reindex")
        assert not reindex.skip
        await pilot.press("enter")
        dialog = pilot.app.screen
        assert isinstance(dialog, TypedConfirmDialog) and dialog.expected == copy
        where = f"{pg.host}:{pg.port}"
        assert f"into {copy} on {where}" in dialog.message and f"{db} on {where} is not touched" in dialog.message
        await pilot.press(*copy, "enter")
        await wait_for(pilot, lambda: wizard.phase in ("done", "failed"), timeout=180)
        assert wizard.phase == "done", str(wizard.query_one("#restore-summary").content)
        statuses = {s.step: s.status.value for s in wizard.result.steps}
        assert statuses.get("reindex") == "PASS", statuses

    drive(OpsTowerApp(settings, warm_up=False), scenario)
    with admin_conn(pg, copy) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM t").fetchone() == (50, 50)  # the backup's rows
    with admin_conn(pg, db) as conn:
        assert conn.execute("SELECT count(*), max(id) FROM t").fetchone() == (51, 1000)  # live as it was
