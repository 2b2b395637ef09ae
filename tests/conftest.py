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

import pytest

from opstower_core.config import S3Settings, Settings, Target
from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3
from support.pitr import pitr_server  # noqa: F401 - one archiving server for the whole session (see there)
from support.servers import restore_environ


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


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own BACKUP_DIR, S3_BUCKET, … must never steer a test."""
    for var in ("BACKUP_DIR", "BACKUP_RETENTION_DAYS", "S3_BUCKET", "S3_PREFIX", "OPSTOWER_PG_BIN",
                "OPSTOWER_STATE_DIR", "OPSTOWER_CONFIG", "PGDATABASE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent/opstower-tests")  # no ~/.config/opstower either


# -- restore tests (test_restore*.py): a source database per module, a damaged "live" copy per test --


@pytest.fixture(scope="module")
def source(pg, tmp_path_factory: pytest.TempPathFactory):
    from support.restore import Source

    return Source(pg, tmp_path_factory.mktemp("restore_source"))


@pytest.fixture
def live(pg, make_settings, source):
    """A live database, a custom-format backup of it, then damage (see support/restore.py)."""
    from support.restore import make_live

    return make_live(pg, make_settings, source=source)
