"""PostgreSQL itself goes away in the middle of a restore (killed, as a crash or an OOM kill would):
once it is back, `opstower restore --recover` leaves the live database as it was — never missing.

A private server: stopping the shared one would take every other test down with it.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.config import Settings, Target
from opstower_core.devenv.embedded import EmbeddedPostgres
from support.restore import insert_midway, write_artifact
from support.servers import settings_toml

DB = "down_shop"
SCHEMA = """
CREATE TABLE "Customers" (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO "Customers" SELECT g, 'klient ' || g || ' ü' FROM generate_series(1, 500) g;
"""


def _contents(server: EmbeddedPostgres) -> tuple[int, str]:
    with psycopg.connect(**server.conninfo(DB)) as c:
        return c.execute('SELECT count(*), md5(string_agg(id || name, \',\' ORDER BY id)) FROM "Customers"').fetchone()


def _kill_postmaster(server: EmbeddedPostgres) -> None:
    pid = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)  # no shutdown at all: what a crash or the OOM killer does
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the postmaster did not die")


@pytest.fixture
def server():
    directory = Path(tempfile.mkdtemp(prefix="opstower-test-down-"))
    srv = EmbeddedPostgres(directory).start()
    yield srv
    srv.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("in_place", [False, True], ids=["swap", "in_place"])
def test_server_killed_mid_load_then_back_then_recover_leaves_live_as_it_was(server, tmp_path, in_place) -> None:
    with psycopg.connect(**server.conninfo("postgres"), autocommit=True) as c:
        c.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(**server.conninfo(DB), autocommit=True) as c:
        c.execute(SCHEMA)
    target = Target(DB, DB, host=server.host, port=server.port, user=server.user)
    settings = Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", pg_bin=server.bin_dir,
                        min_free_gb=0.0, targets={DB: target}, default_target=DB)
    backup = run_backup(settings, options=BackupOptions(fmt="plain", local_only=True))
    sql = insert_midway(gzip.decompress(backup.path.read_bytes()), b"SELECT pg_sleep(60);")
    meta = json.loads(backup.path.with_name(backup.name.meta_filename).read_text())
    slow = write_artifact(settings.backup_dir, DB, "20250301_000000", sql, meta)
    with psycopg.connect(**server.conninfo(DB), autocommit=True) as c:
        c.execute('DELETE FROM "Customers" WHERE id % 2 = 0')  # the state before the restore
    before = _contents(server)
    cfg = settings_toml(settings, tmp_path / "opstower.toml")

    proc = subprocess.Popen([sys.executable, "-m", "opstower_core", "--config", str(cfg), "restore", str(slow),
                             "--force", *(["--in-place"] if in_place else [])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:  # wait for the load (the pg_sleep inserted midway)
        with psycopg.connect(**server.conninfo("postgres")) as c:
            if c.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND state = 'active'"
                         " AND pid <> pg_backend_pid()").fetchone():
                break
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "no load"
        time.sleep(0.05)

    _kill_postmaster(server)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in out + err
    err_lines = [ln for ln in err.splitlines() if ln.startswith("ERROR")]
    assert len(err_lines) == 1, err  # one line: what failed, the state, what to do

    server.stop()  # forget the dead server's handle; its data directory is intact
    server.start()  # crash recovery, as a service manager would restart it
    rec = subprocess.run([sys.executable, "-m", "opstower_core", "--config", str(cfg), "restore", "--recover"],
                         capture_output=True, text=True, timeout=180)
    assert rec.returncode == 0, rec.stderr
    assert _contents(server) == before  # never missing, never half-restored
    with psycopg.connect(**server.conninfo("postgres")) as c:
        names = {r[0] for r in c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (DB + "%",))}
        allow = c.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (DB,)).fetchone()[0]
    assert names == {DB} and allow  # no staging or rollback copy left, connections allowed
    again = subprocess.run([sys.executable, "-m", "opstower_core", "--config", str(cfg), "list"],
                           capture_output=True, text=True, timeout=60)
    assert "interrupted" not in again.stderr
