"""Faults around a backup (issue 13): a table lock held by another session, a hung run holding
the run lock, a backup killed outright, a config file others can read.

Against the real PostgreSQL and S3; each ends checking what is left behind: no temp file,
no open multipart upload, the run lock free, the run recorded, one line for the operator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.config import load_settings
from opstower_core.errors import Cancelled, LockHeld
from opstower_core.events import CancelToken, StepLog
from opstower_core.repo.catalog import list_catalog
from opstower_core.runs.history import StateStore
from support.servers import admin_conn, create_database, settings_toml, unique

SQL = "CREATE TABLE public.t (id integer PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 50);"
MiB = 1024 * 1024


def cli(cfg: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BACKUP_DIR", "OPSTOWER_STATE_DIR", "PGDATABASE")}
    return subprocess.Popen([sys.executable, "-m", "opstower_core", "--config", str(cfg), "backup", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR:"), err
    return lines[0]


def nothing_left(settings, db: str) -> None:
    assert not [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")]
    assert list_catalog(settings, include_s3=False).entries == []
    assert (settings.state_dir / "locks" / f"{db}.lock").read_text() == ""  # released


def waiting_sessions(pg, db: str) -> int:
    with admin_conn(pg) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                            (db,)).fetchone()[0]


@pytest.fixture
def locked_table(pg) -> Iterator[tuple[str, int]]:
    """A database whose table another session holds ACCESS EXCLUSIVE, in an open transaction: (db, its pid)."""
    db = unique("flt_lock")
    create_database(pg, db, SQL)
    conn = psycopg.connect(**pg.conninfo(db), autocommit=False, application_name="migration-42")
    conn.execute("LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE")
    try:
        yield db, conn.info.backend_pid
    finally:
        conn.close()


def test_a_held_table_lock_fails_the_backup_naming_the_holder(pg, make_settings, locked_table, tmp_path) -> None:
    db, holder_pid = locked_table
    settings = make_settings(db)
    cfg = settings_toml(settings, tmp_path / "opstower.toml")
    t0 = time.monotonic()
    proc = cli(cfg, "--local-only", "--wait-for-locks", "3")
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 1, err
    assert "Traceback" not in out + err
    line = one_error_line(err)
    assert f"The backup waited 3 s for a lock held by pid {holder_pid} on public.t" in line, line
    assert "application migration-42" in line and "idle in transaction since" in line
    assert 'query "LOCK TABLE public.t IN ACCESS EXCLUSIVE MODE"' in line
    assert f"SELECT pg_terminate_backend({holder_pid})" in line and "--wait-for-locks" in line
    assert took < 15, took  # 3 s of waiting plus start-up, not the default 60 s
    assert re.search(rf"^\[WARN\] .* - Waiting for a lock held by pid {holder_pid} on public.t .*giving up after 3 s", out, re.M), out
    nothing_left(settings, db)
    run = StateStore(settings.state_dir).last("backup", db)
    assert run.status == "failed" and f"pid {holder_pid}" in run.error
    assert waiting_sessions(pg, db) == 0  # neither pg_dump nor the row counts are still queued


def test_ctrl_c_while_blocked_on_a_lock_stops_within_2_s(pg, make_settings, locked_table, tmp_path) -> None:
    db, _ = locked_table
    settings = make_settings(db)
    cfg = settings_toml(settings, tmp_path / "opstower.toml")
    proc = cli(cfg, "--local-only")  # the default wait: 60 s
    deadline = time.monotonic() + 30
    while waiting_sessions(pg, db) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert took < 2.0, took
    assert "Interrupted by SIGINT" in one_error_line(err)
    nothing_left(settings, db)
    deadline = time.monotonic() + 2
    while waiting_sessions(pg, db):  # the queued pg_dump and count sessions are gone too
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_console_cancel_while_blocked_on_a_lock_stops_within_2_s(pg, make_settings, locked_table) -> None:
    """The console's Esc sets the cancel flag; the run is blocked in a read, so a watcher must act on it."""
    db, holder_pid = locked_table
    settings = make_settings(db)
    token = CancelToken()
    cancelled_at: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, StepLog) and event.line.startswith("Waiting for a lock") and not token.cancelled:
            assert f"pid {holder_pid}" in event.line
            cancelled_at.append(time.monotonic())
            token.cancel()

    with pytest.raises(Cancelled):
        run_backup(settings, options=BackupOptions(local_only=True), on_event=on_event, cancel=token)
    assert cancelled_at and time.monotonic() - cancelled_at[0] < 2.0
    nothing_left(settings, db)
    assert StateStore(settings.state_dir).last("backup", db).status == "cancelled"


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    server.shutdown()
    server.server_close()


HOLD = """
import sys, time
from opstower_core.runs.lock import RunLock
lock = RunLock(sys.argv[1], sys.argv[2]).acquire()  # a hung backup: holds the run lock, does nothing
print("held", flush=True)
time.sleep(120)
"""


