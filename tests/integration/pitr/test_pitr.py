"""Point-in-time recovery end to end: a real PostgreSQL 18 archiving to a real SeaweedFS via barman-cloud."""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from opstower_core.cli import main
from opstower_core.pitr import (
    RecoveryTarget,
    beat,
    find_accidents,
    pitr_status,
    read_heartbeat,
    recover_to,
    take_base_backup,
    wal_push,
)
from opstower_core.pitr.barman import client_argv, cloud_options, destination_url
from opstower_core.pitr.launcher import launcher_path
from opstower_core.pitr.wal import archived_copy


@dataclass
class History:
    after_b1: datetime
    after_b2: datetime
    drop_time: datetime


@pytest.fixture(scope="module")
def history(pitr_env) -> History:
    """A base backup, then three batches of rows (times noted between them), then DROP TABLE keep."""
    s = pitr_env.settings
    take_base_backup(s, s.target())
    with pitr_env.conn("app") as c:
        c.execute("CREATE TABLE rows_t (batch int, n int)")
        c.execute("CREATE TABLE keep (id int primary key, v text)")
        c.execute("INSERT INTO keep SELECT g, 'v' || g FROM generate_series(1, 50) g")
        c.execute("INSERT INTO rows_t SELECT 1, g FROM generate_series(1, 100) g")
        time.sleep(1.1)
        after_b1 = c.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.1)
        c.execute("INSERT INTO rows_t SELECT 2, g FROM generate_series(1, 100) g")
        time.sleep(1.1)
        after_b2 = c.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.1)
        c.execute("INSERT INTO rows_t SELECT 3, g FROM generate_series(1, 100) g")
        c.execute("DROP TABLE keep")
        drop_time = c.execute("SELECT clock_timestamp()").fetchone()[0]
    pitr_env.switch_wal()
    return History(after_b1, after_b2, drop_time)


def test_enable_reports_ready_and_launcher_runs_as_server_user(pitr_env):
    from opstower_core.pitr import enable

    report = enable(pitr_env.settings, pitr_env.settings.target())
    assert report.ready, report.as_dict()
    assert report.os_user == "pgserver"
    assert report.launcher_ok, report.launcher_detail
    assert {c.name: c.current for c in report.checks}["archive_mode"] == "on"
    # Its shebang is a Python the server's user can run (not the venv under /root).
    assert launcher_path(pitr_env.settings).read_text().splitlines()[0] in ("#!/usr/bin/python3", "#!/usr/bin/python3.11")


def test_status_shows_backup_window_and_archiver(pitr_env, history):
    st = pitr_status(pitr_env.settings, pitr_env.settings.target())
    assert [b.status for b in st.backups] == ["DONE"]
    assert st.segments >= 2 and not st.gaps
    assert st.earliest is not None and st.latest is not None and st.earliest <= st.latest
    assert st.archiver and st.archiver["failed_count"] == 0 and not st.archiver["failing"]


def test_recover_to_time_between_batches_copies_exactly_batch_1(pitr_env, history, capsys):
    code = main(["--config", str(pitr_env.config), "restore", "--to-time", history.after_b1.isoformat(sep=" "),
                 "--copy-db", "app", "--as", "app_at_b1"])
    out = capsys.readouterr().out
    assert code == 0, out
    with pitr_env.conn("app_at_b1") as c:
        assert c.execute("SELECT batch, count(*) FROM rows_t GROUP BY 1 ORDER BY 1").fetchall() == [(1, 100)]
        assert c.execute("SELECT count(*) FROM keep").fetchone()[0] == 50
    assert "Copied app" in out
    assert not list((pitr_env.root / "scratch").iterdir())  # the scratch cluster was removed


def test_accident_found_and_recovered_to_just_before_it(pitr_env, history):
    found = find_accidents(pitr_env.settings, pitr_env.settings.target(), min_rows=1000)
    drops = [a for a in found if a.kind == "DROP"]
    assert len(drops) == 1, [a.line() for a in found]
    drop = drops[0]
    assert drop.database == "app" and drop.time is not None
    assert abs((drop.time - history.drop_time).total_seconds()) < 5
    cluster = recover_to(pitr_env.settings, pitr_env.settings.target(), RecoveryTarget(xid=drop.xid))
    try:
        import psycopg

        with psycopg.connect(**cluster.target("app").conninfo(), autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM keep").fetchone()[0] == 50
            assert c.execute("SELECT count(*) FROM rows_t").fetchone()[0] == 300
        # The recovered cluster never archives into the archive it came from, and holds no secret.
        auto = (cluster.pgdata / "postgresql.auto.conf").read_text()
        assert "archive_mode = 'off'" in auto
        assert pitr_env.s3.secret_key not in auto and pitr_env.s3.access_key not in auto
    finally:
        cluster.discard()


def test_recover_to_latest_reads_back_the_heartbeat(pitr_env, history):
    written = beat(pitr_env.settings.target())
    pitr_env.switch_wal()
    cluster = recover_to(pitr_env.settings, pitr_env.settings.target(), RecoveryTarget())
    try:
        assert read_heartbeat(cluster.target("app")) == written
        assert "timeline 2" in cluster.reached
    finally:
        cluster.discard()


def test_wal_push_refuses_different_bytes_and_accepts_identical(pitr_env, history, tmp_path):
    st = pitr_status(pitr_env.settings)
    name = st.latest_segment
    key, data = archived_copy(pitr_env.settings, name)
    same = tmp_path / "same" / name
    same.parent.mkdir()
    same.write_bytes(data)
    assert wal_push(pitr_env.settings, same) == 0
    other = tmp_path / "other" / name
    other.parent.mkdir()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    assert wal_push(pitr_env.settings, other) == 1
    assert archived_copy(pitr_env.settings, name)[1] == data  # the archive is unchanged


def test_secrets_absent_from_argv_launcher_and_config(pitr_env, history):
    s = pitr_env.settings
    argv = client_argv("cloud_backup", [*cloud_options(s), destination_url(s), s.pitr.server_name])
    secret = pitr_env.s3.secret_key
    assert not any(secret in a or pitr_env.s3.access_key in a for a in argv)
    assert secret not in launcher_path(s).read_text()
    assert secret not in pitr_env.config.read_text()
    creds = s.pitr.credentials_file
    info = creds.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid != os.geteuid()  # owned by the server's user
