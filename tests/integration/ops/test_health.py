"""`opstower health`: every state reached for real, with the Nagios exit code.

Real backups of a real PostgreSQL, a private SeaweedFS this module can stop, real files
(old timestamp names, a sparse file bigger than the free space), real failed runs.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opstower_core.artifacts.names import new_stamp, parse_name
from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import S3Settings, Settings, Target
from opstower_core.devenv.embedded import EmbeddedS3
from opstower_core.errors import OpsError
from opstower_core.health import HealthState, check_health, run_health
from opstower_core.runs.history import StateStore
from opstower_core.verify import verify
from support.servers import admin_conn, create_database, restore_environ, settings_toml

SMALL = "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g;"
ENV_KEYS = ("BACKUP_DIR", "OPSTOWER_STATE_DIR", "PGDATABASE", "S3_BUCKET", "S3_PREFIX", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "OPSTOWER_CONFIG", "SLACK_WEBHOOK_URL", "ALERT_EMAIL")


@pytest.fixture(scope="module")
def private_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedS3]:
    """An S3 store of this module only, so a test can stop it without breaking others."""
    store = EmbeddedS3(tmp_path_factory.mktemp("health_s3"))
    store.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update({k: v for k, v in store.env().items() if k != "AWS_ENDPOINT_URL"})
    yield store
    store.stop()
    restore_environ(saved)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment wins over the config file: keep the caller's (and other fixtures') out.
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)


def make(pg, tmp_path: Path, s3: EmbeddedS3 | None = None, sql: str = SMALL, **changes: Any) -> Settings:
    db = f"h_{uuid.uuid4().hex[:8]}"
    # ANALYZE now: backups carry optimizer statistics, and an autovacuum between two backups of a
    # tiny database would otherwise change their size by more than the size-trend threshold.
    create_database(pg, db, sql + ";\nANALYZE;")
    s3s = S3Settings()
    if s3 is not None:
        s3s = S3Settings(bucket=s3.bucket, prefix=f"h{uuid.uuid4().hex[:6]}/", endpoint_url=s3.endpoint_url,
                         region="us-east-1", part_size_mb=5)
    settings = Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", pg_bin=pg.bin_dir,
                        min_free_gb=0.0, s3=s3s, targets={db: Target(db, db, host=pg.host, port=pg.port, user=pg.user)},
                        default_target=db)
    return settings.with_changes(**changes) if changes else settings


def cli_health(config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    code = main(["--config", str(config), "health", *extra])
    return code, capsys.readouterr().out.splitlines()


def by_check(report) -> dict[str, Any]:
    return {c.check: c for c in report.checks}


def age_artifact(settings: Settings, path: Path, hours: float) -> Path:
    """Rename an artifact and its metadata to a timestamp `hours` ago (as if that backup were the newest)."""
    name = parse_name(path.name)
    assert name is not None
    stamp = (datetime.now() - timedelta(hours=hours)).strftime("%Y%m%d_%H%M%S")
    new = name.__class__(name.database, stamp, name.ext)
    (settings.backup_dir / name.meta_filename).rename(settings.backup_dir / new.meta_filename)
    path.rename(settings.backup_dir / new.filename)
    return settings.backup_dir / new.filename


def test_fresh_verified_backups_are_ok_even_with_the_database_down(pg, private_s3, tmp_path, capsys) -> None:
    if not private_s3.running:
        private_s3.start()
    settings = make(pg, tmp_path, private_s3)
    run_backup(settings)
    second = run_backup(settings)
    assert second.ok and second.s3_key
    assert verify(settings, second.path).ok
    config = settings_toml(settings, tmp_path / "c.toml")

    code, lines = cli_health(config, capsys)
    assert code == 0, lines
    assert lines[0].startswith(f"OK: {settings.target().dbname} latest backup is ")
    assert " | " in lines[0] and "_backup_age'=" in lines[0]  # Nagios perfdata
    assert [ln.split()[2].rstrip(":") for ln in lines[1:8]] == [
        "backup_age", "success_rate", "size_trend", "s3_upload", "verification", "restore_forecast", "free_space"]
    assert all(ln.startswith("[OK]") for i, ln in enumerate(lines[1:8]) if i != 5), lines
    # No restore measured yet: the forecast says so and does not count (no guessed RTO).
    assert lines[6].startswith("[UNKNOWN]") and "no restore" in lines[6], lines

    # The database goes away: health reads only files, S3 and the state file, so it still answers.
    t = settings.target()
    down = settings.with_changes(targets={t.name: Target(t.name, t.dbname, host=str(tmp_path / "no-server"), port=1)})
    report = check_health(down)
    assert report.state == HealthState.OK, report.lines()

    code, lines = cli_health(config, capsys, "--json")
    data = json.loads(lines[0])
    assert code == 0 and data["state"] == "OK" and data["exit_code"] == 0
    assert {c["check"] for c in data["checks"]} == {"backup_age", "success_rate", "size_trend", "s3_upload",
                                                    "verification", "restore_forecast", "free_space"}


def test_old_backup_is_warning_then_critical(pg, tmp_path, capsys) -> None:
    settings = make(pg, tmp_path)
    result = run_backup(settings, options=BackupOptions(local_only=True))
    config = settings_toml(settings, tmp_path / "c.toml")
    db = settings.target().dbname

    path = age_artifact(settings, result.path, 3)
    code, lines = cli_health(config, capsys)
    assert code == 1, lines
    assert lines[0].startswith(f"WARNING: {db} latest backup is 3h") and "(warning > 2h" in lines[0]

    age_artifact(settings, path, 5.2)
    code, lines = cli_health(config, capsys)
    assert code == 2, lines
    assert lines[0].startswith(f"CRITICAL: {db} latest backup is 5h1") and "(critical > 4h" in lines[0]

    # Thresholds come from the settings ([health] in the config file).
    relaxed = settings_toml(settings, tmp_path / "r.toml", "[health]\nbackup_age_warn_hours = 6\nbackup_age_crit_hours = 12\n")
    assert cli_health(relaxed, capsys)[0] == 0


def test_failed_backups_lower_the_success_rate(pg, tmp_path) -> None:
    settings = make(pg, tmp_path)
    run_backup(settings, options=BackupOptions(local_only=True))
    with admin_conn(pg) as conn:  # the database disappears: the next backup fails for real
        conn.execute(f'DROP DATABASE "{settings.target().dbname}" WITH (FORCE)')
    with pytest.raises(OpsError):
        run_backup(settings, options=BackupOptions(local_only=True))

    report = run_health(settings, notify=False)
    checks = by_check(report)
    assert report.state == HealthState.WARNING and report.exit_code == 1
    assert checks["success_rate"].state == HealthState.WARNING
    assert checks["success_rate"].metrics["success_rate"] == 50.0
    assert "1/2 backups succeeded" in checks["success_rate"].detail and "Cannot connect" in checks["success_rate"].detail
    assert checks["backup_age"].state == HealthState.OK  # the good backup is recent
    assert "success_rate" in report.summary or "backups succeeded" in report.summary


def test_size_jump_warns(pg, tmp_path) -> None:
    settings = make(pg, tmp_path)
    run_backup(settings, options=BackupOptions(local_only=True))
    with admin_conn(pg, settings.target().dbname) as conn:  # incompressible data: a real jump in size
        conn.execute("INSERT INTO items SELECT g, repeat(md5(random()::text), 6) FROM generate_series(1000, 3000) g")
    run_backup(settings, options=BackupOptions(local_only=True))
    report = check_health(settings)
    trend = by_check(report)["size_trend"]
    assert trend.state == HealthState.WARNING and trend.metrics["change_percent"] > 30
    assert report.exit_code == 1 and "±30%" in report.summary


def test_failed_verification_is_critical(pg, tmp_path) -> None:
    settings = make(pg, tmp_path)
    result = run_backup(settings, options=BackupOptions(local_only=True))
    data = bytearray(result.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle: the sha256 and zstd checksum catch it
    result.path.write_bytes(bytes(data))
    assert not verify(settings, result.path).ok

    report = check_health(settings)
    check = by_check(report)["verification"]
    assert check.state == HealthState.CRITICAL and report.exit_code == 2
    assert "last verification FAIL" in check.detail and "opstower verify latest" in check.detail


def test_free_space_warning_and_critical_from_a_sparse_backup(pg, tmp_path) -> None:
    settings = make(pg, tmp_path)
    result = run_backup(settings, options=BackupOptions(local_only=True))
    meta = json.loads((settings.backup_dir / parse_name(result.path.name).meta_filename).read_text())

    def newest_backup_of(size: int) -> None:
        # A sparse file: its size is real to stat() but it takes no disk space.
        stamp = (datetime.now() + timedelta(seconds=5)).strftime("%Y%m%d_%H%M%S")
        name = parse_name(f"{settings.target().dbname}_{stamp}.dump.zst")
        with open(settings.backup_dir / name.filename, "wb") as fh:
            fh.truncate(size)
        (settings.backup_dir / name.meta_filename).write_text(json.dumps({**meta, "size_bytes": size}))

    free = os.statvfs(settings.backup_dir).f_bavail * os.statvfs(settings.backup_dir).f_frsize
    newest_backup_of(int(free * 0.75))
    check = by_check(check_health(settings))["free_space"]
    assert check.state == HealthState.WARNING and "less than two backups" in check.detail

    time.sleep(1)  # a newer timestamp name
    newest_backup_of(int(free * 1.5))
    report = check_health(settings)
    check = by_check(report)["free_space"]
    assert check.state == HealthState.CRITICAL and report.exit_code == 2
    assert "will not fit" in check.detail


def test_nothing_to_read_is_unknown(pg, tmp_path, capsys) -> None:
    settings = make(pg, tmp_path)  # no backup dir, no state, no backup ever
    config = settings_toml(settings, tmp_path / "c.toml")
    code, lines = cli_health(config, capsys)
    assert code == 3 and lines[0].startswith("UNKNOWN: ")
    assert "run `opstower backup`" in lines[0]

    broken = tmp_path / "broken.toml"
    broken.write_text("backup_dir = [\n")
    code, lines = cli_health(broken, capsys)
    assert code == 3 and lines[0].startswith("UNKNOWN: ") and "not valid TOML" in lines[0]


class _Hook:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_state_changes_notify_once_and_notify_failures_keep_the_exit_code(pg, tmp_path) -> None:
    hook = _Hook()
    try:
        settings = make(pg, tmp_path)
        settings = settings.with_changes(raw={"notify": {"webhook": {"url": hook.url}}})
        result = run_backup(settings, options=BackupOptions(local_only=True))
        assert verify(settings, result.path).ok

        first = run_health(settings)
        assert first.state == HealthState.OK and not first.changed and hook.bodies == []

        old = age_artifact(settings, result.path, 5)
        bad = run_health(settings)
        assert bad.state == HealthState.CRITICAL and bad.changed and bad.previous == "OK"
        assert len(hook.bodies) == 1
        alert = hook.bodies[0]
        assert alert["event"] == "health" and alert["status"] == "critical"
        assert "latest backup is 5h" in alert["message"] and "was OK" in alert["title"]

        assert run_health(settings).state == HealthState.CRITICAL
        assert len(hook.bodies) == 1  # unchanged: no page every 15 minutes

        current = age_artifact(settings, old, 0)
        recovered = run_health(settings)
        assert recovered.state == HealthState.OK and recovered.changed
        assert [b["status"] for b in hook.bodies] == ["critical", "ok"]
        transitions = StateStore(settings.state_dir).runs("health")
        assert [r.status for r in transitions] == ["OK", "CRITICAL"]

        # A dead alert endpoint: the verdict and the exit code do not change, and the next run retries.
        dead = settings.with_changes(raw={"notify": {"webhook": {"url": "http://127.0.0.1:9/alerts"},
                                                     "timeout_seconds": 1}})
        age_artifact(settings, current, 5)
        report = run_health(dead)
        assert report.state == HealthState.CRITICAL and report.exit_code == 2
        assert report.notifications and not report.notifications[0]["ok"]
        retry = run_health(settings)  # same state; the endpoint works again: the missed alert goes out
        assert retry.state == HealthState.CRITICAL and not retry.changed
        assert [b["status"] for b in hook.bodies] == ["critical", "ok", "critical"]
    finally:
        hook.close()


def test_s3_stopped_is_a_warning(pg, private_s3, tmp_path, capsys) -> None:
    # Last in the module: it stops the module's private S3 store.
    if not private_s3.running:
        private_s3.start()
    settings = make(pg, tmp_path, private_s3)
    assert run_backup(settings).ok
    config = settings_toml(settings, tmp_path / "c.toml")
    assert cli_health(config, capsys)[0] == 0

    private_s3.stop()
    code, lines = cli_health(config, capsys)
    assert code == 1, lines
    assert lines[0].startswith("WARNING: ") and "S3 not reachable now" in lines[0]

    # A backup while S3 is down keeps the local copy and records the failed upload.
    result = run_backup(settings)
    assert result.s3_error and result.path.exists()
    checks = by_check(run_health(settings, notify=False))
    assert checks["s3_upload"].state == HealthState.WARNING
    assert "last upload failed" in checks["s3_upload"].detail
    assert checks["backup_age"].state == HealthState.OK


def test_an_empty_backup_directory_is_critical(pg, tmp_path, capsys) -> None:
    """The backups never ran: that must page, not read as 'unknown'."""
    settings = make(pg, tmp_path)
    settings.backup_dir.mkdir(parents=True)
    config = settings_toml(settings, tmp_path / "c.toml")
    code, lines = cli_health(config, capsys)
    assert code == 2 and lines[0].startswith("CRITICAL: ") and "no backup" in lines[0]


def test_a_future_dated_backup_cannot_silence_a_stale_backup_alarm(pg, tmp_path, capsys) -> None:
    """A wrong clock (or a hand-made name) dates a copy 3 hours ahead: flagged, never "OK 0s old"."""
    settings = make(pg, tmp_path)
    result = run_backup(settings, options=BackupOptions(local_only=True))
    stale = age_artifact(settings, result.path, 5.2)  # the real latest backup: past the 4 h critical limit
    name = parse_name(stale.name)
    ahead = name.__class__(name.database, new_stamp(datetime.now(UTC) + timedelta(hours=3)), name.ext)
    shutil.copy(stale, settings.backup_dir / ahead.filename)
    shutil.copy(settings.backup_dir / name.meta_filename, settings.backup_dir / ahead.meta_filename)
    config = settings_toml(settings, tmp_path / "c.toml")

    code, lines = cli_health(config, capsys)
    assert code == 2, lines
    assert lines[0].startswith(f"CRITICAL: {settings.target().dbname} latest backup is 5h1"), lines[0]
    future = next(ln for ln in lines if " future_dated: " in ln)
    assert future.startswith("[WARNING]") and ahead.filename in future and "dated in the future" in future

    assert main(["--config", str(config), "list"]) == 0
    out, err = capsys.readouterr()
    row = next(ln for ln in out.splitlines() if ln.startswith(ahead.filename))
    assert "FUTURE +" in row and "dated in the future" in err and ahead.filename in err
    assert main(["--config", str(config), "list", "--json"]) == 0
    flags = {r["name"]: r["future_dated"] for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert flags == {ahead.filename: True, stale.name: False}