def test_a_run_refused_by_a_hung_runs_lock_alerts_like_a_failure(pg, make_settings, webhook) -> None:
    url, received = webhook
    db = unique("flt_hung")
    create_database(pg, db, SQL)
    settings = make_settings(db).with_changes(raw={"notify": {"webhook": {"url": url}}})
    hung = subprocess.Popen([sys.executable, "-c", HOLD, str(settings.state_dir), db], stdout=subprocess.PIPE, text=True)
    try:
        assert hung.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld) as exc:
            run_backup(settings, options=BackupOptions(local_only=True))
    finally:
        hung.kill()
        hung.wait()
    sentence = exc.value.sentence
    assert f"pid {hung.pid} on " in sentence and " ago), command: opstower " in sentence
    assert len(received) == 1, received
    alert = json.dumps(received[0])
    assert "OpsTower Backup FAILED" in alert and db in alert and f"pid {hung.pid}" in alert
    run = StateStore(settings.state_dir).last("backup", db)
    assert run.status == "refused" and f"pid {hung.pid}" in run.error


@pytest.fixture(scope="module")
def noisy_db(pg) -> str:
    """10 MiB of random bytes: a dump long enough to be killed in the middle, several S3 parts."""
    db = unique("flt_big")
    create_database(pg, db, "CREATE TABLE public.noise (id integer PRIMARY KEY, data bytea NOT NULL);")
    with admin_conn(pg, db) as conn, conn.cursor() as cur, cur.copy("COPY public.noise FROM STDIN") as copy:
        for i in range(40):
            copy.write_row((i, os.urandom(256 * 1024)))
    return db


def test_a_killed_backups_temp_file_and_upload_are_removed_by_the_next(pg, s3, make_settings, noisy_db,
                                                                        tmp_path) -> None:
    settings = make_settings(noisy_db, s3=s3)
    cfg = settings_toml(settings, tmp_path / "opstower.toml")
    cfg.write_text(cfg.read_text().replace('region = "us-east-1"', 'region = "us-east-1"\npart_size_mb = 5'))
    settings = load_settings(cfg)
    client = s3.client()
    # The table locked: the dump waits mid-way while its upload is opened beside it.
    with admin_conn(pg, noisy_db) as held:
        held.execute("BEGIN")
        held.execute("LOCK TABLE public.noise IN ACCESS EXCLUSIVE MODE")
        proc = cli(cfg)
        deadline = time.monotonic() + 60
        ledger = settings.state_dir / "uploads" / f"{noisy_db}.json"  # the upload open and recorded
        while not list(settings.backup_dir.glob(".*.tmp")) or not ledger.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the dump or its upload never started"
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup of its own can run
        proc.communicate()
    [left] = client.list_multipart_uploads(Bucket=s3.bucket, Prefix=settings.s3.prefix)["Uploads"]
    [tmp] = list(settings.backup_dir.glob(".*.tmp"))

    events: list = []
    result = run_backup(settings, on_event=events.append)
    assert result.ok and result.s3_key
    warns = [e.line for e in events if isinstance(e, StepLog) and e.level == "WARN"]
    assert f"Took over a stale lock left by pid {proc.pid}" in warns
    assert f"Removed {tmp.name}, left by an interrupted run" in warns
    assert f"Aborted the S3 upload of {left['Key']} left open by an interrupted run (pid {proc.pid})" in warns
    assert not client.list_multipart_uploads(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("Uploads")
    assert not [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")]
    assert not (settings.state_dir / "uploads" / f"{noisy_db}.json").exists()
    assert [e.filename for e in list_catalog(settings).entries] == [result.path.name]


def test_a_config_holding_secrets_readable_by_others_is_warned_about_once(pg, make_settings, tmp_path) -> None:
    db = unique("flt_cfg")
    create_database(pg, db, SQL)
    extra = '[notify.webhook]\nurl = "https://hooks.example.invalid/T0/B0/hookTok123"\n'
    cfg = settings_toml(make_settings(db), tmp_path / "opstower.toml", extra=extra, mode=0o644)
    events: list = []
    run_backup(load_settings(cfg), options=BackupOptions(local_only=True), on_event=events.append)
    warns = [e.line for e in events if isinstance(e, StepLog) and "readable by" in e.line]
    assert warns == [f"{cfg} (mode 0644) is readable by others and holds secrets (notify.webhook.url): "
                     f"chmod 600 {cfg}, or move the secrets to *_env / *_file keys"]
    assert "hookTok123" not in warns[0]  # names the key, never its value

    cfg.chmod(0o600)
    events.clear()
    run_backup(load_settings(cfg), options=BackupOptions(local_only=True), on_event=events.append)
    assert not [e for e in events if isinstance(e, StepLog) and "readable by" in e.line]
