"""A PostgreSQL 18 archiving to the shared SeaweedFS through `pitr enable --apply`.

Its own server (not the shared `pg`): archive settings and restarts must not disturb other
tests. Everything the server's OS user needs (launcher, config, credentials, scratch
clusters) lives in 0755 directories outside pytest's 0700 temp root.

One server per session (`pitr_server`, registered in tests/conftest.py so every PITR module
shares the same one): its initdb, enable and restart cost ~15 s, paid once instead of per
module. Each module's `pitr_env` gets a clean slate on it: a fresh `app` database, reset
archiver counters, and `pitr enable --apply` with a config of its own (its own S3 prefix,
state, launcher and scratch directories), so its archive holds only its own WAL and base
backups. Between modules archive_command is `true`: WAL is discarded, never pushed into the
next module's archive.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from opstower_core.config import Settings, load_settings
from opstower_core.devenv.embedded import EmbeddedPostgres, EmbeddedS3


@dataclass
class PitrEnv:
    server: EmbeddedPostgres
    s3: EmbeddedS3
    root: Path
    config: Path
    settings: Settings

    def conn(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.server.host, port=self.server.port, user="postgres", dbname=dbname,
                               autocommit=True)

    def switch_wal(self) -> str:
        """Close the current segment and wait until it is archived; returns its name."""
        import time

        with self.conn() as c:
            c.execute("SELECT pg_switch_wal()")
            name = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                last = c.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver").fetchone()
                if last[0] and last[0] >= _prev(name):
                    return last[0]
                time.sleep(0.2)
        raise AssertionError(f"WAL before {name} was not archived: {last}")


def _prev(name: str) -> str:
    """The segment before `name` (same timeline; 16 MB segments)."""
    tli, log, seg = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    if seg == 0:
        log, seg = log - 1, 0xFF
    else:
        seg -= 1
    return f"{tli}{log:08X}{seg:08X}"


def write_config(root: Path, server: EmbeddedPostgres, s3: EmbeddedS3, server_name: str) -> Path:
    cfg = root / "opstower.toml"
    cfg.write_text(f"""
state_dir = "{root / 'state'}"
backup_dir = "{root / 'backups'}"
default_target = "app"
min_free_gb = 0
[s3]
bucket = "{s3.bucket}"
prefix = "pitr-{uuid.uuid4().hex[:8]}/"
endpoint_url = "{s3.endpoint_url}"
region = "us-east-1"
[pitr]
server_name = "{server_name}"
launcher_dir = "{root / 'launcher'}"
scratch_dir = "{root / 'scratch'}"
credentials_file = "{root / 'launcher' / 'aws-credentials'}"
[targets.app]
dbname = "app"
host = "{server.host}"
port = {server.port}
user = "postgres"
""")
    cfg.chmod(0o644)  # the server's OS user reads it (no secret in it)
    return cfg


PARKED = "true"  # archive_command between modules: WAL "archived" (discarded) at once


@pytest.fixture(scope="session")
def pitr_server(s3: EmbeddedS3):
    """The archiving server: `pitr enable --apply` then the restart it asks for, once per session."""
    from opstower_core.pitr import enable

    root = Path(tempfile.mkdtemp(prefix="opstower-test-pitr-server-"))
    root.chmod(0o755)
    server = EmbeddedPostgres(root / "pg")
    server.start()
    try:
        with psycopg.connect(**server.conninfo(), autocommit=True) as c:
            c.execute("CREATE DATABASE app")
        settings = load_settings(write_config(root, server, s3, "bootstrap"))
        report = enable(settings, settings.target(), apply=True)
        assert report.restart_needed, report.as_dict()
        server.stop()
        server.start()
        _park(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _park(server: EmbeddedPostgres) -> None:
    with psycopg.connect(**server.conninfo(), autocommit=True) as c:
        c.execute(f"ALTER SYSTEM SET archive_command = '{PARKED}'")
        c.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def pitr_env(pitr_server: EmbeddedPostgres, s3: EmbeddedS3):
    """The session's archiving server as a fresh one for this module: only `postgres` and a new empty
    `app`, archiver counters at zero, archiving into an archive of its own."""
    from opstower_core.pitr import enable

    server = pitr_server
    root = Path(tempfile.mkdtemp(prefix="opstower-test-pitr-"))
    root.chmod(0o755)
    try:
        with psycopg.connect(**server.conninfo(), autocommit=True) as c:
            # What earlier modules left (copies, restored databases) would grow every base backup.
            for (name,) in c.execute("SELECT datname FROM pg_database WHERE NOT datistemplate "
                                     "AND datname <> 'postgres'").fetchall():
                c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            c.execute("CREATE DATABASE app")
            c.execute("SELECT pg_stat_reset_shared('archiver')")
        config = write_config(root, server, s3, "srv")
        settings = load_settings(config)
        env = PitrEnv(server, s3, root, config, settings)
        # Still parked: the segment holding the drops above is discarded, not found as an accident
        # in this module's archive.
        env.switch_wal()
        report = enable(settings, settings.target(), apply=True)
        assert report.ready and not report.restart_needed, report.as_dict()
        yield env
    finally:
        _park(server)
        shutil.rmtree(root, ignore_errors=True)
