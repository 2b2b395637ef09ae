"""Backup error paths (reference test case 1.10), through the real CLI and the real services.

Each failure exits non-zero with one `ERROR:` line on stderr and no traceback, and leaves no
temporary file and no listed artifact (an S3 failure keeps the good local artifact and says so).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from opstower_core import config
from opstower_core.backup import run_backup
from opstower_core.cli import main
from opstower_core.config import load_settings
from opstower_core.errors import Cancelled, OpsError
from opstower_core.events import CancelToken, Status, StepFinished, StepProgress
from opstower_core.pg.tools import select_tools
from opstower_core.repo.catalog import list_catalog
from opstower_core.runs.history import StateStore
from support.servers import admin_conn, create_database, unique

SQL = """
CREATE TABLE public.items (id integer PRIMARY KEY, label text);
INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 200) AS g;
"""
MiB = 1024 * 1024


def write_config(tmp_path: Path, pg, db: str, *, host: str | None = None, port: int | None = None,
                 user: str | None = None, s3=None, bucket: str | None = None, extra: str = "") -> Path:
    lines = [
        f'backup_dir = "{tmp_path / "backups"}"', f'state_dir = "{tmp_path / "state"}"',
        f'pg_bin = "{pg.bin_dir}"', f'default_target = "{db}"', extra or "min_free_gb = 0",
        f"[targets.{db}]", f'dbname = "{db}"', f'host = "{host or pg.host}"', f"port = {port or pg.port}",
        f'user = "{user or pg.user}"',
    ]
    if s3 is not None:
        lines += ["[s3]", f'bucket = "{bucket or s3.bucket}"', f'prefix = "{unique("err")}/"',
                  f'endpoint_url = "{s3.endpoint_url}"', "part_size_mb = 5"]
    path = tmp_path / "opstower.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR:"), err
    return lines[0]


def assert_nothing_left(cfg: Path, db: str) -> None:
    """No temporary file, no artifact or metadata, nothing listed; a failed run in the history."""
    settings = load_settings(cfg)
    names = [p.name for p in settings.backup_dir.iterdir()] if settings.backup_dir.exists() else []
    assert not [n for n in names if n.startswith(".") or n.endswith((".tmp", ".zst", ".gz", ".meta.json"))], names
    assert list_catalog(settings, include_s3=False).entries == []
    run = StateStore(settings.state_dir).last("backup", db)
    assert run is not None and run.status == "failed" and run.error


def test_insufficient_disk_space(pg, tmp_path, capsys) -> None:
    db = unique("err_disk")
    create_database(pg, db, SQL)
    cfg = write_config(tmp_path, pg, db, extra="min_free_gb = 1000000")
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup", "--local-only")
    assert rc == 1
    line = one_error_line(err)
    assert "Insufficient disk space" in line and "Required: 976.6 TiB" in line and "Available:" in line
    assert_nothing_left(cfg, db)
    log = next((tmp_path / "backups" / "logs").glob("backup_*.log")).read_text()
    assert "[ERROR]" in log and "Insufficient disk space" in log


def test_backup_directory_that_cannot_be_created(pg, tmp_path, capsys) -> None:
    db = unique("err_dir")
    (tmp_path / "a-file").write_text("not a directory")
    cfg = write_config(tmp_path, pg, db)
    cfg.write_text(cfg.read_text().replace(f'backup_dir = "{tmp_path / "backups"}"',
                                           f'backup_dir = "{tmp_path / "a-file" / "backups"}"'))
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup", "--local-only")
    assert rc == 1
    line = one_error_line(err)
    assert f"Cannot create backup directory {tmp_path / 'a-file' / 'backups'}" in line and "BACKUP_DIR" in line


@pytest.mark.parametrize("where", ["missing socket port", "tcp refused", "no such database"])
def test_connection_failure(pg, tmp_path, capsys, where: str) -> None:
    db = unique("err_conn")
    if where == "missing socket port":
        cfg = write_config(tmp_path, pg, db, port=1)
    elif where == "tcp refused":
        cfg = write_config(tmp_path, pg, db, host="127.0.0.1", port=1)
    else:
        cfg = write_config(tmp_path, pg, db)  # never created
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup", "--local-only")
    assert rc == 1
    line = one_error_line(err)
    assert f"Cannot connect to database '{db}'" in line
    if where == "no such database":
        assert "does not exist" in line
    assert_nothing_left(cfg, db)


def test_dump_failure_permission_denied_for_non_superuser(pg, tmp_path, capsys) -> None:
    db, role = unique("err_dump"), unique("err_reader")
    create_database(pg, db, SQL + "CREATE TABLE public.secret (id integer); INSERT INTO public.secret VALUES (1);")
    with admin_conn(pg, db) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
        conn.execute(f'GRANT SELECT ON public.items TO "{role}"')
        conn.execute("REVOKE ALL ON public.secret FROM PUBLIC")
    cfg = write_config(tmp_path, pg, db, user=role)
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup", "--local-only")
    assert rc == 1
    line = one_error_line(err)
    assert "Database dump failed" in line and "permission denied" in line and "secret" in line
    assert "[FAIL]" in out  # the dump step is shown as failed
    assert_nothing_left(cfg, db)


@pytest.mark.parametrize("problem", ["bucket missing", "S3 down"])
def test_s3_unreachable_keeps_the_local_backup(pg, s3, tmp_path, capsys, monkeypatch, problem: str) -> None:
    db = unique("err_s3")
    create_database(pg, db, SQL)
    if problem == "bucket missing":
        cfg = write_config(tmp_path, pg, db, s3=s3, bucket=unique("no-such-bucket").replace("_", "-"))
        reason = "404"
    else:  # nothing listens there: the store is stopped
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
        cfg = write_config(tmp_path, pg, db, s3=s3)
        reason = "Could not connect to the endpoint URL"
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup")
    assert rc == 1
    line = one_error_line(err)
    assert "Failed to upload backup to S3" in line and "The local backup" in line and "is good" in line
    assert reason in line
    settings = load_settings(cfg)
    entries = list_catalog(settings, include_s3=False).entries
    assert len(entries) == 1 and entries[0].meta is not None and str(entries[0].local_path) in line
    assert not [p for p in settings.backup_dir.iterdir() if p.name.startswith(".")]
    run = StateStore(settings.state_dir).last("backup", db)
    assert run.status == "failed" and run.details["local"] is True and run.details["s3_ok"] is False
    assert "[FAIL]" in out and "Uploading backup to S3" in out


def fake_tools_dir(tmp_path: Path, version: str) -> Path:
    d = tmp_path / f"pg{version}"
    d.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql", "pg_dumpall"):
        p = d / tool
        p.write_text(f'#!/bin/sh\necho "{tool} (PostgreSQL) {version}"\n')
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return d


def test_no_compatible_pg_dump(pg, tmp_path, capsys, monkeypatch) -> None:
    db = unique("err_tools")
    create_database(pg, db, SQL)
    old = fake_tools_dir(tmp_path, "9.6")
    cfg = write_config(tmp_path, pg, db)
    cfg.write_text(cfg.read_text().replace(f'pg_bin = "{pg.bin_dir}"', f'pg_bin = "{old}"'))
    empty = tmp_path / "empty-path"
    empty.mkdir()
    # An installation without the bundled PostgreSQL 18 tools, only an old pg_dump around.
    monkeypatch.setenv("PATH", str(empty))

    monkeypatch.setattr(config, "bundled_pg_bin", lambda version=18: None)  # read by load_settings
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup", "--local-only")
    assert rc == 1
    line = one_error_line(err)
    assert "No pg_dump compatible with the PostgreSQL 18 server" in line
    assert f"9.6 ({old})" in line and "OPSTOWER_PG_BIN" in line
    assert_nothing_left(cfg, db)


def test_select_tools_refuses_a_server_newer_than_every_pg_dump(pg, make_settings, tmp_path) -> None:
    settings = make_settings("unused", pg_bin=fake_tools_dir(tmp_path, "9.6"))
    assert select_tools(settings, 18).bin_dir == pg.bin_dir  # the bundled 18 tools, never the 9.6 ones
    with pytest.raises(OpsError) as exc:
        select_tools(settings, 99)
    assert "PostgreSQL 99" in exc.value.sentence and "9.6" in exc.value.sentence and "18." in exc.value.sentence


@pytest.fixture(scope="module")
def noisy_db(pg) -> str:
    """10 MiB of random bytes (20 MiB as dump text, ~10 MiB compressed): many reads, several S3 parts."""
    db = unique("err_big")
    create_database(pg, db, "CREATE TABLE public.noise (id integer PRIMARY KEY, data bytea NOT NULL);")
    with admin_conn(pg, db) as conn, conn.cursor() as cur, cur.copy("COPY public.noise FROM STDIN") as copy:
        for i in range(40):
            copy.write_row((i, os.urandom(256 * 1024)))
    return db


def test_cancel_mid_dump_removes_temp_file_and_aborts_multipart(pg, s3, make_settings, noisy_db) -> None:
    settings = make_settings(noisy_db, s3=s3)
    token = CancelToken()
    seen: list[int] = []
    client = s3.client()

    def on_event(event) -> None:
        if isinstance(event, StepProgress) and event.step == "dump" and not token.cancelled:
            seen.append(event.done)
            if event.done >= 11 * MiB:  # about half way through the dump
                assert len([p for p in settings.backup_dir.iterdir() if p.name.endswith(".tmp")]) == 1
                # The multipart upload streams alongside (zstd's worker jobs hold the first MiBs back,
                # so no part may have left yet): it must be aborted, not left to linger.
                uploads = client.list_multipart_uploads(Bucket=s3.bucket, Prefix=settings.s3.prefix)
                assert len(uploads.get("Uploads", [])) == 1
                token.cancel()
            else:
                time.sleep(0.06)  # lets every 1 MiB chunk through the progress throttle

    with pytest.raises(Cancelled) as exc:
        run_backup(settings, on_event=on_event, cancel=token)
    assert "temporary file removed" in exc.value.sentence
    assert max(seen) < 15 * MiB  # it stopped mid-dump (20 MiB in all), not at the end
    assert not [p.name for p in settings.backup_dir.iterdir() if p.is_file()]
    client = s3.client()
    assert not client.list_multipart_uploads(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("Uploads")
    assert client.list_objects_v2(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("KeyCount", 0) == 0
    assert list_catalog(settings).entries == []
    assert StateStore(settings.state_dir).last("backup", noisy_db).status == "cancelled"
    with admin_conn(pg) as conn:  # pg_dump was stopped, not left streaming
        for _ in range(50):
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (noisy_db,)).fetchone()[0]
            if n == 0:
                break
            time.sleep(0.05)
        assert n == 0


def test_s3_refusing_the_upload_at_start_keeps_the_local_backup(pg, s3, make_settings) -> None:
    """The bucket answers head_bucket but refuses to start the upload (a prefix making keys too long)."""
    db = unique("err_s3start")
    create_database(pg, db, SQL)
    settings = make_settings(db, s3=s3)
    settings = settings.with_changes(s3=replace(settings.s3, prefix="p" * 1000 + "/"))
    events: list = []
    result = run_backup(settings, on_event=events.append)
    assert not result.ok and result.s3_key is None
    assert "Failed to upload backup to S3" in result.s3_error and "too long" in result.s3_error
    assert result.path.exists() and result.meta["sha256"]
    assert [e.filename for e in list_catalog(settings, include_s3=False).entries] == [result.path.name]
    assert not [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")]
    upload = next(e for e in events if isinstance(e, StepFinished) and e.step == "upload")
    assert upload.status == Status.FAIL and result.path.name in upload.detail
    run = StateStore(settings.state_dir).last("backup", db)
    assert run.status == "failed" and run.details["s3_ok"] is False


def test_s3_failing_mid_upload_keeps_the_local_backup_and_aborts(pg, s3, noisy_db, tmp_path, capsys) -> None:
    """SSE-KMS on a store without KMS: the upload starts, then every part is refused."""
    cfg = write_config(tmp_path, pg, noisy_db, s3=s3)
    cfg.write_text(cfg.read_text() + 'sse = "aws:kms"\n')
    rc, out, err = run_cli(capsys, "--config", str(cfg), "backup")
    assert rc == 1
    line = one_error_line(err)
    assert "Failed to upload backup to S3" in line and "is good" in line
    settings = load_settings(cfg)
    entries = list_catalog(settings).entries
    assert len(entries) == 1 and entries[0].where == "local" and entries[0].meta["row_counts"] == {"public.noise": 40}
    assert not [p.name for p in settings.backup_dir.iterdir() if p.name.startswith(".")]
    client = s3.client()
    assert not client.list_multipart_uploads(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("Uploads")
    assert client.list_objects_v2(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("KeyCount", 0) == 0


WRITE_LIMITED_CLI = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, 1024 * 1024))
from opstower_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_write_failure_mid_dump_is_one_error_line(pg, noisy_db, tmp_path) -> None:
    """The disk refuses the artifact half way (here: a 1 MiB file size limit, a real kernel EFBIG)."""
    cfg = write_config(tmp_path, pg, noisy_db)
    env = {k: v for k, v in os.environ.items() if k not in ("BACKUP_DIR", "OPSTOWER_STATE_DIR", "PGDATABASE")}
    proc = subprocess.run([sys.executable, "-c", WRITE_LIMITED_CLI, "--config", str(cfg), "backup", "--local-only"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    assert "File too large" in line and "no backup was written" in line
    assert_nothing_left(cfg, noisy_db)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_mid_dump_cleans_up_like_ctrl_c(pg, s3, noisy_db, tmp_path, sig: signal.Signals) -> None:
    """cron's `timeout` and `systemctl stop` send SIGTERM, a dropped SSH session SIGHUP, a person Ctrl-C.

    Each: pg_dump stopped, no temp file, no open multipart upload, the lock released, the run
    recorded as interrupted, one line on stderr, exit 128 + the signal's number.
    """
    cfg = write_config(tmp_path, pg, noisy_db, s3=s3)
    settings = load_settings(cfg)
    client = s3.client()
    # The table locked: the dump waits mid-way while its upload is opened beside it.
    with admin_conn(pg, noisy_db) as held:
        held.execute("BEGIN")
        held.execute("LOCK TABLE public.noise IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([sys.executable, "-m", "opstower_core", "--config", str(cfg), "backup"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        ledger = settings.state_dir / "uploads" / f"{noisy_db}.json"  # the upload open and recorded
        while not list(settings.backup_dir.glob(".*.tmp")) or not ledger.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the dump or its upload never started"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in out + err
    line = one_error_line(err)
    assert f"Interrupted by {sig.name}" in line and "temporary file removed" in line and "upload aborted" in line
    assert not [p.name for p in settings.backup_dir.iterdir() if p.is_file()]
    assert not client.list_multipart_uploads(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("Uploads")
    assert client.list_objects_v2(Bucket=s3.bucket, Prefix=settings.s3.prefix).get("KeyCount", 0) == 0
    assert (settings.state_dir / "locks" / f"{noisy_db}.lock").read_text() == ""  # released, not left to take over
    assert not (settings.state_dir / "uploads" / f"{noisy_db}.json").exists()  # nothing for the next run to abort
    run = StateStore(settings.state_dir).last("backup", noisy_db)
    assert run.status == "cancelled" and run.error.startswith(f"Interrupted by {sig.name}")
    with admin_conn(pg) as conn:  # pg_dump was stopped, not left streaming
        for _ in range(50):
            n = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (noisy_db,)).fetchone()[0]
            if n == 0:
                break
            time.sleep(0.05)
        assert n == 0


def test_default_free_space_floor_applies_to_large_databases_only():
    from opstower_core.backup import DEFAULT_FLOOR, required_free_bytes
    from opstower_core.config import Settings

    default = Settings()  # min_free_gb not configured
    small = 20 * 1024**2
    assert required_free_bytes(default, small) < 100 * 1024**2  # a 20 MB database needs no 5 GB
    assert required_free_bytes(default, 6 * 1024**3) >= DEFAULT_FLOOR
    assert required_free_bytes(Settings(min_free_gb=5.0), small) == DEFAULT_FLOOR  # an explicit floor is kept
