"""`opstower doctor` against the real embedded services: all good, S3 stopped, a role without privileges."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from opstower_core.backup import BackupOptions, run_backup
from opstower_core.cli import main
from opstower_core.config import S3Settings, Settings, Target, load_settings
from opstower_core.devenv.embedded import EmbeddedS3
from opstower_core.doctor import CHECKS, run_doctor
from opstower_core.errors import OpsError
from opstower_core.events import Status
from support.servers import admin_conn, create_database, restore_environ, settings_toml

TABLES = """
CREATE TABLE accounts (id serial PRIMARY KEY, name text);
CREATE TABLE ledger (id bigint PRIMARY KEY, account int REFERENCES accounts, amount numeric);
INSERT INTO accounts (name) SELECT 'a' || g FROM generate_series(1, 20) g;
"""
WEBHOOK_TOKEN = "T0DOCTOR/B0DOCTOR/doctorSecretToken42"
ENV_KEYS = ("BACKUP_DIR", "OPSTOWER_STATE_DIR", "PGDATABASE", "S3_BUCKET", "S3_PREFIX", "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3", "OPSTOWER_CONFIG", "SLACK_WEBHOOK_URL", "ALERT_EMAIL", "PGPASSWORD", "PGPASSFILE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)


def results_by_step(results) -> dict[str, Any]:
    return {r.step: r for r in results}


def new_db(pg, sql: str = TABLES) -> str:
    db = f"doc_{uuid.uuid4().hex[:8]}"
    create_database(pg, db, sql)
    return db


def settings_for(pg, tmp_path: Path, db: str, s3: EmbeddedS3 | None = None, user: str | None = None,
                 **s3_changes: Any) -> Settings:
    s3s = S3Settings()
    if s3 is not None:
        s3s = S3Settings(bucket=s3.bucket, prefix=f"d{uuid.uuid4().hex[:6]}/", endpoint_url=s3.endpoint_url,
                         region="us-east-1", part_size_mb=5, **s3_changes)
    return Settings(backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", pg_bin=pg.bin_dir, min_free_gb=0.0,
                    s3=s3s, targets={db: Target(db, db, host=pg.host, port=pg.port, user=user or pg.user)},
                    default_target=db)


def test_embedded_services_pass_or_warn_and_leave_nothing_behind(pg, s3, tmp_path, capsys) -> None:
    settings = settings_for(pg, tmp_path, new_db(pg), s3)
    run_backup(settings)  # a real backup dir with real 0600 files
    results = run_doctor(settings)
    steps = results_by_step(results)
    assert [r.step for r in results] == [c[0] for c in CHECKS]
    assert not [r for r in results if r.status == Status.FAIL], [(r.step, r.detail) for r in results]
    for step in ("connection", "client_tools", "privilege_read", "privilege_createdb", "privilege_owner",
                 "privilege_terminate", "clock_skew", "backup_dir", "free_space", "state_dir", "s3_roundtrip",
                 "s3_storage_class"):
        assert steps[step].status == Status.PASS, (step, steps[step].detail)
    assert "pg_dump 18" in steps["client_tools"].detail and "PostgreSQL 18" in steps["client_tools"].detail
    assert abs(steps["clock_skew"].data["skew_seconds"]) < 5
    assert "multipart 2x5 MiB" in steps["s3_roundtrip"].detail
    assert "s3.sse" in steps["s3_encryption"].detail  # the setting is shown, whatever it is
    # The scratch objects are gone.
    listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=settings.s3.prefix + "opstower-doctor/")
    assert listed.get("KeyCount", 0) == 0

    config = settings_toml(settings, tmp_path / "c.toml")
    code = main(["--config", str(config), "doctor", "--json"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and events[-1]["kind"] == "summary" and events[-1]["ok"] and events[-1]["failed"] == 0
    assert sum(1 for e in events if e["kind"] == "step_finished") == len(CHECKS)

    archive = settings.with_changes(s3=S3Settings(**{**settings.s3.__dict__, "storage_class": "DEEP_ARCHIVE"}))
    step = results_by_step(run_doctor(archive))["s3_storage_class"]
    assert step.status == Status.WARN and "archive class" in step.detail and "STANDARD_IA" in step.detail


def test_s3_stopped_fails_with_the_fix(pg, tmp_path, capsys) -> None:
    store = EmbeddedS3(tmp_path / "s3")
    store.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update({"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": store.secret_key})
    try:
        settings = settings_for(pg, tmp_path, new_db(pg), store)
        assert results_by_step(run_doctor(settings))["s3_roundtrip"].status == Status.PASS
        store.stop()
        config = settings_toml(settings, tmp_path / "c.toml")
        code = main(["--config", str(config), "doctor"])
        out = capsys.readouterr().out.splitlines()
        assert code == 1
        line = next(ln for ln in out if "S3 put, multipart" in ln)
        assert line.startswith("[FAIL]") and "bucket check failed" in line
        assert "fix: check that the store is up, AWS_ENDPOINT_URL" in line
        assert out[-1].startswith("NOT READY: ") and "1 failed" in out[-1]
        # Everything else still ran and passed: one dead dependency does not hide the rest.
        assert next(ln for ln in out if "Database connection" in ln).startswith("[PASS]")
    finally:
        store.stop()
        restore_environ(saved)


def test_role_without_privileges_says_what_is_missing_and_what_it_disables(pg, tmp_path) -> None:
    db = new_db(pg)
    role = f"weak_{uuid.uuid4().hex[:6]}"
    with admin_conn(pg) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB")
    settings = settings_for(pg, tmp_path, db, user=role)
    try:
        steps = results_by_step(run_doctor(settings))
        assert steps["connection"].status == Status.PASS and role in steps["connection"].detail
        read = steps["privilege_read"]
        assert read.status == Status.FAIL
        assert "public.accounts" in read.detail and "public.ledger" in read.detail
        assert "backups of" in read.detail and f"GRANT pg_read_all_data TO {role}" in read.detail
        assert steps["privilege_createdb"].status == Status.WARN
        assert "lacks CREATEDB" in steps["privilege_createdb"].detail
        assert "verify --full-test" in steps["privilege_createdb"].detail
        assert steps["privilege_owner"].status == Status.WARN
        assert "owner: postgres" in steps["privilege_owner"].detail and "restore in place" in steps["privilege_owner"].detail
        assert steps["privilege_terminate"].status == Status.WARN
        assert f"GRANT pg_signal_backend TO {role}" in steps["privilege_terminate"].detail
        # What doctor said is true: the backup fails for this role.
        with pytest.raises(OpsError, match="permission denied"):
            run_backup(settings, options=BackupOptions(local_only=True))

        with admin_conn(pg) as conn:
            conn.execute(f"GRANT pg_read_all_data TO {role}")
            conn.execute(f"ALTER ROLE {role} CREATEDB")
        steps = results_by_step(run_doctor(settings))
        assert steps["privilege_read"].status == Status.PASS and "pg_read_all_data" in steps["privilege_read"].detail
        assert steps["privilege_createdb"].status == Status.PASS
        assert run_backup(settings, options=BackupOptions(local_only=True)).path.exists()
    finally:
        with admin_conn(pg) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_readable_secrets_and_loose_permissions_warn(pg, tmp_path, monkeypatch, capsys) -> None:
    base = settings_for(pg, tmp_path, new_db(pg))
    run_backup(base, options=BackupOptions(local_only=True))
    url = f"https://hooks.example.com/services/{WEBHOOK_TOKEN}"
    config = settings_toml(base, tmp_path / "c.toml", f'[notify.webhook]\nurl = "{url}"\n', mode=0o644)

    steps = results_by_step(run_doctor(load_settings(config)))
    assert steps["config"].status == Status.WARN
    assert "readable by others" in steps["config"].detail and "notify.webhook.url" in steps["config"].detail
    assert f"chmod 600 {config}" in steps["config"].detail
    assert steps["notify"].status == Status.PASS and "https://hooks.example.com/…" in steps["notify"].detail

    config.chmod(0o600)
    steps = results_by_step(run_doctor(load_settings(config)))
    assert steps["config"].status == Status.PASS

    # Reference issue 2: PGPASSWORD in the environment, and a .pgpass libpq would ignore.
    password = "doctor-Pa55-" + uuid.uuid4().hex
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{password}\n")
    passfile.chmod(0o644)
    monkeypatch.setenv("PGPASSWORD", password)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    (base.backup_dir).chmod(0o755)
    loose = next(p for p in base.backup_dir.glob("*.dump.zst") if not p.is_symlink())
    loose.chmod(0o644)
    code = main(["--config", str(config), "doctor"])
    out = capsys.readouterr().out
    assert code == 0  # warnings only
    creds = next(ln for ln in out.splitlines() if "Database credentials" in ln)
    assert creds.startswith("[WARN]") and "PGPASSWORD is set" in creds and "libpq ignores it" in creds
    assert f"chmod 600 {passfile}" in creds
    bdir = next(ln for ln in out.splitlines() if "Backup directory permissions" in ln)
    assert bdir.startswith("[WARN]") and "mode 0755" in bdir and loose.name in bdir and "chmod 750" in bdir
    assert password not in out and WEBHOOK_TOKEN not in out

    passfile.chmod(0o600)
    monkeypatch.delenv("PGPASSWORD")
    steps = results_by_step(run_doctor(load_settings(config)))
    assert steps["credentials"].status == Status.PASS and str(passfile) in steps["credentials"].detail
