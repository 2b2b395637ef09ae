"""E (enable WAL archiving: dry run, then a applies) and B (a base backup) in the console, at 80×24.

A PostgreSQL 18 of its own (archive settings and a restart must not touch the shared server),
archiving to the session's SeaweedFS: E's dry run changes nothing, `a` writes the launcher and
sets the archive settings (ALTER SYSTEM, reload), the test restarts the server as the screen says,
then B takes a base backup that barman-cloud lists afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from opstower_core.config import load_settings
from opstower_core.devenv.embedded import EmbeddedPostgres
from opstower_core.pitr import list_base_backups
from opstower_tui.app import OpsTowerApp
from opstower_tui.dialogs.confirm import YesNoDialog
from opstower_tui.screens.offsite import PitrEnableScreen
from opstower_tui.screens.run import RunScreen
from opstower_tui.widgets.db_card import DbCard
from support.console import drive, wait_for
from support.pitr import write_config


@pytest.fixture(scope="module")
def plain_server(s3):
    """A server that does not archive yet, and the config that names its (empty) archive."""
    root = Path(tempfile.mkdtemp(prefix="opstower-test-pitr-keys-"))
    root.chmod(0o755)  # the server's OS user reads the launcher and its config under it
    server = EmbeddedPostgres(root / "pg")
    server.start()
    try:
        with psycopg.connect(**server.conninfo(), autocommit=True) as c:
            c.execute("CREATE DATABASE app")
        yield server, write_config(root, server, s3, "keys")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _settings_of(server: EmbeddedPostgres) -> dict[str, tuple[str, bool]]:
    with psycopg.connect(**server.conninfo(), autocommit=True) as c:
        rows = c.execute("SELECT name, setting, pending_restart FROM pg_settings WHERE name IN "
                         "('archive_mode', 'archive_command', 'wal_level')").fetchall()
    return {name: (setting, pending) for name, setting, pending in rows}


def test_e_shows_the_dry_run_a_applies_it_and_b_takes_a_base_backup(plain_server):
    server, config = plain_server
    settings = load_settings(config)
    before = _settings_of(server)
    assert before["archive_mode"][0] == "off"

    async def enable(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        await pilot.press("E")
        screen = pilot.app.screen
        assert isinstance(screen, PitrEnableScreen)
        await wait_for(pilot, lambda: screen.finished, timeout=60)
        assert str(screen.query_one("#summary").content).startswith("DRY RUN: nothing was changed")
        assert _settings_of(server) == before  # the dry run changed nothing
        await pilot.press("a")
        assert isinstance(pilot.app.screen, YesNoDialog)
        assert f"{server.host}:{server.port}" in pilot.app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.applied and screen.finished, timeout=60)
        summary = str(screen.query_one("#summary").content)
        assert summary.startswith("APPLIED: a server restart is needed"), summary
        assert screen.check_action("apply_pitr_enable", ()) is False  # applied once: not offered again

    drive(OpsTowerApp(settings, warm_up=False), enable)
    after = _settings_of(server)
    assert after["archive_mode"] == ("off", True)  # set, waiting for the restart the screen asked for
    with psycopg.connect(**server.conninfo(), autocommit=True) as c:  # shown "(disabled)" until archive_mode is on
        written = c.execute("SELECT setting FROM pg_file_settings WHERE name = 'archive_command' AND applied IS NOT "
                            "NULL ORDER BY seqno DESC LIMIT 1").fetchone()
    assert written and str(config.parent / "launcher") in written[0], written  # ALTER SYSTEM wrote the launcher's
    server.stop()
    server.start()
    assert _settings_of(server)["archive_mode"][0] == "on"
    settings = load_settings(config)
    assert list_base_backups(settings) == []

    async def base_backup(pilot: Any) -> None:
        await wait_for(pilot, lambda: pilot.app.screen.query_one(DbCard).status is not None)
        await pilot.press("B")
        run = pilot.app.screen
        assert isinstance(run, RunScreen)
        await wait_for(pilot, lambda: run.finished, timeout=240)
        summary = str(run.query_one("#summary").content)
        assert summary.startswith("PASS: base backup"), summary

    drive(OpsTowerApp(settings, warm_up=False), base_backup)
    (backup,) = list_base_backups(settings)
    assert backup.status == "DONE"
