"""Helpers the tests share for the embedded servers: connections, databases, config files."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg

from opstower_core.config import Settings
from opstower_core.devenv.embedded import EmbeddedPostgres


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


def unique(prefix: str) -> str:
    """A name no other test uses (databases, prefixes)."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


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
