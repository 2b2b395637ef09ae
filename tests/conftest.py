"""Shared fixtures: a real embedded PostgreSQL and a real SeaweedFS S3 store.

Each starts once per test session on free loopback ports / a private socket directory and
is stopped at the end. There is no skip for a missing service: if one cannot start, the
tests that need it fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from opstower_core.config import S3Settings, Settings, Target
from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3


@pytest.fixture(scope="session")
def pg():
    # Outside pytest's temp root: a second pytest session (as root) resets that root to 0700,
    # which would cut the server's own user ("pgserver") off from its data directory.
    directory = Path(tempfile.mkdtemp(prefix="opstower-test-pg-"))
    server = EmbeddedPostgres(directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory):
    store = EmbeddedS3(tmp_path_factory.mktemp("s3"))
    store.start()
    saved = {k: os.environ.get(k) for k in store.env()}
    os.environ.update(store.env())  # the AWS credential chain reads these
    yield store
    restore_environ(saved)
    store.stop()


def restore_environ(saved: dict[str, str | None]) -> None:
    """Put back environment variables saved as {name: value or None (unset)}."""
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def admin_conn(pg: EmbeddedPostgres, dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(**pg.conninfo(dbname), autocommit=True)


def create_database(pg: EmbeddedPostgres, name: str, sql: str | None = None) -> None:
    """(Re)create a database and run `sql` in it."""
    with admin_conn(pg) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    if sql:
        with admin_conn(pg, name) as conn:
            conn.execute(sql)


@pytest.fixture
def make_settings(pg: EmbeddedPostgres, tmp_path: Path):
    """Settings for one test: its own backup dir, state dir and S3 prefix."""

    def make(dbname: str = "opstower", s3: EmbeddedS3 | None = None, **changes) -> Settings:
        target = Target(name=dbname, dbname=dbname, host=pg.host, port=pg.port, user=pg.user)
        s3_settings = S3Settings()
        if s3 is not None:
            s3_settings = S3Settings(
                bucket=s3.bucket, prefix=f"t{uuid.uuid4().hex[:8]}/", endpoint_url=s3.endpoint_url,
                region="us-east-1", part_size_mb=5,
            )
        settings = Settings(
            backup_dir=tmp_path / "backups", state_dir=tmp_path / "state", pg_bin=pg.bin_dir,
            s3=s3_settings, targets={dbname: target}, default_target=dbname, min_free_gb=0.0,
        )
        return settings.with_changes(**changes) if changes else settings

    return make


def unique(prefix: str) -> str:
    """A name no other test uses (databases, prefixes)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own BACKUP_DIR, S3_BUCKET, … must never steer a test."""
    for var in ("BACKUP_DIR", "BACKUP_RETENTION_DAYS", "S3_BUCKET", "S3_PREFIX", "OPSTOWER_PG_BIN",
                "OPSTOWER_STATE_DIR", "OPSTOWER_CONFIG", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent/opstower-tests")  # no ~/.config/opstower either


def settings_toml(settings: Settings, path: Path, extra: str = "", mode: int = 0o600,
                  bucket: str | None = None, top: str = "") -> Path:
    """The same settings as a TOML file, for the CLI (`--config`).

    `top` holds more top-level keys; `extra` is appended after the tables (more tables).
    """
    t = settings.target()
    lines = [f'backup_dir = "{settings.backup_dir}"', f'state_dir = "{settings.state_dir}"',
             f'pg_bin = "{settings.pg_bin}"', "min_free_gb = 0", f'default_target = "{t.name}"', top]
    if settings.s3.enabled:
        lines += ["[s3]", f'bucket = "{bucket or settings.s3.bucket}"', f'prefix = "{settings.s3.prefix}"',
                  f'endpoint_url = "{settings.s3.endpoint_url}"', 'region = "us-east-1"']
    lines += [f"[targets.{t.name}]", f'dbname = "{t.dbname}"', f'host = "{t.host}"', f"port = {t.port}",
              f'user = "{t.user}"']
    path.write_text("\n".join(lines) + "\n" + extra)
    path.chmod(mode)
    return path


# -- restore tests (test_restore*.py): a source database per module, a damaged "live" copy per test --


@pytest.fixture(scope="module")
def source(pg, tmp_path_factory: pytest.TempPathFactory):
    from test_restore_support import Source  # imported here: it imports this module itself

    return Source(pg, tmp_path_factory.mktemp("restore_source"))


@pytest.fixture
def live(pg, make_settings, source):
    """A live database, a custom-format backup of it, then damage (see test_restore_support)."""
    from test_restore_support import make_live

    return make_live(pg, make_settings, source=source)
